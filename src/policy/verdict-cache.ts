// Short-lived memory of per-client and per-sender verdicts (DNSBL score,
// FCrDNS, SPF), so a busy client's second message costs no SPF evaluation
// and no DNSBL round of cache lookups. Entries live `ttlMs` (60 s in the
// policy engine), or less when the DNS answers they were made from expire
// sooner (set()'s maxLifeMs: a DNSBL listing with a 10 s TTL is a 10 s verdict);
// temporary failures are never stored, so a DNS hiccup is retried on the
// next message.
import { TtlCache } from '../core/ttl-cache.ts';

export class VerdictCache<T> extends TtlCache<T> {
  /** Computes through the cache; results `keep` refuses (temporary failures) are returned but not stored. */
  async through(key: string, now: number, compute: () => Promise<T>, keep: (value: T) => boolean): Promise<T> {
    const hit = this.get(key, now);
    if (hit !== undefined) return hit;
    const value = await compute();
    if (keep(value)) this.set(key, value, now);
    return value;
  }

  clear(): void {
    this.flush();
  }
}
