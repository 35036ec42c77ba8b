// The lookup service every protocol front-end calls: directory maps, a cache
// in front of every backend, and one debug log line per decision.
import type { Logger } from 'pino';
import type { DirectoryBackend } from '../directory/types.ts';
import { LookupCache } from './cache.ts';
import { DomainMemo } from './domain-memo.ts';
import { DirectoryMaps, type LookupResult, type MapName } from './maps.ts';

export interface LookupServiceOptions {
  readonly recipientDelimiter: string;
  /** Answers are cached per key and dropped on every directory change (0 = no cache). */
  readonly cacheTtlMs: number;
  readonly cacheSize: number;
}

export class LookupService {
  readonly maps: DirectoryMaps;
  readonly cache: LookupCache | undefined;
  readonly #log: Logger;

  constructor(directory: DirectoryBackend, options: LookupServiceOptions, log: Logger) {
    const reader = directory.remote && options.cacheTtlMs > 0 ? new DomainMemo(directory, options.cacheTtlMs) : directory;
    this.maps = new DirectoryMaps(reader, { recipientDelimiter: options.recipientDelimiter });
    this.#log = log;
    if (options.cacheTtlMs > 0 && options.cacheSize > 0) {
      const cache = new LookupCache(options.cacheTtlMs, options.cacheSize);
      directory.onChange(() => cache.flush());
      this.cache = cache;
    }
  }

  /** Throws DirectoryError('unavailable') when the directory cannot answer: callers map that to a temporary failure. */
  async lookup(map: MapName, key: string): Promise<LookupResult> {
    const now = this.answerNow(map, key);
    if (now) return now;
    const cache = this.cache;
    const generation = cache?.generation ?? 0;
    const result = await this.maps.lookup(map, key);
    cache?.set(map, key, result, generation, Date.now());
    this.#logDecision(map, key, result, false);
    return result;
  }

  /**
   * The answer synchronously when it needs no waiting: a cache hit, or any
   * lookup on an in-memory directory. Undefined means "ask lookup()". This is
   * the socketmap's fast path: no promise, no microtask.
   */
  answerNow(map: MapName, key: string): LookupResult | undefined {
    const cache = this.cache;
    const now = Date.now();
    const hit = cache?.get(map, key, now);
    if (hit) {
      this.#logDecision(map, key, hit, true);
      return hit;
    }
    if (!this.maps.synchronous) return undefined;
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
