// SPF (RFC 7208) for the policy service and the milter: which identity to
// check, mailauth's check_host() over our DNS layer, and the texts callers
// need (Received-SPF header, RFC 7372 reply codes).
//
// mailauth runs in its `strict` mode: it validates the whole record before
// evaluating it (RFC 7208 §4.6: a syntax error anywhere is a permerror, also
// after the matching term), counts void lookups as §4.6.4 says (for the
// client's address family only), rejects the c/r/t macros outside exp= text,
// and queries every target name the domain-spec rules allow (a %{h} built
// from an odd HELO is asked, not a permerror). Its lenient default fails 7
// more cases of the RFC 7208 suite (test/integration/spf-rfc7208.test.ts).
//
// What mailauth returns (7.1.0, checked by the tests):
// - status.result: one of the 7 results; status.comment: '<mta>: domain of
//   <mailbox> designates <ip> as permitted sender' and the like; for errors
//   '<mta>: [permanent ]error in processing during lookup of <mailbox>: <text>'.
// - explanation: the expanded exp= text, only on `fail`, only when the exp=
//   lookup worked (a missing, multiple, non-ASCII or malformed TXT gives none).
// - lookups.count: DNS-querying terms evaluated (include/a/mx/ptr/exists/
//   redirect; the first TXT query is not counted; it goes to limit + 1 when
//   the limit stops evaluation); lookups.void: NXDOMAIN/NODATA answers
//   counted against the void limit. MX-host and PTR-name address lookups are
//   only in lookups.subqueries.
// - DNS failures: ENOTFOUND/ENODATA are void answers, EBADNAME (a name
//   DNS cannot carry: empty label, > 63/255 octets; names c-ares refuses but
//   DNS allows go out through src/dns/raw-query.ts) is permerror, every other code is temperror.
import './mailauth-setup.ts'; // before mailauth: see the file
import { spf as mailauthSpf, type DNSResolver as MailauthResolver } from 'mailauth';
import { forMailauth, type DnsResolver } from '../dns/resolver.ts';
import { canonicalIp } from './fcrdns.ts';

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror';
const RESULTS: ReadonlySet<string> = new Set<SpfResult>(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror']);

export interface SpfInput {
  clientIp: string;
  helo: string;
  /** '' = null sender. */
  sender: string;
  /** Our host name, for the header comment and receiver=. */
  receiver: string;
}

export interface SpfVerdict {
  result: SpfResult;
  identity: 'mailfrom' | 'helo';
  /** The domain checked (lower case, A-label). */
  domain: string;
  /** The client address checked (IPv4-mapped IPv6 as IPv4). */
  clientIp: string;
  /** Human explanation, without the receiver prefix. */
  comment: string;
  /** What went wrong, for temperror and permerror. */
  problem?: string;
  /** The domain owner's exp= text, on fail only, when there is one (third-party text: sanitise before use). */
  explanation?: string;
  /**
   * The full Received-SPF header field (RFC 7208 §9.1) on ONE line, without
   * CRLF, at most 998 octets: ready for a Postfix PREPEND action.
   */
  receivedSpf: string;
  /** DNS-querying terms evaluated (RFC 7208 §4.6.4), as mailauth counts them. */
  lookups: number;
  /** Void (NXDOMAIN/NODATA) lookups counted against the void limit. */
  voidLookups: number;
  elapsedMs: number;
}

export interface SpfOptions {
  /** DNS-querying terms allowed (RFC 7208 §4.6.4), default 10. */
  maxLookups?: number;
  /** Void lookups allowed, default 2. */
  maxVoidLookups?: number;
  /** Whole evaluation, then temperror (RFC 7208 §4.6.4 "at least 20 seconds"), default 20000. */
  maxElapsedMs?: number;
  /** mailauth's strict RFC 7208 mode (see the file header), default true. */
  strict?: boolean;
}

export const SPF_DEFAULTS = { maxLookups: 10, maxVoidLookups: 2, maxElapsedMs: 20_000 } as const;

export interface SpfIdentity {
  identity: 'mailfrom' | 'helo';
  /** The <sender> check_host() gets: the MAIL FROM address, or postmaster@<domain> (RFC 7208 §2.4, §4.3). */
  mailbox: string;
  /** The <domain> check_host() starts from (lower case, trailing dot removed). */
  domain: string;
  /** Set when check_host() must not run for this identity: the result is `none` (RFC 7208 §2.3). */
  skip?: string;
}

/** The HELO identity (RFC 7208 §2.3): skipped for address literals, IP addresses and names without a dot. */
export function heloIdentity(helo: string): SpfIdentity {
  const h = helo.trim();
  const domain = h.toLowerCase().replace(/\.$/, '');
  const base = { identity: 'helo' as const, mailbox: `postmaster@${h}`, domain };
  if (h === '') return { ...base, skip: 'no HELO name' };
  if (/^\[.*\]$/s.test(h)) return { ...base, skip: 'the HELO name is an address literal' };
  if (canonicalIp(h) !== undefined) return { ...base, skip: 'the HELO name is an IP address' };
  if (!domain.includes('.')) return { ...base, skip: 'the HELO name is not a fully qualified domain name' };
  return base;
}

/**
 * Which identity check_host() gets (RFC 7208 §2.4): the MAIL FROM address,
 * or for the null sender `postmaster@<HELO>`. A sender without a local-part
 * (`@example.com`) or without `@` at all (`example.com`) checks
 * `postmaster@<domain>` (§4.3).
 */
export function spfIdentity(input: { sender: string; helo: string }): SpfIdentity {
  const sender = input.sender.trim();
  if (sender === '' || sender === '<>') return heloIdentity(input.helo);
  const at = sender.lastIndexOf('@');
  const domain = (at < 0 ? sender : sender.slice(at + 1)).toLowerCase();
  const mailbox = at < 0 ? `postmaster@${sender}` : at === 0 ? `postmaster${sender}` : sender;
  return { identity: 'mailfrom', mailbox, domain };
}

/**
 * SPF for the transaction: the MAIL FROM identity, or the HELO identity for
 * the null sender. Never throws: an unexpected failure is a temperror.
 */
export async function evaluateSpf(input: SpfInput, resolver: DnsResolver, opts: SpfOptions = {}): Promise<SpfVerdict> {
  return evaluate(input, spfIdentity(input), resolver, opts);
}

/** SPF for the HELO identity only (RFC 7208 §2.3); `none` without DNS for literals and names that are not FQDNs. */
export async function evaluateHeloSpf(input: SpfInput, resolver: DnsResolver, opts: SpfOptions = {}): Promise<SpfVerdict> {
  return evaluate(input, heloIdentity(input.helo), resolver, opts);
}

async function evaluate(input: SpfInput, id: SpfIdentity, resolver: DnsResolver, opts: SpfOptions): Promise<SpfVerdict> {
  const started = performance.now();
  const ip = canonicalIp(input.clientIp) ?? input.clientIp.trim();
  const done = (v: Omit<SpfVerdict, 'receivedSpf' | 'elapsedMs' | 'clientIp'>): SpfVerdict => ({
    ...v,
    clientIp: ip,
    receivedSpf: receivedSpfHeader({ ...v, clientIp: ip }, input),
    elapsedMs: performance.now() - started,
  });
  const blank = { identity: id.identity, domain: id.domain, lookups: 0, voidLookups: 0 };
  try {
    if (canonicalIp(input.clientIp) === undefined) {
      // check_host() needs an address (RFC 7208 §4.1); this is bad input from our side, not a "no".
      return done({ ...blank, result: 'temperror', comment: `invalid client IP address ${JSON.stringify(input.clientIp)}`, problem: 'invalid client IP address' });
    }
    if (id.skip !== undefined) {
      return done({ ...blank, result: 'none', comment: `${id.skip}: no SPF check for the HELO identity` });
    }
    const r = await mailauthSpf({
      // mailauth turns '' into postmaster@<helo> itself; a non-null sender is passed as given (it fixes up "@d" and "d" the same way).
      sender: id.identity === 'helo' ? '' : input.sender.trim(),
      ip,
      helo: input.helo,
      mta: input.receiver,
      // mailauth's type names only TXT/A shapes; the resolver returns every dns.promises.resolve shape.
      resolver: forMailauth(resolver) as MailauthResolver,
      maxResolveCount: positive(opts.maxLookups, SPF_DEFAULTS.maxLookups),
      maxVoidCount: positive(opts.maxVoidLookups, SPF_DEFAULTS.maxVoidLookups),
      maxElapsedTime: positive(opts.maxElapsedMs, SPF_DEFAULTS.maxElapsedMs),
      strict: opts.strict ?? true,
    });
    const raw = String(r.status?.result ?? '');
    const result: SpfResult = RESULTS.has(raw) ? (raw as SpfResult) : 'temperror';
    const fullComment = typeof r.status?.comment === 'string' ? r.status.comment : '';
    const prefix = `${input.receiver}: `;
    const comment = fullComment.startsWith(prefix) ? fullComment.slice(prefix.length) : fullComment;
    let problem: string | undefined;
    if (result === 'temperror' || result === 'permerror') {
      const marker = `during lookup of ${id.mailbox}: `;
      const at = comment.indexOf(marker);
      problem = at >= 0 ? comment.slice(at + marker.length) : raw === result ? undefined : `unexpected mailauth result ${JSON.stringify(raw)}`;
    }
    return done({
      result,
      identity: id.identity,
      domain: typeof r.domain === 'string' && r.domain !== '' ? r.domain : id.domain,
      comment,
      ...(problem !== undefined ? { problem } : {}),
      ...(result === 'fail' && typeof r.explanation === 'string' && r.explanation !== '' ? { explanation: r.explanation } : {}),
      lookups: r.lookups?.count ?? 0,
      voidLookups: r.lookups?.void ?? 0,
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return done({ ...blank, result: 'temperror', comment: `SPF check failed: ${message}`, problem: message });
  }
}

function positive(v: number | undefined, fallback: number): number {
  return v !== undefined && Number.isFinite(v) && v > 0 ? v : fallback;
}

// ---------------------------------------------------------------------------
// Received-SPF (RFC 7208 §9.1)

/** RFC 5322 line limit in octets; the header is never folded (Postfix PREPEND takes one line). */
const MAX_HEADER = 998;
const octets = (s: string): number => Buffer.byteLength(s, 'utf8');
const ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const DOT_ATOM = new RegExp(`^${ATEXT}(?:\\.${ATEXT})*$`);

/** Control characters (C0, DEL, C1) and line breaks become spaces: the value stays on one line. */
const oneLine = (s: string): string => s.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, ' ');

/** dot-atom when it is one, else quoted-string (RFC 5322 §3.2.3, §3.2.4). */
export function headerValue(value: string): string {
  const v = oneLine(value);
  return DOT_ATOM.test(v) ? v : `"${v.replace(/[\\"]/g, '\\$&')}"`;
}

const commentText = (s: string): string => oneLine(s).replace(/[\\()]/g, '\\$&');

function receivedSpfHeader(v: Pick<SpfVerdict, 'result' | 'identity' | 'comment' | 'problem' | 'clientIp'>, input: SpfInput): string {
  const sender = input.sender.trim();
  const pairs: Array<[string, string]> = [
    ['receiver', input.receiver],
    ['client-ip', v.clientIp],
    // The envelope sender mailbox; there is none for the null sender.
    ...(sender !== '' && sender !== '<>' ? [['envelope-from', sender] as [string, string]] : []),
    ...(input.helo.trim() !== '' ? [['helo', input.helo.trim()] as [string, string]] : []),
    ...(v.problem !== undefined ? [['problem', v.problem] as [string, string]] : []),
    ['identity', v.identity],
  ];
  // envelope-from always quoted, as in the RFC's examples (local-parts may hold anything).
  const kv = (list: Array<[string, string]>): string =>
    list.map(([k, val]) => `${k}=${k === 'envelope-from' ? `"${oneLine(val).replace(/[\\"]/g, '\\$&')}"` : headerValue(val)};`).join(' ');
  // Client-controlled values (a 255-octet HELO, a long sender) must not push the line past the limit:
  // drop the optional long pairs until the line fits with room for a short comment.
  const head = `Received-SPF: ${v.result}`;
  let tail = kv(pairs);
  // The identity that was checked goes last.
  const [first, second] = v.identity === 'mailfrom' ? ['helo', 'envelope-from'] : ['envelope-from', 'helo'];
  for (const dropped of [['problem'], ['problem', first], ['problem', first, second]]) {
    if (octets(head) + octets(tail) + 24 <= MAX_HEADER) break;
    tail = kv(pairs.filter(([k]) => !dropped.includes(k)));
  }
  const text = `${input.receiver}: ${v.comment}`;
  let comment = commentText(text);
  const room = MAX_HEADER - octets(head) - octets(tail) - 4; // ' (' ') '
  if (octets(comment) > room) {
    let cut = Math.max(0, room - 3);
    while (cut > 0 && octets(commentText(text.slice(0, cut))) > room - 3) cut--;
    comment = cut > 0 ? `${commentText(text.slice(0, cut))}...` : '';
  }
  return comment === '' ? `${head} ${tail}` : `${head} (${comment}) ${tail}`;
}

// ---------------------------------------------------------------------------
// SMTP reply texts (RFC 7372 §3.2: X.7.23 SPF validation failed, X.7.24 SPF validation error)

/** Longest reply text we build: an SMTP reply line is at most 512 octets with code and CRLF (RFC 5321 §4.5.3.1.5). */
const MAX_REPLY = 450;
const MAX_EXPLANATION = 200;

/** Printable ASCII only, whitespace runs collapsed, at most `max` characters. */
export function sanitizeReplyText(s: string, max: number = MAX_REPLY): string {
  const clean = s
    .replace(/[\r\n\t]+/g, ' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .replace(/ {2,}/g, ' ')
    .trim();
  return clean.length <= max ? clean : `${clean.slice(0, Math.max(0, max - 3))}...`;
}

/**
 * The 5xx reply for a verdict the caller rejects: `fail` (and softfail/neutral/
 * none when local policy rejects those) as 550 5.7.23 with the domain's
 * explanation, `permerror` as 550 5.7.24. A temperror never gets a 5xx: it
 * gets the spfDeferText() reply.
 */
export function spfRejectText(v: SpfVerdict): string {
  if (v.result === 'temperror') return spfDeferText(v);
  const domain = sanitizeReplyText(v.domain, 255) || 'the domain';
  const ip = sanitizeReplyText(v.clientIp, 64);
  if (v.result === 'permerror') {
    return sanitizeReplyText(`550 5.7.24 SPF permanent error: ${domain}: ${v.problem ?? 'the SPF record is invalid'}`);
  }
  const what =
    v.result === 'fail' || v.result === 'softfail'
      ? `${domain} does not designate ${ip} as permitted sender`
      : v.result === 'neutral'
        ? `${domain} neither permits nor denies ${ip} as sender`
        : v.result === 'none'
          ? `${domain} does not publish an SPF policy`
          : `${domain} designates ${ip} as permitted sender`;
  const base = `550 5.7.23 SPF ${v.result}: ${what}`;
  if (v.explanation === undefined) return sanitizeReplyText(base);
  // Third-party text (RFC 7208 §6.2): sanitised, bounded, attributed to the domain.
  const exp = sanitizeReplyText(v.explanation, MAX_EXPLANATION);
  return exp === '' ? sanitizeReplyText(base) : sanitizeReplyText(`${base}; ${domain} explains: ${exp}`);
}

/** The 4xx reply for a temperror (451 4.7.24); never a 5xx, whatever the verdict. */
export function spfDeferText(v: SpfVerdict): string {
  const domain = sanitizeReplyText(v.domain, 255) || 'the domain';
  return sanitizeReplyText(`451 4.7.24 SPF temporary error: ${domain}: ${v.problem ?? 'DNS lookup failed'}; try again later`);
}
