// The CLI as an operator uses it: bin/mailwarden in a child process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = new URL('../../bin/mailwarden', import.meta.url).pathname;

interface Run { code: number | null; stdout: string; stderr: string }

function run(config: string, args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['--config', config, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

function setup(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'mw-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'mailwarden.yaml');
  writeFileSync(config, 'directory:\n  backend: yaml\n  path: directory.yaml\n');
  return config;
}

test('domain, user, alias, sender and lookup commands, text and --json', async (t) => {
  const c = setup(t);
  const ok = async (args: string[], stdin?: string) => {
    const r = await run(c, args, stdin);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, '');
    return r.stdout;
  };
  assert.equal(await ok(['domain', 'add', 'Example.org']), 'domain example.org added\n');
  await ok(['domain', 'alias', 'example.net', 'example.org']);
  assert.equal(await ok(['user', 'add', 'alice@example.org', '--password-stdin', '--quota', '2G', '--name', 'Alice'], 'secret pw\n'), 'mailbox alice@example.org added\n');
  await ok(['user', 'add', 'bob@example.org', '--no-password']);
  await ok(['alias', 'add', 'info@example.org', 'alice@example.org,bob@example.org']);
  await ok(['alias', 'add', '@example.org', 'alice@example.org']);
  await ok(['sender', 'grant', 'postmaster@example.org', 'bob@example.org']);

  const users = JSON.parse(await ok(['user', 'list', '--json']));
  assert.deepEqual(users.map((u: { address: string }) => u.address), ['alice@example.org', 'bob@example.org']);
  assert.equal(users[0].quota_bytes, 2 * 1024 ** 3);
  assert.equal(users[0].password_scheme, 'ARGON2ID');
  assert.equal(users[1].password_scheme, null);
  assert.ok(!JSON.stringify(users).includes('argon2id$'), 'hashes are never printed');
  const show = JSON.parse(await ok(['user', 'show', 'ALICE@example.org', '--json']));
  assert.equal(show.name, 'Alice');
  assert.match(await ok(['user', 'show', 'alice@example.org']), /^address: +alice@example\.org$/m);
  assert.equal(JSON.parse(await ok(['domain', 'show', 'example.org', '--json'])).mailboxes, 2);
  assert.deepEqual(JSON.parse(await ok(['domain', 'list', '--json'])).map((d: { name: string; type: string }) => `${d.name}:${d.type}`), ['example.net:alias', 'example.org:mailbox']);
  assert.equal(JSON.parse(await ok(['alias', 'show', '@example.org', '--json'])).catch_all, true);
  assert.equal(JSON.parse(await ok(['sender', 'list', '--json'])).length, 1);
  assert.match(await ok(['alias', 'list']), /^info@example\.org +yes +alice@example\.org,bob@example\.org$/m);

  // lookup explains the rule; exit 1 when nothing matched, like postmap -q
  assert.equal(await ok(['lookup', 'virtual_alias_maps', 'info+x@example.org']),
    'virtual_alias_maps: alice+x@example.org,bob+x@example.org\n  (alias info@example.org (extension propagated))\n');
  const json = JSON.parse(await ok(['lookup', 'virtual_alias_maps', 'nobody@example.org', '--json']));
  assert.deepEqual(json, { map: 'virtual_alias_maps', key: 'nobody@example.org', found: true, value: 'alice@example.org', rule: 'catch-all @example.org' });
  const miss = await run(c, ['lookup', 'virtual_mailbox_maps', 'nobody@example.org']);
  assert.equal(miss.code, 1);
  assert.match(miss.stdout, /not found/);
  const all = JSON.parse(await ok(['lookup', 'bob@example.net', '--json']));
  assert.equal(all.length, 5);

  await ok(['user', 'disable', 'bob@example.org']);
  assert.equal(JSON.parse(await ok(['user', 'show', 'bob@example.org', '--json'])).enabled, false);
  await ok(['user', 'enable', 'bob@example.org']);
  assert.match(await ok(['user', 'quota', 'bob@example.org', '500M']), /quota of bob@example\.org is 500M/);
  await ok(['user', 'passwd', 'bob@example.org', '--password-stdin'], 'new\n');
  assert.equal(JSON.parse(await ok(['user', 'show', 'bob@example.org', '--json'])).password_scheme, 'ARGON2ID');
  await ok(['user', 'passwd', 'bob@example.org', '--password-hash', '{SHA512-CRYPT}$6$salt$abc']);
  assert.equal(JSON.parse(await ok(['user', 'show', 'bob@example.org', '--json'])).password_scheme, 'SHA512-CRYPT');
  await ok(['alias', 'remove', 'info@example.org', 'bob@example.org']);
  assert.deepEqual(JSON.parse(await ok(['alias', 'show', 'info@example.org', '--json'])).targets, ['alice@example.org']);
  await ok(['alias', 'remove', 'info@example.org']);
  await ok(['user', 'remove', 'bob@example.org']);
  await ok(['domain', 'disable', 'example.net']);
  const text = readFileSync(join(c, '..', 'directory.yaml'), 'utf8');
  assert.match(text, /\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$/, 'Dovecot parameter order m,t,p');
});

test('errors: one line on stderr, non-zero exit', async (t) => {
  const c = setup(t);
  await run(c, ['domain', 'add', 'example.org']);
  const cases: Array<[string[], number, RegExp]> = [
    [['domain', 'add', 'example.org'], 1, /^mailwarden: domain example\.org already exists\n$/],
    [['domain', 'add', 'not a domain'], 65, /^mailwarden: invalid domain name: "not a domain"\n$/],
    [['user', 'add', 'alice@unknown.org', '--no-password'], 1, /^mailwarden: domain unknown\.org does not exist\n$/],
    [['user', 'add', 'not-an-address', '--no-password'], 65, /^mailwarden: invalid mail address: "not-an-address"\n$/],
    [['user', 'add', 'alice@example.org'], 64, /^mailwarden: no terminal to ask for a password: use --password-stdin/],
    [['user', 'add', 'alice@example.org', '--password-stdin'], 65, /^mailwarden: empty password on stdin\n$/],
    [['user', 'show', 'ghost@example.org'], 1, /^mailwarden: mailbox ghost@example\.org does not exist\n$/],
    [['alias', 'add', 'x@example.org', 'not an address'], 65, /^mailwarden: invalid target address/],
    [['user', 'quota', 'x@example.org', 'lots'], 64, /^mailwarden: invalid quota "lots"/],
    [['lookup', 'bogus_maps', 'x'], 64, /^mailwarden: unknown map bogus_maps/],
    [['db', 'migrate'], 64, /^mailwarden: directory.backend is yaml/],
    [['nonsense'], 64, /unknown command/],
  ];
  for (const [args, code, pattern] of cases) {
    const r = await run(c, args);
    assert.equal(r.code, code, `${args.join(' ')} → ${r.stderr}`);
    assert.match(r.stderr, pattern, args.join(' '));
  }
  const badConfig = join(c, '..', 'bad.yaml');
  writeFileSync(badConfig, 'directory:\n  backend: yaml\n  path: d.yaml\nsocketmap:\n  listen: nowhere\n');
  const r = await run(badConfig, ['domain', 'list']);
  assert.equal(r.code, 78);
  assert.match(r.stderr, /^mailwarden: .*bad\.yaml:5:11: socketmap\.listen: expected unix:\/path or inet:host:port/);
  const missing = await run(join(c, '..', 'missing.yaml'), ['domain', 'list']);
  assert.equal(missing.code, 78);
  assert.match(missing.stderr, /cannot read config: ENOENT/);
});
