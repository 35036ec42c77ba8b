// IP addresses and CIDR network lists, as every service compares them:
// mynetworks and spf.skip_networks (policy), milter.dmarc.exempt_networks,
// auth.policy.allow. One normal form, so an IPv4-mapped IPv6 client
// (::ffff:192.0.2.1) matches 192.0.2.0/24 everywhere.
import { BlockList, isIP } from 'node:net';

/** Plain IPv4 for IPv4-mapped IPv6; lowercase IPv6; undefined for anything that is not an address. */
export function normalizeIp(text: string | undefined): string | undefined {
  if (!text) return undefined;
  let ip = text.trim();
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) ip = mapped[1]!;
  const v = isIP(ip);
  if (v === 4) return ip;
  if (v === 6) return ip.toLowerCase();
  return undefined;
}

/** `addr/prefix` or a bare address; returns an error message instead of throwing. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | string {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  const address = m ? normalizeIp(m[1]) : undefined;
  if (!m || !address) return `not an IP address or CIDR network: ${JSON.stringify(text)}`;
  const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
  const max = family === 'ipv6' ? 128 : 32;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max) return `prefix length must be at most ${max}: ${JSON.stringify(text)}`;
  return { address, prefix, family };
}

/** A set of networks, built once from config CIDRs (already validated at load: a bad one throws here). */
export class NetworkList {
  readonly #list = new BlockList();
  readonly size: number;

  constructor(cidrs: readonly string[]) {
    for (const text of cidrs) {
      const c = parseCidr(text);
      if (typeof c === 'string') throw new Error(c);
      this.#list.addSubnet(c.address, c.prefix, c.family);
    }
    this.size = cidrs.length;
  }

  /** True when `ip` (any textual form normalizeIp accepts) is in one of the networks. */
  has(ip: string | undefined): boolean {
    if (this.size === 0) return false;
    const addr = normalizeIp(ip);
    if (!addr) return false;
    return this.#list.check(addr, isIP(addr) === 6 ? 'ipv6' : 'ipv4');
  }
}
