// A stand-in for Postfix spawn(8): accepts TCP connections and runs one
// process per connection with the socket as its stdin and stdout, the way
// master(8) runs policyd-spf and postfix-policyd-spf-perl. Start-up cost is
// paid per connection, as in real life; the process exits when the client
// closes the connection (EOF on stdin).
//
//   node bench/lib/policy-spawn.ts HOST PORT COMMAND [ARGS...]
//
// Children inherit our stderr (the benchmark's log for this target). On
// SIGTERM they get SIGTERM too, then we exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

const [host, portText, command, ...args] = process.argv.slice(2);
if (!host || !portText || !command) {
  process.stderr.write('usage: policy-spawn.ts HOST PORT COMMAND [ARGS...]\n');
  process.exit(64);
}

const children = new Set<ChildProcess>();
let spawned = 0;

// pauseOnConnect: we never read from the socket; the child owns it.
const server = createServer({ pauseOnConnect: true }, (socket) => {
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio: [socket, socket, 'inherit'] });
  } catch (err) {
    process.stderr.write(`policy-spawn: ${command}: ${(err as Error).message}\n`);
    socket.destroy();
    return;
  }
  spawned++;
  children.add(child);
  child.on('error', (err) => process.stderr.write(`policy-spawn: ${command}: ${err.message}\n`));
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (code !== 0 && signal !== 'SIGTERM') process.stderr.write(`policy-spawn: ${command} pid ${child.pid} exited ${signal ?? code}\n`);
  });
  // The child has its own copy of the descriptor; ours only keeps the connection open.
  socket.destroy();
});
server.on('error', (err) => {
  process.stderr.write(`policy-spawn: ${err.message}\n`);
  process.exit(1);
});
server.listen({ host, port: Number(portText), exclusive: true, backlog: 511 }, () => {
  process.stdout.write(`policy-spawn: listening on ${host}:${portText} for ${command}\n`);
});

process.on('SIGTERM', () => {
  server.close();
  for (const c of children) c.kill('SIGTERM');
  process.stdout.write(`policy-spawn: ${spawned} processes spawned\n`);
  const t = setTimeout(() => {
    for (const c of children) c.kill('SIGKILL');
    process.exit(0);
  }, 3000);
  const check = setInterval(() => {
    if (children.size === 0) {
      clearTimeout(t);
      clearInterval(check);
      process.exit(0);
    }
  }, 50);
});
