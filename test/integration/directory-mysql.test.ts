// MysqlDirectory against a real MariaDB (test/support/mariadb.ts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import mysql from 'mysql2/promise';
import { pino } from 'pino';
import { MysqlDirectory, createDirectoryPool, type MysqlDirectoryConfig } from '../../src/directory/mysql-backend.ts';
import { SCHEMA_VERSION, migrate, schemaStatus } from '../../src/directory/mysql-schema.ts';
import { parseMysqlUrl, redactMysqlUrl } from '../../src/directory/mysql-url.ts';
import { DirectoryError, type Alias, type Domain, type Mailbox } from '../../src/directory/types.ts';
import { TEST_PASSWORD, mariaDbAvailable, startMariaDb, testMariaDb, type MariaDb } from '../support/mariadb.ts';

const skip = mariaDbAvailable() ? false : 'MariaDB is not installed';
const DB = 'mw_directory_mysql';
const T0 = new Date('2024-05-06T07:08:09.123Z');

function config(url: string, over: Partial<MysqlDirectoryConfig> = {}): MysqlDirectoryConfig {
  return { backend: 'mysql', url, poolSize: 4, queryTimeoutMs: 1000, cacheTtlMs: 0, cacheSize: 0, ...over };
}

async function migrated(url: string): Promise<void> {
  const pool = createDirectoryPool(config(url));
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }
}

function domain(name: string, extra: Partial<Domain> = {}): Domain {
  return { name, enabled: true, created: T0, updated: T0, ...extra };
}
function mailbox(address: string, extra: Partial<Mailbox> = {}): Mailbox {
  return { address, domain: address.split('@')[1]!, quotaBytes: 0, enabled: true, created: T0, updated: T0, ...extra };
}
function alias(address: string, targets: string[], extra: Partial<Alias> = {}): Alias {
  return { address, domain: address.split('@')[1]!, targets, enabled: true, created: T0, updated: T0, ...extra };
}

/** Resolves with the DirectoryError a call throws, and how long it took. */
async function failure(call: () => Promise<unknown>): Promise<{ err: DirectoryError; ms: number }> {
  const start = Date.now();
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof DirectoryError, `expected a DirectoryError, got ${String(err)}`);
    return { err, ms: Date.now() - start };
  }
  assert.fail('expected the call to fail');
}

function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const tick = () => (check() ? resolve(true) : Date.now() > deadline ? resolve(false) : setTimeout(tick, 20));
    tick();
  });
}

/**
 * A TCP relay to MariaDB that can "forget" its connections the way a NAT
 * gateway or firewall does: the client is not told, and its next packet gets a RST.
 */
async function startRelay(targetPort: number) {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket; poisoned: boolean }>();
  const sockets = new Set<net.Socket>();
  const relay = { port: 0, resets: 0, poison: () => {}, close: () => {} };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream, poisoned: false };
    pairs.add(pair);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      if (pair.poisoned) return;
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) s.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.port = (server.address() as net.AddressInfo).port;
  relay.poison = () => {
    for (const pair of pairs) {
      pair.poisoned = true;
      pairs.delete(pair);
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
      pair.upstream.destroy();
      pair.client.once('data', () => {
        relay.resets++;
        pair.client.resetAndDestroy();
      });
      pair.client.resume(); // unpipe() paused it
    }
  };
  relay.close = () => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return relay;
}

describe('mysql-url', () => {
  test('parses TCP and socket URLs, percent-decoding credentials', () => {
    const tcp = parseMysqlUrl('mysql://mail%40user:p%40ss%3Aw%2Frd@db.example:3307/mail_db');
    assert.equal(tcp.user, 'mail@user');
    assert.equal(tcp.password, 'p@ss:w/rd');
    assert.equal(tcp.host, 'db.example');
    assert.equal(tcp.port, 3307);
    assert.equal(tcp.database, 'mail_db');
    assert.equal(parseMysqlUrl('mysql://u:p@h/d').port, 3306);
    assert.equal(parseMysqlUrl('mysql://u:p@[::1]/d').host, '::1');

    const sock = parseMysqlUrl('mysql://u:secret@localhost/mail?socket=/run/mysqld/mysqld.sock');
    assert.equal(sock.socketPath, '/run/mysqld/mysqld.sock');
    assert.equal(sock.host, undefined);
  });

  test('never shows the password', () => {
    const o = parseMysqlUrl('mysql://u:hunter2@h:1/d', { connectionLimit: 3 });
    assert.equal(o.connectionLimit, 3);
    for (const text of [String(o), JSON.stringify(o), JSON.stringify({ o }), o.display, Object.keys(o).join()]) {
      assert.ok(!text.includes('hunter2'), text);
    }
    assert.equal(String(o), 'mysql://u@h:1/d');
    for (const bad of ['mysql://u:hunter2@h:99999/d', 'postgres://u:hunter2@h/d', 'mysql://u:hunter2@h/', 'mysql://u:hunter2@h/d?ssl=1',
      'mysql://u:hunter2@h/a/b', 'mysql://u:hunter2@db/d?socket=/x.sock', 'mysql://:hunter2@h/d', 'mysql://u:hun%zzter2@h/d']) {
      assert.throws(() => parseMysqlUrl(bad), (err: DirectoryError) => err.code === 'invalid' && !err.message.includes('hunter2'), bad);
    }
    assert.equal(redactMysqlUrl('mysql://u:pa@ss/w@h/d'), 'mysql://u:***@h/d');
  });
});

describe('MysqlDirectory', { skip }, () => {
  let db: MariaDb;
  let url: string;
  let dir: MysqlDirectory;

  before(async () => {
    db = await testMariaDb();
    url = await db.createDatabase(DB);
  });
  after(async () => {
    await dir?.close();
  });

  test('refuses to open an unmigrated database, then migrate is idempotent', async () => {
    const { err } = await failure(() => MysqlDirectory.open(config(url)));
    assert.equal(err.code, 'invalid');
    assert.match(err.message, /schema is at version 0.*mailwarden db migrate/);

    const pool = createDirectoryPool(config(url));
    try {
      assert.deepEqual(await migrate(pool), { from: 0, to: SCHEMA_VERSION });
      assert.deepEqual(await migrate(pool), { from: SCHEMA_VERSION, to: SCHEMA_VERSION });
      assert.deepEqual(await schemaStatus(pool), { current: SCHEMA_VERSION, latest: SCHEMA_VERSION, pending: [] });
      const [tables] = await pool.query<mysql.RowDataPacket[]>(
        'SELECT table_name AS t, engine AS e, table_collation AS c FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1');
      assert.deepEqual(tables.map((r) => r['t']), ['alias', 'alias_target', 'change_log', 'domain', 'greylist_client', 'greylist_triplet', 'mailbox',
        'mailbox_activity', 'mailwarden_meta', 'policy_counter', 'sender_grant']);
      for (const r of tables) assert.deepEqual([r['e'], r['c']], ['InnoDB', 'utf8mb4_bin'], String(r['t']));
    } finally {
      await pool.end();
    }
    dir = await MysqlDirectory.open(config(url));
    assert.equal(dir.kind, 'mysql');
    assert.equal(dir.remote, true);
  });

  test('concurrent migrations serialise on the lock', async () => {
    const other = await db.createDatabase(`${DB}_concurrent`);
    const pools = [1, 2, 3, 4].map(() => createDirectoryPool(config(other)));
    try {
      const results = await Promise.all(pools.map((p) => migrate(p)));
      assert.equal(results.filter((r) => r.from === 0).length, 1, JSON.stringify(results));
      assert.ok(results.every((r) => r.to === SCHEMA_VERSION));
      assert.equal((await schemaStatus(pools[0]!)).current, SCHEMA_VERSION);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  test('domains: insert, find, update, errors', async () => {
    await dir.insertDomain(domain('example.com', { description: 'main' }));
    await dir.insertDomain(domain('example.net', { aliasFor: 'example.com', enabled: false }));
    assert.deepEqual(await dir.findDomain('example.com'), domain('example.com', { description: 'main' }));
    assert.deepEqual(await dir.findDomain('example.net'), domain('example.net', { aliasFor: 'example.com', enabled: false }));
    assert.equal(await dir.findDomain('EXAMPLE.COM'), undefined, 'keys are binary: canonical forms only');
    assert.equal(await dir.findDomain('nowhere.example'), undefined);

    assert.equal((await failure(() => dir.insertDomain(domain('example.com')))).err.code, 'exists');
    assert.equal((await failure(() => dir.updateDomain('nowhere.example', { enabled: false }))).err.code, 'not_found');
    assert.equal((await failure(() => dir.deleteDomain('nowhere.example'))).err.code, 'not_found');

    await dir.updateDomain('example.com', { description: null });
    await dir.updateDomain('example.net', { enabled: true, description: 'alias' });
    const com = await dir.findDomain('example.com');
    assert.equal(com?.description, undefined);
    assert.ok(com && com.updated > T0 && com.created.getTime() === T0.getTime());
    assert.deepEqual({ ...(await dir.findDomain('example.net')), updated: T0 }, domain('example.net', { aliasFor: 'example.com', description: 'alias' }));
    assert.deepEqual((await dir.listDomains()).map((d) => d.name), ['example.com', 'example.net']);
    // Updating to the same values still finds the row (no false not_found).
    await dir.updateDomain('example.net', { enabled: true });
  });

  test('mailboxes: insert, find, update, delete, errors', async () => {
    const m = mailbox('jane@example.com', { name: 'Jane', passwordHash: '{ARGON2ID}$argon2id$v=19$x', quotaBytes: 5 * 2 ** 40 });
    await dir.insertMailbox(m);
    await dir.insertMailbox(mailbox('ünï@example.com'));
    assert.deepEqual(await dir.findMailbox('jane@example.com'), m);
    assert.deepEqual(await dir.findMailbox('ünï@example.com'), mailbox('ünï@example.com'));
    assert.equal(await dir.findMailbox('Jane@example.com'), undefined);

    assert.equal((await failure(() => dir.insertMailbox(m))).err.code, 'exists');
    assert.equal((await failure(() => dir.insertMailbox(mailbox('x@nodomain.example')))).err.code, 'invalid');
    assert.equal((await failure(() => dir.updateMailbox('nobody@example.com', { enabled: false }))).err.code, 'not_found');
    assert.equal((await failure(() => dir.deleteMailbox('nobody@example.com'))).err.code, 'not_found');

    await dir.updateMailbox('jane@example.com', { passwordHash: null, enabled: false, quotaBytes: 0 });
    const updated = await dir.findMailbox('jane@example.com');
    assert.equal(updated?.passwordHash, undefined);
    assert.equal(updated?.name, 'Jane');
    assert.equal(updated?.enabled, false);
    assert.equal(updated?.quotaBytes, 0);
    await dir.updateMailbox('jane@example.com', { passwordHash: '{SHA512-CRYPT}$6$x', name: 'Jane D' });
    assert.equal((await dir.findMailbox('jane@example.com'))?.passwordHash, '{SHA512-CRYPT}$6$x');

    assert.deepEqual((await dir.listMailboxes('example.com')).map((x) => x.address), ['jane@example.com', 'ünï@example.com']);
    assert.deepEqual(await dir.listMailboxes('example.net'), []);
    await dir.deleteMailbox('ünï@example.com');
    assert.equal(await dir.findMailbox('ünï@example.com'), undefined);
    assert.equal((await dir.listMailboxes()).length, 1);
  });

  test('aliases keep target order; updates replace targets', async () => {
    const a = alias('team@example.com', ['zed@elsewhere.example', 'jane@example.com', 'amy@elsewhere.example']);
    await dir.insertAlias(a);
    await dir.insertAlias(alias('@example.com', ['jane@example.com'], { enabled: false }));
    await dir.insertAlias(alias('empty@example.com', []));
    assert.deepEqual(await dir.findAlias('team@example.com'), a);
    assert.deepEqual(await dir.findAlias('empty@example.com'), alias('empty@example.com', []));
    assert.equal(await dir.findAlias('nobody@example.com'), undefined);

    assert.equal((await failure(() => dir.insertAlias(a))).err.code, 'exists');
    assert.equal((await failure(() => dir.insertAlias(alias('x@nodomain.example', ['a@b.example'])))).err.code, 'invalid');
    assert.equal((await failure(() => dir.updateAlias('nobody@example.com', { targets: [] }))).err.code, 'not_found');
    assert.equal((await failure(() => dir.deleteAlias('nobody@example.com'))).err.code, 'not_found');

    const many = Array.from({ length: 250 }, (_, i) => `t${249 - i}@elsewhere.example`);
    await dir.updateAlias('team@example.com', { targets: [...many, many[0]!] });
    assert.deepEqual((await dir.findAlias('team@example.com'))?.targets, many, 'order kept, duplicate dropped');
    await dir.updateAlias('team@example.com', { enabled: false });
    const t = await dir.findAlias('team@example.com');
    assert.equal(t?.enabled, false);
    assert.equal(t?.targets.length, 250, 'enabled-only update keeps targets');

    const listed = await dir.listAliases('example.com');
    assert.deepEqual(listed.map((x) => [x.address, x.targets.length]), [['@example.com', 1], ['empty@example.com', 0], ['team@example.com', 250]]);
    assert.deepEqual(listed[2]?.targets, many);
    await dir.deleteAlias('empty@example.com');
    assert.equal((await dir.listAliases()).length, 2);
  });

  test('sender grants', async () => {
    const g = { address: '@example.com', login: 'jane@example.com', created: T0 };
    await dir.insertSenderGrant(g);
    await dir.insertSenderGrant({ ...g, login: 'amy@elsewhere.example' });
    await dir.insertSenderGrant({ address: 'boss@example.com', login: 'jane@example.com', created: T0 });
    await dir.insertSenderGrant({ address: 'x@elsewhere.example', login: 'jane@example.com', created: T0 });
    assert.deepEqual(await dir.findSenderGrants('@example.com'), [{ ...g, login: 'amy@elsewhere.example' }, g]);
    assert.deepEqual(await dir.findSenderGrants('nobody@example.com'), []);
    assert.equal((await failure(() => dir.insertSenderGrant(g))).err.code, 'exists');
    assert.equal((await failure(() => dir.deleteSenderGrant('@example.com', 'nobody@example.com'))).err.code, 'not_found');
    await dir.deleteSenderGrant('@example.com', 'amy@elsewhere.example');
    assert.equal((await dir.listSenderGrants()).length, 3);
  });

  test('point reads of one event-loop turn share a statement per table, each caller gets its own row', async () => {
    await dir.insertMailbox(mailbox('batch1@example.com', { quotaBytes: 1 }));
    await dir.insertMailbox(mailbox('batch2@example.com', { quotaBytes: 2 }));
    const before = dir.pointReadStats;
    const wanted = ['batch1@example.com', 'nobody1@example.com', 'batch2@example.com', 'batch1@example.com', 'BATCH2@example.com'];
    // Five mailbox reads (one key twice, one in another case: utf8mb4_bin keys), three alias reads, two grant reads. The first
    // read of each table goes out at once (nothing of that table in flight), the rest of the turn shares one statement.
    const [mailboxes, aliases, grants] = await Promise.all([
      Promise.all(wanted.map((a) => dir.findMailbox(a))),
      Promise.all(['team@example.com', 'nobody@example.com', '@example.com'].map((a) => dir.findAlias(a))),
      Promise.all(['@example.com', 'nobody@example.com'].map((a) => dir.findSenderGrants(a))),
    ]);
    assert.deepEqual(mailboxes.map((m) => m?.quotaBytes), [1, undefined, 2, 1, undefined]);
    assert.deepEqual(aliases.map((a) => a?.targets.length), [250, undefined, 1]);
    assert.deepEqual(grants.map((g) => g.map((x) => x.login)), [['jane@example.com'], []]);
    const after = dir.pointReadStats;
    assert.equal(after.statements - before.statements, 6);
    assert.equal(after.keys - before.keys, (1 + 4) + (1 + 2) + (1 + 1), 'a key twice in the same batch is read once');

    // More keys than one statement takes: split, and every caller still gets its row.
    const many = Array.from({ length: 150 }, (_, i) => (i % 2 ? 'batch1@example.com' : `none${i}@example.com`));
    const found = await Promise.all(many.map((a) => dir.findMailbox(a)));
    assert.equal(found.filter(Boolean).length, 75);
    assert.equal(dir.pointReadStats.statements - after.statements, 3, 'the first key alone, then 75 distinct keys: 64 + 11');
    await dir.deleteMailbox('batch1@example.com');
    await dir.deleteMailbox('batch2@example.com');
  });

  test('deleting a domain cascades', async () => {
    await dir.insertDomain(domain('elsewhere.example'));
    await dir.insertMailbox(mailbox('amy@elsewhere.example'));
    await dir.insertAlias(alias('list@elsewhere.example', ['jane@example.com']));
    assert.deepEqual(await dir.domainUsage('example.com'), { mailboxes: 1, aliases: 2, aliasDomains: 1 });

    await dir.deleteDomain('example.com');
    assert.equal(await dir.findDomain('example.com'), undefined);
    assert.equal(await dir.findDomain('example.net'), undefined, 'alias domain pointing to it');
    assert.deepEqual(await dir.listMailboxes('example.com'), []);
    assert.deepEqual(await dir.listAliases('example.com'), []);
    assert.deepEqual(await dir.domainUsage('example.com'), { mailboxes: 0, aliases: 0, aliasDomains: 0 });
    // Grants FOR addresses at the domain go; grants held by its users elsewhere stay (as in the YAML backend).
    assert.deepEqual((await dir.listSenderGrants()).map((g) => `${g.login}->${g.address}`), ['jane@example.com->x@elsewhere.example']);
    const orphans = (await db.admin(`SELECT COUNT(*) AS n FROM \`${DB}\`.alias_target WHERE alias_address LIKE '%@example.com'`)) as Array<{ n: number }>;
    assert.equal(Number(orphans[0]?.n), 0);
    // Unrelated data survives.
    assert.ok(await dir.findMailbox('amy@elsewhere.example'));
    assert.deepEqual((await dir.findAlias('list@elsewhere.example'))?.targets, ['jane@example.com']);
  });

  test('writes bump the change serial; other instances hear about it within ~1.5 s', async () => {
    const serial = async () => Number(((await db.admin(`SELECT value FROM \`${DB}\`.mailwarden_meta WHERE name = 'serial'`)) as Array<{ value: string }>)[0]?.value);
    const watcher = await MysqlDirectory.open(config(url));
    try {
      let heard = 0;
      let own = 0;
      watcher.onChange(() => heard++);
      dir.onChange(() => own++);
      watcher.watch();
      await new Promise((r) => setTimeout(r, 1200)); // let the first poll settle
      heard = 0;

      const before = await serial();
      await dir.updateMailbox('amy@elsewhere.example', { name: 'Amy' });
      assert.equal(await serial(), before + 1);
      assert.equal(own, 1, 'the writing instance tells its own listeners at once');
      const t = Date.now();
      assert.ok(await waitFor(() => heard === 1, 1800), 'watcher did not notice within 1.8 s');
      assert.ok(Date.now() - t < 1800);

      // Failed writes roll back and do not bump it.
      await failure(() => dir.insertDomain(domain('elsewhere.example')));
      await failure(() => dir.deleteMailbox('nobody@elsewhere.example'));
      assert.equal(await serial(), before + 1);
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(heard, 1);
      assert.equal(own, 1);
    } finally {
      await watcher.close();
    }
  });

  test('a UNIX socket URL works too', async () => {
    const viaSocket = await MysqlDirectory.open(config(db.socketUrl(DB)));
    try {
      assert.ok(await viaSocket.findMailbox('amy@elsewhere.example'));
    } finally {
      await viaSocket.close();
    }
  });

  test('wrong credentials fail the open without showing the password', async () => {
    const bad = url.replace(encodeURIComponent(TEST_PASSWORD), 'wrong-secret');
    const { err } = await failure(() => MysqlDirectory.open(config(bad)));
    assert.equal(err.code, 'invalid');
    assert.match(err.message, /Access denied/);
    assert.ok(!err.message.includes('wrong-secret'));
  });

  test('a pooled connection that died silently is retried once', async () => {
    const relay = await startRelay(db.port);
    const viaRelay = await MysqlDirectory.open(config(url.replace(`:${db.port}/`, `:${relay.port}/`), { poolSize: 1 }));
    try {
      assert.ok(await viaRelay.findDomain('elsewhere.example'));
      relay.poison();
      assert.ok(await viaRelay.findDomain('elsewhere.example'), 'read retried on a fresh connection');
      relay.poison();
      await viaRelay.updateDomain('elsewhere.example', { description: 'via relay' });
      assert.equal((await dir.findDomain('elsewhere.example'))?.description, 'via relay', 'write retried: it failed before COMMIT');
      assert.equal(relay.resets, 2);
    } finally {
      await viaRelay.close();
      relay.close();
    }
  });

  test('a blocked query or an exhausted pool gives "unavailable" at the deadline', async () => {
    const small = await MysqlDirectory.open(config(url, { poolSize: 1, queryTimeoutMs: 400 }));
    const locker = await mysql.createConnection({ socketPath: db.socket, user: 'root', database: DB });
    try {
      await locker.beginTransaction();
      await locker.query("SELECT * FROM domain WHERE name = 'elsewhere.example' FOR UPDATE");
      const [write, read] = await Promise.all([
        failure(() => small.updateDomain('elsewhere.example', { enabled: false })), // waits for the row lock
        failure(() => small.findDomain('elsewhere.example')), // waits for the only pool connection
      ]);
      for (const f of [write, read]) {
        assert.equal(f.err.code, 'unavailable');
        assert.ok(f.err.temporary);
        assert.ok(f.ms >= 350 && f.ms < 1400, `${f.ms} ms`);
      }
      await locker.rollback();
      assert.equal((await small.findDomain('elsewhere.example'))?.enabled, true, 'the timed-out write was rolled back');
      await small.updateDomain('elsewhere.example', { enabled: true });
    } finally {
      await locker.end();
      await small.close();
    }
  });

  test('a server that is down or does not answer gives "unavailable" quickly', async () => {
    // Nothing listening: connection refused. The open succeeds (a daemon may start before MariaDB).
    const closedPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
    const down = await MysqlDirectory.open(config(url.replace(`:${db.port}/`, `:${closedPort}/`)));
    const refused = await failure(() => down.findMailbox('amy@elsewhere.example'));
    assert.equal(refused.err.code, 'unavailable');
    assert.ok(refused.ms < 1000, `${refused.ms} ms`);
    assert.ok(!refused.err.message.includes(TEST_PASSWORD) && !refused.err.message.includes(encodeURIComponent(TEST_PASSWORD)));
    await down.close();

    // Accepts TCP but never speaks: only our deadline ends it.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentUrl = url.replace(`:${db.port}/`, `:${(silent.address() as net.AddressInfo).port}/`);
    try {
      const t = Date.now();
      const mute = await MysqlDirectory.open(config(silentUrl, { queryTimeoutMs: 300 }));
      assert.ok(Date.now() - t < 1300, 'open is bounded by the deadline too');
      const hung = await failure(() => mute.findDomain('elsewhere.example'));
      assert.equal(hung.err.code, 'unavailable');
      assert.ok(hung.ms >= 250 && hung.ms < 1300, `${hung.ms} ms`);
      assert.equal((await failure(() => mute.insertDomain(domain('new.example')))).err.code, 'unavailable');
      for (const s of sockets) s.destroy();
      await mute.close();
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe('MysqlDirectory across a MariaDB restart', { skip }, () => {
  let server: MariaDb;
  before(async () => {
    server = await startMariaDb(); // private: restarting the shared one would disturb other test files
  });
  after(async () => {
    await server?.stop();
  });

  test('keeps working after the server restarts, without reopening', async () => {
    const url = await server.createDatabase('mw_restart');
    await migrated(url);
    const logs: Array<{ level: number; msg: string }> = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
    const dir = await MysqlDirectory.open(config(url, { queryTimeoutMs: 500 }), log);
    try {
      let changes = 0;
      dir.onChange(() => changes++);
      dir.watch();
      await dir.insertDomain(domain('example.org'));
      changes = 0;

      await server.stopServer();
      const down = await failure(() => dir.findDomain('example.org'));
      assert.equal(down.err.code, 'unavailable');
      assert.ok(down.ms < 1500, `${down.ms} ms`);
      await new Promise((r) => setTimeout(r, 2300)); // let a few polls fail
      const pollWarnings = () => logs.filter((l) => l.level === 40 && /poll/.test(l.msg)).length;
      assert.equal(pollWarnings(), 1, 'failed polls warn once per minute, not every second');

      await server.startServer();
      assert.deepEqual(await dir.findDomain('example.org'), domain('example.org'), 'first call after the restart');
      await dir.insertMailbox(mailbox('a@example.org'));
      assert.equal((await dir.listMailboxes()).length, 1);
      assert.ok(await waitFor(() => logs.some((l) => /reachable again/.test(l.msg)), 1500), 'polling recovers');
      assert.equal(pollWarnings(), 1);

      // A restart that loses idle pool connections silently is covered by the one retry;
      // a plain restart again, back to back, to be sure nothing stale is left in the pool.
      await server.restart();
      assert.ok(await dir.findMailbox('a@example.org'));
      assert.ok(changes >= 1);
    } finally {
      await dir.close();
    }
  });

  test('a daemon that starts before MariaDB works once it is up', async () => {
    const url = server.url('mw_restart');
    await server.stopServer();
    const dir = await MysqlDirectory.open(config(url, { queryTimeoutMs: 500 }));
    try {
      assert.equal((await failure(() => dir.findDomain('example.org'))).err.code, 'unavailable');
      await server.startServer();
      assert.ok(await dir.findDomain('example.org'));
    } finally {
      await dir.close();
    }
  });

  test('an outdated schema found after a late start is a temporary failure', async () => {
    const url = await server.createDatabase('mw_unmigrated');
    await server.stopServer();
    const dir = await MysqlDirectory.open(config(url, { queryTimeoutMs: 500 }));
    try {
      await server.startServer();
      const { err } = await failure(() => dir.findDomain('example.org'));
      assert.equal(err.code, 'unavailable');
      assert.match(err.message, /mailwarden db migrate/);
      await migrated(url);
      assert.equal(await dir.findDomain('example.org'), undefined);
    } finally {
      await dir.close();
    }
  });
});
