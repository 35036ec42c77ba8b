// Entry point of bin/mailwarden-checkpassword (see checkpassword.mjs). Every
// failure is one stderr line (Dovecot's auth log) and exit 111: a temporary
// failure for the client, never "wrong password".
const log = (msg) => process.stderr.write(`mailwarden-checkpassword: ${String(msg).replace(/[\r\n]+/g, ' ')}\n`);
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  log(`Node.js >= 22.19 is required, this is ${process.version} (${process.execPath})`);
  process.exit(111);
}
let code = 111;
try {
  const { run } = await import('./checkpassword.mjs');
  code = await run({ argv: process.argv.slice(2), env: process.env, log });
} catch (err) {
  log(`internal error: ${err?.message ?? err}`);
}
process.exit(code);
