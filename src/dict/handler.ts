// What mailwarden answers over Dovecot's dict protocol:
//   shared/passdb/<user>, shared/userdb/<user>   passdb/userdb dict (Dovecot 2.3), JSON values
//   iterate shared/userdb/                        `doveadm user '*'`, `doveadm -A`
//   shared/last-login/<user>                      last_login plugin (2.3 and 2.4)
//   priv/quota/storage, priv/quota/messages       quota dict (2.3) and quota_clone (2.3, 2.4)
// Anything else is refused loudly rather than accepted and dropped.
import type { Logger } from 'pino';
import type { DirectoryBackend, QuotaUsageChange } from '../directory/types.ts';
import { canonicalUser, type DovecotAuth, type DovecotVersion, type PassdbResult, type UserdbResult } from '../auth/dovecot-auth.ts';
import { lookupFound, lookupNotFound } from './codec.ts';
import { DictFailure, type DictContext, type DictHandler, type DictRow, type DictTransaction } from './server.ts';

const PASSDB = 'shared/passdb/';
const USERDB = 'shared/userdb/';
const LAST_LOGIN = 'shared/last-login/';
const QUOTA_STORAGE = 'priv/quota/storage';
const QUOTA_MESSAGES = 'priv/quota/messages';

export interface DictState {
  readonly directory: DirectoryBackend;
  readonly dovecot: DovecotAuth;
}

export class MailwardenDict implements DictHandler {
  readonly #state: () => DictState;
  readonly #log: Logger;
  /** DovecotAuth returns the same answer object on every cache hit: its reply line is encoded once. */
  readonly #replies = new WeakMap<object, string>();

  /** `state` is read per request so a reload can swap the directory. */
  constructor(state: () => DictState, log: Logger) {
    this.#state = state;
    this.#log = log;
  }

  /** passdb/userdb answers from DovecotAuth's cache, as complete reply lines. */
  cachedLookup(key: string, _user: string, ctx: DictContext): string | undefined {
    const version = versionOf(ctx);
    let r: PassdbResult | UserdbResult | undefined;
    if (key.startsWith(USERDB)) r = this.#state().dovecot.peekUserdb(key.slice(USERDB.length), version);
    else if (key.startsWith(PASSDB)) r = this.#state().dovecot.peekPassdb(key.slice(PASSDB.length), version);
    if (r === undefined || r.result === 'tempfail') return undefined;
    let reply = this.#replies.get(r);
    if (reply === undefined) {
      reply = r.result === 'ok' ? lookupFound(JSON.stringify(r.fields)) : lookupNotFound();
      this.#replies.set(r, reply);
    }
    return reply;
  }

  async lookup(key: string, user: string, ctx: DictContext): Promise<string | undefined> {
    const { directory, dovecot } = this.#state();
    const version = versionOf(ctx);
    if (key.startsWith(PASSDB)) {
      const r = await dovecot.passdbLookup(key.slice(PASSDB.length), { version, service: 'dict' });
      if (r.result === 'tempfail') throw new DictFailure(r.reason);
      return r.result === 'ok' ? JSON.stringify(r.fields) : undefined;
    }
    if (key.startsWith(USERDB)) {
      const r = await dovecot.userdbLookup(key.slice(USERDB.length), { version, service: 'dict' });
      if (r.result === 'tempfail') throw new DictFailure(r.reason);
      return r.result === 'ok' ? JSON.stringify(r.fields) : undefined;
    }
    if (key.startsWith(LAST_LOGIN)) {
      const u = canonicalUser(key.slice(LAST_LOGIN.length));
      const at = u ? (await directory.getActivity(u))?.lastLogin : undefined;
      return at ? String(Math.floor(at.getTime() / 1000)) : undefined;
    }
    if (key === QUOTA_STORAGE || key === QUOTA_MESSAGES) {
      const u = canonicalUser(user);
      const a = u ? await directory.getActivity(u) : undefined;
      const v = key === QUOTA_STORAGE ? a?.quotaBytes : a?.quotaMessages;
      return v === undefined ? undefined : String(v);
    }
    return undefined;
  }

  async *iterate(path: string, _flags: number, _user: string, ctx: DictContext): AsyncIterable<DictRow> {
    if (path !== USERDB) return;
    const { directory, dovecot } = this.#state();
    const version = versionOf(ctx);
    for (const m of await directory.listMailboxes()) {
      if (m.enabled) yield [`${USERDB}${m.address}`, JSON.stringify(dovecot.userdbFields(m, version))];
    }
  }

  async commit(tx: DictTransaction): Promise<'ok' | 'notfound'> {
    const { directory } = this.#state();
    const quota: { -readonly [K in keyof QuotaUsageChange]: QuotaUsageChange[K] } = {};
    let result: 'ok' | 'notfound' = 'ok';
    for (const op of tx.ops) {
      if (op.key.startsWith(LAST_LOGIN) && op.op === 'set') {
        const u = canonicalUser(op.key.slice(LAST_LOGIN.length));
        const at = parseTimestamp(op.value);
        if (!u || !at) throw new DictFailure(`bad last-login entry ${op.key}`);
        await directory.recordLogin(u, at);
        continue;
      }
      if (op.key === QUOTA_STORAGE || op.key === QUOTA_MESSAGES) {
        const field = op.key === QUOTA_STORAGE ? 'Bytes' : 'Messages';
        if (op.op === 'set' || op.op === 'unset') {
          const n = op.op === 'set' ? Number(op.value) : 0;
          if (!Number.isSafeInteger(n)) throw new DictFailure(`bad quota value for ${op.key}`);
          quota[`set${field}`] = n;
          delete quota[`add${field}`];
        } else {
          quota[`add${field}`] = (quota[`add${field}`] ?? 0) + Number(op.diff);
        }
        continue;
      }
      throw new DictFailure(`mailwarden does not store ${op.key} (${op.op})`);
    }
    if (Object.keys(quota).length) {
      const u = canonicalUser(tx.user);
      if (!u) throw new DictFailure(`quota update without a valid user (${JSON.stringify(tx.user)})`);
      result = await directory.updateQuotaUsage(u, quota);
    }
    this.#log.debug({ user: tx.user, keys: tx.ops.map((o) => o.key), result }, 'dict commit');
    return result;
  }
}

function versionOf(ctx: DictContext): DovecotVersion {
  return ctx.protocolMajor >= 4 ? '2.4' : '2.3';
}

/** last_login_precision: s (default), ms, us or ns. */
function parseTimestamp(text: string): Date | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  const ms = n > 1e17 ? n / 1e6 : n > 1e14 ? n / 1e3 : n > 1e11 ? n : n * 1000;
  return new Date(ms);
}
