// Triplet greylisting as postgrey does it, on the shared policy state so every
// MX host greylists (and lets through) the same triplets.
//
// A triplet is (client network, sender, recipient). First seen: greylisted.
// Retried before `delay`: still greylisted, first seen kept. Retried after
// `delay` and within `retryWindow` of first seen: passed, and from then on it
// passes while it is seen at least once per `maxAge`. Not retried within
// `retryWindow`: it starts over. A client network whose greylisting was
// passed `autoAllowAfter` times (counted at most once an hour, as postgrey
// does, so one message to many recipients counts once) is let through without
// looking at triplets, until it has not been seen for `maxAge`.
//
// Skipping greylisting (SPF pass, allow-lists, authenticated clients) is the
// policy engine's decision, not this module's.
import { isIPv4, isIPv6 } from 'node:net';
import type { PolicyStateStore } from '../state/types.ts';

export interface GreylistSettings {
  /** A retry is accepted this long after first seen (postgrey --delay, 300 s). */
  delayMs: number;
  /** Entries not seen for this long are forgotten (postgrey --max-age, 35 d). */
  maxAgeMs: number;
  /** A first retry later than this after first seen starts over (postgrey --retry-window, 2 d). */
  retryWindowMs: number;
  /** Passes after which a client network skips greylisting (postgrey --auto-whitelist-clients, 5; 0 = off). */
  autoAllowAfter: number;
  /** Client networks (postgrey --lookup-by-subnet: ipv4cidr 24, ipv6cidr 64). */
  ipv4Prefix: number;
  ipv6Prefix: number;
}

export const GREYLIST_DEFAULTS: Readonly<GreylistSettings> = Object.freeze({
  delayMs: 300_000,
  maxAgeMs: 35 * 86_400_000,
  retryWindowMs: 2 * 86_400_000,
  autoAllowAfter: 5,
  ipv4Prefix: 24,
  ipv6Prefix: 64,
});

/** A client network's passes count at most once per this interval (postgrey's rule). */
export const AUTO_ALLOW_COUNT_EVERY_MS = 3_600_000;
/** An auto-allowed client's last seen time is refreshed at most this often (a write saved per message). */
const AUTO_ALLOW_TOUCH_EVERY_MS = 3_600_000;

export interface GreylistResult {
  readonly result: 'pass' | 'greylisted' | 'auto_allowed';
  readonly triplet: string;
  /** When the triplet was first seen; for auto_allowed, when its client network was. */
  readonly firstSeen: number;
  /** greylisted only: time left until a retry passes. */
  readonly retryAfterMs?: number;
}

export async function checkGreylist(
  store: PolicyStateStore,
  input: { readonly clientIp: string; readonly sender: string; readonly recipient: string; readonly now: number },
  settings: GreylistSettings,
): Promise<GreylistResult> {
  const { now } = input;
  const network = clientNetwork(input.clientIp, settings);
  const triplet = tripletOf(network, input.sender, input.recipient);
  const client = { minPassIntervalMs: AUTO_ALLOW_COUNT_EVERY_MS, maxAgeMs: settings.maxAgeMs };

  if (settings.autoAllowAfter > 0) {
    const known = await store.readClient(network, now);
    if (known && known.passes >= settings.autoAllowAfter) {
      if (now - known.lastSeen >= AUTO_ALLOW_TOUCH_EVERY_MS) {
        // Best effort: a missed refresh only shortens the allowance by an hour; no reason to defer mail.
        await store.updateClient(network, now, { ...client, pass: false }).catch(() => undefined);
      }
      return { result: 'auto_allowed', triplet, firstSeen: known.firstSeen };
    }
  }

  const seen = await store.seeTriplet(triplet, now, settings);
  const { firstSeen, passedAt } = seen.record;
  if (passedAt !== undefined) {
    if (seen.passedNow && settings.autoAllowAfter > 0) {
      // The triplet has passed either way; a lost count only delays the client's auto-allow.
      await store.updateClient(network, now, { ...client, pass: true }).catch(() => undefined);
    }
    return { result: 'pass', triplet, firstSeen };
  }
  return { result: 'greylisted', triplet, firstSeen, retryAfterMs: Math.max(1, firstSeen + settings.delayMs - now) };
}

/**
 * The triplet key, postgrey style: `<client network>/<sender>/<recipient>`,
 * e.g. `192.0.2.0/24/news@lists.example/bob@example.org`.
 */
export function greylistTriplet(clientIp: string, sender: string, recipient: string, settings: Pick<GreylistSettings, 'ipv4Prefix' | 'ipv6Prefix'>): string {
  return tripletOf(clientNetwork(clientIp, settings), sender, recipient);
}

function tripletOf(network: string, sender: string, recipient: string): string {
  return `${network}/${normalizeSender(sender)}/${recipient.trim().toLowerCase() || '<>'}`;
}

/**
 * The envelope sender as greylisting compares it, so that the parts a sender
 * changes per message do not make every retry a new triplet. Lower-cased, then
 * in the local part only (the domain is kept as is):
 * - SRS: `SRS0=HHHH=TT=domain=local` → `srs0=#=#=domain=local` (hash and day
 *   stamp change with the day), likewise both hashes and the stamp of `SRS1=`;
 * - BATV: `prvs=tagvalue=local` (or `prvs=local=tagvalue`) → `local`, choosing
 *   the part that is not a 10-character tag as postgrey does;
 * - everything from the first `+` is dropped (VERP and list extensions);
 * - every all-digit word becomes `#` (VERP counters: `bounce-123-456` → `bounce-#-#`).
 * That is postgrey's do_sender_substitutions plus SRS. Nothing else (`-`
 * extensions, hex VERP cookies) is touched: real local parts use them too.
 * The null sender is `<>`.
 */
export function normalizeSender(sender: string): string {
  const s = sender.trim().toLowerCase();
  if (s === '') return '<>';
  const at = s.lastIndexOf('@');
  if (at < 0) return s;
  let local = s.slice(0, at);
  const domain = s.slice(at + 1);
  local = local
    .replace(/^srs0[=+-][a-z0-9+/]+=[a-z2-7]{2}=(.+)$/, 'srs0=#=#=$1')
    .replace(/^srs1[=+-][a-z0-9+/]+=([^=]+)=[=+-][a-z0-9+/]+=[a-z2-7]{2}=(.+)$/, 'srs1=#=$1==#=#=$2');
  if (local.startsWith('prvs=')) {
    const parts = local.split('=');
    if (parts.length === 3) {
      const tag = (p: string) => /^[0-9a-z]{10}/.test(p);
      local = tag(parts[2]!) && !tag(parts[1]!) ? parts[1]! : parts[2]!;
    }
  }
  // Not inside an SRS address: its original local part is the whole tail.
  if (!/^srs[01]=/.test(local)) local = local.replace(/\+.*/, '');
  local = local.replace(/\b\d+\b/g, '#');
  return `${local}@${domain}`;
}

/**
 * The client network: the address masked to the configured prefix, as
 * `192.0.2.0/24` or `2001:db8:1:2::/64`. IPv4-mapped IPv6 (`::ffff:192.0.2.1`)
 * counts as IPv4. Anything that is not an IP address is used as is (lower-case).
 */
export function clientNetwork(clientIp: string, settings: Pick<GreylistSettings, 'ipv4Prefix' | 'ipv6Prefix'>): string {
  let ip = clientIp.trim().replace(/^\[(.*)\]$/, '$1').replace(/^ipv6:/i, '');
  const zone = ip.indexOf('%');
  if (zone >= 0) ip = ip.slice(0, zone);
  if (isIPv4(ip)) return ipv4Network(ipv4Number(ip), settings.ipv4Prefix);
  if (!isIPv6(ip)) return clientIp.trim().toLowerCase();
  const groups = ipv6Groups(ip);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return ipv4Network(((groups[6]! << 16) | groups[7]!) >>> 0, settings.ipv4Prefix);
  }
  const prefix = clamp(settings.ipv6Prefix, 128);
  const masked = groups.map((g, i) => {
    const bits = Math.min(16, Math.max(0, prefix - i * 16));
    return bits === 0 ? 0 : g & ((0xffff << (16 - bits)) & 0xffff);
  });
  return `${formatIpv6(masked)}/${prefix}`;
}

function clamp(prefix: number, max: number): number {
  return Math.min(max, Math.max(0, Math.trunc(prefix)));
}

function ipv4Number(ip: string): number {
  return ip.split('.').reduce((n, octet) => (n << 8) + Number(octet), 0) >>> 0;
}

function ipv4Network(n: number, prefixIn: number): string {
  const prefix = clamp(prefixIn, 32);
  const masked = prefix === 0 ? 0 : (n & (0xffffffff << (32 - prefix))) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (masked >>> s) & 255).join('.')}/${prefix}`;
}

/** Eight 16-bit groups of a valid IPv6 address (net.isIPv6 checked it), embedded IPv4 included. */
function ipv6Groups(ip: string): number[] {
  let text = ip.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const n = ipv4Number(v4[1]!);
    text = `${text.slice(0, v4.index)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (part: string | undefined) => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const left = parse(head);
  const right = parse(tail);
  return tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/** RFC 5952 text: lower-case, no leading zeros, the longest run (2+) of zero groups as `::`. */
function formatIpv6(groups: readonly number[]): string {
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
