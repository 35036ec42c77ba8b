// Dovecot 2.3's own passdb/userdb dict drivers against mailwarden's dict
// socket, with the directory in MariaDB; then MariaDB goes away: logins and
// deliveries fail temporarily (never "unknown user"), and recover.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';
import { startDovecot, withDovecotLogs, type DovecotInstance } from '../support/dovecot.ts';
import { lmtpDeliver } from '../support/mail-clients.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { startMariaDb, type MariaDb } from '../support/mariadb.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

describe('Dovecot 2.3 passdb/userdb dict + MariaDB directory, and a database outage', () => {
  let tmp: TempDir;
  let db: MariaDb;
  let dovecot: DovecotInstance;
  let daemon: Daemon;

  before(async () => {
    tmp = await tempDir('dovecot-dict');
    db = await startMariaDb(); // a private server: this test stops it
    const url = await db.createDatabase('mw_dovecot_dict');
    const dirConfig = { backend: 'mysql' as const, url, poolSize: 4, queryTimeoutMs: 1000, cacheTtlMs: 60_000, cacheSize: 1000 };
    await migrateDatabase(dirConfig);
    const seed = await MysqlDirectory.open(dirConfig, pino({ level: 'silent' }));
    const admin = new DirectoryAdmin(seed);
    await admin.addDomain('example.org');
    await admin.addMailbox('alice@example.org', { passwordHash: await hashPassword('alice pw', DEFAULT_ARGON2), quotaBytes: 5 * 1024 ** 2 });
    await admin.addMailbox('bob@example.org', { passwordHash: await hashPassword('bob pw', DEFAULT_ARGON2) });
    await seed.close();

    const dictSocket = join(tmp.path, 'dict.sock');
    const dictConf = join(tmp.path, 'dovecot-dict-auth.conf.ext');
    // dovecot-conf/2.3/auth-dict.conf.ext, with the socket path of this test.
    writeFileSync(dictConf, [
      `uri = proxy:idle_msecs=60000:${dictSocket}:auth`,
      'default_pass_scheme = ARGON2ID',
      'iterate_prefix = userdb/',
      'key passdb {', '  key = passdb/%u', '  format = json', '}',
      'key userdb {', '  key = userdb/%u', '  format = json', '}',
      'passdb_objects = passdb', 'userdb_objects = userdb', '',
    ].join('\n'));
    dovecot = await startDovecot({
      conf: `passdb {\n  driver = dict\n  args = ${dictConf}\n}\nuserdb {\n  driver = prefetch\n}\nuserdb {\n  driver = dict\n  args = ${dictConf}\n}\n`,
    });
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: mysql', `  url: ${JSON.stringify(url)}`, '  query_timeout: 1s', '  cache_ttl: 0',
      'userdb:', `  home: ${dovecot.homeDir}/%d/%n`, `  uid: "${dovecot.mailUid}"`, `  gid: "${dovecot.mailGid}"`,
      'dict:', `  listen: unix:${dictSocket}`, '  mode: "0666"',
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await dovecot?.stop();
    await db?.stop();
    await tmp?.remove();
  });

  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withDovecotLogs(dovecot, fn);

  it('logins, userdb and iteration through the dict protocol', () =>
    withLogs(async () => {
      const ok = await dovecot.doveadm(['auth', 'test', 'alice@example.org', 'alice pw']);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      const bad = await dovecot.doveadm(['auth', 'test', 'alice@example.org', 'wrong']);
      assert.equal(bad.code, 77);
      assert.doesNotMatch(bad.stdout, /temp_fail/);
      const user = await dovecot.doveadm(['user', 'alice@example.org']);
      assert.match(user.stdout, /quota_rule\s+\*:bytes=5242880/);
      const all = await dovecot.doveadm(['user', '*']);
      assert.deepEqual(all.stdout.trim().split('\n').sort(), ['alice@example.org', 'bob@example.org']);
    }));

  it('MariaDB down: temporary failures for login and delivery, then recovery', () =>
    withLogs(async () => {
      await db.stopServer();
      const login = await dovecot.doveadm(['auth', 'test', 'bob@example.org', 'bob pw']);
      assert.equal(login.code, 77);
      assert.match(login.stdout, /code=temp_fail/, `a database outage is not a wrong password: ${login.stdout}`);
      const lmtp = await lmtpDeliver(dovecot.lmtpPort, 'sender@client.example', ['bob@example.org'], 'Subject: outage\r\n\r\nx\r\n');
      assert.match(lmtp.recipients[0]?.rcptReply.text ?? '', /^4\d\d /, `LMTP defers, never 550: ${JSON.stringify(lmtp)}`);
      await db.startServer();
      let after = login;
      for (let i = 0; i < 20 && after.code !== 0; i++) {
        await new Promise((r) => setTimeout(r, 250));
        after = await dovecot.doveadm(['auth', 'test', 'bob@example.org', 'bob pw']);
      }
      assert.equal(after.code, 0, `recovered without restarting anything: ${after.stdout}`);
    }));
});
