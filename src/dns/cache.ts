// A TTL cache in front of a DnsResolver, shared by every check in a daemon:
// one mail transaction asks the same names several times (mailauth asks
// `TXT example.com` for SPF and again for DMARC; DNSBL and FCrDNS repeat per
// connection from the same client).
//
// - Answers live for their TTL where the resolver reports one
//   (TtlDnsResolver.query: createResolver reports it for every type), else
//   for `defaultTtlS`; always clamped to [minTtlS, maxTtlS].
// - NXDOMAIN and NODATA are answers too and are cached for `negativeTtlS`
//   (RFC 2308; Node does not expose the SOA minimum, so it is configured).
// - Temporary failures (timeout, SERVFAIL, ...) are never cached: the next
//   caller asks again.
// - Concurrent identical questions share one upstream query.
// - Every caller gets its own copy of the answer (mailauth sorts MX lists in place).
// - observed(life) is the same resolver, also telling how long each answer it
//   gives has left (its cache life: TTL-bound), so whatever is computed from
//   the answers (a DNSBL or SPF verdict) is not remembered beyond them.
import { DnsError, type DnsAnswer, type DnsResolver, type DnsRrType, type TtlDnsResolver, toDnsError, VOID_CODES } from './resolver.ts';

export interface DnsCacheOptions {
  /** Most entries kept; the least recently used go first. 0 disables storing (coalescing still works). */
  readonly maxEntries: number;
  /** Floor for positive TTLs, seconds (a TTL of 0 stays uncached when this is 0). */
  readonly minTtlS: number;
  /** Ceiling for every TTL, seconds. */
  readonly maxTtlS: number;
  /** How long NXDOMAIN / NODATA answers are kept, seconds (clamped to maxTtlS). */
  readonly negativeTtlS: number;
  /** TTL for answers from a resolver that reports none (a plain DnsResolver), seconds. Default 300. */
  readonly defaultTtlS?: number;
  /** Monotonic clock in ms (tests inject one). Default performance.now. */
  readonly now?: () => number;
}

export interface DnsCacheStats {
  /** Answered from the cache, positive or negative. */
  hits: number;
  /** Of the hits, how many were cached NXDOMAIN/NODATA. */
  negativeHits: number;
  /** Went upstream. */
  misses: number;
  /** Joined a query already in flight instead of asking again. */
  inflightJoins: number;
  /** Dropped to stay within maxEntries. */
  evictions: number;
}

/** The shortest remaining life, in ms, of the DNS answers something was computed from (start at Infinity). */
export interface DnsLifetime {
  remainingMs: number;
}

export interface CachedDnsResolver extends DnsResolver {
  readonly stats: Readonly<DnsCacheStats>;
  readonly size: number;
  /** Forgets everything; answers of queries in flight at the time are not stored. */
  clear(): void;
  /**
   * This resolver, also lowering `life.remainingMs` to the time each answer it
   * gives (positive or void, from the cache or fresh) has left in the cache,
   * i.e. its TTL (as clamped here) minus its age. Temporary failures report nothing.
   */
  observed(life: DnsLifetime): DnsResolver;
}

/**
 * `resolver` observed into `life` when it is a cachedResolver(); any other
 * resolver is returned as it is and leaves `life` alone (nothing known).
 */
export function observeLifetime(resolver: DnsResolver, life: DnsLifetime): DnsResolver {
  const observed = (resolver as Partial<CachedDnsResolver>).observed;
  return typeof observed === 'function' ? observed.call(resolver, life) : resolver;
}

/** lifeMs: how long the answer lives from when it was received (its clamped TTL). */
type Outcome =
  | { readonly ok: true; readonly value: unknown; readonly lifeMs: number }
  | { readonly ok: false; readonly code: string; readonly message: string; readonly lifeMs: number };

interface Entry {
  readonly outcome: Outcome;
  readonly expires: number;
}

export const DNS_CACHE_DEFAULTS = { defaultTtlS: 300 } as const;

export function cachedResolver(inner: DnsResolver | TtlDnsResolver, opts: DnsCacheOptions): CachedDnsResolver {
  const { maxEntries, minTtlS, maxTtlS } = opts;
  if (!(minTtlS >= 0 && maxTtlS >= minTtlS)) throw new Error(`DNS cache: need 0 <= minTtlS <= maxTtlS (got ${minTtlS}, ${maxTtlS})`);
  const defaultTtlS = opts.defaultTtlS ?? DNS_CACHE_DEFAULTS.defaultTtlS;
  const negativeTtlS = Math.min(opts.negativeTtlS, maxTtlS);
  const now = opts.now ?? (() => performance.now());
  const ask: (name: string, rrtype: DnsRrType) => Promise<DnsAnswer> =
    'query' in inner && typeof inner.query === 'function'
      ? inner.query.bind(inner)
      : async (name, rrtype) => ({ value: await inner(name, rrtype) });

  // Map iteration order is insertion order: re-inserting on every hit makes the first key the least recently used.
  let entries = new Map<string, Entry>();
  const inflight = new Map<string, Promise<Outcome>>();
  let generation = 0;
  const stats: DnsCacheStats = { hits: 0, negativeHits: 0, misses: 0, inflightJoins: 0, evictions: 0 };

  function store(key: string, outcome: Outcome): void {
    if (maxEntries <= 0 || outcome.lifeMs <= 0) return;
    entries.delete(key);
    entries.set(key, { outcome, expires: now() + outcome.lifeMs });
    while (entries.size > maxEntries) {
      const oldest = entries.keys().next();
      if (oldest.done) break;
      entries.delete(oldest.value);
      stats.evictions++;
    }
  }

  async function fetch(key: string, name: string, rrtype: DnsRrType): Promise<Outcome> {
    const gen = generation;
    try {
      const answer = await ask(name, rrtype);
      const ttl = answer.ttlS === undefined || !Number.isFinite(answer.ttlS) ? defaultTtlS : answer.ttlS;
      const outcome: Outcome = { ok: true, value: answer.value, lifeMs: Math.min(maxTtlS, Math.max(minTtlS, ttl)) * 1000 };
      if (gen === generation) store(key, outcome);
      return outcome;
    } catch (err) {
      const e = toDnsError(err, name, rrtype);
      const outcome: Outcome = { ok: false, code: e.code, message: e.message, lifeMs: negativeTtlS * 1000 };
      if (VOID_CODES.has(e.code) && gen === generation) store(key, outcome);
      if (!VOID_CODES.has(e.code)) throw e; // temporary or odd failures are not cached
      return outcome;
    }
  }

  function settle(outcome: Outcome, name: string, rrtype: DnsRrType): unknown {
    if (outcome.ok) return copy(outcome.value);
    // NXDOMAIN is the everyday answer (DNSBLs, SPF void lookups): skip the stack trace, it was most of the cost.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      throw new DnsError(outcome.code, name, rrtype, { message: outcome.message });
    } finally {
      Error.stackTraceLimit = limit;
    }
  }

  async function answer(name: string, rrtype: DnsRrType, life: DnsLifetime | undefined): Promise<unknown> {
    const key = `${rrtype} ${name.toLowerCase().replace(/\.$/, '')}`;
    const entry = entries.get(key);
    if (entry !== undefined) {
      const left = entry.expires - now();
      if (left > 0) {
        stats.hits++;
        if (!entry.outcome.ok) stats.negativeHits++;
        entries.delete(key);
        entries.set(key, entry);
        if (life !== undefined && left < life.remainingMs) life.remainingMs = left;
        return settle(entry.outcome, name, rrtype);
      }
      entries.delete(key);
    }
    let pending = inflight.get(key);
    if (pending !== undefined) {
      stats.inflightJoins++;
    } else {
      stats.misses++;
      pending = fetch(key, name, rrtype);
      inflight.set(key, pending);
      const done = (): void => void inflight.delete(key);
      pending.then(done, done);
    }
    const outcome = await pending;
    if (life !== undefined && outcome.lifeMs < life.remainingMs) life.remainingMs = outcome.lifeMs;
    return settle(outcome, name, rrtype);
  }

  const resolve = ((name: string, rrtype: DnsRrType): Promise<unknown> => answer(name, rrtype, undefined)) as CachedDnsResolver;

  return Object.defineProperties(resolve, {
    stats: { value: stats, enumerable: true },
    size: { get: () => entries.size, enumerable: true },
    clear: {
      value: () => {
        generation++;
        entries = new Map();
      },
    },
    observed: {
      value: (life: DnsLifetime): DnsResolver => (name, rrtype) => answer(name, rrtype, life),
    },
  });
}

/** A fresh copy of an answer: arrays and plain records (MX) are copied, strings shared. */
function copy(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(copy);
  if (value !== null && typeof value === 'object') return { ...value };
  return value;
}
