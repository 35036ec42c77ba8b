// Policy state in MariaDB/MySQL (tables from migration 3 in mysql-schema.ts),
// shared by every instance on every MX host.
//
// Writes are single short statements, never LOCK TABLES, GET_LOCK or a
// transaction held open across round trips (Galera replicates each statement
// as its own write set and certifies it optimistically):
// - counters: one multi-row INSERT ... ON DUPLICATE KEY UPDATE count = count + n;
// - greylist triplets: read the row, apply greylist-state.ts, write it back with
//   a compare-and-set INSERT/UPDATE; losing a race (0 rows, duplicate key, or a
//   Galera certification failure reported as a deadlock) re-reads and retries;
// - client networks: one INSERT ... ON DUPLICATE KEY UPDATE whose assignments
//   only read columns assigned after them, so the result is the same whether
//   the server evaluates SET left to right or simultaneously.
//
// Failure model as in the directory (mysql-backend.ts): one deadline per call
// (directory.query_timeout) covers waiting for a pool connection, connecting
// and every statement; anything the caller did not cause is
// DirectoryError('unavailable'), which the policy turns into DEFER.
//
// Galera: writes from several nodes to one row (a busy login's counter bucket,
// a triplet retried on two MX at once) are certification conflicts, reported
// as deadlocks and retried here. Reads on one node may lag writes committed on
// another by the apply delay unless wsrep_sync_wait is set for the user; for
// rate limits that is a few ms of slack, for greylisting irrelevant. The
// sweep's DELETE ... LIMIT needs binlog_format=ROW, which Galera requires anyway.
import { createHash } from 'node:crypto';
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import type { Logger } from 'pino';
import { createDirectoryPool, type MysqlDirectoryConfig } from '../directory/mysql-backend.ts';
import { parseMysqlUrl } from '../directory/mysql-url.ts';
import { DirectoryError } from '../directory/types.ts';
import { checkRules, isAlive, nextClient, nextTriplet, tripletId } from './greylist-state.ts';
import { DEFAULT_SWEEP, startSweeper, type SweepSchedule } from './sweeper.ts';
import type {
  ClientRecord, ClientUpdate, CounterIncrement, CounterRef, PolicyStateStore, SweepResult, TripletRecord, TripletRules,
  TripletSeen, WindowCount,
} from './types.ts';
import { bucketExpiry, bucketStart, bucketWidth, checkCounter, checkTime, firstCountedBucket, windowCount } from './window.ts';

/** Longest counter key stored as is (policy_counter.name is VARCHAR(400)); longer ones are hashed. */
const MAX_KEY = 400;
/** Attempts for a write that lost a race with another instance (all within the one deadline). */
const CONFLICT_ATTEMPTS = 5;
const STALE_CONNECTION = new Set(['ECONNRESET', 'PROTOCOL_CONNECTION_LOST', 'EPIPE']);
/** InnoDB deadlock, and what Galera reports when certification aborts a write set. */
const CONFLICT = new Set(['ER_LOCK_DEADLOCK', 'ER_DUP_ENTRY']);
const SWEPT_TABLES = ['policy_counter', 'greylist_triplet', 'greylist_client'] as const;

export interface MysqlPolicyStateOptions {
  /** Deadline per call, ms (directory.query_timeout). */
  readonly timeoutMs: number;
  /** Shown in errors and logs (the URL without its password). */
  readonly display: string;
  readonly log?: Logger | undefined;
  /** Periodic sweep of expired rows; false for none. Default every minute, 1000 rows per table. */
  readonly sweep?: Partial<SweepSchedule> | false;
  /** close() ends the pool (true when open() created it). */
  readonly ownsPool?: boolean;
}

class DeadlineError extends Error {}

type Conn = PoolConnection;

export class MysqlPolicyState implements PolicyStateStore {
  readonly kind = 'mysql' as const;
  readonly display: string;
  readonly #pool: Pool;
  readonly #timeoutMs: number;
  readonly #log: Logger | undefined;
  readonly #ownsPool: boolean;
  readonly #sweeper: { stop(): void } | undefined;

  constructor(pool: Pool, options: MysqlPolicyStateOptions) {
    this.#pool = pool;
    this.#timeoutMs = options.timeoutMs;
    this.display = options.display;
    this.#log = options.log;
    this.#ownsPool = options.ownsPool ?? false;
    this.#sweeper = options.sweep === false ? undefined : startSweeper(this, { ...DEFAULT_SWEEP, log: options.log, ...options.sweep });
  }

  /**
   * A store with its own small pool from directory.url (pool_size connections
   * on top of the directory's). Does not connect: a database that is down at
   * start makes calls fail 'unavailable' until it is back, like the directory.
   */
  static open(config: MysqlDirectoryConfig, log?: Logger, options: { sweep?: Partial<SweepSchedule> | false } = {}): MysqlPolicyState {
    return new MysqlPolicyState(createDirectoryPool(config), {
      timeoutMs: config.queryTimeoutMs, display: parseMysqlUrl(config.url).display, log, ownsPool: true, ...options,
    });
  }

  async close(): Promise<void> {
    this.#sweeper?.stop();
    if (this.#ownsPool) await this.#pool.end().catch((err: Error) => this.#log?.debug({ err: err.message }, 'closing the policy state pool'));
  }

  // --- counters ---

  async addToCounters(increments: readonly CounterIncrement[], now: number): Promise<WindowCount[]> {
    checkTime(now);
    for (const i of increments) checkCounter(i, i.amount);
    // Same bucket twice in one call: one row. Sorted, so concurrent multi-row
    // upserts lock rows in the same order and cannot deadlock each other.
    const rows = new Map<string, [string, number, number, number, number]>();
    for (const i of increments) {
      if (i.amount === 0) continue;
      const name = storedKey(i.key);
      const width = bucketWidth(i.windowMs);
      const start = bucketStart(now, width);
      const id = `${name}\n${width}\n${start}`;
      const row = rows.get(id);
      const expires = bucketExpiry(start, i.windowMs, width);
      if (row) rows.set(id, [name, width, start, row[3] + i.amount, Math.max(row[4], expires)]);
      else rows.set(id, [name, width, start, i.amount, expires]);
    }
    const sorted = [...rows].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, row]) => row);
    return this.#run('count', async (c) => {
      if (sorted.length > 0) {
        await retryConflicts(() => c.execute(
          `INSERT INTO policy_counter (name, width_ms, bucket_start, count, expires_at) VALUES ${sorted.map(() => '(?, ?, ?, ?, ?)').join(', ')}
           ON DUPLICATE KEY UPDATE count = count + VALUES(count), expires_at = GREATEST(expires_at, VALUES(expires_at))`,
          sorted.flat()));
      }
      return selectCounters(c, increments, now);
    });
  }

  async readCounters(counters: readonly CounterRef[], now: number): Promise<WindowCount[]> {
    checkTime(now);
    for (const r of counters) checkCounter(r);
    if (counters.length === 0) return [];
    return this.#run('read counters', (c) => selectCounters(c, counters, now));
  }

  // --- greylisting ---

  async seeTriplet(triplet: string, now: number, rules: TripletRules): Promise<TripletSeen> {
    checkTime(now);
    checkRules(rules);
    const id = tripletId(triplet);
    return this.#run('greylist triplet', async (c) => {
      for (let attempt = 1; ; attempt++) {
        const old = await selectTriplet(c, id);
        const step = nextTriplet(old, now, rules);
        if (!step.write) return { record: step.record, passedNow: false };
        const r = step.record;
        try {
          if (old === undefined) {
            await c.execute('INSERT INTO greylist_triplet (id, first_seen, last_seen, passed_at, expires_at) VALUES (?, ?, ?, ?, ?)',
              [id, r.firstSeen, r.lastSeen, r.passedAt ?? null, r.expiresAt]);
            return { record: r, passedNow: step.passedNow };
          }
          // Compare-and-set: only if nobody changed (or swept) the row since we read it.
          const [res] = await c.execute<ResultSetHeader>(
            `UPDATE greylist_triplet SET first_seen = ?, last_seen = ?, passed_at = ?, expires_at = ?
             WHERE id = ? AND first_seen = ? AND last_seen = ? AND passed_at <=> ? AND expires_at = ?`,
            [r.firstSeen, r.lastSeen, r.passedAt ?? null, r.expiresAt, id, old.firstSeen, old.lastSeen, old.passedAt ?? null, old.expiresAt]);
          if (res.affectedRows > 0) return { record: r, passedNow: step.passedNow };
        } catch (err) {
          if (!isConflict(err)) throw err;
        }
        if (attempt >= CONFLICT_ATTEMPTS) {
          throw new DirectoryError('unavailable', `greylist triplet: still changing under us after ${attempt} attempts`);
        }
        await pause(attempt);
      }
    });
  }

  async readTriplet(triplet: string, now: number): Promise<TripletRecord | undefined> {
    checkTime(now);
    const r = await this.#run('read greylist triplet', (c) => selectTriplet(c, tripletId(triplet)));
    return r && isAlive(r, now) ? r : undefined;
  }

  async readClient(network: string, now: number): Promise<ClientRecord | undefined> {
    checkTime(now);
    const rows = await this.#run('read greylist client', async (c) => (await c.execute<RowDataPacket[]>(
      'SELECT passes, first_seen, last_seen, last_pass, expires_at FROM greylist_client WHERE network = ?', [network]))[0]);
    const r = rows[0];
    if (!r) return undefined;
    const record: ClientRecord = {
      passes: Number(r['passes']), firstSeen: Number(r['first_seen']), lastSeen: Number(r['last_seen']),
      lastPass: Number(r['last_pass']), expiresAt: Number(r['expires_at']),
    };
    return isAlive(record, now) ? record : undefined;
  }

  async updateClient(network: string, now: number, update: ClientUpdate): Promise<void> {
    checkTime(now);
    const fresh = nextClient(undefined, now, update);
    // An expired row starts afresh (VALUES()); otherwise passes and last_pass move
    // together. Each assignment reads only itself and columns assigned after it.
    const counts = '(? AND (? >= last_pass + ? OR last_pass > ?))';
    const countArgs = [update.pass, now, update.minPassIntervalMs, now];
    await this.#run('update greylist client', async (c) => {
      await retryConflicts(() => c.execute(
        `INSERT INTO greylist_client (network, passes, first_seen, last_seen, last_pass, expires_at) VALUES (?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE
           passes = IF(? > expires_at, VALUES(passes), passes + IF(${counts}, 1, 0)),
           last_pass = IF(? > expires_at, VALUES(last_pass), IF(${counts}, ?, last_pass)),
           first_seen = IF(? > expires_at, VALUES(first_seen), first_seen),
           last_seen = IF(? > expires_at, VALUES(last_seen), GREATEST(last_seen, ?)),
           expires_at = IF(? > expires_at, VALUES(expires_at), GREATEST(expires_at, ?))`,
        [network, fresh.passes, fresh.firstSeen, fresh.lastSeen, fresh.lastPass, fresh.expiresAt,
          now, ...countArgs,
          now, ...countArgs, now,
          now,
          now, now,
          now, now + update.maxAgeMs]));
    });
  }

  // --- expiry ---

  async sweep(now: number, limit: number): Promise<SweepResult> {
    checkTime(now);
    if (!Number.isSafeInteger(limit) || limit < 1) throw new DirectoryError('invalid', `sweep limit must be a positive integer, got ${limit}`);
    return this.#run('sweep policy state', async (c) => {
      let deleted = 0;
      let more = false;
      for (const table of SWEPT_TABLES) {
        try {
          // Table names are constants. expires_at is indexed: a short range delete.
          const [res] = await c.execute<ResultSetHeader>(`DELETE FROM ${table} WHERE expires_at < ? LIMIT ?`, [now, limit]);
          deleted += res.affectedRows;
          if (res.affectedRows >= limit) more = true;
        } catch (err) {
          // Another instance sweeping the same rows: it deletes them, we come back later.
          if (!isConflict(err)) throw err;
          more = true;
        }
      }
      return { deleted, more };
    });
  }

  // --- plumbing (the same deadline model as MysqlDirectory) ---

  async #run<T>(what: string, fn: (c: Conn) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(fn, deadline);
      } catch (err) {
        // A pooled connection that died while idle (server restart, NAT timeout) fails its
        // first statement before the server saw it: retry once on a fresh one.
        if (attempt === 1 && isStale(err) && Date.now() < deadline) {
          this.#log?.debug({ database: this.display, err: (err as Error).message }, 'stale database connection, retrying');
          continue;
        }
        throw this.#toDirectoryError(err, what);
      }
    }
  }

  #attempt<T>(fn: (c: Conn) => Promise<T>, deadline: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let conn: Conn | undefined;
      let settled = false;
      const finish = (err: unknown, value?: T) => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        if (err === undefined) resolve(value as T);
        else reject(err);
        return true;
      };
      // The pool has no acquire timeout and a statement may hang on a dead peer: this bounds both.
      const timer = setTimeout(() => {
        conn?.destroy();
        finish(new DeadlineError());
      }, Math.max(0, deadline - Date.now()));
      this.#pool.getConnection().then(async (c) => {
        if (settled) return c.release();
        conn = c;
        try {
          const value = await fn(c);
          if (finish(undefined, value)) c.release();
        } catch (err) {
          if ((err as { fatal?: boolean } | undefined)?.fatal) c.destroy();
          else c.release();
          finish(err ?? new Error('unknown error'));
        }
      }, (err: unknown) => finish(err ?? new Error('cannot connect')));
    });
  }

  #toDirectoryError(err: unknown, what: string): DirectoryError {
    if (err instanceof DirectoryError) return err;
    if (err instanceof DeadlineError) {
      return new DirectoryError('unavailable', `${what}: no answer from the policy state database within ${this.#timeoutMs} ms`);
    }
    const e = err as { code?: string; sqlMessage?: string; message?: string };
    if (e.code === 'ER_NO_SUCH_TABLE') {
      return new DirectoryError('unavailable', `${what}: policy state tables missing in ${this.display}: run \`mailwarden db migrate\``, { cause: err });
    }
    const detail = e.sqlMessage ?? e.message ?? String(err);
    return new DirectoryError('unavailable', `${what}: policy state database ${this.display}: ${e.code ? `${e.code}: ` : ''}${detail}`, { cause: err });
  }
}

// --- statements ---

async function selectCounters(c: Conn, refs: readonly CounterRef[], now: number): Promise<WindowCount[]> {
  // One range per (name, width): the oldest first bucket any ref of it needs.
  const ranges = new Map<string, [string, number, number]>();
  for (const r of refs) {
    const name = storedKey(r.key);
    const width = bucketWidth(r.windowMs);
    const first = firstCountedBucket(now, r.windowMs, width);
    const id = `${name}\n${width}`;
    const seen = ranges.get(id);
    ranges.set(id, [name, width, seen ? Math.min(seen[2], first) : first]);
  }
  const [rows] = await c.execute<RowDataPacket[]>(
    `SELECT name, width_ms, bucket_start, count FROM policy_counter
     WHERE ${[...ranges.values()].map(() => '(name = ? AND width_ms = ? AND bucket_start >= ?)').join(' OR ')}`,
    [...ranges.values()].flat());
  const buckets = new Map<string, { start: number; count: number }[]>();
  for (const row of rows) {
    const id = `${String(row['name'])}\n${Number(row['width_ms'])}`;
    let list = buckets.get(id);
    if (!list) buckets.set(id, (list = []));
    list.push({ start: Number(row['bucket_start']), count: Number(row['count']) });
  }
  return refs.map((r) => windowCount(buckets.get(`${storedKey(r.key)}\n${bucketWidth(r.windowMs)}`) ?? [], now, r.windowMs));
}

async function selectTriplet(c: Conn, id: Buffer): Promise<TripletRecord | undefined> {
  const [rows] = await c.execute<RowDataPacket[]>(
    'SELECT first_seen, last_seen, passed_at, expires_at FROM greylist_triplet WHERE id = ?', [id]);
  const r = rows[0];
  if (!r) return undefined;
  return {
    firstSeen: Number(r['first_seen']),
    lastSeen: Number(r['last_seen']),
    ...(r['passed_at'] !== null ? { passedAt: Number(r['passed_at']) } : {}),
    expiresAt: Number(r['expires_at']),
  };
}

/** Keys longer than the column are replaced by a digest (still one counter per key). */
function storedKey(key: string): string {
  if (key.length <= MAX_KEY) return key;
  return `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

async function retryConflicts<T>(statement: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await statement();
    } catch (err) {
      // The statement was rolled back as a whole: running it again is safe.
      if (!isConflict(err) || attempt >= CONFLICT_ATTEMPTS) throw err;
      await pause(attempt);
    }
  }
}

function pause(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
}

function isConflict(err: unknown): boolean {
  return CONFLICT.has((err as { code?: string } | undefined)?.code ?? '');
}

function isStale(err: unknown): boolean {
  const e = err as { fatal?: boolean; code?: string; message?: string };
  if (!e || !e.fatal) return false;
  return STALE_CONNECTION.has(e.code ?? '') || /closed state/.test(e.message ?? '');
}
