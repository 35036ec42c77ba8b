// Lookup answers are cached per (map, key), positive and negative alike.
// Staleness is bounded twice: every entry expires after its TTL, and a change
// the backend reports (a write through mailwarden: the MySQL change log, polled
// every second; a YAML file reload: everything) drops every answer it can
// touch, so a CLI edit is visible within about a second while direct SQL edits
// wait at most cache_ttl.
//
// Which answers a change can touch is known from the rows each answer was made
// from (maps.ts reports them): an answer that read only its own address (and
// the address without its extension), its domain's row and the domain's
// catch-all is dropped when one of those addresses changes, or the catch-all
// (then every answer of the domain goes); any other answer (alias chains for
// sender logins, alias domains) is "wide" and dropped on every change. A domain
// change drops everything: domain changes are rare.
import { addressKey, catchAllKey, normalizeDomain, parseAddress, splitExtension } from '../core/address.ts';
import { dropsEveryAnswer, type DirectoryChange } from '../directory/types.ts';
import type { LookupResult, MapName } from './maps.ts';

interface Entry {
  readonly result: LookupResult;
  readonly expires: number;
  /** The domain whose catch-all can change this answer. */
  readonly domain: string | undefined;
  readonly wide: boolean;
  /** Addresses (other than the key itself) whose change drops this answer. */
  readonly indexed: readonly string[] | undefined;
}

const DOMAIN_MAPS: ReadonlySet<MapName> = new Set(['virtual_mailbox_domains', 'virtual_alias_domains']);

export class LookupCache {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #delimiter: string;
  /** One Map per table: no `${map} ${key}` string to build on every lookup. */
  #entries = new Map<MapName, Map<string, Entry>>();
  /** Answers by an address they depend on, when that address is not their key (extensions, other spellings). */
  #byAddress = new Map<string, Array<[MapName, string]>>();
  #wide: Array<[MapName, string]> = [];
  #size = 0;
  /** Bumped on every change, so an answer fetched before one is not stored after it. */
  #generation = 0;
  hits = 0;
  misses = 0;
  /** Answers dropped by keyed changes (not by flushes): a test and benchmark counter. */
  dropped = 0;

  constructor(ttlMs: number, maxEntries: number, recipientDelimiter = '') {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
    this.#delimiter = recipientDelimiter;
  }

  get size(): number {
    return this.#size;
  }

  /** Changes with every directory change (keyed or not): memos derived from answers must not outlive it. */
  get generation(): number {
    return this.#generation;
  }

  get(map: MapName, key: string, now: number): LookupResult | undefined {
    const entry = this.#entries.get(map)?.get(key);
    if (entry && entry.expires > now) {
      this.hits++;
      return entry.result;
    }
    this.misses++;
    return undefined;
  }

  /** `reads`: the rows the answer was made from (`kind key`); undefined = unknown, dropped on any change. */
  set(map: MapName, key: string, result: LookupResult, generation: number, now: number, reads?: Iterable<string>): void {
    if (generation !== this.#generation || this.#maxEntries === 0 || this.#ttlMs === 0) return;
    let table = this.#entries.get(map);
    if (!table) this.#entries.set(map, (table = new Map()));
    this.#remove(map, table, key);
    const scope = reads === undefined ? undefined : this.#scope(map, key, reads);
    const indexed = scope?.addresses.filter((a) => a !== key);
    const entry: Entry = {
      result,
      expires: now + this.#ttlMs,
      domain: scope?.domain,
      wide: scope === undefined,
      indexed: indexed && indexed.length > 0 ? indexed : undefined,
    };
    // Map keeps insertion order: evicting the first key drops the table's oldest entry (FIFO, no per-hit bookkeeping).
    table.set(key, entry);
    this.#size++;
    if (entry.wide) {
      this.#wide.push([map, key]);
      if (this.#wide.length > this.#maxEntries) this.#wide = this.#wide.filter(([m, k]) => this.#entries.get(m)?.get(k)?.wide);
    }
    for (const a of entry.indexed ?? []) {
      const list = this.#byAddress.get(a);
      if (list) list.push([map, key]);
      else this.#byAddress.set(a, [[map, key]]);
    }
    if (this.#size > this.#maxEntries) {
      const oldest = table.keys().next();
      if (!oldest.done) this.#remove(map, table, oldest.value);
    }
  }

  /** Drops every answer `change` can have touched. */
  changed(change: DirectoryChange | undefined): void {
    if (dropsEveryAnswer(change)) {
      this.flush();
      return;
    }
    this.#generation++;
    for (const { name } of change.keys) {
      if (name.startsWith('@')) this.#dropDomain(name.slice(1));
      else this.#dropAddress(name);
    }
    for (const [map, key] of this.#wide) {
      const table = this.#entries.get(map);
      if (table?.get(key)?.wide) this.#drop(map, table, key);
    }
    this.#wide = [];
  }

  flush(): void {
    this.#generation++;
    this.#entries = new Map();
    this.#byAddress = new Map();
    this.#wide = [];
    this.#size = 0;
  }

  #dropAddress(address: string): void {
    for (const [map, table] of this.#entries) this.#drop(map, table, address);
    for (const [map, key] of this.#byAddress.get(address) ?? []) {
      const table = this.#entries.get(map);
      if (table) this.#drop(map, table, key);
    }
    this.#byAddress.delete(address);
  }

  /** A catch-all or domain-wide grant changed: every answer in the domain (rare, so a scan). */
  #dropDomain(domain: string): void {
    for (const [map, table] of this.#entries) {
      for (const [key, e] of table) if (e.domain === domain) this.#drop(map, table, key);
    }
  }

  #drop(map: MapName, table: Map<string, Entry>, key: string): void {
    if (this.#remove(map, table, key)) this.dropped++;
  }

  #remove(map: MapName, table: Map<string, Entry>, key: string): boolean {
    const e = table.get(key);
    if (!e) return false;
    table.delete(key);
    this.#size--;
    for (const a of e.indexed ?? []) {
      const list = this.#byAddress.get(a);
      if (!list) continue;
      const rest = list.filter(([m, k]) => m !== map || k !== key);
      if (rest.length > 0) this.#byAddress.set(a, rest);
      else this.#byAddress.delete(a);
    }
    return true;
  }

  /**
   * What an answer depends on, from the rows it read: its addresses (the key's
   * canonical form, and without the extension) and its domain; undefined when
   * it read anything else (another address, another domain: wide).
   */
  #scope(map: MapName, key: string, reads: Iterable<string>): { addresses: string[]; domain: string | undefined } | undefined {
    const allowed: string[] = [];
    let addresses: string[] = [];
    let domain: string | undefined;
    if (DOMAIN_MAPS.has(map)) {
      domain = normalizeDomain(key) ?? undefined;
      if (domain) allowed.push(`domain ${domain}`);
    } else {
      const addr = parseAddress(key);
      if (addr) {
        domain = addr.domain;
        const full = addressKey(addr);
        const split = splitExtension(addr.local, this.#delimiter);
        addresses = split ? [full, addressKey({ local: split.base, domain })] : [full];
        const catchAll = catchAllKey(domain);
        allowed.push(`domain ${domain}`, `alias ${catchAll}`, `grants ${catchAll}`);
        for (const a of addresses) allowed.push(`mailbox ${a}`, `alias ${a}`, `grants ${a}`);
      }
    }
    for (const r of reads) if (!allowed.includes(r)) return undefined;
    return { addresses, domain };
  }
}
