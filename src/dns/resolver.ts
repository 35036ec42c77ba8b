// The one DNS seam every check goes through (SPF via mailauth, DNSBL, FCrDNS,
// the milter's DKIM/DMARC/ARC). A DnsResolver has the contract of
// dns.promises.resolve, which is what mailauth's `resolver` option expects:
//
//   TXT → string[][] (the record's <character-string>s, unjoined)
//   MX  → [{ exchange, priority }]
//   A, AAAA, PTR, CNAME, NS → string[]
//
// and it fails by throwing an error whose `code` says what happened:
// ENOTFOUND (NXDOMAIN) and ENODATA (the name has no record of that type) are
// answers ("void lookups" in RFC 7208 §4.6.4); everything else (ETIMEOUT,
// ESERVFAIL, EREFUSED, ECONNREFUSED, ...) means "unknown right now", and every
// caller must turn it into a temporary result (temperror, DEFER, TEMP).
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { rawQuery } from './raw-query.ts';

export type DnsRrType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'PTR' | 'CNAME' | 'NS' | 'SPF';
export const DNS_RR_TYPES: readonly DnsRrType[] = ['A', 'AAAA', 'MX', 'TXT', 'PTR', 'CNAME', 'NS', 'SPF'];

/** mailauth's resolver contract (dns.promises.resolve shapes, errors with `.code`). */
export type DnsResolver = (name: string, rrtype: DnsRrType) => Promise<unknown>;

export interface MxRecord {
  exchange: string;
  priority: number;
}

/** What each record type resolves to. SPF (type 99) is obsolete (RFC 7208 §3.1) and not queryable: it always fails. */
export interface DnsAnswerMap {
  A: string[];
  AAAA: string[];
  MX: MxRecord[];
  TXT: string[][];
  PTR: string[];
  CNAME: string[];
  NS: string[];
  SPF: string[][];
}

/** An answer with the TTL the server gave, where Node exposes it (A and AAAA only). */
export interface DnsAnswer {
  readonly value: unknown;
  /** Smallest record TTL in seconds; undefined when unknown. */
  readonly ttlS?: number;
}

/** A resolver that can also report TTLs; cachedResolver() uses `query` when it is there. */
export interface TtlDnsResolver extends DnsResolver {
  query(name: string, rrtype: DnsRrType): Promise<DnsAnswer>;
}

/** Codes that are answers, not failures: the name or the type does not exist. */
export const VOID_CODES: ReadonlySet<string> = new Set(['ENOTFOUND', 'ENODATA']);
/** Codes that will not change by asking again: void answers and names/types that cannot be queried. */
const PERMANENT_CODES: ReadonlySet<string> = new Set(['ENOTFOUND', 'ENODATA', 'EBADNAME', 'EBADQUERY', 'EBADFAMILY', 'EBADSTR', 'ENOTIMP']);

/** A failed lookup. `code` follows node:dns (ENOTFOUND, ENODATA, ETIMEOUT, ESERVFAIL, EREFUSED, ...). */
export class DnsError extends Error {
  override readonly name = 'DnsError';
  readonly code: string;
  /** Asking again later may give an answer: callers must answer "try later", never "no". */
  readonly temporary: boolean;
  readonly hostname: string;
  readonly rrtype: string;
  constructor(code: string, hostname: string, rrtype: string, options?: { cause?: unknown; message?: string }) {
    super(options?.message ?? `${rrtype} ${hostname}: ${code}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.temporary = !PERMANENT_CODES.has(code);
    this.hostname = hostname;
    this.rrtype = rrtype;
  }
}

/** True for NXDOMAIN / NODATA errors (from any resolver following the contract). */
export function isVoidLookup(err: unknown): boolean {
  return typeof err === 'object' && err !== null && VOID_CODES.has(String((err as { code?: unknown }).code));
}

/** Any thrown value as a DnsError (unknown failures become temporary ESERVFAIL-like `code`s). */
export function toDnsError(err: unknown, hostname: string, rrtype: string): DnsError {
  if (err instanceof DnsError) return err;
  const code = typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : 'EUNKNOWN';
  return new DnsError(code, hostname, rrtype, { cause: err });
}

/** A typed lookup over any DnsResolver. */
export async function lookup<T extends DnsRrType>(resolver: DnsResolver, name: string, rrtype: T): Promise<DnsAnswerMap[T]> {
  return (await resolver(name, rrtype)) as DnsAnswerMap[T];
}

/**
 * The same resolver typed for libraries that pass any rrtype string, as
 * mailauth's `resolver` option does: `spf({ ..., resolver: forMailauth(r) })`.
 * Types outside DnsRrType fail with ENOTIMP (mailauth reads that as temperror).
 */
export function forMailauth(resolver: DnsResolver): (name: string, rrtype: string) => Promise<unknown> {
  return (name, rrtype) => {
    const t = String(rrtype).toUpperCase() as DnsRrType;
    if (!DNS_RR_TYPES.includes(t)) return Promise.reject(new DnsError('ENOTIMP', name, String(rrtype), { message: `${rrtype} ${name}: record type not supported` }));
    return resolver(name, t);
  };
}

/**
 * Checks one `dns.servers` entry: an IP address with an optional port,
 * `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`, `[2001:db8::53]:5353`.
 * Returns it in the form Resolver.setServers() takes; throws with a clear message otherwise.
 */
export function parseDnsServer(entry: string): string {
  const s = entry.trim();
  let host = s;
  let port: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracket) {
    host = bracket[1]!;
    port = bracket[2];
    if (!net.isIPv6(host)) throw new Error(`DNS server "${entry}": [${host}] is not an IPv6 address`);
  } else if (!net.isIP(s)) {
    const m = /^([^:]+):(\d+)$/.exec(s);
    if (!m || !net.isIPv4(m[1]!)) throw new Error(`DNS server "${entry}": expected an IP address, IP:port or [IPv6]:port`);
    host = m[1]!;
    port = m[2];
  }
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw new Error(`DNS server "${entry}": port must be 1-65535`);
  if (port === undefined) return host;
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

export interface ResolverOptions {
  /** `host:port` or `[v6]:port`; an empty list means the system resolvers (/etc/resolv.conf). */
  readonly servers: readonly string[];
  /** Deadline for one lookup, retries included: after this long it fails with ETIMEOUT. */
  readonly timeoutMs: number;
  /** At least this many tries per server fit in the deadline (default 2); c-ares fails over between servers. */
  readonly tries?: number;
}

export interface NodeDnsResolver extends TtlDnsResolver {
  readonly servers: readonly string[];
  readonly timeoutMs: number;
  /** Aborts every outstanding lookup (they fail with ECANCELLED). */
  cancel(): void;
}

/**
 * A DnsResolver over node:dns/promises (c-ares) with explicit servers.
 *
 * The deadline is enforced here, not left to c-ares, whose timing is coarse:
 * Node checks c-ares timeouts on a periodic tick (every `timeout` ms, at most
 * 1 s), so a try lasts between one and two timeouts, and without `maxTimeout`
 * c-ares doubles the timeout on each retry. So c-ares gets short tries (a
 * quarter of the budget with the default 2 tries, which also bounds how long a
 * dead server delays failover to the next one), we ask again when c-ares gives
 * up early, and we fail with ETIMEOUT at `timeoutMs`, whatever c-ares is still
 * doing. Answers truncated over UDP (TC bit) are retried over TCP by c-ares.
 *
 * Only A and AAAA go through c-ares, the one place Node reports a TTL. TXT,
 * MX, PTR, CNAME and NS are asked by our own stub client (raw-query.ts), which
 * reads every record's TTL, so the cache keeps SPF, DKIM, DMARC and PTR
 * answers exactly as long as their zone says. The stub client also asks A/AAAA
 * names c-ares refuses (EBADNAME for "+", ":", space, ...: legal in DNS, and
 * SPF macros put local parts into names). Same servers, same deadline.
 */
export function createResolver(opts: ResolverOptions): NodeDnsResolver {
  const timeoutMs = opts.timeoutMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Error(`DNS timeout must be a positive number of ms, got ${timeoutMs}`);
  const tries = opts.tries ?? 2;
  if (!Number.isInteger(tries) || tries < 1 || tries > 10) throw new Error(`DNS tries must be 1-10, got ${tries}`);
  const servers = opts.servers.map(parseDnsServer);
  // Each try takes [attemptMs, 2 * attemptMs] (the tick), so at least `tries` of them fit in the budget.
  const attemptMs = Math.max(1, Math.floor(timeoutMs / (2 * tries)));
  const resolver = new Resolver({ timeout: attemptMs, tries, maxTimeout: attemptMs });
  if (servers.length > 0) resolver.setServers(servers);
  let cancelRaw = new AbortController();
  const serverList = (): readonly string[] => (servers.length > 0 ? servers : resolver.getServers());

  async function raw(name: string, rrtype: DnsRrType): Promise<DnsAnswer> {
    const answer = await rawAnswer(name, rrtype);
    // c-ares returns [] when the answer holds only CNAMEs (a dangling chain or a loop): no data of that type.
    if ((answer.value as unknown[]).length === 0) throw new DnsError('ENODATA', name, rrtype);
    return answer;
  }

  async function rawAnswer(name: string, rrtype: DnsRrType): Promise<DnsAnswer> {
    switch (rrtype) {
      case 'A':
      case 'AAAA': {
        const recs = rrtype === 'A' ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true });
        return { value: recs.map((r) => r.address), ttlS: recs.reduce((min, r) => Math.min(min, r.ttl), Infinity) };
      }
      case 'MX':
      case 'TXT':
      case 'PTR':
      case 'CNAME':
      case 'NS':
        // c-ares reports no TTL for these; our stub client does, so the cache keeps SPF, DKIM, DMARC and PTR answers for their TTL.
        return rawQuery(name, rrtype, { servers: serverList(), timeoutMs, tries, signal: cancelRaw.signal });
      default:
        // c-ares cannot ask for type 99 (SPF); RFC 7208 §3.1 retired it, and mailauth only asks TXT.
        throw new DnsError('ENOTIMP', name, String(rrtype), { message: `${String(rrtype)} ${name}: record type not supported` });
    }
  }

  // c-ares refuses names DNS allows ("+", ":", space, ...): ask them ourselves. rawQuery still says
  // EBADNAME for names DNS cannot carry (empty or over-long labels). Its deadline starts just after
  // query()'s, which so ends the lookup first: a raw ETIMEOUT never reaches the retry below.
  const askRefused = (name: string, rrtype: DnsRrType) => (err: unknown): Promise<DnsAnswer> => {
    if ((err as { code?: unknown } | null)?.code !== 'EBADNAME') throw err;
    return rawQuery(name, rrtype, { servers: serverList(), timeoutMs, tries, signal: cancelRaw.signal });
  };

  function query(name: string, rrtype: DnsRrType): Promise<DnsAnswer> {
    return new Promise<DnsAnswer>((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        reject(new DnsError('ETIMEOUT', name, rrtype, { message: `${rrtype} ${name}: ETIMEOUT after ${timeoutMs} ms` }));
      }, timeoutMs);
      const attempt = (): void => {
        const started = performance.now();
        raw(name, rrtype).catch(askRefused(name, rrtype)).then(
          (answer) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            resolve(answer);
          },
          (err: unknown) => {
            if (done) return;
            const e = toDnsError(err, name, rrtype);
            // c-ares ran out of tries before our deadline: ask again; the deadline timer ends it.
            // (A "timeout" that came back at once is not a real one: do not spin on it.)
            if (e.code === 'ETIMEOUT' && performance.now() - started >= attemptMs / 2) return attempt();
            done = true;
            clearTimeout(timer);
            reject(e);
          },
        );
      };
      attempt();
    });
  }

  const resolve = (async (name: string, rrtype: DnsRrType) => (await query(name, rrtype)).value) as NodeDnsResolver;
  return Object.assign(resolve, {
    query,
    servers: Object.freeze(servers.length > 0 ? servers : resolver.getServers()),
    timeoutMs,
    cancel: () => {
      resolver.cancel();
      cancelRaw.abort();
      cancelRaw = new AbortController();
    },
  });
}
