// Dovecot 2.4 (Debian 13 trixie, in the chroot test/setup/ensure-dovecot24.sh
// builds) asking mailwarden itself: the SAME dovecot-conf/mailwarden.lua as
// for 2.3 and the shipped dovecot-conf/2.4/ snippets loaded verbatim (only
// paths, the URL, the secret and the nonce replaced), `mailwarden serve` with
// auth (HTTP) and dict, a YAML directory. Covers doveadm auth test, IMAP
// logins, userdb lookup and iteration, LMTP delivery with the 2.4 quota field,
// last_login and quota_clone over dict protocol 4.0, disabled accounts, a
// weak-scheme (MD5-CRYPT) import that 2.4 alone would refuse, and the auth
// policy settings; the script's LuaSocket transport across a restart and an
// outage of mailwarden, and its dovecot.http fallback. Skips only when not root.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';
import { mailwardenLuaScript, withDovecotLogs } from '../support/dovecot.ts';
import { libhttpTransport, luaSocketRestartAndOutage, passwordChangeAndDisable } from '../support/dovecot-scenarios.ts';
import {
  AUTH_MAILWARDEN_CONF_24, MAILWARDEN_CONF_24, dovecot24SkipReason, shippedConf24, startDovecot24, type Dovecot24Instance,
} from '../support/dovecot24.ts';
import { imapLogin, lmtpDeliver, openImap } from '../support/mail-clients.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const SECRET = 'e2e24-secret-0123456789abcdef';
// Logins from this address count for the auth policy; 127.0.0.1 stays allow-listed.
const GUESSER_IP = '127.0.0.2';

/** One IMAP LOGIN from a chosen loopback source address; returns the tagged reply. */
function imapLoginFrom(localAddress: string, port: number, user: string, password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let buf = '';
    let sent = false;
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`IMAP from ${localAddress}: no answer: ${buf}`)); }, 15_000);
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => {
      buf += s;
      if (!sent && buf.includes('\r\n')) {
        sent = true;
        socket.write(`a LOGIN "${user}" "${password}"\r\n`);
      }
      const tagged = buf.split('\r\n').find((l) => l.startsWith('a '));
      if (tagged !== undefined) {
        clearTimeout(timer);
        socket.end('b LOGOUT\r\n');
        resolve(tagged);
      }
    });
    socket.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

describe('Dovecot 2.4 + mailwarden (same Lua bridge, dovecot-conf/2.4 snippets, dict protocol 4.0)', { skip: dovecot24SkipReason() ?? false }, () => {
  let tmp: TempDir;
  let dovecot: Dovecot24Instance;
  let daemon: Daemon;
  let directoryPath: string;
  let config: string;
  let authUrl: string;
  const admin = () => new DirectoryAdmin(YamlDirectory.open(directoryPath));

  // Long: builds the trixie chroot first if it is missing (~45 s).
  before(async () => {
    tmp = await tempDir('dovecot24-e2e');
    directoryPath = join(tmp.path, 'directory.yaml');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    authUrl = url;
    dovecot = await startDovecot24({
      conf: async ({ dir, hostDir }) => {
        writeFileSync(join(hostDir, 'mailwarden.lua'), await mailwardenLuaScript({ url, secret: SECRET, timeoutMs: 3000 }), { mode: 0o644 });
        const auth = await shippedConf24(AUTH_MAILWARDEN_CONF_24, { '/etc/dovecot/mailwarden.lua': `${dir}/mailwarden.lua` });
        const settings = await shippedConf24(MAILWARDEN_CONF_24, {
          'http://127.0.0.1:10052': url,
          'CHANGE-ME-same-as-auth.secret': SECRET,
          'CHANGE-ME-random': randomBytes(16).toString('hex'),
          '/run/mailwarden/dict.sock': `${dir}/dict.sock`,
        });
        return `${auth}\n${settings}`;
      },
    });

    const a = admin();
    await a.addDomain('example.org');
    await a.addMailbox('alice@example.org', { passwordHash: await hashPassword('alice pw', DEFAULT_ARGON2), quotaBytes: 1024 * 1024 });
    await a.addMailbox('bob@example.org', { passwordHash: await hashPassword('bob pw', DEFAULT_ARGON2) });
    await a.addMailbox('carol@example.org', { passwordHash: await hashPassword('carol pw', DEFAULT_ARGON2), enabled: false });
    // A PostfixAdmin md5crypt import, hashed by Dovecot 2.4 itself: 2.4 refuses
    // this weak scheme when it verifies, but here mailwarden verifies.
    const md5 = await dovecot.exec(['doveadm', 'pw', '-s', 'MD5-CRYPT', '-p', 'legacy pw']);
    assert.equal(md5.code, 0, md5.stderr);
    await a.addMailbox('olga@example.org', { passwordHash: md5.stdout.trim() });
    await a.addMailbox('guess@example.org', { passwordHash: await hashPassword('guess pw', DEFAULT_ARGON2) });

    config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'log:', '  level: debug',
      // Paths as Dovecot sees them, inside the chroot.
      'userdb:', `  home: ${dovecot.homeDir}/%d/%n`, `  uid: "${dovecot.mailUid}"`, `  gid: "${dovecot.mailGid}"`,
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: ${SECRET}`,
      '  policy:', '    delay_after: 3', '    block_after: 3', '    block_time: 1h', '    allow: ["127.0.0.1/32"]',
      // The dict socket lives in the instance dir, inside the chroot; mail
      // processes (uid nobody) write last_login and quota there.
      'dict:', `  listen: unix:${join(dovecot.hostDir, 'dict.sock')}`, '  mode: "0666"',
    ].join('\n'));
    daemon = await startDaemon(config);
  }, { timeout: 15 * 60_000 });

  after(async () => {
    await daemon?.stop();
    await dovecot?.stop();
    await tmp?.remove();
  });

  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withDovecotLogs(dovecot, fn);

  it('runs Dovecot 2.4 with the 2.4 config syntax', () =>
    withLogs(async () => {
      assert.match(dovecot.version, /^2\.4\.\d/);
      const conf = await dovecot.exec(['doveconf', '-c', dovecot.configFile, '-n']);
      assert.equal(conf.code, 0, conf.stderr);
      assert.match(conf.stdout, /^passdb lua \{$/m);
      assert.match(conf.stdout, /^quota_clone \{\n {2}dict proxy \{/m);
      assert.doesNotMatch(conf.stderr + (await dovecot.logs()), /Warning:/, 'the shipped snippets draw no warnings');
    }));

  it('doveadm auth test through the shipped Lua script: right password, wrong password, unknown user, disabled user', () =>
    withLogs(async () => {
      const ok = await dovecot.doveadm(['auth', 'test', 'Alice@Example.org', 'alice pw']);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /passdb: Alice@Example\.org auth succeeded/);
      assert.match(ok.stdout, /^\s+user=alice@example\.org$/m, 'mailwarden canonicalises the login');
      for (const [user, pw] of [['alice@example.org', 'wrong'], ['nobody@example.org', 'x'], ['carol@example.org', 'carol pw']]) {
        const r = await dovecot.doveadm(['auth', 'test', user!, pw!]);
        assert.equal(r.code, 77, `${user}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /auth failed/);
        assert.doesNotMatch(r.stdout, /temp_fail/, `${user}: a clean failure, not a temporary one`);
      }
      const line = await daemon.waitForLog((l) => l['msg'] === 'login failed' && l['user'] === 'carol@example.org');
      assert.equal(line['reason'], 'mailbox disabled');
      assert.match(await dovecot.logs(), /mailwarden\.lua: using the Dovecot 2\.4 API/, 'the script detected 2.4');
    }));

  it('doveadm user: home, uid, gid, quota_storage_size; doveadm user * lists enabled mailboxes', () =>
    withLogs(async () => {
      const r = await dovecot.doveadm(['user', 'alice@example.org']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`home\\s+${dovecot.homeDir}/example\\.org/alice\\n`));
      assert.match(r.stdout, new RegExp(`uid\\s+${dovecot.mailUid}\\n`));
      assert.match(r.stdout, new RegExp(`gid\\s+${dovecot.mailGid}\\n`));
      assert.match(r.stdout, /quota_storage_size\s+1048576B\n/);
      const all = await dovecot.doveadm(['user', '*']);
      assert.equal(all.code, 0, all.stdout + all.stderr);
      assert.deepEqual(all.stdout.trim().split('\n').sort(), ['alice@example.org', 'bob@example.org', 'guess@example.org', 'olga@example.org']);
      const carol = await dovecot.doveadm(['user', 'carol@example.org']);
      assert.equal(carol.code, 67, `disabled: unknown to userdb: ${carol.stdout}${carol.stderr}`);
    }));

  it('IMAP logins; LMTP delivery shows up over IMAP with the quota limit', () =>
    withLogs(async () => {
      assert.equal((await imapLogin(dovecot.imapPort, 'alice@example.org', 'alice pw')).ok, true);
      assert.equal((await imapLogin(dovecot.imapPort, 'alice@example.org', 'nope')).ok, false);
      assert.equal((await imapLogin(dovecot.imapPort, 'bob@example.org', 'bob pw')).ok, true);
      assert.equal((await imapLogin(dovecot.imapPort, 'carol@example.org', 'carol pw')).ok, false, 'disabled');
      const delivered = await lmtpDeliver(dovecot.lmtpPort, 'sender@client.example', ['alice@example.org', 'carol@example.org'],
        'From: sender@client.example\r\nSubject: e2e lmtp 2.4\r\n\r\nhello\r\n');
      const [alice, carol] = delivered.recipients;
      assert.equal(alice?.delivered, true, JSON.stringify(delivered));
      assert.match(carol?.rcptReply.text ?? '', /^550 5\.1\.1/, 'a disabled mailbox gets no mail');
      const imap = await openImap(dovecot.imapPort);
      await imap.login('alice@example.org', 'alice pw');
      assert.equal((await imap.select('INBOX')).exists, 1);
      assert.match(await imap.fetchBody(1), /Subject: e2e lmtp 2\.4/);
      // The limit came with the login (passdb userdb_quota_storage_size -> userdb prefetch).
      const quota = await imap.getQuotaRoot('INBOX');
      const storage = Object.values(quota.quotas).flat().find((r) => r.name === 'STORAGE');
      assert.equal(storage?.limit, 1024, JSON.stringify(quota.quotas));
      await imap.logout();
    }));

  it('last_login and quota usage come back over dict (protocol 4.0) into the directory', () =>
    withLogs(async () => {
      const deadline = Date.now() + 5000;
      let a = await YamlDirectory.open(directoryPath).getActivity('alice@example.org');
      while ((!a?.lastLogin || a.quotaBytes === undefined || a.quotaMessages === undefined) && Date.now() < deadline) {
        await sleep(200);
        a = await YamlDirectory.open(directoryPath).getActivity('alice@example.org');
      }
      assert.ok(a?.lastLogin && Date.now() - a.lastLogin.getTime() < 60_000, `last login recorded: ${JSON.stringify(a)}`);
      assert.equal(a?.quotaMessages, 1);
      assert.ok((a?.quotaBytes ?? 0) > 0);
      const quota = await dovecot.doveadm(['quota', 'get', '-u', 'alice@example.org']);
      assert.equal(quota.code, 0, quota.stdout + quota.stderr);
      assert.match(quota.stdout, /STORAGE\s+\d+\s+1024/);
      // Through the dict, not only the auth endpoint (which records logins too): 2.4 speaks protocol 4.0.
      for (const name of ['lastlogin', 'quotaclone']) {
        const hello = await daemon.waitForLog((l) => l['msg'] === 'dict handshake' && l['dict'] === name);
        assert.equal(hello['version'], '4.0', name);
      }
      const commit = await daemon.waitForLog((l) => l['msg'] === 'dict commit' && JSON.stringify(l['keys']).includes('shared/last-login/alice@example.org'));
      assert.equal(commit['result'], 'ok');
      assert.doesNotMatch(await dovecot.logs(), /^.*Error:.*(dict|quota_clone|last_login).*$/im, 'no dict errors');
    }));

  it('an imported MD5-CRYPT account logs in (mailwarden verifies, not 2.4) and is rehashed to argon2id', () =>
    withLogs(async () => {
      assert.equal((await imapLogin(dovecot.imapPort, 'olga@example.org', 'legacy pw')).ok, true);
      await daemon.waitForLog((l) => l['msg'] === 'password hash upgraded' && l['user'] === 'olga@example.org');
      const m = await YamlDirectory.open(directoryPath).findMailbox('olga@example.org');
      assert.match(m?.passwordHash ?? '', /^\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      assert.equal((await imapLogin(dovecot.imapPort, 'olga@example.org', 'legacy pw')).ok, true, 'same password after the upgrade');
      const t = await dovecot.exec(['doveadm', 'pw', '-t', m!.passwordHash!, '-p', 'legacy pw']);
      assert.match(t.stdout, /verified/, 'Dovecot 2.4 accepts the new hash');
    }));

  it('auth policy (the snippet\'s 2.4 settings): distinct guesses from one address get it blocked', () =>
    withLogs(async () => {
      for (const guess of ['guess 1', 'guess 2', 'guess 3']) {
        const reply = await imapLoginFrom(GUESSER_IP, dovecot.imapPort, 'guess@example.org', guess);
        assert.match(reply, /^a NO /, guess);
        assert.doesNotMatch(reply, /Too many failed logins/, guess);
      }
      const blocking = await daemon.waitForLog((l) => l['msg'] === 'auth policy: blocking');
      assert.equal(blocking['key'], `ip:${GUESSER_IP}`);
      const refused = await imapLoginFrom(GUESSER_IP, dovecot.imapPort, 'guess@example.org', 'guess pw');
      assert.match(refused, /^a NO \[ALERT\] Too many failed logins, try again later/);
      assert.equal((await imapLogin(dovecot.imapPort, 'guess@example.org', 'guess pw')).ok, true, '127.0.0.1 is allow-listed');
      assert.doesNotMatch(await dovecot.logs(), /Policy server (HTTP error|request failed|response)/i, 'every policy call was answered');
    }));

  it('a password change and a disable take effect at once', () => withLogs(() => passwordChangeAndDisable(dovecot, admin, () => daemon)));

  it('LuaSocket: a mailwarden restart between two lookups goes unnoticed; mailwarden down is a temporary failure, not an unknown user', () =>
    withLogs(() => luaSocketRestartAndOutage(dovecot, { get: () => daemon, set: (d) => (daemon = d), config }, '2.4')));

  it('TRANSPORT = "dovecot.http" (no lua-socket) on 2.4: login, lookup and iteration against mailwarden', async () => {
    const d = await startDovecot24({
      conf: async ({ dir, hostDir }) => {
        writeFileSync(join(hostDir, 'mailwarden.lua'),
          await mailwardenLuaScript({ url: authUrl, secret: SECRET, timeoutMs: 3000, transport: 'dovecot.http' }), { mode: 0o644 });
        return shippedConf24(AUTH_MAILWARDEN_CONF_24, { '/etc/dovecot/mailwarden.lua': `${dir}/mailwarden.lua` });
      },
    });
    try {
      await libhttpTransport(d, '2.4', /quota_storage_size\s+1048576B\n/);
    } finally {
      await d.stop();
    }
  });
});
