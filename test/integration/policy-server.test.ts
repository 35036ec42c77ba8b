import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ListenAddress } from '../../src/config/listen.ts';
import type { ServiceListen } from '../../src/config/load.ts';
import { createLogger, type Logger } from '../../src/logging/logger.ts';
import type { Listener } from '../../src/net/listener.ts';
import { encodePolicyRequest, PolicyReplyDecoder } from '../../src/policy/codec.ts';
import type { PolicyRequest } from '../../src/policy/request.ts';
import { startPolicyServer, type PolicyServerOptions, type PolicySession } from '../../src/policy/server.ts';

/** A Postfix-like policy client: attribute blocks out, actions in, EOF noticed. */
class PolicyClient {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  #decoder = new PolicyReplyDecoder();
  #replies: string[] = [];
  #waiters: Array<() => void> = [];
  #eof = false;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#replies.push(...this.#decoder.push(chunk));
      this.#wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('end', () => {
      this.#eof = true;
      this.#wake();
    });
  }

  static connect(address: ListenAddress): Promise<PolicyClient> {
    return new Promise((resolve, reject) => {
      const socket = address.kind === 'unix' ? connect(address.path) : connect(address.port, address.host);
      socket.once('connect', () => resolve(new PolicyClient(socket)));
      socket.once('error', reject);
    });
  }

  send(raw: string | Buffer): void {
    this.socket.write(raw);
  }

  request(attrs: Record<string, string | number>): void {
    this.send(encodePolicyRequest(attrs));
  }

  /** The next action, or undefined once the server closed without sending one. */
  async next(): Promise<string | undefined> {
    for (;;) {
      const r = this.#replies.shift();
      if (r !== undefined) return r;
      if (this.#eof) return undefined;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  async ask(attrs: Record<string, string | number>): Promise<string | undefined> {
    this.request(attrs);
    return this.next();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

/** Collects the real logger's JSON lines so tests can assert on what was logged. */
function capturingLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

/** A RCPT request with every attribute Postfix 3.7 sends. */
function rcpt(recipient: string, overrides: Record<string, string | number> = {}): Record<string, string | number> {
  return {
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    protocol_name: 'ESMTP',
    client_address: '198.51.100.7',
    client_name: 'mail.example.net',
    client_port: 40001,
    reverse_client_name: 'mail.example.net',
    server_address: '192.0.2.10',
    server_port: 25,
    helo_name: 'mail.example.net',
    sender: 'alice@example.net',
    recipient,
    recipient_count: 0,
    queue_id: '',
    instance: '1b2f.6650a1c2.3e8f1.0',
    size: 1200,
    etrn_domain: '',
    stress: '',
    sasl_method: '',
    sasl_username: '',
    sasl_sender: '',
    ccert_subject: '',
    ccert_issuer: '',
    ccert_fingerprint: '',
    ccert_pubkey_fingerprint: '',
    encryption_protocol: 'TLSv1.3',
    encryption_cipher: 'TLS_AES_256_GCM_SHA384',
    encryption_keysize: 256,
    policy_context: '',
    ...overrides,
  };
}

const DEFAULT_ACTION = 'DEFER_IF_PERMIT 4.3.0 policy service temporarily unavailable';
const DEADLINE_MS = 150;
let stateCounter = 0;
const lateResults: string[] = [];

/**
 * A fake policy: the recipient's local part chooses the behaviour. Deliberately not async, so it can throw
 * synchronously; `sync...` recipients are answered synchronously, like a decision made from cached inputs.
 */
function decide(req: PolicyRequest, session: PolicySession): string | Promise<string> {
  const what = req.recipient.slice(0, req.recipient.indexOf('@'));
  if (what === 'throw') throw new Error('directory exploded');
  if (what === 'syncinject') return 'REJECT 5.7.1 see TXT\naction=OK';
  if (what === 'syncnothing') return undefined as unknown as string;
  if (what.startsWith('sync')) return `DUNNO ${req.recipient} sync conn=${session.id}`;
  if (what === 'reject') return Promise.reject(new Error('DNS SERVFAIL'));
  if (what === 'hang') return new Promise<never>(() => {});
  if (what === 'inject') return Promise.resolve('REJECT 5.7.1 see TXT\naction=OK');
  if (what === 'slow' || what === 'slowfail') {
    return sleep(DEADLINE_MS * 2).then(() => {
      lateResults.push(what);
      if (what === 'slowfail') throw new Error('late failure');
      return 'REJECT 5.7.1 late';
    });
  }
  if (what === 'state') {
    const state = session.message(req.instance, () => ({ n: ++stateCounter, seen: 0 }));
    state.seen++;
    return Promise.resolve(`DUNNO state=${state.n} seen=${state.seen} conn=${session.id}`);
  }
  const delay = /^delay(\d+)-/.exec(what);
  if (delay) return sleep(Number(delay[1])).then(() => `DUNNO ${req.recipient}`);
  return Promise.resolve(`DUNNO ${req.recipient} conn=${session.id}`);
}

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwarden-policy-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const TRANSPORTS: Array<[string, () => ServiceListen]> = [
  ['inet:127.0.0.1:0', () => ({ listen: { kind: 'inet', host: '127.0.0.1', port: 0 }, unix: { mode: 0o660 } })],
  ['unix socket', () => ({ listen: { kind: 'unix', path: join(dir, `policy-${Math.random().toString(36).slice(2)}.sock`) }, unix: { mode: 0o660 } })],
];

for (const [transport, where] of TRANSPORTS) {
  describe(`policy server on ${transport}`, () => {
    function start(overrides: Partial<PolicyServerOptions> = {}): Promise<Listener> {
      return startPolicyServer({
        listen: where(),
        decide,
        log: createLogger('silent'),
        defaultAction: DEFAULT_ACTION,
        deadlineMs: DEADLINE_MS,
        ...overrides,
      });
    }

    let server: Listener;
    before(async () => {
      server = await start();
    });
    after(() => server.close(100));

    it('answers 100 requests in order on one persistent connection', async () => {
      const c = await PolicyClient.connect(server.address);
      let conn = '';
      for (let i = 0; i < 100; i++) {
        const reply = await c.ask(rcpt(`user${i}@example.org`));
        const m = /^DUNNO user(\d+)@example\.org conn=(\d+)$/.exec(reply ?? '');
        assert.ok(m, `reply ${i}: ${reply}`);
        assert.equal(Number(m[1]), i);
        conn ||= m[2]!;
        assert.equal(m[2], conn, 'same connection throughout');
      }
      assert.equal(server.connections, 1);
      c.socket.end();
      await c.closed;
    });

    it('answers the default action past the deadline, drops the late result, and keeps the connection', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log });
      const c = await PolicyClient.connect(s.address);
      const before = lateResults.length;
      const started = Date.now();
      assert.equal(await c.ask(rcpt('slow@example.org', { instance: 'abc.1' })), DEFAULT_ACTION);
      const waited = Date.now() - started;
      assert.ok(waited >= DEADLINE_MS - 5 && waited < DEADLINE_MS * 2, `answered after ${waited} ms`);
      // The next request gets its own answer, not the late one.
      assert.match((await c.ask(rcpt('a@example.org'))) ?? '', /^DUNNO a@example\.org conn=/);
      assert.equal(await c.ask(rcpt('slowfail@example.org')), DEFAULT_ACTION);
      await sleep(DEADLINE_MS * 3);
      assert.equal(lateResults.length, before + 2, 'both late decisions did finish');
      assert.match((await c.ask(rcpt('c@example.org'))) ?? '', /^DUNNO c@example\.org/);
      const errors = lines.filter((l) => l['level'] === 'error');
      assert.equal(errors.length, 2);
      assert.deepEqual(
        { ...errors[0], time: undefined, pid: undefined, conn: undefined, peer: undefined },
        {
          level: 'error',
          time: undefined,
          pid: undefined,
          conn: undefined,
          peer: undefined,
          client_address: '198.51.100.7',
          protocol_state: 'RCPT',
          sender: 'alice@example.net',
          recipient: 'slow@example.org',
          instance: 'abc.1',
          deadlineMs: DEADLINE_MS,
          action: DEFAULT_ACTION,
          msg: 'policy decision timed out; answering the default action',
        },
      );
      assert.equal(lines.filter((l) => l['msg'] === 'late policy decision dropped').length, 2);
      assert.ok(lines.every((l) => l['level'] !== 'warn'));
      c.socket.destroy();
      await s.close(100);
    });

    it('answers the default action when decide throws, rejects or returns an unframeable action', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log });
      const c = await PolicyClient.connect(s.address);
      assert.equal(await c.ask(rcpt('throw@example.org')), DEFAULT_ACTION);
      assert.equal(await c.ask(rcpt('reject@example.org')), DEFAULT_ACTION);
      assert.equal(await c.ask(rcpt('inject@example.org')), DEFAULT_ACTION);
      assert.match((await c.ask(rcpt('fine@example.org'))) ?? '', /^DUNNO fine@example\.org/);
      const errors = lines.filter((l) => l['level'] === 'error');
      assert.deepEqual(errors.map((e) => e['recipient']), ['throw@example.org', 'reject@example.org', 'inject@example.org']);
      assert.deepEqual(errors.map((e) => (e['err'] as { message: string }).message.slice(0, 22)), ['directory exploded', 'DNS SERVFAIL', 'policy action contains']);
      for (const e of errors) {
        assert.equal(e['client_address'], '198.51.100.7');
        assert.equal(e['sender'], 'alice@example.net');
        assert.equal(e['instance'], '1b2f.6650a1c2.3e8f1.0');
      }
      c.socket.destroy();
      await s.close(100);
    });

    it('closes without a reply on an oversized line, logs one warning, and keeps serving other connections', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log, limits: { maxLineBytes: 1000 } });
      const good = await PolicyClient.connect(s.address);
      const bad = await PolicyClient.connect(s.address);
      assert.match((await good.ask(rcpt('a@example.org'))) ?? '', /^DUNNO a@/);
      bad.send(encodePolicyRequest(rcpt('b@example.org')));
      assert.match((await bad.next()) ?? '', /^DUNNO b@/);
      bad.send(`request=smtpd_access_policy\nhelo_name=${'x'.repeat(2000)}`);
      assert.equal(await bad.next(), undefined, 'no reply, just EOF');
      await bad.closed;
      assert.match((await good.ask(rcpt('c@example.org'))) ?? '', /^DUNNO c@/);
      const warns = lines.filter((l) => l['level'] === 'warn');
      assert.equal(warns.length, 1);
      assert.equal(warns[0]?.['code'], 'line_too_long');
      assert.equal(warns[0]?.['bytes'], 'request=smtpd_access_policy\n'.length + 'helo_name='.length + 2000);
      if (transport.startsWith('inet')) assert.match(String(warns[0]?.['peer']), /^127\.0\.0\.1:\d+$/);
      else assert.equal(warns[0]?.['peer'], 'unix');
      good.socket.destroy();
      await s.close(100);
    });

    it('answers the requests before a malformed one in the same packet, then closes without replying to it', async () => {
      const c = await PolicyClient.connect(server.address);
      c.send(Buffer.concat([encodePolicyRequest(rcpt('first@example.org')), Buffer.from('request=smtpd_access_policy\nno equals sign\n\n'), encodePolicyRequest(rcpt('never@example.org'))]));
      assert.match((await c.next()) ?? '', /^DUNNO first@/);
      assert.equal(await c.next(), undefined);
      await c.closed;
    });

    it('answers DUNNO to a request that is not smtpd_access_policy, warning once per connection', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log });
      const c = await PolicyClient.connect(s.address);
      assert.equal(await c.ask(rcpt('reject@example.org', { request: 'junk_policy' })), 'DUNNO');
      assert.equal(await c.ask({ client_address: '192.0.2.1' }), 'DUNNO');
      assert.equal(await c.ask({}), 'DUNNO'); // an empty request gets its reply too
      assert.match((await c.ask(rcpt('ok@example.org'))) ?? '', /^DUNNO ok@/);
      const warns = lines.filter((l) => l['level'] === 'warn');
      assert.equal(warns.length, 1);
      assert.equal(warns[0]?.['request'], 'junk_policy');
      assert.equal(lines.filter((l) => l['level'] === 'error').length, 0, 'decide was not called for junk_policy');
      c.socket.destroy();
      await s.close(100);
    });

    it('keeps per-message state per instance and per connection', async () => {
      const a = await PolicyClient.connect(server.address);
      const b = await PolicyClient.connect(server.address);
      const ask = async (c: PolicyClient, instance: string, extra: Record<string, string | number> = {}) => {
        const m = /^DUNNO state=(\d+) seen=(\d+) conn=(\d+)$/.exec((await c.ask(rcpt('state@example.org', { instance, ...extra }))) ?? '');
        assert.ok(m);
        return { n: Number(m[1]), seen: Number(m[2]), conn: Number(m[3]) };
      };
      // CONNECT/HELO time ('' instance) has its own slot, next to the message's.
      const helo = await ask(a, '');
      const m1 = await ask(a, 'i.1');
      assert.notEqual(m1.n, helo.n);
      assert.deepEqual(await ask(a, 'i.1'), { ...m1, seen: 2 });
      assert.deepEqual(await ask(a, ''), { ...helo, seen: 2 });
      assert.deepEqual(await ask(a, 'i.1'), { ...m1, seen: 3 });
      // Another connection with the same instance text shares nothing.
      const other = await ask(b, 'i.1');
      assert.notEqual(other.n, m1.n);
      assert.notEqual(other.conn, m1.conn);
      // The next message drops the previous one's state: coming back to it starts fresh.
      const m2 = await ask(a, 'i.2');
      assert.notEqual(m2.n, m1.n);
      assert.equal(m2.seen, 1);
      const m1again = await ask(a, 'i.1');
      assert.ok(m1again.n !== m1.n && m1again.seen === 1);
      // The smtpd process moved on to another SMTP client: the '' slot starts fresh as well.
      assert.deepEqual(await ask(a, ''), { ...helo, seen: 3 });
      const nextClient = await ask(a, '', { client_address: '203.0.113.9', client_port: 50000 });
      assert.notEqual(nextClient.n, helo.n);
      assert.equal(nextClient.seen, 1);
      a.socket.destroy();
      b.socket.destroy();
    });

    it('answers pipelined requests in order, also past its read-ahead limit in tiny chunks', async () => {
      const c = await PolicyClient.connect(server.address);
      // Earlier requests take longer, so a concurrent implementation would reorder them.
      const slow = Array.from({ length: 10 }, (_, i) => `delay${(10 - i) * 3}-${i}@example.org`);
      c.send(Buffer.concat(slow.map((r) => encodePolicyRequest(rcpt(r)))));
      for (const r of slow) assert.equal(await c.next(), `DUNNO ${r}`);
      const many = Array.from({ length: 300 }, (_, i) => `burst${i}@example.org`);
      const stream = Buffer.concat(many.map((r) => encodePolicyRequest(rcpt(r))));
      for (let i = 0; i < stream.length; i += 7) c.send(stream.subarray(i, i + 7));
      for (const r of many) assert.match((await c.next()) ?? '', new RegExp(`^DUNNO ${r} conn=`));
      assert.match((await c.ask(rcpt('last@example.org'))) ?? '', /^DUNNO last@/);
      c.socket.destroy();
    });

    it('answers synchronous and asynchronous decisions in request order, pipelined or not', async () => {
      const c = await PolicyClient.connect(server.address);
      const mixed = ['sync1', 'delay40-a', 'sync2', 'sync3', 'delay5-b', 'delay20-c', 'sync4', 'a', 'sync5'].map((l) => `${l}@example.org`);
      c.send(Buffer.concat(mixed.map((r) => encodePolicyRequest(rcpt(r)))));
      for (const r of mixed) assert.match((await c.next()) ?? '', new RegExp(`^DUNNO ${r}( |$)`));
      for (const r of mixed) assert.match((await c.ask(rcpt(r))) ?? '', new RegExp(`^DUNNO ${r}( |$)`));
      // Many synchronous answers from one packet, sent back before the next packet is read.
      const many = Array.from({ length: 200 }, (_, i) => `sync-${i}@example.org`);
      c.send(Buffer.concat(many.map((r) => encodePolicyRequest(rcpt(r)))));
      for (const r of many) assert.match((await c.next()) ?? '', new RegExp(`^DUNNO ${r} sync conn=`));
      c.socket.destroy();
    });

    it('answers the default action for a synchronous decision that cannot be framed or is not a string', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log });
      const c = await PolicyClient.connect(s.address);
      assert.equal(await c.ask(rcpt('syncinject@example.org')), DEFAULT_ACTION);
      assert.equal(await c.ask(rcpt('syncnothing@example.org')), DEFAULT_ACTION);
      assert.match((await c.ask(rcpt('sync-ok@example.org'))) ?? '', /^DUNNO sync-ok@example\.org sync/);
      const errors = lines.filter((l) => l['level'] === 'error');
      assert.deepEqual(errors.map((e) => e['recipient']), ['syncinject@example.org', 'syncnothing@example.org']);
      assert.ok(errors.every((e) => e['msg'] === 'policy decision is not a valid action; answering the default action'));
      c.socket.destroy();
      await s.close(100);
    });

    it('survives peers that vanish mid-request or before their answer', async () => {
      const a = await PolicyClient.connect(server.address);
      a.send('request=smtpd_access_policy\nsend');
      a.socket.destroy();
      const b = await PolicyClient.connect(server.address);
      b.request(rcpt('delay50-gone@example.org'));
      b.socket.destroy();
      const c = await PolicyClient.connect(server.address);
      c.request(rcpt('delay50-halfclosed@example.org'));
      c.socket.end();
      await sleep(100);
      const d = await PolicyClient.connect(server.address);
      assert.match((await d.ask(rcpt('still@example.org'))) ?? '', /^DUNNO still@/);
      d.socket.destroy();
    });

    it('closes idle connections quietly, but not while a decision is running', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log, idleTimeoutMs: 100, deadlineMs: 1_000 });
      const c = await PolicyClient.connect(s.address);
      assert.equal(await c.ask(rcpt('delay250-busy@example.org')), 'DUNNO delay250-busy@example.org');
      const idleSince = Date.now();
      assert.equal(await c.next(), undefined);
      await c.closed;
      assert.ok(Date.now() - idleSince >= 90);
      assert.ok(lines.every((l) => l['level'] === 'debug' || l['level'] === 'info'));
      await s.close(100);
    });

    it('logs nothing per request above debug', async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log });
      const c = await PolicyClient.connect(s.address);
      for (let i = 0; i < 5; i++) assert.match((await c.ask(rcpt(`u${i}@example.org`))) ?? '', /^DUNNO/);
      c.socket.end();
      await c.closed;
      await s.close(100);
      assert.deepEqual(lines.filter((l) => l['level'] !== 'info').map((l) => `${l['level']} ${l['msg']}`), ['debug connection opened', 'debug connection closed']);
    });

    it('finishes the in-flight decision on close, replies, then closes every connection', async () => {
      const s = await start({ deadlineMs: 5_000 });
      const busy = await PolicyClient.connect(s.address);
      const idle = await PolicyClient.connect(s.address);
      assert.match((await idle.ask(rcpt('a@example.org'))) ?? '', /^DUNNO a@/);
      // Pipelined: the second waits in the queue while the first is decided.
      busy.send(Buffer.concat([encodePolicyRequest(rcpt('delay150-inflight@example.org')), encodePolicyRequest(rcpt('queued@example.org'))]));
      await sleep(30);
      const closing = s.close(5_000);
      // Neither the queued request nor one sent after close began is answered: Postfix retries after EOF.
      busy.request(rcpt('too-late@example.org'));
      assert.equal(await busy.next(), 'DUNNO delay150-inflight@example.org');
      assert.equal(await busy.next(), undefined);
      assert.equal(await idle.next(), undefined);
      await Promise.all([busy.closed, idle.closed, closing]);
      assert.equal(s.connections, 0);
      await assert.rejects(PolicyClient.connect(s.address));
    });

    it('drops a connection whose decision outlives the grace period', async () => {
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      const s = await start({ deadlineMs: 60_000 });
      const c = await PolicyClient.connect(s.address);
      const timersBefore = timers();
      c.request(rcpt('hang@example.org'));
      await sleep(20);
      assert.ok(timers() > timersBefore, 'the deadline timer runs');
      const started = Date.now();
      await s.close(100);
      await c.closed;
      assert.ok(Date.now() - started < 1_000);
      assert.equal(await c.next(), undefined);
      await sleep(10);
      assert.ok(timers() <= timersBefore, 'a dropped connection leaves no deadline timer behind');
    });
  });
}

describe('policy server options', () => {
  const listen = (): ServiceListen => ({ listen: { kind: 'inet', host: '127.0.0.1', port: 0 }, unix: { mode: 0o660 } });
  const base = { listen: listen(), decide, log: createLogger('silent'), deadlineMs: 100 };

  it('refuses a default action that cannot be framed, and a bad deadline or limit, before listening', async () => {
    await assert.rejects(startPolicyServer({ ...base, defaultAction: '' }), RangeError);
    await assert.rejects(startPolicyServer({ ...base, defaultAction: 'DEFER\naction=OK' }), RangeError);
    await assert.rejects(startPolicyServer({ ...base, defaultAction: 'DUNNO', deadlineMs: 0 }), RangeError);
    await assert.rejects(startPolicyServer({ ...base, defaultAction: 'DUNNO', limits: { maxRequestBytes: -1 } }), RangeError);
  });
});
