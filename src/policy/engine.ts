// The policy decision: which checks run for a request, in what order, and the
// one access(5) action that comes out. Checks are protocol-free functions in
// src/checks; this file only composes them and words the answers.
//
// Order at RCPT (cheap and local first, DNS last):
//   1. relay: routing tricks, then foreign domains for untrusted clients;
//   2. recipient existence in our domains;
//   3. SASL clients: sender ownership, send rate; then done (no DNS checks);
//   4. mynetworks clients: done;
//   5. everyone else: DNSBL, RHSBL, FCrDNS, HELO and SPF (in parallel, once
//      per message), then greylisting.
// Pass is DUNNO, never OK (OK would skip the restrictions after us), plus a
// Received-SPF PREPEND once per message. Reject texts carry no address:
// Postfix itself prefixes "<address>: Recipient address rejected: ".
//
// One decision, two speeds: the decision is written once, as a synchronous
// pass that reads every input (directory answers, DNSBL/FCrDNS/SPF verdicts)
// from a cache. When all are there (a busy MX's steady state) it answers
// without a promise. When one is missing, the pass asks for it and gives up;
// decideNow() then fetches everything asked for at once, keeps the results
// for this decision only, and runs the pass again, until it completes. So the
// fast path and the slow path cannot disagree: they are the same code.
import { NetworkList } from '../core/network.ts';
import { checkDnsbl, checkRhsbl, type DnsblResult } from '../dns/dnsbl.ts';
import type { DnsResolver } from '../dns/resolver.ts';
import { observeLifetime, type DnsLifetime } from '../dns/cache.ts';
import { normalizeDomain, parseAddress } from '../core/address.ts';
import type { LookupService } from '../lookup/service.ts';
import { classifyRecipientWith, hasSenderSpecifiedRouting, type RecipientVerdict } from '../checks/recipient.ts';
import { senderLoginWith } from '../checks/sender-login.ts';
import { answerNow, type MapReader } from '../checks/map-reader.ts';
import type { LookupResult, MapName } from '../lookup/maps.ts';
import { evaluateHeloSpf, evaluateSpf, spfDeferText, spfRejectText, type SpfVerdict } from '../checks/spf.ts';
import { checkFcrdns, type FcrdnsVerdict } from '../checks/fcrdns.ts';
import { checkHelo, type HeloVerdict } from '../checks/helo.ts';
import { checkSendRate, recordMessage } from '../checks/rate-limit.ts';
import { checkGreylist } from '../checks/greylist.ts';
import type { PolicyStateStore } from '../state/types.ts';
import { needsPolicyState, type DnsListPolicy, type RateLimitConfig, type SmtpdPolicyConfig } from './config.ts';
import type { PolicyRequest } from './request.ts';
import { VerdictCache } from './verdict-cache.ts';
import { spfMemoryKey, type SpfMemory } from '../checks/spf-memory.ts';

/** What the engine remembers about one message (one `instance`) on one connection. */
export interface MessageState {
  /** Client checks and SPF, made on the first RCPT that needs them and shared by the others. */
  inbound?: InboundChecks;
  /** Recipients accepted so far (a DUNNO answered), for the recipient rate limit. */
  acceptedRecipients: number;
  /** The Received-SPF header went out with an accepted recipient. */
  prepended: boolean;
  /** The message was counted against the sender's rate limit (at DATA). */
  counted: boolean;
}

export function newMessageState(): MessageState {
  return { acceptedRecipients: 0, prepended: false, counted: false };
}

export interface InboundChecks {
  readonly dnsbl?: DnsblResult;
  readonly rhsbl?: DnsblResult;
  readonly fcrdns?: FcrdnsVerdict;
  readonly helo?: HeloVerdict;
  readonly heloSpf?: SpfVerdict;
  readonly spf?: SpfVerdict;
}

/** The facts behind a decision, as they go into the decision's log line. */
export type CheckFacts = Record<string, unknown>;

export interface PolicyDecision {
  /** The access(5) action sent to Postfix. */
  readonly action: string;
  /** Short name of what decided: 'relay', 'unknown_recipient', 'spf', 'dnsbl', 'pass', ... */
  readonly decidedBy: string;
  readonly checks: CheckFacts;
}

export interface PolicyEngineDeps {
  readonly config: SmtpdPolicyConfig;
  readonly lookups: LookupService;
  readonly resolver: DnsResolver;
  /** Shared counters and greylist; required when rate limits or greylisting are configured. */
  readonly state?: PolicyStateStore;
  /** Wall clock in ms (tests inject one). */
  readonly now?: () => number;
  /** The daemon's SPF verdict memory, shared with the milter (src/checks/spf-memory.ts); default: the engine's own. */
  readonly spfMemory?: SpfMemory;
}

const DUNNO = 'DUNNO';
/** Verdicts are reused for up to a minute (less when the DNS answers behind them expire sooner): long enough for a client's burst of messages. */
const VERDICT_TTL_MS = 60_000;
const VERDICT_ENTRIES = 50_000;
/**
 * Temporary failures (SPF temperror, a DNSBL zone that timed out, FCrDNS
 * temperror) are held this long, like a resolver's servfail-ttl: a broken
 * domain costs one evaluation per client every few seconds instead of one per
 * message, and a dead DNS server is not waited for by every message. Held
 * verdicts stay temporary: they defer or annotate, never reject.
 */
export const TEMPORARY_HOLD_MS = 5_000;
/** Not a RCPT (or an uncounted DATA): nothing to decide. Shared, so it is never modified. */
const NOT_RCPT: PolicyDecision = Object.freeze({ action: DUNNO, decidedBy: 'not_rcpt', checks: Object.freeze({}) });

type Fetched = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly err: unknown };

/**
 * The inputs of one decision that are not at hand yet: asked for by a pass,
 * fetched together by settle(), and then read by the next pass. What was
 * fetched wins over the caches, so one decision sees one answer per input,
 * and failures (a directory error) come back as throws in the pass.
 */
class DecisionInputs {
  /** Wall clock at the start of the decision. */
  readonly now: number;
  /** Whether the decision's `checks` are wanted (they only go into the log line). */
  readonly facts: boolean;
  readonly #lookups: LookupService;
  #read: MapReader | undefined;
  #fetched: Map<string, Fetched> | undefined;
  #wanted: Map<string, Promise<unknown>> | undefined;

  constructor(now: number, lookups: LookupService, facts: boolean) {
    this.now = now;
    this.facts = facts;
    this.#lookups = lookups;
  }

  /** Directory reads for the checks in src/checks (classifyRecipientWith...); made on first use (a memo hit needs none). */
  get read(): MapReader {
    return (this.#read ??= (map, key) => this.#lookup(map, key));
  }

  /** Whether the last pass asked for something. */
  get waiting(): boolean {
    return this.#wanted !== undefined;
  }

  /** Nothing was fetched for this decision yet: every input so far came from a cache. */
  get fromCaches(): boolean {
    return this.#fetched === undefined;
  }

  /** The value fetched for `key` in this decision; undefined if none was. Throws the fetch's error. */
  fetched<T>(key: string): T | undefined {
    if (this.#fetched === undefined) return undefined;
    const f = this.#fetched.get(key);
    if (f === undefined) return undefined;
    if (f.ok) return f.value as T;
    throw f.err;
  }

  /** Asks for `key` (once per decision) to be fetched before the next pass. */
  want(key: string, fetch: () => Promise<unknown>): void {
    const wanted = (this.#wanted ??= new Map());
    if (wanted.has(key)) return;
    let pending: Promise<unknown>;
    try {
      pending = fetch();
    } catch (err) {
      pending = Promise.reject(err);
    }
    wanted.set(key, pending);
  }

  /** The fetched value, or asks for it: for inputs that are never cached across decisions (greylist, rates). */
  once<T>(key: string, fetch: () => Promise<T>): T | undefined {
    const v = this.fetched<T>(key);
    if (v === undefined) this.want(key, fetch);
    return v;
  }

  /** Waits for everything asked for; each value or error is kept for the next pass. */
  async settle(): Promise<void> {
    const wanted = this.#wanted;
    this.#wanted = undefined;
    if (wanted === undefined) return;
    const fetched = (this.#fetched ??= new Map());
    await Promise.all(
      Array.from(wanted, ([key, pending]) =>
        pending.then(
          (value) => void fetched.set(key, { ok: true, value }),
          (err: unknown) => void fetched.set(key, { ok: false, err }),
        ),
      ),
    );
  }

  #lookup(map: MapName, key: string): LookupResult | undefined {
    if (this.#fetched !== undefined) {
      const f = this.fetched<LookupResult>(`${map} ${key}`);
      if (f !== undefined) return f;
    }
    const now = answerNow(this.#lookups, map, key);
    if (now !== undefined) return now;
    this.want(`${map} ${key}`, () => this.#lookups.lookup(map, key));
    return undefined;
  }
}

export class PolicyEngine {
  readonly config: SmtpdPolicyConfig;
  readonly #lookups: LookupService;
  readonly #resolver: DnsResolver;
  readonly #state: PolicyStateStore | undefined;
  readonly #now: () => number;
  readonly #mynetworks: NetworkList;
  readonly #spfSkip: NetworkList;
  /** Names a client must not claim in HELO: our host name (and, looked up per request, every domain we host). */
  readonly #ourNames: string[];
  /** The configured send limits, or undefined when there are none. */
  readonly #sendLimits: { messages?: RateLimitConfig; recipients?: RateLimitConfig } | undefined;
  /** mynetworks (MYNETWORKS) and spf.skip_networks (SPF_SKIP) membership by client address: the lists are fixed for this engine. */
  readonly #networkMemo = new Map<string, number>();
  /** checkHelo's verdict and the name as a domain, by HELO name (not for address literals: those depend on the client). */
  readonly #heloMemo = new Map<string, HeloFacts>();
  /** Recipient verdicts and "is this HELO domain ours", for a second and never across a directory change (DirectoryMemo). */
  readonly #recipientMemo = new Map<string, DirectoryMemo<RecipientFacts>>();
  readonly #hostedMemo = new Map<string, DirectoryMemo<boolean>>();
  /** Recent (client, client_name, HELO, sender) combinations and their verdicts, each live as long as the shortest-lived of them. */
  readonly #recentClients = new Map<string, ClientVerdicts>();
  /** Temporary failures of the last few seconds, by check and key (TEMPORARY_HOLD_MS). */
  readonly #held = new VerdictCache<unknown>(TEMPORARY_HOLD_MS, VERDICT_ENTRIES);
  /** Per-client and per-sender verdicts of the last minute (src/policy/verdict-cache.ts); gone on reload. */
  readonly #verdicts = {
    dnsbl: new VerdictCache<DnsblResult>(VERDICT_TTL_MS, VERDICT_ENTRIES),
    rhsbl: new VerdictCache<DnsblResult>(VERDICT_TTL_MS, VERDICT_ENTRIES),
    fcrdns: new VerdictCache<FcrdnsVerdict>(VERDICT_TTL_MS, VERDICT_ENTRIES),
    spf: new VerdictCache<SpfVerdict>(VERDICT_TTL_MS, VERDICT_ENTRIES),
  };

  constructor(deps: PolicyEngineDeps) {
    this.config = deps.config;
    this.#lookups = deps.lookups;
    this.#resolver = deps.resolver;
    this.#state = deps.state;
    this.#now = deps.now ?? Date.now;
    if (deps.spfMemory) this.#verdicts.spf = deps.spfMemory;
    this.#mynetworks = new NetworkList(deps.config.mynetworks);
    this.#spfSkip = new NetworkList(deps.config.spf.skipNetworks);
    this.#ourNames = [deps.config.myhostname.toLowerCase()];
    const c = deps.config;
    const { messages, recipients } = c.rateLimit;
    this.#sendLimits = messages || recipients ? { ...(messages ? { messages } : {}), ...(recipients ? { recipients } : {}) } : undefined;
    if (needsPolicyState(c) && !deps.state) {
      throw new Error('policy: rate limits and greylisting need the shared state store');
    }
  }

  /** Throws on internal failure (directory down...): the server answers the default action. */
  async decide(req: PolicyRequest, msg: MessageState): Promise<PolicyDecision> {
    return this.decideNow(req, msg);
  }

  /**
   * The decision, synchronously when every input is cached, else a promise of
   * it. Throws (or rejects) on internal failure, like decide(). With `facts`
   * false the decision's `checks` stay sparse (the caller logs no line for it:
   * building them was a tenth of a cached decision).
   */
  decideNow(req: PolicyRequest, msg: MessageState, facts = true): PolicyDecision | Promise<PolicyDecision> {
    const x = new DecisionInputs(this.#now(), this.#lookups, facts);
    const decision = this.#pass(req, msg, x);
    return decision !== undefined ? decision : this.#complete(req, msg, x);
  }

  async #complete(req: PolicyRequest, msg: MessageState, x: DecisionInputs): Promise<PolicyDecision> {
    for (;;) {
      // A pass that neither decided nor asked for anything would never finish: a bug, answered as an internal error.
      if (!x.waiting) throw new Error('policy decision incomplete, but no input is missing');
      await x.settle();
      const decision = this.#pass(req, msg, x);
      if (decision !== undefined) return decision;
    }
  }

  /** One synchronous pass: the decision, or undefined when an input had to be asked for. */
  #pass(req: PolicyRequest, msg: MessageState, x: DecisionInputs): PolicyDecision | undefined {
    const state = req.protocolState;
    // Postfix sends the names upper-case: compared as they are, without toUpperCase()'s new string.
    switch (state === 'RCPT' || state === 'DATA' ? state : state.toUpperCase()) {
      case 'RCPT':
        return this.#rcpt(req, msg, x);
      case 'DATA':
        return this.#data(req, msg, x);
      default:
        // CONNECT/HELO/MAIL (smtpd_delay_reject=no), END-OF-MESSAGE, VRFY, ETRN: nothing to decide here.
        return NOT_RCPT;
    }
  }

  isTrustedNetwork(ip: string): boolean {
    return (this.#networks(ip) & MYNETWORKS) !== 0;
  }

  #networks(ip: string): number {
    let flags = this.#networkMemo.get(ip);
    if (flags === undefined) {
      flags = (this.#mynetworks.has(ip) ? MYNETWORKS : 0) | (this.#spfSkip.has(ip) ? SPF_SKIP : 0);
      if (ip.length <= MEMO_KEY_MAX) {
        if (this.#networkMemo.size >= MEMO_ENTRIES) this.#networkMemo.clear();
        this.#networkMemo.set(ip, flags);
      }
    }
    return flags;
  }

  #helo(helo: string, clientIp: string): HeloFacts {
    // A literal is judged against the client address: not one verdict per name.
    const memo = helo.length <= MEMO_KEY_MAX && !helo.includes('[');
    let facts = memo ? this.#heloMemo.get(helo) : undefined;
    if (facts === undefined) {
      facts = { verdict: checkHelo({ helo, clientIp, ourNames: this.#ourNames }), domain: normalizeDomain(helo) };
      if (memo) {
        if (this.#heloMemo.size >= MEMO_ENTRIES) this.#heloMemo.clear();
        this.#heloMemo.set(helo, facts);
      }
    }
    return facts;
  }

  #rcpt(req: PolicyRequest, msg: MessageState, x: DecisionInputs): PolicyDecision | undefined {
    const c = this.config;
    const checks: CheckFacts = {};
    const sasl = req.saslUsername !== '';
    const trusted = sasl || this.isTrustedNetwork(req.clientAddress);
    if (sasl) checks['sasl'] = req.saslUsername;
    else if (trusted) checks['mynetworks'] = true;

    // 1-2. Where the recipient lives.
    const known = this.#fromDirectory(x, this.#recipientMemo, req.recipient, recipientOf);
    if (known === undefined) return undefined;
    const rcpt = known.verdict;
    if (x.facts) checks['recipient'] = recipientFacts(rcpt);
    if (!trusted && known.routing) {
      return reject('relay', checks, '554 5.7.1 Relay access denied (sender-specified routing)');
    }
    if (rcpt.kind === 'invalid') {
      if (!trusted) return reject('relay', checks, `554 5.7.1 Relay access denied (${rcpt.reason})`);
    } else if (rcpt.kind === 'remote') {
      if (!trusted) return reject('relay', checks, '554 5.7.1 Relay access denied');
    } else if (!rcpt.exists && c.rejectUnknownRecipients) {
      return reject('unknown_recipient', checks, '550 5.1.1 User unknown');
    }

    // 3. Submission: the login must own the sender, and stay within its send rate.
    if (sasl) {
      if (c.senderLogin) {
        const owner = senderLoginWith(x.read, req.saslUsername, req.sender);
        if (owner === undefined) return undefined;
        if (x.facts) checks['sender_login'] = { allowed: owner.allowed, owners: owner.owners, rule: owner.rule };
        if (!owner.allowed) {
          return reject('sender_login', checks, `553 5.7.1 Sender address <${clean(req.sender)}> not owned by user ${clean(req.saslUsername)}`);
        }
      }
      const limited = this.#rateAtRcpt(req, msg, x, checks);
      if (limited === undefined) return undefined;
      if (limited !== WITHIN_LIMITS) return limited;
      msg.acceptedRecipients++;
      return { action: DUNNO, decidedBy: 'authenticated', checks };
    }
    if (trusted) {
      msg.acceptedRecipients++;
      return { action: DUNNO, decidedBy: 'mynetworks', checks };
    }

    // 5. Inbound from the internet: client reputation and SPF, once per message.
    let inbound = msg.inbound;
    if (inbound === undefined) {
      inbound = this.#inboundChecks(req, x);
      if (inbound === undefined) return undefined;
      msg.inbound = inbound;
    }
    const verdict = this.#judgeInbound(req, inbound, checks, x.facts);
    if (verdict) return verdict;

    if (c.greylist) {
      const spfPass = inbound.spf?.result === 'pass';
      if (spfPass) {
        checks['greylist'] = 'skipped: spf pass';
      } else {
        const settings = c.greylist;
        const g = x.once('greylist', () => checkGreylist(this.#state!, { clientIp: req.clientAddress, sender: req.sender, recipient: req.recipient, now: x.now }, settings));
        if (g === undefined) return undefined;
        if (x.facts) checks['greylist'] = { result: g.result, triplet: g.triplet, ...(g.retryAfterMs !== undefined ? { retry_after_s: Math.ceil(g.retryAfterMs / 1000) } : {}) };
        if (g.result === 'greylisted') {
          const wait = Math.max(1, Math.ceil((g.retryAfterMs ?? c.greylist.delayMs) / 1000));
          return { action: `DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in ${wait} seconds`, decidedBy: 'greylist', checks };
        }
      }
    }

    msg.acceptedRecipients++;
    const spf = inbound.spf ?? inbound.heloSpf;
    if (spf && !msg.prepended) {
      msg.prepended = true;
      return { action: prependAction(spf), decidedBy: 'pass', checks };
    }
    return { action: DUNNO, decidedBy: 'pass', checks };
  }

  /** DATA: count the message once against the login's send rate (recipient_count is known here). */
  #data(req: PolicyRequest, msg: MessageState, x: DecisionInputs): PolicyDecision | undefined {
    const limits = this.#sendLimits;
    if (req.saslUsername === '' || !limits) return NOT_RCPT;
    const recipients = req.recipientCount || msg.acceptedRecipients || 1;
    if (x.fetched<true>('count') === undefined) {
      if (msg.counted) return NOT_RCPT;
      // Marked before the write: at most one count per message, even when this decision fails or times out.
      msg.counted = true;
      x.want('count', () => recordMessage(this.#state!, { login: loginKey(req.saslUsername), recipients, now: x.now }, limits).then(() => true));
      return undefined;
    }
    return { action: DUNNO, decidedBy: 'counted', checks: { sasl: req.saslUsername, rate: { counted_recipients: recipients } } };
  }

  /** WITHIN_LIMITS, the 450 decision, or undefined while the counters are being read. */
  #rateAtRcpt(req: PolicyRequest, msg: MessageState, x: DecisionInputs, checks: CheckFacts): PolicyDecision | typeof WITHIN_LIMITS | undefined {
    const limits = this.#sendLimits;
    if (!limits) return WITHIN_LIMITS;
    const rate = x.once('rate', () => checkSendRate(this.#state!, { login: loginKey(req.saslUsername), now: x.now, pendingRecipients: msg.acceptedRecipients }, limits));
    if (rate === undefined) return undefined;
    if (x.facts) checks['rate'] = { messages: rate.messages, recipients: rate.recipients, ...(rate.limit ? { limit: rate.limit } : {}) };
    if (rate.allowed) return WITHIN_LIMITS;
    const l = rate.limit === 'recipients' ? limits.recipients! : limits.messages!;
    const wait = rate.retryAfterMs === undefined ? '' : `, try again in ${Math.max(1, Math.ceil(rate.retryAfterMs / 60_000))} minutes`;
    return {
      action: `450 4.7.1 Sender rate limit exceeded for ${clean(req.saslUsername)} (${l.count} ${rate.limit} per ${formatWindow(l.windowMs)})${wait}`,
      decidedBy: 'rate_limit',
      checks,
    };
  }

  /**
   * A verdict from this decision's fetches, the verdict cache or the hold of
   * temporary failures; else asks for it (computed, then stored when `keep`
   * allows, or held for TEMPORARY_HOLD_MS when it is a temporary failure).
   */
  #verdict<T>(
    x: DecisionInputs, life: Life, name: string, cache: VerdictCache<T>, key: string,
    compute: (resolver: DnsResolver) => Promise<T>, keep: (value: T) => boolean,
  ): T | undefined {
    const fetched = x.fetched<T>(name);
    if (fetched !== undefined) {
      life.expires = -Infinity; // fetched for this decision: not remembered beyond it (the caches have it now)
      return fetched;
    }
    const hit = cache.entry(key, x.now) ?? (this.#held.entry(`${name} ${key}`, x.now) as { readonly value: T; readonly expires: number } | undefined);
    if (hit !== undefined) {
      if (hit.expires < life.expires) life.expires = hit.expires;
      return hit.value;
    }
    x.want(name, async () => {
      // Remembered no longer than the DNS answers it was made from live (their TTLs, as the DNS cache clamps them).
      const dns: DnsLifetime = { remainingMs: Infinity };
      const value = await compute(observeLifetime(this.#resolver, dns));
      if (keep(value)) cache.set(key, value, x.now, dns.remainingMs);
      else this.#held.set(`${name} ${key}`, value, x.now);
      return value;
    });
    return undefined;
  }

  /** The client checks of a message: the DNS-based verdicts and the HELO name; undefined until all are at hand. */
  #inboundChecks(req: PolicyRequest, x: DecisionInputs): InboundChecks | undefined {
    const c = this.config;
    const v = this.#clientVerdicts(req, x);
    const generation = this.#lookups.cache?.generation ?? 0;
    // The whole result, made by an earlier message of this (client, HELO, sender) combination and still live.
    if (v !== undefined && v.inbound !== undefined && v.inboundUntil > x.now && v.inboundGeneration === generation) return v.inbound;
    let missing = v === undefined;
    let helo: HeloVerdict | undefined;
    /** Until when the "is the HELO name ours" answer holds (Infinity: not asked; -Infinity: not reusable). */
    let hostedUntil = Infinity;
    if (c.helo !== 'ignore') {
      const facts = this.#helo(req.heloName, req.clientAddress);
      helo = facts.verdict;
      let hosted: boolean | undefined = false;
      if (helo.result === 'pass' && facts.domain) {
        hosted = this.#isHostedDomain(x, facts.domain);
        const memo = this.#hostedMemo.get(facts.domain);
        hostedUntil = memo !== undefined && memo.generation === generation ? memo.expires : -Infinity;
      }
      if (hosted === undefined) missing = true;
      // A stranger greeting with one of our own domains (HELO example.org) is claiming to be us.
      else if (hosted) helo = { result: 'forged', detail: `${req.heloName} is a domain hosted here` };
    }
    if (missing || v === undefined) return undefined;
    const inbound: InboundChecks = {
      ...(v.dnsbl ? { dnsbl: v.dnsbl } : {}),
      ...(v.rhsbl ? { rhsbl: v.rhsbl } : {}),
      ...(v.fcrdns ? { fcrdns: v.fcrdns } : {}),
      ...(helo ? { helo } : {}),
      ...(v.heloSpf ? { heloSpf: v.heloSpf } : {}),
      ...(v.spf ? { spf: v.spf } : {}),
    };
    // Kept with the verdicts it was made of (whose key holds everything it depends on: client, HELO, sender),
    // no longer than they and the directory answer live, and only when nothing was fetched for it.
    if (x.fromCaches && hostedUntil > x.now) {
      v.inbound = inbound;
      v.inboundUntil = Math.min(v.expires, hostedUntil);
      v.inboundGeneration = generation;
    }
    return inbound;
  }

  /**
   * The DNS-based verdicts about a client, HELO name and sender: from the
   * memory of recent (client, HELO, sender) combinations when one is live,
   * else from the verdict caches (one pass asks for every missing verdict, so a
   * cold cache fetches them in parallel); undefined until all are at hand.
   */
  #clientVerdicts(req: PolicyRequest, x: DecisionInputs): ClientVerdicts | undefined {
    const c = this.config;
    const ip = req.clientAddress;
    // Everything the verdict keys below are made of (the config is fixed for this engine).
    const key = `${ip}\n${req.clientName}\n${req.heloName}\n${req.sender}`;
    const remember = key.length <= RECENT_KEY_MAX;
    if (remember) {
      const recent = this.#recentClients.get(key);
      if (recent !== undefined && recent.expires > x.now) return recent;
    }
    const caches = this.#verdicts;
    const life: Life = { expires: Infinity };
    let missing = false;

    let dnsbl: DnsblResult | undefined;
    if (c.dnsbl) {
      const list = c.dnsbl;
      dnsbl = this.#verdict(x, life, 'dnsbl', caches.dnsbl, ip, (r) => checkDnsbl(ip, list.sites, r, { reasons: list.action !== 'warn' }), cleanList);
      if (dnsbl === undefined) missing = true;
    }
    let rhsbl: DnsblResult | undefined;
    if (c.rhsbl) {
      const list = c.rhsbl;
      const senderDomain = req.sender === '' ? undefined : parseAddress(req.sender)?.domain ?? normalizeDomain(req.sender.slice(req.sender.lastIndexOf('@') + 1));
      if (senderDomain) {
        rhsbl = this.#verdict(x, life, 'rhsbl', caches.rhsbl, senderDomain, (r) => checkRhsbl(senderDomain, list.sites, r, { reasons: list.action !== 'warn' }), cleanList);
        if (rhsbl === undefined) missing = true;
      }
    }
    let fcrdns: FcrdnsVerdict | undefined;
    if (c.fcrdns !== 'ignore') {
      fcrdns = this.#verdict(
        x, life, 'fcrdns', caches.fcrdns, `${ip} ${req.clientName}`,
        (r) => checkFcrdns({ clientIp: ip, clientName: req.clientName, reverseClientName: req.reverseClientName }, r),
        (v: FcrdnsVerdict) => v.result !== 'temperror',
      );
      if (fcrdns === undefined) missing = true;
    }
    let heloSpf: SpfVerdict | undefined;
    let spf: SpfVerdict | undefined;
    if (c.spf.enabled && (this.#networks(ip) & SPF_SKIP) === 0) {
      const spfInput = { clientIp: ip, helo: req.heloName, sender: req.sender, receiver: c.myhostname };
      // With a null sender the MAIL FROM check already is the HELO check.
      if (c.spf.helo && req.sender !== '') {
        heloSpf = this.#verdict(x, life, 'spf_helo', caches.spf, `helo ${ip} ${req.heloName.toLowerCase()}`, (r) => evaluateHeloSpf(spfInput, r), spfKept);
        if (heloSpf === undefined) missing = true;
      }
      // The whole sender is in the key: SPF macros (%{l}) and the header's envelope-from depend on it.
      spf = this.#verdict(x, life, 'spf', caches.spf, spfMemoryKey(ip, req.heloName, req.sender), (r) => evaluateSpf(spfInput, r), spfKept);
      if (spf === undefined) missing = true;
    }
    if (missing) return undefined;
    const verdicts: ClientVerdicts = { dnsbl, rhsbl, fcrdns, heloSpf, spf, expires: life.expires, inbound: undefined, inboundUntil: 0, inboundGeneration: 0 };
    // Only what came from the caches, and only as long as the shortest-lived of them.
    if (remember && life.expires > x.now) {
      if (this.#recentClients.size >= VERDICT_ENTRIES) this.#recentClients.clear();
      this.#recentClients.set(key, verdicts);
    }
    return verdicts;
  }

  #isHostedDomain(x: DecisionInputs, domain: string | undefined): boolean | undefined {
    if (!domain) return false;
    return this.#fromDirectory(x, this.#hostedMemo, domain, isHosted);
  }

  /**
   * An answer derived from directory lookups, remembered for DIRECTORY_MEMO_MS
   * when all its lookups came from the lookup cache: one Map read instead of
   * several. Never across a lookup-cache flush (a directory change), never
   * without a lookup cache (its TTL is the staleness the operator chose).
   */
  #fromDirectory<T>(x: DecisionInputs, memo: Map<string, DirectoryMemo<T>>, key: string, derive: (read: MapReader, key: string) => T | undefined): T | undefined {
    const cache = this.#lookups.cache;
    if (cache === undefined || key.length > MEMO_KEY_MAX) return derive(x.read, key);
    const generation = cache.generation;
    const known = memo.get(key);
    if (known !== undefined && known.generation === generation && known.expires > x.now) return known.value;
    const value = derive(x.read, key);
    if (value !== undefined && x.fromCaches && cache.generation === generation) {
      if (memo.size >= MEMO_ENTRIES) memo.clear();
      memo.set(key, { value, generation, expires: x.now + DIRECTORY_MEMO_MS });
    }
    return value;
  }

  /** The first check that says no, in order of certainty; undefined = no objection. */
  #judgeInbound(req: PolicyRequest, x: InboundChecks, checks: CheckFacts, facts: boolean): PolicyDecision | undefined {
    const c = this.config;
    if (facts) {
      if (x.dnsbl) checks['dnsbl'] = listFacts(x.dnsbl);
      if (x.rhsbl) checks['rhsbl'] = listFacts(x.rhsbl);
      if (x.fcrdns) checks['fcrdns'] = { result: x.fcrdns.result, ...(x.fcrdns.confirmedName ? { name: x.fcrdns.confirmedName } : {}), detail: x.fcrdns.detail };
      if (x.helo) checks['helo'] = { result: x.helo.result, detail: x.helo.detail };
      if (x.heloSpf) checks['spf_helo'] = spfFacts(x.heloSpf);
      if (x.spf) checks['spf'] = spfFacts(x.spf);
    }

    // The texts below are only made for the request they answer (most requests pass).
    const bl = (c.dnsbl && x.dnsbl ? listed(c.dnsbl, x.dnsbl, 'dnsbl', req, checks) : undefined)
      ?? (c.rhsbl && x.rhsbl ? listed(c.rhsbl, x.rhsbl, 'rhsbl', req, checks) : undefined);
    if (bl) return bl;

    // SPF: HELO identity first (RFC 7208 §2.3: a HELO fail is final), then MAIL FROM.
    if (x.heloSpf) {
      const d = this.#spfVerdict(x.heloSpf, checks);
      if (d) return d;
    }
    if (x.spf) {
      const d = this.#spfVerdict(x.spf, checks);
      if (d) return d;
    }

    // A literal that is not the client address is only noted: RFC 5321 §4.1.4 forbids refusing mail for it.
    if (x.helo && x.helo.result !== 'pass' && x.helo.result !== 'literal_mismatch' && c.helo === 'reject') {
      const h = clean(req.heloName);
      switch (x.helo.result) {
        case 'missing': return reject('helo', checks, '503 5.5.1 Error: send HELO/EHLO first');
        case 'not_fqdn': return reject('helo', checks, `504 5.5.2 Helo command rejected: <${h}> needs to be a fully-qualified hostname`);
        case 'forged': return reject('helo', checks, `550 5.7.1 Helo command rejected: <${h}>: you are not me`);
        default: return reject('helo', checks, `501 5.5.2 Helo command rejected: <${h}> is not a valid host name`);
      }
    }

    if (x.fcrdns && (c.fcrdns === 'reject' || c.fcrdns === 'defer') && x.fcrdns.result !== 'pass') {
      const ip = clean(req.clientAddress);
      if (x.fcrdns.result === 'temperror' || c.fcrdns === 'defer') {
        return { action: `450 4.7.25 Client host rejected: cannot find your hostname, [${ip}]`, decidedBy: 'fcrdns', checks };
      }
      return reject('fcrdns', checks, `550 5.7.25 Client host rejected: cannot find your hostname, [${ip}]`);
    }
    return undefined;
  }

  #spfVerdict(v: SpfVerdict, checks: CheckFacts): PolicyDecision | undefined {
    const s = this.config.spf;
    switch (v.result) {
      case 'fail':
        return s.onFail === 'reject' ? reject('spf', checks, spfRejectText(v)) : undefined;
      case 'softfail':
        return s.onSoftfail === 'reject' ? reject('spf', checks, spfRejectText(v)) : undefined;
      case 'permerror':
        return s.onPermerror === 'reject' ? reject('spf', checks, spfRejectText(v)) : undefined;
      case 'temperror':
        return s.onTemperror === 'defer' ? { action: `DEFER_IF_PERMIT ${spfDeferText(v).replace(/^4\d\d /, '')}`, decidedBy: 'spf', checks } : undefined;
      default:
        return undefined;
    }
  }
}

const MYNETWORKS = 1;
const SPF_SKIP = 2;
/** Per-engine memos of pure functions of the request (network membership, HELO syntax): bounded, started over when full. */
const MEMO_ENTRIES = 20_000;
/** Longer keys are computed each time (a 255-octet HELO name is already unusual). */
const MEMO_KEY_MAX = 256;

/** Longer (client, HELO, sender) keys are not remembered (a sender can be 8 KB long). */
const RECENT_KEY_MAX = 1_024;

/** The DNS-based verdicts about one client, HELO name and sender, and until when all of them are live. */
interface ClientVerdicts {
  readonly dnsbl: DnsblResult | undefined;
  readonly rhsbl: DnsblResult | undefined;
  readonly fcrdns: FcrdnsVerdict | undefined;
  readonly heloSpf: SpfVerdict | undefined;
  readonly spf: SpfVerdict | undefined;
  readonly expires: number;
  /** The message's InboundChecks made from these verdicts, the HELO verdict and the directory (lookup-cache generation), until inboundUntil. */
  inbound: InboundChecks | undefined;
  inboundUntil: number;
  inboundGeneration: number;
}

/** The earliest expiry among the verdicts a pass read (-Infinity: one was fetched by this decision). */
interface Life {
  expires: number;
}

/** How long an answer derived from the lookup cache is reused without asking it again. */
export const DIRECTORY_MEMO_MS = 1_000;

interface DirectoryMemo<T> {
  readonly value: T;
  /** The lookup cache's generation it was derived in. */
  readonly generation: number;
  readonly expires: number;
}

/** A recipient's verdict and whether it carries sender-specified routing (user%host@...), remembered together. */
interface RecipientFacts {
  readonly verdict: RecipientVerdict;
  readonly routing: boolean;
}

function recipientOf(read: MapReader, recipient: string): RecipientFacts | undefined {
  const verdict = classifyRecipientWith(read, recipient);
  return verdict === undefined ? undefined : { verdict, routing: hasSenderSpecifiedRouting(recipient) };
}

/** Whether mail for `domain` is ours (a mailbox or alias domain). */
function isHosted(read: MapReader, domain: string): boolean | undefined {
  const mailbox = read('virtual_mailbox_domains', domain);
  const alias = read('virtual_alias_domains', domain);
  if (mailbox === undefined || alias === undefined) return undefined;
  return mailbox.found || alias.found;
}

interface HeloFacts {
  readonly verdict: HeloVerdict;
  /** The HELO name as a domain (normalizeDomain), for the "is it one of ours" check. */
  readonly domain: string | undefined;
}

/** #rateAtRcpt's "no objection". */
const WITHIN_LIMITS = Symbol('within limits');

/** DNSBL results with a failing zone are not reused: the next message asks again. */
const cleanList = (x: DnsblResult): boolean => x.errors.length === 0;
/** A temperror is not reused either. */
const spfKept = (v: SpfVerdict): boolean => v.result !== 'temperror';

/** The Received-SPF PREPEND, made once per verdict: a client's messages share it for the verdict's minute. */
const prependActions = new WeakMap<SpfVerdict, string>();
function prependAction(spf: SpfVerdict): string {
  let action = prependActions.get(spf);
  if (action === undefined) {
    action = `PREPEND ${oneLine(spf.receivedSpf)}`;
    prependActions.set(spf, action);
  }
  return action;
}

/** The reject/450 action last made for a listing, and for which list and client address (or sender domain). */
const blockedActions = new WeakMap<DnsblResult, { readonly list: DnsListPolicy; readonly subject: string; readonly action: string }>();

/** A DNSBL (client) or RHSBL (sender domain) verdict that blocks or defers, else undefined. */
function listed(list: DnsListPolicy, res: DnsblResult, kind: 'dnsbl' | 'rhsbl', req: PolicyRequest, checks: CheckFacts): PolicyDecision | undefined {
  if (res.score >= list.threshold && list.action !== 'warn') {
    const subject = kind === 'dnsbl' ? req.clientAddress : req.sender.slice(req.sender.lastIndexOf('@') + 1);
    // A listed client's every RCPT gets the same text: made once per (cached) listing, so the server's reply cache hits it.
    const known = blockedActions.get(res);
    if (known !== undefined && known.list === list && known.subject === subject) return { action: known.action, decidedBy: kind, checks };
    const zones = res.listings.map((l) => l.zone).join(', ');
    const reason = res.listings.find((l) => l.reason)?.reason;
    const what = kind === 'dnsbl' ? `Client host [${clean(subject)}]` : `Sender domain ${clean(subject)}`;
    const text = `${what} blocked using ${zones}${reason ? `; ${clean(reason)}` : ''}`;
    const action = list.action === 'reject' ? oneLine(`554 5.7.1 Service unavailable; ${text}`) : `450 4.7.1 Service unavailable; ${text}`;
    blockedActions.set(res, { list, subject, action });
    return { action, decidedBy: kind, checks };
  }
  if (res.errors.length > 0 && list.onError === 'defer' && res.score < list.threshold) {
    return { action: `DEFER_IF_PERMIT 4.7.1 Client host [${clean(req.clientAddress)}] could not be checked against ${res.errors.map((e) => e.zone).join(', ')}, try again later`, decidedBy: 'dnsbl_error', checks };
  }
  return undefined;
}

function reject(decidedBy: string, checks: CheckFacts, text: string): PolicyDecision {
  return { action: oneLine(text), decidedBy, checks };
}

function recipientFacts(r: RecipientVerdict): Record<string, unknown> {
  switch (r.kind) {
    case 'local': return { kind: 'local', exists: r.exists, rule: r.rule };
    case 'remote': return { kind: 'remote', domain: r.domain };
    case 'invalid': return { kind: 'invalid', reason: r.reason };
  }
}

function listFacts(r: DnsblResult): Record<string, unknown> {
  return {
    score: r.score,
    ...(r.listings.length ? { listed: r.listings.map((l) => `${l.zone}=${l.codes.join('/')}*${l.weight}`) } : {}),
    ...(r.errors.length ? { errors: r.errors.map((e) => `${e.zone}: ${e.code}`) } : {}),
  };
}

function spfFacts(v: SpfVerdict): Record<string, unknown> {
  return { result: v.result, identity: v.identity, domain: v.domain, comment: v.comment, lookups: v.lookups, ms: Math.round(v.elapsedMs) };
}

function loginKey(login: string): string {
  return login.trim().toLowerCase();
}

/** Text that goes back to Postfix and on to the SMTP client: one printable line. */
function clean(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 400);
}

function oneLine(text: string): string {
  return text.replace(/[\r\n\0]+/g, ' ');
}

function formatWindow(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}
