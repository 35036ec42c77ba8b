// The socketmap's synchronous cache-hit path answers exactly what the async
// path answers, and never serves an answer the directory has since changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { asyncDirectory } from '../support/async-directory.ts';
import { answerSocketmap, cachedSocketmapFrame } from '../../src/socketmap/answer.ts';
import { encodeNetstring } from '../../src/socketmap/netstring.ts';
import { encodeReply } from '../../src/socketmap/protocol.ts';

test('cached frames equal the async answers, are reused, and vanish on a directory change', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-fast-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const yaml = YamlDirectory.open(join(dir, 'directory.yaml'));
  const admin = new DirectoryAdmin(yaml);
  await admin.addDomain('example.org');
  await admin.addMailbox('alice@example.org');
  // The same data behind promise-only reads, as a remote (MariaDB) directory gives them.
  const service = new LookupService(asyncDirectory(yaml), { recipientDelimiter: '+', cacheTtlMs: 60_000, cacheSize: 100 }, pino({ level: 'silent' }));

  const cases: Array<[string, string]> = [
    ['virtual_mailbox_maps', 'alice@example.org'],
    ['virtual_mailbox_maps', 'alice+x@example.org'],
    ['virtual_mailbox_maps', 'nobody@example.org'],
    ['virtual_mailbox_domains', 'example.org'],
  ];
  for (const [map, key] of cases) {
    assert.equal(cachedSocketmapFrame(service, map, key), undefined, `${key}: nothing cached yet`);
    const slow = encodeNetstring(encodeReply(await answerSocketmap(service, map, key)));
    const fast = cachedSocketmapFrame(service, map, key);
    assert.ok(fast, `${key}: cached after the first lookup`);
    assert.deepEqual(fast, slow, `${map} ${key}`);
    assert.equal(cachedSocketmapFrame(service, map, key), fast, 'the same frame is reused');
  }
  assert.equal(cachedSocketmapFrame(service, 'no_such_map', 'x'), undefined, 'unknown maps take the slow path (PERM)');

  await admin.addMailbox('nobody@example.org');
  yaml.reload();
  assert.equal(cachedSocketmapFrame(service, 'virtual_mailbox_maps', 'nobody@example.org'), undefined, 'a change flushes the cache');
  assert.equal((await answerSocketmap(service, 'virtual_mailbox_maps', 'nobody@example.org')).status, 'OK');
  await yaml.close();
});

test('an in-memory directory is answered synchronously, uncached or cached, and a reload is seen at once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-fast-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const yaml = YamlDirectory.open(join(dir, 'directory.yaml'));
  const admin = new DirectoryAdmin(yaml);
  await admin.addDomain('example.org');
  await admin.addMailbox('alice@example.org');
  await admin.addAlias('info@example.org', ['alice@example.org', 'bob@elsewhere.test']);
  const log = pino({ level: 'silent' });
  const cached = new LookupService(yaml, { recipientDelimiter: '+', cacheTtlMs: 60_000, cacheSize: 100 }, log);
  const uncached = new LookupService(yaml, { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, log);
  const cases: Array<[string, string]> = [
    ['virtual_mailbox_maps', 'alice@example.org'],
    ['virtual_mailbox_maps', 'alice+x@example.org'],
    ['virtual_alias_maps', 'info+tag@example.org'],
    ['virtual_alias_maps', 'nobody@example.org'],
    ['virtual_mailbox_domains', 'example.org'],
    ['smtpd_sender_login_maps', 'info@example.org'],
  ];
  for (const service of [cached, uncached]) {
    for (const [map, key] of cases) {
      const fast = cachedSocketmapFrame(service, map, key);
      assert.ok(fast, `${map} ${key}: answered without waiting`);
      assert.deepEqual(fast, encodeNetstring(encodeReply(await answerSocketmap(service, map, key))), `${map} ${key}`);
    }
  }
  const before = cachedSocketmapFrame(cached, 'virtual_mailbox_maps', 'nobody@example.org');
  assert.deepEqual(before, encodeNetstring(encodeReply({ status: 'NOTFOUND' })));
  await admin.addMailbox('nobody@example.org');
  yaml.reload();
  for (const service of [cached, uncached]) {
    assert.deepEqual(cachedSocketmapFrame(service, 'virtual_mailbox_maps', 'nobody@example.org'),
      encodeNetstring(encodeReply({ status: 'OK', data: 'example.org/nobody/' })));
  }
  await yaml.close();
});
