// `mailwarden serve` with the MariaDB directory: passdb/userdb answers and
// logins come from the per-user answer cache (the Lua bridge's GET form and the
// dict socket share it), and every change the directory reports (a write by
// another process: the change serial, polled every second, and the change log
// that names the users it touched) reaches them within about a second, while
// other users stay cached. last_login is written at most once a minute per user.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import type { Argon2Params } from '../../src/config/load.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { testMariaDb, type MariaDb } from '../support/mariadb.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const SECRET = 'cache-secret-0123456789abcdef';
// The daemon's own parameters: no hash here needs an upgrade (which would itself be a directory change).
const CHEAP: Argon2Params = { memoryCost: 8192, timeCost: 1, parallelism: 1 };
const ODD_PW = 'p ä"\\%+&=?#ö';

describe('Dovecot answers from the cache, flushed by directory changes (MariaDB)', () => {
  let tmp: TempDir;
  let db: MariaDb;
  let daemon: Daemon;
  let base: string;
  let dictSocket: string;
  /** Another process's view of the directory, like `mailwarden user ...`. */
  let other: MysqlDirectory;
  let admin: DirectoryAdmin;

  before(async () => {
    tmp = await tempDir('auth-cache');
    db = await testMariaDb();
    const url = await db.createDatabase('mw_auth_cache');
    const dirConfig = { backend: 'mysql' as const, url, poolSize: 2, queryTimeoutMs: 2000, cacheTtlMs: 60_000, cacheSize: 1000 };
    await migrateDatabase(dirConfig);
    other = await MysqlDirectory.open(dirConfig, pino({ level: 'silent' }));
    admin = new DirectoryAdmin(other);
    await admin.addDomain('example.org');
    for (const [user, pw] of [['alice', 'alice pw'], ['bob', 'bob pw'], ['carol', 'carol pw'], ['dave', 'dave pw'], ['erin', ODD_PW]] as const) {
      await admin.addMailbox(`${user}@example.org`, { passwordHash: await hashPassword(pw, CHEAP), quotaBytes: 1024 * 1024 });
    }
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    dictSocket = join(tmp.path, 'dict.sock');
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: mysql', `  url: ${JSON.stringify(url)}`, '  query_timeout: 2s',
      'log:', '  level: info',
      'passwords:', '  argon2:', `    memory_cost: ${CHEAP.memoryCost}`, `    time_cost: ${CHEAP.timeCost}`, `    parallelism: ${CHEAP.parallelism}`,
      'userdb:', '  home: /var/vmail/%d/%n', '  uid: "5000"', '  gid: "5000"',
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: ${SECRET}`,
      'dict:', `  listen: unix:${dictSocket}`,
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await other?.close();
    await tmp?.remove();
  });

  const enc = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

  /** The shipped Lua script's request: GET, the user in the query string, the password percent-encoded in a header. */
  async function get(path: 'userdb' | 'passdb', user: string, password?: string, secret = SECRET): Promise<{ status: number; body: Record<string, unknown> }> {
    const headers: Record<string, string> = { 'x-mailwarden-secret': secret };
    if (password !== undefined) headers['x-mailwarden-password'] = enc(password);
    const res = await fetch(`${base}/dovecot/${path}?user=${enc(user)}&service=imap&remote_ip=192.0.2.1&version=2.3`, { headers });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  const login = async (user: string, password: string) => (await get('passdb', user, password)).status;
  const quotaRule = async (user: string) => ((await get('userdb', user)).body['fields'] as Record<string, unknown> | undefined)?.['quota_rule'];

  /** One dict lookup over a fresh connection (protocol 3, as Dovecot 2.3). */
  function dictLookup(key: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = connect(dictSocket);
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        got += d;
        if (got.includes('\n')) {
          s.destroy();
          resolve(got.slice(0, got.indexOf('\n')));
        }
      });
      s.on('error', reject);
      s.write(`H3\t2\t0\t\tauth\nL${key}\t\n`);
    });
  }

  /** Polls `probe` until it returns `want`, for at most `ms`; returns the time it took. */
  async function within<T>(ms: number, probe: () => Promise<T>, want: T): Promise<number> {
    const started = Date.now();
    for (;;) {
      const got = await probe();
      if (got === want) return Date.now() - started;
      if (Date.now() - started > ms) assert.fail(`still ${JSON.stringify(got)} after ${ms} ms, expected ${JSON.stringify(want)}`);
      await sleep(50);
    }
  }

  it('repeated lookups are answered from memory (both transports); a change drops only the users it touches', async () => {
    assert.equal(await quotaRule('alice@example.org'), '*:bytes=1048576');
    // Behind the directory's back: no change serial bump, so nobody is told.
    await db.admin("UPDATE mw_auth_cache.mailbox SET quota_bytes = 2097152 WHERE address = 'alice@example.org'");
    assert.equal(await quotaRule('alice@example.org'), '*:bytes=1048576', 'HTTP: the cached answer');
    assert.equal(await dictLookup('shared/userdb/alice@example.org'), 'O{"home":"/var/vmail/example.org/alice","uid":"5000","gid":"5000","quota_rule":"*:bytes=1048576"}', 'dict: the same cache');
    // A write through the directory about bob: the daemon reads the change log and drops bob only.
    await admin.updateMailbox('bob@example.org', { quotaBytes: 3 * 1048576 });
    await within(3000, () => quotaRule('bob@example.org'), '*:bytes=3145728');
    assert.equal(await quotaRule('alice@example.org'), '*:bytes=1048576', 'alice stays cached: the change was not about her');
    // A write about alice drops her answer (and her row in memory).
    await admin.updateMailbox('alice@example.org', { name: 'Alice' });
    const ms = await within(3000, () => quotaRule('alice@example.org'), '*:bytes=2097152');
    assert.ok(ms <= 2500, `took ${ms} ms`);
    assert.match(await dictLookup('shared/userdb/alice@example.org'), /"quota_rule":"\*:bytes=2097152"/);
  });

  it('a password change, a disable and a removal by another process reach logins and lookups within about a second', async () => {
    assert.equal(await login('carol@example.org', 'carol pw'), 200);
    assert.equal(await login('carol@example.org', 'carol pw'), 200, 'again, from the verification cache');
    await admin.updateMailbox('carol@example.org', { passwordHash: await hashPassword('new carol pw', CHEAP) });
    await within(3000, () => login('carol@example.org', 'carol pw'), 403);
    assert.equal(await login('carol@example.org', 'new carol pw'), 200);

    await admin.updateMailbox('carol@example.org', { enabled: false });
    await within(3000, () => login('carol@example.org', 'new carol pw'), 403);
    assert.equal((await get('userdb', 'carol@example.org')).status, 404);
    assert.equal((await get('passdb', 'carol@example.org')).status, 404);

    assert.equal((await get('userdb', 'bob@example.org')).status, 200);
    await admin.removeMailbox('bob@example.org');
    await within(3000, async () => (await get('userdb', 'bob@example.org')).status, 404);
    assert.equal(await login('bob@example.org', 'bob pw'), 404);
  });

  it('the GET form: password percent-encoded in a header, never in the URL; the older JSON POST form still works', async () => {
    assert.equal(await login('erin@example.org', ODD_PW), 200);
    assert.equal(await login('erin@example.org', `${ODD_PW}x`), 403);
    const lookup = await get('passdb', 'erin@example.org');
    assert.equal(lookup.status, 200);
    assert.match(String((lookup.body['fields'] as Record<string, unknown>)['password']), /^\{ARGON2ID\}/, 'no password header: a lookup');
    const post = await fetch(`${base}/dovecot/passdb`, {
      method: 'POST',
      headers: { 'x-mailwarden-secret': SECRET, 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'erin@example.org', password: ODD_PW, service: 'imap', version: '2.3' }),
    });
    assert.equal(post.status, 200);
    const userdb = await fetch(`${base}/dovecot/userdb`, {
      method: 'POST', headers: { 'x-mailwarden-secret': SECRET }, body: JSON.stringify({ user: 'erin@example.org', version: '2.4' }),
    });
    assert.deepEqual(((await userdb.json()) as { fields: unknown }).fields, { home: '/var/vmail/example.org/erin', uid: '5000', gid: '5000', quota_storage_size: '1048576B' });
    assert.equal((await get('userdb', 'erin@example.org', undefined, 'wrong secret')).status, 401);
    assert.equal((await fetch(`${base}/dovecot/userdb?service=lmtp`, { headers: { 'x-mailwarden-secret': SECRET } })).status, 400);
    // The log has the logins, never the password.
    const lines = JSON.stringify(daemon.lines);
    assert.match(lines, /erin@example\.org/);
    assert.ok(!lines.includes(ODD_PW) && !lines.includes(enc(ODD_PW)), 'no password in the log');
  });

  it('last_login is a "last seen" date: written at the first login, then at most once a minute per user', async () => {
    assert.equal((await other.getActivity('dave@example.org'))?.lastLogin, undefined);
    assert.equal(await login('dave@example.org', 'dave pw'), 200);
    let first: Date | undefined;
    await within(3000, async () => (first = (await other.getActivity('dave@example.org'))?.lastLogin) !== undefined, true);
    assert.equal((await other.getActivity('dave@example.org'))?.lastLoginIp, '192.0.2.1');
    await sleep(50);
    for (let i = 0; i < 3; i++) assert.equal(await login('dave@example.org', 'dave pw'), 200);
    await sleep(300);
    assert.equal((await other.getActivity('dave@example.org'))?.lastLogin?.getTime(), first!.getTime(), 'not rewritten within the minute');
  });
});
