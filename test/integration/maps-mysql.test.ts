// The same Postfix table answers as test/unit/lookup/maps-yaml.test.ts, over MariaDB,
// plus what only a remote directory has: the lookup cache and its invalidation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { DirectoryMaps } from '../../src/lookup/maps.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { EXPECTED, seedFixture } from '../support/directory-fixture.ts';
import { testMariaDb } from '../support/mariadb.ts';

const silent = pino({ level: 'silent' });

async function openSeeded(name: string) {
  const db = await testMariaDb();
  const url = await db.createDatabase(name);
  const config = { backend: 'mysql' as const, url, poolSize: 4, queryTimeoutMs: 2000, cacheTtlMs: 60_000, cacheSize: 1000 };
  await migrateDatabase(config);
  const dir = await MysqlDirectory.open(config, silent);
  await seedFixture(new DirectoryAdmin(dir));
  return { dir, config };
}

test('Postfix table answers over the MariaDB backend', async (t) => {
  const { dir } = await openSeeded('mw_maps');
  t.after(() => dir.close());
  const maps = new DirectoryMaps(dir, { recipientDelimiter: '+' });
  for (const [map, key, expected] of EXPECTED) {
    const r = await maps.lookup(map, key);
    assert.equal(r.found ? r.value : null, expected, `${map} ${JSON.stringify(key)} (rule: ${r.rule})`);
  }
});

test('cached answers are dropped within about a second of a change made elsewhere', async (t) => {
  const { dir, config } = await openSeeded('mw_maps_cache');
  dir.watch();
  t.after(() => dir.close());
  const service = new LookupService(dir, { recipientDelimiter: '+', cacheTtlMs: 60_000, cacheSize: 1000 }, silent);
  assert.equal((await service.lookup('virtual_mailbox_maps', 'new@example.org')).found, false);
  assert.equal((await service.lookup('virtual_mailbox_maps', 'new@example.org')).found, false);
  assert.equal(service.cache?.hits, 1, 'second answer from the cache');
  // Another instance (or the CLI on another host) adds the mailbox.
  assert.equal((await service.lookup('virtual_mailbox_maps', 'x@later.example')).found, false, 'domain row remembered as absent');
  const other = await MysqlDirectory.open(config, silent);
  await new DirectoryAdmin(other).addMailbox('new@example.org');
  await new DirectoryAdmin(other).addDomain('later.example');
  await new DirectoryAdmin(other).addMailbox('x@later.example');
  await other.close();
  const start = Date.now();
  while (!(await service.lookup('virtual_mailbox_maps', 'new@example.org')).found) {
    assert.ok(Date.now() - start < 2500, 'change visible within 2.5 s');
    await sleep(50);
  }
  assert.equal((await service.lookup('virtual_mailbox_maps', 'x@later.example')).found, true, 'the domain memo was dropped too');
});
