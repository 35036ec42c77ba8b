// Brute-force throttling end to end: Dovecot 2.3 (harness) with mailwarden's
// Lua bridge as passdb/userdb AND auth_policy_server_url pointing at
// `bin/mailwarden serve`; `mailwarden auth blocked|unblock` through bin/mailwarden.
//
// All test logins come from 127.0.0.1, which the policy allow-lists by
// default (loopback: webmail, local scripts), so the test config sets
// `allow: []`. Dovecot's own anvil auth penalty is off in the harness, and the
// thresholds and tarpit are tiny, so the test stays fast.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';
import { mailwardenAuthConf23, startDovecot, withDovecotLogs, writeMailwardenLua, type DovecotInstance } from '../support/dovecot.ts';
import { imapLogin } from '../support/mail-clients.ts';
import { BIN, startDaemon, type Daemon } from '../support/daemon.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const execFileP = promisify(execFile);
const SECRET = 'policy-secret-0123456789abcdef';
const USER = 'alice@example.org';
const PASSWORD = 'alice pw';

async function cli(config: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP(BIN, ['--config', config, ...args]);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('Dovecot 2.3 auth policy → mailwarden brute-force throttling', () => {
  let tmp: TempDir;
  let dovecot: DovecotInstance;
  let daemon: Daemon;
  let config: string;

  before(async () => {
    tmp = await tempDir('auth-policy');
    const directoryPath = join(tmp.path, 'directory.yaml');
    const admin = new DirectoryAdmin(YamlDirectory.open(directoryPath));
    await admin.addDomain('example.org');
    await admin.addMailbox(USER, { passwordHash: await hashPassword(PASSWORD, DEFAULT_ARGON2) });

    const port = await freePort();
    const luaFile = join(tmp.path, 'mailwarden.lua');
    await writeMailwardenLua(luaFile, { url: `http://127.0.0.1:${port}`, secret: SECRET, timeoutMs: 3000 });
    dovecot = await startDovecot({
      conf: `${await mailwardenAuthConf23(luaFile)}
auth_policy_server_url = http://127.0.0.1:${port}/dovecot/policy?
auth_policy_server_api_header = X-Mailwarden-Secret: ${SECRET}
auth_policy_hash_nonce = ${randomBytes(16).toString('hex')}
`,
    });
    config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'log:', '  level: debug',
      'userdb:', `  home: ${dovecot.homeDir}/%d/%n`, `  uid: "${dovecot.mailUid}"`, `  gid: "${dovecot.mailGid}"`,
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: ${SECRET}`,
      '  policy:',
      '    delay_after: 2',
      '    block_after: 3',
      '    max_delay: 1s',
      '    block_time: 1h',
      '    allow: []   # the test logs in from 127.0.0.1, allow-listed by default',
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await dovecot?.stop();
    await tmp?.remove();
  });

  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withDovecotLogs(dovecot, fn);
  const policyLogs = (msg: string) => daemon.lines.filter((l) => l['msg'] === msg);

  it('the same wrong password retried does not escalate', () =>
    withLogs(async () => {
      assert.equal((await imapLogin(dovecot.imapPort, USER, PASSWORD)).ok, true);
      for (let i = 0; i < 4; i++) {
        const r = await imapLogin(dovecot.imapPort, USER, 'stale password');
        assert.equal(r.ok, false);
        assert.doesNotMatch(r.reply, /Too many failed logins/);
      }
      assert.equal(policyLogs('auth policy: tarpit').length, 0);
      assert.equal(policyLogs('auth policy: block').length, 0);
      const blocked = await cli(config, ['auth', 'blocked', '--json']);
      assert.equal(blocked.code, 0, blocked.stderr);
      assert.deepEqual(JSON.parse(blocked.stdout), []);
      assert.equal((await imapLogin(dovecot.imapPort, USER, PASSWORD)).ok, true, 'the right password still gets in');
    }));

  it('distinct wrong passwords: tarpit, then block (even the right password), until `mailwarden auth unblock`', () =>
    withLogs(async () => {
      for (const guess of ['guess 1', 'guess 2', 'guess 3']) {
        const r = await imapLogin(dovecot.imapPort, USER, guess);
        assert.equal(r.ok, false);
        assert.doesNotMatch(r.reply, /Too many failed logins/, guess);
      }
      const tarpit = await daemon.waitForLog((l) => l['msg'] === 'auth policy: tarpit');
      assert.equal(tarpit['status'], 1);
      assert.equal(tarpit['remote_ip'], '127.0.0.1');
      const blocking = await daemon.waitForLog((l) => l['msg'] === 'auth policy: blocking');
      assert.equal(blocking['key'], 'ip:127.0.0.1');

      const refused = await imapLogin(dovecot.imapPort, USER, PASSWORD);
      assert.equal(refused.ok, false);
      assert.match(refused.reply, /^\S+ NO \[ALERT\] Too many failed logins, try again later/);
      const block = await daemon.waitForLog((l) => l['msg'] === 'auth policy: block');
      assert.equal(block['login'], USER);
      const logs = await dovecot.logs();
      assert.match(logs, /Policy check action is tarpit 1 second/, 'Dovecot applied the tarpit');
      assert.doesNotMatch(logs, /Policy server (HTTP error|request failed|response)/i, 'every policy call was answered');
      assert.match(logs, /Authentication failure due to policy server refusal: Too many failed logins/);

      const listed = await cli(config, ['auth', 'blocked']);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, /^127\.0\.0\.1\s+ip\s+3\s+\d{4}-/m);

      const unblock = await cli(config, ['auth', 'unblock', '127.0.0.1']);
      assert.equal(unblock.code, 0, unblock.stderr);
      assert.match(unblock.stdout, /^unblocked 127\.0\.0\.1 \(ip:127\.0\.0\.1/);
      await daemon.waitForLog((l) => l['msg'] === 'auth policy: unblock' && l['key'] === '127.0.0.1');
      assert.equal((await imapLogin(dovecot.imapPort, USER, PASSWORD)).ok, true, 'in again after the unblock');
      assert.deepEqual(JSON.parse((await cli(config, ['auth', 'blocked', '--json'])).stdout), []);
    }));

  it('the CLI says clearly when the daemon is not running', async () => {
    const dead = join(tmp.path, 'dead.yaml');
    writeFileSync(dead, [
      'directory:', '  backend: yaml', `  path: ${join(tmp.path, 'directory.yaml')}`,
      'auth:', `  listen: inet:127.0.0.1:${await freePort()}`, `  secret: ${SECRET}`,
    ].join('\n'));
    const r = await cli(dead, ['auth', 'unblock', '192.0.2.1']);
    assert.equal(r.code, 75);
    assert.match(r.stderr, /^mailwarden: cannot reach the mailwarden daemon at inet:127\.0\.0\.1:\d+ \(is `mailwarden serve` running\?\): ECONNREFUSED\n$/);
  });
});
