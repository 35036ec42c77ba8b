// Caches in front of MariaDB: the directory preloaded into memory answers
// without a query (negative answers too), and a write by another process drops
// exactly the keys it touched (others stay cached), read from the change log.
// Observed through counters (point reads sent, cache hits), never timing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MysqlDirectory, type MysqlDirectoryConfig } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { DovecotAuth } from '../../src/auth/dovecot-auth.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { mariaDbAvailable, testMariaDb, type MariaDb } from '../support/mariadb.ts';

const skip = mariaDbAvailable() ? false : 'MariaDB is not installed';
const DB = 'mw_cache_preload';
const silent = pino({ level: 'silent' });

async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const tick = () => (check() ? resolve(true) : Date.now() > deadline ? resolve(false) : setTimeout(tick, 20));
    tick();
  });
}

describe('preloaded rows and keyed invalidation (MariaDB)', { skip }, () => {
  let db: MariaDb;
  let config: MysqlDirectoryConfig;
  /** The CLI, or another mailwarden instance. */
  let writer: MysqlDirectory;
  let admin: DirectoryAdmin;
  /** The daemon's directory, polling the change serial. */
  let daemon: MysqlDirectory;
  let lookups: LookupService;
  let dovecot: DovecotAuth;

  before(async () => {
    db = await testMariaDb();
    const url = await db.createDatabase(DB);
    config = { backend: 'mysql', url, poolSize: 2, queryTimeoutMs: 2000, cacheTtlMs: 60_000, cacheSize: 1000 };
    await migrateDatabase(config);
    writer = await MysqlDirectory.open(config, silent);
    admin = new DirectoryAdmin(writer);
    await admin.addDomain('example.org');
    for (const u of ['alice', 'bob', 'carol']) await admin.addMailbox(`${u}@example.org`, { quotaBytes: 1000 });
    await admin.addAlias('team@example.org', ['alice@example.org', 'bob@example.org']);
    await admin.grantSender('bob@example.org', 'carol@example.org');
    daemon = await MysqlDirectory.open(config, silent);
    daemon.watch();
    lookups = new LookupService(daemon, { recipientDelimiter: '+', cacheTtlMs: 60_000, cacheSize: 1000, preload: true }, silent);
    const verifier = { verify: async () => ({ ok: false, cached: false }), verifyDummy: async () => undefined };
    dovecot = new DovecotAuth(daemon, verifier, {
      userdb: { home: '/var/vmail/%d/%n', uid: '5000', gid: '5000' }, rehash: false, cache: { ttlMs: 60_000, maxEntries: 1000 }, rows: lookups.rows!,
    } as never, silent);
  });
  after(async () => {
    lookups?.close();
    await daemon?.close();
    await writer?.close();
  });

  const statements = () => daemon.pointReadStats.statements;
  const mailbox = (key: string) => lookups.lookup('virtual_mailbox_maps', key);

  test('the preload serves lookups and Dovecot answers without a query, negative ones too', async () => {
    assert.ok(await waitFor(() => lookups.rows!.complete, 5000), 'preload finished');
    assert.equal(lookups.rows!.loadedRows, 1 + 3 + 1 + 1);
    const before = statements();
    assert.equal(lookups.answerNow('virtual_mailbox_maps', 'alice@example.org')?.value, 'example.org/alice/', 'synchronous, first time asked');
    assert.equal((await mailbox('bob+tag@example.org')).value, 'example.org/bob/');
    assert.equal((await mailbox('nobody@example.org')).found, false);
    assert.equal((await mailbox('x@unknown.example')).found, false);
    assert.equal((await lookups.lookup('virtual_alias_maps', 'team@example.org')).value, 'alice@example.org,bob@example.org');
    assert.equal((await lookups.lookup('smtpd_sender_login_maps', 'bob@example.org')).value, 'carol@example.org,bob@example.org');
    assert.equal(dovecot.peekUserdb('carol@example.org', '2.3')?.result, 'ok', 'a Dovecot lookup never asked before, synchronously');
    assert.equal(dovecot.peekUserdb('nobody@example.org', '2.3')?.result, 'unknown');
    assert.equal(statements(), before, 'no point read reached MariaDB');
    assert.equal(lookups.rows!.reads, 0);
  });

  test('a write elsewhere drops exactly the keys it touched; other answers stay cached', async () => {
    for (const k of ['alice@example.org', 'alice+tag@example.org', 'bob@example.org']) await mailbox(k);
    assert.equal((await dovecot.userdbLookup('alice@example.org', { version: '2.3' })).result, 'ok');
    assert.equal((await dovecot.userdbLookup('bob@example.org', { version: '2.3' })).result, 'ok');
    const reads = lookups.rows!.reads;
    const hits = lookups.cache!.hits;
    const size = lookups.cache!.size;

    await admin.updateMailbox('alice@example.org', { enabled: false });
    assert.ok(await eventually(async () => (await mailbox('alice@example.org')).found === false, 2500), 'the change reached the daemon');
    assert.equal(daemon.changeStats.all, 0, 'heard as keys, not "everything"');
    assert.equal((await mailbox('alice+tag@example.org')).found, false, 'the extension variant went with it');
    assert.equal((await dovecot.userdbLookup('alice@example.org', { version: '2.3' })).result, 'unknown', 'a disabled user is gone at once');
    // bob's answers were not touched: cache hits, no reads.
    const hitsBefore = lookups.cache!.hits;
    assert.equal((await mailbox('bob@example.org')).found, true);
    assert.equal(lookups.cache!.hits, hitsBefore + 1, 'bob answered from the lookup cache');
    assert.equal(dovecot.peekUserdb('bob@example.org', '2.3')?.result, 'ok');
    assert.equal(lookups.rows!.reads - reads, 1, 'only alice was read again (once, then from memory)');
    assert.ok(lookups.cache!.hits > hits);
    assert.ok(lookups.cache!.size >= size - 2);
    await admin.updateMailbox('alice@example.org', { enabled: true });
  });

  test('a catch-all change drops the negative answers of its domain', async () => {
    assert.equal((await lookups.lookup('virtual_alias_maps', 'nobody@example.org')).found, false);
    assert.equal((await lookups.lookup('virtual_alias_maps', 'nobody@example.org')).found, false);
    await admin.addAlias('@example.org', ['carol@example.org']);
    const alias = async () => lookups.lookup('virtual_alias_maps', 'nobody@example.org');
    assert.ok(await eventually(async () => (await alias()).value === 'carol@example.org', 2500));
    await admin.removeAlias('@example.org');
    assert.ok(await eventually(async () => (await alias()).found === false, 2500));
  });

  test('a serial with no change-log row drops everything and preloads again', async () => {
    assert.ok(await waitFor(() => lookups.rows!.complete, 5000));
    await mailbox('bob@example.org');
    const passes = lookups.rows!.passes;
    // Behind mailwarden's back, with a serial bump but no log row (like an older mailwarden).
    await db.admin(`UPDATE \`${DB}\`.mailbox SET quota_bytes = 2000 WHERE address = 'bob@example.org'`);
    await db.admin(`UPDATE \`${DB}\`.mailwarden_meta SET value = CAST(value AS UNSIGNED) + 1 WHERE name = 'serial'`);
    assert.ok(await waitFor(() => daemon.changeStats.all === 1, 2500), 'heard "everything changed"');
    assert.ok(await waitFor(() => lookups.rows!.passes > passes, 5000), 'preloaded again');
    const before = statements();
    assert.equal((await dovecot.userdbLookup('bob@example.org', { version: '2.3' })).result, 'ok');
    assert.equal(dovecot.userdbFields((await daemon.findMailbox('bob@example.org'))!, '2.3')['quota_rule'], '*:bytes=2000');
    const answer = await dovecot.userdbLookup('bob@example.org', { version: '2.3' });
    assert.equal(answer.result === 'ok' && answer.fields['quota_rule'], '*:bytes=2000', 'the new row, from the new preload');
    assert.equal(statements() - before, 1, 'only the explicit findMailbox above went to MariaDB');
  });
});
