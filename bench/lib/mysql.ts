// Loads the synthetic directory into mailwarden's own MariaDB schema with
// batched multi-row INSERTs (the CLI would take one transaction per row).
import type { Pool } from 'mysql2/promise';
import { migrate } from '../../src/directory/mysql-schema.ts';
import type { Dataset } from './data.ts';

const BATCH = 5000;

async function insertBatched(pool: Pool, sql: string, rows: unknown[][]): Promise<void> {
  for (let i = 0; i < rows.length; i += BATCH) {
    await pool.query(sql, [rows.slice(i, i + BATCH)]);
  }
}

export async function loadDataset(pool: Pool, ds: Dataset): Promise<void> {
  await migrate(pool);
  const now = new Date();
  await insertBatched(pool, 'INSERT INTO domain (name, alias_for, enabled, description, created_at, updated_at) VALUES ?',
    ds.domains.map((d) => [d.name, d.aliasFor ?? null, 1, null, now, now]));
  await insertBatched(pool, 'INSERT INTO mailbox (address, domain, name, password_hash, quota_bytes, enabled, created_at, updated_at) VALUES ?',
    ds.mailboxes.map((m) => [`${m.local}@${m.domain}`, m.domain, m.name, null, 2 * 1024 ** 3, m.enabled ? 1 : 0, now, now]));
  await insertBatched(pool, 'INSERT INTO alias (address, domain, enabled, created_at, updated_at) VALUES ?',
    ds.aliases.map((a) => [a.address, a.domain, a.enabled ? 1 : 0, now, now]));
  await insertBatched(pool, 'INSERT INTO alias_target (alias_address, position, target) VALUES ?',
    ds.aliases.flatMap((a) => a.targets.map((t, i) => [a.address, i, t])));
  await pool.query('ANALYZE TABLE domain, mailbox, alias, alias_target');
}

/** Makes every running mailwarden drop its lookup cache (it polls the serial every second). */
export async function bumpSerial(pool: Pool): Promise<void> {
  await pool.query("UPDATE mailwarden_meta SET value = CAST(value AS UNSIGNED) + 1 WHERE name = 'serial'");
}
