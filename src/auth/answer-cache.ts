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
import { TtlCache } from '../core/ttl-cache.ts';
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
  /** Answers built from `mailbox`, by kind and Dovecot version (e.g. `userdb 2.3`): the same object on every hit. */
  readonly answers: Map<string, unknown>;
}

/** Users by the name exactly as Dovecot sent it. */
export class AnswerCache {
  readonly #users: TtlCache<UserEntry>;

  constructor(settings: AnswerCacheSettings) {
    this.#users = new TtlCache(settings.ttlMs, settings.maxEntries);
  }

  get enabled(): boolean { return this.#users.enabled; }
  get size(): number { return this.#users.size; }
  get generation(): number { return this.#users.generation; }
  get hits(): number { return this.#users.hits; }
  get misses(): number { return this.#users.misses; }

  get(user: string, now: number): UserEntry | undefined {
    return this.#users.get(user, now);
  }

  /** Stores a row read under `generation`; returns the entry (also when it was not kept: stale or cache off). */
  set(user: string, mailbox: Mailbox | undefined, generation: number, now: number): UserEntry {
    return this.#users.setIfCurrent(user, { mailbox, answers: new Map() }, now, generation).value;
  }

  flush(): void {
    this.#users.flush();
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
