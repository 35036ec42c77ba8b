// The MySQL/MariaDB schema as an ordered list of migrations.
//
// mailwarden_meta holds 'schema_version' (the last applied step) and 'serial'
// (the change serial every write bumps; daemons poll it, and read change_log
// for what each serial touched, to drop those rows from their caches).
// MySQL commits DDL implicitly, so a step cannot be atomic: every statement is
// written to be re-runnable (IF NOT EXISTS...), and the version is recorded
// after the step, so a step interrupted half-way is simply run again.
//
// Keys use utf8mb4_bin: mailwarden stores canonical lower-case forms itself,
// and a case- or accent-insensitive collation would make distinct canonical
// addresses collide. Every hot-path lookup is a primary-key or index lookup.
import type { Pool, PoolConnection, RowDataPacket } from 'mysql2/promise';
import { DirectoryError } from './types.ts';

export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly statements: readonly string[];
}

const TABLE = 'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin';

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'domains, mailboxes, aliases, sender grants',
    statements: [
      `CREATE TABLE IF NOT EXISTS domain (
        name VARCHAR(253) NOT NULL PRIMARY KEY,
        alias_for VARCHAR(253) NULL,
        enabled TINYINT(1) NOT NULL DEFAULT 1,
        description VARCHAR(255) NULL,
        created_at DATETIME(3) NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        KEY domain_alias_for (alias_for)
      ) ${TABLE}`,
      `CREATE TABLE IF NOT EXISTS mailbox (
        address VARCHAR(320) NOT NULL PRIMARY KEY,
        domain VARCHAR(253) NOT NULL,
        name VARCHAR(255) NULL,
        password_hash VARCHAR(255) NULL,
        quota_bytes BIGINT UNSIGNED NOT NULL DEFAULT 0,
        enabled TINYINT(1) NOT NULL DEFAULT 1,
        created_at DATETIME(3) NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        KEY mailbox_domain (domain),
        CONSTRAINT mailbox_domain_fk FOREIGN KEY (domain) REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE
      ) ${TABLE}`,
      `CREATE TABLE IF NOT EXISTS alias (
        address VARCHAR(320) NOT NULL PRIMARY KEY,
        domain VARCHAR(253) NOT NULL,
        enabled TINYINT(1) NOT NULL DEFAULT 1,
        created_at DATETIME(3) NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        KEY alias_domain (domain),
        CONSTRAINT alias_domain_fk FOREIGN KEY (domain) REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE
      ) ${TABLE}`,
      // Targets are a set per alias (the primary key) that keeps its order (position).
      `CREATE TABLE IF NOT EXISTS alias_target (
        alias_address VARCHAR(320) NOT NULL,
        position INT NOT NULL,
        target VARCHAR(320) NOT NULL,
        PRIMARY KEY (alias_address, target),
        KEY alias_target_target (target),
        CONSTRAINT alias_target_alias_fk FOREIGN KEY (alias_address) REFERENCES alias (address) ON DELETE CASCADE ON UPDATE CASCADE
      ) ${TABLE}`,
      // `domain` is derived so that deleting a domain finds its grants (`x@domain`
      // and `@domain`) through an index instead of a LIKE '%@domain' table scan.
      `CREATE TABLE IF NOT EXISTS sender_grant (
        address VARCHAR(320) NOT NULL,
        login VARCHAR(320) NOT NULL,
        domain VARCHAR(253) AS (SUBSTRING_INDEX(address, '@', -1)) STORED,
        created_at DATETIME(3) NOT NULL,
        PRIMARY KEY (address, login),
        KEY sender_grant_login (login),
        KEY sender_grant_domain (domain)
      ) ${TABLE}`,
      `INSERT IGNORE INTO mailwarden_meta (name, value) VALUES ('serial', '0')`,
    ],
  },
  {
    version: 2,
    description: 'mailbox activity: last login and quota usage reported by Dovecot',
    statements: [
      // Separate from mailbox: written on every login and delivery, and must not
      // bump the change serial (that would flush every instance's lookup cache).
      `CREATE TABLE IF NOT EXISTS mailbox_activity (
        address VARCHAR(320) NOT NULL PRIMARY KEY,
        last_login DATETIME(3) NULL,
        last_login_ip VARCHAR(45) NULL,
        quota_bytes BIGINT NULL,
        quota_messages BIGINT NULL,
        CONSTRAINT mailbox_activity_mailbox_fk FOREIGN KEY (address) REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE
      ) ${TABLE}`,
    ],
  },
  {
    version: 3,
    description: 'policy state shared by all instances: rate counters, greylist triplets and clients',
    // Times are milliseconds since the epoch from the caller's clock (see src/state/types.ts).
    // Every table has a primary key and an expires_at index: the sweep is
    // DELETE ... WHERE expires_at < ? LIMIT n, short and safe on Galera.
    statements: [
      // One row per counter, bucket width and bucket: a window total is a primary-key range.
      `CREATE TABLE IF NOT EXISTS policy_counter (
        name VARCHAR(400) NOT NULL,
        width_ms BIGINT NOT NULL,
        bucket_start BIGINT NOT NULL,
        count BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (name, width_ms, bucket_start),
        KEY policy_counter_expires (expires_at)
      ) ${TABLE}`,
      // Keyed by a hash of the triplet: fixed width, and no addresses at rest.
      `CREATE TABLE IF NOT EXISTS greylist_triplet (
        id BINARY(16) NOT NULL PRIMARY KEY,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        passed_at BIGINT NULL,
        expires_at BIGINT NOT NULL,
        KEY greylist_triplet_expires (expires_at)
      ) ${TABLE}`,
      `CREATE TABLE IF NOT EXISTS greylist_client (
        network VARCHAR(64) NOT NULL PRIMARY KEY,
        passes INT NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        last_pass BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        KEY greylist_client_expires (expires_at)
      ) ${TABLE}`,
    ],
  },
  {
    version: 4,
    description: 'change log: which rows each change serial touched, so caches drop only those',
    statements: [
      // Written in the write's transaction, after the serial bump (one row per entity;
      // a domain stands for everything in it). Serials are bumped by an UPDATE of one
      // row, so they commit in order; a serial with no row here means a writer that
      // does not log (an older mailwarden, a trimmed row), and readers then drop everything.
      `CREATE TABLE IF NOT EXISTS change_log (
        serial BIGINT UNSIGNED NOT NULL,
        kind VARCHAR(8) NOT NULL,
        name VARCHAR(320) NOT NULL,
        PRIMARY KEY (serial, kind, name)
      ) ${TABLE}`,
    ],
  },
];

/** The schema version this code needs. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

const META_TABLE = `CREATE TABLE IF NOT EXISTS mailwarden_meta (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  value VARCHAR(255) NOT NULL
) ${TABLE}`;

const LOCK_NAME = 'mailwarden_migrate';
const LOCK_WAIT_S = 30;

export interface SchemaStatus {
  /** Version recorded in the database; 0 for an empty database. */
  readonly current: number;
  /** Version this code needs (SCHEMA_VERSION). */
  readonly latest: number;
  readonly pending: readonly Pick<Migration, 'version' | 'description'>[];
}

/** Reads the schema version with any connection or pool; 0 when mailwarden_meta does not exist yet. */
export async function readSchemaVersion(db: Pick<Pool, 'execute'> | Pick<PoolConnection, 'execute'>): Promise<number> {
  try {
    const [rows] = await db.execute<RowDataPacket[]>("SELECT value FROM mailwarden_meta WHERE name = 'schema_version'");
    const value = rows[0]?.['value'];
    return value === undefined ? 0 : Number(value);
  } catch (err) {
    if ((err as { code?: string }).code === 'ER_NO_SUCH_TABLE') return 0;
    throw err;
  }
}

export async function schemaStatus(pool: Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<SchemaStatus> {
  const current = await readSchemaVersion(pool);
  return {
    current,
    latest: migrations[migrations.length - 1]?.version ?? 0,
    pending: migrations.filter((m) => m.version > current).map(({ version, description }) => ({ version, description })),
  };
}

/**
 * Applies the pending migrations in order and returns the versions before and
 * after. Idempotent, and safe when several instances run it at once: they
 * serialise on a named lock and the later ones find nothing to do.
 */
export async function migrate(pool: Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<{ from: number; to: number }> {
  // GET_LOCK belongs to a session, so every step must run on this one connection.
  const conn = await pool.getConnection();
  let locked = false;
  try {
    const [lock] = await conn.query<RowDataPacket[]>('SELECT GET_LOCK(?, ?) AS ok', [LOCK_NAME, LOCK_WAIT_S]);
    if (lock[0]?.['ok'] !== 1) {
      throw new DirectoryError('unavailable', `another migration has held the ${LOCK_NAME} lock for more than ${LOCK_WAIT_S} s`);
    }
    locked = true;
    await conn.query(META_TABLE);
    const from = await readSchemaVersion(conn);
    let to = from;
    for (const step of migrations) {
      if (step.version <= to) continue;
      for (const sql of step.statements) await conn.query(sql);
      await conn.execute(
        "INSERT INTO mailwarden_meta (name, value) VALUES ('schema_version', ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
        [String(step.version)],
      );
      to = step.version;
    }
    return { from, to };
  } finally {
    if (locked) await conn.query('SELECT RELEASE_LOCK(?)', [LOCK_NAME]).catch(() => undefined);
    conn.release();
  }
}
