// The change log (schema 4): every write logs the rows it touched in its own
// transaction, another instance hears exactly those keys, and a serial with no
// log row (an older writer, a hand edit, trimmed rows) means "everything changed".
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MysqlDirectory, createDirectoryPool, type MysqlDirectoryConfig } from '../../src/directory/mysql-backend.ts';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../src/directory/mysql-schema.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import type { DirectoryChange } from '../../src/directory/types.ts';
import { mariaDbAvailable, testMariaDb, type MariaDb } from '../support/mariadb.ts';

const skip = mariaDbAvailable() ? false : 'MariaDB is not installed';
const DB = 'mw_change_log';
const silent = pino({ level: 'silent' });

function config(url: string): MysqlDirectoryConfig {
  return { backend: 'mysql', url, poolSize: 2, queryTimeoutMs: 2000, cacheTtlMs: 0, cacheSize: 0, preload: false };
}

function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const tick = () => (check() ? resolve(true) : Date.now() > deadline ? resolve(false) : setTimeout(tick, 20));
    tick();
  });
}

const show = (c: DirectoryChange) => (c.all ? 'all' : c.keys.map((k) => `${k.kind} ${k.name}`).sort().join(', '));

describe('change log', { skip }, () => {
  let db: MariaDb;
  let url: string;
  let writer: MysqlDirectory;
  let watcher: MysqlDirectory;
  let admin: DirectoryAdmin;
  const heard: string[] = [];
  const q = async (sql: string) => (await db.admin(sql.replaceAll('DB.', `\`${DB}\`.`))) as Array<Record<string, unknown>>;

  before(async () => {
    db = await testMariaDb();
    url = await db.createDatabase(DB);
  });
  after(async () => {
    await watcher?.close();
    await writer?.close();
  });

  test('migrates a schema-3 database with data to 4; the old version is refused until then', async () => {
    const pool = createDirectoryPool(config(url));
    try {
      assert.deepEqual(await migrate(pool, MIGRATIONS.filter((m) => m.version <= 3)), { from: 0, to: 3 });
      const v3 = await MysqlDirectory.open(config(url), silent).catch((err: Error) => err);
      assert.ok(v3 instanceof Error && /schema is at version 3/.test(v3.message), String(v3));
      await q("INSERT INTO DB.domain (name, enabled, created_at, updated_at) VALUES ('example.org', 1, NOW(), NOW())");
      await q("UPDATE DB.mailwarden_meta SET value = '41' WHERE name = 'serial'");
      assert.deepEqual(await migrate(pool), { from: 3, to: SCHEMA_VERSION });
      assert.equal(SCHEMA_VERSION, 4);
    } finally {
      await pool.end();
    }
    writer = await MysqlDirectory.open(config(url), silent);
    watcher = await MysqlDirectory.open(config(url), silent);
    admin = new DirectoryAdmin(writer);
    assert.ok(await writer.findDomain('example.org'), 'data kept');
    watcher.onChange((c) => heard.push(show(c)));
    watcher.watch();
  });

  test('each write logs the rows it touched, in its transaction; another instance hears exactly those', async () => {
    const own: string[] = [];
    writer.onChange((c) => own.push(show(c)));
    await admin.addMailbox('alice@example.org');
    await admin.addAlias('team@example.org', ['alice@example.org']);
    await admin.grantSender('@example.org', 'alice@example.org');
    assert.deepEqual(own, ['mailbox alice@example.org', 'alias team@example.org', 'grant @example.org'], 'own listeners at once');
    assert.deepEqual(await q('SELECT serial, kind, name FROM DB.change_log ORDER BY serial'), [
      { serial: 42, kind: 'mailbox', name: 'alice@example.org' },
      { serial: 43, kind: 'alias', name: 'team@example.org' },
      { serial: 44, kind: 'grant', name: '@example.org' },
    ]);
    assert.ok(await waitFor(() => heard.length > 0 && heard.join(', ').split(', ').length >= 3, 2500), `heard ${JSON.stringify(heard)}`);
    assert.deepEqual(heard.join(', ').split(', ').sort(), ['alias team@example.org', 'grant @example.org', 'mailbox alice@example.org']);
    assert.equal(watcher.changeStats.all, 0);

    // A failed write logs nothing and bumps nothing.
    await assert.rejects(admin.addMailbox('alice@example.org'));
    assert.equal((await q('SELECT COUNT(*) AS n FROM DB.change_log'))[0]?.['n'], 3);

    // Deleting a domain logs the domain and the alias domains that go with it, not every row in them.
    await admin.addDomain('other.example');
    await admin.addAliasDomain('alias.example', 'other.example');
    await admin.addMailbox('bob@other.example');
    assert.ok(await waitFor(() => heard.join(', ').includes('mailbox bob@other.example'), 2500));
    heard.length = 0;
    await writer.deleteDomain('other.example');
    assert.deepEqual((await q('SELECT kind, name FROM DB.change_log WHERE serial = (SELECT MAX(serial) FROM DB.change_log) ORDER BY name')),
      [{ kind: 'domain', name: 'alias.example' }, { kind: 'domain', name: 'other.example' }]);
    assert.ok(await waitFor(() => heard.includes('domain alias.example, domain other.example'), 2500), `heard ${JSON.stringify(heard)}`);
  });

  test('a serial with no change-log row (a writer that does not log) means everything changed', async () => {
    await waitFor(() => false, 1200); // let the watcher settle on the current serial
    heard.length = 0;
    // An older mailwarden (or a hand edit) bumps the serial without logging, then this one writes.
    await q("UPDATE DB.mailwarden_meta SET value = CAST(value AS UNSIGNED) + 1 WHERE name = 'serial'");
    await admin.updateMailbox('alice@example.org', { name: 'Alice' });
    assert.ok(await waitFor(() => heard.length > 0, 2500), 'watcher heard nothing');
    assert.deepEqual(heard, ['all'], 'the gap cannot be narrowed down');
    assert.equal(watcher.changeStats.all, 1);

    // The next logged write is keyed again.
    heard.length = 0;
    await admin.updateMailbox('alice@example.org', { name: 'Alice A.' });
    assert.ok(await waitFor(() => heard.length > 0, 2500));
    assert.deepEqual(heard, ['mailbox alice@example.org']);
  });

  test('writes trim rows older than 10,000 serials every 100 serials', async () => {
    await q("UPDATE DB.mailwarden_meta SET value = '19999' WHERE name = 'serial'");
    await q("INSERT INTO DB.change_log (serial, kind, name) VALUES (9999, 'mailbox', 'old@example.org'), (10000, 'mailbox', 'old@example.org'), (10001, 'mailbox', 'kept@example.org')");
    await admin.updateMailbox('alice@example.org', { name: 'Alice B.' }); // serial 20000
    assert.deepEqual((await q('SELECT serial, name FROM DB.change_log WHERE serial >= 9999 ORDER BY serial')),
      [{ serial: 10001, name: 'kept@example.org' }, { serial: 20000, name: 'alice@example.org' }]);
    assert.equal((await q('SELECT COUNT(*) AS n FROM DB.change_log WHERE serial < 9999'))[0]?.['n'], 0);
  });
});
