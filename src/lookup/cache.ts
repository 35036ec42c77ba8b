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
  /** One Map per table: no `${map} ${key}` string to build on every lookup. */
  #entries = new Map<MapName, Map<string, Entry>>();
  #size = 0;
  /** Bumped on every flush, so an answer fetched before a change is not stored after it. */
  #generation = 0;
  hits = 0;
  misses = 0;

  constructor(ttlMs: number, maxEntries: number) {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  get size(): number {
    return this.#size;
  }

  get generation(): number {
    return this.#generation;
  }

  get(map: MapName, key: string, now: number): LookupResult | undefined {
    const entry = this.#entries.get(map)?.get(key);
    if (entry && entry.expires > now) {
      this.hits++;
      return entry.result;
    }
    this.misses++;
    return undefined;
  }

  set(map: MapName, key: string, result: LookupResult, generation: number, now: number): void {
    if (generation !== this.#generation || this.#maxEntries === 0 || this.#ttlMs === 0) return;
    let table = this.#entries.get(map);
    if (!table) this.#entries.set(map, (table = new Map()));
    // Map keeps insertion order: evicting the first key drops the table's oldest entry (FIFO, no per-hit bookkeeping).
    if (table.delete(key)) this.#size--;
    table.set(key, { result, expires: now + this.#ttlMs });
    this.#size++;
    if (this.#size > this.#maxEntries) {
      const oldest = table.keys().next();
      if (!oldest.done) {
        table.delete(oldest.value);
        this.#size--;
      }
    }
  }

  flush(): void {
    this.#generation++;
    this.#entries = new Map();
    this.#size = 0;
  }
}
