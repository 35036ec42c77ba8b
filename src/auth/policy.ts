// Brute-force throttling behind Dovecot's auth policy interface
// (auth_policy_server_url, the weakforced-compatible JSON protocol).
//
// Dovecot asks `allow` before every password check and `report`s the outcome.
// This class counts FAILED attempts in a sliding window per remote IP, per
// subnet (IPv4 /24, IPv6 /64) and per login. It counts DISTINCT password
// hashes (Dovecot's truncated `pwhash` of nonce+login+password), so a phone
// retrying the same stale password counts once while a guesser counts every
// guess. Past `delayAfter` distinct failures the answer is a tarpit (seconds,
// doubling, capped at maxDelay); past `blockAfter` the key is blocked for
// blockTime (status -1, the message is shown to the client).
//
// Thresholds: per IP as configured; per subnet 4x (several users behind one
// NAT or provider prefix); per login 2x (a distributed attack on one
// account). A login block does not lock out IPs that logged into that
// account successfully within the window (the owner's own devices).
//
// State is in memory, per daemon: several MX/IMAP hosts each count on their
// own. Memory is bounded (maxEntries keys, least recently used evicted first).
import { isIP } from 'node:net';
import { NetworkList, normalizeIp } from '../core/network.ts';

export interface PolicySettings {
  readonly enabled: boolean;
  /** Distinct failures (per IP) after which attempts are tarpitted. */
  readonly delayAfter: number;
  /** Distinct failures (per IP) after which the key is blocked. */
  readonly blockAfter: number;
  readonly windowMs: number;
  readonly blockTimeMs: number;
  readonly maxDelayMs: number;
  /** CIDRs never delayed or blocked. */
  readonly allow: readonly string[];
  readonly maxEntries: number;
}

export const DEFAULT_POLICY: PolicySettings = {
  enabled: true,
  delayAfter: 5,
  blockAfter: 10,
  windowMs: 10 * 60_000,
  blockTimeMs: 3_600_000,
  maxDelayMs: 10_000,
  allow: ['127.0.0.0/8', '::1/128'],
  maxEntries: 100_000,
};

export const SUBNET_FACTOR = 4;
export const LOGIN_FACTOR = 2;
export const BLOCK_MESSAGE = 'Too many failed logins, try again later';
/** Successful (login, IP) pairs remembered per login, to exempt the owner's devices from a login block. */
const MAX_TRUSTED_PER_LOGIN = 32;

export type KeyKind = 'ip' | 'subnet' | 'login';

export interface Attempt {
  readonly login?: string;
  readonly remote?: string;
  readonly pwhash?: string;
}

export interface Decision {
  /** Dovecot's status: <0 reject, 0 continue, >0 tarpit seconds. */
  readonly status: number;
  readonly msg?: string;
  readonly action: 'allow' | 'tarpit' | 'block';
  /** The key that decided (for tarpit/block). */
  readonly key?: string;
  readonly counts: { readonly ip?: number; readonly subnet?: number; readonly login?: number };
}

export interface BlockedEntry {
  readonly key: string;
  readonly kind: KeyKind;
  readonly until: string;
  readonly failures: number;
}

interface Failure {
  at: number;
  login: string;
  ip: string;
}

interface Entry {
  readonly kind: KeyKind;
  /** Distinct failures: `${login}\0${pwhash}` → the latest one. */
  failures: Map<string, Failure>;
  blockedUntil: number;
  /** login entries only: IP → last success. */
  trusted?: Map<string, number>;
}

export class BruteForcePolicy {
  #settings: PolicySettings;
  #allow: NetworkList;
  readonly #now: () => number;
  /** Insertion order = least recently used first. */
  readonly #entries = new Map<string, Entry>();
  #anonymous = 0;

  constructor(settings: PolicySettings, now: () => number = Date.now) {
    this.#settings = settings;
    this.#allow = new NetworkList(settings.allow);
    this.#now = now;
  }

  get settings(): PolicySettings {
    return this.#settings;
  }

  /** New thresholds on reload; the counters are kept. */
  configure(settings: PolicySettings): void {
    this.#settings = settings;
    this.#allow = new NetworkList(settings.allow);
    this.#evict();
  }

  get size(): number {
    return this.#entries.size;
  }

  isAllowListed(remote: string | undefined): boolean {
    return this.#allow.has(remote);
  }

  /** `command=allow`: may this attempt go ahead? */
  check(a: Attempt): Decision {
    const s = this.#settings;
    if (!s.enabled) return { status: 0, action: 'allow', counts: {} };
    const now = this.#now();
    const keys = this.#keys(a);
    if (keys.ip && this.isAllowListed(keys.ip.slice(3))) return { status: 0, action: 'allow', counts: {} };
    const counts: { ip?: number; subnet?: number; login?: number } = {};
    let delayOver = 0;
    let delayKey: string | undefined;
    for (const kind of ['ip', 'subnet', 'login'] as const) {
      const key = keys[kind];
      if (!key) continue;
      const e = this.#get(key, now, false);
      if (!e) continue;
      const n = e.failures.size;
      counts[kind] = n;
      if (e.blockedUntil > now) {
        const ip = keys.ip?.slice(3);
        const trusted = kind === 'login' && ip !== undefined && (e.trusted?.get(ip) ?? 0) > now - s.windowMs;
        if (!trusted) return { status: -1, msg: BLOCK_MESSAGE, action: 'block', key, counts };
        continue;
      }
      const over = n - s.delayAfter * factor(kind);
      if (over >= 0 && over + 1 > delayOver) {
        delayOver = over + 1;
        delayKey = key;
      }
    }
    if (delayOver > 0) {
      const maxSec = Math.max(1, Math.ceil(s.maxDelayMs / 1000));
      const seconds = Math.min(maxSec, 2 ** Math.min(delayOver - 1, 30));
      return { status: seconds, action: 'tarpit', key: delayKey!, counts };
    }
    return { status: 0, action: 'allow', counts };
  }

  /**
   * `command=report`: a failure is counted (unless the policy itself refused
   * it); a success forgives that login's failures from that IP (not the
   * IP's failures for other logins). Returns the keys that became blocked.
   */
  report(a: Attempt & { readonly success: boolean; readonly policyReject?: boolean }): string[] {
    const s = this.#settings;
    if (!s.enabled || a.policyReject) return [];
    const now = this.#now();
    const keys = this.#keys(a);
    const ip = keys.ip?.slice(3) ?? '';
    const login = keys.login?.slice(6) ?? '';
    if (a.success) {
      for (const kind of ['ip', 'subnet'] as const) {
        const e = keys[kind] ? this.#get(keys[kind], now, false) : undefined;
        if (e) for (const [k, f] of e.failures) if (f.login === login) e.failures.delete(k);
      }
      if (keys.login) {
        const e = this.#get(keys.login, now, true)!;
        for (const [k, f] of e.failures) if (f.ip === ip) e.failures.delete(k);
        if (ip) {
          e.trusted ??= new Map();
          e.trusted.delete(ip);
          e.trusted.set(ip, now);
          if (e.trusted.size > MAX_TRUSTED_PER_LOGIN) e.trusted.delete(e.trusted.keys().next().value!);
        }
      }
      this.#evict();
      return [];
    }
    if (keys.ip && this.isAllowListed(ip)) return [];
    // Without a hash (no auth_policy_hash_nonce) every failure is a new guess.
    const hash = a.pwhash ? a.pwhash.toLowerCase() : `#${++this.#anonymous}`;
    const blocked: string[] = [];
    for (const kind of ['ip', 'subnet', 'login'] as const) {
      const key = keys[kind];
      if (!key) continue;
      const e = this.#get(key, now, true)!;
      const id = `${login}\0${hash}`;
      e.failures.delete(id);
      e.failures.set(id, { at: now, login, ip });
      if (e.blockedUntil <= now && e.failures.size >= s.blockAfter * factor(kind)) {
        e.blockedUntil = now + s.blockTimeMs;
        blocked.push(key);
      }
    }
    this.#evict();
    return blocked;
  }

  /** Forgets everything about an IP (and its subnet), a subnet (CIDR) or a login. Returns the keys removed. */
  unblock(ipOrLogin: string): string[] {
    const text = ipOrLogin.trim();
    const removed: string[] = [];
    const drop = (key: string) => {
      if (this.#entries.delete(key)) removed.push(key);
    };
    const ip = normalizeIp(text);
    if (ip) {
      drop(`ip:${ip}`);
      drop(`subnet:${subnetOf(ip)}`);
    } else if (/^[0-9a-f.:]+\/\d+$/i.test(text)) {
      drop(`subnet:${text.toLowerCase()}`);
    } else {
      drop(`login:${canonicalLogin(text)}`);
    }
    return removed;
  }

  /** Keys blocked right now, longest block first. */
  blocked(): BlockedEntry[] {
    const now = this.#now();
    const out: BlockedEntry[] = [];
    for (const [key, e] of this.#entries) {
      if (e.blockedUntil <= now) continue;
      this.#expire(e, now);
      out.push({ key: key.slice(key.indexOf(':') + 1), kind: e.kind, until: new Date(e.blockedUntil).toISOString(), failures: e.failures.size });
    }
    return out.sort((x, y) => y.until.localeCompare(x.until));
  }

  #keys(a: Attempt): { ip?: string; subnet?: string; login?: string } {
    const ip = normalizeIp(a.remote);
    const login = a.login ? canonicalLogin(a.login) : '';
    return {
      ...(ip ? { ip: `ip:${ip}`, subnet: `subnet:${subnetOf(ip)}` } : {}),
      ...(login ? { login: `login:${login}` } : {}),
    };
  }

  #get(key: string, now: number, create: boolean): Entry | undefined {
    let e = this.#entries.get(key);
    if (e) {
      this.#expire(e, now);
      if (e.failures.size === 0 && e.blockedUntil <= now && !e.trusted?.size && !create) {
        this.#entries.delete(key);
        return undefined;
      }
      this.#entries.delete(key);
      this.#entries.set(key, e);
      return e;
    }
    if (!create) return undefined;
    e = { kind: key.slice(0, key.indexOf(':')) as KeyKind, failures: new Map(), blockedUntil: 0 };
    this.#entries.set(key, e);
    return e;
  }

  #expire(e: Entry, now: number): void {
    const cutoff = now - this.#settings.windowMs;
    // Insertion order is time order (a repeat is deleted and re-added).
    for (const [k, f] of e.failures) {
      if (f.at > cutoff) break;
      e.failures.delete(k);
    }
    if (e.trusted) {
      for (const [ip, at] of e.trusted) {
        if (at > cutoff) break;
        e.trusted.delete(ip);
      }
    }
  }

  #evict(): void {
    while (this.#entries.size > this.#settings.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }
}

function factor(kind: KeyKind): number {
  return kind === 'subnet' ? SUBNET_FACTOR : kind === 'login' ? LOGIN_FACTOR : 1;
}

function canonicalLogin(login: string): string {
  return login.trim().toLowerCase();
}

/** IPv4 /24 or IPv6 /64 in CIDR notation, e.g. 192.0.2.0/24, 2001:db8:0:1::/64. */
export function subnetOf(ip: string): string {
  if (isIP(ip) === 4) return `${ip.split('.').slice(0, 3).join('.')}.0/24`;
  const groups = expandIpv6(ip).slice(0, 4).map((g) => g.replace(/^0+(?=.)/, ''));
  return `${groups.join(':')}::/64`;
}

function expandIpv6(ip: string): string[] {
  let text = ip;
  // Trailing dotted IPv4 (::1.2.3.4) → two hex groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : Array(8 - h.length - t.length).fill('0') as string[];
  return [...h, ...zeros, ...t].map((g) => g.toLowerCase().padStart(4, '0'));
}
