// The ceiling for the Lua bridge: an HTTP server that answers the shipped
// dovecot-conf/mailwarden.lua's userdb requests (GET /dovecot/userdb?user=...;
// also the POST form of earlier scripts) with one fixed JSON answer, or
// mailwarden's "unknown user" for the disabled mailboxes (as mailwarden does)
// and everything else. What is left is Dovecot's side of the bridge: the Lua
// passdb/userdb in the auth-workers and Dovecot's HTTP client.
//
//   node bench/lib/dovecot-trivial-http.ts <port> <userdb-fields-json> [<file of unknown users>]
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [portText, fields, unknownFile] = process.argv.slice(2);
if (!portText || !fields) {
  process.stderr.write('usage: dovecot-trivial-http.ts <port> <userdb-fields-json> [<file of unknown users>]\n');
  process.exit(64);
}
const found = Buffer.from(`{"fields":${fields}}`);
const unknown = Buffer.from('{"result":"unknown"}');
const headers = (body: Buffer) => ['content-type', 'application/json', 'content-length', String(body.length)];
const foundHeaders = headers(found);
const unknownHeaders = headers(unknown);
const unknownUsers = new Set(unknownFile ? readFileSync(unknownFile, 'utf8').split('\n').filter(Boolean) : []);
const USERDB = '/dovecot/userdb';

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const url = req.url ?? '';
  let ok = url === USERDB || url.startsWith(`${USERDB}?`);
  // The script sends `?user=<percent-encoded>&...` first; earlier scripts POST {"user": ...}.
  const user = /[?&]user=([^&]*)/.exec(url)?.[1];
  if (ok && user !== undefined && unknownUsers.has(decodeURIComponent(user))) ok = false;
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => (body += d));
  req.once('end', () => {
    if (ok && body && unknownUsers.size && unknownUsers.has(postedUser(body))) ok = false;
    res.writeHead(ok ? 200 : 404, ok ? foundHeaders : unknownHeaders);
    res.end(ok ? found : unknown);
  });
});
server.listen(Number(portText), '127.0.0.1');

function postedUser(body: string): string {
  try {
    return String((JSON.parse(body) as { user?: unknown }).user);
  } catch {
    return '';
  }
}
process.on('SIGTERM', () => server.close(() => process.exit(0)));
