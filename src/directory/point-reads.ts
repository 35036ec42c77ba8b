// Primary-key reads of one table that arrive in the same turn of the event
// loop go to MariaDB as one `WHERE key IN (...)` statement. Under load many
// lookups miss the cache at once (Dovecot's auth workers, several smtpd
// processes); one statement for all of them costs one pooled connection, one
// deadline timer and one round trip instead of one each, and mysqld parses
// and plans once. A read while none of its table is in flight goes out at
// once, so a quiet server (one lookup at a time) never waits.
//
// The number of keys is rounded up to a few statement sizes (the last key
// repeated), so each connection prepares at most BUCKETS.length statements
// per table.

/** Statement sizes; a turn with more keys is split into several statements of at most the largest. */
export const MAX_KEYS_PER_STATEMENT = 64;
const BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, MAX_KEYS_PER_STATEMENT];

interface Waiter<V> {
  resolve(value: V | undefined): void;
  reject(err: unknown): void;
}

export class PointReads<V> {
  /** Reads the rows for `keys` (padded: duplicates may occur) and returns them by key; absent = no row. */
  readonly #fetch: (keys: string[]) => Promise<ReadonlyMap<string, V>>;
  #pending = new Map<string, Array<Waiter<V>>>();
  #scheduled = false;
  #inFlight = 0;
  /** Statements sent and keys read through them, for tests and benchmarks. */
  statements = 0;
  keys = 0;

  constructor(fetch: (keys: string[]) => Promise<ReadonlyMap<string, V>>) {
    this.#fetch = fetch;
  }

  get(key: string): Promise<V | undefined> {
    return new Promise<V | undefined>((resolve, reject) => {
      if (this.#inFlight === 0 && !this.#scheduled) {
        this.#send([key], new Map([[key, [{ resolve, reject }]]]));
        return;
      }
      const waiters = this.#pending.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else this.#pending.set(key, [{ resolve, reject }]);
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const pending = this.#pending;
    this.#pending = new Map();
    const keys = [...pending.keys()];
    for (let i = 0; i < keys.length; i += MAX_KEYS_PER_STATEMENT) {
      this.#send(keys.slice(i, i + MAX_KEYS_PER_STATEMENT), pending);
    }
  }

  #send(keys: string[], pending: Map<string, Array<Waiter<V>>>): void {
    const padded = padToBucket(keys);
    this.statements++;
    this.keys += keys.length;
    this.#inFlight++;
    this.#fetch(padded).then((rows) => {
      this.#inFlight--;
      for (const key of keys) for (const w of pending.get(key)!) w.resolve(rows.get(key));
    }, (err: unknown) => {
      this.#inFlight--;
      for (const key of keys) for (const w of pending.get(key)!) w.reject(err);
    });
  }
}

/** `keys` grown to the next statement size by repeating the last key. */
export function padToBucket(keys: string[]): string[] {
  const size = BUCKETS.find((b) => b >= keys.length) ?? keys.length;
  if (size === keys.length) return keys;
  const out = keys.slice();
  const last = keys[keys.length - 1]!;
  while (out.length < size) out.push(last);
  return out;
}

/** `?, ?, ?` for n placeholders. */
export function placeholders(n: number): string {
  return n === 1 ? '?' : `?${', ?'.repeat(n - 1)}`;
}
