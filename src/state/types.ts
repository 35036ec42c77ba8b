// Policy state that several mailwarden instances share: rolling-window rate
// counters and greylisting triplets. MariaDB (mysql-store.ts) when the
// directory is in MariaDB, so every MX host agrees; a local file
// (file-store.ts) for the YAML backend, one process only.
//
// Every operation is atomic on its own, also against other processes and
// hosts: a single-statement upsert in MariaDB, a synchronous update of the
// in-memory maps in the file store. There are no multi-statement transactions
// and no locks, which is what Galera wants.
//
// Time: every operation takes `now` (ms since the epoch) from the caller, so
// tests inject a clock and the stores never read their own. With several hosts
// their clocks must agree (NTP): a host whose clock is off by s ms counts its
// increments s ms early or late and sees triplets s ms older or younger. With
// NTP (skew well under a second) that is noise against greylisting delays of
// minutes and counter buckets of window/12. Times never go backwards in the
// stored state (last_seen takes the larger value).
//
// Failures (database down, too slow, schema missing) throw
// DirectoryError('unavailable') within the directory's query deadline, so the
// policy answers DEFER, never a reject.

/** A rolling-window counter: `key` counted over the last `windowMs`. */
export interface CounterRef {
  /** e.g. `sasl:alice@example.org:messages`. */
  readonly key: string;
  readonly windowMs: number;
}

export interface CounterIncrement extends CounterRef {
  /** Added at `now`; a non-negative integer (0 only reads). */
  readonly amount: number;
}

/**
 * A counter's total over its window, approximated by fixed buckets
 * (see window.ts: the total covers between windowMs and windowMs + windowMs/12
 * of history, so it never misses an event inside the window).
 */
export interface WindowCount {
  readonly total: number;
  /** When parts of `total` stop counting, ascending: at `at` the total drops by `count`. */
  readonly expiring: readonly { readonly at: number; readonly count: number }[];
}

/** Greylisting rules the triplet state machine applies (checks/greylist.ts has the defaults). */
export interface TripletRules {
  /** A retry is accepted this long after first seen. */
  readonly delayMs: number;
  /** A triplet not passed within this time after first seen starts over. */
  readonly retryWindowMs: number;
  /** A triplet (passed or not) not seen for this long starts over. */
  readonly maxAgeMs: number;
}

export interface TripletRecord {
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** When the triplet was first let through; absent while greylisted. */
  readonly passedAt?: number;
  /** After this time the record is as good as absent (and the sweep deletes it). */
  readonly expiresAt: number;
}

export interface TripletSeen {
  readonly record: TripletRecord;
  /** This call let the triplet through for the first time (count one success for its client). */
  readonly passedNow: boolean;
}

/** Successful greylisting retries of one client network (postgrey --auto-whitelist-clients). */
export interface ClientRecord {
  readonly passes: number;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** When a pass was last counted (passes are counted at most once per `minPassIntervalMs`). */
  readonly lastPass: number;
  readonly expiresAt: number;
}

export interface ClientUpdate {
  /** Count a pass (when the last counted one is at least minPassIntervalMs old); false only refreshes lastSeen. */
  readonly pass: boolean;
  readonly minPassIntervalMs: number;
  /** The client record lives until lastSeen + maxAgeMs. */
  readonly maxAgeMs: number;
}

export interface SweepResult {
  /** Rows (or entries) deleted, all kinds together. */
  readonly deleted: number;
  /** Some kind hit the limit: more expired entries are probably left. */
  readonly more: boolean;
}

export interface PolicyStateStore {
  readonly kind: 'mysql' | 'file';

  /**
   * Adds each amount to its counter at `now` and returns every counter's total
   * over its window afterwards, in the same order. The increments are atomic;
   * the totals are read right after them, so two concurrent callers may each
   * see the other's increment (both see the larger total, never a lost one).
   */
  addToCounters(increments: readonly CounterIncrement[], now: number): Promise<WindowCount[]>;
  /** Totals without adding anything, in the same order. */
  readCounters(counters: readonly CounterRef[], now: number): Promise<WindowCount[]>;

  /**
   * Records that `triplet` was seen at `now` and applies the greylisting state
   * machine atomically: absent or expired → first seen now; not passed and
   * at least delayMs after first seen → passed now; otherwise last seen now.
   */
  seeTriplet(triplet: string, now: number, rules: TripletRules): Promise<TripletSeen>;
  /** The stored record, or undefined when absent or expired at `now`. Does not change anything. */
  readTriplet(triplet: string, now: number): Promise<TripletRecord | undefined>;

  /** The client network's record, or undefined when absent or expired at `now`. */
  readClient(network: string, now: number): Promise<ClientRecord | undefined>;
  /** Creates or refreshes the client network's record (atomically counting a pass when asked). */
  updateClient(network: string, now: number, update: ClientUpdate): Promise<void>;

  /**
   * Deletes entries expired at `now`, at most `limit` per kind. Cheap, and safe
   * when several instances sweep at once (they just find less to delete).
   */
  sweep(now: number, limit: number): Promise<SweepResult>;

  /** Stops the periodic sweep and releases the pool (the file store flushes first). */
  close(): Promise<void>;
}
