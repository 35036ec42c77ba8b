// What Dovecot asked about a user recently: the mailbox row (or "no such
// user"), keyed by the user name exactly as Dovecot sent it, plus the
// passdb/userdb answers built from it, so a repeated lookup or cached login
// costs neither a MariaDB round trip nor re-encoding.
//
// Staleness is bounded like the socketmap's lookup cache (src/lookup/cache.ts):
// every entry expires after its TTL, and a user's entry is dropped as soon as
// the directory reports a change of that mailbox (a write through this process
// at once; the MySQL change log polled every second for writes by `mailwarden
// user ...` or another mailwarden instance); a domain change or a YAML file
// reload drops them all. A password change, disable or removal therefore
// reaches logins within about a second, and other users stay cached.
import { TtlCache } from '../core/ttl-cache.ts';
import { dropsEveryAnswer, type DirectoryChange, type Mailbox } from '../directory/types.ts';

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
  readonly #maxEntries: number;
  /** Names Dovecot sent that are not the canonical address they stand for (case, quoting, IDN), by that address. */
  #spellings = new Map<string, Set<string>>();
  /** Bumped on every change (keyed or not), so a row read before one is not stored after it. */
  #generation = 0;

  constructor(settings: AnswerCacheSettings) {
    this.#users = new TtlCache(settings.ttlMs, settings.maxEntries);
    this.#maxEntries = settings.maxEntries;
  }

  get enabled(): boolean { return this.#users.enabled; }
  get size(): number { return this.#users.size; }
  get generation(): number { return this.#generation; }
  get hits(): number { return this.#users.hits; }
  get misses(): number { return this.#users.misses; }

  get(user: string, now: number): UserEntry | undefined {
    return this.#users.get(user, now);
  }

  /**
   * Stores a row read under `generation` for `user` as Dovecot sent it (`address`: the canonical
   * form it stands for, when that differs); returns the entry (also when it was not kept: stale or cache off).
   */
  set(user: string, mailbox: Mailbox | undefined, generation: number, now: number, address?: string): UserEntry {
    const entry: UserEntry = { mailbox, answers: new Map() };
    if (generation !== this.#generation || !this.enabled) return entry;
    if (address !== undefined && address !== user) {
      if (this.#spellings.size >= this.#maxEntries) this.flush(); // bounded; rare (Dovecot lower-cases names)
      const set = this.#spellings.get(address);
      if (set) set.add(user);
      else this.#spellings.set(address, new Set([user]));
    }
    this.#users.set(user, entry, now);
    return entry;
  }

  /** Drops what `change` can touch: the users of changed mailboxes; everything on a domain change or a reload. */
  changed(change: DirectoryChange | undefined): void {
    this.#generation++;
    if (dropsEveryAnswer(change)) {
      this.flush();
      return;
    }
    for (const { kind, name } of change.keys) {
      // Answers are made from the mailbox row only.
      if (kind !== 'mailbox') continue;
      this.#users.delete(name);
      for (const user of this.#spellings.get(name) ?? []) this.#users.delete(user);
      this.#spellings.delete(name);
    }
  }

  flush(): void {
    this.#generation++;
    this.#users.flush();
    this.#spellings = new Map();
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
