import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import type { ListenAddress } from '../../src/config/listen.ts';
import type { ServiceListen } from '../../src/config/load.ts';
import { ListenError, type Listener } from '../../src/net/listener.ts';
import { encodeNetstring } from '../../src/socketmap/netstring.ts';
import { SocketmapClient as Client } from '../support/socketmap-client.ts';
import { reply, type SocketmapReply } from '../../src/socketmap/protocol.ts';
import { startSocketmapServer, type SocketmapServerOptions } from '../../src/socketmap/server.ts';

/** Collects pino JSON lines so tests can assert on what was logged. */
function capturingLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

const calls: Array<[string, string]> = [];

/** A fake directory: the key chooses the behaviour. */
async function lookup(map: string, key: string): Promise<SocketmapReply> {
  calls.push([map, key]);
  if (map === 'unknown_map') return reply.perm(`no such map: ${map}`);
  if (key === 'boom') throw new Error('database exploded');
  if (key === 'reject') return Promise.reject(new Error('connection lost'));
  if (key === 'empty') return reply.ok('');
  if (key === 'huge') return reply.ok('x'.repeat(100_001));
  if (key === 'down') return reply.temp('directory down\r\nsecond line');
  if (key === 'hang') return new Promise<never>(() => {});
  const delay = /^delay(\d+):/.exec(key);
  if (delay) await sleep(Number(delay[1]));
  if (key.endsWith('@example.com') || delay) return reply.ok(`found:${key}`);
  return reply.notFound();
}

function inet(): ServiceListen {
  return { listen: { kind: 'inet', host: '127.0.0.1', port: 0 }, unix: { mode: 0o660 } };
}

async function start(overrides: Partial<SocketmapServerOptions> = {}): Promise<Listener> {
  return startSocketmapServer({ listen: inet(), lookup, log: pino({ level: 'silent' }), ...overrides });
}

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwarden-socketmap-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('socketmap server on inet:127.0.0.1:0', () => {
  let server: Listener;
  before(async () => {
    server = await start({ maxRequestBytes: 1000 });
  });
  after(() => server.close(100));

  it('binds an ephemeral port', () => {
    assert.equal(server.address.kind, 'inet');
    assert.ok(server.address.kind === 'inet' && server.address.port > 0);
  });

  it('answers OK, NOTFOUND, PERM and keys with spaces on one persistent connection', async () => {
    const c = await Client.connect(server.address);
    assert.equal(await c.ask('virtual_mailbox', 'user@example.com'), 'OK found:user@example.com');
    assert.equal(await c.ask('virtual_mailbox', 'nobody@elsewhere.org'), 'NOTFOUND ');
    assert.equal(await c.ask('virtual_mailbox', '"john doe"@example.com'), 'OK found:"john doe"@example.com');
    assert.equal(await c.ask('canonical', ''), 'NOTFOUND ');
    assert.deepEqual(calls.at(-1), ['canonical', '']);
    assert.equal(await c.ask('unknown_map', 'x'), 'PERM no such map: unknown_map');
    assert.equal(await c.ask('virtual_mailbox', 'down'), 'TEMP directory down second line');
    c.socket.end();
    await c.closed;
  });

  it('answers TEMP when the lookup throws or rejects, and keeps the connection', async () => {
    const { log, lines } = capturingLogger();
    const s = await start({ log });
    const c = await Client.connect(s.address);
    assert.equal(await c.ask('virtual_mailbox', 'boom'), 'TEMP lookup failed');
    assert.equal(await c.ask('virtual_mailbox', 'reject'), 'TEMP lookup failed');
    assert.equal(await c.ask('virtual_mailbox', 'user@example.com'), 'OK found:user@example.com');
    const errors = lines.filter((l) => l['level'] === 50);
    assert.equal(errors.length, 2);
    assert.equal(errors[0]?.['key'], 'boom');
    c.socket.destroy();
    await s.close(100);
  });

  it('never sends an empty OK or an oversized reply', async () => {
    const c = await Client.connect(server.address);
    assert.equal(await c.ask('virtual_mailbox', 'empty'), 'TEMP invalid lookup result');
    assert.equal(await c.ask('virtual_mailbox', 'huge'), 'PERM result too long');
    assert.equal(await c.ask('virtual_mailbox', 'user@example.com'), 'OK found:user@example.com');
    c.socket.destroy();
  });

  it('answers pipelined requests in request order', async () => {
    const c = await Client.connect(server.address);
    // Earlier requests take longer, so a concurrent implementation would reorder them.
    const keys = Array.from({ length: 10 }, (_, i) => `delay${(10 - i) * 3}:${i}`);
    c.send(Buffer.concat(keys.map((k) => encodeNetstring(`m ${k}`))));
    for (const k of keys) assert.equal(await c.next(), `OK found:${k}`);
    c.socket.destroy();
  });

  it('handles a burst larger than its read-ahead limit, split into tiny chunks', async () => {
    const c = await Client.connect(server.address);
    const keys = Array.from({ length: 500 }, (_, i) => `u${i}@example.com`);
    const stream = Buffer.concat(keys.map((k) => encodeNetstring(`m ${k}`)));
    for (let i = 0; i < stream.length; i += 7) c.send(stream.subarray(i, i + 7));
    for (const k of keys) assert.equal(await c.next(), `OK found:${k}`);
    assert.equal(await c.ask('m', 'last@example.com'), 'OK found:last@example.com');
    c.socket.destroy();
  });

  it('answers PERM and closes on malformed framing while another connection keeps working', async () => {
    const { log, lines } = capturingLogger();
    const s = await start({ log });
    const good = await Client.connect(s.address);
    const bad = await Client.connect(s.address);
    assert.equal(await good.ask('m', 'a@example.com'), 'OK found:a@example.com');
    // A valid request, then garbage in the same packet: the first is still answered, in order.
    bad.send(Buffer.concat([encodeNetstring('m b@example.com'), Buffer.from('abc:def,')]));
    assert.equal(await bad.next(), 'OK found:b@example.com');
    assert.match((await bad.next()) ?? '', /^PERM malformed netstring length$/);
    assert.equal(await bad.next(), undefined);
    await bad.closed;
    assert.equal(await good.ask('m', 'c@example.com'), 'OK found:c@example.com');
    const warns = lines.filter((l) => l['level'] === 40);
    assert.equal(warns.length, 1);
    assert.equal(warns[0]?.['code'], 'bad_length');
    assert.match(String(warns[0]?.['peer']), /^127\.0\.0\.1:\d+$/);
    good.socket.destroy();
    await s.close(100);
  });

  it('answers PERM and closes on a missing comma', async () => {
    const c = await Client.connect(server.address);
    c.send('3:m x;');
    assert.equal(await c.next(), 'PERM netstring not terminated by a comma');
    await c.closed;
  });

  it('answers PERM and closes as soon as an oversized length is announced', async () => {
    const c = await Client.connect(server.address);
    c.send('1001:'); // no payload needed: the length alone is refused
    assert.equal(await c.next(), 'PERM netstring longer than 1000 bytes');
    await c.closed;
    const ok = await Client.connect(server.address);
    assert.equal(await ok.ask('m', `${'x'.repeat(970)}@example.com`), `OK found:${'x'.repeat(970)}@example.com`);
    ok.socket.destroy();
  });

  it('answers PERM and closes on an invalid request payload', async () => {
    for (const [payload, wire] of [
      [Buffer.from('nospace'), 'PERM request has no space between map name and key'],
      [Buffer.from('Bad-Map key'), 'PERM invalid map name'],
      [Buffer.from([0x6d, 0x20, 0xff, 0xfe]), 'PERM request is not valid UTF-8'],
    ] as const) {
      const c = await Client.connect(server.address);
      c.send(encodeNetstring(payload));
      // Anything pipelined after the bad request is not answered.
      c.request('m', 'after@example.com');
      assert.equal(await c.next(), wire);
      assert.equal(await c.next(), undefined);
      await c.closed;
    }
  });

  it('survives peers that vanish mid-request or before their answer', async () => {
    const a = await Client.connect(server.address);
    a.send('20:m partial');
    a.socket.destroy();
    const b = await Client.connect(server.address);
    b.request('m', 'delay50:gone');
    b.socket.destroy();
    const c = await Client.connect(server.address);
    c.request('m', 'delay50:half-closed');
    c.socket.end();
    await sleep(100);
    const d = await Client.connect(server.address);
    assert.equal(await d.ask('m', 'still@example.com'), 'OK found:still@example.com');
    d.socket.destroy();
  });

  it('closes idle connections quietly', async () => {
    const s = await start({ idleTimeoutMs: 100 });
    const c = await Client.connect(s.address);
    assert.equal(await c.ask('m', 'a@example.com'), 'OK found:a@example.com');
    assert.equal(await c.next(), undefined);
    await c.closed;
    await s.close(100);
  });

  it('finishes in-flight lookups on close, then closes every connection', async () => {
    const s = await start();
    const busy = await Client.connect(s.address);
    const idle = await Client.connect(s.address);
    assert.equal(await idle.ask('m', 'a@example.com'), 'OK found:a@example.com');
    busy.request('m', 'delay100:slow');
    await sleep(20);
    const closing = s.close(5_000);
    assert.equal(await busy.next(), 'OK found:delay100:slow');
    await Promise.all([busy.closed, idle.closed, closing]);
    assert.equal(s.connections, 0);
    await assert.rejects(Client.connect(s.address));
  });

  it('drops connections whose lookup outlives the grace period', async () => {
    const s = await start();
    const c = await Client.connect(s.address);
    c.request('m', 'hang');
    await sleep(20);
    const started = Date.now();
    await s.close(100);
    await c.closed;
    assert.ok(Date.now() - started < 1_000);
    assert.equal(await c.next(), undefined);
  });

  it('refuses a port that is already taken', async () => {
    const taken = server.address;
    assert.ok(taken.kind === 'inet');
    await assert.rejects(
      start({ listen: { listen: taken, unix: { mode: 0o660 } } }),
      (err: unknown) => err instanceof ListenError && /address already in use/.test(err.message),
    );
  });

  it('logs connection open and close at debug', async () => {
    const { log, lines } = capturingLogger();
    const s = await start({ log });
    const c = await Client.connect(s.address);
    assert.equal(await c.ask('m', 'a@example.com'), 'OK found:a@example.com');
    c.socket.end();
    await c.closed;
    await s.close(100);
    const debug = lines.filter((l) => l['level'] === 20).map((l) => l['msg']);
    assert.deepEqual(debug, ['connection opened', 'connection closed']);
    assert.ok(lines.every((l) => (l['level'] as number) < 40), 'nothing above info');
  });
});

describe('socketmap server on a unix socket', () => {
  const unix = (path: string, mode = 0o660, extra: { user?: string; group?: string } = {}): ServiceListen => ({
    listen: { kind: 'unix', path },
    unix: { mode, ...extra },
  });

  it('creates the directory, applies the mode, serves, and removes the socket on close', async () => {
    const path = join(dir, 'run', 'nested', 'socketmap.sock');
    const s = await start({ listen: unix(path, 0o660) });
    const st = lstatSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
    assert.equal(lstatSync(join(dir, 'run')).mode & 0o777, 0o755);
    const c = await Client.connect(s.address);
    assert.equal(await c.ask('virtual_mailbox', 'user@example.com'), 'OK found:user@example.com');
    c.socket.destroy();
    await s.close(100);
    assert.equal(existsSync(path), false);
  });

  it('creates missing parent directories 0755 even under a 0077 umask', async () => {
    const path = join(dir, 'umask', 'a', 'b', 'socketmap.sock');
    const old = process.umask(0o077);
    let s: Listener;
    try {
      s = await start({ listen: unix(path, 0o666) });
    } finally {
      process.umask(old);
    }
    for (const d of ['umask', 'umask/a', 'umask/a/b']) assert.equal(lstatSync(join(dir, d)).mode & 0o777, 0o755, d);
    assert.equal(lstatSync(path).mode & 0o777, 0o666);
    await s.close(100);
  });

  it('replaces a stale socket file nobody answers on', async () => {
    const path = join(dir, 'stale.sock');
    // A process that dies without cleaning up leaves its socket file behind.
    const child = spawnSync(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    assert.equal(child.signal, 'SIGKILL');
    assert.ok(lstatSync(path).isSocket());
    const s = await start({ listen: unix(path) });
    const c = await Client.connect(s.address);
    assert.equal(await c.ask('m', 'a@example.com'), 'OK found:a@example.com');
    c.socket.destroy();
    await s.close(100);
  });

  it('refuses to start when another server is listening on the path', async () => {
    const path = join(dir, 'busy.sock');
    const first = await start({ listen: unix(path) });
    await assert.rejects(start({ listen: unix(path) }), (err: unknown) => {
      assert.ok(err instanceof ListenError);
      assert.match(err.message, /another process is already listening/);
      return true;
    });
    const c = await Client.connect(first.address);
    assert.equal(await c.ask('m', 'a@example.com'), 'OK found:a@example.com');
    c.socket.destroy();
    await first.close(100);
  });

  it('refuses to replace a file that is not a socket', async () => {
    const path = join(dir, 'regular-file');
    writeFileSync(path, 'keep me');
    await assert.rejects(start({ listen: unix(path) }), /is not a socket/);
    assert.ok(lstatSync(path).isFile());
  });

  it('chowns the socket to the configured user and group when root', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
    const path = join(dir, 'owned.sock');
    const s = await start({ listen: unix(path, 0o600, { user: 'nobody', group: '65534' }) });
    const st = lstatSync(path);
    assert.equal(st.uid, 65534);
    assert.equal(st.gid, 65534);
    assert.equal(st.mode & 0o777, 0o600);
    await s.close(100);
    await assert.rejects(start({ listen: unix(path, 0o660, { user: 'no-such-user-mailwarden' }) }), /unknown user "no-such-user-mailwarden"/);
    assert.equal(existsSync(path), false);
  });
});
