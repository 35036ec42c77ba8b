// The milter's auth worker threads (milter.workers, src/milter/worker-pool.ts):
// verification, signing and ARC sealing in worker threads, against the test
// DNS server, with real sockets where the protocol matters.
// - DNS questions from a worker are answered by the main thread's resolver:
//   answers, void answers (NXDOMAIN/NODATA) and temporary failures (SERVFAIL,
//   timeout) give exactly the verdict verifyMessage() gives in the main thread.
// - ARC sealing material stays in the worker until the session is done with
//   the message: sealed, not sealed, rejected, aborted, connection gone.
// - A worker that dies (terminate, uncaught exception, process.exit) fails only
//   its own message (on_error), mid-body too, is replaced, and the next message
//   is verified.
// - A large message is posted with bounded buffering (backpressure).
// - Idle workers do not keep a process alive.
// - `mailwarden serve`: milter.workers starts that many threads, a reload that
//   changes it resizes the pool, 0 runs in the main thread, shutdown stops them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { dkimSign, dkimVerify } from 'mailauth';
import { encodeCommand, MilterDecoder, MilterReplyDecoder, type MilterCommandInput, type MilterReply } from '../../src/milter/codec.ts';
import { MILTER_CHUNK_SIZE, POSTFIX_OPTNEG } from '../../src/milter/constants.ts';
import { startMilterServer } from '../../src/milter/server.ts';
import { MilterSession, type MessageReport, type MilterRuntime, type SigningKey } from '../../src/milter/session.ts';
import { autoWorkers, type MilterConfig } from '../../src/milter/config.ts';
import { AuthWorkerPool } from '../../src/milter/worker-pool.ts';
import { verifyMessage, type MessageAuthInput, type MessageAuthVerdict } from '../../src/checks/message-auth.ts';
import { createResolver, forMailauth, type DnsResolver } from '../../src/dns/resolver.ts';
import { dnsRecordName, dnsRecordStrings, publicKeyBase64 } from '../../src/dkim/keys.ts';
import type { Listener } from '../../src/net/listener.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { startDaemon } from '../support/daemon.ts';
import { freePort } from '../support/ports.ts';
import { tempDir } from '../support/tmp.ts';

const AUTHSERV = 'mx.mailwarden.test';
const silent = pino({ level: 'silent' });

const config = (over: Partial<MilterConfig> = {}): MilterConfig => ({
  listen: { kind: 'inet', host: '127.0.0.1', port: 0 },
  unix: { mode: 0o660 },
  authservId: AUTHSERV,
  timeoutMs: 20_000,
  maxMessageSize: 64 * 1024 * 1024,
  onError: 'tempfail',
  workers: 2,
  dmarc: { reject: 'reject', quarantine: 'header', trustedArcSealers: [], exemptDomains: [], exemptNetworks: [] },
  signing: { daemonNames: ['ORIGINATING'], signAuthenticated: true, localSubmissions: true },
  arc: { seal: false },
  ...over,
});

const ed = generateKeyPairSync('ed25519');
const edPem = ed.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const sealKey: SigningKey = { domain: 'example.org', selector: 'arc', algorithm: 'rsa-sha256', privateKeyPem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };

/** Domains whose key and DMARC lookups answer, are void, fail, or time out. */
const DOMAINS = ['remote.test', 'nokey.test', 'servfail.test', 'timeout.test'] as const;

async function signed(domain: string, body = 'Hello\r\n', from = `a@${domain}`): Promise<Buffer> {
  const raw = Buffer.from(`From: ${from}\r\nTo: b@example.org\r\nSubject: test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${Math.random()}@x>\r\n\r\n${body}`);
  const opts = { signatureData: [{ signingDomain: domain, selector: 'k', privateKey: edPem, algorithm: 'ed25519-sha256' }] } as unknown as Parameters<typeof dkimSign>[1];
  const { signatures } = await dkimSign(raw, opts);
  return Buffer.concat([Buffer.from(signatures), raw]);
}

/** The packets Postfix sends for one message. */
function packets(message: Buffer): MilterCommandInput[] {
  const end = message.indexOf('\r\n\r\n');
  const cmds: MilterCommandInput[] = [];
  for (const field of message.subarray(0, end).toString('latin1').split(/\r\n(?![ \t])/)) {
    const c = field.indexOf(':');
    cmds.push({ type: 'header', name: field.slice(0, c), value: Buffer.from(field.slice(c + 1).replace(/\r\n/g, '\n'), 'latin1') });
  }
  cmds.push({ type: 'eoh' });
  const body = message.subarray(end + 4);
  for (let at = 0; at < body.length; at += MILTER_CHUNK_SIZE) cmds.push({ type: 'body', chunk: body.subarray(at, at + MILTER_CHUNK_SIZE) });
  cmds.push({ type: 'bodyEob' });
  return cmds;
}

const prologue = (sender: string, rcpts: string[] = []): MilterCommandInput[] => [
  { type: 'optneg', ...POSTFIX_OPTNEG },
  { type: 'connect', hostname: 'mail.remote.test', family: '4', port: 40001, address: '192.0.2.55' },
  { type: 'helo', name: 'mail.remote.test' },
  { type: 'macro', forCommand: 'M', macros: new Map([['i', sender]]) },
  { type: 'mail', args: [`<${sender}>`] },
  ...rcpts.map((r): MilterCommandInput => ({ type: 'rcpt', args: [`<${r}>`] })),
];

/** Drives a session in process, the way the server does; returns the decoded replies. */
async function drive(session: MilterSession, cmds: MilterCommandInput[]): Promise<MilterReply[]> {
  const decoder = new MilterDecoder();
  const replies = new MilterReplyDecoder();
  const { encodeReply } = await import('../../src/milter/codec.ts');
  const out: MilterReply[] = [];
  for (const c of cmds) for (const cmd of decoder.push(encodeCommand(c))) for (const r of await session.handle(cmd)) out.push(...replies.push(encodeReply(r)));
  return out;
}

const withoutTime = (v: MessageAuthVerdict) => ({ ...v, elapsedMs: 0 });

/** Waits until every worker holds nothing for any message. */
async function settled(pool: AuthWorkerPool): Promise<Array<{ running: number; sealable: number } | undefined>> {
  let last: Array<{ running: number; sealable: number } | undefined> = [];
  for (let i = 0; i < 100; i++) {
    last = (await pool.state()).map((s) => s && { running: s.running, sealable: s.sealable });
    if (last.every((s) => s && s.running === 0 && s.sealable === 0)) return last;
    await sleep(20);
  }
  return last;
}

describe('milter auth worker threads', () => {
  let dns: TestDnsServer;
  let resolver: DnsResolver;
  let pool: AuthWorkerPool;
  /** Every question the main thread's resolver was asked. */
  const asked: string[] = [];

  before(async () => {
    const key = (domain: string) => ({ TXT: [dnsRecordStrings({ domain, selector: 'k', algorithm: 'ed25519-sha256', publicKeyBase64: publicKeyBase64(ed.privateKey) })] });
    dns = await startDnsServer({
      'k._domainkey.remote.test': key('remote.test'),
      '_dmarc.remote.test': { TXT: ['v=DMARC1; p=reject'] },
      'k._domainkey.servfail.test': { SERVFAIL: true },
      '_dmarc.servfail.test': { SERVFAIL: true },
      'k._domainkey.timeout.test': { TIMEOUT: true },
      '_dmarc.timeout.test': { TIMEOUT: true },
      'k._domainkey.forged.test': key('forged.test'),
      '_dmarc.forged.test': { TXT: ['v=DMARC1; p=reject'] },
      'remote.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
      [dnsRecordName(sealKey)]: { TXT: [dnsRecordStrings({ ...sealKey, publicKeyBase64: publicKeyBase64(rsa.privateKey) })] },
    });
    const upstream = createResolver({ servers: [dns.address], timeoutMs: 300 });
    resolver = (name, rrtype) => {
      asked.push(`${rrtype} ${name}`);
      return upstream(name, rrtype);
    };
    pool = new AuthWorkerPool({ size: 2, log: silent });
  });

  after(async () => {
    await pool?.close();
    await dns?.stop();
  });

  it('answers the workers\' DNS from the main thread: answers, void answers and temporary failures give the in-thread verdict', async () => {
    const input: MessageAuthInput = { clientIp: '192.0.2.55', helo: 'mail.remote.test', sender: 'a@remote.test', authservId: AUTHSERV };
    const results: Record<string, { dkim: string; dmarc: string | undefined }> = {};
    for (const domain of DOMAINS) {
      const message = await signed(domain);
      const here = await verifyMessage(message, { ...input, sender: `a@${domain}` }, resolver);
      asked.length = 0;
      // Once as a Buffer, once streamed in pieces as the session does.
      const viaBuffer = await pool.verify(message, { ...input, sender: `a@${domain}` }, resolver);
      const stream = new PassThrough();
      const viaStream = pool.verify(stream, { ...input, sender: `a@${domain}` }, resolver);
      for (let at = 0; at < message.length; at += 7) stream.write(message.subarray(at, at + 7));
      stream.end();
      assert.deepEqual(withoutTime(viaBuffer), withoutTime(here), domain);
      assert.deepEqual(withoutTime(await viaStream), withoutTime(here), domain);
      // The key lookups went through this thread's resolver (the worker has none of its own).
      assert.ok(asked.some((q) => q.startsWith(`TXT _dmarc.${domain}`)), `${domain}: ${asked.join(', ')}`);
      results[domain] = { dkim: here.dkim[0]!.result, dmarc: here.dmarc?.result };
    }
    // Not vacuous: the four cases differ the way void and temporary failures must.
    assert.deepEqual(results, {
      'remote.test': { dkim: 'pass', dmarc: 'pass' },
      'nokey.test': { dkim: 'neutral', dmarc: 'none' },
      'servfail.test': { dkim: 'temperror', dmarc: 'temperror' },
      'timeout.test': { dkim: 'temperror', dmarc: 'temperror' },
    });
  });

  it('signs in a worker: signatures mailauth verifies, and a key it cannot use reported per key', async () => {
    const raw = Buffer.from('From: a@ours.test\r\nTo: b@example.net\r\nSubject: out\r\n\r\nHi\r\n');
    const good: SigningKey = { domain: 'ours.test', selector: 'k', algorithm: 'ed25519-sha256', privateKeyPem: edPem };
    const bad: SigningKey = { domain: 'ours.test', selector: 'broken', algorithm: 'rsa-sha256', privateKeyPem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' };
    const outcome = await pool.sign(raw, [good, bad]);
    assert.match(outcome.signatures, /^DKIM-Signature: .*s=k;/s);
    // The imported key is kept in the worker: the next signatures with it reuse it (the broken one is not kept).
    const kept = async () => (await pool.state()).reduce((n, s) => ({ keys: n.keys + (s?.privateKeys.keys ?? 0), hits: n.hits + (s?.privateKeys.hits ?? 0) }), { keys: 0, hits: 0 });
    const before = await kept();
    let again = outcome;
    for (let i = 0; i < 4; i++) again = await pool.sign(raw, [good]);
    const after = await kept();
    assert.ok(after.keys >= 1 && after.keys <= 2, JSON.stringify(after));
    assert.ok(after.hits - before.hits >= 2, `${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    const errors = outcome.errors as Array<{ selector: string; signingDomain: string; err: { message: string } }>;
    assert.deepEqual(errors.map((e) => [e.selector, e.signingDomain, typeof e.err.message]), [['broken', 'ours.test', 'string']]);
    const keyResolver = async (name: string, type: string) => {
      if (name === 'k._domainkey.ours.test' && type === 'TXT') return [[`v=DKIM1; k=ed25519; p=${publicKeyBase64(ed.privateKey)}`]];
      throw Object.assign(new Error('nx'), { code: 'ENOTFOUND' });
    };
    for (const o of [outcome, again]) {
      const v = await dkimVerify(Buffer.concat([Buffer.from(o.signatures), raw]), { resolver: keyResolver } as never);
      assert.equal((v.results[0] as { status: { result: string } }).status.result, 'pass');
    }
  });

  it('keeps ARC sealing material in the worker only until the session is done: sealed, not sealed, rejected, aborted, connection gone', async () => {
    const statesDuringSeal: Array<number | undefined> = [];
    const forwardingDelayMs = { value: 0 };
    /** prepareArcSeal of each verification: whether the worker was to keep material. */
    const prepared: boolean[] = [];
    const held = async () => (await pool.state()).reduce((n, s) => ({ running: n.running + (s?.running ?? 0), sealable: n.sealable + (s?.sealable ?? 0) }), { running: 0, sealable: 0 });
    const runtime: MilterRuntime = {
      config: config({ arc: { seal: true, domain: 'example.org' }, onError: 'accept' }),
      resolver,
      signingKeys: () => [],
      forwarding: async (recipient) => {
        if (forwardingDelayMs.value) await sleep(forwardingDelayMs.value);
        return { recipient, foreign: recipient.startsWith('fwd') ? ['friend@elsewhere.test'] : [], local: 1, truncated: false };
      },
      arcSealingKey: () => sealKey,
      ...pool.hooks(),
      verify: (message, input, res, opts) => {
        prepared.push(opts?.prepareArcSeal === true);
        return pool.verify(message, input, res, opts);
      },
      seal: async (verdict, key) => {
        statesDuringSeal.push((await pool.state()).reduce((n, s) => n + (s?.sealable ?? 0), 0));
        return pool.seal(verdict, key);
      },
    };
    const session = () => new MilterSession({ runtime: () => runtime, log: silent });

    // Sealed: the material was there for the seal, and is gone after it.
    const replies = await drive(session(), [...prologue('a@remote.test', ['fwd@example.org']), ...packets(await signed('remote.test'))]);
    const names = replies.flatMap((r) => (r.type === 'insHeader' ? [r.name] : []));
    assert.deepEqual(names, ['Authentication-Results', 'ARC-Authentication-Results', 'ARC-Message-Signature', 'ARC-Seal']);
    assert.deepEqual(statesDuringSeal, [1]);
    assert.deepEqual(await settled(pool), [{ running: 0, sealable: 0 }, { running: 0, sealable: 0 }]);
    assert.deepEqual(prepared.splice(0), [true]);

    // Not sealed: the recipient's expansion was not known at end of header (material kept), then stays local.
    forwardingDelayMs.value = 200;
    const local = await drive(session(), [...prologue('a@remote.test', ['local@example.org']), ...packets(await signed('remote.test'))]);
    assert.ok(!local.some((r) => r.type === 'insHeader' && r.name === 'ARC-Seal'));
    assert.deepEqual(await settled(pool), [{ running: 0, sealable: 0 }, { running: 0, sealable: 0 }]);
    assert.deepEqual(prepared.splice(0), [true]);
    forwardingDelayMs.value = 0;

    // Rejected (DMARC p=reject failure): never sealed, material released.
    const forged = await signed('nokey.test', 'x\r\n', 'a@forged.test');
    const rejected = await drive(session(), [...prologue('a@remote.test', ['fwd@example.org']), ...packets(forged)]);
    assert.equal(rejected.at(-1)?.type, 'replyCode');
    assert.deepEqual(await settled(pool), [{ running: 0, sealable: 0 }, { running: 0, sealable: 0 }]);
    assert.deepEqual(prepared.splice(0), [true]);

    // Aborted in the body: the worker stops the verification.
    const big = await signed('remote.test', 'line\r\n'.repeat(100_000));
    const s1 = session();
    await drive(s1, [...prologue('a@remote.test', ['fwd@example.org']), ...packets(big).slice(0, -2)]);
    assert.equal((await held()).running, 1);
    await drive(s1, [{ type: 'abort' }]);
    assert.deepEqual(await settled(pool), [{ running: 0, sealable: 0 }, { running: 0, sealable: 0 }]);
    assert.deepEqual(prepared.splice(0), [true]);

    // Connection gone while the end of message waits (a slow forwarding check holds it after the verdict).
    forwardingDelayMs.value = 300;
    const s2 = session();
    const cmds = [...prologue('a@remote.test', ['fwd@example.org']), ...packets(await signed('remote.test'))];
    const eom = drive(s2, cmds);
    await sleep(150);
    assert.deepEqual(await held(), { running: 0, sealable: 1 });
    s2.close();
    await eom;
    forwardingDelayMs.value = 0;
    assert.deepEqual(await settled(pool), [{ running: 0, sealable: 0 }, { running: 0, sealable: 0 }]);
    assert.deepEqual(prepared.splice(0), [true]);
  });

  it('posts a large message with bounded buffering: the writer waits, at most a window is in flight, the verdict is right', async () => {
    const line = 'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvwxyz\r\n';
    const message = await signed('remote.test', line.repeat(Math.ceil(24_000_000 / line.length)));
    const stream = new PassThrough({ highWaterMark: 256 * 1024 });
    const verdict = pool.verify(stream, { clientIp: '192.0.2.55', helo: 'x', sender: 'a@remote.test', authservId: AUTHSERV }, resolver);
    let waits = 0;
    let maxInFlight = 0;
    for (let at = 0; at < message.length; at += MILTER_CHUNK_SIZE) {
      if (!stream.write(message.subarray(at, at + MILTER_CHUNK_SIZE))) {
        waits++;
        await new Promise((resolve) => stream.once('drain', resolve));
      }
      maxInFlight = Math.max(maxInFlight, pool.unackedBytes);
    }
    stream.end();
    const v = await verdict;
    assert.equal(v.dkim[0]?.result, 'pass');
    assert.ok(waits > 10, `the writer never waited (${waits}): no backpressure`);
    // The window (512 KiB) plus one read of the session's stream (its 256 KiB buffer and a chunk).
    assert.ok(maxInFlight <= 512 * 1024 + 256 * 1024 + MILTER_CHUNK_SIZE, `${maxInFlight} bytes in flight`);
    assert.ok(maxInFlight > 0);
  });

  it('idle workers do not keep a process alive', async () => {
    const script = `
      import { AuthWorkerPool } from ${JSON.stringify(new URL('../../src/milter/worker-pool.ts', import.meta.url).href)};
      import { pino } from 'pino';
      const pool = new AuthWorkerPool({ size: 2, log: pino({ level: 'silent' }) });
      const raw = Buffer.from('From: a@ours.test\\r\\nSubject: x\\r\\n\\r\\nHi\\r\\n');
      const { generateKeyPairSync } = await import('node:crypto');
      const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      const out = await pool.sign(raw, [{ domain: 'ours.test', selector: 'k', algorithm: 'ed25519-sha256', privateKeyPem: pem }]);
      console.log(out.signatures.startsWith('DKIM-Signature:') ? 'signed' : 'not signed');
    `;
    const started = Date.now();
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: new URL('../..', import.meta.url).pathname, timeout: 20_000 });
    assert.equal(stdout.trim(), 'signed');
    assert.ok(Date.now() - started < 15_000);
  });
});

describe('milter auth worker threads: a worker dies', () => {
  let dns: TestDnsServer;
  let pool: AuthWorkerPool;
  let server: Listener;
  let port: number;
  const reports: MessageReport[] = [];

  before(async () => {
    dns = await startDnsServer({
      'k._domainkey.remote.test': { TXT: [dnsRecordStrings({ domain: 'remote.test', selector: 'k', algorithm: 'ed25519-sha256', publicKeyBase64: publicKeyBase64(ed.privateKey) })] },
    });
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 2000 });
    pool = new AuthWorkerPool({ size: 2, log: silent });
    const runtime: MilterRuntime = { config: config(), resolver, signingKeys: () => [], ...pool.hooks() };
    server = await startMilterServer({ listen: { listen: config().listen, unix: config().unix }, log: silent, runtime: () => runtime, onMessage: (r) => reports.push(r) });
    port = (server.address as { port: number }).port;
  });

  after(async () => {
    await server?.close(1000);
    await pool?.close();
    await dns?.stop();
  });

  interface Conn { replies: MilterReply[]; write(b: Buffer): void; until(pred: (r: MilterReply[]) => boolean, ms?: number): Promise<void>; end(): void }
  async function connect(): Promise<Conn> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const decoder = new MilterReplyDecoder();
    const replies: MilterReply[] = [];
    socket.on('data', (c: Buffer) => replies.push(...decoder.push(c)));
    socket.on('error', () => undefined);
    return {
      replies,
      write: (b) => socket.write(b),
      async until(pred, ms = 15_000) {
        const deadline = Date.now() + ms;
        while (!pred(replies)) {
          if (Date.now() > deadline) throw new Error(`timed out; replies ${JSON.stringify(replies.map((r) => r.type))}`);
          await sleep(10);
        }
      },
      end: () => socket.end(),
    };
  }
  const final = (r: MilterReply[]) => r.some((x) => x.type === 'continue' || x.type === 'tempfail');

  for (const how of ['terminate', 'throw', 'exit'] as const) {
    it(`${how}: only the messages that worker had answer on_error (tempfail), mid-body too; a new worker verifies the next one`, async () => {
      const before = pool.threadIds;
      assert.equal(before.length, 2);
      // Two messages in flight, one per worker (the pool gives a new message to the idlest worker).
      const body = 'x'.repeat(70) + '\r\n';
      const messages = [await signed('remote.test', body.repeat(60_000)), await signed('remote.test', body.repeat(60_000))];
      const conns = [await connect(), await connect()];
      const cmds = messages.map((m, i) => [...prologue(`${how}${i}@remote.test`), ...packets(m)].map(encodeCommand));
      // Everything but the last 20 body chunks and EOM.
      for (const [i, c] of conns.entries()) c.write(Buffer.concat(cmds[i]!.slice(0, -21)));
      for (let i = 0; i < 500 && !pool.busyPerWorker.every((n) => n > 0); i++) await sleep(20);
      assert.deepEqual(pool.busyPerWorker, [1, 1], 'one message in flight per worker');
      pool.crashWorkerForTest(0, how);
      await sleep(100);
      for (const [i, c] of conns.entries()) c.write(Buffer.concat(cmds[i]!.slice(-21)));
      await Promise.all(conns.map((c) => c.until(final, 20_000)));
      const outcomes = conns.map((c) => (c.replies.some((r) => r.type === 'tempfail') ? 'tempfail' : c.replies.some((r) => r.type === 'insHeader' && /dkim=pass/.test(r.value.toString())) ? 'verified' : 'other')).sort();
      assert.deepEqual(outcomes, ['tempfail', 'verified']);
      const failed = reports.find((r) => r.sender.startsWith(how) && r.action === 'tempfail');
      assert.match(String((failed?.error as Error | undefined)?.message), /auth worker 1 stopped/);
      for (const c of conns) c.end();

      // Replaced, and the next messages are verified (both workers get one).
      await (async () => {
        for (let i = 0; i < 100 && pool.threadIds.length < 2; i++) await sleep(20);
      })();
      const after = pool.threadIds;
      assert.equal(after.length, 2);
      assert.notDeepEqual(after, before);
      const next = await Promise.all([0, 1].map(async (i) => {
        const c = await connect();
        c.write(Buffer.concat([...prologue(`${how}-next${i}@remote.test`), ...packets(await signed('remote.test'))].map(encodeCommand)));
        await c.until(final);
        c.end();
        return c.replies.find((r) => r.type === 'insHeader');
      }));
      for (const ins of next) assert.match(ins?.type === 'insHeader' ? ins.value.toString() : '', /dkim=pass header\.i=@remote\.test/);
    });
  }
});


/** Threads of process `pid` named milter-auth-N (the pool names its workers so). */
function authThreads(pid: number): number {
  let n = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').startsWith('milter-auth-')) n++;
    } catch {
      // The thread ended meanwhile.
    }
  }
  return n;
}

describe('milter.workers in mailwarden serve', () => {
  it('starts that many worker threads, resizes them on a reload (0 = none), verifies through them, and stops them on shutdown', async () => {
    const tmp = await tempDir('milter-workers');
    const dns = await startDnsServer({
      'k._domainkey.remote.test': { TXT: [dnsRecordStrings({ domain: 'remote.test', selector: 'k', algorithm: 'ed25519-sha256', publicKeyBase64: publicKeyBase64(ed.privateKey) })] },
    });
    const port = await freePort();
    const configFile = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(join(tmp.path, 'directory.yaml'), 'domains: {}\n');
    const write = (workers: number | 'auto' | undefined) => writeFileSync(configFile, [
      'directory:', '  backend: yaml', `  path: ${join(tmp.path, 'directory.yaml')}`,
      'log:', '  level: info',
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s',
      'milter:', `  listen: inet:127.0.0.1:${port}`, `  authserv_id: ${AUTHSERV}`,
      ...(workers === undefined ? [] : [`  workers: ${workers}`]),
    ].join('\n'));
    const until = async (what: string, check: () => boolean) => {
      for (let i = 0; i < 250 && !check(); i++) await sleep(20);
      assert.ok(check(), what);
    };
    /** One message over a real connection: its A-R. */
    const verified = async (sender: string): Promise<string> => {
      const socket = net.connect(port, '127.0.0.1');
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      const decoder = new MilterReplyDecoder();
      const replies: MilterReply[] = [];
      socket.on('data', (c: Buffer) => replies.push(...decoder.push(c)));
      socket.write(Buffer.concat([...prologue(sender), ...packets(await signed('remote.test'))].map(encodeCommand)));
      await until('an answer at end of message', () => replies.some((r) => r.type === 'continue'));
      socket.end();
      const ins = replies.find((r) => r.type === 'insHeader');
      return ins?.type === 'insHeader' ? ins.value.toString() : '';
    };
    write(1);
    const daemon = await startDaemon(configFile);
    // Connects over and over while the reloads below resize the pool: the listener is kept, so none is refused.
    let probing = true;
    const probes = { ok: 0, refused: 0 };
    const prober = (async () => {
      while (probing) {
        await new Promise<void>((resolve) => {
          const s = net.connect(port, '127.0.0.1');
          s.once('connect', () => { probes.ok++; s.destroy(); resolve(); });
          s.once('error', () => { probes.refused++; resolve(); });
        });
        await sleep(2);
      }
    })();
    try {
      const pid = daemon.child.pid!;
      await until('1 worker thread', () => authThreads(pid) === 1);
      assert.match(await verified('one@remote.test'), /dkim=pass header\.i=@remote\.test/);

      write(3);
      daemon.child.kill('SIGHUP');
      await until('3 worker threads after the reload', () => authThreads(pid) === 3);
      assert.match(await verified('three@remote.test'), /dkim=pass/);

      write(0);
      daemon.child.kill('SIGHUP');
      await until('no worker thread with workers: 0', () => authThreads(pid) === 0);
      assert.match(await verified('zero@remote.test'), /dkim=pass/);

      // The default: one per core (none on a single core).
      write(undefined);
      daemon.child.kill('SIGHUP');
      const expected = autoWorkers((await import('node:os')).availableParallelism());
      await until(`auto: ${expected} worker threads`, () => authThreads(pid) === expected);
      assert.match(await verified('auto@remote.test'), /dkim=pass/);
      const started = daemon.lines.filter((l) => l['msg'] === 'milter auth worker threads started').map((l) => l['workers']);
      assert.deepEqual(started, expected > 0 ? [1, 3, expected] : [1, 3]);
      probing = false;
      await prober;
      assert.equal(probes.refused, 0, `connections refused during the reloads (${probes.ok} accepted)`);
      assert.ok(probes.ok > 10, `the prober ran (${probes.ok} connections)`);
    } finally {
      probing = false;
      await prober;
      const t0 = Date.now();
      assert.equal(await daemon.stop(), 0);
      assert.ok(Date.now() - t0 < 8000, 'shutdown with worker threads took too long');
      await dns.stop();
      await tmp.remove();
    }
  });
});
