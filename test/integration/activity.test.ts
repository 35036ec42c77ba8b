// Last login and quota usage, as Dovecot reports them, on both backends.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import type { DirectoryBackend } from '../../src/directory/types.ts';
import { testMariaDb } from '../support/mariadb.ts';

async function open(kind: 'yaml' | 'mysql', t: { after: (fn: () => unknown) => void }): Promise<{ dir: DirectoryBackend; reopen: () => Promise<DirectoryBackend> }> {
  if (kind === 'yaml') {
    const tmp = mkdtempSync(join(tmpdir(), 'mw-activity-'));
    t.after(() => rmSync(tmp, { recursive: true, force: true }));
    const path = join(tmp, 'directory.yaml');
    return { dir: YamlDirectory.open(path), reopen: async () => YamlDirectory.open(path) };
  }
  const db = await testMariaDb();
  const url = await db.createDatabase('mw_activity');
  const config = { backend: 'mysql' as const, url, poolSize: 2, queryTimeoutMs: 2000, cacheTtlMs: 0, cacheSize: 0 };
  await migrateDatabase(config);
  const dir = await MysqlDirectory.open(config, pino({ level: 'silent' }));
  t.after(() => dir.close());
  return { dir, reopen: async () => { const d = await MysqlDirectory.open(config, pino({ level: 'silent' })); t.after(() => d.close()); return d; } };
}

for (const kind of ['yaml', 'mysql'] as const) {
  describe(`mailbox activity (${kind})`, () => {
    it('records logins and quota usage, survives a reopen, never changes the directory serial', async (t) => {
      const { dir, reopen } = await open(kind, t);
      const admin = new DirectoryAdmin(dir);
      await admin.addDomain('example.org');
      await admin.addMailbox('alice@example.org');
      let changes = 0;
      dir.onChange(() => changes++);

      assert.equal(await dir.getActivity('alice@example.org'), undefined);
      const at = new Date('2026-11-23T10:00:00.000Z');
      await dir.recordLogin('alice@example.org', at, '192.0.2.7');
      await dir.recordLogin('ghost@example.org', at); // no such mailbox: ignored, not an error
      assert.equal(await dir.updateQuotaUsage('alice@example.org', { addBytes: 10 }), 'notfound', 'increment before any set');
      assert.equal(await dir.updateQuotaUsage('alice@example.org', { setBytes: 1000, setMessages: 2 }), 'ok');
      assert.equal(await dir.updateQuotaUsage('alice@example.org', { addBytes: 500, addMessages: 1 }), 'ok');
      assert.deepEqual(await dir.getActivity('alice@example.org'), { lastLogin: at, lastLoginIp: '192.0.2.7', quotaBytes: 1500, quotaMessages: 3 });
      assert.equal(changes, 0, 'activity is not directory data');

      await dir.close();
      const again = await reopen();
      assert.deepEqual(await again.getActivity('alice@example.org'), { lastLogin: at, lastLoginIp: '192.0.2.7', quotaBytes: 1500, quotaMessages: 3 });
      await new DirectoryAdmin(again).removeMailbox('alice@example.org');
      assert.equal(await again.getActivity('alice@example.org'), undefined, 'removed with the mailbox');
    });
  });
}
