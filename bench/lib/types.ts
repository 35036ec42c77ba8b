// Messages between bench/socketmap.ts and its load generator process.
import type { LatencyStats } from './latency.ts';

export interface RunParams {
  /** UNIX socket of the socketmap server. */
  readonly socket: string;
  /** File with one request payload (`map key`) per line. */
  readonly requests: string;
  readonly concurrency: number;
  /**
   * cycle: every connection loops over the whole list from its own offset.
   * once: the list is split into one contiguous slice per connection, each
   * request is sent exactly once (a cold-cache pass); the run ends early when
   * every slice is done.
   */
  readonly mode: 'cycle' | 'once';
  /** Unmeasured traffic on the same connections before measuring (cycle mode). */
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Stop measuring after this many replies (0 = no limit). */
  readonly maxRequests: number;
  /** Processes whose utime+stime is read before and after the measured window. */
  readonly cpuPids: Readonly<Record<string, number>>;
}

export interface RunResult {
  readonly requests: number;
  readonly seconds: number;
  readonly lookupsPerSecond: number;
  /** Latency (send → complete reply) in µs. */
  readonly latencyUs: LatencyStats;
  readonly statuses: { readonly OK: number; readonly NOTFOUND: number; readonly TEMP: number; readonly PERM: number; readonly other: number };
  /** CPU µs per measured lookup, per pid name from cpuPids. */
  readonly cpuUsPerLookup: Readonly<Record<string, number>>;
  /** The load generator's own CPU µs per lookup. */
  readonly clientCpuUsPerLookup: number;
  /**
   * CPU used by everything else on the machine during the window (system-wide busy time from
   * /proc/stat minus the measured processes and the load generator), as a share of all cores.
   * Anything above a few percent means the numbers were disturbed.
   */
  readonly otherCpuShare: number;
  /** Hypervisor steal time as a share of all cores. */
  readonly stealShare: number;
  /** True when a `once` run used up its list before the time was up. */
  readonly exhausted: boolean;
}

export type ToLoadgen = { readonly type: 'run'; readonly id: number; readonly params: RunParams };
export type FromLoadgen =
  | { readonly type: 'result'; readonly id: number; readonly result: RunResult }
  | { readonly type: 'error'; readonly id: number; readonly message: string };
