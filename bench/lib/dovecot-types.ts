// Messages between bench/dovecot.ts and its load generator process.
import type { LatencyStats } from './latency.ts';

/**
 * userdb: `USER` requests over Dovecot's auth-master socket (what LMTP and
 * doveadm do). login: `AUTH PLAIN` over the auth-client socket (what Postfix
 * SMTP AUTH and the login processes do; the passdb only, no userdb lookup).
 */
export type OpKind = 'userdb' | 'login';

export interface DovecotRunParams {
  readonly kind: OpKind;
  /** auth-master (userdb) or auth-client (login) UNIX socket. */
  readonly socket: string;
  /** File with one item per line: `user` (userdb) or `user<TAB>password` (login). */
  readonly items: string;
  readonly concurrency: number;
  /**
   * cycle: every connection loops over the whole list from its own offset.
   * once: the list is split into one contiguous slice per connection, each
   * item is sent exactly once (first logins); the run ends early when every
   * slice is done.
   */
  readonly mode: 'cycle' | 'once';
  /** Unmeasured traffic on the same connections before the measured window (cycle mode). */
  readonly warmupMs: number;
  readonly durationMs: number;
  /** The `service=` of each request (lmtp for userdb, imap/smtp for logins). */
  readonly service: string;
  /** Dovecot's master process: its whole tree is measured, the auth process and auth-workers apart. */
  readonly dovecotMaster: number;
  /** Single processes whose utime+stime is measured (mailwarden, mysqld, a trivial dict server). */
  readonly cpuPids: Readonly<Record<string, number>>;
  /** once mode: report the indices of the items that got OK (the users whose login is now in the verify cache). */
  readonly collectOk: boolean;
}

export interface DovecotRunResult {
  readonly ops: number;
  readonly seconds: number;
  readonly opsPerSecond: number;
  /** send → reply line, µs. */
  readonly latencyUs: LatencyStats;
  /** USER / OK replies. */
  readonly ok: number;
  /** NOTFOUND (userdb) replies. */
  readonly notFound: number;
  /** FAIL replies (temporary failures, or a rejected login). */
  readonly fail: number;
  /** First FAIL line seen, for the error message. */
  readonly firstFail?: string;
  /** CPU µs per measured op: names from cpuPids, plus dovecot (whole tree), auth (the auth process), workers (auth-workers incl. their children), authChildren (checkpassword runs). */
  readonly cpuUsPerOp: Readonly<Record<string, number>>;
  /** Share of one core the auth process used during the window (1 = saturated). */
  readonly authCoreShare: number;
  /** auth-worker processes seen at the end of the window. */
  readonly workers: number;
  readonly clientCpuUsPerOp: number;
  /** CPU used by other processes (system busy minus everything measured), share of all cores. */
  readonly otherCpuShare: number;
  readonly stealShare: number;
  /** A once run that used up its list before the time was up. */
  readonly exhausted: boolean;
  /** A cycle run in which some connection got past its share of the list: items were sent more than once. */
  readonly wrapped: boolean;
  readonly okIndices?: readonly number[];
}

export type ToLoadgen = { readonly type: 'run'; readonly id: number; readonly params: DovecotRunParams };
export type FromLoadgen =
  | { readonly type: 'result'; readonly id: number; readonly result: DovecotRunResult }
  | { readonly type: 'error'; readonly id: number; readonly message: string };
