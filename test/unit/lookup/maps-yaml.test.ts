import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { YamlDirectory } from '../../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../../src/directory/admin.ts';
import { DirectoryMaps } from '../../../src/lookup/maps.ts';
import { EXPECTED, seedFixture } from '../../support/directory-fixture.ts';

test('Postfix table answers over the YAML backend', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-maps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const backend = YamlDirectory.open(join(dir, 'directory.yaml'));
  await seedFixture(new DirectoryAdmin(backend));
  const maps = new DirectoryMaps(backend, { recipientDelimiter: '+' });
  for (const [map, key, expected] of EXPECTED) {
    const r = await maps.lookup(map, key);
    assert.equal(r.found ? r.value : null, expected, `${map} ${JSON.stringify(key)} (rule: ${r.rule})`);
    assert.ok(r.rule.length > 0);
  }
});

test('the replayed (remote-directory) path answers exactly what the in-memory path answers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-maps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const backend = YamlDirectory.open(join(dir, 'directory.yaml'));
  await seedFixture(new DirectoryAdmin(backend));
  let reads = 0;
  const counted = <T>(v: Promise<T>): Promise<T> => { reads++; return v; };
  // Promise-only reads, like MariaDB's: DirectoryMaps fetches row by row and replays its decision.
  const remote = {
    findDomain: (n: string) => counted(backend.findDomain(n)),
    findMailbox: (a: string) => counted(backend.findMailbox(a)),
    findAlias: (a: string) => counted(backend.findAlias(a)),
    findSenderGrants: (a: string) => counted(backend.findSenderGrants(a)),
  };
  const viaRows = new DirectoryMaps(remote, { recipientDelimiter: '+' });
  const inMemory = new DirectoryMaps(backend, { recipientDelimiter: '+' });
  assert.equal(inMemory.synchronous, true);
  assert.equal(viaRows.synchronous, false);
  for (const [map, key] of EXPECTED) {
    const before = reads;
    assert.deepEqual(await viaRows.lookup(map, key), inMemory.lookupSync(map, key), `${map} ${JSON.stringify(key)}`);
    assert.ok(reads - before <= 16, `${map} ${key}: ${reads - before} reads`);
  }
  assert.throws(() => viaRows.lookupSync('virtual_mailbox_maps', 'alice@example.org'));
});

test('recipient_delimiter "" turns extensions off; several delimiters work', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-maps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const backend = YamlDirectory.open(join(dir, 'directory.yaml'));
  await seedFixture(new DirectoryAdmin(backend));
  const off = new DirectoryMaps(backend, { recipientDelimiter: '' });
  assert.equal((await off.lookup('virtual_mailbox_maps', 'alice+x@example.org')).found, false);
  assert.equal((await off.lookup('virtual_alias_maps', 'alice+x@example.org')).value, 'alice@example.org', 'falls to the catch-all');
  const two = new DirectoryMaps(backend, { recipientDelimiter: '+-' });
  assert.equal((await two.lookup('virtual_alias_maps', 'info-x@example.org')).value, 'alice-x@example.org,bob-x@example.org');
});

test('an alias shadows a mailbox of the same name; a mailbox with a delimiter in its name is found exactly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-maps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const backend = YamlDirectory.open(join(dir, 'directory.yaml'));
  const admin = new DirectoryAdmin(backend);
  await admin.addDomain('example.org');
  await admin.addMailbox('alice@example.org');
  await admin.addMailbox('a+b@example.org');
  await admin.addAlias('alice@example.org', ['alice@example.org', 'archive@foreign.example']);
  const maps = new DirectoryMaps(backend, { recipientDelimiter: '+' });
  assert.equal((await maps.lookup('virtual_alias_maps', 'alice@example.org')).value, 'alice@example.org,archive@foreign.example');
  assert.equal((await maps.lookup('virtual_mailbox_maps', 'a+b@example.org')).value, 'example.org/a+b/');
  assert.equal((await maps.lookup('virtual_mailbox_maps', 'a+c@example.org')).found, false);
});

test('alias loops do not hang sender ownership', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-maps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const backend = YamlDirectory.open(join(dir, 'directory.yaml'));
  const admin = new DirectoryAdmin(backend);
  await admin.addDomain('example.org');
  await admin.addMailbox('alice@example.org');
  await admin.addAlias('a@example.org', ['b@example.org']);
  await admin.addAlias('b@example.org', ['a@example.org', 'alice@example.org']);
  const maps = new DirectoryMaps(backend, { recipientDelimiter: '+' });
  assert.equal((await maps.lookup('smtpd_sender_login_maps', 'a@example.org')).value, 'alice@example.org');
});
