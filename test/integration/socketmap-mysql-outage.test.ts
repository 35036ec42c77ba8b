// MariaDB goes away under a running mailwarden: uncached lookups answer TEMP
// quickly (Postfix defers, nothing bounces), cached answers keep flowing, and
// after the restart everything answers again without restarting mailwarden.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { startMariaDb } from '../support/mariadb.ts';
import { SocketmapClient } from '../support/socketmap-client.ts';
import { startDaemon } from '../support/daemon.ts';

test('database outage: TEMP, never NOTFOUND; recovery without restart', async (t) => {
  const db = await startMariaDb();
  t.after(() => db.stop());
  const url = await db.createDatabase('mw_outage');
  const dirConfig = { backend: 'mysql' as const, url, poolSize: 2, queryTimeoutMs: 500, cacheTtlMs: 60_000, cacheSize: 1000 };
  await migrateDatabase(dirConfig);
  const seed = await MysqlDirectory.open(dirConfig, pino({ level: 'silent' }));
  const admin = new DirectoryAdmin(seed);
  await admin.addDomain('example.org');
  await admin.addMailbox('alice@example.org');
  await admin.addMailbox('bob@example.org');
  await seed.close();

  const dir = mkdtempSync(join(tmpdir(), 'mw-outage-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailwarden.yaml');
  writeFileSync(file, [
    // Without preload: the rows not asked for yet must come from the database (the outage path under test).
    'directory:', '  backend: mysql', `  url: ${JSON.stringify(url)}`, '  query_timeout: 500ms', '  pool_size: 2', '  preload: false',
    'socketmap:', `  listen: unix:${dir}/socketmap.sock`,
  ].join('\n'));
  const daemon = await startDaemon(file);
  t.after(() => daemon.stop('SIGKILL'));
  const client = await SocketmapClient.connect({ kind: 'unix', path: join(dir, 'socketmap.sock') });
  assert.equal(await client.ask('virtual_mailbox_maps', 'alice@example.org'), 'OK example.org/alice/');

  await db.stopServer();
  const start = Date.now();
  const down = await client.ask('virtual_mailbox_maps', 'bob@example.org');
  const took = Date.now() - start;
  assert.match(down ?? '', /^TEMP /, 'an unavailable directory is a temporary failure');
  assert.ok(took < 2000, `answered in ${took} ms (query_timeout 500 ms)`);
  assert.equal(await client.ask('virtual_mailbox_maps', 'alice@example.org'), 'OK example.org/alice/', 'cached answer still served');
  assert.match((await client.ask('virtual_alias_maps', 'nobody@example.org')) ?? '', /^TEMP /);

  await db.startServer();
  const back = Date.now();
  let answer: string | undefined;
  do {
    answer = await client.ask('virtual_mailbox_maps', 'bob@example.org');
  } while (answer !== 'OK example.org/bob/' && Date.now() - back < 10_000);
  assert.equal(answer, 'OK example.org/bob/', 'answers again after the restart, same daemon, same connection');
  client.socket.destroy();
});
