// The ceiling for Dovecot's userdb dict: a dict server (protocol 3.x, Dovecot
// 2.3) that answers every `shared/userdb/<user>` lookup with one fixed JSON
// object, or "not found" for the disabled mailboxes (so Dovecot does the same
// work as with mailwarden, which answers those as unknown users), and
// everything else with "not found", doing the least possible work.
//
//   node bench/lib/dovecot-trivial-dict.ts <socket> <userdb-json> [<file of unknown users>]
import { createServer } from 'node:net';
import { chmodSync, readFileSync, rmSync } from 'node:fs';

const [socketPath, json, unknownFile] = process.argv.slice(2);
if (!socketPath || !json) {
  process.stderr.write('usage: dovecot-trivial-dict.ts <socket> <userdb-json> [<file of unknown users>]\n');
  process.exit(64);
}
const found = Buffer.from(`O${json}\n`);
const notFound = Buffer.from('N\n');
const endOfList = Buffer.from('\n');
const PREFIX = 'Lshared/userdb/';
const unknown = new Set(unknownFile ? readFileSync(unknownFile, 'latin1').split('\n').filter(Boolean) : []);

rmSync(socketPath, { force: true });
const server = createServer((sock) => {
  let partial = '';
  sock.setEncoding('latin1');
  sock.on('data', (chunk: string) => {
    const data = partial + chunk;
    let start = 0;
    for (let nl = data.indexOf('\n'); nl >= 0; nl = data.indexOf('\n', start)) {
      const cmd = data.charCodeAt(start);
      // H (handshake) gets no reply; L a value; I an empty list; commits are not expected from auth.
      if (cmd === 0x4c) {
        const ours = data.startsWith(PREFIX, start);
        // `L<key>\t<user>`: the key ends at the tab.
        const tab = data.indexOf('\t', start);
        sock.write(ours && !(unknown.size && unknown.has(data.slice(start + PREFIX.length, tab < 0 || tab > nl ? nl : tab))) ? found : notFound);
      } else if (cmd === 0x49) {
        sock.write(endOfList);
      }
      start = nl + 1;
    }
    partial = data.slice(start);
  });
  sock.on('error', () => sock.destroy());
});
server.listen(socketPath, () => chmodSync(socketPath, 0o666));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
