// bin/mailwarden-checkpassword as Dovecot runs it: request on fd 3, reply on
// fd 4, exit code, environment for lookups, against a stand-in for the
// daemon's auth HTTP endpoint (inet with secret, and unix).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { tempDir, type TempDir } from '../../support/tmp.ts';

const BIN = new URL('../../../bin/mailwarden-checkpassword', import.meta.url).pathname;
const SECRET = 'unit-secret-0123456789';

interface Run {
  code: number | null;
  fd4: string;
  stderr: string;
}

/** Runs the program with `input` on fd 3; collects fd 4, stderr and the exit code. */
async function runProgram(args: string[], input: string | Buffer, env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
  });
  const fd3 = child.stdio[3] as Writable;
  const fd4 = child.stdio[4] as Readable;
  let out = '';
  let stderr = '';
  fd4.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  fd3.on('error', () => {});
  fd3.end(input);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, fd4: out, stderr };
}

interface Seen {
  path: string | undefined;
  secret: string | undefined;
  body: Record<string, unknown>;
}

describe('mailwarden-checkpassword program (fd 3 / fd 4 / exit code)', () => {
  let tmp: TempDir;
  let server: Server;
  let config: string;
  let seen: Seen[] = [];
  /** What the stand-in daemon answers, by user. */
  const answer = (req: Seen, res: ServerResponse): void => {
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.secret !== SECRET) return json(401, { error: 'secret' });
    const user = req.body['user'];
    if (user === 'alice@example.org') {
      if (req.path === '/dovecot/userdb') return json(200, { user, fields: { home: '/var/vmail/example.org/alice', uid: '5000', gid: '5000', quota_rule: '*:bytes=1024' } });
      if (req.body['password'] === undefined) return json(200, { user, fields: { password: '{ARGON2ID}$argon2id$x', userdb_home: '/h' } });
      if (req.body['password'] === 'right') return json(200, { user, fields: { userdb_home: '/var/vmail/example.org/alice', userdb_uid: '5000', userdb_gid: '5000', userdb_quota_rule: '*:bytes=1024' } });
      return json(403, { result: 'mismatch' });
    }
    if (user === 'weird@example.org') return json(200, { user, fields: { userdb_home: '/h\tx\ny' } });
    if (user === 'broken@example.org') return json(503, { result: 'tempfail' });
    if (user === 'garbage@example.org') { res.writeHead(200); res.end('not json'); return; }
    if (user === 'slow@example.org') return void setTimeout(() => json(200, { user, fields: {} }), 3000);
    return json(404, { result: 'unknown' });
  };

  before(async () => {
    tmp = await tempDir('checkpassword-unit');
    server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const s: Seen = { path: req.url, secret: req.headers['x-mailwarden-secret'] as string | undefined, body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') };
        seen.push(s);
        answer(s, res);
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, `directory:\n  backend: yaml\n  path: directory.yaml\nauth:\n  listen: inet:127.0.0.1:${port}\n  secret: ${SECRET}\n`);
  });

  after(async () => {
    server?.closeAllConnections();
    server?.close();
    await tmp?.remove();
  });

  const login = (user: string, password: string, env: Record<string, string> = {}): Promise<Run> =>
    runProgram(['--config', config, '/usr/lib/dovecot/checkpassword-reply'], `${user}\0${password}\0\0`, { SERVICE: 'imap', TCPREMOTEIP: '192.0.2.7', ...env });

  it('right password: exit 0, user and userdb_* fields on fd 4, the request carries service, ip, version and secret', async () => {
    seen = [];
    const r = await login('alice@example.org', 'right');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.fd4, 'user=alice@example.org\tuserdb_home=/var/vmail/example.org/alice\tuserdb_uid=5000\tuserdb_gid=5000\tuserdb_quota_rule=*:bytes=1024');
    assert.equal(r.stderr, '');
    assert.deepEqual(seen, [{
      path: '/dovecot/passdb', secret: SECRET,
      body: { user: 'alice@example.org', password: 'right', service: 'imap', remote_ip: '192.0.2.7', version: '2.3' },
    }]);
  });

  it('wrong password and unknown user: exit 1, nothing on fd 4', async () => {
    for (const [user, pw] of [['alice@example.org', 'wrong'], ['nobody@example.org', 'x']] as const) {
      const r = await login(user, pw);
      assert.equal(r.code, 1, `${user}: ${r.stderr}`);
      assert.equal(r.fd4, '');
      assert.equal(r.stderr, '');
    }
  });

  it('input over 512 bytes is a failed login (1), or an unknown user in lookup mode (3), without asking the daemon', async () => {
    seen = [];
    const long = `alice@example.org\0${'x'.repeat(600)}\0\0`;
    assert.equal((await runProgram(['--config', config], long)).code, 1);
    assert.equal((await runProgram(['--config', config], long, { AUTHORIZED: '1' })).code, 3);
    assert.equal(seen.length, 0);
  });

  it('reply values are tab-escaped: no TAB, LF or NUL reaches Dovecot', async () => {
    const r = await login('weird@example.org', 'x');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.fd4, 'user=weird@example.org\tuserdb_home=/h\x01tx\x01ny');
  });

  it('userdb lookup (AUTHORIZED=1): exit 2 with userdb_ fields from /dovecot/userdb; unknown: exit 3', async () => {
    seen = [];
    const r = await runProgram(['--config', config], 'alice@example.org\0\0\0', { AUTHORIZED: '1', SERVICE: 'lmtp' });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.fd4, 'user=alice@example.org\tuserdb_home=/var/vmail/example.org/alice\tuserdb_uid=5000\tuserdb_gid=5000\tuserdb_quota_rule=*:bytes=1024');
    assert.equal(seen[0]?.path, '/dovecot/userdb');
    assert.equal(seen[0]?.body['password'], undefined);
    const u = await runProgram(['--config', config], 'nobody@example.org\0\0\0', { AUTHORIZED: '1' });
    assert.equal(u.code, 3, u.stderr);
    assert.equal(u.fd4, '');
  });

  it('passdb credentials lookup (AUTHORIZED=1 CREDENTIALS_LOOKUP=1): exit 2 with password and userdb_ fields', async () => {
    seen = [];
    const r = await runProgram(['--config', config], 'alice@example.org\0\0\0', { AUTHORIZED: '1', CREDENTIALS_LOOKUP: '1', SCHEME: '' });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.fd4, 'user=alice@example.org\tpassword={ARGON2ID}$argon2id$x\tuserdb_home=/h');
    assert.equal(seen[0]?.path, '/dovecot/passdb');
    assert.equal('password' in (seen[0]?.body ?? {}), false, 'no password: a lookup');
    assert.equal((await runProgram(['--config', config], 'nobody@example.org\0\0\0', { AUTHORIZED: '1', CREDENTIALS_LOOKUP: '1' })).code, 3);
  });

  it('daemon trouble is exit 111 with one stderr line, never 1: 5xx, bad answer, wrong secret, timeout, down', async () => {
    const expect111 = (r: Run, pattern: RegExp): void => {
      assert.equal(r.code, 111, r.stderr);
      assert.equal(r.fd4, '');
      assert.match(r.stderr, /^mailwarden-checkpassword: [^\n]+\n$/);
      assert.match(r.stderr, pattern);
    };
    expect111(await login('broken@example.org', 'x'), /HTTP 503/);
    expect111(await login('garbage@example.org', 'x'), /not JSON/);
    const wrongSecret = join(tmp.path, 'wrong-secret.yaml');
    const { port } = server.address() as AddressInfo;
    writeFileSync(wrongSecret, `auth:\n  listen: inet:127.0.0.1:${port}\n  secret: not-the-secret-0000\n`);
    expect111(await runProgram(['--config', wrongSecret], 'alice@example.org\0right\0\0'), /HTTP 401 \(auth\.secret/);
    expect111(await login('slow@example.org', 'x', { MAILWARDEN_CHECKPASSWORD_TIMEOUT_MS: '300' }), /no answer within 300 ms/);
    const down = join(tmp.path, 'down.yaml');
    writeFileSync(down, `auth:\n  listen: unix:${join(tmp.path, 'nothing.sock')}\n`);
    expect111(await runProgram(['--config', down], 'alice@example.org\0right\0\0'), /ENOENT/);
    expect111(await runProgram(['--config', down], 'alice@example.org\0\0\0', { AUTHORIZED: '1' }), /ENOENT/);
  });

  it('config trouble is exit 111 too: missing file, no auth section, and a malformed fd 3', async () => {
    const missing = await runProgram(['--config', join(tmp.path, 'nope.yaml')], 'a@b\0x\0\0');
    assert.equal(missing.code, 111);
    assert.match(missing.stderr, /cannot read config .*nope\.yaml: ENOENT/);
    const noAuth = join(tmp.path, 'no-auth.yaml');
    writeFileSync(noAuth, 'directory:\n  backend: yaml\n');
    const r = await runProgram([], 'a@b\0x\0\0', { MAILWARDEN_CONFIG: noAuth });
    assert.equal(r.code, 111);
    assert.match(r.stderr, /no auth\.listen/);
    const bad = await runProgram(['--config', config], 'no terminators');
    assert.equal(bad.code, 111);
    assert.match(bad.stderr, /not a checkpassword request/);
  });

  it('a unix: auth socket works the same (no secret needed)', async () => {
    const sock = join(tmp.path, 'auth.sock');
    const unixServer = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ user: 'alice@example.org', fields: { userdb_uid: 5000 } }));
      });
    });
    unixServer.listen(sock);
    await once(unixServer, 'listening');
    try {
      const cfg = join(tmp.path, 'unix.yaml');
      writeFileSync(cfg, `auth:\n  listen: "unix:${sock}"\n`);
      const r = await runProgram(['--config', cfg], 'Alice@example.org\0pw\0\0');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.fd4, 'user=alice@example.org\tuserdb_uid=5000');
    } finally {
      unixServer.close();
    }
  });
});
