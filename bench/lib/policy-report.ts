// Tables and the verdict for bench/policy.ts.
import type { DnsStats, PolicyRunResult, ReplyClass } from './policy-types.ts';
import { PEERS, TARGET_INFO, type TargetName } from './policy-peers.ts';

export interface PolicyRow {
  readonly target: TargetName;
  readonly label: string;
  readonly concurrency: number;
  readonly result: PolicyRunResult;
  /** Test DNS queries during the measured window, and during start-up + warm-up. */
  readonly dnsMeasured: DnsStats;
  readonly dnsWarmup: DnsStats;
  /** Throughput of every kept run when repeated (the row is the median run). */
  readonly repeats?: readonly number[];
}

export const TARGET_GOALS = {
  vsFastestPeer: 5,
  vsCeiling: 0.5,
  p99Us: 5000,
  p99Concurrency: 50,
} as const;

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (us: number) => (us >= 100_000 ? int(us / 1000) : us >= 10_000 ? (us / 1000).toFixed(1) : (us / 1000).toFixed(2));
const cpu = (us: number | undefined) => (us === undefined ? '—' : us >= 100 ? int(us) : us.toFixed(1));
const ratio = (x: number | undefined) => (x === undefined ? '—' : x >= 10 ? `${x.toFixed(0)}x` : `${x.toFixed(2)}x`);
const REPLY_COLUMNS: readonly ReplyClass[] = ['DUNNO', 'PREPEND', 'REJECT', 'DEFER'];

function table(head: string[], body: string[][], leftCols = 1): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < leftCols ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** The fastest peer at concurrency c (peers only: not mailwarden, not the ceiling). */
export function fastestPeer(rows: readonly PolicyRow[], c: number): PolicyRow | undefined {
  return rows.filter((r) => r.concurrency === c && PEERS.includes(r.target)).sort((a, b) => b.result.requestsPerSecond - a.result.requestsPerSecond)[0];
}

function ceiling(rows: readonly PolicyRow[], c: number): PolicyRow | undefined {
  return rows.find((r) => r.concurrency === c && r.target === 'trivial');
}

export function formatTables(rows: readonly PolicyRow[]): string {
  const out: string[] = [];
  const cs = [...new Set(rows.map((r) => r.concurrency))].sort((a, b) => a - b);
  for (const c of cs) {
    const peer = fastestPeer(rows, c);
    const ceil = ceiling(rows, c);
    const here = rows.filter((r) => r.concurrency === c);
    out.push(`C=${c} (persistent connections, one request in flight each)`);
    out.push(table(
      ['target', 'req/s', 'p50 ms', 'p99 ms', 'srv CPU µs/req', 'DNS q/req', ...REPLY_COLUMNS, 'other', 'vs fastest peer', 'vs ceiling', 'other/steal'],
      here.map((r) => {
        const x = r.result;
        const other = x.replies.OK + x.replies.WARN + x.replies.other;
        return [
          r.label,
          int(x.requestsPerSecond),
          ms(x.latencyUs.p50),
          ms(x.latencyUs.p99),
          cpu(x.cpuUsPerRequest['server']),
          x.requests ? (r.dnsMeasured.total / x.requests).toFixed(2) : '—',
          ...REPLY_COLUMNS.map((k) => pctOf(x.replies[k], x.requests)),
          pctOf(other, x.requests),
          peer && r !== peer ? ratio(x.requestsPerSecond / peer.result.requestsPerSecond) : r === peer ? '(fastest)' : '—',
          ceil && r !== ceil ? ratio(x.requestsPerSecond / ceil.result.requestsPerSecond) : '—',
          `${(x.otherCpuShare * 100).toFixed(0)}%/${(x.stealShare * 100).toFixed(0)}%`,
        ];
      }),
    ));
    out.push('');
  }
  return out.join('\n');
}

function pctOf(n: number, total: number): string {
  if (!total) return '—';
  const p = (n / total) * 100;
  return n === 0 ? '0' : p < 0.1 ? '<0.1%' : `${p.toFixed(p < 10 ? 1 : 0)}%`;
}

/** DNS work per target: what reached the test DNS server, per measured request and by kind. */
export function formatDnsTable(rows: readonly PolicyRow[]): string {
  return table(
    ['target', 'conc', 'measured: q/req', 'SPF TXT', 'DNSBL', 'PTR', 'A/AAAA/MX', 'queries', 'warm-up queries', 'DNS srv CPU µs/req'],
    rows.map((r) => {
      const m = r.dnsMeasured;
      const n = r.result.requests || 1;
      return [
        r.label,
        String(r.concurrency),
        (m.total / n).toFixed(2),
        (m.byKind.spf / n).toFixed(2),
        (m.byKind.dnsbl / n).toFixed(2),
        (m.byKind.ptr / n).toFixed(2),
        (m.byKind.other / n).toFixed(2),
        int(m.total),
        int(r.dnsWarmup.total),
        cpu(r.result.cpuUsPerRequest['dns']),
      ];
    }),
  );
}

/** Start-up and client-side facts per row. */
export function formatDetails(rows: readonly PolicyRow[]): string {
  return table(
    ['target', 'conc', 'requests', 'p99.9 ms', 'max ms', 'first reply p50/max ms', 'processes', 'client CPU µs/req', 'warm-up s', 'runs (req/s)'],
    rows.map((r) => {
      const x = r.result;
      return [
        r.label,
        String(r.concurrency),
        int(x.requests),
        ms(x.latencyUs.p999),
        ms(x.latencyUs.max),
        `${x.firstReplyMs.p50.toFixed(1)} / ${x.firstReplyMs.max.toFixed(1)}`,
        String(x.processes['server'] ?? '—'),
        cpu(x.clientCpuUsPerRequest),
        `${x.warmupSeconds.toFixed(1)}${x.warmupCut ? ' (cut)' : ''}`,
        r.repeats ? r.repeats.map(int).join(', ') : '',
      ];
    }),
  );
}

/** The most common reply shapes per target (highest concurrency), so one can see the targets did comparable work. */
export function formatShapes(rows: readonly PolicyRow[]): string {
  const out: string[] = [];
  const byTarget = new Map<TargetName, PolicyRow>();
  for (const r of rows) {
    const prev = byTarget.get(r.target);
    if (!prev || r.concurrency > prev.concurrency) byTarget.set(r.target, r);
  }
  for (const r of byTarget.values()) {
    const total = r.result.requests || 1;
    const shapes = Object.entries(r.result.actions).slice(0, 9).map(([k, n]) => `${k} ${((n / total) * 100).toFixed(1)}%`);
    out.push(`  ${r.label} (C=${r.concurrency}): ${shapes.join('; ')}`);
  }
  return out.join('\n');
}

export interface PolicyVerdict {
  readonly concurrency: number;
  readonly requestsPerSecond: number;
  readonly fastestPeer?: { readonly target: TargetName; readonly requestsPerSecond: number };
  readonly vsFastestPeer?: number;
  readonly vsCeiling?: number;
  readonly p99Us: number;
  readonly checks: { readonly vsFastestPeer?: boolean; readonly vsCeiling?: boolean; readonly p99?: boolean };
  readonly met?: boolean;
}

export function verdicts(rows: readonly PolicyRow[]): PolicyVerdict[] {
  const out: PolicyVerdict[] = [];
  for (const r of rows.filter((x) => x.target === 'mailwarden')) {
    const c = r.concurrency;
    const peer = fastestPeer(rows, c);
    const ceil = ceiling(rows, c);
    const rps = r.result.requestsPerSecond;
    const vsPeer = peer ? rps / peer.result.requestsPerSecond : undefined;
    const vsCeil = ceil ? rps / ceil.result.requestsPerSecond : undefined;
    const checks = {
      ...(vsPeer !== undefined ? { vsFastestPeer: vsPeer >= TARGET_GOALS.vsFastestPeer } : {}),
      ...(vsCeil !== undefined ? { vsCeiling: vsCeil >= TARGET_GOALS.vsCeiling } : {}),
      ...(c === TARGET_GOALS.p99Concurrency ? { p99: r.result.latencyUs.p99 < TARGET_GOALS.p99Us } : {}),
    };
    const values = Object.values(checks);
    const complete = vsPeer !== undefined && vsCeil !== undefined;
    out.push({
      concurrency: c,
      requestsPerSecond: rps,
      ...(peer ? { fastestPeer: { target: peer.target, requestsPerSecond: peer.result.requestsPerSecond } } : {}),
      ...(vsPeer !== undefined ? { vsFastestPeer: vsPeer } : {}),
      ...(vsCeil !== undefined ? { vsCeiling: vsCeil } : {}),
      p99Us: r.result.latencyUs.p99,
      checks,
      ...(values.includes(false) ? { met: false } : complete ? { met: true } : {}),
    });
  }
  return out;
}

export function formatVerdicts(list: readonly PolicyVerdict[]): string {
  if (list.length === 0) return 'No verdict: mailwarden was not measured.';
  const mark = (b: boolean | undefined) => (b === undefined ? '(n/a)' : b ? 'ok' : 'MISSED');
  const lines = [`Targets (SPF + DNSBL on, cached DNS): >= ${TARGET_GOALS.vsFastestPeer}x the fastest peer's throughput, within 2x of the ceiling (>= ${TARGET_GOALS.vsCeiling}x), `
    + `p99 < ${TARGET_GOALS.p99Us / 1000} ms at C=${TARGET_GOALS.p99Concurrency}`];
  for (const v of list) {
    lines.push(`  C=${String(v.concurrency).padEnd(3)} mailwarden ${int(v.requestsPerSecond).padStart(7)}/s: `
      + `${v.vsFastestPeer === undefined ? 'n/a' : ratio(v.vsFastestPeer)} fastest peer${v.fastestPeer ? ` (${TARGET_INFO[v.fastestPeer.target].label} ${int(v.fastestPeer.requestsPerSecond)}/s)` : ''} ${mark(v.checks.vsFastestPeer)}, `
      + `${v.vsCeiling === undefined ? 'n/a' : ratio(v.vsCeiling)} ceiling ${mark(v.checks.vsCeiling)}, `
      + `p99 ${ms(v.p99Us)} ms${v.checks.p99 === undefined ? '' : ` ${mark(v.checks.p99)}`}`
      + `  => ${v.met === undefined ? 'INCOMPLETE' : v.met ? 'MET' : 'NOT MET'}`);
  }
  return lines.join('\n');
}
