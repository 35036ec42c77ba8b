// Dovecot 2.3 with the shipped dovecot-conf/2.3/auth-checkpassword.conf.ext:
// passdb checkpassword = bin/mailwarden-checkpassword, userdb prefetch and
// checkpassword, `service auth { vsz_limit = 0 }`, asking `mailwarden serve`
// (auth on loopback inet with a secret, YAML directory). Logins over doveadm
// and IMAP, lookups, the daemon down (temporary failure), and the measured
// cost per login.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { startDovecot, withDovecotLogs, type DovecotInstance } from '../support/dovecot.ts';
import { imapLogin } from '../support/mail-clients.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const ROOT = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');
const SNIPPET = join(ROOT, 'dovecot-conf', '2.3', 'auth-checkpassword.conf.ext');
const PROGRAM = join(ROOT, 'bin', 'mailwarden-checkpassword');
const SECRET = 'checkpassword-e2e-secret-0123';
// Cheap hashes: the test measures the program's start-up, not argon2.
const CHEAP = { memoryCost: 8192, timeCost: 1, parallelism: 1 };

/** The shipped snippet with the program and config paths of this test. */
async function checkpasswordConf(configFile: string): Promise<string> {
  const text = await readFile(SNIPPET, 'utf8');
  for (const needle of ['/opt/mailwarden/bin/mailwarden-checkpassword', '/etc/mailwarden/mailwarden.yaml', 'vsz_limit = 0']) {
    if (!text.includes(needle)) throw new Error(`${SNIPPET}: no ${needle}`);
  }
  return text.replaceAll('/opt/mailwarden/bin/mailwarden-checkpassword', PROGRAM).replaceAll('/etc/mailwarden/mailwarden.yaml', configFile);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

describe('Dovecot 2.3 passdb checkpassword = bin/mailwarden-checkpassword', () => {
  let tmp: TempDir;
  let dovecot: DovecotInstance;
  let daemon: Daemon;
  let config: string;

  before(async () => {
    tmp = await tempDir('checkpassword-e2e');
    const directoryPath = join(tmp.path, 'directory.yaml');
    const a = new DirectoryAdmin(YamlDirectory.open(directoryPath));
    await a.addDomain('example.org');
    await a.addMailbox('alice@example.org', { passwordHash: await hashPassword('alice pw', CHEAP), quotaBytes: 1024 * 1024 });
    await a.addMailbox('carol@example.org', { passwordHash: await hashPassword('carol pw', CHEAP), enabled: false });
    const port = await freePort();
    config = join(tmp.path, 'mailwarden.yaml');
    // Dovecot first (mailwarden's userdb needs its home dir and mail uid); the
    // program reads the config only when called.
    // Dovecot's auth process (user dovecot) execs the program from this checkout. A
    // checkout under a private directory (a CI clone in a 0700 temp dir) is out of
    // its reach; a real install lives in world-readable /opt or /usr. Only then,
    // and only in the test, the auth process runs as root.
    const reachable = spawnSync('runuser', ['-u', 'dovecot', '--', 'test', '-x', PROGRAM]).status === 0;
    const authAsRoot = reachable ? '' : '\nservice auth {\n  user = root\n}\n';
    dovecot = await startDovecot({ conf: (await checkpasswordConf(config)) + authAsRoot });
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'userdb:', `  home: ${dovecot.homeDir}/%d/%n`, `  uid: "${dovecot.mailUid}"`, `  gid: "${dovecot.mailGid}"`,
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: "${SECRET}"`,
    ].join('\n') + '\n', { mode: 0o644 }); // the auth process (user dovecot) runs the program
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await dovecot?.stop();
    await tmp?.remove();
  });

  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withDovecotLogs(dovecot, fn);

  it('doveadm auth test: right password (with userdb fields), wrong password, unknown user, disabled user', () =>
    withLogs(async () => {
      const ok = await dovecot.doveadm(['auth', 'test', 'Alice@Example.org', 'alice pw']);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /passdb: Alice@Example\.org auth succeeded/);
      assert.match(ok.stdout, /^\s+user=alice@example\.org$/m);
      // auth login = passdb + userdb: prefetch turns the program's userdb_* fields into the userdb answer.
      const login = await dovecot.doveadm(['auth', 'login', 'alice@example.org', 'alice pw']);
      assert.equal(login.code, 0, login.stdout + login.stderr);
      assert.match(login.stdout, new RegExp(`^\\s+home=${dovecot.homeDir}/example\\.org/alice$`, 'm'));
      assert.match(login.stdout, new RegExp(`^\\s+uid=${dovecot.mailUid}$`, 'm'));
      assert.match(login.stdout, /^\s+quota_rule=\*:bytes=1048576$/m);
      for (const [user, pw] of [['alice@example.org', 'wrong'], ['nobody@example.org', 'x'], ['carol@example.org', 'carol pw']]) {
        const r = await dovecot.doveadm(['auth', 'test', user!, pw!]);
        assert.equal(r.code, 77, `${user}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /auth failed/);
        assert.doesNotMatch(r.stdout, /temp_fail/, `${user}: a clean failure, not a temporary one`);
      }
      const line = await daemon.waitForLog((l) => l['msg'] === 'login failed' && l['user'] === 'carol@example.org');
      assert.equal(line['reason'], 'mailbox disabled');
    }));

  it('lookup mode: doveadm user (userdb checkpassword, exit 2/3)', () =>
    withLogs(async () => {
      const r = await dovecot.doveadm(['user', 'alice@example.org']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`home\\s+${dovecot.homeDir}/example\\.org/alice`));
      assert.match(r.stdout, new RegExp(`uid\\s+${dovecot.mailUid}\\b`));
      assert.match(r.stdout, /quota_rule\s+\*:bytes=1048576/);
      assert.equal((await dovecot.doveadm(['user', 'carol@example.org'])).code, 67, 'disabled: unknown to userdb');
      assert.equal((await dovecot.doveadm(['user', 'nobody@example.org'])).code, 67);
    }));

  it('IMAP login: right and wrong password', () =>
    withLogs(async () => {
      assert.equal((await imapLogin(dovecot.imapPort, 'alice@example.org', 'alice pw')).ok, true);
      const wrong = await imapLogin(dovecot.imapPort, 'alice@example.org', 'nope');
      assert.equal(wrong.ok, false);
      assert.match(wrong.reply, /AUTHENTICATIONFAILED/);
    }));

  it('cost per login: median of 10 sequential `doveadm auth test` runs', () =>
    withLogs(async () => {
      const ms: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t = performance.now();
        const r = await dovecot.doveadm(['auth', 'test', 'alice@example.org', 'alice pw']);
        ms.push(performance.now() - t);
        assert.equal(r.code, 0, r.stdout + r.stderr);
      }
      // The program alone, as Dovecot runs it (fd 3 in, fd 4 out), against the same daemon.
      const direct: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t = performance.now();
        const child = spawn(PROGRAM, ['--config', config, '/usr/lib/dovecot/checkpassword-reply'], { stdio: ['ignore', 'ignore', 'inherit', 'pipe', 'pipe'] });
        (child.stdio[3] as Writable).end('alice@example.org\0alice pw\0\0');
        (child.stdio[4] as Readable).resume();
        const [code] = (await once(child, 'close')) as [number | null];
        direct.push(performance.now() - t);
        assert.equal(code, 0);
      }
      const fmt = (v: number[]): string => `median ${median(v).toFixed(0)} ms, min ${Math.min(...v).toFixed(0)} ms, max ${Math.max(...v).toFixed(0)} ms`;
      const summary = `checkpassword cost per login (n=10): doveadm auth test ${fmt(ms)}; the program alone ${fmt(direct)}`;
      console.log(`# ${summary}`);
      // Loose bound only (shared 2-core machine): a login must not take seconds.
      assert.ok(median(ms) < 2000, summary);
    }));

  it('daemon stopped: temporary failure (doveadm temp_fail, IMAP [UNAVAILABLE]), never "wrong password"', () =>
    withLogs(async () => {
      await daemon.stop();
      const r = await dovecot.doveadm(['auth', 'test', 'alice@example.org', 'alice pw']);
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stdout, /code=temp_fail/, r.stdout + r.stderr);
      const imap = await imapLogin(dovecot.imapPort, 'alice@example.org', 'alice pw');
      assert.equal(imap.ok, false);
      assert.match(imap.reply, /\[UNAVAILABLE\]/);
      const logs = await dovecot.logs();
      assert.match(logs, /mailwarden-checkpassword: daemon at 127\.0\.0\.1:\d+: ECONNREFUSED/, 'the program says why in Dovecot\'s log');
    }));
});
