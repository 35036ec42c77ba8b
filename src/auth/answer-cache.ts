// What Dovecot asked about a user recently: the mailbox row (or "no such
// user"), keyed by the user name exactly as Dovecot sent it, plus the
// passdb/userdb answers built from it, so a repeated lookup or cached login
// costs neither a MariaDB round trip nor re-encoding.
//
// Staleness is bounded like the socketmap's lookup cache (src/lookup/cache.ts):
// every entry expires after its TTL, and the whole cache is dropped as soon as
// the directory reports a change (a write through this process at once; the
// MySQL change serial polled every second for writes by `mailwarden user ...`
// or another mailwarden instance; a YAML file reload). A password change,
// disable or removal therefore reaches logins within about a second.
import type { Mailbox } from '../directory/types.ts';

export interface AnswerCacheSettings {
  /** How long an entry is used; 0 disables the cache. */
  readonly ttlMs: number;
  /** At most this many users; the oldest go first. 0 disables the cache. */
  readonly maxEntries: number;
}

/** One user's cached row and the answers derived from it (filled in on first use, per Dovecot version). */
export interface UserEntry {
  /** The mailbox, or undefined: no such user (negative answers are cached too). */
  readonly mailbox: Mailbox | undefined;
  readonly expires: number;
  /** Answers built from `mailbox`, by kind and Dovecot version (e.g. `userdb 2.3`): the same object on every hit. */
  readonly answers: Map<string, unknown>;
}

export class AnswerCache {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  #entries = new Map<string, UserEntry>();
  /** Bumped on every flush, so a row read before a change is not stored after it. */
  #generation = 0;
  hits = 0;
  misses = 0;

  constructor(settings: AnswerCacheSettings) {
    this.#ttlMs = Math.max(0, settings.ttlMs);
    this.#maxEntries = Math.max(0, Math.floor(settings.maxEntries));
  }

  get enabled(): boolean {
    return this.#ttlMs > 0 && this.#maxEntries > 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  get generation(): number {
    return this.#generation;
  }

  get(user: string, now: number): UserEntry | undefined {
    const entry = this.#entries.get(user);
    if (entry !== undefined && entry.expires > now) {
      this.hits++;
      return entry;
    }
    this.misses++;
    return undefined;
  }

  /** Stores a row read under `generation`; returns the entry (also when it was not kept: stale or cache off). */
  set(user: string, mailbox: Mailbox | undefined, generation: number, now: number): UserEntry {
    const entry: UserEntry = { mailbox, expires: now + this.#ttlMs, answers: new Map() };
    if (generation !== this.#generation || !this.enabled) return entry;
    // Map keeps insertion order: evicting the first key drops the oldest entry (FIFO, no per-hit bookkeeping).
    this.#entries.delete(user);
    this.#entries.set(user, entry);
    if (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    return entry;
  }

  flush(): void {
    this.#generation++;
    this.#entries = new Map();
  }
}

/** The answer for `key` built once per entry: `build` runs on the first call only. */
export function memoAnswer<T>(entry: UserEntry, key: string, build: () => T): T {
  const known = entry.answers.get(key);
  if (known !== undefined) return known as T;
  const answer = build();
  entry.answers.set(key, answer);
  return answer;
}
