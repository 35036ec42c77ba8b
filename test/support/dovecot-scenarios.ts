// Scenarios that dovecot-e2e (Dovecot 2.3) and dovecot24-e2e (2.4 in its
// chroot) both run against `mailwarden serve`: the same steps and checks,
// with the few version differences passed in.
import assert from 'node:assert/strict';
import type { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';
import { waitForDovecotLog, withDovecotLogs } from './dovecot.ts';
import { imapLogin, lmtpDeliver } from './mail-clients.ts';
import { startDaemon, type Daemon } from './daemon.ts';

/** What the scenarios use of a running Dovecot, 2.3 or 2.4. */
export interface DovecotUnderTest {
  readonly imapPort: number;
  readonly lmtpPort: number;
  doveadm(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  logs(): Promise<string>;
}

export type DovecotVersion = '2.3' | '2.4';

/**
 * bob@example.org (password "bob pw") logs in; a password change and then a
 * disable through the (YAML) directory apply to the next login once the
 * daemon has loaded the file again.
 */
export async function passwordChangeAndDisable(dovecot: DovecotUnderTest, admin: () => DirectoryAdmin, daemon: () => Daemon): Promise<void> {
  const change = async (what: () => Promise<unknown>) => {
    const loads = () => daemon().lines.filter((l) => l['msg'] === 'directory loaded').length;
    const before = loads();
    await what();
    await daemon().waitForLog(() => loads() > before, 5000);
  };
  assert.equal((await imapLogin(dovecot.imapPort, 'bob@example.org', 'bob pw')).ok, true);
  await change(async () => admin().updateMailbox('bob@example.org', { passwordHash: await hashPassword('new bob pw', DEFAULT_ARGON2) }));
  assert.equal((await imapLogin(dovecot.imapPort, 'bob@example.org', 'bob pw')).ok, false, 'old password refused (cache keyed by the stored hash)');
  assert.equal((await imapLogin(dovecot.imapPort, 'bob@example.org', 'new bob pw')).ok, true);
  await change(() => admin().updateMailbox('bob@example.org', { enabled: false }));
  assert.equal((await imapLogin(dovecot.imapPort, 'bob@example.org', 'new bob pw')).ok, false);
  assert.equal((await dovecot.doveadm(['user', 'bob@example.org'])).code, 67, 'disabled: unknown to userdb');
}

/** The running daemon of a suite, which the restart scenario replaces. */
export interface DaemonSlot {
  get(): Daemon;
  set(daemon: Daemon): void;
  readonly config: string;
}

/**
 * The shipped script over LuaSocket: a mailwarden restart between two
 * lookups goes unnoticed (the kept connection is found dead and reopened);
 * mailwarden down is a temporary failure for userdb, passdb, IMAP and LMTP,
 * never an unknown user.
 */
export async function luaSocketRestartAndOutage(dovecot: DovecotUnderTest, daemon: DaemonSlot, version: DovecotVersion): Promise<void> {
  const using = new RegExp(`mailwarden\\.lua: using the Dovecot ${version.replace('.', '\\.')} API and LuaSocket [\\d.]+, endpoint http:`);
  assert.match(await dovecot.logs(), using);
  const lookup = async (what: string) => {
    const r = await dovecot.doveadm(['user', 'alice@example.org']);
    assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
  };
  await lookup('before');
  await daemon.get().stop();
  daemon.set(await startDaemon(daemon.config));
  await lookup('right after a restart');
  assert.equal((await imapLogin(dovecot.imapPort, 'alice@example.org', 'alice pw')).ok, true);

  await daemon.get().stop();
  try {
    const user = await dovecot.doveadm(['user', 'alice@example.org']);
    assert.equal(user.code, 75, `EX_TEMPFAIL, not 67 (unknown user): ${user.stdout}${user.stderr}`);
    const login = await dovecot.doveadm(['auth', 'test', 'alice@example.org', 'alice pw']);
    assert.match(login.stdout, /code=temp_fail/, login.stdout);
    const imap = await imapLogin(dovecot.imapPort, 'alice@example.org', 'alice pw');
    assert.match(imap.reply, /NO \[UNAVAILABLE\]/);
    const lmtp = await lmtpDeliver(dovecot.lmtpPort, 'sender@client.example', ['alice@example.org'], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(lmtp.recipients[0]?.rcptReply.code, 451, `a 4xx, never 550: ${JSON.stringify(lmtp)}`);
    const refused = /mailwarden userdb: connect to http:\/\/127\.0\.0\.1:\d+: connection refused/;
    assert.match(await waitForDovecotLog(dovecot, refused), refused);
  } finally {
    daemon.set(await startDaemon(daemon.config));
  }
  await lookup('back up');
}

/**
 * A second Dovecot whose script uses TRANSPORT = "dovecot.http" (no
 * lua-socket): login, userdb lookup with the quota (`quota`: how this
 * version shows alice's 1 MiB), a disabled user, iteration.
 */
export async function libhttpTransport(d: DovecotUnderTest, version: DovecotVersion, quota: RegExp): Promise<void> {
  await withDovecotLogs(d, async () => {
    const ok = await d.doveadm(['auth', 'test', 'alice@example.org', 'alice pw']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal((await d.doveadm(['auth', 'test', 'alice@example.org', 'nope'])).code, 77);
    const r = await d.doveadm(['user', 'alice@example.org']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, quota);
    assert.equal((await d.doveadm(['user', 'carol@example.org'])).code, 67);
    const all = await d.doveadm(['user', '*']);
    assert.equal(all.code, 0, all.stdout + all.stderr);
    assert.ok(all.stdout.trim().split('\n').includes('olga@example.org'), all.stdout);
    assert.equal((await imapLogin(d.imapPort, 'alice@example.org', 'alice pw')).ok, true);
    const using = new RegExp(`mailwarden\\.lua: using the Dovecot ${version.replace('.', '\\.')} API and dovecot\\.http, endpoint`);
    assert.match(await waitForDovecotLog(d, using), using);
  });
}
