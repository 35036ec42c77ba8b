// One milter connection = one SMTP session (Postfix never reuses them,
// postfix.md §3.4): the state machine behind the socket. Protocol-free apart
// from the codec's command and reply objects, so unit tests drive it directly.
//
// Per message (reset on MAIL and ABORT) it collects the envelope and the
// headers, decides the direction at the end of the header, and then streams
// the message (header section rebuilt byte for byte, body chunks as they
// come) into mailauth: the verifier for inbound mail, the DKIM signer for
// ours. Nothing is decided before end of message (modifications are only
// legal there, and non_smtpd_milters must never reject RCPT), so every other
// step is negotiated as "no reply": Postfix pipelines and we only answer EOM.
//
// Fail-safe: an internal error or a missed deadline answers the configured
// on_error (accept, logged; or tempfail), never a reject.
import { PassThrough, type Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { NetworkList, normalizeIp } from '../core/network.ts';
import { sealArc, verifyMessage, type MessageAuthVerdict } from '../checks/message-auth.ts';
import type { ForwardingVerdict } from '../checks/forwarding.ts';
import type { DnsResolver } from '../dns/resolver.ts';
import type { SpfMemory } from '../checks/spf-memory.ts';
import type { DkimKey } from '../dkim/keys.ts';
import { signMessage, type SignOutcome } from './dkim-sign.ts';
import { commandExpectsReply, negotiate, replyCode, type MilterCommand, type MilterReplyInput, type MilterWants } from './codec.ts';
import { SMFIF, SMFIP } from './constants.ts';
import type { MilterConfig } from './config.ts';
import {
  authservIdOf, domainMatches, envelopeDomain, firstAddressDomain, headerBytes, headerIndexes, milterValue,
  newestArcSealer, splitHeaderFields, tagList, type ReceivedHeader,
} from './headers.ts';

/** A key the signer can use. */
export type SigningKey = Pick<DkimKey, 'domain' | 'selector' | 'algorithm' | 'privateKeyPem'>;

/** What a message needs from the running daemon; read once per message, so a reload applies to the next one. */
export interface MilterRuntime {
  readonly config: MilterConfig;
  readonly resolver: DnsResolver;
  /** The daemon's SPF verdicts (shared with the policy service): one SPF evaluation per message. */
  readonly spfMemory?: SpfMemory;
  /** The keys that sign mail from `domain` (RSA and/or Ed25519); [] = send unsigned. May throw. */
  signingKeys(domain: string): readonly SigningKey[];
  /** The verifier; default verifyMessage (tests and the bench may substitute). */
  readonly verify?: typeof verifyMessage;
  /**
   * milter.arc: where virtual_alias_maps sends mail for `recipient`, expanded
   * as Postfix's cleanup does. Absent: no directory, nothing is sealed. May reject.
   */
  forwarding?(recipient: string): Promise<ForwardingVerdict>;
  /** milter.arc: the key that seals (milter.arc.domain/selector), undefined when there is none. May throw. */
  arcSealingKey?(): SigningKey | undefined;
  /** The sealer; default sealArc (tests substitute). */
  readonly seal?: typeof sealArc;
  /** The DKIM signer; default signMessage (mailauth's dkimSign). */
  readonly sign?: typeof signMessage;
  /**
   * The session is done with the message `verify` or `sign` was reading
   * (answered, failed, aborted, connection gone); called once or more per
   * message. The worker pool frees what it keeps for the message (ARC sealing
   * material, a verification still running).
   */
  readonly release?: (message: Readable) => void;
}

/** Header for Sieve (`if header :is "X-Mailwarden-DMARC" "quarantine" { fileinto "Junk"; }`). */
export const QUARANTINE_HEADER = 'X-Mailwarden-DMARC';
const AR = 'Authentication-Results';

/**
 * What we ask Postfix for. Actions: add/insert headers, delete forged ones,
 * hold. Skipped: RCPT, DATA, UNKNOWN. No replies except at end of message.
 * HDR_LEADSPC keeps header values byte-exact. Macros: {daemon_name} at
 * CONNECT (signing by master.cf service), {auth_authen} at MAIL (SASL),
 * the queue ID at EOH/EOM for the log.
 */
export const MILTER_WANTS: MilterWants = {
  actions: SMFIF.ADDHDRS | SMFIF.CHGHDRS | SMFIF.QUARANTINE,
  protocol:
    SMFIP.NORCPT | SMFIP.NODATA | SMFIP.NOUNKNOWN |
    SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL | SMFIP.NR_HDR | SMFIP.NR_EOH | SMFIP.NR_BODY |
    SMFIP.HDR_LEADSPC,
  symbolLists: {
    connect: ['{daemon_name}'],
    envfrom: ['{auth_authen}', 'i'],
    eoh: ['i'],
    eom: ['i'],
  },
};

/**
 * With milter.arc.seal on, the envelope recipients too (still no reply:
 * RCPT never waits for us); read at OPTNEG, so a reload that turns sealing
 * on applies to new connections (Postfix opens one per SMTP session).
 */
export const MILTER_WANTS_WITH_RCPT: MilterWants = {
  ...MILTER_WANTS,
  protocol: (MILTER_WANTS.protocol & ~SMFIP.NORCPT) | SMFIP.NR_RCPT,
};

/** Recipients checked for forwarding per message; Postfix's smtpd_recipient_limit is 1000 by default. */
const MAX_CHECKED_RECIPIENTS = 1000;
/** Foreign addresses named in the log line. */
const MAX_LOGGED_TARGETS = 10;

export type Direction = 'inbound' | 'outbound';

/** One message's outcome, as logged. */
export interface MessageReport {
  readonly queueId: string;
  readonly client: string;
  readonly helo: string;
  readonly sender: string;
  readonly direction: Direction;
  /** Why it is outbound: authenticated, daemon_name, local submission. */
  readonly origin?: string;
  readonly size: number;
  readonly action: 'accept' | 'reject' | 'hold' | 'header' | 'tempfail';
  readonly reason?: string;
  readonly verdict?: MessageAuthVerdict;
  readonly arcSealer?: string;
  /** Forged Authentication-Results headers removed. */
  readonly removed?: number;
  readonly signed?: ReadonlyArray<{ d: string; s: string; a: string }>;
  /** milter.arc.seal on, inbound and not rejected: whether we sealed, and why (not). */
  readonly arcSeal?: ArcSealReport;
  readonly error?: unknown;
  /** From MAIL to our answer. */
  readonly ms: number;
  /** From end of message to our answer: what Postfix (and the SMTP client) waited for. */
  readonly eomMs: number;
}

/** One sealing decision, as logged (`arc_seal`). */
export interface ArcSealReport {
  readonly sealed: boolean;
  readonly reason?: string;
  /** i= and cv= of our set. */
  readonly instance?: number;
  readonly cv?: string;
  readonly d?: string;
  readonly s?: string;
  /** Addresses outside our domains the recipients expand to (the first few). */
  readonly forwardedTo?: readonly string[];
  /** What went wrong (the message was still delivered, unsealed, unless on_error is tempfail). */
  readonly error?: string;
}

export interface MilterSessionOptions {
  readonly runtime: () => MilterRuntime;
  readonly log: Logger;
  /** Sends SMFIR_PROGRESS now (the end-of-message work keeps Postfix waiting). */
  readonly progress?: () => void;
  readonly progressIntervalMs?: number;
  /** Called with every finished message (after it is logged). */
  readonly onMessage?: (report: MessageReport) => void;
}

const PROGRESS_INTERVAL_MS = 10_000;
/** Room for a few 64 KiB body chunks before we wait for mailauth. */
const STREAM_OPTIONS = { highWaterMark: 256 * 1024 } as const;
const CONTINUE: MilterReplyInput = { type: 'continue' };

interface Work<T> {
  /** The message as mailauth reads it. */
  readonly stream: PassThrough;
  readonly result: Promise<T>;
}

/** One RCPT's forwarding check, started at RCPT and read at end of message. */
interface RecipientCheck {
  readonly recipient: string;
  verdict?: ForwardingVerdict;
  error?: unknown;
  done?: Promise<void>;
}

interface Message {
  readonly started: number;
  eomStarted?: number;
  sender: string;
  headers: ReceivedHeader[];
  size: number;
  /** Set at end of header. */
  direction?: Direction;
  origin?: string;
  streaming: boolean;
  verify?: Work<MessageAuthVerdict>;
  sign?: Work<SignOutcome> & { readonly keys: readonly SigningKey[] };
  /** Outbound with no key for the domain (logged at end of message). */
  unsignedDomain?: string;
  oversized: boolean;
  failure?: unknown;
  /** milter.arc.seal: the recipients' forwarding checks. */
  readonly recipients: RecipientCheck[];
  /** Read at MAIL: one configuration for the whole message. */
  readonly runtime: MilterRuntime;
}

export class MilterSession {
  readonly #opts: MilterSessionOptions;
  readonly #log: Logger;
  #protocol = 0;
  #client = { hostname: '', address: '', family: '', port: 0 };
  #helo = '';
  readonly #macros = new Map<string, string>();
  #message: Message | undefined;
  #closed = false;

  constructor(opts: MilterSessionOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  /** The negotiated SMFIP_* flags (0 before OPTNEG). */
  get protocol(): number {
    return this.#protocol;
  }

  /** True between MAIL and the end (or abort) of that message. */
  get inMessage(): boolean {
    return this.#message !== undefined;
  }

  /**
   * Handles one command; resolves to the replies to send, in order (empty
   * when Postfix expects none). Never rejects.
   */
  async handle(cmd: MilterCommand): Promise<MilterReplyInput[]> {
    try {
      const replies = await this.#dispatch(cmd);
      if (replies !== undefined) return replies;
    } catch (err) {
      if (cmd.type === 'optneg') throw err; // the server closes: no protocol without a negotiation
      // Remembered for the end of message, which answers on_error.
      if (this.#message) this.#message.failure ??= err;
      else this.#log.error({ err, command: cmd.type }, 'milter command failed');
    }
    return cmd.type === 'optneg' || !commandExpectsReply(cmd, this.#protocol) ? [] : [CONTINUE];
  }

  /** The connection is gone: stop the work in flight. */
  close(): void {
    this.#closed = true;
    this.#abandon();
  }

  async #dispatch(cmd: MilterCommand): Promise<MilterReplyInput[] | undefined> {
    switch (cmd.type) {
      case 'optneg': {
        const n = negotiate(cmd, this.#sealingOn() ? MILTER_WANTS_WITH_RCPT : MILTER_WANTS);
        this.#protocol = n.reply.protocol;
        if (n.missingActions !== 0 || n.missingProtocol !== 0) {
          this.#log.warn({ missingActions: n.missingActions, missingProtocol: n.missingProtocol }, 'the MTA does not offer everything the milter wants');
        }
        return [n.reply];
      }
      case 'macro':
        for (const [name, value] of cmd.macros) this.#macros.set(name, value);
        return undefined;
      case 'connect':
        this.#client = { hostname: cmd.hostname, address: cmd.address, family: cmd.family, port: cmd.port };
        return undefined;
      case 'helo':
        this.#helo = cmd.name;
        return undefined;
      case 'mail':
        this.#abandon();
        this.#message = {
          started: performance.now(),
          sender: (cmd.args[0] ?? '').replace(/^<|>$/g, ''),
          headers: [],
          size: 0,
          streaming: false,
          oversized: false,
          recipients: [],
          runtime: this.#opts.runtime(),
        };
        return undefined;
      case 'rcpt':
        if (this.#message) this.#checkRecipient(this.#message, cmd.args[0] ?? '');
        return undefined;
      case 'header': {
        const m = this.#message;
        if (!m || m.streaming) return undefined;
        // Copied: the codec's Buffer points into a 64 KiB socket chunk we should not pin.
        const h = { name: cmd.name, value: Buffer.from(cmd.value) };
        m.headers.push(h);
        this.#count(m, cmd.name.length + cmd.value.length + 3);
        return undefined;
      }
      case 'eoh':
        if (this.#message) this.#begin(this.#message);
        return undefined;
      case 'body':
        if (this.#message) await this.#body(this.#message, cmd.chunk);
        return undefined;
      case 'bodyEob': {
        const m = this.#message;
        if (!m) return [CONTINUE];
        try {
          if (cmd.chunk) await this.#body(m, cmd.chunk);
          return await this.#endOfMessage(m);
        } catch (err) {
          return this.#failed(err, m);
        } finally {
          if (this.#message === m) this.#message = undefined;
        }
      }
      case 'abort':
        this.#abandon();
        return undefined;
      case 'quit':
      case 'quitNc':
        this.#abandon();
        return undefined;
      case 'data':
      case 'unknown':
        return undefined;
    }
  }

  #count(m: Message, bytes: number): void {
    m.size += bytes;
    const max = m.runtime.config.maxMessageSize;
    if (!m.oversized && max > 0 && m.size > max) {
      m.oversized = true;
      // Stop feeding mailauth: the message passes unverified/unsigned (logged at the end).
      this.#stopWork(m, new Error('message exceeds max_message_size'));
    }
  }

  /** End of header: pick the direction and start streaming into mailauth. */
  #begin(m: Message): void {
    if (m.streaming) return;
    m.streaming = true;
    const runtime = m.runtime;
    const { direction, origin } = this.#direction(runtime.config);
    m.direction = direction;
    if (origin) m.origin = origin;
    if (m.oversized || m.failure) return;
    if (direction === 'outbound') {
      const from = m.headers.find((h) => h.name.toLowerCase() === 'from');
      const domain = (from ? firstAddressDomain(from.value) : undefined) ?? envelopeDomain(m.sender);
      const keys = domain ? runtime.signingKeys(domain) : [];
      if (keys.length === 0) {
        m.unsignedDomain = domain ?? '';
        return;
      }
      const stream = new PassThrough(STREAM_OPTIONS);
      const result = (runtime.sign ?? signMessage)(stream, keys);
      result.catch(() => undefined);
      m.sign = { stream, result, keys };
    } else {
      const stream = new PassThrough(STREAM_OPTIONS);
      const result = (runtime.verify ?? verifyMessage)(
        stream,
        { clientIp: this.#clientIp(), helo: this.#helo, sender: m.sender, authservId: runtime.config.authservId },
        runtime.resolver,
        {
          ...(runtime.spfMemory ? { spfMemory: runtime.spfMemory } : {}),
          ...(this.#mayForward(m) ? { prepareArcSeal: true } : {}),
        },
      );
      result.catch(() => undefined);
      m.verify = { stream, result };
    }
    const stream = (m.sign ?? m.verify)!.stream;
    // mailauth listens for errors itself; this one keeps a stream we destroy early from ever being an unhandled 'error'.
    stream.on('error', () => undefined);
    for (const h of m.headers) stream.write(headerBytes(h));
    stream.write('\r\n');
  }

  /** Writes one body chunk, waiting while mailauth is behind (backpressure reaches Postfix through the socket). */
  async #body(m: Message, chunk: Buffer): Promise<void> {
    if (!m.streaming) this.#begin(m);
    this.#count(m, chunk.length);
    const work = m.sign ?? m.verify;
    if (!work || m.oversized || work.stream.destroyed) return;
    if (!work.stream.write(chunk)) await drainedOrGone(work.stream);
  }

  #direction(config: MilterConfig): { direction: Direction; origin?: string } {
    const s = config.signing;
    const auth = this.#macros.get('{auth_authen}');
    if (s.signAuthenticated && auth) return { direction: 'outbound', origin: 'authenticated' };
    const daemon = this.#macros.get('{daemon_name}');
    if (daemon && s.daemonNames.includes(daemon)) return { direction: 'outbound', origin: `daemon_name=${daemon}` };
    if (s.localSubmissions && this.#isLocalSubmission()) return { direction: 'outbound', origin: 'local_submission' };
    return { direction: 'inbound' };
  }

  /**
   * sendmail(1)/pickup mail through non_smtpd_milters: Postfix's cleanup
   * emulates a connection from "localhost" 127.0.0.1 with port 0
   * (cleanup_milter_client_init); a real SMTP client always has a port.
   */
  #isLocalSubmission(): boolean {
    const c = this.#client;
    return c.family === '4' && c.address === '127.0.0.1' && c.port === 0 && c.hostname === 'localhost';
  }

  #clientIp(): string {
    if (this.#isLocalSubmission()) return '';
    return normalizeIp(this.#client.address) ?? '';
  }

  async #endOfMessage(m: Message): Promise<MilterReplyInput[]> {
    m.eomStarted = performance.now();
    if (!m.streaming) this.#begin(m);
    const config = m.runtime.config;
    const base = this.#base(m);
    if (m.failure) return this.#failed(m.failure, m);
    const sanitize = m.direction === 'inbound' ? this.#sanitize(m, config) : [];
    if (m.oversized) {
      return this.#finish(m, { ...base, action: 'accept', reason: `larger than max_message_size (${config.maxMessageSize} bytes): not ${m.direction === 'inbound' ? 'verified' : 'signed'}`, removed: sanitize.length }, [...sanitize, CONTINUE]);
    }
    if (m.direction === 'outbound') {
      if (!m.sign) return this.#finish(m, { ...base, action: 'accept', reason: `no signing key for ${m.unsignedDomain || 'the sender domain'}` }, [CONTINUE]);
      m.sign.stream.end();
      const outcome = await this.#wait(m.sign.result, config.timeoutMs);
      if ('err' in outcome) return this.#failed(outcome.err, m);
      const fields = splitHeaderFields(outcome.value.signatures);
      const signed = fields.map((f) => {
        const t = tagList(f.value);
        return { d: t.get('d') ?? '', s: t.get('s') ?? '', a: t.get('a') ?? '' };
      });
      // mailauth reports a key it could not sign with (unusable key, no From: to sign) and goes on with the others.
      const failures = outcome.value.errors.map((e) => {
        const x = e as { selector?: string; signingDomain?: string; err?: { message?: string } };
        return `${x.selector ?? '?'}._domainkey.${x.signingDomain ?? '?'}: ${x.err?.message ?? String(e)}`;
      });
      const replies: MilterReplyInput[] = fields
        .reverse()
        .map((f) => ({ type: 'insHeader', index: 0, name: f.name, value: milterValue(f.value) }));
      return this.#finish(m, {
        ...base,
        action: 'accept',
        signed,
        ...(failures.length ? { reason: `not signed with ${failures.join('; ')}` } : {}),
      }, [...replies, CONTINUE]);
    }
    const verify = m.verify!;
    verify.stream.end();
    const outcome = await this.#wait(verify.result, config.timeoutMs);
    if ('err' in outcome) return this.#failed(outcome.err, m);
    const verdict = outcome.value;
    const arcSealer = newestArcSealer(m.headers);
    const decision = decideDmarc(verdict, { clientIp: this.#clientIp(), arcSealer, config });
    let report: Omit<MessageReport, 'ms' | 'eomMs'> = {
      ...base,
      action: decision.action,
      ...(decision.reason ? { reason: decision.reason } : {}),
      verdict,
      ...(arcSealer ? { arcSealer } : {}),
      removed: sanitize.length,
    };
    if (decision.action === 'reject') {
      return this.#finish(m, report, [replyCode(550, '5.7.1', `Rejected by DMARC policy for ${verdict.dmarc?.domain ?? 'the sender domain'}`)]);
    }
    const arc = await this.#arcSeal(m, verdict);
    if (arc?.error !== undefined && config.onError === 'tempfail') return this.#failed(arc.error, m);
    if (arc) report = { ...report, arcSeal: arc.report };
    const replies: MilterReplyInput[] = [
      ...sanitize,
      { type: 'insHeader', index: 0, name: AR, value: milterValue(verdict.authenticationResults) },
      // Above the A-R, ARC-Seal on top (each insert goes to index 0).
      ...(arc?.fields ?? []).slice().reverse().map((f): MilterReplyInput => ({ type: 'insHeader', index: 0, name: f.name, value: milterValue(f.value) })),
    ];
    if (decision.action === 'header') replies.push({ type: 'addHeader', name: QUARANTINE_HEADER, value: ' quarantine' });
    if (decision.action === 'hold') replies.push({ type: 'quarantine', reason: `DMARC quarantine policy of ${verdict.dmarc?.domain ?? 'the sender domain'}` });
    replies.push(CONTINUE);
    return this.#finish(m, report, replies);
  }

  /** milter.arc.seal, read from the runtime at OPTNEG (a broken runtime means no sealing, not no connection). */
  #sealingOn(): boolean {
    try {
      return this.#opts.runtime().config.arc.seal;
    } catch {
      return false;
    }
  }

  /** RCPT: starts the forwarding check of an inbound message's recipient (outbound mail is DKIM-signed, never sealed). */
  #checkRecipient(m: Message, arg: string): void {
    const rt = m.runtime;
    if (!rt.config.arc.seal || !rt.forwarding) return;
    if (this.#direction(rt.config).direction === 'outbound') return;
    const recipient = arg.trim().replace(/^<|>$/g, '');
    if (recipient === '' || m.recipients.length >= MAX_CHECKED_RECIPIENTS) return;
    const check: RecipientCheck = { recipient };
    check.done = rt.forwarding(recipient).then(
      (v) => void (check.verdict = v),
      (err: unknown) => void (check.error = err ?? new Error('forwarding check failed')),
    );
    m.recipients.push(check);
  }

  /** Could this message need a seal? Yes unless every recipient is already known to stay here. */
  #mayForward(m: Message): boolean {
    if (!m.runtime.config.arc.seal || m.recipients.length === 0) return false;
    return !m.recipients.every((c) => c.verdict && c.verdict.foreign.length === 0);
  }

  /**
   * The sealing decision for an inbound message we deliver: an ARC set when a
   * recipient forwards outside our domains. `error`: something broke (the
   * directory, the key); the caller applies on_error, the message is never lost.
   */
  async #arcSeal(m: Message, verdict: MessageAuthVerdict): Promise<{ report: ArcSealReport; fields?: Array<{ name: string; value: string }>; error?: unknown } | undefined> {
    const rt = m.runtime;
    const arc = rt.config.arc;
    if (!arc.seal) return undefined;
    if (!rt.forwarding) return { report: { sealed: false, reason: 'no directory to expand recipients with' } };
    if ((this.#protocol & SMFIP.NORCPT) !== 0) return { report: { sealed: false, reason: 'recipients unknown: this connection was opened before milter.arc.seal was on' } };
    if (m.recipients.length === 0) return { report: { sealed: false, reason: 'no recipient' } };
    const remaining = () => Math.max(1000, rt.config.timeoutMs - (performance.now() - (m.eomStarted ?? performance.now())));
    const fail = (reason: string, err: unknown): { report: ArcSealReport; error: unknown } => {
      const error = err instanceof Error ? err : new Error(String(err));
      return { report: { sealed: false, reason, error: error.message }, error };
    };
    const waited = await this.#wait(Promise.all(m.recipients.map((c) => c.done)), remaining());
    if ('err' in waited) return fail('recipients not expanded in time', waited.err);
    const broken = m.recipients.find((c) => c.error !== undefined);
    if (broken) return fail(`cannot expand ${broken.recipient}`, broken.error);
    const foreign = [...new Set(m.recipients.flatMap((c) => c.verdict?.foreign ?? []))];
    if (foreign.length === 0) return { report: { sealed: false, reason: 'no recipient forwards outside our domains' } };
    const forwardedTo = foreign.slice(0, MAX_LOGGED_TARGETS);
    let key: SigningKey | undefined;
    try {
      key = rt.arcSealingKey?.();
    } catch (err) {
      return fail('the ARC key cannot be read', err);
    }
    if (!key) {
      const which = arc.selector ? `selector ${arc.selector}` : 'an RSA signing key';
      return fail(`no ARC key: ${arc.domain ?? '(milter.arc.domain unset)'} has no active DKIM key with ${which}`, new Error(`no ARC sealing key for ${arc.domain}`));
    }
    // ARC validators in the field (Mail::DKIM, OpenARC, the big mailbox providers) check rsa-sha256 seals only.
    if (key.algorithm !== 'rsa-sha256') return fail(`ARC key ${key.selector}._domainkey.${key.domain} is ${key.algorithm}: ARC seals need an RSA key`, new Error(`ARC sealing key is ${key.algorithm}`));
    const sealed = await this.#wait((rt.seal ?? sealArc)(verdict, key), remaining());
    if ('err' in sealed) return fail('ARC sealing did not finish', sealed.err);
    const o = sealed.value;
    const where = { d: key.domain, s: key.selector, forwardedTo };
    if (!o.sealed) {
      if ('error' in o) return { ...fail(o.reason, o.error), report: { sealed: false, reason: o.reason, ...where, error: o.error.message } };
      return { report: { sealed: false, reason: o.reason, ...where } };
    }
    return {
      report: { sealed: true, instance: o.instance, cv: o.cv, ...where, ...(o.reason ? { reason: o.reason } : {}) },
      fields: splitHeaderFields(o.fields.join('\r\n')),
    };
  }

  /** Deletes Authentication-Results headers that claim our authserv-id, and our own quarantine marker. */
  #sanitize(m: Message, config: MilterConfig): MilterReplyInput[] {
    const ours = config.authservId.toLowerCase();
    const forged = headerIndexes(m.headers, AR, (h) => authservIdOf(h.value) === ours);
    const marks = headerIndexes(m.headers, QUARANTINE_HEADER, () => true);
    return [
      ...forged.map((index): MilterReplyInput => ({ type: 'chgHeader', index, name: AR, value: '' })),
      ...marks.map((index): MilterReplyInput => ({ type: 'chgHeader', index, name: QUARANTINE_HEADER, value: '' })),
    ];
  }

  /** Waits for mailauth with PROGRESS every ~10 s and the configured deadline. */
  async #wait<T>(work: Promise<T>, deadlineMs: number): Promise<{ value: T } | { err: unknown }> {
    const every = this.#opts.progressIntervalMs ?? PROGRESS_INTERVAL_MS;
    const progress = this.#opts.progress;
    const ticker = progress ? setInterval(() => {
      if (!this.#closed) progress();
    }, every) : undefined;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<{ err: unknown }>((resolve) => {
      timer = setTimeout(() => resolve({ err: new Error(`end-of-message work took longer than ${deadlineMs} ms`) }), deadlineMs);
    });
    try {
      return await Promise.race([work.then((value) => ({ value }), (err: unknown) => ({ err })), deadline]);
    } finally {
      clearInterval(ticker);
      clearTimeout(timer);
    }
  }

  #base(m: Message): Omit<MessageReport, 'action' | 'ms' | 'eomMs'> {
    return {
      queueId: this.#macros.get('i') ?? '',
      client: `${this.#client.hostname}[${this.#client.address}]`,
      helo: this.#helo,
      sender: m.sender,
      direction: m.direction ?? 'inbound',
      ...(m.origin ? { origin: m.origin } : {}),
      size: m.size,
    };
  }

  /** on_error: accept (nothing changed) or tempfail; logged as an error line. */
  #failed(err: unknown, m: Message): MilterReplyInput[] {
    const onError = m.runtime.config.onError;
    this.#stopWork(m, new Error('abandoned after a failure'));
    return this.#finish(m, { ...this.#base(m), action: onError, error: err }, [onError === 'tempfail' ? { type: 'tempfail' } : CONTINUE]);
  }

  #finish(m: Message, report: Omit<MessageReport, 'ms' | 'eomMs'>, replies: MilterReplyInput[]): MilterReplyInput[] {
    this.#release(m);
    const now = performance.now();
    const full: MessageReport = { ...report, ms: Math.round(now - m.started), eomMs: Math.round(now - (m.eomStarted ?? now)) };
    if (full.error !== undefined) this.#log.error(logFields(full), 'milter message failed; answering on_error');
    // A seal that failed: delivered unsealed, but somebody should look.
    else if (full.arcSeal?.error !== undefined) this.#log.error(logFields(full), 'milter message');
    else this.#log.info(logFields(full), 'milter message');
    try {
      this.#opts.onMessage?.(full);
    } catch (err) {
      this.#log.error({ err }, 'milter onMessage hook failed');
    }
    return replies;
  }

  #stopWork(m: Message, why: Error): void {
    for (const w of [m.verify, m.sign]) if (w && !w.stream.destroyed) w.stream.destroy(why);
  }

  /** Drops the message in progress (ABORT, next MAIL, QUIT, connection gone). */
  #abandon(): void {
    const m = this.#message;
    this.#message = undefined;
    if (m) {
      this.#stopWork(m, new Error('message aborted'));
      this.#release(m);
    }
  }

  /** Tells the verifier/signer we are done with the message (the worker pool frees its state). */
  #release(m: Message): void {
    const release = m.runtime.release;
    if (!release) return;
    for (const w of [m.verify, m.sign]) {
      if (!w) continue;
      try {
        release(w.stream);
      } catch (err) {
        this.#log.error({ err }, 'milter release hook failed');
      }
    }
  }
}

export interface DmarcDecision {
  readonly action: 'accept' | 'reject' | 'hold' | 'header';
  readonly reason?: string;
}

/**
 * The local policy on top of the DMARC verdict: p=reject → reject (or what
 * dmarc.reject says), p=quarantine → dmarc.quarantine; exempt author domains,
 * exempt client networks and ARC pass from a trusted sealer are reported but
 * not enforced.
 */
export function decideDmarc(
  verdict: Pick<MessageAuthVerdict, 'dmarc' | 'arc'>,
  ctx: { readonly clientIp: string; readonly arcSealer: string | undefined; readonly config: Pick<MilterConfig, 'dmarc'> },
): DmarcDecision {
  const d = verdict.dmarc;
  if (!d || d.result !== 'fail' || !d.policy || d.policy === 'none') return { action: 'accept' };
  const cfg = ctx.config.dmarc;
  let wanted: 'reject' | 'quarantine' | 'accept' = d.policy === 'reject' ? cfg.reject : 'quarantine';
  if (wanted === 'accept') return { action: 'accept', reason: `dmarc p=${d.policy} not enforced (dmarc.reject: accept)` };
  if (d.domain && domainMatches(d.domain.toLowerCase(), cfg.exemptDomains)) return { action: 'accept', reason: `dmarc p=${d.policy} not enforced: exempt domain ${d.domain}` };
  if (ctx.clientIp && inNetworks(ctx.clientIp, cfg.exemptNetworks)) return { action: 'accept', reason: `dmarc p=${d.policy} not enforced: exempt network` };
  if (verdict.arc === 'pass' && ctx.arcSealer && domainMatches(ctx.arcSealer, cfg.trustedArcSealers)) {
    return { action: 'accept', reason: `dmarc p=${d.policy} not enforced: ARC pass sealed by trusted ${ctx.arcSealer}` };
  }
  if (wanted === 'reject') return { action: 'reject', reason: `dmarc p=reject` };
  const q = cfg.quarantine;
  if (q === 'accept') return { action: 'accept', reason: `dmarc p=${d.policy} quarantine not enforced (dmarc.quarantine: accept)` };
  return { action: q, reason: `dmarc p=${d.policy}` };
}

/** Built once per configured list (config objects are frozen and live until a reload). */
const networkCache = new WeakMap<readonly string[], NetworkList>();

function inNetworks(ip: string, cidrs: readonly string[]): boolean {
  let list = networkCache.get(cidrs);
  if (!list) {
    list = new NetworkList(cidrs);
    networkCache.set(cidrs, list);
  }
  return list.has(ip);
}

/** Resolves when the stream takes more data, or when it is gone (destroyed, errored). */
function drainedOrGone(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/** The one JSON log line per message. */
function logFields(r: MessageReport): Record<string, unknown> {
  const v = r.verdict;
  return {
    queue_id: r.queueId,
    client: r.client,
    helo: r.helo,
    sender: r.sender,
    direction: r.direction,
    ...(r.origin ? { origin: r.origin } : {}),
    size: r.size,
    ...(v
      ? {
          from_domain: v.dmarc?.domain ?? null,
          dkim: v.dkim.map((k) => ({ d: k.domain, s: k.selector, a: k.algorithm, result: k.result, aligned: k.aligned, ...(k.comment ? { comment: k.comment } : {}) })),
          spf: v.spf,
          spf_source: v.spfSource,
          dmarc: v.dmarc ? { result: v.dmarc.result, policy: v.dmarc.policy ?? null } : v.dmarcSkipped ? { skipped: v.dmarcSkipped } : null,
          arc: v.arc,
          ...(r.arcSealer ? { arc_sealer: r.arcSealer } : {}),
        }
      : {}),
    ...(r.removed ? { removed_forged: r.removed } : {}),
    ...(r.signed ? { signed: r.signed } : {}),
    ...(r.arcSeal ? { arc_seal: arcSealFields(r.arcSeal) } : {}),
    action: r.action,
    ...(r.reason ? { reason: r.reason } : {}),
    ...(r.error !== undefined ? { err: r.error } : {}),
    ms: r.ms,
    eom_ms: r.eomMs,
  };
}

function arcSealFields(a: ArcSealReport): Record<string, unknown> {
  return {
    sealed: a.sealed,
    ...(a.instance !== undefined ? { i: a.instance, cv: a.cv } : {}),
    ...(a.d ? { d: a.d, s: a.s } : {}),
    ...(a.forwardedTo ? { forwarded_to: a.forwardedTo } : {}),
    ...(a.reason ? { reason: a.reason } : {}),
    ...(a.error ? { error: a.error } : {}),
  };
}
