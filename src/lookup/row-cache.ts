// Directory rows in memory, in front of a remote directory: domains, mailboxes,
// aliases and sender grants, positive and negative, shared by every lookup
// (socketmap, policy, milter) and by the Dovecot answers.
//
// Two stores:
// - `loaded`: rows read by the preload (every row, in keyset-paginated pages,
//   in the background). They do not expire: the change log keeps them current
//   (a changed key is dropped at once), and a background refresh re-reads every
//   page each cache_ttl, which also catches edits that bypass mailwarden.
//   Once a full pass has finished the cache is `complete`: a key it does not
//   hold does not exist, so negative answers cost no query either.
// - `recent`: rows read one at a time on a miss, kept for cache_ttl (the only
//   store without preload, or while the first pass is still running).
// A key changed since the last full pass (or any key of a changed domain) is
// `unknown` until the next pass: read from the database, never assumed absent.
import type { Logger } from 'pino';
import { TtlCache } from '../core/ttl-cache.ts';
import type {
  Alias, ChangeKind, DirectoryBackend, DirectoryChange, DirectoryPages, DirectoryReader, Domain, Mailbox, SenderGrant,
} from '../directory/types.ts';

export type RowKind = 'domain' | 'mailbox' | 'alias' | 'grants';

/** Returned by peek() when memory cannot answer: ask the database. */
export const MISS: unique symbol = Symbol('not in memory');
export type Miss = typeof MISS;

export interface RowCacheOptions {
  readonly ttlMs: number;
  /** Bounds each store; a directory with more rows than this is not preloaded (it is cached on demand). */
  readonly maxEntries: number;
  /** Preload every row (needs `pages`). */
  readonly preload: boolean;
  /** Rows per page. */
  readonly pageSize?: number;
  /** Time between the end of one pass and the next (default ttlMs). */
  readonly refreshMs?: number;
}

const NO_GRANTS: readonly SenderGrant[] = Object.freeze([]);
const PAGE_SIZE = 2000;
/** After a failed pass (database down), the next try comes this soon at the latest. */
const RETRY_MS = 10_000;

const CHANGED_ROW: Record<ChangeKind, RowKind> = { domain: 'domain', mailbox: 'mailbox', alias: 'alias', grant: 'grants' };

type Row = Domain | Mailbox | Alias | readonly SenderGrant[];
type Store<T> = Record<RowKind, Map<string, T>>;
const stores = <T>(): Store<T> => ({ domain: new Map(), mailbox: new Map(), alias: new Map(), grants: new Map() });

/** Keys changed while a pass is reading pages: their page rows may predate the change and are skipped. */
interface PassChanges {
  all: boolean;
  readonly keys: Record<RowKind, Set<string>>;
  readonly domains: Set<string>;
}

export class RowCache implements DirectoryReader {
  readonly #dir: DirectoryReader;
  readonly #pages: DirectoryPages | undefined;
  readonly #log: Logger | undefined;
  readonly #maxEntries: number;
  readonly #pageSize: number;
  readonly #refreshMs: number;
  readonly #recent: Record<RowKind, TtlCache<unknown>>;
  #loaded: Store<Row> = stores();
  #loadedRows = 0;
  #complete = false;
  /** Keys (per kind) and domains changed since the last full pass, with the change number. */
  #unknown: Store<number> = stores();
  #unknownDomains = new Map<string, number>();
  /** Bumped on every change: a point read that started before one is not stored. */
  #generation = 0;
  #pass: PassChanges | undefined;
  #passId = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #preload: boolean;
  /** Point reads that went to the database (a test and benchmark counter). */
  reads = 0;
  /** Full passes finished. */
  passes = 0;

  constructor(dir: DirectoryBackend, options: RowCacheOptions, log?: Logger) {
    this.#dir = dir;
    this.#pages = isPaged(dir) ? dir : undefined;
    this.#log = log;
    this.#maxEntries = options.maxEntries;
    this.#pageSize = options.pageSize ?? PAGE_SIZE;
    this.#refreshMs = Math.max(1000, options.refreshMs ?? options.ttlMs);
    this.#preload = options.preload && this.#pages !== undefined && options.maxEntries > 0 && options.ttlMs > 0;
    const recent = () => new TtlCache<unknown>(options.ttlMs, options.maxEntries);
    this.#recent = { domain: recent(), mailbox: recent(), alias: recent(), grants: recent() };
    // The weak reference lets a cache replaced by a reload go (listeners cannot be removed).
    const self = new WeakRef(this);
    dir.onChange((change) => self.deref()?.changed(change));
    if (this.#preload) this.#schedule(0);
  }

  /** True once every row is in memory: keys it does not hold do not exist. */
  get complete(): boolean {
    return this.#complete;
  }

  /** Rows held by the preload. */
  get loadedRows(): number {
    return this.#loadedRows;
  }

  close(): void {
    this.#closed = true;
    this.#passId++;
    if (this.#timer) clearTimeout(this.#timer);
  }

  /** The row from memory, or MISS. Negative answers are `undefined` (no grants: an empty list). */
  peek(kind: 'domain', key: string): Domain | undefined | Miss;
  peek(kind: 'mailbox', key: string): Mailbox | undefined | Miss;
  peek(kind: 'alias', key: string): Alias | undefined | Miss;
  peek(kind: 'grants', key: string): readonly SenderGrant[] | Miss;
  peek(kind: RowKind, key: string): unknown;
  peek(kind: RowKind, key: string): unknown {
    const row = this.#loaded[kind].get(key);
    if (row !== undefined) return row;
    const recent = this.#recent[kind].entry(key, Date.now());
    if (recent !== undefined) return recent.value;
    if (!this.#complete || this.#unknown[kind].has(key)) return MISS;
    if (this.#unknownDomains.size > 0 && this.#unknownDomains.has(domainOf(kind, key))) return MISS;
    return kind === 'grants' ? NO_GRANTS : undefined;
  }

  findDomain(name: string): Promise<Domain | undefined> { return this.#find('domain', name, () => this.#dir.findDomain(name)); }
  findMailbox(address: string): Promise<Mailbox | undefined> { return this.#find('mailbox', address, () => this.#dir.findMailbox(address)); }
  findAlias(address: string): Promise<Alias | undefined> { return this.#find('alias', address, () => this.#dir.findAlias(address)); }
  findSenderGrants(address: string): Promise<readonly SenderGrant[]> { return this.#find('grants', address, () => this.#dir.findSenderGrants(address)); }

  async #find<T>(kind: RowKind, key: string, read: () => Promise<T>): Promise<T> {
    const known = this.peek(kind, key);
    if (known !== MISS) return known as T;
    const generation = this.#generation;
    this.reads++;
    const row = await read();
    if (generation === this.#generation) this.#recent[kind].set(key, row, Date.now());
    return row;
  }

  /** Drops what a directory change can have touched. */
  changed(change: DirectoryChange | undefined): void {
    this.#generation++;
    if (!change || change.all) {
      this.#loaded = stores();
      this.#loadedRows = 0;
      this.#complete = false;
      this.#unknown = stores();
      this.#unknownDomains.clear();
      for (const r of Object.values(this.#recent)) r.flush();
      if (this.#pass) this.#pass.all = true;
      if (this.#preload) this.#schedule(0);
      return;
    }
    const n = this.#generation;
    for (const { kind, name } of change.keys) {
      if (kind === 'domain') {
        this.#dropDomain(name, n);
        continue;
      }
      const rowKind = CHANGED_ROW[kind];
      if (this.#loaded[rowKind].delete(name)) this.#loadedRows--;
      this.#recent[rowKind].delete(name);
      if (this.#preload) this.#unknown[rowKind].set(name, n);
      this.#pass?.keys[rowKind].add(name);
    }
  }

  /** A domain stands for its row and everything in it (deleting it cascades). Rare: a scan is fine. */
  #dropDomain(name: string, n: number): void {
    for (const kind of ['domain', 'mailbox', 'alias', 'grants'] as const) {
      const loaded = this.#loaded[kind];
      for (const key of loaded.keys()) {
        if (domainOf(kind, key) === name && loaded.delete(key)) this.#loadedRows--;
      }
      this.#recent[kind].flush();
    }
    if (this.#preload) this.#unknownDomains.set(name, n);
    this.#pass?.domains.add(name);
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#runPass();
    }, ms);
    this.#timer.unref();
  }

  /** One full pass over every table, page by page; answers keep coming from memory or the database meanwhile. */
  async #runPass(): Promise<void> {
    const pages = this.#pages;
    if (!pages || this.#closed) return;
    const id = ++this.#passId;
    const startedAt = this.#generation;
    const pass: PassChanges = { all: false, keys: { domain: new Set(), mailbox: new Set(), alias: new Set(), grants: new Set() }, domains: new Set() };
    this.#pass = pass;
    const started = performance.now();
    const seen: Record<RowKind, Set<string>> = { domain: new Set(), mailbox: new Set(), alias: new Set(), grants: new Set() };
    let rows = 0;
    const current = () => id === this.#passId && !pass.all;
    const keep = (kind: RowKind, key: string, row: Row, domain: string): boolean => {
      seen[kind].add(key);
      if (++rows > this.#maxEntries) throw new TooBig();
      if (pass.keys[kind].has(key) || pass.domains.has(domain)) return true;
      if (!this.#loaded[kind].has(key)) this.#loadedRows++;
      this.#loaded[kind].set(key, row);
      return true;
    };
    try {
      // Each table in primary-key order; false: the pass was overtaken (a newer pass, an {all} change).
      const table = async <T>(read: (after: string, limit: number) => Promise<T[]>, kind: RowKind, keyOf: (row: T) => string, domain: (row: T) => string) => {
        for (let after = ''; ;) {
          const page = await read(after, this.#pageSize);
          if (!current()) return false;
          for (const row of page) keep(kind, keyOf(row), row as Row, domain(row));
          if (page.length < this.#pageSize) return true;
          after = keyOf(page[page.length - 1]!);
          await yieldToAnswers();
        }
      };
      if (!await table((a, n) => pages.pageDomains(a, n), 'domain', (d) => d.name, (d) => d.name)) return;
      if (!await table((a, n) => pages.pageMailboxes(a, n), 'mailbox', (m) => m.address, (m) => m.domain)) return;
      if (!await table((a, n) => pages.pageAliases(a, n), 'alias', (a) => a.address, (a) => a.domain)) return;
      // Grants come as (address, login) rows; one address's list may span two pages.
      let grantAfter = { address: '', login: '' };
      let group: SenderGrant[] = [];
      const flush = () => {
        const first = group[0];
        if (first) keep('grants', first.address, Object.freeze(group), domainOf('grants', first.address));
        group = [];
      };
      for (;;) {
        const page = await pages.pageSenderGrants(grantAfter, this.#pageSize);
        if (!current()) return;
        for (const g of page) {
          if (group.length > 0 && group[0]!.address !== g.address) flush();
          group.push(g);
        }
        if (page.length < this.#pageSize) break;
        const last = page[page.length - 1]!;
        grantAfter = { address: last.address, login: last.login };
        await yieldToAnswers();
      }
      flush();
      // Rows that no page returned are gone (deleted behind mailwarden's back), unless changed meanwhile.
      for (const kind of ['domain', 'mailbox', 'alias', 'grants'] as const) {
        const loaded = this.#loaded[kind];
        for (const key of loaded.keys()) {
          if (!seen[kind].has(key) && !pass.keys[kind].has(key) && loaded.delete(key)) this.#loadedRows--;
        }
        // What changed before this pass began is now read as it is; later changes stay unknown.
        for (const [key, n] of this.#unknown[kind]) if (n <= startedAt) this.#unknown[kind].delete(key);
      }
      for (const [name, n] of this.#unknownDomains) if (n <= startedAt) this.#unknownDomains.delete(name);
      const first = !this.#complete;
      this.#complete = true;
      this.passes++;
      this.#log?.[first ? 'info' : 'debug']({ rows: this.#loadedRows, ms: Math.round(performance.now() - started) }, 'directory preloaded');
      this.#schedule(this.#refreshMs);
    } catch (err) {
      if (!current()) return;
      if (err instanceof TooBig) {
        // Bounded memory: a directory larger than the cache is cached on demand only.
        this.#log?.warn({ rows: `more than ${this.#maxEntries}` }, 'directory larger than directory.cache_size: not preloaded, rows are cached on demand');
        this.#preload = false;
        this.#loaded = stores();
        this.#loadedRows = 0;
        this.#complete = false;
        this.#unknown = stores();
        this.#unknownDomains.clear();
        return;
      }
      // Rows already loaded stay (the change log keeps them current); a cold cache simply stays cold.
      this.#log?.warn({ err: (err as Error).message }, 'cannot preload the directory; answering from the database meanwhile');
      this.#schedule(Math.min(RETRY_MS, this.#refreshMs));
    } finally {
      if (this.#pass === pass) this.#pass = undefined;
    }
  }
}

class TooBig extends Error {}

function isPaged(dir: DirectoryBackend): dir is DirectoryBackend & DirectoryPages {
  return typeof (dir as Partial<DirectoryPages>).pageMailboxes === 'function';
}

/** The domain a row belongs to: a domain row to itself, an address (or `@domain`) to its domain. */
function domainOf(kind: RowKind, key: string): string {
  return kind === 'domain' ? key : key.slice(key.lastIndexOf('@') + 1);
}

/** Between pages: let waiting answers run first. */
function yieldToAnswers(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
