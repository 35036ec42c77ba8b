// `mailwarden db migrate` / `db status`: schema management with a short-lived pool.
import type { RowDataPacket } from 'mysql2/promise';
import { DirectoryError } from './types.ts';
import { createDirectoryPool, type MysqlDirectoryConfig } from './mysql-backend.ts';
import { migrate, schemaStatus } from './mysql-schema.ts';
import { redactMysqlUrl } from './mysql-url.ts';

async function withPool<T>(config: MysqlDirectoryConfig, fn: (pool: ReturnType<typeof createDirectoryPool>) => Promise<T>): Promise<T> {
  const pool = createDirectoryPool({ ...config, poolSize: 1 });
  try {
    return await fn(pool);
  } catch (err) {
    if (err instanceof DirectoryError) throw err;
    const code = (err as { code?: string }).code;
    throw new DirectoryError('unavailable', `${redactMysqlUrl(config.url)}: ${code ?? (err as Error).message}`, { cause: err });
  } finally {
    await pool.end().catch(() => {});
  }
}

export function migrateDatabase(config: MysqlDirectoryConfig): Promise<{ from: number; to: number }> {
  return withPool(config, (pool) => migrate(pool));
}

export function databaseStatus(config: MysqlDirectoryConfig): Promise<Record<string, string | number>> {
  return withPool(config, async (pool) => {
    const s = await schemaStatus(pool);
    const out: Record<string, string | number> = {
      database: redactMysqlUrl(config.url),
      schema_version: s.current,
      code_schema_version: s.latest,
      pending_migrations: s.pending.map((m) => `${m.version} ${m.description}`).join('; ') || 'none',
    };
    if (s.current > 0) {
      for (const table of ['domain', 'mailbox', 'alias', 'sender_grant'] as const) {
        // Table names are constants from this list, never input.
        const [rows] = await pool.execute<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${table}`);
        out[`${table}_rows`] = Number(rows[0]?.['n'] ?? 0);
      }
    }
    return out;
  });
}
