// Policy state for the YAML backend: in memory, persisted to a JSON side file
// next to the directory (directory.yaml → directory.policy-state.json, like
// directory.activity.json). Written atomically (temp file, fsync, rename) at
// most once a second (less often when large) and on close, loaded at start.
//
// One process only: every operation is atomic because it runs synchronously
// on this process's maps, and the file is this process's snapshot. Two
// processes on one file would overwrite each other's state; several instances
// (one per MX host, or several on one host) need directory.backend: mysql.
//
// Bounded: at most `maxEntries` counter buckets, triplets and client networks
// each; beyond that the least recently written are dropped. Dropping state is
// the permissive direction (a counter forgets, a triplet is greylisted anew),
// and it is logged. Losing the file (corrupt, deleted) likewise only resets state.
import { readFileSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import type { Logger } from 'pino';
import { DirectoryError } from '../directory/types.ts';
import { writeFileAtomic } from '../directory/yaml-file.ts';
import { checkRules, isAlive, nextClient, nextTriplet, tripletId } from './greylist-state.ts';
import { DEFAULT_SWEEP, startSweeper, type SweepSchedule } from './sweeper.ts';
import type {
  ClientRecord, ClientUpdate, CounterIncrement, CounterRef, PolicyStateStore, SweepResult, TripletRecord, TripletRules,
  TripletSeen, WindowCount,
} from './types.ts';
import { bucketExpiry, bucketStart, bucketWidth, checkCounter, checkTime, windowCount } from './window.ts';

const FORMAT = 1;
const WARN_EVERY_MS = 60_000;

export function policyStatePath(directoryPath: string): string {
  return join(dirname(directoryPath), `${basename(directoryPath, extname(directoryPath))}.policy-state.json`);
}

export interface FilePolicyStateOptions {
  /** Entries kept per kind (counter buckets, triplets, client networks). Default 20 000. */
  readonly maxEntries?: number;
  /** Shortest time between writes of the file. Default 1000 ms (longer when a write is slow, see #changed). */
  readonly flushMs?: number;
  readonly log?: Logger | undefined;
  /** Periodic sweep of expired entries; false for none. */
  readonly sweep?: Partial<SweepSchedule> | false;
  /** Drops entries that expired while the process was down (default Date.now). */
  readonly clock?: () => number;
}

interface Bucket { count: number; expiresAt: number }

/** On disk: arrays rather than objects, a third of the size for the same state. */
interface StoredState {
  version: number;
  /** [key, width, [[start, count, expiresAt], ...]] */
  counters: [string, number, [number, number, number][]][];
  /** [id (base64url of tripletId), firstSeen, lastSeen, passedAt | null, expiresAt] */
  triplets: [string, number, number, number | null, number][];
  /** [network, passes, firstSeen, lastSeen, lastPass, expiresAt] */
  clients: [string, number, number, number, number, number][];
}

export class FilePolicyState implements PolicyStateStore {
  readonly kind = 'file' as const;
  /** Undefined: memory only (tests). */
  readonly path: string | undefined;
  readonly maxEntries: number;
  readonly #flushMs: number;
  readonly #log: Logger | undefined;
  readonly #sweeper: { stop(): void } | undefined;
  /** `key\nwidth` → bucket start → bucket. Map order = least recently written first. */
  readonly #counters = new Map<string, Map<number, Bucket>>();
  #buckets = 0;
  readonly #triplets = new Map<string, TripletRecord>();
  readonly #clients = new Map<string, ClientRecord>();
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #lastFlushMs = 0;
  #closed = false;
  #lastWarn = new Map<string, number>();

  private constructor(path: string | undefined, options: FilePolicyStateOptions) {
    this.path = path;
    this.maxEntries = Math.max(1, options.maxEntries ?? 20_000);
    this.#flushMs = options.flushMs ?? 1000;
    this.#log = options.log;
    if (path !== undefined) this.#load(path, (options.clock ?? Date.now)());
    this.#sweeper = options.sweep === false ? undefined : startSweeper(this, { ...DEFAULT_SWEEP, log: options.log, ...options.sweep });
  }

  /** Loads the side file if there is one (a missing or unreadable file is empty state). */
  static open(path: string | undefined, options: FilePolicyStateOptions = {}): FilePolicyState {
    return new FilePolicyState(path, options);
  }

  get size(): { buckets: number; triplets: number; clients: number } {
    return { buckets: this.#buckets, triplets: this.#triplets.size, clients: this.#clients.size };
  }

  // --- counters ---

  async addToCounters(increments: readonly CounterIncrement[], now: number): Promise<WindowCount[]> {
    this.#open();
    checkTime(now);
    for (const i of increments) checkCounter(i, i.amount);
    for (const i of increments) {
      if (i.amount === 0) continue;
      const width = bucketWidth(i.windowMs);
      const id = `${i.key}\n${width}`;
      const buckets = this.#counters.get(id) ?? new Map<number, Bucket>();
      this.#counters.delete(id); // re-insert: most recently written last
      this.#counters.set(id, buckets);
      const start = bucketStart(now, width);
      const expiresAt = bucketExpiry(start, i.windowMs, width);
      const b = buckets.get(start);
      if (b) {
        b.count += i.amount;
        b.expiresAt = Math.max(b.expiresAt, expiresAt);
      } else {
        buckets.set(start, { count: i.amount, expiresAt });
        this.#buckets++;
      }
    }
    this.#evictCounters();
    this.#changed();
    return this.#totals(increments, now);
  }

  async readCounters(counters: readonly CounterRef[], now: number): Promise<WindowCount[]> {
    this.#open();
    checkTime(now);
    for (const r of counters) checkCounter(r);
    return this.#totals(counters, now);
  }

  #totals(refs: readonly CounterRef[], now: number): WindowCount[] {
    return refs.map((r) => {
      const buckets = this.#counters.get(`${r.key}\n${bucketWidth(r.windowMs)}`);
      const list = buckets ? [...buckets].map(([start, b]) => ({ start, count: b.count })) : [];
      return windowCount(list, now, r.windowMs);
    });
  }

  #evictCounters(): void {
    let evicted = 0;
    for (const [id, buckets] of this.#counters) {
      if (this.#buckets <= this.maxEntries) break;
      this.#counters.delete(id);
      this.#buckets -= buckets.size;
      evicted += buckets.size;
    }
    if (evicted > 0) this.#warnFull('counter buckets', evicted);
  }

  // --- greylisting ---

  async seeTriplet(triplet: string, now: number, rules: TripletRules): Promise<TripletSeen> {
    this.#open();
    checkTime(now);
    checkRules(rules);
    const id = tripletId(triplet).toString('base64url');
    const step = nextTriplet(this.#triplets.get(id), now, rules);
    if (step.write) {
      this.#triplets.delete(id);
      this.#triplets.set(id, step.record);
      this.#evict(this.#triplets, 'greylist triplets');
      this.#changed();
    }
    return { record: step.record, passedNow: step.passedNow };
  }

  async readTriplet(triplet: string, now: number): Promise<TripletRecord | undefined> {
    this.#open();
    const r = this.#triplets.get(tripletId(triplet).toString('base64url'));
    return r && isAlive(r, now) ? r : undefined;
  }

  async readClient(network: string, now: number): Promise<ClientRecord | undefined> {
    this.#open();
    const r = this.#clients.get(network);
    return r && isAlive(r, now) ? r : undefined;
  }

  async updateClient(network: string, now: number, update: ClientUpdate): Promise<void> {
    this.#open();
    checkTime(now);
    const next = nextClient(this.#clients.get(network), now, update);
    this.#clients.delete(network);
    this.#clients.set(network, next);
    this.#evict(this.#clients, 'greylist client networks');
    this.#changed();
  }

  #evict<V>(map: Map<string, V>, what: string): void {
    let evicted = 0;
    for (const key of map.keys()) {
      if (map.size <= this.maxEntries) break;
      map.delete(key);
      evicted++;
    }
    if (evicted > 0) this.#warnFull(what, evicted);
  }

  #warnFull(what: string, evicted: number): void {
    const now = Date.now();
    if (now - (this.#lastWarn.get(what) ?? 0) < WARN_EVERY_MS) return;
    this.#lastWarn.set(what, now);
    this.#log?.warn({ path: this.path, what, evicted, max: this.maxEntries }, 'policy state full: dropping the least recently used entries');
  }

  // --- expiry ---

  async sweep(now: number, limit: number): Promise<SweepResult> {
    this.#open();
    checkTime(now);
    let deleted = 0;
    let more = false;
    let n = 0;
    outer: for (const [id, buckets] of this.#counters) {
      for (const [start, b] of buckets) {
        if (b.expiresAt >= now) continue;
        if (n >= limit) { more = true; break outer; }
        buckets.delete(start);
        this.#buckets--;
        n++;
      }
      if (buckets.size === 0) this.#counters.delete(id);
    }
    deleted += n;
    for (const map of [this.#triplets, this.#clients] as Map<string, { expiresAt: number }>[]) {
      n = 0;
      for (const [key, r] of map) {
        if (r.expiresAt >= now) continue;
        if (n >= limit) { more = true; break; }
        map.delete(key);
        n++;
      }
      deleted += n;
    }
    if (deleted > 0) this.#changed();
    return { deleted, more };
  }

  // --- persistence ---

  #changed(): void {
    this.#dirty = true;
    if (this.#timer || this.path === undefined) return;
    // A full store takes ~5 µs per entry to write (~100 ms at 3 × 20 000), all of it
    // blocking the event loop: never spend more than a tenth of the time on it.
    this.#timer = setTimeout(() => this.flush(), Math.max(this.#flushMs, 10 * this.#lastFlushMs));
    this.#timer.unref();
  }

  /** Writes the state now if it changed (temp file + rename: readers never see a partial file). */
  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#dirty || this.path === undefined) return;
    const started = performance.now();
    const state: StoredState = {
      version: FORMAT,
      counters: [...this.#counters].map(([id, buckets]) => {
        const nl = id.lastIndexOf('\n');
        return [id.slice(0, nl), Number(id.slice(nl + 1)), [...buckets].map(([start, b]) => [start, b.count, b.expiresAt])];
      }),
      triplets: [...this.#triplets].map(([id, r]) => [id, r.firstSeen, r.lastSeen, r.passedAt ?? null, r.expiresAt]),
      clients: [...this.#clients].map(([net, r]) => [net, r.passes, r.firstSeen, r.lastSeen, r.lastPass, r.expiresAt]),
    };
    try {
      writeFileAtomic(this.path, `${JSON.stringify(state)}\n`);
      this.#dirty = false;
      this.#lastFlushMs = performance.now() - started;
    } catch (err) {
      // Kept dirty: the next change (or close) tries again.
      this.#log?.error({ path: this.path, err: (err as Error).message }, 'cannot write the policy state file');
    }
  }

  #load(path: string, now: number): void {
    let state: StoredState;
    try {
      state = JSON.parse(readFileSync(path, 'utf8')) as StoredState;
    } catch (err) {
      // Missing is normal; unreadable only costs state (counters restart, triplets are greylisted anew).
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.#log?.warn({ path, err: (err as Error).message }, 'policy state file unreadable, starting empty');
      }
      return;
    }
    if (state?.version !== FORMAT) {
      this.#log?.warn({ path, version: state?.version }, 'policy state file has an unknown format, starting empty');
      return;
    }
    try {
      for (const [key, width, buckets] of state.counters) {
        const map = new Map<number, Bucket>();
        for (const [start, count, expiresAt] of buckets) {
          if (expiresAt >= now) map.set(start, { count, expiresAt });
        }
        if (map.size > 0) {
          this.#counters.set(`${key}\n${width}`, map);
          this.#buckets += map.size;
        }
      }
      for (const [id, firstSeen, lastSeen, passedAt, expiresAt] of state.triplets) {
        if (expiresAt >= now) this.#triplets.set(id, { firstSeen, lastSeen, ...(passedAt !== null ? { passedAt } : {}), expiresAt });
      }
      for (const [net, passes, firstSeen, lastSeen, lastPass, expiresAt] of state.clients) {
        if (expiresAt >= now) this.#clients.set(net, { passes, firstSeen, lastSeen, lastPass, expiresAt });
      }
    } catch (err) {
      this.#log?.warn({ path, err: (err as Error).message }, 'policy state file malformed, starting empty');
      this.#counters.clear();
      this.#triplets.clear();
      this.#clients.clear();
      this.#buckets = 0;
      return;
    }
    this.#evictCounters();
    this.#evict(this.#triplets, 'greylist triplets');
    this.#evict(this.#clients, 'greylist client networks');
  }

  #open(): void {
    // A check racing shutdown: "try again later", like any other unavailable state.
    if (this.#closed) throw new DirectoryError('unavailable', 'policy state store is closed');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#sweeper?.stop();
    this.flush();
  }
}
