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
import { NetworkList } from '../core/network.ts';
import { checkDnsbl, checkRhsbl, type DnsblResult } from '../dns/dnsbl.ts';
import type { DnsResolver } from '../dns/resolver.ts';
import { normalizeDomain, parseAddress } from '../core/address.ts';
import type { LookupService } from '../lookup/service.ts';
import { classifyRecipient, hasSenderSpecifiedRouting, type RecipientVerdict } from '../checks/recipient.ts';
import { senderLoginAllowed } from '../checks/sender-login.ts';
import { evaluateHeloSpf, evaluateSpf, spfDeferText, spfRejectText, type SpfVerdict } from '../checks/spf.ts';
import { checkFcrdns, type FcrdnsVerdict } from '../checks/fcrdns.ts';
import { checkHelo, type HeloVerdict } from '../checks/helo.ts';
import { checkSendRate, recordMessage } from '../checks/rate-limit.ts';
import { checkGreylist } from '../checks/greylist.ts';
import type { PolicyStateStore } from '../state/types.ts';
import { needsPolicyState, type DnsListPolicy, type SmtpdPolicyConfig } from './config.ts';
import type { PolicyRequest } from './request.ts';
import { VerdictCache } from './verdict-cache.ts';
import { spfMemoryKey, type SpfMemory } from '../checks/spf-memory.ts';

/** What the engine remembers about one message (one `instance`) on one connection. */
export interface MessageState {
  /** Client checks and SPF, started on the first RCPT and shared by the others. */
  inbound?: Promise<InboundChecks>;
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
/** Verdicts are reused for a minute: far below DNS TTLs, long enough for a client's burst of messages. */
const VERDICT_TTL_MS = 60_000;
const VERDICT_ENTRIES = 50_000;

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
    if (needsPolicyState(c) && !deps.state) {
      throw new Error('policy: rate limits and greylisting need the shared state store');
    }
  }

  /** Throws on internal failure (directory down...): the server answers the default action. */
  async decide(req: PolicyRequest, msg: MessageState): Promise<PolicyDecision> {
    switch (req.protocolState.toUpperCase()) {
      case 'RCPT':
        return this.#rcpt(req, msg);
      case 'DATA':
        return this.#data(req, msg);
      default:
        // CONNECT/HELO/MAIL (smtpd_delay_reject=no), END-OF-MESSAGE, VRFY, ETRN: nothing to decide here.
        return { action: DUNNO, decidedBy: 'not_rcpt', checks: {} };
    }
  }

  isTrustedNetwork(ip: string): boolean {
    return this.#mynetworks.has(ip);
  }

  async #rcpt(req: PolicyRequest, msg: MessageState): Promise<PolicyDecision> {
    const c = this.config;
    const checks: CheckFacts = {};
    const sasl = req.saslUsername !== '';
    const trusted = sasl || this.isTrustedNetwork(req.clientAddress);
    if (sasl) checks['sasl'] = req.saslUsername;
    else if (trusted) checks['mynetworks'] = true;

    // 1-2. Where the recipient lives.
    const rcpt = await classifyRecipient(this.#lookups, req.recipient);
    checks['recipient'] = recipientFacts(rcpt);
    if (!trusted && hasSenderSpecifiedRouting(req.recipient)) {
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
        const owner = await senderLoginAllowed(this.#lookups, req.saslUsername, req.sender);
        checks['sender_login'] = { allowed: owner.allowed, owners: owner.owners, rule: owner.rule };
        if (!owner.allowed) {
          return reject('sender_login', checks, `553 5.7.1 Sender address <${clean(req.sender)}> not owned by user ${clean(req.saslUsername)}`);
        }
      }
      const limited = await this.#rateAtRcpt(req, msg, checks);
      if (limited) return limited;
      msg.acceptedRecipients++;
      return { action: DUNNO, decidedBy: 'authenticated', checks };
    }
    if (trusted) {
      msg.acceptedRecipients++;
      return { action: DUNNO, decidedBy: 'mynetworks', checks };
    }

    // 5. Inbound from the internet: client reputation and SPF, once per message.
    msg.inbound ??= this.#inboundChecks(req);
    let inbound: InboundChecks;
    try {
      inbound = await msg.inbound;
    } catch (err) {
      msg.inbound = undefined; // let the next recipient try again
      throw err;
    }
    const verdict = this.#judgeInbound(req, inbound, checks);
    if (verdict) return verdict;

    if (c.greylist) {
      const spfPass = inbound.spf?.result === 'pass';
      if (spfPass) {
        checks['greylist'] = 'skipped: spf pass';
      } else {
        const g = await checkGreylist(this.#state!, { clientIp: req.clientAddress, sender: req.sender, recipient: req.recipient, now: this.#now() }, c.greylist);
        checks['greylist'] = { result: g.result, triplet: g.triplet, ...(g.retryAfterMs !== undefined ? { retry_after_s: Math.ceil(g.retryAfterMs / 1000) } : {}) };
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
      return { action: `PREPEND ${oneLine(spf.receivedSpf)}`, decidedBy: 'pass', checks };
    }
    return { action: DUNNO, decidedBy: 'pass', checks };
  }

  /** DATA: count the message once against the login's send rate (recipient_count is known here). */
  async #data(req: PolicyRequest, msg: MessageState): Promise<PolicyDecision> {
    const limits = this.#limits();
    if (req.saslUsername === '' || !limits || msg.counted) return { action: DUNNO, decidedBy: 'not_rcpt', checks: {} };
    msg.counted = true;
    const recipients = req.recipientCount || msg.acceptedRecipients || 1;
    await recordMessage(this.#state!, { login: loginKey(req.saslUsername), recipients, now: this.#now() }, limits);
    return { action: DUNNO, decidedBy: 'counted', checks: { sasl: req.saslUsername, rate: { counted_recipients: recipients } } };
  }

  #limits() {
    const { messages, recipients } = this.config.rateLimit;
    if (!messages && !recipients) return undefined;
    return { ...(messages ? { messages } : {}), ...(recipients ? { recipients } : {}) };
  }

  async #rateAtRcpt(req: PolicyRequest, msg: MessageState, checks: CheckFacts): Promise<PolicyDecision | undefined> {
    const limits = this.#limits();
    if (!limits) return undefined;
    const rate = await checkSendRate(this.#state!, { login: loginKey(req.saslUsername), now: this.#now(), pendingRecipients: msg.acceptedRecipients }, limits);
    checks['rate'] = { messages: rate.messages, recipients: rate.recipients, ...(rate.limit ? { limit: rate.limit } : {}) };
    if (rate.allowed) return undefined;
    const l = rate.limit === 'recipients' ? limits.recipients! : limits.messages!;
    const wait = rate.retryAfterMs === undefined ? '' : `, try again in ${Math.max(1, Math.ceil(rate.retryAfterMs / 60_000))} minutes`;
    return {
      action: `450 4.7.1 Sender rate limit exceeded for ${clean(req.saslUsername)} (${l.count} ${rate.limit} per ${formatWindow(l.windowMs)})${wait}`,
      decidedBy: 'rate_limit',
      checks,
    };
  }

  async #inboundChecks(req: PolicyRequest): Promise<InboundChecks> {
    const c = this.config;
    const ip = req.clientAddress;
    const r = this.#resolver;
    const now = this.#now();
    const senderDomain = req.sender === '' ? undefined : parseAddress(req.sender)?.domain ?? normalizeDomain(req.sender.slice(req.sender.lastIndexOf('@') + 1));
    const runSpf = c.spf.enabled && !this.#spfSkip.has(ip);
    const spfInput = { clientIp: ip, helo: req.heloName, sender: req.sender, receiver: c.myhostname };
    const caches = this.#verdicts;
    const cleanList = (x: DnsblResult) => x.errors.length === 0;
    const spfKept = (v: SpfVerdict) => v.result !== 'temperror';
    const [dnsbl, rhsbl, fcrdns, heloSpf, spf] = await Promise.all([
      c.dnsbl ? caches.dnsbl.through(ip, now, () => checkDnsbl(ip, c.dnsbl!.sites, r, { reasons: c.dnsbl!.action !== 'warn' }), cleanList) : undefined,
      c.rhsbl && senderDomain ? caches.rhsbl.through(senderDomain, now, () => checkRhsbl(senderDomain, c.rhsbl!.sites, r, { reasons: c.rhsbl!.action !== 'warn' }), cleanList) : undefined,
      c.fcrdns !== 'ignore'
        ? caches.fcrdns.through(`${ip} ${req.clientName}`, now, () => checkFcrdns({ clientIp: ip, clientName: req.clientName, reverseClientName: req.reverseClientName }, r), (v) => v.result !== 'temperror')
        : undefined,
      // With a null sender the MAIL FROM check already is the HELO check.
      runSpf && c.spf.helo && req.sender !== '' ? caches.spf.through(`helo ${ip} ${req.heloName.toLowerCase()}`, now, () => evaluateHeloSpf(spfInput, r), spfKept) : undefined,
      // The whole sender is in the key: SPF macros (%{l}) and the header's envelope-from depend on it.
      runSpf ? caches.spf.through(spfMemoryKey(ip, req.heloName, req.sender), now, () => evaluateSpf(spfInput, r), spfKept) : undefined,
    ]);
    let helo = c.helo !== 'ignore' ? checkHelo({ helo: req.heloName, clientIp: ip, ourNames: this.#ourNames }) : undefined;
    if (helo?.result === 'pass' && (await this.#isHostedDomain(req.heloName))) {
      // A stranger greeting with one of our own domains (HELO example.org) is claiming to be us.
      helo = { result: 'forged', detail: `${req.heloName} is a domain hosted here` };
    }
    return {
      ...(dnsbl ? { dnsbl } : {}),
      ...(rhsbl ? { rhsbl } : {}),
      ...(fcrdns ? { fcrdns } : {}),
      ...(helo ? { helo } : {}),
      ...(heloSpf ? { heloSpf } : {}),
      ...(spf ? { spf } : {}),
    };
  }

  async #isHostedDomain(name: string): Promise<boolean> {
    const domain = normalizeDomain(name);
    if (!domain) return false;
    const [mailbox, alias] = await Promise.all([
      this.#lookups.lookup('virtual_mailbox_domains', domain),
      this.#lookups.lookup('virtual_alias_domains', domain),
    ]);
    return mailbox.found || alias.found;
  }

  /** The first check that says no, in order of certainty; undefined = no objection. */
  #judgeInbound(req: PolicyRequest, x: InboundChecks, checks: CheckFacts): PolicyDecision | undefined {
    const c = this.config;
    const ip = clean(req.clientAddress);
    if (x.dnsbl) checks['dnsbl'] = listFacts(x.dnsbl);
    if (x.rhsbl) checks['rhsbl'] = listFacts(x.rhsbl);
    if (x.fcrdns) checks['fcrdns'] = { result: x.fcrdns.result, ...(x.fcrdns.confirmedName ? { name: x.fcrdns.confirmedName } : {}), detail: x.fcrdns.detail };
    if (x.helo) checks['helo'] = { result: x.helo.result, detail: x.helo.detail };
    if (x.heloSpf) checks['spf_helo'] = spfFacts(x.heloSpf);
    if (x.spf) checks['spf'] = spfFacts(x.spf);

    const listed = (list: DnsListPolicy | undefined, res: DnsblResult | undefined, what: string, subject: string): PolicyDecision | undefined => {
      if (!list || !res) return undefined;
      if (res.score >= list.threshold && list.action !== 'warn') {
        const zones = res.listings.map((l) => l.zone).join(', ');
        const reason = res.listings.find((l) => l.reason)?.reason;
        const text = `${what} ${subject} blocked using ${zones}${reason ? `; ${clean(reason)}` : ''}`;
        return list.action === 'reject'
          ? reject(what === 'Client host' ? 'dnsbl' : 'rhsbl', checks, `554 5.7.1 Service unavailable; ${text}`)
          : { action: `450 4.7.1 Service unavailable; ${text}`, decidedBy: what === 'Client host' ? 'dnsbl' : 'rhsbl', checks };
      }
      if (res.errors.length > 0 && list.onError === 'defer' && res.score < list.threshold) {
        return { action: `DEFER_IF_PERMIT 4.7.1 Client host [${ip}] could not be checked against ${res.errors.map((e) => e.zone).join(', ')}, try again later`, decidedBy: 'dnsbl_error', checks };
      }
      return undefined;
    };
    const bl = listed(c.dnsbl, x.dnsbl, 'Client host', `[${ip}]`) ?? listed(c.rhsbl, x.rhsbl, 'Sender domain', clean(req.sender.slice(req.sender.lastIndexOf('@') + 1)));
    if (bl) return bl;

    // SPF: HELO identity first (RFC 7208 §2.3: a HELO fail is final), then MAIL FROM.
    for (const v of [x.heloSpf, x.spf]) {
      if (!v) continue;
      const d = this.#spfVerdict(v, checks);
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
