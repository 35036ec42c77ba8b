// Directory reads for checks that can finish synchronously: a check written
// against a MapReader gets each answer at once when it is at hand (the lookup
// cache), or undefined, and then returns undefined itself. The async driver
// below fetches what was missing and runs the check again, so one function
// serves both the policy service's synchronous fast path and the plain async
// API, and the two cannot disagree.
import type { LookupResult, MapName } from '../lookup/maps.ts';
import type { LookupService } from '../lookup/service.ts';

/** A directory answer if one is at hand, else undefined (the reader then arranges for it to be fetched). */
export type MapReader = (map: MapName, key: string) => LookupResult | undefined;

/** The answer when it needs no waiting (a lookup-cache hit, an in-memory directory), else undefined. */
export function answerNow(lookups: LookupService, map: MapName, key: string): LookupResult | undefined {
  return lookups.answerNow(map, key);
}

/**
 * Runs `check` until it has every answer it needs, fetching the missing ones
 * through `lookups` between runs (each key once). Throws what a lookup throws
 * (DirectoryError('unavailable') when the directory cannot answer).
 */
export async function withLookups<T>(lookups: LookupService, check: (read: MapReader) => T | undefined): Promise<T> {
  const answers = new Map<string, LookupResult>();
  for (;;) {
    const wanted = new Map<string, Promise<void>>();
    const result = check((map, key) => {
      const k = `${map} ${key}`;
      const answer = answers.get(k);
      if (answer !== undefined) return answer;
      const now = answerNow(lookups, map, key);
      if (now !== undefined) return now;
      if (!wanted.has(k)) wanted.set(k, lookups.lookup(map, key).then((r) => void answers.set(k, r)));
      return undefined;
    });
    if (result !== undefined) return result;
    // A check that returned undefined without asking for anything would loop forever: a programming error.
    if (wanted.size === 0) throw new Error('check returned no result and wanted no lookup');
    await Promise.all(wanted.values());
  }
}
