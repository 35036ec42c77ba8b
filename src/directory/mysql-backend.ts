// The MySQL/MariaDB directory. Point reads are single primary-key lookups; a
// lookup cache sits above this class (remote = true) and is invalidated through
// onChange(), which is driven by the change serial every write bumps and the
// change log (change_log) that says which rows each serial touched.
//
// Failure model: every call has one deadline (queryTimeoutMs) that covers
// waiting for a pool connection, connecting and all statements, because a
// mail daemon must answer "try again later" quickly rather than hang Postfix.
// Anything that is not the caller's fault becomes DirectoryError 'unavailable'.
import mysql from 'mysql2/promise';
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import type { Logger } from 'pino';
import type { DirectoryConfig } from '../config/load.ts';
import { PointReads, placeholders } from './point-reads.ts';
import { parseMysqlUrl } from './mysql-url.ts';
import { SCHEMA_VERSION } from './mysql-schema.ts';
import {
  ALL_CHANGED, DirectoryError, type Alias, type AliasPatch, type ChangedKey, type ChangeKind, type DirectoryBackend,
  type DirectoryChange, type DirectoryPages, type Domain, type DomainPatch, type DomainUsage, type Mailbox,
  type MailboxActivity, type MailboxPatch, type QuotaUsageChange, type SenderGrant,
} from './types.ts';

export type MysqlDirectoryConfig = Extract<DirectoryConfig, { backend: 'mysql' }>;

const POLL_MS = 1000;
const POLL_WARN_EVERY_MS = 60_000;
/** Listings are admin operations over possibly millions of rows: bounded, but not by the hot-path deadline. */
const LIST_TIMEOUT_MS = 60_000;
/** Rows per multi-row INSERT of alias targets and change-log rows (keeps the number of distinct prepared statements small). */
const TARGET_CHUNK = 100;
/** Change-log rows are kept for this many serials; a reader further behind drops everything. */
const CHANGE_LOG_KEEP = 10_000;
/** Every this many serials a write also trims the log (a primary-key range delete, in the same transaction). */
const CHANGE_LOG_TRIM_EVERY = 100;
/** A poll reads at most this many change-log rows; more means "everything changed" (a bulk import). */
const CHANGE_LOG_READ_MAX = 10_000;
const CHANGE_KINDS: ReadonlySet<string> = new Set<ChangeKind>(['domain', 'mailbox', 'alias', 'grant']);
/** Fatal errors that mean "this pooled connection was already dead": safe to retry a read on a fresh one. */
const STALE_CONNECTION = new Set(['ECONNRESET', 'PROTOCOL_CONNECTION_LOST', 'EPIPE']);
/** Errors that no amount of waiting fixes: fail `open()` loudly instead of starting a daemon that only defers. */
const FATAL_AT_OPEN = new Set(['ER_ACCESS_DENIED_ERROR', 'ER_DBACCESS_DENIED_ERROR', 'ER_BAD_DB_ERROR', 'ER_NOT_SUPPORTED_AUTH_MODE']);

/** A mysql2 pool configured for a long-running daemon. Also used by `mailwarden db migrate`. */
export function createDirectoryPool(config: MysqlDirectoryConfig): Pool {
  const poolSize = Math.max(1, config.poolSize);
  return mysql.createPool(parseMysqlUrl(config.url, {
    connectionLimit: poolSize,
    // mysql2 only runs its idle sweeper when maxIdle < connectionLimit.
    maxIdle: Math.max(1, poolSize - 1),
    // Below the idle limits of NAT gateways, load balancers and firewalls (often 4-5 min),
    // and TCP keepalive probes well before that, so idle connections are not silently dropped.
    idleTimeout: 60_000,
    enableKeepAlive: true,
    keepAliveInitialDelay: 30_000,
    // A handshake that outlives a few call deadlines is useless, and pool.end() waits for it.
    connectTimeout: Math.min(10_000, Math.max(2_000, 2 * config.queryTimeoutMs)),
    // DATETIME(3) columns hold UTC.
    timezone: 'Z',
    // mysql2 captures a stack trace per query by default: ~7 µs each, 5.5 % of a cold-lookup profile.
    trace: false,
    supportBigNumbers: true,
  }));
}

class DeadlineError extends Error {}

type Conn = PoolConnection;
type Value = string | number | boolean | Date | null;

export class MysqlDirectory implements DirectoryBackend, DirectoryPages {
  readonly kind = 'mysql' as const;
  readonly remote = true;
  readonly display: string;
  readonly log: Logger | undefined;
  readonly #pool: Pool;
  readonly #timeoutMs: number;
  #schemaChecked = false;
  #opening = true;
  #serial: number | undefined;
  #listeners: Array<(change: DirectoryChange) => void> = [];
  /** Changes heard (own writes and polls): keyed = from the change log, all = fell back to "everything changed". */
  readonly changeStats = { keyed: 0, all: 0 };
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #pollFailures = 0;
  #lastPollWarn = 0;
  #lastSchemaError = 0;

  private constructor(pool: Pool, config: MysqlDirectoryConfig, display: string, log: Logger | undefined) {
    this.#pool = pool;
    this.#timeoutMs = config.queryTimeoutMs;
    this.display = display;
    this.log = log;
  }

  /**
   * Creates the pool and checks the schema. A server that is down does NOT fail
   * the open (a daemon may well start before MariaDB): calls then throw
   * 'unavailable' until it answers, and the schema is checked on the first
   * call that reaches it. An outdated schema or bad credentials do fail it.
   */
  static async open(config: MysqlDirectoryConfig, log?: Logger): Promise<MysqlDirectory> {
    const display = parseMysqlUrl(config.url).display;
    const dir = new MysqlDirectory(createDirectoryPool(config), config, display, log);
    try {
      await dir.#run('open', async () => undefined, { retry: true });
    } catch (err) {
      const e = err as DirectoryError;
      if (e.code !== 'unavailable' || FATAL_AT_OPEN.has(String((e.cause as { code?: unknown } | undefined)?.code))) {
        await dir.#pool.end().catch(() => undefined);
        throw e.code === 'unavailable' ? new DirectoryError('invalid', e.message, { cause: e.cause }) : e;
      }
      log?.warn({ directory: display, err: e.message }, 'directory database unreachable at start; answering "try again later" until it is back');
    } finally {
      dir.#opening = false;
    }
    return dir;
  }

  /** Start polling the change serial so onChange() listeners hear about writes by other processes. */
  watch(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.#poll(), POLL_MS);
    this.#timer.unref();
  }

  onChange(listener: (change: DirectoryChange) => void): void {
    this.#listeners.push(listener);
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    // Connections that already died make end() reject; that is no reason to fail a shutdown.
    await this.#pool.end().catch((err: Error) => this.log?.debug({ err: err.message }, 'closing the directory pool'));
  }

  // --- hot-path reads (primary-key lookups; those of one event-loop turn share a statement, point-reads.ts) ---

  readonly #domains = new PointReads<Domain>(async (names) => {
    const rows = await this.#read<DomainRow>('find domain', `SELECT ${DOMAIN_COLS} FROM domain WHERE name IN (${placeholders(names.length)})`, names);
    return new Map(rows.map((r) => [r.name, toDomain(r)]));
  });

  readonly #mailboxes = new PointReads<Mailbox>(async (addresses) => {
    const rows = await this.#read<MailboxRow>('find mailbox', `SELECT ${MAILBOX_COLS} FROM mailbox WHERE address IN (${placeholders(addresses.length)})`, addresses);
    return new Map(rows.map((r) => [r.address, toMailbox(r)]));
  });

  readonly #aliases = new PointReads<Alias>(async (addresses) => {
    const rows = await this.#read<AliasRow>('find alias', `${ALIAS_SELECT} WHERE a.address IN (${placeholders(addresses.length)}) ORDER BY a.address, t.position`, addresses);
    return new Map(toAliases(rows).map((a) => [a.address, a]));
  });

  readonly #grants = new PointReads<SenderGrant[]>(async (addresses) => {
    const rows = await this.#read<GrantRow>('find sender grants', `SELECT ${GRANT_COLS} FROM sender_grant WHERE address IN (${placeholders(addresses.length)}) ORDER BY address, login`, addresses);
    const byAddress = new Map<string, SenderGrant[]>();
    for (const r of rows) {
      const list = byAddress.get(r.address);
      if (list) list.push(toGrant(r));
      else byAddress.set(r.address, [toGrant(r)]);
    }
    return byAddress;
  });

  findDomain(name: string): Promise<Domain | undefined> {
    return this.#domains.get(name);
  }

  findMailbox(address: string): Promise<Mailbox | undefined> {
    return this.#mailboxes.get(address);
  }

  findAlias(address: string): Promise<Alias | undefined> {
    return this.#aliases.get(address);
  }

  async findSenderGrants(address: string): Promise<readonly SenderGrant[]> {
    return (await this.#grants.get(address)) ?? [];
  }

  /** Point-read statements sent and keys they read (a batching ratio for benchmarks). */
  get pointReadStats(): { statements: number; keys: number } {
    let statements = 0;
    let keys = 0;
    for (const r of [this.#domains, this.#mailboxes, this.#aliases, this.#grants]) {
      statements += r.statements;
      keys += r.keys;
    }
    return { statements, keys };
  }

  // --- listings ---

  async listDomains(): Promise<Domain[]> {
    return (await this.#read<DomainRow>('list domains', `SELECT ${DOMAIN_COLS} FROM domain ORDER BY name`, [], LIST_TIMEOUT_MS)).map(toDomain);
  }

  async listMailboxes(domain?: string): Promise<Mailbox[]> {
    const rows = domain === undefined
      ? await this.#read<MailboxRow>('list mailboxes', `SELECT ${MAILBOX_COLS} FROM mailbox ORDER BY address`, [], LIST_TIMEOUT_MS)
      : await this.#read<MailboxRow>('list mailboxes', `SELECT ${MAILBOX_COLS} FROM mailbox WHERE domain = ? ORDER BY address`, [domain], LIST_TIMEOUT_MS);
    return rows.map(toMailbox);
  }

  async listAliases(domain?: string): Promise<Alias[]> {
    const rows = domain === undefined
      ? await this.#read<AliasRow>('list aliases', `${ALIAS_SELECT} ORDER BY a.address, t.position`, [], LIST_TIMEOUT_MS)
      : await this.#read<AliasRow>('list aliases', `${ALIAS_SELECT} WHERE a.domain = ? ORDER BY a.address, t.position`, [domain], LIST_TIMEOUT_MS);
    return toAliases(rows);
  }

  async listSenderGrants(): Promise<SenderGrant[]> {
    return (await this.#read<GrantRow>('list sender grants', `SELECT ${GRANT_COLS} FROM sender_grant ORDER BY address, login`, [], LIST_TIMEOUT_MS)).map(toGrant);
  }

  async domainUsage(name: string): Promise<DomainUsage> {
    const rows = await this.#read<RowDataPacket>('count domain usage',
      `SELECT (SELECT COUNT(*) FROM mailbox WHERE domain = ?) AS mailboxes,
              (SELECT COUNT(*) FROM alias WHERE domain = ?) AS aliases,
              (SELECT COUNT(*) FROM domain WHERE alias_for = ?) AS alias_domains`, [name, name, name]);
    const r = rows[0];
    return { mailboxes: Number(r?.['mailboxes'] ?? 0), aliases: Number(r?.['aliases'] ?? 0), aliasDomains: Number(r?.['alias_domains'] ?? 0) };
  }

  // --- writes: each one a transaction that also bumps the change serial ---

  insertDomain(d: Domain): Promise<void> {
    return this.#write('insert domain', async (c) => {
      await insert(c, `domain ${d.name} already exists`,
        'INSERT INTO domain (name, alias_for, enabled, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)',
        [d.name, d.aliasFor ?? null, d.enabled, d.description ?? null, d.created, d.updated]);
      return [{ kind: 'domain', name: d.name }];
    });
  }

  updateDomain(name: string, patch: DomainPatch): Promise<void> {
    const set = assignments({ enabled: patch.enabled, description: patch.description });
    return this.#write('update domain', async (c) => {
      await mustAffect(c, `domain ${name} does not exist`, `UPDATE domain SET ${set.sql} WHERE name = ?`, [...set.values, name]);
      return [{ kind: 'domain', name }];
    });
  }

  deleteDomain(name: string): Promise<void> {
    return this.#write('delete domain', async (c) => {
      // Mailboxes and aliases (and their targets) go by ON DELETE CASCADE; a domain in the
      // change log stands for everything in it, so only the domains themselves are logged.
      const [aliasDomains] = await c.execute<RowDataPacket[]>('SELECT name FROM domain WHERE alias_for = ? FOR UPDATE', [name]);
      await mustAffect(c, `domain ${name} does not exist`, 'DELETE FROM domain WHERE name = ?', [name]);
      await c.execute('DELETE FROM domain WHERE alias_for = ?', [name]);
      await c.execute('DELETE FROM sender_grant WHERE domain = ?', [name]);
      return [name, ...aliasDomains.map((r) => String(r['name']))].map((n): ChangedKey => ({ kind: 'domain', name: n }));
    });
  }

  insertMailbox(m: Mailbox): Promise<void> {
    return this.#write('insert mailbox', async (c) => {
      await insert(c, `mailbox ${m.address} already exists`,
        `INSERT INTO mailbox (address, domain, name, password_hash, quota_bytes, enabled, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        [m.address, m.domain, m.name ?? null, m.passwordHash ?? null, m.quotaBytes, m.enabled, m.created, m.updated],
        `domain ${m.domain} does not exist`);
      return [{ kind: 'mailbox', name: m.address }];
    });
  }

  updateMailbox(address: string, patch: MailboxPatch): Promise<void> {
    const set = assignments({ name: patch.name, password_hash: patch.passwordHash, quota_bytes: patch.quotaBytes, enabled: patch.enabled });
    return this.#write('update mailbox', async (c) => {
      await mustAffect(c, `mailbox ${address} does not exist`, `UPDATE mailbox SET ${set.sql} WHERE address = ?`, [...set.values, address]);
      return [{ kind: 'mailbox', name: address }];
    });
  }

  deleteMailbox(address: string): Promise<void> {
    return this.#write('delete mailbox', async (c) => {
      await mustAffect(c, `mailbox ${address} does not exist`, 'DELETE FROM mailbox WHERE address = ?', [address]);
      return [{ kind: 'mailbox', name: address }];
    });
  }

  insertAlias(a: Alias): Promise<void> {
    return this.#write('insert alias', async (c) => {
      await insert(c, `alias ${a.address} already exists`,
        'INSERT INTO alias (address, domain, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?)',
        [a.address, a.domain, a.enabled, a.created, a.updated], `domain ${a.domain} does not exist`);
      await insertTargets(c, a.address, a.targets);
      return [{ kind: 'alias', name: a.address }];
    });
  }

  updateAlias(address: string, patch: AliasPatch): Promise<void> {
    const set = assignments({ enabled: patch.enabled });
    return this.#write('update alias', async (c) => {
      await mustAffect(c, `alias ${address} does not exist`, `UPDATE alias SET ${set.sql} WHERE address = ?`, [...set.values, address]);
      if (patch.targets !== undefined) {
        await c.execute('DELETE FROM alias_target WHERE alias_address = ?', [address]);
        await insertTargets(c, address, patch.targets);
      }
      return [{ kind: 'alias', name: address }];
    });
  }

  deleteAlias(address: string): Promise<void> {
    return this.#write('delete alias', async (c) => {
      await mustAffect(c, `alias ${address} does not exist`, 'DELETE FROM alias WHERE address = ?', [address]);
      return [{ kind: 'alias', name: address }];
    });
  }

  insertSenderGrant(g: SenderGrant): Promise<void> {
    return this.#write('insert sender grant', async (c) => {
      await insert(c, `${g.login} may already send as ${g.address}`,
        'INSERT INTO sender_grant (address, login, created_at) VALUES (?, ?, ?)', [g.address, g.login, g.created]);
      return [{ kind: 'grant', name: g.address }];
    });
  }

  deleteSenderGrant(address: string, login: string): Promise<void> {
    return this.#write('delete sender grant', async (c) => {
      await mustAffect(c, `no grant for ${login} to send as ${address}`,
        'DELETE FROM sender_grant WHERE address = ? AND login = ?', [address, login]);
      return [{ kind: 'grant', name: address }];
    });
  }

  // --- activity reported by Dovecot (no change serial: it is not directory data) ---

  async getActivity(address: string): Promise<MailboxActivity | undefined> {
    const rows = await this.#read<RowDataPacket>('get activity',
      'SELECT last_login, last_login_ip, quota_bytes, quota_messages FROM mailbox_activity WHERE address = ?', [address]);
    const r = rows[0];
    if (!r) return undefined;
    return {
      ...(r['last_login'] ? { lastLogin: r['last_login'] as Date } : {}),
      ...(r['last_login_ip'] ? { lastLoginIp: String(r['last_login_ip']) } : {}),
      ...(r['quota_bytes'] !== null ? { quotaBytes: Number(r['quota_bytes']) } : {}),
      ...(r['quota_messages'] !== null ? { quotaMessages: Number(r['quota_messages']) } : {}),
    };
  }

  async recordLogin(address: string, at: Date, ip?: string): Promise<void> {
    // A login for a mailbox deleted meanwhile hits the foreign key: nothing to record.
    await this.#run('record login', async (c) => {
      await c.execute(
        `INSERT INTO mailbox_activity (address, last_login, last_login_ip) SELECT m.address, ?, ? FROM mailbox m WHERE m.address = ?
         ON DUPLICATE KEY UPDATE last_login = VALUES(last_login), last_login_ip = COALESCE(VALUES(last_login_ip), mailbox_activity.last_login_ip)`,
        [at, ip ?? null, address]);
    }, { retry: true });
  }

  async updateQuotaUsage(address: string, change: QuotaUsageChange): Promise<'ok' | 'notfound'> {
    return this.#run('update quota usage', async (c) => {
      if (change.setBytes !== undefined || change.setMessages !== undefined) {
        await c.execute(
          `INSERT INTO mailbox_activity (address, quota_bytes, quota_messages) SELECT m.address, ?, ? FROM mailbox m WHERE m.address = ?
           ON DUPLICATE KEY UPDATE quota_bytes = COALESCE(VALUES(quota_bytes), mailbox_activity.quota_bytes),
             quota_messages = COALESCE(VALUES(quota_messages), mailbox_activity.quota_messages)`,
          [change.setBytes ?? null, change.setMessages ?? null, address]);
      }
      let result: 'ok' | 'notfound' = 'ok';
      for (const [col, diff] of [['quota_bytes', change.addBytes], ['quota_messages', change.addMessages]] as const) {
        if (diff === undefined) continue;
        // Column names are constants. An unset counter stays unset: Dovecot recalculates on 'notfound'.
        const [r] = await c.execute<ResultSetHeader>(
          `UPDATE mailbox_activity SET ${col} = ${col} + ? WHERE address = ? AND ${col} IS NOT NULL`, [diff, address]);
        if (r.affectedRows === 0) result = 'notfound';
      }
      return result;
    }, { retry: false });
  }

  // --- plumbing ---

  async #read<T extends RowDataPacket>(what: string, sql: string, params: Value[], timeoutMs = this.#timeoutMs): Promise<T[]> {
    return this.#run(what, async (c) => (await c.execute<T[]>(sql, params))[0], { retry: true, timeoutMs });
  }

  async #write(what: string, body: (c: Conn) => Promise<readonly ChangedKey[]>): Promise<void> {
    // Until COMMIT is sent, a dead connection means the server rolls the transaction
    // back, so retrying is as safe as for a read. A connection lost during COMMIT is not.
    let committing = false;
    const { serial, touched } = await this.#run(what, async (c) => {
      committing = false;
      await c.beginTransaction();
      try {
        const touched = await body(c);
        // The UPDATE locks the serial row until COMMIT: serials commit in the order they are taken.
        await c.execute("UPDATE mailwarden_meta SET value = CAST(value AS UNSIGNED) + 1 WHERE name = 'serial'");
        const [rows] = await c.execute<RowDataPacket[]>("SELECT value FROM mailwarden_meta WHERE name = 'serial'");
        const serial = Number(rows[0]?.['value']);
        await logChanges(c, serial, touched);
        committing = true;
        await c.commit();
        return { serial, touched };
      } catch (err) {
        // A connection that cannot roll back may still hold an open transaction: never reuse it.
        if (!committing) await c.rollback().catch(() => c.destroy());
        else c.destroy();
        throw err;
      }
    }, { retry: () => !committing });
    // Our own write: tell listeners now (like the YAML backend). The poll skips it when it was the
    // next serial; after a gap (writes elsewhere not yet polled) the poll reads it again with the others.
    const change: DirectoryChange = { all: false, keys: touched };
    if (this.#serial !== undefined && serial === this.#serial + 1) this.#serial = serial;
    this.#emit(change);
  }

  // --- pages, for caches that preload the whole directory (keyset pagination: each page a primary-key range) ---

  async pageDomains(after: string, limit: number): Promise<Domain[]> {
    return (await this.#read<DomainRow>('page domains', `SELECT ${DOMAIN_COLS} FROM domain WHERE name > ? ORDER BY name LIMIT ${pageLimit(limit)}`, [after], LIST_TIMEOUT_MS)).map(toDomain);
  }

  async pageMailboxes(after: string, limit: number): Promise<Mailbox[]> {
    return (await this.#read<MailboxRow>('page mailboxes', `SELECT ${MAILBOX_COLS} FROM mailbox WHERE address > ? ORDER BY address LIMIT ${pageLimit(limit)}`, [after], LIST_TIMEOUT_MS)).map(toMailbox);
  }

  async pageAliases(after: string, limit: number): Promise<Alias[]> {
    const rows = await this.#read<AliasRow>('page aliases',
      `SELECT a.address, a.domain, a.enabled, a.created_at, a.updated_at, t.target
       FROM (SELECT address, domain, enabled, created_at, updated_at FROM alias WHERE address > ? ORDER BY address LIMIT ${pageLimit(limit)}) a
       LEFT JOIN alias_target t ON t.alias_address = a.address ORDER BY a.address, t.position`, [after], LIST_TIMEOUT_MS);
    return toAliases(rows);
  }

  async pageSenderGrants(after: { readonly address: string; readonly login: string }, limit: number): Promise<SenderGrant[]> {
    return (await this.#read<GrantRow>('page sender grants',
      `SELECT ${GRANT_COLS} FROM sender_grant WHERE address > ? OR (address = ? AND login > ?) ORDER BY address, login LIMIT ${pageLimit(limit)}`,
      [after.address, after.address, after.login], LIST_TIMEOUT_MS)).map(toGrant);
  }

  /**
   * Runs `fn` on a pooled connection within one deadline. When `retry` allows,
   * it is retried once, within the same deadline, if the pooled connection
   * turns out to have died while idle (server restart, NAT/firewall timeout).
   */
  async #run<T>(what: string, fn: (c: Conn) => Promise<T>, opts: { retry: boolean | (() => boolean); timeoutMs?: number }): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(fn, deadline);
      } catch (err) {
        const retry = typeof opts.retry === 'function' ? opts.retry() : opts.retry;
        if (retry && attempt === 1 && isStale(err) && Date.now() < deadline) {
          this.log?.debug({ directory: this.display, err: (err as Error).message }, 'stale database connection, retrying');
          continue;
        }
        throw this.#toDirectoryError(err, what, timeoutMs);
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
      // The pool has no acquire timeout and statements may hang on a dead peer: this timer bounds both.
      const timer = setTimeout(() => {
        // Destroying aborts an in-flight statement and makes the server roll back an open transaction.
        conn?.destroy();
        finish(new DeadlineError());
      }, Math.max(0, deadline - Date.now()));

      this.#pool.getConnection().then(async (c) => {
        if (settled) return c.release(); // the caller gave up while we queued for it
        conn = c;
        try {
          if (!this.#schemaChecked) await this.#checkSchema(c);
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

  async #checkSchema(c: Conn): Promise<void> {
    let rows: RowDataPacket[] = [];
    try {
      [rows] = await c.execute<RowDataPacket[]>("SELECT name, value FROM mailwarden_meta WHERE name IN ('schema_version', 'serial')");
    } catch (err) {
      if ((err as { code?: string }).code !== 'ER_NO_SUCH_TABLE') throw err;
    }
    const value = (name: string) => rows.find((r) => r['name'] === name)?.['value'] as string | undefined;
    const version = Number(value('schema_version') ?? 0);
    if (version < SCHEMA_VERSION) {
      const message = `database schema is at version ${version}, this mailwarden needs ${SCHEMA_VERSION}: run \`mailwarden db migrate\``;
      // At open this is a configuration error; later (the database came up after us) it must
      // not bounce mail, so it is a temporary failure that is logged loudly.
      if (this.#opening) throw new DirectoryError('invalid', message);
      if (Date.now() - this.#lastSchemaError >= POLL_WARN_EVERY_MS) {
        this.#lastSchemaError = Date.now();
        this.log?.error({ directory: this.display }, message);
      }
      throw new DirectoryError('unavailable', message);
    }
    if (version > SCHEMA_VERSION) {
      this.log?.warn({ directory: this.display, version, expected: SCHEMA_VERSION }, 'database schema is newer than this mailwarden');
    }
    this.#schemaChecked = true;
    const serial = value('serial');
    if (this.#serial === undefined && serial !== undefined) this.#serial = Number(serial);
  }

  #toDirectoryError(err: unknown, what: string, timeoutMs: number): DirectoryError {
    if (err instanceof DirectoryError) return err;
    if (err instanceof DeadlineError) {
      return new DirectoryError('unavailable', `${what}: no answer from the directory database within ${timeoutMs} ms`);
    }
    const e = err as { code?: string; sqlMessage?: string; message?: string };
    const detail = e.sqlMessage ?? e.message ?? String(err);
    return new DirectoryError('unavailable', `${what}: directory database ${this.display}: ${e.code ? `${e.code}: ` : ''}${detail}`, { cause: err });
  }

  async #poll(): Promise<void> {
    if (this.#polling) return; // a slow database must not pile up polls
    this.#polling = true;
    try {
      const [row] = await this.#read<RowDataPacket>('read change serial', "SELECT value FROM mailwarden_meta WHERE name = 'serial'", []);
      if (this.#pollFailures > 0) {
        this.log?.info({ directory: this.display, failures: this.#pollFailures }, 'directory database reachable again');
      }
      this.#pollFailures = 0;
      this.#lastPollWarn = 0;
      const serial = Number(row?.['value']);
      const from = this.#serial;
      if (serial === from) return;
      // Never polled before (the database was down at start): nothing is known about what happened.
      const change = from === undefined || !(serial > from) ? ALL_CHANGED : await this.#readChanges(from, serial);
      if (this.#serial === undefined || serial > this.#serial || !(serial > from!)) this.#serial = serial;
      this.#emit(change);
    } catch (err) {
      this.#pollFailures++;
      const now = Date.now();
      if (now - this.#lastPollWarn >= POLL_WARN_EVERY_MS) {
        this.#lastPollWarn = now;
        this.log?.warn({ directory: this.display, failures: this.#pollFailures, err: (err as Error).message }, 'cannot poll the directory change serial');
      }
    } finally {
      this.#polling = false;
    }
  }

  /** What serials (from, to] touched: their change-log rows, or everything when any serial has none. */
  async #readChanges(from: number, to: number): Promise<DirectoryChange> {
    if (to - from > CHANGE_LOG_READ_MAX) return this.#gap(from, to, 'too many changes');
    const rows = await this.#read<RowDataPacket>('read change log',
      `SELECT serial, kind, name FROM change_log WHERE serial > ? AND serial <= ? ORDER BY serial LIMIT ${CHANGE_LOG_READ_MAX + 1}`,
      [from, to]);
    if (rows.length > CHANGE_LOG_READ_MAX) return this.#gap(from, to, 'too many changes');
    const serials = new Set<number>();
    const keys: ChangedKey[] = [];
    for (const r of rows) {
      const kind = String(r['kind']);
      if (!CHANGE_KINDS.has(kind)) return this.#gap(from, to, `unknown change kind ${kind}`);
      serials.add(Number(r['serial']));
      keys.push({ kind: kind as ChangeKind, name: String(r['name']) });
    }
    // A writer that does not log (an older mailwarden, a hand edit that bumped the serial) or trimmed rows.
    if (serials.size !== to - from) return this.#gap(from, to, 'serials missing from the change log');
    return { all: false, keys };
  }

  #gap(from: number, to: number, why: string): DirectoryChange {
    this.log?.info({ directory: this.display, from, to, why }, 'directory changed: dropping every cached answer');
    return ALL_CHANGED;
  }

  #emit(change: DirectoryChange): void {
    if (change.all) this.changeStats.all++;
    else this.changeStats.keyed++;
    if (this.log?.isLevelEnabled('debug')) {
      this.log.debug({ directory: this.display, changed: change.all ? 'all' : change.keys.map((k) => `${k.kind} ${k.name}`) }, 'directory changed');
    }
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        this.log?.error({ err }, 'directory change listener failed');
      }
    }
  }
}

// --- SQL helpers ---

async function insert(c: Conn, exists: string, sql: string, params: Value[], missingParent?: string): Promise<void> {
  try {
    await c.execute(sql, params);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ER_DUP_ENTRY') throw new DirectoryError('exists', exists);
    if (code === 'ER_NO_REFERENCED_ROW_2' && missingParent) throw new DirectoryError('invalid', missingParent);
    throw err;
  }
}

async function mustAffect(c: Conn, notFound: string, sql: string, params: Value[]): Promise<void> {
  // mysql2 connects with CLIENT_FOUND_ROWS, so an UPDATE that changes nothing still counts its row.
  const [result] = await c.execute<ResultSetHeader>(sql, params);
  if (result.affectedRows === 0) throw new DirectoryError('not_found', notFound);
}

/** `col = ?` for each defined field (null clears), plus updated_at. Column names are constants, never input. */
function assignments(fields: Record<string, Value | undefined>): { sql: string; values: Value[] } {
  const cols: string[] = [];
  const values: Value[] = [];
  for (const [col, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    cols.push(`${col} = ?`);
    values.push(value);
  }
  cols.push('updated_at = ?');
  values.push(new Date());
  return { sql: cols.join(', '), values };
}

/** One change-log row per touched entity; every CHANGE_LOG_TRIM_EVERY serials, rows older than CHANGE_LOG_KEEP serials go. */
async function logChanges(c: Conn, serial: number, touched: readonly ChangedKey[]): Promise<void> {
  const unique = [...new Map(touched.map((k) => [`${k.kind}\0${k.name}`, k])).values()];
  for (let i = 0; i < unique.length; i += TARGET_CHUNK) {
    const chunk = unique.slice(i, i + TARGET_CHUNK);
    await c.execute(`INSERT INTO change_log (serial, kind, name) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`,
      chunk.flatMap((k) => [serial, k.kind, k.name]));
  }
  if (serial % CHANGE_LOG_TRIM_EVERY === 0 && serial > CHANGE_LOG_KEEP) {
    await c.execute('DELETE FROM change_log WHERE serial <= ?', [serial - CHANGE_LOG_KEEP]);
  }
}

/** Page sizes are inlined (LIMIT ? is not portable in prepared statements); always a small positive integer. */
function pageLimit(limit: number): number {
  return Math.max(1, Math.min(100_000, Math.floor(limit)));
}

async function insertTargets(c: Conn, address: string, targets: readonly string[]): Promise<void> {
  // The primary key makes targets a set; keep the first occurrence of a duplicate.
  const unique = [...new Set(targets)];
  for (let i = 0; i < unique.length; i += TARGET_CHUNK) {
    const chunk = unique.slice(i, i + TARGET_CHUNK);
    const params = chunk.flatMap((target, j) => [address, i + j, target]);
    await c.execute(`INSERT INTO alias_target (alias_address, position, target) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`, params);
  }
}

function isStale(err: unknown): boolean {
  const e = err as { fatal?: boolean; code?: string; message?: string };
  if (!e || !e.fatal) return false;
  return STALE_CONNECTION.has(e.code ?? '') || /closed state/.test(e.message ?? '');
}

// --- rows → entities (optional fields are omitted, not undefined, to match the YAML backend) ---

const DOMAIN_COLS = 'name, alias_for, enabled, description, created_at, updated_at';
const MAILBOX_COLS = 'address, domain, name, password_hash, quota_bytes, enabled, created_at, updated_at';
const GRANT_COLS = 'address, login, created_at';
const ALIAS_SELECT = `SELECT a.address, a.domain, a.enabled, a.created_at, a.updated_at, t.target
  FROM alias a LEFT JOIN alias_target t ON t.alias_address = a.address`;

interface DomainRow extends RowDataPacket {
  name: string; alias_for: string | null; enabled: number; description: string | null; created_at: Date; updated_at: Date;
}
interface MailboxRow extends RowDataPacket {
  address: string; domain: string; name: string | null; password_hash: string | null; quota_bytes: number | string;
  enabled: number; created_at: Date; updated_at: Date;
}
interface AliasRow extends RowDataPacket {
  address: string; domain: string; enabled: number; created_at: Date; updated_at: Date; target: string | null;
}
interface GrantRow extends RowDataPacket { address: string; login: string; created_at: Date }

function toDomain(r: DomainRow): Domain {
  return {
    name: r.name,
    ...(r.alias_for !== null ? { aliasFor: r.alias_for } : {}),
    enabled: r.enabled !== 0,
    ...(r.description !== null ? { description: r.description } : {}),
    created: r.created_at,
    updated: r.updated_at,
  };
}

function toMailbox(r: MailboxRow): Mailbox {
  return {
    address: r.address,
    domain: r.domain,
    ...(r.name !== null ? { name: r.name } : {}),
    ...(r.password_hash !== null ? { passwordHash: r.password_hash } : {}),
    quotaBytes: Number(r.quota_bytes),
    enabled: r.enabled !== 0,
    created: r.created_at,
    updated: r.updated_at,
  };
}

/** Groups joined alias rows (ordered by address, then position) into aliases. */
function toAliases(rows: readonly AliasRow[]): Alias[] {
  const out: Array<Alias & { targets: string[] }> = [];
  for (const r of rows) {
    let last = out[out.length - 1];
    if (last?.address !== r.address) {
      last = { address: r.address, domain: r.domain, targets: [], enabled: r.enabled !== 0, created: r.created_at, updated: r.updated_at };
      out.push(last);
    }
    if (r.target !== null) last.targets.push(r.target);
  }
  return out;
}

function toGrant(r: GrantRow): SenderGrant {
  return { address: r.address, login: r.login, created: r.created_at };
}
