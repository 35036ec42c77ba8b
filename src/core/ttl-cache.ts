// The one bounded, time-limited memory behind every cache in mailwarden
// (lookup answers, Dovecot answers, policy verdicts, DKIM key records):
// entries expire after `ttlMs` (or sooner, when what they were made from
// expires sooner: set()'s maxLifeMs), the oldest go first when `maxEntries` is
// reached (a Map keeps insertion order: FIFO, no bookkeeping on hits), and a
// flush bumps a generation so a value read before a change is not stored
// after it.
export interface TtlEntry<V> {
  readonly value: V;
  readonly expires: number;
}

export class TtlCache<V> {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  #entries = new Map<string, TtlEntry<V>>();
  #generation = 0;
  hits = 0;
  misses = 0;

  constructor(ttlMs: number, maxEntries: number) {
    this.#ttlMs = Math.max(0, ttlMs);
    this.#maxEntries = Math.max(0, Math.floor(maxEntries));
  }

  /** False when the TTL or the size bound is 0: nothing is ever kept. */
  get enabled(): boolean {
    return this.#ttlMs > 0 && this.#maxEntries > 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Read it before fetching a value, pass it to set(): a flush in between keeps the value out. */
  get generation(): number {
    return this.#generation;
  }

  /** The live entry for `key`, with its expiry (for memories derived from it, which must not outlive it). */
  entry(key: string, now: number): TtlEntry<V> | undefined {
    const e = this.#entries.get(key);
    if (e !== undefined && e.expires > now) {
      this.hits++;
      return e;
    }
    if (e !== undefined) this.#entries.delete(key);
    this.misses++;
    return undefined;
  }

  get(key: string, now: number): V | undefined {
    return this.entry(key, now)?.value;
  }

  /** Stores `value` for the TTL, or for `maxLifeMs` when that is shorter (nothing is stored at 0 or less). */
  set(key: string, value: V, now: number, maxLifeMs = Infinity): void {
    this.setIfCurrent(key, value, now, this.#generation, maxLifeMs);
  }

  /** Stores `value` unless the cache is off or was flushed since `generation` was read; returns the entry either way. */
  setIfCurrent(key: string, value: V, now: number, generation: number, maxLifeMs = Infinity): TtlEntry<V> {
    const e: TtlEntry<V> = { value, expires: now + Math.min(this.#ttlMs, maxLifeMs) };
    if (generation !== this.#generation || !this.enabled || !(maxLifeMs > 0)) return e;
    this.#entries.delete(key);
    this.#entries.set(key, e);
    if (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    return e;
  }

  /** Forgets `key`, only if it still holds `value` when that is given. */
  delete(key: string, value?: V): void {
    if (value === undefined || this.#entries.get(key)?.value === value) this.#entries.delete(key);
  }

  flush(): void {
    this.#generation++;
    this.#entries = new Map();
  }
}
