// Lookup answers are cached per (map, key), positive and negative alike.
// Staleness is bounded twice: every entry expires after its TTL, and the whole
// cache is dropped as soon as the backend reports a change (the MySQL change
// serial, polled every second; a YAML file reload), so a CLI edit is visible
// within about a second while direct SQL edits wait at most cache_ttl.
import type { LookupResult, MapName } from './maps.ts';

interface Entry {
  readonly result: LookupResult;
  readonly expires: number;
}

export class LookupCache {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  #entries = new Map<string, Entry>();
  /** Bumped on every flush, so an answer fetched before a change is not stored after it. */
  #generation = 0;
  hits = 0;
  misses = 0;

  constructor(ttlMs: number, maxEntries: number) {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  get size(): number {
    return this.#entries.size;
  }

  get generation(): number {
    return this.#generation;
  }

  get(map: MapName, key: string, now: number): LookupResult | undefined {
    const entry = this.#entries.get(`${map} ${key}`);
    if (entry && entry.expires > now) {
      this.hits++;
      return entry.result;
    }
    this.misses++;
    return undefined;
  }

  set(map: MapName, key: string, result: LookupResult, generation: number, now: number): void {
    if (generation !== this.#generation || this.#maxEntries === 0 || this.#ttlMs === 0) return;
    const k = `${map} ${key}`;
    // Map keeps insertion order: evicting the first key drops the oldest entry (FIFO, no per-hit bookkeeping).
    this.#entries.delete(k);
    this.#entries.set(k, { result, expires: now + this.#ttlMs });
    if (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
  }

  flush(): void {
    this.#generation++;
    this.#entries = new Map();
  }
}
