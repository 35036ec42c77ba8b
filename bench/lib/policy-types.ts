// Messages between bench/policy.ts and its load generator and DNS processes.
import type { LatencyStats } from './latency.ts';

/** One policy request of the stream; the instance value is filled in per connection at send time. */
export interface StreamRequest {
  /** Message number in the stream: consecutive requests with the same number are RCPTs of one message. */
  readonly m: number;
  /** Wire text up to and including `instance=`. */
  readonly head: string;
  /** Wire text after the instance value, through the empty line that ends the request. */
  readonly tail: string;
}

export interface PolicyRunParams {
  readonly host: string;
  readonly port: number;
  /** JSON file with StreamRequest[]. */
  readonly requests: string;
  readonly concurrency: number;
  /**
   * Unmeasured traffic before the measured window, on the same connections. It
   * starts once every connection has its first reply (spawned peers start a
   * process per connection) and lasts at least warmupMs and, when
   * warmupPass, until every connection has sent its share of one full pass
   * over the stream (so caches have seen every request), but at most
   * maxWarmupMs.
   */
  readonly warmupMs: number;
  readonly warmupPass: boolean;
  readonly maxWarmupMs: number;
  readonly durationMs: number;
  /** Process trees whose CPU (utime+stime+cutime+cstime of the root and all descendants) is measured. */
  readonly cpuTrees: Readonly<Record<string, number>>;
  /** Single processes whose CPU is measured (the DNS server). */
  readonly cpuPids: Readonly<Record<string, number>>;
  /** Distinguishes instances across runs (Postfix: the smtpd pid). */
  readonly runTag: number;
}

export type ReplyClass = 'DUNNO' | 'PREPEND' | 'REJECT' | 'DEFER' | 'OK' | 'WARN' | 'other';

export interface PolicyRunResult {
  readonly requests: number;
  readonly seconds: number;
  readonly requestsPerSecond: number;
  /** send → complete reply, µs. */
  readonly latencyUs: LatencyStats;
  /** Replies by class (measured window). */
  readonly replies: Readonly<Record<ReplyClass, number>>;
  /** Replies by action text shape (`PREPEND Received-SPF: pass`, `REJECT 5.1.1`...), measured window, top entries. */
  readonly actions: Readonly<Record<string, number>>;
  /** CPU µs per measured request, per name from cpuTrees and cpuPids. */
  readonly cpuUsPerRequest: Readonly<Record<string, number>>;
  readonly clientCpuUsPerRequest: number;
  readonly otherCpuShare: number;
  readonly stealShare: number;
  /** Connect → first reply per connection, ms (includes a spawned peer's start-up). */
  readonly firstReplyMs: { readonly p50: number; readonly max: number };
  readonly warmupSeconds: number;
  readonly warmupRequests: number;
  /** The warm-up hit maxWarmupMs before a full pass. */
  readonly warmupCut: boolean;
  /** Processes in each measured tree at the end of the window. */
  readonly processes: Readonly<Record<string, number>>;
}

export type ToLoadgen = { readonly type: 'run'; readonly id: number; readonly params: PolicyRunParams };
export type FromLoadgen =
  | { readonly type: 'result'; readonly id: number; readonly result: PolicyRunResult }
  /** The measured window starts / ends (the benchmark snapshots the DNS query counts then). */
  | { readonly type: 'phase'; readonly id: number; readonly phase: 'measure' | 'stopped' }
  | { readonly type: 'error'; readonly id: number; readonly message: string };

export interface DnsStats {
  readonly total: number;
  readonly byType: Readonly<Record<string, number>>;
  /** spf = TXT (and type 99), dnsbl = names under a DNSBL zone, ptr = PTR, other = A/AAAA/MX outside the DNSBL zones. */
  readonly byKind: { readonly spf: number; readonly dnsbl: number; readonly ptr: number; readonly other: number };
  readonly outcomes: Readonly<Record<string, number>>;
  readonly problems: readonly string[];
}

export type ToDns =
  | { readonly type: 'start'; readonly id: number; readonly zones: unknown; readonly ttl: number; readonly host: string; readonly dnsblZones: readonly string[] }
  | { readonly type: 'stats'; readonly id: number };
export type FromDns =
  | { readonly type: 'ready'; readonly id: number; readonly address: string }
  | { readonly type: 'stats'; readonly id: number; readonly stats: DnsStats }
  | { readonly type: 'error'; readonly id: number; readonly message: string };
