// The auth endpoint's connection handling (src/auth/http-fast.ts in front of
// node:http), over raw TCP against `mailwarden serve`: Dovecot's GETs answered
// in order however the bytes arrive, a connection handed to node:http at the
// first request of another shape, Connection: close, and bad input.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const SECRET = 'http-secret-0123456789abcdef';

interface Response {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A raw HTTP/1.1 client connection: write any bytes, read responses as they come (Content-Length framed). */
class Raw {
  readonly socket: Socket;
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  closed = false;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    this.socket.on('error', () => undefined);
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  send(text: string): void {
    this.socket.write(text);
  }

  async response(timeoutMs = 5000): Promise<Response> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.#buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        const lines = this.#buf.subarray(0, end).toString('latin1').split('\r\n');
        const status = Number(lines[0]!.split(' ')[1]);
        const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
        const length = Number(headers['content-length'] ?? 0);
        if (this.#buf.length >= end + 4 + length) {
          const body = this.#buf.subarray(end + 4, end + 4 + length).toString('utf8');
          this.#buf = this.#buf.subarray(end + 4 + length);
          return { status, headers, body };
        }
      }
      if (this.closed) throw new Error(`connection closed; have ${JSON.stringify(this.#buf.toString('latin1'))}`);
      if (Date.now() > deadline) throw new Error(`no response within ${timeoutMs} ms; have ${JSON.stringify(this.#buf.toString('latin1'))}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await sleep(20);
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

const get = (endpoint: string, user: string, extra = '') =>
  `GET /dovecot/${endpoint}?user=${encodeURIComponent(user)}&service=lmtp&version=2.3 HTTP/1.1\r\nHost: 127.0.0.1\r\nDate: Mon, 23 Nov 2026 16:17:11 GMT\r\n`
  + `Connection: Keep-Alive\r\nX-Mailwarden-Secret: ${SECRET}\r\n${extra}\r\n`;

describe('auth endpoint connections: the fast path and node:http', () => {
  let tmp: TempDir;
  let daemon: Daemon;
  let port: number;
  const raws: Raw[] = [];
  const raw = () => {
    const r = new Raw(port);
    raws.push(r);
    return r;
  };

  before(async () => {
    tmp = await tempDir('auth-http');
    const directoryPath = join(tmp.path, 'directory.yaml');
    const admin = new DirectoryAdmin(YamlDirectory.open(directoryPath));
    await admin.addDomain('example.org');
    for (const u of ['alice', 'bob', 'carol', 'dave']) await admin.addMailbox(`${u}@example.org`, {});
    port = await freePort();
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'userdb:', '  home: /var/vmail/%d/%n', '  uid: "5000"', '  gid: "5000"',
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: ${SECRET}`,
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    for (const r of raws) r.close();
    await daemon?.stop();
    await tmp?.remove();
  });

  const userOf = (r: Response) => (JSON.parse(r.body) as { user?: string }).user;

  it("answers Dovecot's GETs on one keep-alive connection, however the bytes arrive, in order", async () => {
    const c = raw();
    c.send(get('userdb', 'alice@example.org'));
    const first = await c.response();
    assert.equal(first.status, 200);
    assert.deepEqual(JSON.parse(first.body), { user: 'alice@example.org', fields: { home: '/var/vmail/example.org/alice', uid: '5000', gid: '5000' } });
    assert.equal(first.headers['content-type'], 'application/json');
    assert.equal(Number(first.headers['content-length']), Buffer.byteLength(first.body));
    assert.ok(!Number.isNaN(Date.parse(first.headers['date'] ?? '')), 'a Date header');
    // Trickled a few bytes at a time.
    const text = get('userdb', 'bob@example.org');
    for (let i = 0; i < text.length; i += 7) {
      c.send(text.slice(i, i + 7));
      await sleep(1);
    }
    assert.equal(userOf(await c.response()), 'bob@example.org');
    // Pipelined: carol is not cached yet (answered later), alice is (answered at once): still in order.
    c.send(get('userdb', 'carol@example.org') + get('userdb', 'alice@example.org') + get('userdb', 'nobody@example.org'));
    assert.equal(userOf(await c.response()), 'carol@example.org');
    assert.equal(userOf(await c.response()), 'alice@example.org');
    const unknown = await c.response();
    assert.equal(unknown.status, 404);
    assert.deepEqual(JSON.parse(unknown.body), { result: 'unknown' });
    assert.equal(c.closed, false);
  });

  it('a request of another shape hands the connection to node:http, after the answers before it', async () => {
    const c = raw();
    const json = JSON.stringify({ user: 'dave@example.org', version: '2.4' });
    const post = `POST /dovecot/userdb HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Mailwarden-Secret: ${SECRET}\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n${json}`;
    c.send(get('userdb', 'dave@example.org') + post + get('userdb', 'alice@example.org'));
    const a = await c.response();
    const b = await c.response();
    const d = await c.response();
    assert.deepEqual([a.status, b.status, d.status], [200, 200, 200]);
    assert.equal(userOf(a), 'dave@example.org');
    assert.deepEqual((JSON.parse(b.body) as { fields: unknown }).fields, { home: '/var/vmail/example.org/dave', uid: '5000', gid: '5000' }, 'the 2.4 answer');
    assert.equal(userOf(d), 'alice@example.org');
    assert.match(b.headers['keep-alive'] ?? '', /timeout=60/, "the second answer came from node:http");
    // The user list is node:http's too.
    c.send(`GET /dovecot/users?version=2.3 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Mailwarden-Secret: ${SECRET}\r\n\r\n`);
    assert.deepEqual((JSON.parse((await c.response()).body) as { users: string[] }).users.sort(), ['alice@example.org', 'bob@example.org', 'carol@example.org', 'dave@example.org']);
  });

  it('Connection: close, a wrong secret, a missing user', async () => {
    const c = raw();
    c.send(get('userdb', 'alice@example.org', 'Connection: close\r\n').replace('Connection: Keep-Alive\r\n', ''));
    const r = await c.response();
    assert.equal(r.status, 200);
    assert.equal(r.headers['connection'], 'close');
    assert.ok(await c.waitClosed(), 'the server closed the connection');

    const w = raw();
    w.send(get('userdb', 'alice@example.org').replace(SECRET, 'wrong'));
    assert.equal((await w.response()).status, 401);
    w.send(`GET /dovecot/passdb?service=imap HTTP/1.1\r\nHost: x\r\nX-Mailwarden-Secret: ${SECRET}\r\n\r\n`);
    const missing = await w.response();
    assert.equal(missing.status, 400);
    assert.match(missing.body, /user is required/);
    assert.equal(w.closed, false, 'answered, not dropped');
  });

  it('bad input goes to node:http, which refuses it; the daemon keeps serving', async () => {
    const big = raw();
    big.send(`GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nX-Big: ${'x'.repeat(20 * 1024)}\r\n\r\n`);
    assert.ok(await big.waitClosed(), 'an oversized head closes the connection');
    const garbage = raw();
    garbage.send('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n');
    assert.ok(await garbage.waitClosed());
    const c = raw();
    c.send(get('userdb', 'bob@example.org'));
    assert.equal((await c.response()).status, 200);
    await daemon.waitForLog((l) => l['msg'] === 'malformed HTTP request');
  });
});
