// The protocol ceiling: a policy server that answers `action=DUNNO` to every
// request with the least work Node can do (scan for the empty line that ends
// a request, write a pre-encoded reply).
//
//   node bench/lib/policy-trivial.ts HOST PORT
import { createServer } from 'node:net';

const [host, portText] = process.argv.slice(2);
if (!host || !portText) {
  process.stderr.write('usage: policy-trivial.ts HOST PORT\n');
  process.exit(64);
}
const REPLY = Buffer.from('action=DUNNO\n\n');

const server = createServer((socket) => {
  // Whether the previous byte (possibly in the previous chunk) was a newline.
  let lastNl = false;
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    let replies = 0;
    let i = chunk.indexOf(0x0a);
    const prevNl = lastNl;
    lastNl = false;
    if (prevNl && i === 0) {
      replies++;
      i = chunk.indexOf(0x0a, 1);
    }
    while (i >= 0) {
      if (i + 1 >= chunk.length) {
        lastNl = true;
        break;
      }
      if (chunk[i + 1] === 0x0a) {
        replies++;
        i = chunk.indexOf(0x0a, i + 2);
      } else {
        i = chunk.indexOf(0x0a, i + 1);
      }
    }
    if (replies === 1) socket.write(REPLY);
    else if (replies > 1) socket.write(Buffer.concat(Array.from({ length: replies }, () => REPLY)));
  });
});
server.listen({ host, port: Number(portText), exclusive: true, backlog: 511 }, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
