// The lookup service every protocol front-end calls: directory maps, a cache
// of answers in front of every backend, the directory's rows in memory in
// front of a remote one (row-cache.ts), and one debug log line per decision.
import type { Logger } from 'pino';
import type { DirectoryBackend } from '../directory/types.ts';
import { LookupCache } from './cache.ts';
import { DirectoryMaps, type LookupResult, type MapName } from './maps.ts';
import { RowCache } from './row-cache.ts';

export interface LookupServiceOptions {
  readonly recipientDelimiter: string;
  /** Answers are cached per key and dropped when a directory change can touch them (0 = no cache). */
  readonly cacheTtlMs: number;
  readonly cacheSize: number;
  /** A remote directory: load every row into memory in the background (row-cache.ts). */
  readonly preload?: boolean;
}

export class LookupService {
  readonly maps: DirectoryMaps;
  readonly cache: LookupCache | undefined;
  /** The directory's rows in memory (remote directories with a cache only); Dovecot answers read them too. */
  readonly rows: RowCache | undefined;
  readonly #log: Logger;

  constructor(directory: DirectoryBackend, options: LookupServiceOptions, log: Logger) {
    this.rows = directory.remote && options.cacheTtlMs > 0 && options.cacheSize > 0
      ? new RowCache(directory, { ttlMs: options.cacheTtlMs, maxEntries: options.cacheSize, preload: options.preload ?? false }, log)
      : undefined;
    this.maps = new DirectoryMaps(this.rows ?? directory, { recipientDelimiter: options.recipientDelimiter });
    this.#log = log;
    if (options.cacheTtlMs > 0 && options.cacheSize > 0) {
      const cache = new LookupCache(options.cacheTtlMs, options.cacheSize, options.recipientDelimiter);
      directory.onChange((change) => cache.changed(change));
      this.cache = cache;
    }
  }

  /** Stops the background preload (the directory is being replaced or closed). */
  close(): void {
    this.rows?.close();
  }

  /** Throws DirectoryError('unavailable') when the directory cannot answer: callers map that to a temporary failure. */
  async lookup(map: MapName, key: string): Promise<LookupResult> {
    const now = this.answerNow(map, key);
    if (now) return now;
    const cache = this.cache;
    const generation = cache?.generation ?? 0;
    const { result, reads } = await this.maps.resolve(map, key);
    cache?.set(map, key, result, generation, Date.now(), reads);
    this.#logDecision(map, key, result, false);
    return result;
  }

  /**
   * The answer synchronously when it needs no waiting: a cache hit, any
   * lookup on an in-memory directory, or one whose rows are all in memory
   * (preloaded). Undefined means "ask lookup()". This is the socketmap's fast
   * path: no promise, no microtask.
   */
  answerNow(map: MapName, key: string): LookupResult | undefined {
    const cache = this.cache;
    const now = Date.now();
    const hit = cache?.get(map, key, now);
    if (hit) {
      this.#logDecision(map, key, hit, true);
      return hit;
    }
    if (!this.maps.synchronous) {
      const resolved = this.rows && this.maps.resolveNow(map, key);
      if (!resolved) return undefined;
      cache?.set(map, key, resolved.result, cache.generation, now, resolved.reads);
      this.#logDecision(map, key, resolved.result, false);
      return resolved.result;
    }
    const result = this.maps.lookupSync(map, key);
    cache?.set(map, key, result, cache.generation, now);
    this.#logDecision(map, key, result, false);
    return result;
  }

  #logDecision(map: MapName, key: string, result: LookupResult, cached: boolean): void {
    // isLevelEnabled first: building the object costs more than the lookup on a cache hit.
    if (this.#log.isLevelEnabled('debug')) {
      this.#log.debug({ map, key, found: result.found, value: result.value, rule: result.rule, cached }, 'lookup');
    }
  }
}
