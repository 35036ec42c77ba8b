// The protocol ceiling: a socketmap server that answers `OK 1` to every
// request with the least work Node can do (one netstring scan, one
// pre-encoded reply). Usage: node bench/lib/trivial-server.ts <socket path>
// Started under the benchmark's watchdog (bench/lib/proc.ts), which TERMs it
// when the benchmark goes away.
import { createServer } from 'node:net';
import { unlinkSync } from 'node:fs';

const path = process.argv[2];
if (!path) {
  process.stderr.write('usage: trivial-server.ts <unix socket path>\n');
  process.exit(64);
}
const REPLY = Buffer.from('4:OK 1,');

const server = createServer((socket) => {
  // Netstring scanner: 0 = length digits, 1 = skipping payload + comma.
  let state = 0;
  let length = 0;
  let skip = 0;
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    let replies = 0;
    let i = 0;
    while (i < chunk.length) {
      if (state === 0) {
        const b = chunk[i++]!;
        if (b === 0x3a) {
          state = 1;
          skip = length + 1; // payload and the comma
          length = 0;
        } else if (b >= 0x30 && b <= 0x39) {
          length = length * 10 + (b - 0x30);
        } else {
          socket.destroy();
          return;
        }
      } else {
        const take = Math.min(skip, chunk.length - i);
        i += take;
        skip -= take;
        if (skip === 0) {
          state = 0;
          replies++;
        }
      }
    }
    if (replies === 1) socket.write(REPLY);
    else if (replies > 1) socket.write(Buffer.concat(Array.from({ length: replies }, () => REPLY)));
  });
});

try {
  unlinkSync(path);
} catch {
  // not there
}
server.listen(path, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
