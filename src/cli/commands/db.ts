import type { Command } from 'commander';
import { CliError, EXIT, printJson, printRecord, type CliContext } from '../context.ts';

export function registerDb(program: Command, ctx: () => CliContext): void {
  const db = program.command('db').description('MariaDB/MySQL schema (directory.backend: mysql)');

  const mysqlConfig = (c: CliContext) => {
    const d = c.config.directory;
    if (d.backend !== 'mysql') throw new CliError(`directory.backend is ${d.backend} in ${c.config.file}; db commands need mysql`, EXIT.usage);
    return d;
  };

  db.command('migrate').description('create or upgrade the schema (safe to run on every start and on several hosts at once)')
    .action(async () => {
      const { migrateDatabase } = await import('../../directory/mysql-admin.ts');
      const r = await migrateDatabase(mysqlConfig(ctx()));
      process.stdout.write(r.from === r.to ? `schema is up to date (version ${r.to})\n` : `schema migrated from version ${r.from} to ${r.to}\n`);
    });

  db.command('status').description('schema version and row counts').option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const { databaseStatus } = await import('../../directory/mysql-admin.ts');
      const s = await databaseStatus(mysqlConfig(ctx()));
      if (o.json) printJson(s);
      else printRecord(s);
    });
}
