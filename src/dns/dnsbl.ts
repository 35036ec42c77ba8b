// DNS block and allow lists (RFC 5782): IP lists (DNSBL/DNSWL) and domain
// lists (RHSBL), scored like Postfix postscreen_dnsbl_sites.
//
// Why not the npm `dnsbl` package: it answers a boolean and turns every failure
// (timeout, SERVFAIL, a dead server) into "not listed", counts Spamhaus's
// error answers (127.255.255.254 "query via a public resolver") as listings,
// cannot tell return codes apart, and reverses ::ffff:a.b.c.d as IPv6.
// Here, as in Haraka's dns-list plugin:
// - NXDOMAIN / NODATA = not listed;
// - answers outside 127.0.0.0/8, and 127.255.255.0/24 (Spamhaus: 252 typo in
//   the zone name, 254 public/open resolver, 255 query volume), are the list
//   telling us it cannot answer: a per-zone error, never a listing;
// - timeouts and other DNS failures are per-zone errors, reported to the
//   caller, who decides (the policy service defers rather than call a
//   client clean on partial data).
import { domainToASCII } from 'node:url';
import net from 'node:net';
import { isVoidLookup, lookup, toDnsError, type DnsResolver } from './resolver.ts';

/** One octet of a return-code filter: inclusive ranges. */
export type OctetPattern = readonly (readonly [number, number])[];

/** One entry of a postscreen_dnsbl_sites-style list: `zone[=filter][*weight]`. */
export interface ZoneSpec {
  /** The list's DNS zone, lower case, no trailing dot. */
  readonly zone: string;
  /** Return codes that count; undefined = any code (in 127.0.0.0/8). */
  readonly filter?: readonly [OctetPattern, OctetPattern, OctetPattern, OctetPattern];
  /** Added to the score when a code matches; negative for allow lists (DNSWL). */
  readonly weight: number;
  /** The text it was parsed from, for logs. */
  readonly spec: string;
}

export interface DnsblListing {
  readonly zone: string;
  /** The return codes that matched this entry's filter. */
  readonly codes: readonly string[];
  readonly weight: number;
  readonly spec: string;
  /** The list's TXT explanation, when asked for and available. */
  readonly reason?: string;
}

export interface DnsblError {
  readonly zone: string;
  /** A node:dns code (ETIMEOUT, ESERVFAIL, ...), EBADANSWER (answer outside 127/8) or ELISTERROR (127.255.255.x). */
  readonly code: string;
  /** The offending answers, for EBADANSWER / ELISTERROR. */
  readonly answers?: readonly string[];
  readonly message: string;
}

export interface DnsblResult {
  /** Sum of the weights of matching entries (each entry counts once). */
  readonly score: number;
  readonly listings: readonly DnsblListing[];
  /** Zones that gave no usable answer: the score is a lower bound of what it could be. */
  readonly errors: readonly DnsblError[];
}

export interface DnsblOptions {
  /** Also fetch the TXT record of each zone that lists the address (default false). */
  readonly reasons?: boolean;
}

export class ZoneSpecError extends Error {
  override readonly name = 'ZoneSpecError';
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function normaliseZone(zone: string, spec: string): string {
  const z = zone.toLowerCase().replace(/\.$/, '');
  if (z.length === 0 || z.length > 253 || !z.includes('.') || !z.split('.').every((l) => LABEL.test(l))) {
    throw new ZoneSpecError(`DNS list "${spec}": "${zone}" is not a DNS zone name`);
  }
  return z;
}

function parseOctet(text: string, spec: string, index: number): OctetPattern {
  const bad = (why: string): ZoneSpecError => new ZoneSpecError(`DNS list "${spec}": return-code octet ${index + 1} "${text}": ${why}`);
  const num = (s: string): number => {
    if (!/^\d{1,3}$/.test(s) || Number(s) > 255) throw bad(`"${s}" is not a number 0-255`);
    return Number(s);
  };
  if (!text.startsWith('[')) return [[num(text), num(text)]];
  if (!text.endsWith(']') || text.length < 3) throw bad('expected [n], [n..m] or [n;m;...]');
  return text
    .slice(1, -1)
    .split(';')
    .map((part): readonly [number, number] => {
      const range = part.split('..');
      if (range.length === 1) return [num(part), num(part)];
      if (range.length !== 2) throw bad(`"${part}" is not n or n..m`);
      const lo = num(range[0]!);
      const hi = num(range[1]!);
      if (lo > hi) throw bad(`range ${part} is empty`);
      return [lo, hi];
    });
}

/**
 * Parses one entry in postscreen_dnsbl_sites syntax (postconf(5)):
 * `zone`, `zone*weight`, `zone=127.0.0.2`, `zone=127.0.[0..255].[2;4..6]*-2`.
 * The weight is an integer (default 1); negative weights make allow lists.
 */
export function parseZoneSpec(text: string): ZoneSpec {
  const spec = text.trim();
  const m = /^([^=*\s]+)(?:=([^*\s]+))?(?:\*([+-]?\d+))?$/.exec(spec);
  if (!m) throw new ZoneSpecError(`DNS list "${text}": expected zone[=d.d.d.d][*weight], e.g. zen.spamhaus.org=127.0.0.[2..11]*3`);
  const zone = normaliseZone(m[1]!, spec);
  const weight = m[3] === undefined ? 1 : Number(m[3]);
  if (!Number.isSafeInteger(weight)) throw new ZoneSpecError(`DNS list "${spec}": weight ${m[3]} is out of range`);
  if (m[2] === undefined) return { zone, weight, spec };
  // Split on the dots outside [...]: `127.0.0.[2..11]` has four octets.
  const octets = m[2].match(/\[[^\]]*\]?|[^.[]+/g) ?? [];
  if (octets.length !== 4 || octets.join('.') !== m[2]) throw new ZoneSpecError(`DNS list "${spec}": return-code filter "${m[2]}" must have 4 octets (d.d.d.d)`);
  const filter = octets.map((o, i) => parseOctet(o, spec, i)) as unknown as [OctetPattern, OctetPattern, OctetPattern, OctetPattern];
  if (!filter[0].some(([lo, hi]) => lo <= 127 && 127 <= hi)) {
    throw new ZoneSpecError(`DNS list "${spec}": the filter can never match: list answers outside 127.0.0.0/8 are errors, not listings`);
  }
  return { zone, filter, weight, spec };
}

/** Parses a Postfix-style list (whitespace or comma separated) or an array of entries. */
export function parseZoneSpecs(input: string | readonly string[]): ZoneSpec[] {
  const items = typeof input === 'string' ? input.split(/[\s,]+/) : input.flatMap((s) => s.split(/[\s,]+/));
  return items.filter((s) => s !== '').map(parseZoneSpec);
}

/** Whether an answer address matches the entry's filter (no filter: any). */
export function matchesFilter(spec: ZoneSpec, code: string): boolean {
  if (spec.filter === undefined) return true;
  const o = code.split('.').map(Number);
  return o.length === 4 && spec.filter.every((pat, i) => pat.some(([lo, hi]) => o[i]! >= lo && o[i]! <= hi));
}

/** Expands an IPv6 address (any valid textual form) to 16 bytes. */
function ipv6Bytes(ip: string): Uint8Array {
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const o = v4[1]!.split('.').map(Number);
    s = `${s.slice(0, -v4[1]!.length)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/**
 * The DNSxL query prefix for an address (RFC 5782 §2.1, §2.4): IPv4 octets
 * reversed (`192.0.2.1` → `1.2.0.192`), IPv6 as 32 reversed nibbles. IPv4-mapped IPv6 (`::ffff:192.0.2.1`, `::ffff:c000:201`) becomes IPv4: lists
 * index the IPv4 address, and Postfix hands them to us in either form
 * depending on the listener. Throws TypeError for anything that is not an IP.
 */
export function reverseIp(ip: string): string {
  const s = ip.trim().replace(/^\[(.*)\]$/, '$1');
  if (net.isIPv4(s)) return s.split('.').reverse().join('.');
  if (!net.isIPv6(s) || s.includes('%')) throw new TypeError(`not an IP address: ${JSON.stringify(ip)}`);
  const b = ipv6Bytes(s);
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return `${b[15]}.${b[14]}.${b[13]}.${b[12]}`;
  }
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) nibbles.push((b[i]! & 0xf).toString(16), (b[i]! >> 4).toString(16));
  return nibbles.join('.');
}

/** Queries `<prefix>.<zone>` for every zone (once per distinct zone, in parallel) and scores the answers. */
async function check(prefix: string, zones: readonly ZoneSpec[], resolver: DnsResolver, opts: DnsblOptions): Promise<DnsblResult> {
  const distinct = [...new Set(zones.map((z) => z.zone))];
  const outcomes = new Map<string, { codes: string[] } | { error: DnsblError }>();
  await Promise.all(
    distinct.map(async (zone) => {
      outcomes.set(zone, await queryZone(`${prefix}.${zone}`, zone, resolver));
    }),
  );

  let score = 0;
  const listings: DnsblListing[] = [];
  const errors: DnsblError[] = [];
  for (const zone of distinct) {
    const o = outcomes.get(zone)!;
    if ('error' in o) errors.push(o.error);
  }
  for (const spec of zones) {
    const o = outcomes.get(spec.zone)!;
    if ('error' in o) continue;
    const codes = o.codes.filter((c) => matchesFilter(spec, c));
    if (codes.length === 0) continue;
    score += spec.weight;
    listings.push({ zone: spec.zone, codes, weight: spec.weight, spec: spec.spec });
  }

  if (opts.reasons && listings.length > 0) {
    const listed = [...new Set(listings.map((l) => l.zone))];
    const reasons = new Map<string, string>();
    await Promise.all(
      listed.map(async (zone) => {
        try {
          const txt = await lookup(resolver, `${prefix}.${zone}`, 'TXT');
          const text = txt.map((chunks) => chunks.join('')).join('; ');
          if (text) reasons.set(zone, text);
        } catch {
          // The listing stands without its explanation.
        }
      }),
    );
    for (let i = 0; i < listings.length; i++) {
      const reason = reasons.get(listings[i]!.zone);
      if (reason !== undefined) listings[i] = { ...listings[i]!, reason };
    }
  }
  return { score, listings, errors };
}

const LIST_ERRORS: Readonly<Record<string, string>> = {
  '127.255.255.252': 'typing error in the DNSBL name',
  '127.255.255.254': 'query via a public/open resolver, or an unregistered user',
  '127.255.255.255': 'excessive number of queries',
};

async function queryZone(name: string, zone: string, resolver: DnsResolver): Promise<{ codes: string[] } | { error: DnsblError }> {
  if (name.length > 253 || name.split('.').some((l) => l.length > 63)) {
    return { error: { zone, code: 'EBADNAME', message: `${zone}: ${name.length} octets is too long to query` } };
  }
  let codes: string[];
  try {
    codes = await lookup(resolver, name, 'A');
  } catch (err) {
    if (isVoidLookup(err)) return { codes: [] };
    const e = toDnsError(err, name, 'A');
    return { error: { zone, code: e.code, message: `${zone}: ${e.message}` } };
  }
  const foreign = codes.filter((c) => !net.isIPv4(c) || !c.startsWith('127.'));
  if (foreign.length > 0) {
    return { error: { zone, code: 'EBADANSWER', answers: codes, message: `${zone}: answer outside 127.0.0.0/8 (${foreign.join(', ')}): not a DNS list answer` } };
  }
  // 127.255.255.0/24: Spamhaus's error codes; list.dnswl.org's 127.0.0.255: query limit exceeded.
  const refusal = codes.filter((c) => c.startsWith('127.255.255.') || (c === '127.0.0.255' && /(^|\.)dnswl\.org$/.test(zone)));
  if (refusal.length > 0) {
    const why = refusal.map((c) => LIST_ERRORS[c] ?? 'the list refuses to answer').join('; ');
    return { error: { zone, code: 'ELISTERROR', answers: codes, message: `${zone}: ${refusal.join(', ')}: ${why}` } };
  }
  return { codes };
}

/**
 * Looks the client address up in IP lists (DNSBL and DNSWL) and scores it like
 * postscreen: each entry whose filter matches a return code adds its weight once.
 * Several entries may name the same zone (different codes, different weights);
 * the zone is asked once. Rejects (TypeError) only when `ip` is not an address.
 */
export async function checkDnsbl(ip: string, zones: readonly ZoneSpec[], resolver: DnsResolver, opts: DnsblOptions = {}): Promise<DnsblResult> {
  return check(reverseIp(ip), zones, resolver, opts);
}

/**
 * Looks a domain (sender, HELO, client hostname) up in RHSBLs: `<domain>.<zone>`.
 * IDNs are queried in their A-label form. Rejects (TypeError) when `domain` is not
 * a domain name; a name too long to query gives an EBADNAME error per zone.
 */
export async function checkRhsbl(domain: string, zones: readonly ZoneSpec[], resolver: DnsResolver, opts: DnsblOptions = {}): Promise<DnsblResult> {
  const d = domainToASCII(domain.trim().replace(/\.$/, '')).toLowerCase();
  if (d === '' || d.startsWith('.') || d.includes('..') || !/^[a-z0-9_.-]+$/.test(d)) {
    throw new TypeError(`not a domain name: ${JSON.stringify(domain)}`);
  }
  return check(d, zones, resolver, opts);
}
