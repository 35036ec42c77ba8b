// Short-lived memory of per-client and per-sender verdicts (DNSBL score,
// FCrDNS, SPF), so a busy client's second message costs no SPF evaluation
// and no DNSBL round of cache lookups. Entries live `ttlMs` (default 60 s,
// well under the DNS TTLs the answers came from); temporary failures are
// never stored, so a DNS hiccup is retried on the next message.
export class VerdictCache<T> {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  #entries = new Map<string, { readonly value: T; readonly expires: number }>();

  constructor(ttlMs: number, maxEntries: number) {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  get(key: string, now: number): T | undefined {
    return this.entry(key, now)?.value;
  }

  /** The live entry for `key`, with its expiry time (for memories derived from it, which must not outlive it). */
  entry(key: string, now: number): { readonly value: T; readonly expires: number } | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.expires <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  set(key: string, value: T, now: number): void {
    if (this.#ttlMs <= 0 || this.#maxEntries <= 0) return;
    // Insertion order is age order: drop the oldest when full (TTL-bound anyway, no LRU bookkeeping on hits).
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expires: now + this.#ttlMs });
  }

  /** Computes through the cache; results `keep` refuses (temporary failures) are returned but not stored. */
  async through(key: string, now: number, compute: () => Promise<T>, keep: (value: T) => boolean): Promise<T> {
    const hit = this.get(key, now);
    if (hit !== undefined) return hit;
    const value = await compute();
    if (keep(value)) this.set(key, value, now);
    return value;
  }

  clear(): void {
    this.#entries = new Map();
  }

  get size(): number {
    return this.#entries.size;
  }
}
