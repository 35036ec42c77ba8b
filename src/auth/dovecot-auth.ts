// What Dovecot asks about users, whatever the transport (Lua→HTTP, dict,
// checkpassword): verify a password, look up passdb/userdb fields, list users.
// Every failure to answer is 'tempfail' (Dovecot: temporary failure), never
// "unknown user"; a wrong password, a disabled account and an unknown user
// cost the same time and look the same to the client.
//
// Answers come from a per-user cache (answer-cache.ts) whose entries are
// dropped when the directory reports a change of that mailbox, so a repeated
// lookup or login does not ask MariaDB, and the answer objects are the same on
// every hit (transports memoize their encoding). A user not asked about before
// is answered from the directory's rows in memory when they are there
// (`rows`: the lookup service's RowCache, preloaded), synchronously too.
import type { Logger } from 'pino';
import type { UserdbConfig } from '../config/load.ts';
import { addressKey, parseAddress } from '../core/address.ts';
import { DirectoryError, type DirectoryBackend, type Mailbox } from '../directory/types.ts';
import { hashScheme } from '../directory/passwords.ts';
import { AnswerCache, memoAnswer, type AnswerCacheSettings, type UserEntry } from './answer-cache.ts';
import { MISS, type RowCache } from '../lookup/row-cache.ts';

export type DovecotVersion = '2.3' | '2.4';
export type Fields = Record<string, string | number>;

export type PassdbResult =
  | { readonly result: 'ok'; readonly user: string; readonly fields: Fields }
  | { readonly result: 'unknown' | 'mismatch' }
  | { readonly result: 'tempfail'; readonly reason: string };

export type UserdbResult =
  | { readonly result: 'ok'; readonly user: string; readonly fields: Fields }
  | { readonly result: 'unknown' }
  | { readonly result: 'tempfail'; readonly reason: string };

/** The part of PasswordVerifier this module needs. */
export interface Verifier {
  verify(user: string, storedHash: string, password: string): Promise<{ ok: boolean; cached: boolean; rehash?: string }>;
  /** Spends one verification's worth of work, so unknown users cost what known ones do. */
  verifyDummy(password: string): Promise<void>;
}

export interface LoginContext {
  readonly service?: string;
  readonly remoteIp?: string;
  readonly version: DovecotVersion;
}

export interface DovecotAuthOptions {
  readonly userdb: UserdbConfig;
  readonly rehash: boolean;
  /** Per-user answer cache, dropped by directory changes; absent (or 0) = every request reads the directory. */
  readonly cache?: AnswerCacheSettings;
  /** The directory's rows in memory (shared with the lookup service): mailboxes are read from here first. */
  readonly rows?: RowCache;
  /**
   * last_login is a "last seen" date: a login writes it at most this often per
   * user (default 60 s), so an IMAP client reconnecting every few seconds
   * costs no database write each time.
   */
  readonly lastLoginIntervalMs?: number;
}

export const LAST_LOGIN_INTERVAL_MS = 60_000;

const UNKNOWN = Object.freeze({ result: 'unknown' as const });

export class DovecotAuth {
  readonly #dir: DirectoryBackend;
  readonly #verifier: Verifier;
  readonly #options: DovecotAuthOptions;
  readonly #log: Logger;
  readonly #cache: AnswerCache;
  readonly #lastLoginIntervalMs: number;
  /** When this process last wrote each user's last_login (oldest first; only the last interval's logins are kept). */
  readonly #loginsRecorded = new Map<string, number>();

  constructor(dir: DirectoryBackend, verifier: Verifier, options: DovecotAuthOptions, log: Logger) {
    this.#dir = dir;
    this.#verifier = verifier;
    this.#options = options;
    this.#log = log;
    this.#cache = new AnswerCache(options.cache ?? { ttlMs: 0, maxEntries: 0 });
    this.#lastLoginIntervalMs = Math.max(0, options.lastLoginIntervalMs ?? LAST_LOGIN_INTERVAL_MS);
    if (this.#cache.enabled) {
      // A reload builds a new DovecotAuth on the same directory, which has no way to unsubscribe:
      // the weak reference lets the old cache go.
      const cache = new WeakRef(this.#cache);
      dir.onChange((change) => cache.deref()?.changed(change));
    }
  }

  /** Password login (IMAP, POP3, SMTP AUTH through Dovecot SASL). */
  async verifyLogin(userInput: string, password: string, ctx: LoginContext): Promise<PassdbResult> {
    const started = performance.now();
    let entry: UserEntry;
    try {
      entry = await this.#entry(userInput);
    } catch (err) {
      return this.#tempfail('login', userInput, err, ctx);
    }
    const mailbox = entry.mailbox;
    const usable = mailbox?.enabled && mailbox.passwordHash ? mailbox : undefined;
    if (!usable) {
      await this.#verifier.verifyDummy(password);
      const result = mailbox ? 'mismatch' : 'unknown';
      const reason = !mailbox ? 'unknown user' : !mailbox.enabled ? 'mailbox disabled' : 'no password set';
      this.#log.info({ user: mailbox?.address ?? canonicalUser(userInput) ?? userInput, service: ctx.service, remote_ip: ctx.remoteIp, result, reason, ms: ms(started) }, 'login failed');
      return { result };
    }
    let verdict: { ok: boolean; cached: boolean; rehash?: string };
    try {
      verdict = await this.#verifier.verify(usable.address, usable.passwordHash!, password);
    } catch (err) {
      return this.#tempfail('login', usable.address, err, ctx);
    }
    if (!verdict.ok) {
      this.#log.info({ user: usable.address, service: ctx.service, remote_ip: ctx.remoteIp, result: 'mismatch', reason: 'wrong password', ms: ms(started) }, 'login failed');
      return { result: 'mismatch' };
    }
    this.#log.info({ user: usable.address, service: ctx.service, remote_ip: ctx.remoteIp, result: 'ok', cached: verdict.cached, ms: ms(started) }, 'login');
    // Bookkeeping after the answer is decided: a slow or failing write never fails a login.
    void this.#afterLogin(usable, verdict.rehash, ctx);
    return this.#passdbAnswer(entry, ctx.version, false);
  }

  /** passdb lookup without a password (credentials lookups, LMTP/submission flows): the stored hash and userdb_* fields. */
  async passdbLookup(userInput: string, ctx: LoginContext): Promise<PassdbResult> {
    try {
      return this.#passdbAnswer(await this.#entry(userInput), ctx.version, true);
    } catch (err) {
      return this.#tempfail('passdb lookup', userInput, err, ctx);
    }
  }

  /** userdb lookup: home, uid, gid, quota, for LMTP delivery, IMAP sessions and doveadm. */
  async userdbLookup(userInput: string, ctx: LoginContext): Promise<UserdbResult> {
    try {
      return this.#userdbAnswer(await this.#entry(userInput), ctx.version);
    } catch (err) {
      return this.#tempfail('userdb lookup', userInput, err, ctx);
    }
  }

  /** userdbLookup() answered from the cache, synchronously; undefined when the user is not cached. */
  peekUserdb(userInput: string, version: DovecotVersion): UserdbResult | undefined {
    const entry = this.#peek(userInput);
    return entry && this.#userdbAnswer(entry, version);
  }

  /** passdbLookup() answered from the cache, synchronously; undefined when the user is not cached. */
  peekPassdb(userInput: string, version: DovecotVersion): PassdbResult | undefined {
    const entry = this.#peek(userInput);
    return entry && this.#passdbAnswer(entry, version, true);
  }

  /** The user's cached entry, or one made from the mailbox row in memory; undefined when the database must be asked. */
  #peek(userInput: string): UserEntry | undefined {
    if (!this.#cache.enabled) return undefined;
    const now = Date.now();
    const hit = this.#cache.get(userInput, now);
    if (hit) return hit;
    const rows = this.#options.rows;
    if (!rows) return undefined;
    const user = canonicalUser(userInput);
    const mailbox = user ? rows.peek('mailbox', user) : undefined;
    if (mailbox === MISS) return undefined;
    return this.#cache.set(userInput, mailbox, this.#cache.generation, now, user);
  }

  /** The user's cached entry, or the row read from the directory (and cached). Throws DirectoryError when it cannot answer. */
  async #entry(userInput: string): Promise<UserEntry> {
    const hit = this.#peek(userInput);
    if (hit) return hit;
    const generation = this.#cache.generation;
    const user = canonicalUser(userInput);
    const mailbox = user ? await (this.#options.rows ?? this.#dir).findMailbox(user) : undefined;
    return this.#cache.set(userInput, mailbox, generation, Date.now(), user);
  }

  #userdbAnswer(entry: UserEntry, version: DovecotVersion): UserdbResult {
    const m = entry.mailbox;
    // A disabled mailbox is unknown to delivery, so LMTP rejects its mail (Postfix already does at RCPT).
    if (!m || !m.enabled) return UNKNOWN;
    return memoAnswer(entry, `userdb ${version}`, () => freezeAnswer(m.address, this.userdbFields(m, version)));
  }

  /** With the password: a passdb lookup; without: the answer to a successful login. */
  #passdbAnswer(entry: UserEntry, version: DovecotVersion, withPassword: boolean): PassdbResult {
    const m = entry.mailbox;
    if (!m || !m.enabled) return UNKNOWN;
    return memoAnswer(entry, `${withPassword ? 'passdb' : 'login'} ${version}`, () => freezeAnswer(m.address, this.#passdbFields(m, version, withPassword)));
  }

  /** Every enabled mailbox, for `doveadm -A` and `doveadm user '*'`. */
  async listUsers(): Promise<string[]> {
    return (await this.#dir.listMailboxes()).filter((m) => m.enabled).map((m) => m.address);
  }

  userdbFields(m: Mailbox, version: DovecotVersion): Fields {
    const { home, uid, gid, mail } = this.#options.userdb;
    const fields: Fields = { home: expand(home, m), uid, gid };
    if (mail && version === '2.3') fields['mail'] = expand(mail, m);
    if (m.quotaBytes > 0) {
      // 2.3: quota_rule; 2.4 replaced it with quota_storage_size (and refuses unknown settings).
      if (version === '2.3') fields['quota_rule'] = `*:bytes=${m.quotaBytes}`;
      else fields['quota_storage_size'] = `${m.quotaBytes}B`;
    }
    return fields;
  }

  #passdbFields(m: Mailbox, version: DovecotVersion, withPassword: boolean): Fields {
    const fields: Fields = {};
    if (withPassword && m.passwordHash) fields['password'] = m.passwordHash;
    // userdb_* lets `userdb prefetch` skip a second lookup after a login.
    for (const [k, v] of Object.entries(this.userdbFields(m, version))) fields[`userdb_${k}`] = v;
    return fields;
  }

  async #afterLogin(m: Mailbox, rehash: string | undefined, ctx: LoginContext): Promise<void> {
    const now = Date.now();
    if (this.#recordThisLogin(m.address, now)) {
      try {
        await this.#dir.recordLogin(m.address, new Date(now), ctx.remoteIp);
      } catch (err) {
        this.#log.warn({ user: m.address, err: (err as Error).message }, 'cannot record last login');
      }
    }
    if (!rehash || !this.#options.rehash) return;
    try {
      await this.#dir.updateMailbox(m.address, { passwordHash: rehash });
      this.#log.info({ user: m.address, from: hashScheme(m.passwordHash), to: hashScheme(rehash) }, 'password hash upgraded');
    } catch (err) {
      this.#log.warn({ user: m.address, err: (err as Error).message }, 'password hash upgrade failed; will retry on next login');
    }
  }

  /** True when `user`'s last_login is due (not written by this process within the interval); notes the write. */
  #recordThisLogin(user: string, now: number): boolean {
    const seen = this.#loginsRecorded;
    const last = seen.get(user);
    if (last !== undefined && now - last < this.#lastLoginIntervalMs) return false;
    seen.delete(user);
    seen.set(user, now);
    // Oldest first: drop what is past the interval, so the map holds at most one interval's logins.
    for (const [u, at] of seen) {
      if (now - at < this.#lastLoginIntervalMs) break;
      seen.delete(u);
    }
    return true;
  }

  #tempfail(what: string, user: string, err: unknown, ctx: LoginContext): { result: 'tempfail'; reason: string } {
    const reason = err instanceof DirectoryError ? err.message : `internal error: ${(err as Error)?.message ?? String(err)}`;
    this.#log.error({ user, service: ctx.service, remote_ip: ctx.remoteIp, what, err: reason }, 'temporary failure');
    return { result: 'tempfail', reason };
  }
}

/** Dovecot already lower-cases (auth_username_format); we also accept quoted forms and IDN. */
export function canonicalUser(input: string): string | undefined {
  const a = parseAddress(input);
  return a ? addressKey(a) : undefined;
}

/** %u user, %n local part, %d domain; also Dovecot 2.4's %{user}, %{user | username}, %{user | domain}. */
export function expand(template: string, m: Mailbox): string {
  const at = m.address.lastIndexOf('@');
  const local = m.address.slice(0, at).replace(/^"|"$/g, '');
  const values: Record<string, string> = { u: m.address, n: local, d: m.domain, '%': '%' };
  return template
    .replace(/%\{user\s*\|\s*username\}/g, local)
    .replace(/%\{user\s*\|\s*domain\}/g, m.domain)
    .replace(/%\{user\}/g, m.address)
    .replace(/%([und%])/g, (all, c: string) => values[c] ?? all);
}

function freezeAnswer(user: string, fields: Fields): { readonly result: 'ok'; readonly user: string; readonly fields: Fields } {
  return Object.freeze({ result: 'ok' as const, user, fields: Object.freeze(fields) });
}

function ms(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
