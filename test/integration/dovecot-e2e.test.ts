// Dovecot 2.3 asking mailwarden itself: the shipped Lua bridge and conf
// snippets, `mailwarden serve` with auth (HTTP) and dict, a YAML directory.
// Logins over IMAP/POP3/doveadm, LMTP delivery with quota, last_login and
// quota usage through dict, rehash of an imported SHA512-CRYPT hash, disabled
// accounts and password changes. The script as installed (LuaSocket); a
// restart and an outage of mailwarden; the dovecot.http fallback.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';
import { mailwardenAuthConf23, startDovecot, withDovecotLogs, writeMailwardenLua, type DovecotInstance } from '../support/dovecot.ts';
import { libhttpTransport, luaSocketRestartAndOutage, passwordChangeAndDisable } from '../support/dovecot-scenarios.ts';
import { imapLogin, lmtpDeliver, openImap, pop3Login } from '../support/mail-clients.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { sendMail, startPostfix, withPostfixLogs } from '../support/postfix.ts';
import { startLmtpSink } from '../support/lmtp-sink.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const run = promisify(execFile);
const SECRET = 'e2e-secret-0123456789abcdef';

describe('Dovecot 2.3 + mailwarden (Lua/HTTP auth, dict for last_login and quota)', () => {
  let tmp: TempDir;
  let dovecot: DovecotInstance;
  let daemon: Daemon;
  let directoryPath: string;
  let config: string;
  let authUrl: string;
  const admin = () => new DirectoryAdmin(YamlDirectory.open(directoryPath));

  before(async () => {
    tmp = await tempDir('dovecot-e2e');
    directoryPath = join(tmp.path, 'directory.yaml');
    const a = admin();
    await a.addDomain('example.org');
    await a.addMailbox('alice@example.org', { passwordHash: await hashPassword('alice pw', DEFAULT_ARGON2), quotaBytes: 1024 * 1024 });
    await a.addMailbox('bob@example.org', { passwordHash: await hashPassword('bob pw', DEFAULT_ARGON2) });
    await a.addMailbox('carol@example.org', { passwordHash: await hashPassword('carol pw', DEFAULT_ARGON2), enabled: false });
    // An account imported from PostfixAdmin: a SHA512-CRYPT hash made by Dovecot itself.
    const legacy = (await run('doveadm', ['pw', '-s', 'SHA512-CRYPT', '-p', 'legacy pw'])).stdout.trim();
    await a.addMailbox('olga@example.org', { passwordHash: legacy });
    await a.addAlias('info@example.org', ['alice@example.org', 'bob@example.org']);

    const port = await freePort();
    const dictSocket = join(tmp.path, 'run', 'dict.sock');
    // Dovecot is started first: mailwarden needs its home directory and mail uid for userdb.
    const luaFile = join(tmp.path, 'mailwarden.lua');
    authUrl = `http://127.0.0.1:${port}`;
    await writeMailwardenLua(luaFile, { url: authUrl, secret: SECRET, timeoutMs: 3000 });
    dovecot = await startDovecot({
      conf: `${await mailwardenAuthConf23(luaFile)}
mail_plugins = $mail_plugins quota quota_clone last_login
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = count:User quota
  quota_vsizes = yes
  quota_clone_dict = proxy:${dictSocket}:quotaclone
  last_login_dict = proxy:${dictSocket}:lastlogin
  last_login_key = last-login/%u
}
`,
    });
    config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'log:', '  level: debug',
      'userdb:', `  home: ${dovecot.homeDir}/%d/%n`, `  uid: "${dovecot.mailUid}"`, `  gid: "${dovecot.mailGid}"`,
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: ${SECRET}`,
      // Mail processes run as the mail uid and write last_login/quota: the socket must let them in.
      'dict:', `  listen: unix:${dictSocket}`, '  mode: "0666"',
      'socketmap:', `  listen: unix:${join(tmp.path, 'run', 'socketmap.sock')}`, '  mode: "0666"',
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await dovecot?.stop();
    await tmp?.remove();
  });

  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withDovecotLogs(dovecot, fn);

  it('doveadm auth test: right password, wrong password, unknown user, disabled user', () =>
    withLogs(async () => {
      const ok = await dovecot.doveadm(['auth', 'test', 'Alice@Example.org', 'alice pw']);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /passdb: Alice@Example\.org auth succeeded/);
      assert.match(ok.stdout, /^\s+user=alice@example\.org$/m, 'mailwarden canonicalises the login');
      for (const [user, pw] of [['alice@example.org', 'wrong'], ['nobody@example.org', 'x'], ['carol@example.org', 'carol pw']]) {
        const r = await dovecot.doveadm(['auth', 'test', user!, pw!]);
        assert.equal(r.code, 77, `${user}: ${r.stdout}`);
        assert.match(r.stdout, /auth failed/);
        assert.doesNotMatch(r.stdout, /temp_fail/, `${user}: a clean failure, not a temporary one`);
      }
      const line = await daemon.waitForLog((l) => l['msg'] === 'login failed' && l['user'] === 'carol@example.org');
      assert.equal(line['reason'], 'mailbox disabled', 'the log says why');
    }));

  it('doveadm user: home, uid, gid, quota; doveadm user * lists enabled mailboxes', () =>
    withLogs(async () => {
      const r = await dovecot.doveadm(['user', 'alice@example.org']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`home\\s+${dovecot.homeDir}/example\\.org/alice`));
      assert.match(r.stdout, new RegExp(`uid\\s+${dovecot.mailUid}\\b`));
      assert.match(r.stdout, /quota_rule\s+\*:bytes=1048576/);
      const all = await dovecot.doveadm(['user', '*']);
      assert.equal(all.code, 0, all.stderr);
      assert.deepEqual(all.stdout.trim().split('\n').sort(), ['alice@example.org', 'bob@example.org', 'olga@example.org']);
      assert.equal((await dovecot.doveadm(['user', 'carol@example.org'])).code, 67, 'disabled: unknown to userdb');
    }));

  it('IMAP and POP3 logins; LMTP delivery shows up over IMAP with the quota', () =>
    withLogs(async () => {
      assert.equal((await imapLogin(dovecot.imapPort, 'alice@example.org', 'alice pw')).ok, true);
      assert.equal((await imapLogin(dovecot.imapPort, 'alice@example.org', 'nope')).ok, false);
      assert.equal((await pop3Login(dovecot.pop3Port, 'bob@example.org', 'bob pw')).ok, true);
      const delivered = await lmtpDeliver(dovecot.lmtpPort, 'sender@client.example', ['alice@example.org', 'carol@example.org'],
        'From: sender@client.example\r\nSubject: e2e lmtp\r\n\r\nhello\r\n');
      const [alice, carol] = delivered.recipients;
      assert.equal(alice?.delivered, true, JSON.stringify(delivered));
      assert.match(carol?.rcptReply.text ?? '', /^550 5\.1\.1/, 'a disabled mailbox gets no mail');
      const imap = await openImap(dovecot.imapPort);
      await imap.login('alice@example.org', 'alice pw');
      assert.equal((await imap.select('INBOX')).exists, 1);
      assert.match(await imap.fetchBody(1), /Subject: e2e lmtp/);
      const quota = await imap.getQuotaRoot('INBOX');
      const storage = Object.values(quota.quotas).flat().find((r) => r.name === 'STORAGE');
      assert.equal(storage?.limit, 1024, JSON.stringify(quota.quotas));
      await imap.logout();
    }));

  it('last_login and quota usage come back over dict into the directory', () =>
    withLogs(async () => {
      const dir = YamlDirectory.open(directoryPath);
      const deadline = Date.now() + 5000;
      let a = await dir.getActivity('alice@example.org');
      while ((!a?.lastLogin || a.quotaBytes === undefined || a.quotaMessages === undefined) && Date.now() < deadline) {
        await sleep(200);
        a = await YamlDirectory.open(directoryPath).getActivity('alice@example.org');
      }
      assert.ok(a?.lastLogin && Date.now() - a.lastLogin.getTime() < 60_000, `last login recorded: ${JSON.stringify(a)}`);
      assert.equal(a?.quotaMessages, 1);
      assert.ok((a?.quotaBytes ?? 0) > 0);
      const quota = await dovecot.doveadm(['quota', 'get', '-u', 'alice@example.org']);
      assert.equal(quota.code, 0, quota.stderr);
      assert.match(quota.stdout, /STORAGE\s+\d+\s+1024/);
    }));

  it('an imported SHA512-CRYPT account logs in and is rehashed to argon2id', () =>
    withLogs(async () => {
      assert.equal((await imapLogin(dovecot.imapPort, 'olga@example.org', 'legacy pw')).ok, true);
      await daemon.waitForLog((l) => l['msg'] === 'password hash upgraded' && l['user'] === 'olga@example.org');
      const m = await YamlDirectory.open(directoryPath).findMailbox('olga@example.org');
      assert.match(m?.passwordHash ?? '', /^\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      assert.equal((await imapLogin(dovecot.imapPort, 'olga@example.org', 'legacy pw')).ok, true, 'same password after the upgrade');
      const { stdout } = await run('doveadm', ['pw', '-t', m!.passwordHash!, '-p', 'legacy pw']);
      assert.match(stdout, /verified/);
    }));

  it('submission: SMTP AUTH through Dovecot SASL, envelope senders limited to what the login owns', () =>
    withLogs(async () => {
      const sink = await startLmtpSink();
      const socketmap = `socketmap:unix:${join(tmp.path, 'run', 'socketmap.sock')}`;
      // The submission entry of postfix-conf/master.cf, as main.cf settings of a test instance.
      const postfix = await startPostfix({
        mainCf: {
          mynetworks: '127.0.0.254/32',
          smtpd_sasl_auth_enable: 'yes',
          smtpd_sasl_type: 'dovecot',
          smtpd_sasl_path: dovecot.authClientSocket,
          smtpd_sender_login_maps: `${socketmap}:smtpd_sender_login_maps`,
          smtpd_sender_restrictions: 'reject_sender_login_mismatch',
          smtpd_relay_restrictions: 'permit_sasl_authenticated, reject',
          relay_transport: sink.transport,
          default_transport: sink.transport,
        },
      });
      try {
        await withPostfixLogs(postfix, async () => {
          const submit = (user: string, password: string, from: string) => sendMail({
            port: postfix.smtpPort, from, to: ['friend@elsewhere.example'],
            swaksArgs: ['--auth', 'PLAIN', '--auth-user', user, '--auth-password', password],
          });
          // smtpd_delay_reject (the default) evaluates sender restrictions at RCPT time.
          const rcptTo = (r: Awaited<ReturnType<typeof submit>>) => r.replies.find((x) => /^RCPT TO/i.test(x.command));
          const own = await submit('alice@example.org', 'alice pw', 'alice@example.org');
          assert.equal(own.code, 250, own.transcript);
          const viaAlias = await submit('alice@example.org', 'alice pw', 'info@example.org');
          assert.equal(viaAlias.code, 250, `an alias leading to alice is hers to send as: ${viaAlias.transcript}`);
          const plus = await submit('alice@example.org', 'alice pw', 'alice+news@example.org');
          assert.equal(plus.code, 250, plus.transcript);
          const forged = await submit('alice@example.org', 'alice pw', 'olga@example.org');
          assert.match(rcptTo(forged)?.text ?? forged.transcript, /^553 5\.7\.1 .*not owned by user alice@example\.org/);
          const badPassword = await submit('alice@example.org', 'nope', 'alice@example.org');
          assert.ok(badPassword.replies.some((r) => r.code === 535), badPassword.transcript);
          await sink.waitFor((d) => d.from === 'info@example.org', 15_000);
        });
      } finally {
        await postfix.stop();
        await sink.close();
      }
    }));

  it('a password change and a disable take effect at once', () => withLogs(() => passwordChangeAndDisable(dovecot, admin, () => daemon)));

  it('LuaSocket: a mailwarden restart between two lookups goes unnoticed; mailwarden down is a temporary failure, not an unknown user', () =>
    withLogs(() => luaSocketRestartAndOutage(dovecot, { get: () => daemon, set: (d) => (daemon = d), config }, '2.3')));

  it('TRANSPORT = "dovecot.http" (no lua-socket): login, lookup and iteration against mailwarden', async () => {
    const luaFile = join(tmp.path, 'mailwarden-libhttp.lua');
    await writeMailwardenLua(luaFile, { url: authUrl, secret: SECRET, timeoutMs: 3000, transport: 'dovecot.http' });
    const d = await startDovecot({ conf: await mailwardenAuthConf23(luaFile) });
    try {
      await libhttpTransport(d, '2.3', /quota_rule\s+\*:bytes=1048576/);
    } finally {
      await d.stop();
    }
  });
});
