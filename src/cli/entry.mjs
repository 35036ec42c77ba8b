// Plain JavaScript on purpose: it must run on an old Node long enough to say
// why it cannot continue, before any TypeScript is loaded.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `mailwarden: Node.js >= 22.19 is required, this is ${process.version} (${process.execPath}); `
    + 'run `npm ci` in the mailwarden checkout (it installs Node 24) or set MAILWARDEN_NODE\n',
  );
  process.exit(78);
}
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
