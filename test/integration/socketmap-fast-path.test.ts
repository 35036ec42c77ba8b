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
  const service = new LookupService(yaml, { recipientDelimiter: '+', cacheTtlMs: 60_000, cacheSize: 100 }, pino({ level: 'silent' }));

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
