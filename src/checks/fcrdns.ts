// Forward-confirmed reverse DNS (FCrDNS, "iprev" in RFC 8601 §3): the client
// address has a PTR name that resolves back to the same address.
//
// Postfix already does this for every connection: `client_name` is the
// verified name, or `unknown`. When it has a name we answer from it and ask
// DNS nothing (this runs on the hot path of every policy request); otherwise
// we look ourselves, because `unknown` mixes "no PTR", "PTR does not point
// back" and "DNS was down", and only the last must turn into a temporary answer.
import net from 'node:net';
import { reverseIp } from '../dns/dnsbl.ts';
import { isVoidLookup, lookup, toDnsError, type DnsResolver } from '../dns/resolver.ts';

export interface FcrdnsVerdict {
  /**
   * pass: a PTR name resolves back to the client address;
   * fail: PTR names exist but none resolves back;
   * none: no PTR record (NXDOMAIN / NODATA), or no usable client address;
   * temperror: a DNS failure that could change the answer.
   */
  result: 'pass' | 'fail' | 'none' | 'temperror';
  /** The PTR names (lower case, no trailing dot, at most MAX_PTR_NAMES), or Postfix's verified name. */
  ptrNames: string[];
  /** The first PTR name that resolved back to the client address. */
  confirmedName?: string;
  /** Human explanation for logs. */
  detail: string;
}

export interface FcrdnsInput {
  clientIp: string;
  /** Postfix client_name: the verified name, or 'unknown'. */
  clientName?: string;
  /** Postfix reverse_client_name: the unverified PTR name, or 'unknown'. Informational only. */
  reverseClientName?: string;
}

/** PTR names checked per address (the same bound RFC 7208 §4.6.4 puts on the SPF "ptr" mechanism). */
export const MAX_PTR_NAMES = 10;

/**
 * The canonical text form of an IP address: IPv4 as is, IPv4-mapped IPv6
 * (`::ffff:192.0.2.1`, `::ffff:c000:201`) as IPv4, other IPv6 compressed
 * lower case. Undefined for anything else (zone ids included).
 */
export function canonicalIp(ip: string): string | undefined {
  const s = ip.trim();
  if (net.isIPv4(s)) return s;
  if (!net.isIPv6(s) || s.includes('%')) return undefined;
  // The WHATWG URL parser writes every IPv6 address in its canonical (RFC 5952) form.
  const canon = new URL(`http://[${s}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canon);
  if (mapped) {
    const hi = parseInt(mapped[1]!, 16);
    const lo = parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return canon;
}

/** The PTR query name for an address: `1.2.0.192.in-addr.arpa` or 32 nibbles + `.ip6.arpa`. */
export function ptrQueryName(ip: string): string | undefined {
  const c = canonicalIp(ip);
  if (c === undefined) return undefined;
  return `${reverseIp(c)}.${net.isIPv4(c) ? 'in-addr' : 'ip6'}.arpa`;
}

const hostName = (name: string): string => name.trim().toLowerCase().replace(/\.$/, '');

/** Never throws: an unexpected failure is a temperror. */
export async function checkFcrdns(input: FcrdnsInput, resolver: DnsResolver): Promise<FcrdnsVerdict> {
  try {
    const verified = input.clientName === undefined ? '' : hostName(input.clientName);
    if (verified !== '' && verified !== 'unknown') {
      // Postfix resolved PTR and forward itself; asking again only adds latency.
      return { result: 'pass', ptrNames: [verified], confirmedName: verified, detail: `verified by Postfix: ${verified}` };
    }
    return await lookUp(input.clientIp, resolver);
  } catch (err) {
    return { result: 'temperror', ptrNames: [], detail: `FCrDNS check failed: ${(err as Error)?.message ?? String(err)}` };
  }
}

async function lookUp(clientIp: string, resolver: DnsResolver): Promise<FcrdnsVerdict> {
  const ip = canonicalIp(clientIp);
  const qname = ptrQueryName(clientIp);
  if (ip === undefined || qname === undefined) {
    return { result: 'none', ptrNames: [], detail: `not an IP address: ${JSON.stringify(clientIp)}` };
  }
  let answer: string[];
  try {
    answer = await lookup(resolver, qname, 'PTR');
  } catch (err) {
    if (isVoidLookup(err)) return { result: 'none', ptrNames: [], detail: `no PTR record for ${ip}` };
    const e = toDnsError(err, qname, 'PTR');
    return { result: 'temperror', ptrNames: [], detail: `PTR lookup for ${ip} failed: ${e.code}` };
  }
  const ptrNames = [...new Set(answer.map(hostName).filter((n) => n !== ''))].slice(0, MAX_PTR_NAMES);
  if (ptrNames.length === 0) return { result: 'none', ptrNames, detail: `no PTR record for ${ip}` };

  const rrtype = net.isIPv4(ip) ? 'A' : 'AAAA';
  const outcomes = await Promise.all(
    ptrNames.map(async (name): Promise<{ match: boolean; temporary?: string }> => {
      try {
        const addrs = await lookup(resolver, name, rrtype);
        return { match: addrs.some((a) => canonicalIp(a) === ip) };
      } catch (err) {
        // NXDOMAIN, NODATA and names that cannot be asked (EBADNAME) just do not confirm.
        const e = toDnsError(err, name, rrtype);
        return e.temporary ? { match: false, temporary: `${rrtype} ${name}: ${e.code}` } : { match: false };
      }
    }),
  );
  const confirmed = ptrNames.find((_, i) => outcomes[i]!.match);
  if (confirmed !== undefined) {
    return { result: 'pass', ptrNames, confirmedName: confirmed, detail: `${ip} -> ${confirmed} -> ${ip}` };
  }
  const failures = outcomes.flatMap((o) => (o.temporary ? [o.temporary] : []));
  if (failures.length > 0) {
    // A name we could not resolve might have pointed back: not a "no" yet.
    return { result: 'temperror', ptrNames, detail: `forward lookup failed: ${failures.join(', ')}` };
  }
  return { result: 'fail', ptrNames, detail: `no PTR name of ${ip} resolves back to it (${ptrNames.join(', ')})` };
}
