// What each Postfix lookup table means in terms of the directory. A socketmap
// only ever receives the full key (postfix.md §2.2: no partial keys), so
// everything a hash: table gets from Postfix's own lookup order — extension
// stripping, @domain catch-alls — is done here, once, for every protocol.
import {
  addressKey, catchAllKey, formatAddress, normalizeDomain, parseAddress, splitExtension, withExtension,
  type MailAddress,
} from '../core/address.ts';
import type { Alias, DirectoryReader, Domain, Mailbox, SenderGrant } from '../directory/types.ts';
import { MISS, type RowKind } from './row-cache.ts';

export const MAP_NAMES = [
  'virtual_mailbox_domains',
  'virtual_alias_domains',
  'virtual_mailbox_maps',
  'virtual_alias_maps',
  'smtpd_sender_login_maps',
] as const;
export type MapName = (typeof MAP_NAMES)[number];

export function isMapName(name: string): name is MapName {
  return (MAP_NAMES as readonly string[]).includes(name);
}

/** A lookup answer with the rule that produced it, so "why" is always one log line away. */
export interface LookupResult {
  readonly found: boolean;
  /** Postfix table value (comma-separated lists for address results). */
  readonly value?: string;
  readonly rule: string;
}

const notFound = (rule: string): LookupResult => ({ found: false, rule });
const found = (value: string, rule: string): LookupResult => ({ found: true, value, rule });

/** Alias chains are followed this deep when working out who owns an address (Postfix: virtual_alias_recursion_limit). */
const MAX_OWNER_DEPTH = 10;

export interface MapOptions {
  /** Postfix recipient_delimiter; '' disables address extensions. */
  readonly recipientDelimiter: string;
}

/**
 * The rows one lookup reads, synchronously. An in-memory directory answers at
 * once; for a remote one, FetchingView throws NEED_ROWS for a row it has not
 * fetched yet and the lookup is replayed once it has (a few µs of CPU against
 * a round trip), so the map semantics below are written once, without awaits.
 */
export interface SyncDirectoryReader {
  findDomain(name: string): Domain | undefined;
  findMailbox(address: string): Mailbox | undefined;
  findAlias(address: string): Alias | undefined;
  findSenderGrants(address: string): readonly SenderGrant[];
}

/**
 * A directory whose point reads are plain memory reads offers them synchronously as `sync`;
 * one that holds some rows in memory (RowCache) offers `peek`, which returns MISS for the others.
 */
export interface MaybeSyncReader extends DirectoryReader {
  readonly sync?: SyncDirectoryReader;
  peek?(kind: RowKind, key: string): unknown;
}

/** An answer and the rows it was made from (`kind key` strings), so a cache knows which changes can touch it. */
export interface Resolved {
  readonly result: LookupResult;
  /** Undefined for an in-memory directory (its changes are always "everything"). */
  readonly reads: Iterable<string> | undefined;
}

/** Thrown (never as an Error: no stack to capture) when a row has not been fetched yet. */
const NEED_ROWS = Symbol('need rows');

/** Replays bound the rows one lookup may fetch; Postfix's own recursion limit is far below. */
const MAX_FETCH_ROUNDS = 64;

class FetchingView implements SyncDirectoryReader {
  readonly #rows = new Map<string, unknown>();
  readonly #peek: ((kind: RowKind, key: string) => unknown) | undefined;
  #wanted: Array<[RowKind, string]> = [];

  constructor(peek: ((kind: RowKind, key: string) => unknown) | undefined) {
    this.#peek = peek;
  }

  /** The rows read so far, as `kind key`. */
  get reads(): Iterable<string> {
    return this.#rows.keys();
  }

  #get<T>(kind: RowKind, key: string): T {
    const k = `${kind} ${key}`;
    if (this.#rows.has(k)) return this.#rows.get(k) as T;
    if (this.#peek) {
      const row = this.#peek(kind, key);
      if (row !== MISS) {
        this.#rows.set(k, row);
        return row as T;
      }
    }
    this.#wanted.push([kind, key]);
    throw NEED_ROWS;
  }

  findDomain(name: string) { return this.#get<Domain | undefined>('domain', name); }
  findMailbox(address: string) { return this.#get<Mailbox | undefined>('mailbox', address); }
  findAlias(address: string) { return this.#get<Alias | undefined>('alias', address); }
  findSenderGrants(address: string) { return this.#get<readonly SenderGrant[]>('grants', address); }

  /** Fetches what the last attempt asked for (one row: lookups stop at the first missing one). */
  async fetch(dir: DirectoryReader): Promise<void> {
    const wanted = this.#wanted;
    this.#wanted = [];
    await Promise.all(wanted.map(async ([kind, key]) => {
      const row = kind === 'domain' ? await dir.findDomain(key)
        : kind === 'mailbox' ? await dir.findMailbox(key)
        : kind === 'alias' ? await dir.findAlias(key)
        : await dir.findSenderGrants(key);
      this.#rows.set(`${kind} ${key}`, row);
    }));
  }
}

export class DirectoryMaps {
  readonly #dir: DirectoryReader;
  readonly #sync: SyncDirectoryReader | undefined;
  readonly #peek: ((kind: RowKind, key: string) => unknown) | undefined;
  readonly #delimiter: string;

  constructor(dir: MaybeSyncReader, options: MapOptions) {
    this.#dir = dir;
    this.#sync = dir.sync;
    this.#peek = dir.peek?.bind(dir);
    this.#delimiter = options.recipientDelimiter;
  }

  /** True when lookupSync() can answer (an in-memory directory). */
  get synchronous(): boolean {
    return this.#sync !== undefined;
  }

  async lookup(map: MapName, key: string): Promise<LookupResult> {
    return (await this.resolve(map, key)).result;
  }

  /** The answer and the rows it read. */
  async resolve(map: MapName, key: string): Promise<Resolved> {
    if (this.#sync) return { result: this.#decide(map, key, this.#sync), reads: undefined };
    const view = new FetchingView(this.#peek);
    for (let round = 0; round < MAX_FETCH_ROUNDS; round++) {
      try {
        return { result: this.#decide(map, key, view), reads: view.reads };
      } catch (err) {
        if (err !== NEED_ROWS) throw err;
      }
      await view.fetch(this.#dir);
    }
    throw new Error(`lookup ${map} ${key} needed more than ${MAX_FETCH_ROUNDS} directory reads`);
  }

  /** resolve() without waiting, when every row it needs is in memory (peek); undefined otherwise. */
  resolveNow(map: MapName, key: string): Resolved | undefined {
    if (!this.#peek) return undefined;
    const view = new FetchingView(this.#peek);
    try {
      return { result: this.#decide(map, key, view), reads: view.reads };
    } catch (err) {
      if (err !== NEED_ROWS) throw err;
      return undefined;
    }
  }

  /** The answer without waiting; only for a synchronous (in-memory) directory. */
  lookupSync(map: MapName, key: string): LookupResult {
    if (!this.#sync) throw new Error('lookupSync needs an in-memory directory');
    return this.#decide(map, key, this.#sync);
  }

  #decide(map: MapName, key: string, v: SyncDirectoryReader): LookupResult {
    switch (map) {
      case 'virtual_mailbox_domains': return this.#mailboxDomain(key, v);
      case 'virtual_alias_domains': return this.#aliasDomain(key, v);
      case 'virtual_mailbox_maps': return this.#mailbox(key, v);
      case 'virtual_alias_maps': return this.#alias(key, v);
      case 'smtpd_sender_login_maps': return this.#senderLogins(key, v);
    }
  }

  /** A domain we deliver to (virtual_mailbox_domains). Parent domains never match: no wildcard hosting. */
  #mailboxDomain(key: string, v: SyncDirectoryReader): LookupResult {
    const name = normalizeDomain(key);
    if (!name) return notFound('not a domain name');
    const d = v.findDomain(name);
    if (!d) return notFound('domain not hosted');
    if (d.aliasFor) return notFound(`alias domain for ${d.aliasFor} (answered by virtual_alias_domains)`);
    if (!d.enabled) return notFound('domain disabled');
    return found(name, 'mailbox domain');
  }

  /** A domain whose addresses are rewritten to another domain (virtual_alias_domains). */
  #aliasDomain(key: string, v: SyncDirectoryReader): LookupResult {
    const name = normalizeDomain(key);
    if (!name) return notFound('not a domain name');
    const d = v.findDomain(name);
    if (!d?.aliasFor) return notFound(d ? 'mailbox domain (answered by virtual_mailbox_domains)' : 'domain not hosted');
    if (!d.enabled) return notFound('alias domain disabled');
    const target = v.findDomain(d.aliasFor);
    if (!target || !target.enabled || target.aliasFor) return notFound(`alias domain target ${d.aliasFor} not an enabled mailbox domain`);
    return found(d.aliasFor, `alias domain for ${d.aliasFor}`);
  }

  /** Recipient with a mailbox here (virtual_mailbox_maps); the value is a Maildir path relative to virtual_mailbox_base. */
  #mailbox(key: string, v: SyncDirectoryReader): LookupResult {
    const addr = parseAddress(key);
    if (!addr) return notFound('not an address');
    const domain = localDomain(addr.domain, v);
    if (typeof domain === 'string') return notFound(domain);
    const hit = this.#findMailbox(addr, v);
    if (!hit) return notFound('no such mailbox');
    if (!hit.mailbox.enabled) return notFound(`mailbox ${hit.mailbox.address} disabled`);
    return found(`${addr.domain}/${maildirName(hit.base)}/`, `mailbox ${hit.mailbox.address}${hit.stripped ? ` (extension stripped)` : ''}`);
  }

  /**
   * Alias expansion (virtual_alias_maps), in Postfix's own order for a fixed table:
   * exact alias, exact mailbox, alias/mailbox without the extension, then the
   * `@domain` catch-all. A mailbox answers NOTFOUND (deliver as is), which is
   * how a real mailbox wins over the catch-all. A disabled mailbox or alias
   * also answers NOTFOUND, so it never falls through to the catch-all.
   */
  #alias(key: string, v: SyncDirectoryReader): LookupResult {
    const addr = parseAddress(key);
    if (!addr) return notFound('not an address');
    const d = v.findDomain(addr.domain);
    if (!d || !d.enabled) return notFound(d ? 'domain disabled' : 'domain not hosted');
    if (d.aliasFor) return this.#aliasDomainRewrite(addr, d, v);
    const r = this.#resolveLocal(addr, v);
    switch (r.kind) {
      case 'alias':
        return found(r.targets.join(','), `alias ${r.alias.address}${r.extension ? ' (extension propagated)' : ''}`);
      case 'catch-all':
        return found(r.targets.join(','), `catch-all ${r.alias.address}`);
      case 'mailbox':
        return notFound(`mailbox ${r.mailbox.address}${r.mailbox.enabled ? '' : ' (disabled)'}, delivered as is`);
      case 'disabled-alias':
        return notFound(`alias ${r.alias.address} disabled`);
      case 'none':
        return notFound('no alias, mailbox or catch-all');
    }
  }

  /** Owners of an envelope sender (smtpd_sender_login_maps): the value is the SASL logins allowed to use it. */
  #senderLogins(key: string, v: SyncDirectoryReader): LookupResult {
    const addr = parseAddress(key);
    if (!addr) return notFound('not an address');
    const d = v.findDomain(addr.domain);
    if (!d || !d.enabled) return notFound(d ? 'domain disabled' : 'domain not hosted');
    const owners = new Set<string>();
    const why: string[] = [];
    let local: MailAddress = addr;
    if (d.aliasFor) {
      const target = v.findDomain(d.aliasFor);
      if (!target?.enabled) return notFound(`alias domain target ${d.aliasFor} disabled`);
      local = { local: addr.local, domain: d.aliasFor };
      why.push(`alias domain ${d.name} -> ${d.aliasFor}`);
    }
    const grantKeys = new Set([addressKey(addr), addressKey(local), catchAllKey(addr.domain), catchAllKey(local.domain)]);
    const split = splitExtension(local.local, this.#delimiter);
    if (split) grantKeys.add(addressKey({ local: split.base, domain: local.domain }));
    for (const k of grantKeys) {
      for (const g of v.findSenderGrants(k)) {
        owners.add(g.login);
        why.push(`grant ${g.address} -> ${g.login}`);
      }
    }
    this.#collectOwners(local, owners, why, new Set(), 0, v);
    if (owners.size === 0) return notFound(why.length ? why.join('; ') : 'no mailbox, alias or grant owns this address');
    return found([...owners].join(','), why.join('; '));
  }

  #collectOwners(addr: MailAddress, owners: Set<string>, why: string[], seen: Set<string>, depth: number, v: SyncDirectoryReader): void {
    const k = addressKey(addr);
    if (seen.has(k) || depth > MAX_OWNER_DEPTH) return;
    seen.add(k);
    const r = this.#resolveLocal(addr, v);
    if (r.kind === 'mailbox' && r.mailbox.enabled) {
      owners.add(r.mailbox.address);
      why.push(`mailbox ${r.mailbox.address}`);
    } else if (r.kind === 'alias') {
      why.push(`alias ${r.alias.address}`);
      for (const target of r.alias.targets) {
        const t = parseAddress(target);
        if (!t) continue;
        const td = v.findDomain(t.domain);
        if (!td?.enabled) continue;
        const resolved = td.aliasFor ? { local: t.local, domain: td.aliasFor } : t;
        this.#collectOwners(resolved, owners, why, seen, depth + 1, v);
      }
    }
    // A catch-all target does not own every address of the domain: use a sender grant for that.
  }

  /** x@alias.domain → x@target.domain, but only for recipients the target would accept (no backscatter). */
  #aliasDomainRewrite(addr: MailAddress, d: Domain, v: SyncDirectoryReader): LookupResult {
    const target = v.findDomain(d.aliasFor!);
    if (!target || !target.enabled || target.aliasFor) return notFound(`alias domain target ${d.aliasFor} not an enabled mailbox domain`);
    const rewritten: MailAddress = { local: addr.local, domain: target.name };
    const r = this.#resolveLocal(rewritten, v);
    const deliverable = r.kind === 'alias' || r.kind === 'catch-all' || (r.kind === 'mailbox' && r.mailbox.enabled);
    if (!deliverable) return notFound(`alias domain ${d.name} -> ${target.name}: ${addressKey(rewritten)} not deliverable`);
    return found(formatAddress(rewritten), `alias domain ${d.name} -> ${target.name}`);
  }

  #findMailbox(addr: MailAddress, v: SyncDirectoryReader): { mailbox: Mailbox; base: string; stripped: boolean } | undefined {
    const exact = v.findMailbox(addressKey(addr));
    if (exact) return { mailbox: exact, base: addr.local, stripped: false };
    const split = splitExtension(addr.local, this.#delimiter);
    if (!split) return undefined;
    const base = v.findMailbox(addressKey({ local: split.base, domain: addr.domain }));
    return base ? { mailbox: base, base: split.base, stripped: true } : undefined;
  }

  /** The local-domain resolution order shared by alias expansion and sender ownership. */
  #resolveLocal(addr: MailAddress, v: SyncDirectoryReader): LocalResolution {
    const full = addressKey(addr);
    const exactAlias = v.findAlias(full);
    if (exactAlias) return aliasResolution(exactAlias, undefined);
    const exactMailbox = v.findMailbox(full);
    if (exactMailbox) return { kind: 'mailbox', mailbox: exactMailbox };
    const split = splitExtension(addr.local, this.#delimiter);
    if (split) {
      const baseKey = addressKey({ local: split.base, domain: addr.domain });
      const baseAlias = v.findAlias(baseKey);
      if (baseAlias) return aliasResolution(baseAlias, split);
      const baseMailbox = v.findMailbox(baseKey);
      if (baseMailbox) return { kind: 'mailbox', mailbox: baseMailbox };
    }
    const catchAll = v.findAlias(catchAllKey(addr.domain));
    if (catchAll?.enabled) return { kind: 'catch-all', alias: catchAll, targets: catchAll.targets.map(externalTarget) };
    return { kind: 'none' };
  }
}

function localDomain(name: string, v: SyncDirectoryReader): Domain | string {
  const d = v.findDomain(name);
  if (!d) return 'domain not hosted';
  if (d.aliasFor) return `alias domain for ${d.aliasFor}`;
  if (!d.enabled) return 'domain disabled';
  return d;
}

type LocalResolution =
  | { kind: 'alias'; alias: Alias; targets: string[]; extension: boolean }
  | { kind: 'catch-all'; alias: Alias; targets: string[] }
  | { kind: 'disabled-alias'; alias: Alias }
  | { kind: 'mailbox'; mailbox: Mailbox }
  | { kind: 'none' };

function aliasResolution(alias: Alias, split: { delimiter: string; extension: string } | undefined): LocalResolution {
  if (!alias.enabled) return { kind: 'disabled-alias', alias };
  // Postfix propagate_unmatched_extensions (default includes "virtual"): the
  // extension stripped to find the alias is re-attached to every target.
  const targets = alias.targets.map((t) => {
    if (!split) return externalTarget(t);
    const a = parseAddress(t);
    return a ? formatAddress(withExtension(a, split.delimiter, split.extension)) : t;
  });
  return { kind: 'alias', alias, targets, extension: split !== undefined };
}

/** Local parts may contain '/' (RFC 5322 atext); keep the path inside the domain directory. */
function maildirName(local: string): string {
  return local.replace(/[%/]/g, (c) => (c === '/' ? '%2F' : '%25'));
}

function externalTarget(target: string): string {
  const a = parseAddress(target);
  return a ? formatAddress(a) : target;
}
