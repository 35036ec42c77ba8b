// Messages between bench/milter.ts and its load generator (bench/lib/milter-loadgen.ts).
import type { LatencyStats } from './latency.ts';

/** One milter the load generator talks to; a chain lists several, called in order per message like Postfix does. */
export interface MilterHop {
  readonly name: string;
  /** Where the milter listens: a UNIX socket path, or host and port. */
  readonly endpoint: { readonly path: string } | { readonly host: string; readonly port: number };
}

export interface MilterRunParams {
  /** Milters called in sequence per message (opendkim then opendmarc), each on its own connection. */
  readonly chain: readonly MilterHop[];
  /** JSON file with BenchMessage[]. */
  readonly messages: string;
  readonly concurrency: number;
  /** Messages per milter connection (one SMTP session): ABORT between them, QUIT after the last. */
  readonly perSession: number;
  /** 'verify': an inbound SMTP client; 'sign': a submission client with {daemon_name}=ORIGINATING. */
  readonly phase: 'verify' | 'sign';
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Stop after this many measured messages even before durationMs (0 = no limit). */
  readonly maxMessages: number;
  /** Process trees whose CPU is measured (name -> root pid). */
  readonly cpuTrees: Readonly<Record<string, number>>;
  /** Processes whose VmRSS is sampled every 100 ms during the window (name -> pid; the whole tree is summed). */
  readonly rssTrees: Readonly<Record<string, number>>;
}

/** A message as the load generator sends it. */
export interface BenchMessage {
  readonly sender: string;
  readonly rcpt: string;
  /** Client IP (SPF) and HELO name. */
  readonly clientIp: string;
  readonly helo: string;
  /** The whole message, CRLF, base64 (header + empty line + body). */
  readonly raw: string;
  /** What the data generator expects: a DKIM result per signature, for the report. */
  readonly kind: string;
}

export interface MilterRunResult {
  readonly messages: number;
  readonly seconds: number;
  readonly messagesPerSecond: number;
  readonly bytesPerMessage: number;
  /** First command of the message (MAIL's macros) → final reply to EOM of the last hop, µs. */
  readonly latencyUs: LatencyStats;
  /** Final EOM replies (last hop) by type: continue, accept, reject, tempfail, ... */
  readonly finals: Readonly<Record<string, number>>;
  /** Header modifications seen in EOM replies, by `hop:Header-Name`, measured window. */
  readonly headers: Readonly<Record<string, number>>;
  /** Messages whose replies (all hops) carried an A-R with dkim=pass / a DKIM-Signature / dmarc=pass / spf=pass. */
  readonly evidence: { readonly dkimPass: number; readonly dkimSigned: number; readonly dmarcPass: number; readonly spfPass: number; readonly dmarcAny: number };
  /** One example of each added header value per hop (first seen). */
  readonly samples: Readonly<Record<string, string>>;
  readonly cpuUsPerMessage: Readonly<Record<string, number>>;
  readonly clientCpuUsPerMessage: number;
  /** RSS of each tree: at the start and end of the window, and the highest 100 ms sample, KiB. */
  readonly rssKiB: Readonly<Record<string, { readonly start: number; readonly end: number; readonly peak: number }>>;
  readonly otherCpuShare: number;
  readonly stealShare: number;
  readonly warmupMessages: number;
}

export type ToMilterLoadgen = { readonly type: 'run'; readonly id: number; readonly params: MilterRunParams };
export type FromMilterLoadgen =
  | { readonly type: 'result'; readonly id: number; readonly result: MilterRunResult }
  | { readonly type: 'phase'; readonly id: number; readonly phase: 'measure' | 'stopped' }
  | { readonly type: 'error'; readonly id: number; readonly message: string };
