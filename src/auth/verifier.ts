// The one password check daemons call. Three jobs around verifyPassword():
// - a FIFO concurrency limit, because argon2 runs on libuv's 4-thread pool, shared with
//   fs, dns.lookup and crypto: a login storm must not starve directory lookups;
// - a short-lived cache of recent *successful* checks, so a client that logs in again
//   and again (IMAP IDLE reconnects, SMTP AUTH per message) does not pay argon2 each time;
// - upgrade on login: a legacy or outdated hash comes back with its argon2id replacement.
import { createHmac, randomBytes } from 'node:crypto';
import argon2 from 'argon2';
import type { Argon2Params } from '../config/load.ts';
import { hashPassword } from '../directory/passwords.ts';
import { needsRehash, verifyPassword } from './password-verify.ts';

export const DEFAULT_VERIFY_CONCURRENCY = 2;

export interface PasswordVerifierOptions {
  /** Expensive verifications running at once; the rest wait in FIFO order. Default 2. */
  readonly concurrency?: number;
  /** How long a successful check is remembered; 0 disables the cache. */
  readonly cacheTtlMs: number;
  /** At most this many remembered checks (least recently used go first); 0 disables the cache. */
  readonly cacheMaxEntries: number;
  /** Parameters for upgraded hashes and for the unknown-user dummy check. */
  readonly argon2: Argon2Params;
  /** Clock for cache expiry (tests). */
  readonly now?: () => number;
}

export interface VerifyResult {
  readonly ok: boolean;
  /** Answered from the cache, without hashing. */
  readonly cached: boolean;
  /** Set when ok and the stored hash is not current argon2id: store this `{ARGON2ID}` hash instead. */
  readonly rehash?: string;
}

/** A counting semaphore whose waiters are served first come, first served. */
export class Semaphore {
  readonly limit: number;
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`concurrency must be an integer >= 1, got ${limit}`);
    this.limit = limit;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#active < this.limit) this.#active++;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve)); // the slot is handed over, not re-counted
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}

interface CacheEntry {
  readonly user: string;
  readonly expires: number;
}

export class PasswordVerifier {
  readonly #limit: Semaphore;
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #argon2: Argon2Params;
  readonly #now: () => number;
  /** Per-process key: cache keys mean nothing outside this process and reveal no password. */
  readonly #secret = randomBytes(32);
  /** HMAC key → entry; Map order is recency order (oldest first). */
  readonly #cache = new Map<string, CacheEntry>();
  /** Bumped by forget()/clear(), so a check still running across one is not cached afterwards. */
  #generation = 0;
  /** A well-formed argon2id string with the configured cost that no password matches. */
  readonly #dummyHash: string;

  constructor(opts: PasswordVerifierOptions) {
    this.#limit = new Semaphore(opts.concurrency ?? DEFAULT_VERIFY_CONCURRENCY);
    this.#ttlMs = Math.max(0, opts.cacheTtlMs);
    this.#maxEntries = Math.max(0, Math.floor(opts.cacheMaxEntries));
    this.#argon2 = opts.argon2;
    this.#now = opts.now ?? Date.now;
    const { memoryCost: m, timeCost: t, parallelism: p } = opts.argon2;
    // Random salt and digest: verifying against it costs exactly one real argon2id run.
    const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
    this.#dummyHash = `$argon2id$v=19$m=${m},t=${t},p=${p}$${b64(16)}$${b64(32)}`;
  }

  /** Verifications running now and waiting for a slot (for metrics and tests). */
  get stats(): { active: number; queued: number; cached: number } {
    return { active: this.#limit.active, queued: this.#limit.queued, cached: this.#cache.size };
  }

  /**
   * Check `password` for `user` against the stored `{SCHEME}…` hash. Throws
   * PasswordHashError when the hash cannot be checked (answer a temporary failure).
   */
  async verify(user: string, storedHash: string, password: string): Promise<VerifyResult> {
    const key = this.#key(user, storedHash, password);
    if (this.#cacheHit(key)) return { ok: true, cached: true };

    const generation = this.#generation;
    return this.#limit.run(async () => {
      if (!(await verifyPassword(storedHash, password))) return { ok: false, cached: false };
      if (needsRehash(storedHash, this.#argon2)) {
        // Not cached: the caller should store the upgrade, and the next login then uses it.
        return { ok: true, cached: false, rehash: await hashPassword(password, this.#argon2) };
      }
      if (generation === this.#generation) this.#remember(key, user);
      return { ok: true, cached: false };
    });
  }

  /**
   * For a user that does not exist: spend the time of one argon2id check with the
   * configured cost (through the same queue), so "no such user" and "wrong password"
   * take equally long. The answer is always "no", so there is nothing to return.
   */
  async verifyDummy(password: string): Promise<void> {
    this.#key('', this.#dummyHash, password); // same bookkeeping as verify()
    await this.#limit.run(() => argon2.verify(this.#dummyHash, password));
  }

  /** Drop every remembered check of `user` (password change, disable, removal). */
  forget(user: string): void {
    this.#generation++;
    for (const [key, entry] of this.#cache) if (entry.user === user) this.#cache.delete(key);
  }

  clear(): void {
    this.#generation++;
    this.#cache.clear();
  }

  // NUL cannot occur in a Dovecot user name or stored hash, so the joined input is unambiguous.
  #key(user: string, storedHash: string, password: string): string {
    return createHmac('sha256', this.#secret).update(`${user}\0${storedHash}\0`).update(password).digest('base64');
  }

  #cacheHit(key: string): boolean {
    const entry = this.#cache.get(key);
    if (!entry) return false;
    this.#cache.delete(key);
    if (entry.expires <= this.#now()) return false;
    this.#cache.set(key, entry); // most recently used goes to the end; its expiry stays
    return true;
  }

  #remember(key: string, user: string): void {
    if (this.#ttlMs === 0 || this.#maxEntries === 0) return;
    this.#cache.delete(key);
    this.#cache.set(key, { user, expires: this.#now() + this.#ttlMs });
    for (const oldest of this.#cache.keys()) {
      if (this.#cache.size <= this.#maxEntries) break;
      this.#cache.delete(oldest);
    }
  }
}
