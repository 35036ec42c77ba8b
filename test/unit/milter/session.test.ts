// The milter state machine driven the way Postfix drives it: commands encoded
// with the codec and decoded again, replies encoded and decoded the way
// Postfix reads them. The verifier is replaced by one that records the bytes
// it is given (so header reconstruction is checked byte for byte) and
// answers a chosen verdict; DNS-backed verification runs in the integration
// tests (milter-session.test.ts, milter-postfix.test.ts).
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Readable } from 'node:stream';
import { pino } from 'pino';
import {
  encodeCommand, encodeReply, MilterDecoder, MilterReplyDecoder,
  type MilterCommandInput, type MilterReply,
} from '../../../src/milter/codec.ts';
import { POSTFIX_OPTNEG, SMFIF, SMFIP } from '../../../src/milter/constants.ts';
import type { MilterConfig } from '../../../src/milter/config.ts';
import { decideDmarc, MilterSession, type MessageReport, type MilterRuntime, type SigningKey } from '../../../src/milter/session.ts';
import { headerBytes, headerIndexes, authservIdOf, firstAddressDomain, newestArcSealer } from '../../../src/milter/headers.ts';
import type { ArcSealOutcome, MessageAuthOptions, MessageAuthVerdict } from '../../../src/checks/message-auth.ts';
import type { ForwardingVerdict } from '../../../src/checks/forwarding.ts';

const AUTHSERV = 'mx.example.org';

function config(over: Partial<MilterConfig> = {}, dmarc: Partial<MilterConfig['dmarc']> = {}): MilterConfig {
  return {
    listen: { kind: 'unix', path: '/nonexistent' },
    unix: { mode: 0o660 },
    authservId: AUTHSERV,
    timeoutMs: 5000,
    maxMessageSize: 1024 * 1024,
    onError: 'accept',
    workers: 0,
    dmarc: { reject: 'reject', quarantine: 'hold', trustedArcSealers: [], exemptDomains: [], exemptNetworks: [], ...dmarc },
    signing: { daemonNames: ['ORIGINATING'], signAuthenticated: true, localSubmissions: true },
    arc: { seal: false },
    ...over,
  };
}

function verdict(over: Partial<MessageAuthVerdict> = {}): MessageAuthVerdict {
  return {
    dkim: [],
    spf: 'none',
    spfSource: 'computed',
    arc: 'none',
    authenticationResults: `${AUTHSERV};\r\n dkim=none;\r\n spf=none smtp.mailfrom=a@sender.test`,
    elapsedMs: 1,
    ...over,
  };
}

interface Harness {
  session: MilterSession;
  /** Feeds commands (encoded, re-decoded); returns the replies decoded the way Postfix reads them. */
  send(...cmds: MilterCommandInput[]): Promise<MilterReply[]>;
  reports: MessageReport[];
  /** Bytes each verifier call received. */
  seen: Buffer[];
  keyLookups: string[];
  progress: number;
  /** Options of each verifier call (prepareArcSeal). */
  verifyOptions: MessageAuthOptions[];
  /** Recipients asked about (milter.arc). */
  forwardingLookups: string[];
  /** What the sealer was given. */
  sealCalls: Array<{ verdict: MessageAuthVerdict; key: SigningKey }>;
}

function harness(opts: {
  config?: MilterConfig;
  verdict?: MessageAuthVerdict | (() => Promise<MessageAuthVerdict>);
  /** Keys per domain, or an error the key store throws. */
  keys?: Record<string, SigningKey[]> | Error;
  progressIntervalMs?: number;
  /** milter.arc: foreign targets per recipient (missing = stays local), or an error the directory throws. */
  forwarding?: Record<string, string[] | Error>;
  /** The sealing key (default one RSA test key), or an error the key store throws. */
  arcKey?: SigningKey | Error | null;
  seal?: (verdict: MessageAuthVerdict, key: SigningKey) => Promise<ArcSealOutcome>;
} = {}): Harness {
  const reports: MessageReport[] = [];
  const seen: Buffer[] = [];
  const keyLookups: string[] = [];
  const h: Harness = {
    session: undefined as unknown as MilterSession,
    reports,
    seen,
    keyLookups,
    progress: 0,
    verifyOptions: [],
    forwardingLookups: [],
    sealCalls: [],
    async send(...cmds) {
      const decoder = new MilterDecoder();
      const replyDecoder = new MilterReplyDecoder();
      const out: MilterReply[] = [];
      for (const c of cmds) {
        for (const cmd of decoder.push(encodeCommand(c))) {
          for (const r of await h.session.handle(cmd)) out.push(...replyDecoder.push(encodeReply(r)));
        }
      }
      // The OPTNEG reply has its own test; every other test starts with OPTNEG.
      return out.filter((r) => r.type !== 'optneg' || cmds.length === 1);
    },
  };
  const runtime: MilterRuntime = {
    config: opts.config ?? config(),
    resolver: async () => {
      throw Object.assign(new Error('no DNS in unit tests'), { code: 'ENOTFOUND' });
    },
    signingKeys(domain) {
      keyLookups.push(domain);
      if (opts.keys instanceof Error) throw opts.keys;
      return opts.keys?.[domain] ?? [];
    },
    async verify(message, _input, _resolver, options) {
      h.verifyOptions.push(options ?? {});
      const chunks: Buffer[] = [];
      for await (const c of message as Readable) chunks.push(c as Buffer);
      seen.push(Buffer.concat(chunks));
      const v = opts.verdict ?? verdict();
      return typeof v === 'function' ? v() : v;
    },
    async forwarding(recipient) {
      h.forwardingLookups.push(recipient);
      const f = opts.forwarding?.[recipient];
      if (f instanceof Error) throw f;
      return { recipient, foreign: f ?? [], local: f ? 0 : 1, truncated: false } satisfies ForwardingVerdict;
    },
    arcSealingKey() {
      if (opts.arcKey instanceof Error) throw opts.arcKey;
      return opts.arcKey === null ? undefined : opts.arcKey ?? ARC_KEY;
    },
    async seal(v, k) {
      const key = k as SigningKey;
      h.sealCalls.push({ verdict: v, key });
      return opts.seal ? opts.seal(v, key) : SEALED;
    },
  };
  h.session = new MilterSession({
    runtime: () => runtime,
    log: pino({ level: 'silent' }),
    progress: () => h.progress++,
    progressIntervalMs: opts.progressIntervalMs ?? 10_000,
    onMessage: (r) => reports.push(r),
  });
  return h;
}

const ARC_KEY: SigningKey = { domain: 'fwd.example.org', selector: 'arc1', algorithm: 'rsa-sha256', privateKeyPem: 'unused by the fake sealer' };
const SEALED: ArcSealOutcome = {
  sealed: true, instance: 1, cv: 'none',
  fields: ['ARC-Seal: i=1; a=rsa-sha256; cv=none; d=fwd.example.org; s=arc1;\r\n b=AS', 'ARC-Message-Signature: i=1; a=rsa-sha256; d=fwd.example.org;\r\n b=AMS', 'ARC-Authentication-Results: i=1; mx.example.org; arc=none'],
};

const macro = (forCommand: string, entries: Record<string, string>): MilterCommandInput => ({ type: 'macro', forCommand, macros: new Map(Object.entries(entries)) });
const OPTNEG: MilterCommandInput = { type: 'optneg', ...POSTFIX_OPTNEG };
const CONNECT: MilterCommandInput[] = [
  macro('C', { '{daemon_name}': 'mx.example.org', j: 'mx.example.org' }),
  { type: 'connect', hostname: 'mail.sender.test', family: '4', port: 40000, address: '192.0.2.10' },
  { type: 'helo', name: 'mail.sender.test' },
];
const mail = (sender = 'a@sender.test', macros: Record<string, string> = {}): MilterCommandInput[] => [
  macro('M', { i: 'ABC123', ...macros }),
  { type: 'mail', args: [`<${sender}>`, 'SIZE=100'] },
];
const header = (name: string, value: string): MilterCommandInput => ({ type: 'header', name, value: Buffer.from(value, 'latin1') });

describe('milter session: negotiation', () => {
  it('asks for header edits and quarantine only, byte-exact headers, no replies before end of message, and the macros it needs', async () => {
    const h = harness();
    const [reply] = await h.send(OPTNEG);
    assert.ok(reply && reply.type === 'optneg');
    assert.equal(reply.version, 6);
    assert.equal(reply.actions, SMFIF.ADDHDRS | SMFIF.CHGHDRS | SMFIF.QUARANTINE | SMFIF.SETSYMLIST);
    assert.ok(reply.protocol & SMFIP.HDR_LEADSPC);
    for (const flag of [SMFIP.NR_CONN, SMFIP.NR_HELO, SMFIP.NR_MAIL, SMFIP.NR_HDR, SMFIP.NR_EOH, SMFIP.NR_BODY, SMFIP.NORCPT, SMFIP.NOUNKNOWN, SMFIP.NODATA]) {
      assert.ok(reply.protocol & flag, `flag 0x${flag.toString(16)}`);
    }
    assert.deepEqual(reply.symbolLists?.connect, ['{daemon_name}']);
    assert.ok(reply.symbolLists?.envfrom?.includes('{auth_authen}'));
    assert.deepEqual(reply.symbolLists?.eom, ['i']);
    // Nothing but end of message gets an answer.
    assert.deepEqual(await h.send(...CONNECT, ...mail(), header('From', ' a@sender.test'), { type: 'eoh' }, { type: 'body', chunk: 'x\r\n' }), []);
  });

  it('still answers CONTINUE where the MTA did not grant a no-reply flag', async () => {
    const h = harness();
    const [reply] = await h.send({ type: 'optneg', version: 6, actions: 0x1ff, protocol: SMFIP.HDR_LEADSPC });
    assert.ok(reply?.type === 'optneg');
    assert.equal(reply.protocol, SMFIP.HDR_LEADSPC);
    const replies = await h.send(...CONNECT, ...mail(), header('Subject', ' x'), { type: 'eoh' });
    assert.deepEqual(replies.map((r) => r.type), ['continue', 'continue', 'continue', 'continue', 'continue']);
  });
});

describe('milter session: inbound', () => {
  it('rebuilds the message byte for byte: leading whitespace kept, LF folds back to CRLF, odd spacing untouched', async () => {
    const h = harness();
    const headers: Array<[string, string]> = [
      ['Received', ' from a (a [192.0.2.1])\n\tby b; Tue, 3 Jan 2017 12:22:54 -0800'],
      ['From', ' "Doe, John" <a@sender.test>'],
      ['Subject', '  two  spaces and trailing space '],
      ['X-Tight', 'no-space'],
      ['X-Tab', '\tvalue after a tab'],
      ['X-Empty', ''],
      ['To', ' one@example.org,\n two@example.org,\n\tthree@example.org'],
      ['DKIM-Signature', ' v=1; a=rsa-sha256; d=sender.test;\n\tb=abc\n def'],
    ];
    const body = ['Line one\r\n', '\r\n', '  indented \r\n', 'last line without newline'];
    const cmds: MilterCommandInput[] = [OPTNEG, ...CONNECT, ...mail(), ...headers.map(([n, v]) => header(n, v)), { type: 'eoh' }, ...body.map((b) => ({ type: 'body' as const, chunk: b })), { type: 'bodyEob' }];
    await h.send(...cmds);
    const expected = headers.map(([n, v]) => `${n}:${v.replace(/\n/g, '\r\n')}\r\n`).join('') + '\r\n' + body.join('');
    assert.equal(h.seen.length, 1);
    assert.equal(h.seen[0]!.toString('latin1'), expected);
  });

  it('keeps 8-bit header bytes and body chunks split anywhere', async () => {
    const h = harness();
    const raw = Buffer.from('Grüße aus Köln', 'utf8');
    const body = Buffer.concat([Buffer.from('abc\r\n'), Buffer.from([0xff, 0x00, 0x80]), Buffer.from('\r\n')]);
    await h.send(OPTNEG, ...CONNECT, ...mail(), { type: 'header', name: 'Subject', value: Buffer.concat([Buffer.from(' '), raw]) }, { type: 'eoh' },
      { type: 'body', chunk: body.subarray(0, 4) }, { type: 'body', chunk: body.subarray(4) }, { type: 'bodyEob' });
    assert.deepEqual(h.seen[0], Buffer.concat([Buffer.from('Subject: '), raw, Buffer.from('\r\n\r\n'), body]));
  });

  it('inserts Authentication-Results at the top with LF folds and deletes forged ones carrying our authserv-id, last first', async () => {
    const h = harness();
    const replies = await h.send(OPTNEG, ...CONNECT, ...mail(),
      header('Authentication-Results', ' mx.example.org; dkim=pass header.d=bank.test'),
      header('From', ' a@sender.test'),
      header('Authentication-Results', ' other.example; spf=pass'),
      header('authentication-results', ' (comment) MX.Example.ORG 1;\n\tdmarc=pass'),
      header('Authentication-Results', ' mx.example.org.evil; spf=pass'),
      header('X-Mailwarden-DMARC', ' none'),
      { type: 'eoh' }, { type: 'body', chunk: 'hi\r\n' }, { type: 'bodyEob' });
    assert.deepEqual(replies, [
      { type: 'chgHeader', index: 3, name: 'Authentication-Results', value: Buffer.alloc(0) },
      { type: 'chgHeader', index: 1, name: 'Authentication-Results', value: Buffer.alloc(0) },
      { type: 'chgHeader', index: 1, name: 'X-Mailwarden-DMARC', value: Buffer.alloc(0) },
      { type: 'insHeader', index: 0, name: 'Authentication-Results', value: Buffer.from(` ${AUTHSERV};\n dkim=none;\n spf=none smtp.mailfrom=a@sender.test`) },
      { type: 'continue' },
    ]);
    assert.equal(h.reports[0]?.removed, 3);
  });

  const failing = (policy: 'reject' | 'quarantine' | 'none', arc = 'none') =>
    verdict({ arc, dmarc: { result: 'fail', domain: 'bank.test', policy } });

  it('rejects a DMARC p=reject failure 550 5.7.1 at end of data', async () => {
    const h = harness({ verdict: failing('reject') });
    const replies = await h.send(OPTNEG, ...CONNECT, ...mail(), header('From', ' x@bank.test'), { type: 'eoh' }, { type: 'bodyEob' });
    assert.deepEqual(replies, [{ type: 'replyCode', reply: '550 5.7.1 Rejected by DMARC policy for bank.test' }]);
    assert.equal(h.reports[0]?.action, 'reject');
  });

  it('holds, marks or accepts a p=quarantine failure as configured', async () => {
    const hold = harness({ verdict: failing('quarantine') });
    const r1 = await hold.send(OPTNEG, ...CONNECT, ...mail(), header('From', ' x@bank.test'), { type: 'eoh' }, { type: 'bodyEob' });
    assert.deepEqual(r1.map((r) => r.type), ['insHeader', 'quarantine', 'continue']);
    assert.match((r1[1] as { reason: string }).reason, /bank\.test/);

    const mark = harness({ verdict: failing('quarantine'), config: config({}, { quarantine: 'header' }) });
    const r2 = await mark.send(OPTNEG, ...CONNECT, ...mail(), header('From', ' x@bank.test'), { type: 'eoh' }, { type: 'bodyEob' });
    assert.deepEqual(r2[1], { type: 'addHeader', name: 'X-Mailwarden-DMARC', value: Buffer.from(' quarantine') });

    const soft = harness({ verdict: failing('reject'), config: config({}, { reject: 'quarantine', quarantine: 'accept' }) });
    const r3 = await soft.send(OPTNEG, ...CONNECT, ...mail(), { type: 'eoh' }, { type: 'bodyEob' });
    assert.deepEqual(r3.map((r) => r.type), ['insHeader', 'continue']);
    const none = harness({ verdict: failing('none') });
    assert.deepEqual((await none.send(OPTNEG, ...CONNECT, ...mail(), { type: 'eoh' }, { type: 'bodyEob' })).map((r) => r.type), ['insHeader', 'continue']);
  });

  it('does not enforce DMARC for exempt networks, exempt domains or an ARC pass from a trusted sealer', async () => {
    const net = harness({ verdict: failing('reject'), config: config({}, { exemptNetworks: ['192.0.2.0/24'] }) });
    assert.equal((await net.send(OPTNEG, ...CONNECT, ...mail(), { type: 'eoh' }, { type: 'bodyEob' })).at(-1)?.type, 'continue');
    assert.match(net.reports[0]!.reason!, /exempt network/);

    const arcHeaders = [
      header('ARC-Seal', ' i=1; a=rsa-sha256; cv=none; d=forwarder.test; s=s; b=x'),
      header('ARC-Seal', ' i=2; a=rsa-sha256; cv=pass; d=lists.trusted.test; s=s; b=y'),
    ];
    const trusted = harness({ verdict: failing('reject', 'pass'), config: config({}, { trustedArcSealers: ['trusted.test'] }) });
    assert.equal((await trusted.send(OPTNEG, ...CONNECT, ...mail(), ...arcHeaders, { type: 'eoh' }, { type: 'bodyEob' })).at(-1)?.type, 'continue');
    assert.equal(trusted.reports[0]!.arcSealer, 'lists.trusted.test');
    // The same chain sealed last by someone we do not trust, or a failing chain, changes nothing.
    const untrusted = harness({ verdict: failing('reject', 'pass'), config: config({}, { trustedArcSealers: ['forwarder.test'] }) });
    assert.equal((await untrusted.send(OPTNEG, ...CONNECT, ...mail(), ...arcHeaders, { type: 'eoh' }, { type: 'bodyEob' })).at(-1)?.type, 'replyCode');
    const broken = harness({ verdict: failing('reject', 'fail'), config: config({}, { trustedArcSealers: ['trusted.test'] }) });
    assert.equal((await broken.send(OPTNEG, ...CONNECT, ...mail(), ...arcHeaders, { type: 'eoh' }, { type: 'bodyEob' })).at(-1)?.type, 'replyCode');

    assert.equal(decideDmarc(failing('reject'), { clientIp: '', arcSealer: undefined, config: config({}, { exemptDomains: ['bank.test'] }) }).action, 'accept');
    assert.equal(decideDmarc(verdict({ dmarc: { result: 'fail', domain: 'mail.bank.test', policy: 'reject' } }), { clientIp: '', arcSealer: undefined, config: config({}, { exemptDomains: ['bank.test'] }) }).action, 'accept');
    assert.equal(decideDmarc(verdict({ dmarc: { result: 'fail', domain: 'notbank.test', policy: 'reject' } }), { clientIp: '', arcSealer: undefined, config: config({}, { exemptDomains: ['bank.test'] }) }).action, 'reject');
    assert.equal(decideDmarc(verdict({ dmarc: { result: 'temperror', domain: 'bank.test', policy: 'reject' } }), { clientIp: '', arcSealer: undefined, config: config() }).action, 'accept');
  });

  it('resets per message: ABORT drops the message, the next one starts clean', async () => {
    const h = harness();
    await h.send(OPTNEG, ...CONNECT, ...mail('first@sender.test'), header('Subject', ' one'), { type: 'eoh' }, { type: 'body', chunk: 'partial' }, { type: 'abort' }, { type: 'abort' });
    const replies = await h.send(...mail('second@sender.test'), header('Subject', ' two'), { type: 'eoh' }, { type: 'body', chunk: 'b\r\n' }, { type: 'bodyEob' });
    assert.equal(replies.at(-1)?.type, 'continue');
    assert.equal(h.reports.length, 1);
    assert.equal(h.reports[0]!.sender, 'second@sender.test');
    assert.equal(h.seen.at(-1)!.toString(), 'Subject: two\r\n\r\nb\r\n');
  });

  it('passes a message larger than max_message_size unverified, still removing forged headers', async () => {
    const h = harness({ config: config({ maxMessageSize: 1000 }) });
    const chunk = Buffer.alloc(600, 'a');
    const replies = await h.send(OPTNEG, ...CONNECT, ...mail(), header('Authentication-Results', ' mx.example.org; dkim=pass'), { type: 'eoh' },
      { type: 'body', chunk }, { type: 'body', chunk }, { type: 'body', chunk }, { type: 'bodyEob' });
    assert.deepEqual(replies.map((r) => r.type), ['chgHeader', 'continue']);
    assert.equal(h.reports[0]!.action, 'accept');
    assert.match(h.reports[0]!.reason!, /max_message_size/);
    assert.ok(h.reports[0]!.size > 1000);
    assert.ok((h.seen[0]?.length ?? 0) <= 1000 + 65536, 'the verifier stopped being fed');
  });

  it('answers on_error when verification fails or misses the deadline, with PROGRESS while waiting; never a reject', async () => {
    const broken = harness({ verdict: async () => { throw new Error('boom'); } });
    assert.deepEqual((await broken.send(OPTNEG, ...CONNECT, ...mail(), { type: 'eoh' }, { type: 'bodyEob' })).map((r) => r.type), ['continue']);
    assert.equal(broken.reports[0]!.action, 'accept');
    assert.match(String((broken.reports[0]!.error as Error).message), /boom/);

    const slow = harness({
      verdict: () => new Promise(() => {}),
      config: config({ timeoutMs: 120, onError: 'tempfail' }),
      progressIntervalMs: 20,
    });
    const replies = await slow.send(OPTNEG, ...CONNECT, ...mail(), { type: 'eoh' }, { type: 'bodyEob' });
    assert.deepEqual(replies.map((r) => r.type), ['tempfail']);
    assert.ok(slow.progress >= 3, `PROGRESS sent ${slow.progress} times`);
    assert.equal(slow.reports[0]!.action, 'tempfail');
  });
});

describe('milter session: ARC sealing of forwarded mail (milter.arc)', () => {
  const sealing = (over: Partial<MilterConfig> = {}) => config({ arc: { seal: true, domain: 'fwd.example.org' }, ...over });
  const rcpt = (to: string): MilterCommandInput => ({ type: 'rcpt', args: [`<${to}>`, 'ORCPT=rfc822;x'] });
  const message = (h: Harness, prefix: MilterCommandInput[], ...rcpts: string[]) =>
    h.send(...prefix, ...rcpts.map(rcpt), header('From', ' a@sender.test'), { type: 'eoh' }, { type: 'body', chunk: 'hi\r\n' }, { type: 'bodyEob' });
  const inbound = [...CONNECT, ...mail()];
  const names = (replies: MilterReply[]) => replies.map((r) => (r.type === 'insHeader' ? r.name : r.type));

  it('asks for the recipients (never answering them) only when sealing is on', async () => {
    const [on] = await harness({ config: sealing() }).send(OPTNEG);
    assert.ok(on?.type === 'optneg');
    assert.equal(on.protocol & SMFIP.NORCPT, 0);
    assert.ok(on.protocol & SMFIP.NR_RCPT);
    const [off] = await harness().send(OPTNEG);
    assert.ok(off?.type === 'optneg' && (off.protocol & SMFIP.NORCPT) !== 0);
  });

  it('seals a message with a recipient an alias forwards outside our domains: ARC-Seal, AMS and AAR on top of our A-R', async () => {
    const h = harness({ config: sealing(), forwarding: { 'fwd@example.org': ['someone@elsewhere.test', 'other@elsewhere.test'] } });
    await h.send(OPTNEG);
    const replies = await message(h, inbound, 'alice@example.org', 'fwd@example.org');
    assert.deepEqual(h.forwardingLookups, ['alice@example.org', 'fwd@example.org']);
    assert.equal(h.verifyOptions[0]?.prepareArcSeal, true);
    assert.deepEqual(names(replies), ['Authentication-Results', 'ARC-Authentication-Results', 'ARC-Message-Signature', 'ARC-Seal', 'continue']);
    const seal = replies[3] as Extract<MilterReply, { type: 'insHeader' }>;
    assert.equal(seal.index, 0);
    assert.equal(seal.value.toString(), ' i=1; a=rsa-sha256; cv=none; d=fwd.example.org; s=arc1;\n b=AS', 'LF folds, leading space');
    assert.equal(h.sealCalls.length, 1);
    assert.equal(h.sealCalls[0]!.key, ARC_KEY);
    assert.deepEqual(h.reports[0]!.arcSeal, { sealed: true, instance: 1, cv: 'none', d: 'fwd.example.org', s: 'arc1', forwardedTo: ['someone@elsewhere.test', 'other@elsewhere.test'] });
    assert.equal(h.reports[0]!.action, 'accept');
  });

  it('does not seal mail that stays here (and does not even hash the body for it when that is known at end of header)', async () => {
    const h = harness({ config: sealing() });
    await h.send(OPTNEG);
    const replies = await message(h, inbound, 'alice@example.org');
    assert.deepEqual(names(replies), ['Authentication-Results', 'continue']);
    assert.equal(h.verifyOptions[0]?.prepareArcSeal, undefined);
    assert.equal(h.sealCalls.length, 0);
    assert.deepEqual(h.reports[0]!.arcSeal, { sealed: false, reason: 'no recipient forwards outside our domains' });
  });

  it('never looks at the recipients of outbound mail, which is DKIM-signed instead; with sealing off nothing is looked up either', async () => {
    const h = harness({ config: sealing(), forwarding: { 'bob@elsewhere.test': ['bob@elsewhere.test'] } });
    await h.send(OPTNEG);
    await message(h, [...CONNECT, ...mail('alice@ours.test', { '{auth_authen}': 'alice' })], 'bob@elsewhere.test');
    assert.deepEqual(h.forwardingLookups, []);
    assert.equal(h.reports[0]!.direction, 'outbound');
    assert.equal(h.reports[0]!.arcSeal, undefined);
    const off = harness({ forwarding: { 'fwd@example.org': ['x@elsewhere.test'] } });
    await off.send(OPTNEG);
    // Postfix sends no RCPT after NORCPT; one sent anyway is answered (no NR_RCPT either) and ignored.
    assert.deepEqual(names(await message(off, inbound, 'fwd@example.org')), ['continue', 'Authentication-Results', 'continue']);
    assert.deepEqual(off.forwardingLookups, []);
    assert.equal(off.reports[0]!.arcSeal, undefined);
  });

  it('does not seal what it rejects', async () => {
    const h = harness({ config: sealing(), verdict: verdict({ dmarc: { result: 'fail', domain: 'bank.test', policy: 'reject' } }), forwarding: { 'fwd@example.org': ['x@elsewhere.test'] } });
    await h.send(OPTNEG);
    assert.deepEqual(names(await message(h, inbound, 'fwd@example.org')), ['replyCode']);
    assert.equal(h.sealCalls.length, 0);
  });

  it('logs why a chain is not sealed, or sealed cv=fail', async () => {
    const reason = 'the newest ARC-Seal already has cv=fail: a failed chain is sealed once';
    const h = harness({ config: sealing(), forwarding: { 'fwd@example.org': ['x@elsewhere.test'] }, seal: async () => ({ sealed: false, reason }) });
    await h.send(OPTNEG);
    assert.deepEqual(names(await message(h, inbound, 'fwd@example.org')), ['Authentication-Results', 'continue']);
    assert.deepEqual(h.reports[0]!.arcSeal, { sealed: false, reason, d: 'fwd.example.org', s: 'arc1', forwardedTo: ['x@elsewhere.test'] });

    const failed = harness({
      config: sealing(), forwarding: { 'fwd@example.org': ['x@elsewhere.test'] },
      seal: async () => ({ ...SEALED, instance: 2, cv: 'fail', reason: 'incoming ARC chain fails (i=1 no valid signature): sealed with cv=fail' }),
    });
    await failed.send(OPTNEG);
    assert.equal(names(await message(failed, inbound, 'fwd@example.org')).length, 5);
    assert.equal(failed.reports[0]!.arcSeal?.cv, 'fail');
    assert.match(failed.reports[0]!.arcSeal!.reason!, /incoming ARC chain fails/);
  });

  it('a directory, key or sealing failure: delivered unsealed with the error logged (on_error accept), or tempfail', async () => {
    const cases: Array<[string, Parameters<typeof harness>[0], RegExp]> = [
      ['directory', { forwarding: { 'fwd@example.org': new Error('directory unavailable') } }, /cannot expand fwd@example\.org/],
      ['no key', { forwarding: { 'fwd@example.org': ['x@elsewhere.test'] }, arcKey: null }, /no ARC key: fwd\.example\.org has no active DKIM key with an RSA signing key/],
      ['key store', { forwarding: { 'fwd@example.org': ['x@elsewhere.test'] }, arcKey: new Error('EACCES') }, /the ARC key cannot be read/],
      ['ed25519 key', { forwarding: { 'fwd@example.org': ['x@elsewhere.test'] }, arcKey: { ...ARC_KEY, algorithm: 'ed25519-sha256' } }, /ARC seals need an RSA key/],
      ['sealer', { forwarding: { 'fwd@example.org': ['x@elsewhere.test'] }, seal: async () => ({ sealed: false, reason: 'ARC sealing failed: bad key', error: new Error('bad key') }) }, /ARC sealing failed: bad key/],
    ];
    for (const [what, opts, reason] of cases) {
      const h = harness({ config: sealing(), ...opts });
      await h.send(OPTNEG);
      assert.deepEqual(names(await message(h, inbound, 'fwd@example.org')), ['Authentication-Results', 'continue'], what);
      const r = h.reports[0]!;
      assert.equal(r.action, 'accept', what);
      assert.equal(r.arcSeal?.sealed, false, what);
      assert.match(r.arcSeal!.reason!, reason, what);
      assert.ok(r.arcSeal!.error, `${what}: the error is logged`);

      const strict = harness({ config: sealing({ onError: 'tempfail' }), ...opts });
      await strict.send(OPTNEG);
      assert.deepEqual(names(await message(strict, inbound, 'fwd@example.org')), ['tempfail'], what);
    }
  });
});

describe('milter session: outbound', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const ed = generateKeyPairSync('ed25519');
  const keys: SigningKey[] = [
    { domain: 'ours.test', selector: 'ed1', algorithm: 'ed25519-sha256', privateKeyPem: ed.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
    { domain: 'ours.test', selector: 's1', algorithm: 'rsa-sha256', privateKeyPem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
  ];
  const body = 'Hello  world \r\n\r\n\r\n';
  // RFC 6376 §3.4.4 relaxed body: WSP runs to one SP, no WSP at line ends, no empty lines at the end.
  const bodyHash = createHash('sha256').update('Hello world\r\n').digest('base64');

  const sendOne = (h: Harness, prefix: MilterCommandInput[], from = ' Alice <alice@ours.test>') =>
    h.send(OPTNEG, ...prefix, header('From', from), header('Subject', ' out'), { type: 'eoh' }, { type: 'body', chunk: body }, { type: 'bodyEob' });

  for (const [why, prefix] of [
    ['an authenticated client', [...CONNECT, ...mail('alice@ours.test', { '{auth_authen}': 'alice@ours.test', '{auth_type}': 'PLAIN' })]],
    ['{daemon_name} ORIGINATING', [macro('C', { '{daemon_name}': 'ORIGINATING' }), { type: 'connect', hostname: 'pc.lan', family: '4', port: 50000, address: '10.0.0.5' }, ...mail('alice@ours.test')]],
    ['sendmail(1) through non_smtpd_milters', [macro('C', { '{daemon_name}': 'mx.example.org' }), { type: 'connect', hostname: 'localhost', family: '4', port: 0, address: '127.0.0.1' }, { type: 'helo', name: 'localhost' }, ...mail('alice@ours.test')]],
  ] as const) {
    it(`signs mail from ${why} with every key of the From: domain, inserted at the top`, async () => {
      const h = harness({ keys: { 'ours.test': keys } });
      const replies = await sendOne(h, [...prefix]);
      assert.deepEqual(h.keyLookups, ['ours.test']);
      assert.equal(h.seen.length, 0, 'outbound mail is not verified');
      assert.deepEqual(replies.map((r) => r.type), ['insHeader', 'insHeader', 'continue']);
      const sigs = replies.slice(0, 2).map((r) => r as Extract<MilterReply, { type: 'insHeader' }>);
      const algorithms = new Set<string>();
      for (const s of sigs) {
        assert.equal(s.name, 'DKIM-Signature');
        assert.equal(s.index, 0);
        const value = s.value.toString();
        assert.match(value, /^ /, 'brings its own leading space (HDR_LEADSPC)');
        assert.ok(!value.includes('\r'), 'LF folds only');
        assert.match(value, /d=ours\.test;/);
        assert.match(value, /h=[^;]*from/i);
        assert.match(value, /h=[^;]*subject/i);
        assert.ok(value.replace(/\s+/g, '').includes(`bh=${bodyHash};`), value);
        algorithms.add(/a=([\w-]+)/.exec(value)![1]!);
      }
      assert.deepEqual([...algorithms].sort(), ['ed25519-sha256', 'rsa-sha256']);
      assert.equal(h.reports[0]!.direction, 'outbound');
      assert.equal(h.reports[0]!.signed?.length, 2);
    });
  }

  it('looks up the envelope sender domain without From: (unsignable, RFC 6376 §5.4: passed unsigned, logged), and passes mail from a domain without keys unsigned', async () => {
    const h = harness({ keys: { 'ours.test': keys } });
    const r1 = await h.send(OPTNEG, ...CONNECT, ...mail('bob@ours.test', { '{auth_authen}': 'bob' }), header('Subject', ' no from'), { type: 'eoh' }, { type: 'body', chunk: body }, { type: 'bodyEob' });
    assert.deepEqual(h.keyLookups, ['ours.test']);
    assert.deepEqual(r1.map((r) => r.type), ['continue']);
    assert.match(h.reports[0]!.reason!, /not signed with ed1\._domainkey\.ours\.test: .*; s1\._domainkey/);
    const h2 = harness({ keys: { 'ours.test': keys } });
    const r2 = await sendOne(h2, [...CONNECT, ...mail('x@ours.test', { '{auth_authen}': 'x' })], ' someone@elsewhere.test');
    assert.deepEqual(r2.map((r) => r.type), ['continue']);
    assert.deepEqual(h2.keyLookups, ['elsewhere.test']);
    assert.match(h2.reports[0]!.reason!, /no signing key for elsewhere\.test/);
  });

  it('verifies (not signs) an unauthenticated SMTP client, and honours sign_authenticated: false', async () => {
    const h = harness({ keys: { 'ours.test': keys } });
    await sendOne(h, [...CONNECT, ...mail('alice@ours.test')]);
    assert.equal(h.reports[0]!.direction, 'inbound');
    assert.deepEqual(h.keyLookups, []);
    const cfg = config();
    const off = harness({ keys: { 'ours.test': keys }, config: { ...cfg, signing: { ...cfg.signing, signAuthenticated: false } } });
    await sendOne(off, [...CONNECT, ...mail('alice@ours.test', { '{auth_authen}': 'alice' })]);
    assert.equal(off.reports[0]!.direction, 'inbound');
  });

  it('answers on_error when the key store fails', async () => {
    const h = harness({ config: config({ onError: 'tempfail' }), keys: new Error('EACCES key dir') });
    const replies = await h.send(OPTNEG, ...CONNECT, ...mail('a@ours.test', { '{auth_authen}': 'a' }), header('From', ' a@ours.test'), { type: 'eoh' }, { type: 'body', chunk: 'x' }, { type: 'bodyEob' });
    assert.deepEqual(replies.map((r) => r.type), ['tempfail']);
    assert.equal(h.reports[0]!.action, 'tempfail');
    assert.match(String((h.reports[0]!.error as Error).message), /EACCES/);
  });
});

describe('milter session: the sign and release seams (the worker pool plugs in here)', () => {
  const KEY: SigningKey = { domain: 'ours.test', selector: 's1', algorithm: 'rsa-sha256', privateKeyPem: 'unused by the fake signer' };
  /** A session whose verifier, signer and release are recorded. */
  const recorded = () => {
    const released: Readable[] = [];
    const streams: Readable[] = [];
    const signedWith: SigningKey[][] = [];
    const runtime: MilterRuntime = {
      config: config(),
      resolver: async () => {
        throw Object.assign(new Error('no DNS in unit tests'), { code: 'ENOTFOUND' });
      },
      signingKeys: (domain) => (domain === 'ours.test' ? [KEY] : []),
      async verify(message) {
        streams.push(message as Readable);
        for await (const _ of message as Readable) void _;
        return verdict();
      },
      async sign(message, keys) {
        streams.push(message as Readable);
        signedWith.push([...keys]);
        const chunks: Buffer[] = [];
        for await (const c of message as Readable) chunks.push(c as Buffer);
        return { signatures: `DKIM-Signature: v=1; d=ours.test; s=s1; bh=${Buffer.concat(chunks).length}\r\n`, errors: [] };
      },
      release: (message) => void released.push(message),
    };
    const session = new MilterSession({ runtime: () => runtime, log: pino({ level: 'silent' }) });
    const send = async (...cmds: MilterCommandInput[]) => {
      const decoder = new MilterDecoder();
      const out: MilterReply[] = [];
      const replies = new MilterReplyDecoder();
      for (const c of cmds) for (const cmd of decoder.push(encodeCommand(c))) for (const r of await session.handle(cmd)) out.push(...replies.push(encodeReply(r)));
      return out;
    };
    return { session, send, released, streams, signedWith };
  };
  const inbound = [header('From', ' a@sender.test'), header('Subject', ' in'), { type: 'eoh' } as const, { type: 'body', chunk: 'Hi\r\n' } as const];

  it('signs through runtime.sign with the From: domain\'s keys and inserts what it returns', async () => {
    const r = recorded();
    const replies = await r.send(OPTNEG, macro('C', { '{daemon_name}': 'ORIGINATING' }), { type: 'connect', hostname: 'pc.lan', family: '4', port: 50000, address: '10.0.0.5' }, ...mail('alice@ours.test'),
      header('From', ' alice@ours.test'), { type: 'eoh' }, { type: 'body', chunk: 'Hello\r\n' }, { type: 'bodyEob' });
    assert.deepEqual(r.signedWith, [[KEY]]);
    const ins = replies.find((x) => x.type === 'insHeader');
    assert.ok(ins?.type === 'insHeader');
    assert.equal(ins.name, 'DKIM-Signature');
    // The signer read the whole message: header, empty line, body.
    assert.match(ins.value.toString(), /bh=\d+$/);
    assert.equal(Number(/bh=(\d+)/.exec(ins.value.toString())?.[1]), ' alice@ours.test'.length + 'From:'.length + 2 + 2 + 'Hello\r\n'.length);
    assert.deepEqual(r.released, r.streams);
  });

  it('calls release once the message is over: answered, aborted, next MAIL, connection gone', async () => {
    const r = recorded();
    await r.send(OPTNEG, ...CONNECT, ...mail(), ...inbound, { type: 'bodyEob' });
    assert.equal(r.streams.length, 1);
    assert.deepEqual(r.released, [r.streams[0]]);
    await r.send(...mail(), ...inbound, { type: 'abort' });
    assert.deepEqual(r.released.slice(1), [r.streams[1]]);
    await r.send(...mail(), ...inbound, ...mail());
    assert.deepEqual(r.released.slice(2), [r.streams[2]]);
    await r.send(...inbound);
    r.session.close();
    assert.deepEqual(r.released.slice(3), [r.streams[3]]);
    assert.equal(r.streams.length, 4);
  });
});

describe('milter headers', () => {
  it('headerBytes leaves existing CRLF alone and converts bare LF', () => {
    assert.equal(headerBytes({ name: 'A', value: Buffer.from(' x\r\n y\n z') }).toString(), 'A: x\r\n y\r\n z\r\n');
  });
  it('headerIndexes counts per name, case-insensitively, and lists the last first', () => {
    const hs = ['A', 'b', 'a', 'A', 'c'].map((name, i) => ({ name, value: Buffer.from(String(i)) }));
    assert.deepEqual(headerIndexes(hs, 'a', (h) => h.value.toString() !== '2'), [3, 1]);
  });
  it('authservIdOf reads the first token after comments and handles quoted ids', () => {
    assert.equal(authservIdOf(' (x) Example.ORG 1; spf=pass'), 'example.org');
    assert.equal(authservIdOf(' "mx.example.org"; none'), 'mx.example.org');
    assert.equal(authservIdOf(' mx.example.org;dkim=pass'), 'mx.example.org');
    assert.equal(authservIdOf(' '), undefined);
  });
  it('firstAddressDomain and newestArcSealer', () => {
    assert.equal(firstAddressDomain(' "A, B" <x@Example.ORG> (comment)'), 'example.org');
    assert.equal(firstAddressDomain(' x@example.org'), 'example.org');
    assert.equal(firstAddressDomain(' undisclosed-recipients:;'), undefined);
    assert.equal(newestArcSealer([
      { name: 'ARC-Seal', value: Buffer.from(' i=2; d=b.test; s=x') },
      { name: 'arc-seal', value: Buffer.from(' i=1; d=a.test; s=x') },
    ]), 'b.test');
  });
});
