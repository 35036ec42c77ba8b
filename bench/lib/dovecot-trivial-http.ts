// The ceiling for the Lua bridge: an HTTP server that answers the shipped
// dovecot-conf/mailwarden.lua's userdb requests (POST /dovecot/userdb) with
// one fixed JSON answer, and everything else with mailwarden's "unknown user".
// What is left is Dovecot's side of the bridge: the Lua passdb/userdb in the
// auth-workers and Dovecot's HTTP client.
//
//   node bench/lib/dovecot-trivial-http.ts <port> <userdb-fields-json>
import { createServer } from 'node:http';

const [portText, fields] = process.argv.slice(2);
if (!portText || !fields) {
  process.stderr.write('usage: dovecot-trivial-http.ts <port> <userdb-fields-json>\n');
  process.exit(64);
}
const found = Buffer.from(`{"fields":${fields}}`);
const unknown = Buffer.from('{"result":"unknown"}');

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const ok = req.method === 'POST' && req.url === '/dovecot/userdb';
  // The body (the user name) is not needed, but has to be read for the connection to be reused.
  req.resume();
  req.once('end', () => {
    const body = ok ? found : unknown;
    res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
});
server.listen(Number(portText), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
