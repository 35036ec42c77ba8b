// The protocol ceiling: a milter that takes the whole message (no step
// skipped, no reply but at end of message, like mailwarden negotiates) and
// answers CONTINUE without looking at it, with the repository's codec.
//
//   node bench/lib/milter-trivial.ts unix:/path/milter.sock | inet:127.0.0.1:PORT
import { createServer } from 'node:net';
import { encodeReply, MilterDecoder, negotiate } from '../../src/milter/codec.ts';
import { SMFIP } from '../../src/milter/constants.ts';

const spec = process.argv[2] ?? '';
const inet = /^inet:(.+):(\d+)$/.exec(spec);
if (!inet && !spec.startsWith('unix:/')) {
  process.stderr.write('usage: milter-trivial.ts unix:/path | inet:HOST:PORT\n');
  process.exit(64);
}
const CONTINUE = encodeReply({ type: 'continue' });
const WANTS = {
  actions: 0,
  protocol: SMFIP.NORCPT | SMFIP.NODATA | SMFIP.NOUNKNOWN | SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL | SMFIP.NR_HDR | SMFIP.NR_EOH | SMFIP.NR_BODY,
};

// noDelay as mailwarden's listener (src/net/listener.ts) sets it; moot on a UNIX socket.
const server = createServer({ noDelay: true }, (socket) => {
  const decoder = new MilterDecoder();
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    let cmds;
    try {
      cmds = decoder.push(chunk);
    } catch {
      socket.destroy();
      return;
    }
    for (const cmd of cmds) {
      if (cmd.type === 'optneg') socket.write(encodeReply(negotiate(cmd, WANTS).reply));
      else if (cmd.type === 'bodyEob') socket.write(CONTINUE);
      else if (cmd.type === 'quit') socket.end();
    }
  });
});
const where = inet ? { host: inet[1]!, port: Number(inet[2]) } : { path: spec.slice('unix:'.length) };
server.listen({ ...where, exclusive: true, backlog: 511 }, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
