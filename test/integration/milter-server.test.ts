// The milter server over real sockets, playing Postfix with the codec's MTA
// side: a whole conversation delivered one byte at a time, pipelined body
// chunks of a large signed message (streamed, verified), PROGRESS while DNS
// is slow, and a malformed packet closing the connection. Verification is
// the real one (verifyMessage) against the test DNS server, once in the main
// thread (milter.workers: 0) and once in two auth worker threads.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import { pino } from 'pino';
import { dkimSign } from 'mailauth';
import { encodeCommand, MilterReplyDecoder, type MilterCommandInput, type MilterReply } from '../../src/milter/codec.ts';
import { MILTER_CHUNK_SIZE, POSTFIX_OPTNEG } from '../../src/milter/constants.ts';
import { startMilterServer } from '../../src/milter/server.ts';
import type { MessageReport, MilterRuntime } from '../../src/milter/session.ts';
import type { MilterConfig } from '../../src/milter/config.ts';
import { createResolver } from '../../src/dns/resolver.ts';
import { dnsRecordStrings, publicKeyBase64 } from '../../src/dkim/keys.ts';
import type { Listener } from '../../src/net/listener.ts';
import { AuthWorkerPool } from '../../src/milter/worker-pool.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';

const config: MilterConfig = {
  listen: { kind: 'inet', host: '127.0.0.1', port: 0 },
  unix: { mode: 0o660 },
  authservId: 'mx.mailwarden.test',
  timeoutMs: 20_000,
  maxMessageSize: 64 * 1024 * 1024,
  onError: 'accept',
  workers: 0,
  dmarc: { reject: 'reject', quarantine: 'hold', trustedArcSealers: [], exemptDomains: [], exemptNetworks: [] },
  signing: { daemonNames: ['ORIGINATING'], signAuthenticated: true, localSubmissions: true },
  arc: { seal: false },
};

const key = generateKeyPairSync('ed25519');
const pem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

async function signed(body: string, domain: string): Promise<Buffer> {
  const raw = Buffer.from(`From: a@${domain}\r\nTo: b@example.org\r\nSubject: big\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n${body}`);
  const opts = { signatureData: [{ signingDomain: domain, selector: 'k', privateKey: pem, algorithm: 'ed25519-sha256' }] } as unknown as Parameters<typeof dkimSign>[1];
  const { signatures } = await dkimSign(raw, opts);
  return Buffer.concat([Buffer.from(signatures), raw]);
}

/** The packets Postfix sends for one message (header fields with LF folds, body in 64 KiB chunks). */
function packets(message: Buffer): MilterCommandInput[] {
  const end = message.indexOf('\r\n\r\n');
  const head = message.subarray(0, end).toString('latin1');
  const cmds: MilterCommandInput[] = [];
  for (const field of head.split(/\r\n(?![ \t])/)) {
    const c = field.indexOf(':');
    cmds.push({ type: 'header', name: field.slice(0, c), value: Buffer.from(field.slice(c + 1).replace(/\r\n/g, '\n'), 'latin1') });
  }
  cmds.push({ type: 'eoh' });
  const body = message.subarray(end + 4);
  for (let at = 0; at < body.length; at += MILTER_CHUNK_SIZE) cmds.push({ type: 'body', chunk: body.subarray(at, at + MILTER_CHUNK_SIZE) });
  cmds.push({ type: 'bodyEob' });
  return cmds;
}

const prologue = (sender: string): MilterCommandInput[] => [
  { type: 'optneg', ...POSTFIX_OPTNEG },
  { type: 'macro', forCommand: 'C', macros: new Map([['{daemon_name}', 'mx']]) },
  { type: 'connect', hostname: 'mail.remote.test', family: '4', port: 40001, address: '192.0.2.55' },
  { type: 'helo', name: 'mail.remote.test' },
  { type: 'macro', forCommand: 'M', macros: new Map([['i', 'Q1']]) },
  { type: 'mail', args: [`<${sender}>`] },
];

interface Client {
  replies: MilterReply[];
  closed: Promise<void>;
  write(bytes: Buffer): Promise<void>;
  /** Resolves once a reply of this type has arrived. */
  waitFor(type: MilterReply['type'], timeoutMs?: number): Promise<MilterReply>;
  end(): void;
}

async function connect(port: number): Promise<Client> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const decoder = new MilterReplyDecoder();
  const replies: MilterReply[] = [];
  let notify = () => {};
  socket.on('data', (chunk: Buffer) => {
    replies.push(...decoder.push(chunk));
    notify();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    replies,
    closed,
    write: (bytes) => new Promise((resolve, reject) => socket.write(bytes, (err) => (err ? reject(err) : resolve()))),
    waitFor(type, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = replies.find((r) => r.type === type);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          }
        };
        const timer = setTimeout(() => reject(new Error(`no ${type} reply within ${timeoutMs} ms: ${JSON.stringify(replies.map((r) => r.type))}`)), timeoutMs);
        notify = check;
        check();
      });
    },
    end: () => socket.end(),
  };
}

for (const workers of [0, 2]) describe(`milter server over sockets (milter.workers: ${workers})`, () => {
  let dns: TestDnsServer;
  let pool: AuthWorkerPool | undefined;
  let server: Listener;
  let port: number;
  const reports: MessageReport[] = [];

  before(async () => {
    const record = (domain: string) => ({ TXT: [dnsRecordStrings({ domain, selector: 'k', algorithm: 'ed25519-sha256', publicKeyBase64: publicKeyBase64(key.privateKey) })] });
    dns = await startDnsServer({
      'k._domainkey.remote.test': record('remote.test'),
      'k._domainkey.slowkey.test': { ...record('slowkey.test'), delayMs: 400 },
    });
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 3000 });
    pool = workers > 0 ? new AuthWorkerPool({ size: workers, log: pino({ level: 'silent' }) }) : undefined;
    const runtime: MilterRuntime = { config: { ...config, workers }, resolver, signingKeys: () => [], ...pool?.hooks() };
    server = await startMilterServer({
      listen: { listen: config.listen, unix: config.unix },
      log: pino({ level: 'silent' }),
      runtime: () => runtime,
      progressIntervalMs: 100,
      onMessage: (r) => reports.push(r),
    });
    port = (server.address as { port: number }).port;
  });

  after(async () => {
    await server?.close(1000);
    await pool?.close();
    await dns?.stop();
  });

  it('answers a conversation that arrives one byte at a time', async () => {
    const message = await signed('Hello\r\n', 'remote.test');
    const bytes = Buffer.concat([...prologue('x@remote.test'), ...packets(message)].map(encodeCommand));
    const c = await connect(port);
    for (let i = 0; i < bytes.length; i++) await c.write(bytes.subarray(i, i + 1));
    const ins = await c.waitFor('insHeader');
    assert.equal(c.replies[0]?.type, 'optneg');
    assert.ok(ins.type === 'insHeader');
    assert.match(ins.value.toString(), /^ mx\.mailwarden\.test;\n dkim=pass header\.i=@remote\.test/);
    await c.waitFor('continue');
    // PROGRESS (every 100 ms here) is legitimate while the end of message takes longer on a busy host.
    assert.deepEqual(c.replies.map((r) => r.type).filter((t) => t !== 'progress'), ['optneg', 'insHeader', 'continue']);
    await c.write(encodeCommand({ type: 'quit' }));
    await c.closed;
  });

  it('streams a 12 MB message sent without waiting (NR_BODY) and verifies it', async () => {
    const line = 'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvwxyz\r\n';
    const message = await signed(line.repeat(Math.ceil(12_000_000 / line.length)), 'remote.test');
    const c = await connect(port);
    const rssBefore = process.memoryUsage().rss;
    await c.write(Buffer.concat([...prologue('big@remote.test'), ...packets(message)].map(encodeCommand)));
    const ins = await c.waitFor('insHeader', 30_000);
    assert.ok(ins.type === 'insHeader');
    assert.match(ins.value.toString(), /dkim=pass header\.i=@remote\.test/);
    const report = reports.find((r) => r.sender === 'big@remote.test');
    assert.ok(report && report.size > 12_000_000);
    // The test process holds the message itself (twice); the milter must not add a copy per chunk forever.
    assert.ok(process.memoryUsage().rss - rssBefore < 200 * 1024 * 1024, `rss grew by ${(process.memoryUsage().rss - rssBefore) >> 20} MiB`);
    c.end();
  });

  it('sends PROGRESS while a DNS answer is slow, then the verdict', async () => {
    const message = await signed('slow key\r\n', 'slowkey.test');
    const c = await connect(port);
    await c.write(Buffer.concat([...prologue('x@slowkey.test'), ...packets(message)].map(encodeCommand)));
    await c.waitFor('continue', 15_000);
    const types = c.replies.map((r) => r.type);
    assert.ok(types.includes('progress'), types.join(','));
    assert.ok(types.indexOf('progress') < types.indexOf('insHeader'));
    const ins = c.replies.find((r) => r.type === 'insHeader');
    assert.ok(ins?.type === 'insHeader');
    assert.match(ins.value.toString(), /dkim=pass header\.i=@slowkey\.test/);
    c.end();
  });

  it('closes the connection on a malformed or oversized packet, and keeps serving others', async () => {
    const bad = await connect(port);
    await bad.write(encodeCommand({ type: 'optneg', ...POSTFIX_OPTNEG }));
    await bad.waitFor('optneg');
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(0x7fffffff, 0);
    huge[4] = 'B'.charCodeAt(0);
    await bad.write(huge).catch(() => undefined);
    await bad.closed;

    const zero = await connect(port);
    await zero.write(Buffer.from([0, 0, 0, 0, 0x41])).catch(() => undefined);
    await zero.closed;

    const unknown = await connect(port);
    await unknown.write(Buffer.from([0, 0, 0, 1, 0x5a])).catch(() => undefined);
    await unknown.closed;

    const good = await connect(port);
    await good.write(encodeCommand({ type: 'optneg', ...POSTFIX_OPTNEG }));
    assert.equal((await good.waitFor('optneg')).type, 'optneg');
    good.end();
  });
});
