// Shared policy state in a real MariaDB: two stores with their own pools play
// two mailwarden instances (two MX hosts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import mysql from 'mysql2/promise';
import { pino } from 'pino';
import { checkGreylist, GREYLIST_DEFAULTS, type GreylistSettings } from '../../src/checks/greylist.ts';
import { checkSendRate, recordMessage } from '../../src/checks/rate-limit.ts';
import type { MysqlDirectoryConfig } from '../../src/directory/mysql-backend.ts';
import { MysqlDirectory, createDirectoryPool } from '../../src/directory/mysql-backend.ts';
import { databaseStatus, migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../src/directory/mysql-schema.ts';
import { DirectoryError } from '../../src/directory/types.ts';
import { FilePolicyState } from '../../src/state/file-store.ts';
import { MysqlPolicyState } from '../../src/state/mysql-store.ts';
import { openPolicyState } from '../../src/state/open.ts';
import type { PolicyStateStore } from '../../src/state/types.ts';
import { bucketWidth } from '../../src/state/window.ts';
import { mariaDbAvailable, startMariaDb, testMariaDb, type MariaDb } from '../support/mariadb.ts';

const skip = mariaDbAvailable() ? false : 'MariaDB is not installed';
const DB = 'mw_policy_state';
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2025, 3, 7, 8, 0, 0);
const silent = pino({ level: 'silent' });

function config(url: string, over: Partial<MysqlDirectoryConfig> = {}): MysqlDirectoryConfig {
  return { backend: 'mysql', url, poolSize: 4, queryTimeoutMs: 2000, cacheTtlMs: 0, cacheSize: 0, ...over };
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

describe('MysqlPolicyState', { skip }, () => {
  let db: MariaDb;
  let url: string;
  let a: MysqlPolicyState;
  let b: MysqlPolicyState;
  let root: mysql.Pool;

  before(async () => {
    db = await testMariaDb();
    url = await db.createDatabase(DB);
    assert.deepEqual(await migrateDatabase(config(url)), { from: 0, to: SCHEMA_VERSION });
    a = MysqlPolicyState.open(config(url), silent, { sweep: false });
    b = MysqlPolicyState.open(config(url), silent, { sweep: false });
    root = mysql.createPool({ uri: url, connectionLimit: 1 });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await root?.end();
  });

  async function rows(sql: string, params: unknown[] = []): Promise<mysql.RowDataPacket[]> {
    return (await root.query<mysql.RowDataPacket[]>(sql, params))[0];
  }

  test('migration 3: every table has a primary key; db status reports the version', async () => {
    assert.ok(SCHEMA_VERSION >= 3);
    const tables = await rows(
      `SELECT t.table_name AS t, t.table_collation AS c,
              (SELECT COUNT(*) FROM information_schema.table_constraints k
                WHERE k.table_schema = t.table_schema AND k.table_name = t.table_name AND k.constraint_type = 'PRIMARY KEY') AS pk
       FROM information_schema.tables t WHERE t.table_schema = DATABASE() ORDER BY 1`);
    for (const name of ['policy_counter', 'greylist_triplet', 'greylist_client']) {
      assert.ok(tables.some((r) => r['t'] === name), `${name} exists`);
    }
    for (const r of tables) {
      assert.equal(Number(r['pk']), 1, `${String(r['t'])} has a primary key (Galera)`);
      assert.equal(r['c'], 'utf8mb4_bin', String(r['t']));
    }
    const status = await databaseStatus(config(url));
    assert.equal(status['schema_version'], SCHEMA_VERSION);
    assert.equal(status['pending_migrations'], 'none');
  });

  test('a version 2 database is upgraded to 3 in place', async () => {
    const old = await db.createDatabase(`${DB}_v2`);
    const pool = createDirectoryPool(config(old));
    try {
      assert.deepEqual(await migrate(pool, MIGRATIONS.filter((m) => m.version <= 2)), { from: 0, to: 2 });
      assert.deepEqual(await migrate(pool), { from: 2, to: SCHEMA_VERSION });
      const store = new MysqlPolicyState(pool, { timeoutMs: 1000, display: 'v2', sweep: false });
      assert.equal((await store.addToCounters([{ key: 'k', windowMs: MIN, amount: 1 }], T0))[0]!.total, 1);
      await store.close();
      await pool.query('SELECT 1'); // not its pool: still open
    } finally {
      await pool.end();
    }
  });

  test('concurrent increments from two instances sum exactly', async () => {
    const key = 'sasl:race@example.org:messages';
    const N = 400;
    const both = await Promise.all([a, b].flatMap((store, s) => Array.from({ length: N }, (_, i) =>
      store.addToCounters([{ key, windowMs: HOUR, amount: 1 }, { key: `${key}:x`, windowMs: HOUR, amount: 2 }], T0 + s * 1000 + i))));
    const [final] = await a.readCounters([{ key, windowMs: HOUR }], T0 + 2000);
    assert.equal(final?.total, 2 * N);
    assert.equal((await b.readCounters([{ key: `${key}:x`, windowMs: HOUR }], T0 + 2000))[0]?.total, 4 * N);
    // Every caller saw at least its own increment, and someone saw them all.
    const seen = both.map((r) => r[0]!.total);
    assert.ok(seen.every((n) => n >= 1 && n <= 2 * N));
    assert.equal(Math.max(...seen), 2 * N);
  });

  test('the window slides: buckets leave one window plus one bucket after they began', async () => {
    const key = 'sasl:slide@example.org:recipients';
    const W = HOUR;
    const w = bucketWidth(W);
    await a.addToCounters([{ key, windowMs: W, amount: 5 }], T0);
    await b.addToCounters([{ key, windowMs: W, amount: 7 }], T0 + 20 * MIN);
    const at = (now: number) => a.readCounters([{ key, windowMs: W }], now).then((r) => r[0]!);
    assert.deepEqual(await at(T0 + 30 * MIN), { total: 12, expiring: [{ at: T0 + W + w, count: 5 }, { at: T0 + 20 * MIN + W + w, count: 7 }] });
    assert.equal((await at(T0 + W + w - 1)).total, 12);
    assert.equal((await at(T0 + W + w)).total, 7);
    assert.equal((await at(T0 + 20 * MIN + W + w)).total, 0);
    // Another window on the same key is another set of buckets.
    assert.equal((await a.readCounters([{ key, windowMs: DAY }], T0 + 30 * MIN))[0]!.total, 0);
  });

  test('a key longer than the column is stored by digest, still one counter', async () => {
    const key = `sasl:${'x'.repeat(500)}@example.org:messages`;
    await a.addToCounters([{ key, windowMs: HOUR, amount: 1 }], T0);
    await b.addToCounters([{ key, windowMs: HOUR, amount: 1 }], T0);
    assert.equal((await a.readCounters([{ key }].map((k) => ({ ...k, windowMs: HOUR })), T0))[0]!.total, 2);
    assert.equal((await rows("SELECT COUNT(*) AS n FROM policy_counter WHERE name LIKE 'sha256:%'"))[0]!['n'], 1);
  });

  test('rate limit across instances: counted on one host, refused on the other', async () => {
    const limits = { messages: { count: 2, windowMs: HOUR }, recipients: { count: 5, windowMs: HOUR } };
    const login = 'burst@example.org';
    await recordMessage(a, { login, recipients: 3, now: T0 }, limits);
    assert.deepEqual(await checkSendRate(b, { login, now: T0 + MIN, pendingRecipients: 1 }, limits), { allowed: true, messages: 1, recipients: 3 });
    const over = await checkSendRate(b, { login, now: T0 + MIN, pendingRecipients: 2 }, limits);
    assert.equal(over.allowed, false);
    assert.equal(over.limit, 'recipients');
    await recordMessage(b, { login, recipients: 1, now: T0 + MIN }, limits);
    const full = await checkSendRate(a, { login, now: T0 + 2 * MIN }, limits);
    assert.deepEqual(full, { allowed: false, messages: 2, recipients: 4, limit: 'messages', retryAfterMs: HOUR + 5 * MIN - 2 * MIN });
  });

  test('greylisting sequence on two hosts: first, early, after the delay, expired', async () => {
    const s: GreylistSettings = { ...GREYLIST_DEFAULTS, autoAllowAfter: 0 };
    const msg = { clientIp: '203.0.113.5', sender: 'alice@example.org', recipient: 'bob@example.net' };
    const first = await checkGreylist(a, { ...msg, now: T0 }, s);
    assert.equal(first.result, 'greylisted');
    assert.equal(first.retryAfterMs, 5 * MIN);
    // The retry reaches the other MX, from another address in the /24.
    const early = await checkGreylist(b, { ...msg, clientIp: '203.0.113.6', now: T0 + 2 * MIN }, s);
    assert.deepEqual(early, { ...first, retryAfterMs: 3 * MIN });
    assert.deepEqual(await checkGreylist(a, { ...msg, now: T0 + 5 * MIN }, s), { result: 'pass', triplet: first.triplet, firstSeen: T0 });
    assert.equal((await checkGreylist(b, { ...msg, now: T0 + 10 * DAY }, s)).result, 'pass');
    const rec = await a.readTriplet(first.triplet, T0 + 10 * DAY);
    assert.deepEqual(rec, { firstSeen: T0, lastSeen: T0 + 10 * DAY, passedAt: T0 + 5 * MIN, expiresAt: T0 + 45 * DAY });
    // Unseen for longer than max age: greylisted anew.
    const stale = await checkGreylist(b, { ...msg, now: T0 + 46 * DAY }, s);
    assert.deepEqual(stale, { result: 'greylisted', triplet: first.triplet, firstSeen: T0 + 46 * DAY, retryAfterMs: 5 * MIN });
    // A first retry after the retry window starts over too.
    const late = { ...msg, recipient: 'late@example.net' };
    await checkGreylist(a, { ...late, now: T0 }, s);
    assert.equal((await checkGreylist(b, { ...late, now: T0 + 2 * DAY + 1 }, s)).firstSeen, T0 + 2 * DAY + 1);
  });

  test('the same retry on both hosts at once passes the triplet once', async () => {
    const triplet = 'race/alice@example.org/bob@example.net';
    const rules = { delayMs: 5 * MIN, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY };
    await a.seeTriplet(triplet, T0, rules);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).seeTriplet(triplet, T0 + 6 * MIN + i, rules)));
    assert.equal(results.filter((r) => r.passedNow).length, 1, 'exactly one call let it through first');
    assert.ok(results.every((r) => r.record.passedAt !== undefined && r.record.firstSeen === T0));
  });

  test('auto-allow is shared: passes counted on either host', async () => {
    const s: GreylistSettings = { ...GREYLIST_DEFAULTS, autoAllowAfter: 2 };
    const send = (store: PolicyStateStore, recipient: string, now: number) =>
      checkGreylist(store, { clientIp: '2001:db8:77:1::9', sender: 'news@lists.example', recipient, now }, s);
    await send(a, 'one@example.net', T0);
    assert.equal((await send(b, 'one@example.net', T0 + 6 * MIN)).result, 'pass');
    await send(b, 'two@example.net', T0 + HOUR);
    assert.equal((await send(a, 'two@example.net', T0 + HOUR + 6 * MIN)).result, 'pass');
    assert.deepEqual(await b.readClient('2001:db8:77:1::/64', T0 + HOUR + 6 * MIN), {
      passes: 2, firstSeen: T0 + 6 * MIN, lastSeen: T0 + HOUR + 6 * MIN, lastPass: T0 + HOUR + 6 * MIN, expiresAt: T0 + HOUR + 6 * MIN + 35 * DAY,
    });
    assert.equal((await send(b, 'three@example.net', T0 + HOUR + 7 * MIN)).result, 'auto_allowed');
    // Two hours later the allowance is refreshed (once an hour), which keeps it alive.
    await send(a, 'four@example.net', T0 + 3 * HOUR);
    assert.equal((await a.readClient('2001:db8:77:1::/64', T0 + 3 * HOUR))?.lastSeen, T0 + 3 * HOUR);
  });

  test('the MariaDB store and the file store agree step by step', async (t) => {
    const file = FilePolicyState.open(undefined, { sweep: false });
    t.after(() => file.close());
    const rules = { delayMs: 5 * MIN, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY };
    const client = { minPassIntervalMs: HOUR, maxAgeMs: 3 * DAY };
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    let now = T0;
    for (let i = 0; i < 400; i++) {
      now += Math.floor(random() * 6 * HOUR);
      const triplet = `parity/${Math.floor(random() * 4)}`;
      const network = `parity-net-${Math.floor(random() * 3)}`;
      const op = Math.floor(random() * 4);
      const run = async (store: PolicyStateStore) => {
        if (op === 0) return store.seeTriplet(triplet, now, rules);
        if (op === 1) return store.readTriplet(triplet, now);
        if (op === 2) {
          await store.updateClient(network, now, { ...client, pass: random() < 0.7 });
          return store.readClient(network, now);
        }
        return store.addToCounters([{ key: `parity:${network}`, windowMs: DAY, amount: 1 + (i % 3) }], now);
      };
      const state = seed;
      const mine = await run(a);
      seed = state; // the same random choices for the other store
      assert.deepEqual(await run(file), mine, `step ${i}, op ${op}`);
    }
  });

  test('sweep deletes expired rows only, at most `limit` per table, safely from two instances', async () => {
    const sweepDb = await db.createDatabase(`${DB}_sweep`);
    await migrateDatabase(config(sweepDb));
    const x = MysqlPolicyState.open(config(sweepDb), silent, { sweep: false });
    const y = MysqlPolicyState.open(config(sweepDb), silent, { sweep: false });
    try {
      const rules = { delayMs: 5 * MIN, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY };
      for (let i = 0; i < 30; i++) await x.seeTriplet(`old/${i}`, T0, rules); // expire at T0 + 2 d
      for (let i = 0; i < 5; i++) await x.seeTriplet(`new/${i}`, T0 + 3 * DAY, rules);
      await x.addToCounters([{ key: 'old', windowMs: MIN, amount: 1 }], T0); // expires at T0 + 65 s
      await x.addToCounters([{ key: 'new', windowMs: DAY, amount: 1 }], T0 + 2 * DAY + HOUR);
      await x.updateClient('old-net', T0, { pass: true, minPassIntervalMs: HOUR, maxAgeMs: DAY });
      await x.updateClient('new-net', T0 + 3 * DAY, { pass: true, minPassIntervalMs: HOUR, maxAgeMs: DAY });

      const now = T0 + 3 * DAY;
      const first = await x.sweep(now, 10);
      assert.deepEqual(first, { deleted: 10 + 1 + 1, more: true }, 'limited per table');
      const [r1, r2] = await Promise.all([x.sweep(now, 10), y.sweep(now, 10)]);
      const rest = await x.sweep(now, 10);
      assert.equal(r1!.deleted + r2!.deleted + rest.deleted, 20, 'the other 20 triplets, each deleted once');
      assert.deepEqual(await x.sweep(now, 10), { deleted: 0, more: false });
      const count = async (table: string) => Number((await rows(`SELECT COUNT(*) AS n FROM \`${DB}_sweep\`.${table}`))[0]!['n']);
      assert.equal(await count('greylist_triplet'), 5);
      assert.equal(await count('policy_counter'), 1);
      assert.equal(await count('greylist_client'), 1);
      for (let i = 0; i < 5; i++) assert.ok(await x.readTriplet(`new/${i}`, now));
      assert.equal((await x.readCounters([{ key: 'new', windowMs: DAY }], now))[0]!.total, 1);
      assert.ok(await x.readClient('new-net', now));
    } finally {
      await x.close();
      await y.close();
    }
  });

  test('missing tables are a temporary failure that names the fix', async () => {
    const bare = await db.createDatabase(`${DB}_bare`);
    const store = MysqlPolicyState.open(config(bare), silent, { sweep: false });
    try {
      const { err } = await failure(() => store.readCounters([{ key: 'k', windowMs: MIN }], T0));
      assert.equal(err.code, 'unavailable');
      assert.match(err.message, /mailwarden db migrate/);
    } finally {
      await store.close();
    }
  });

  test('openPolicyState picks the MariaDB store for the mysql backend', async () => {
    const dir = await MysqlDirectory.open(config(url), silent);
    const store = await openPolicyState(config(url), dir, silent);
    try {
      assert.equal(store.kind, 'mysql');
      await store.addToCounters([{ key: 'opened', windowMs: MIN, amount: 1 }], T0);
      assert.equal((await a.readCounters([{ key: 'opened', windowMs: MIN }], T0))[0]!.total, 1, 'the same tables');
    } finally {
      await store.close();
      await dir.close();
    }
  });

  test('cost per operation (sequential, one instance)', async (t) => {
    const n = 1000;
    const time = async (what: string, op: (i: number) => Promise<unknown>) => {
      const start = performance.now();
      for (let i = 0; i < n; i++) await op(i);
      const ms = (performance.now() - start) / n;
      t.diagnostic(`${what}: ${ms.toFixed(3)} ms/op`);
      return ms;
    };
    const rules = { delayMs: 5 * MIN, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY };
    const limits = { messages: { count: 1e9, windowMs: HOUR }, recipients: { count: 1e9, windowMs: DAY } };
    const results = [
      await time('addToCounters (1 key)', (i) => a.addToCounters([{ key: 'bench', windowMs: HOUR, amount: 1 }], T0 + i * 1000)),
      await time('recordMessage (2 keys)', (i) => recordMessage(a, { login: 'bench@example.org', recipients: 3, now: T0 + i * 1000 }, limits)),
      await time('checkSendRate (2 keys read)', (i) => checkSendRate(a, { login: 'bench@example.org', now: T0 + i * 1000 }, limits)),
      await time('seeTriplet (new triplet)', (i) => a.seeTriplet(`bench/${i}`, T0, rules)),
      await time('seeTriplet (greylisted retry)', (i) => a.seeTriplet(`bench/${i}`, T0 + MIN, rules)),
      await time('checkGreylist (pass, autoAllow on)', (i) => checkGreylist(a, { clientIp: `10.${i >> 8}.${i & 255}.1`, sender: 's@example.org', recipient: `r${i}@example.net`, now: T0 + 6 * MIN }, { ...GREYLIST_DEFAULTS })),
    ];
    assert.ok(results.every((ms) => ms < 20), 'a few round trips each, not seconds');
  });
});

describe('MysqlPolicyState outage', { skip }, () => {
  test('a server that accepts but never answers: unavailable at the deadline, not at the connect timeout', async (t) => {
    const sockets = new Set<net.Socket>();
    const blackhole = net.createServer((s) => sockets.add(s.on('error', () => undefined)));
    await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      for (const s of sockets) s.destroy();
      blackhole.close();
    });
    const port = (blackhole.address() as net.AddressInfo).port;
    const store = MysqlPolicyState.open(config(`mysql://u:p@127.0.0.1:${port}/d`, { queryTimeoutMs: 300 }), silent, { sweep: false });
    t.after(() => store.close());
    const { err, ms } = await failure(() => store.seeTriplet('t', T0, { delayMs: MIN, retryWindowMs: DAY, maxAgeMs: 30 * DAY }));
    assert.equal(err.code, 'unavailable');
    assert.match(err.message, /within 300 ms/);
    assert.ok(ms >= 250 && ms < 1500, `failed after ${ms} ms`);
  });

  test('a stopped server fails within the deadline as unavailable; works again after restart', async (t) => {
    const server = await startMariaDb();
    t.after(() => server.stop());
    const url = await server.createDatabase('mw_policy_outage');
    await migrateDatabase(config(url));
    const store = MysqlPolicyState.open(config(url, { queryTimeoutMs: 500, poolSize: 2 }), silent, { sweep: false });
    t.after(() => store.close());
    await store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0);

    await server.stopServer();
    for (const call of [
      () => store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0),
      () => store.readCounters([{ key: 'k', windowMs: HOUR }], T0),
      () => store.seeTriplet('t', T0, { delayMs: MIN, retryWindowMs: DAY, maxAgeMs: 30 * DAY }),
      () => checkGreylist(store, { clientIp: '192.0.2.1', sender: 'a@example.org', recipient: 'b@example.net', now: T0 }, GREYLIST_DEFAULTS),
      () => store.sweep(T0, 10),
    ]) {
      const { err, ms } = await failure(call);
      assert.equal(err.code, 'unavailable', err.message);
      assert.ok(err.temporary);
      assert.ok(ms < 2000, `failed in ${ms} ms (deadline 500 ms)`);
    }

    await server.startServer();
    const back = Date.now();
    let total: number | undefined;
    while (total === undefined && Date.now() - back < 10_000) {
      total = await store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0).then((r) => r[0]!.total, () => undefined);
    }
    assert.equal(total, 2, 'the count from before the outage survived, and the new one was added once');
  });
});
