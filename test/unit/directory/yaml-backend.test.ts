import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { YamlDirectory } from '../../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../../src/directory/admin.ts';
import { DirectoryError } from '../../../src/directory/types.ts';

function tempFile(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'mw-yaml-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'directory.yaml');
}

async function until(check: () => boolean, ms: number): Promise<number> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) throw new Error(`condition not met within ${ms} ms`);
    await sleep(20);
  }
  return Date.now() - start;
}

test('a missing file is an empty directory; the first write creates it 0640', async (t) => {
  const path = tempFile(t);
  const d = YamlDirectory.open(path);
  assert.deepEqual(await d.listDomains(), []);
  await new DirectoryAdmin(d).addDomain('example.org');
  assert.equal(statSync(path).mode & 0o777, 0o640);
  assert.match(readFileSync(path, 'utf8'), /^# mailwarden user directory/);
});

// Polled every 250 ms and parsed off the main thread: well within a second on
// an idle host; the bound is wide because a loaded CI host can stall a worker start.
test('a running daemon sees a CLI change without a restart', async (t) => {
  const path = tempFile(t);
  const daemon = YamlDirectory.open(path);
  daemon.watch();
  t.after(() => daemon.close());
  let changes = 0;
  daemon.onChange(() => changes++);
  const cli = YamlDirectory.open(path);
  await new DirectoryAdmin(cli).addDomain('example.org');
  await until(() => daemon.snapshot.domains.has('example.org'), 5000);
  assert.ok(changes >= 1);
});

test('hand edits keep their comments through CLI writes, and odd spellings are canonicalised', async (t) => {
  const path = tempFile(t);
  writeFileSync(path, [
    '# top comment',
    'domains:',
    '  Example.ORG: {}  # our domain',
    'mailboxes:',
    '  # the boss',
    '  Alice@Example.org:',
    '    quota: 1G',
    'aliases:',
    '  info@example.org: alice@example.org, bob@foreign.example',
    '',
  ].join('\n'));
  const d = YamlDirectory.open(path);
  assert.equal((await d.findMailbox('alice@example.org'))?.quotaBytes, 1024 ** 3);
  assert.deepEqual((await d.findAlias('info@example.org'))?.targets, ['alice@example.org', 'bob@foreign.example']);
  const admin = new DirectoryAdmin(d);
  await admin.updateMailbox('alice@example.org', { quotaBytes: 2 * 1024 ** 3 });
  await admin.addMailbox('bob@example.org');
  const text = readFileSync(path, 'utf8');
  assert.match(text, /# top comment/);
  assert.match(text, /# our domain/);
  assert.match(text, /# the boss/);
  assert.match(text, /Alice@Example\.org:\n\s+quota: 2G/, 'edited in place under the operator\'s spelling');
  assert.equal((text.match(/alice@example\.org:/gi) ?? []).length, 1, 'no duplicate entry');
});

test('an invalid edit is reported with file:line:col and the daemon keeps the previous data', async (t) => {
  const path = tempFile(t);
  const cli = YamlDirectory.open(path);
  await new DirectoryAdmin(cli).addDomain('example.org');
  const daemon = YamlDirectory.open(path);
  daemon.watch();
  t.after(() => daemon.close());
  writeFileSync(path, 'domains:\n  example.org: {}\nmailboxes:\n  not-an-address: {}\n');
  await sleep(600);
  assert.ok(daemon.snapshot.domains.has('example.org'), 'old data kept');
  await assert.rejects(async () => new DirectoryAdmin(YamlDirectory.open(path)).addDomain('x.org'), (err: unknown) => {
    assert.ok(err instanceof DirectoryError);
    assert.match(err.message, /directory\.yaml:4:3: invalid mailbox address "not-an-address"/);
    return true;
  });
  assert.throws(() => YamlDirectory.open(path), /directory\.yaml:4:3/);
});

test('validation: unknown keys, mailbox without domain, alias domain target, bad quota', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-yaml-'));
  try {
    const path = join(dir, 'd.yaml');
    writeFileSync(path, [
      'domains:',
      '  example.org: {}',
      '  example.net: { alias_for: nowhere.org }',
      'mailboxes:',
      '  a@other.org: {}',
      '  b@example.org: { quota: lots }',
      '  c@example.org: { pasword: x }',
      'users: {}',
    ].join('\n'));
    assert.throws(() => YamlDirectory.open(path), (err: Error) => {
      assert.match(err.message, /alias domain example\.net points to nowhere\.org/);
      assert.match(err.message, /d\.yaml:5:3: mailbox a@other\.org: other\.org is not a mailbox domain/);
      assert.match(err.message, /d\.yaml:6:\d+: mailboxes\.b@example\.org\.quota must be a size/);
      assert.match(err.message, /d\.yaml:7:\d+: unknown setting mailboxes\.c@example\.org\.pasword/);
      assert.match(err.message, /d\.yaml:8:1: unknown setting users/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('concurrent writers never lose a change (file lock)', async (t) => {
  const path = tempFile(t);
  await new DirectoryAdmin(YamlDirectory.open(path)).addDomain('example.org');
  await Promise.all(Array.from({ length: 20 }, (_, i) => new DirectoryAdmin(YamlDirectory.open(path)).addMailbox(`u${i}@example.org`)));
  assert.equal((await YamlDirectory.open(path).listMailboxes()).length, 20);
});

test('a reader never sees a half-written file', async (t) => {
  const path = tempFile(t);
  const admin = new DirectoryAdmin(YamlDirectory.open(path));
  await admin.addDomain('example.org');
  // The writer is another process, like the CLI next to a running daemon.
  const writer = spawn(process.execPath, ['--input-type=module', '-e', `
    const { YamlDirectory } = await import(${JSON.stringify(new URL('../../../src/directory/yaml-backend.ts', import.meta.url).href)});
    const { DirectoryAdmin } = await import(${JSON.stringify(new URL('../../../src/directory/admin.ts', import.meta.url).href)});
    const admin = new DirectoryAdmin(YamlDirectory.open(${JSON.stringify(path)}));
    for (let i = 0; i < 60; i++) await admin.addMailbox('user' + i + '@example.org', { name: 'x'.repeat(4000) });
  `], { stdio: 'inherit' });
  const exited = once(writer, 'exit');
  let reads = 0;
  let done = false;
  void exited.then(() => { done = true; });
  while (!done) {
    YamlDirectory.open(path); // throws on a partial file
    reads++;
    await sleep(1);
  }
  assert.equal((await exited)[0], 0);
  assert.equal((await YamlDirectory.open(path).listMailboxes()).length, 60);
  assert.ok(reads > 20, `reader ran ${reads} times`);
});

test('write errors: duplicates and missing entries', async (t) => {
  const path = tempFile(t);
  const admin = new DirectoryAdmin(YamlDirectory.open(path));
  await admin.addDomain('example.org');
  await assert.rejects(() => admin.addDomain('EXAMPLE.org'), /already exists/);
  await assert.rejects(() => admin.addMailbox('a@nowhere.org'), /domain nowhere\.org does not exist/);
  await admin.addAliasDomain('example.net', 'example.org');
  await assert.rejects(() => admin.addMailbox('a@example.net'), /alias domain for example\.org/);
  await assert.rejects(() => admin.addAliasDomain('x.org', 'example.net'), /alias domain/);
  await assert.rejects(() => admin.removeMailbox('zz@example.org'), /does not exist/);
  await admin.addMailbox('a@example.org');
  await assert.rejects(() => admin.removeDomain('example.org'), /still has 1 mailbox\(es\), 1 alias domain\(s\); use --force/);
  await admin.removeDomain('example.org', true);
  assert.deepEqual(await admin.listDomains(), []);
});

test('a running daemon re-reads a large directory off the main thread: lookups go on meanwhile', async (t) => {
  const path = tempFile(t);
  const lines = ['domains:', '  example.org: {}', 'mailboxes:'];
  for (let i = 0; i < 20_000; i++) lines.push(`  user${i}@example.org: { name: User ${i} }`);
  writeFileSync(path, `${lines.join('\n')}\n`);
  const daemon = YamlDirectory.open(path);
  let started = performance.now();
  daemon.reload();
  const syncMs = performance.now() - started;
  daemon.watch();
  t.after(() => daemon.close());

  writeFileSync(path, `${lines.join('\n')}\n  late@example.org: {}\n`);
  let longestGap = 0;
  let last = performance.now();
  started = last;
  while (!daemon.sync.findMailbox('late@example.org')) {
    assert.ok(daemon.sync.findMailbox('user19999@example.org'), 'the old snapshot answers during the reload');
    await sleep(5);
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    assert.ok(now - started < 15_000, 'reloaded');
  }
  assert.equal(daemon.snapshot.mailboxes.size, 20_001);
  assert.ok(daemon.snapshot.mailboxes.get('user7@example.org')?.created instanceof Date, 'dates survive the hand-over');
  // The parse (syncMs on the main thread) happened elsewhere; only the hand-over blocks, briefly.
  if (syncMs > 400) assert.ok(longestGap < syncMs / 2, `longest event-loop gap ${longestGap.toFixed(0)} ms vs ${syncMs.toFixed(0)} ms to parse`);

  writeFileSync(path, 'domains:\n  example.org: {}\nmailboxes:\n  not-an-address: {}\n');
  assert.equal(await daemon.reloadInBackground(), false, 'an invalid file is refused');
  assert.equal(daemon.snapshot.mailboxes.size, 20_001, 'and the previous data kept');
});
