// The result table and the verdict against the issue's targets.

export type Group = 'trivial' | 'yaml' | 'mysql-cold' | 'mysql-warm' | 'postfix-mysql' | 'postfix-lmdb';

export interface Row {
  readonly group: Group;
  readonly configuration: string;
  /** Connections (socketmap) or parallel postmap processes. */
  readonly concurrency: number;
  readonly lookupsPerSecond: number;
  readonly requests: number;
  readonly seconds: number;
  readonly p50Us?: number;
  readonly p99Us?: number;
  readonly p999Us?: number;
  readonly maxUs?: number;
  /** mailwarden / the trivial server; for postmap rows: postmap itself (the table runs in-process). */
  readonly serverCpuUs?: number;
  readonly mysqldCpuUs?: number;
  readonly clientCpuUs?: number;
  /** Share of lookups answered with a value. */
  readonly found: number;
  /** TEMP/PERM/garbled replies. */
  readonly errors: number;
  /** CPU used by other processes on the machine during the run, share of all cores. */
  readonly otherCpuShare: number;
  readonly stealShare: number;
  /** Throughputs of every run when repeated (the row shows the median run). */
  readonly repeats?: readonly number[];
  /** A cold pass that used up its key list before the time was up. */
  readonly exhausted?: boolean;
  readonly note?: string;
}

export const TARGETS = {
  concurrency: 10,
  vsPostfixMysql: 2,
  vsTrivial: 2 / 3,
  p99Us: 1000,
} as const;

export interface Verdict {
  readonly configuration: string;
  readonly lookupsPerSecond: number;
  readonly vsPostfixMysql: number | undefined;
  readonly vsTrivial: number | undefined;
  readonly p99Us: number | undefined;
  readonly checks: { readonly vsPostfixMysql: boolean | undefined; readonly vsTrivial: boolean | undefined; readonly p99: boolean | undefined };
  readonly met: boolean | undefined;
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const us = (n: number | undefined) => (n === undefined ? '—' : n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1));

export function formatTable(rows: readonly Row[]): string {
  const head = ['configuration', 'conc', 'lookups/s', 'p50 µs', 'p99 µs', 'server CPU µs/lk', 'mysqld CPU µs/lk', 'client CPU µs/lk', 'found', 'errors', 'other/steal'];
  const body = rows.map((r) => [
    r.configuration,
    String(r.concurrency),
    int(r.lookupsPerSecond),
    us(r.p50Us),
    us(r.p99Us),
    us(r.serverCpuUs),
    us(r.mysqldCpuUs),
    us(r.clientCpuUs),
    `${(r.found * 100).toFixed(1)}%`,
    String(r.errors),
    `${(r.otherCpuShare * 100).toFixed(0)}%/${(r.stealShare * 100).toFixed(0)}%`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  ')];
  let last: Group | undefined;
  for (let i = 0; i < rows.length; i++) {
    if (last !== undefined && rows[i]!.group !== last) out.push('');
    last = rows[i]!.group;
    out.push(line(body[i]!));
  }
  return out.join('\n');
}

export function verdicts(rows: readonly Row[]): Verdict[] {
  const at = (g: Group) => rows.find((r) => r.group === g && r.concurrency === TARGETS.concurrency);
  const pm = at('postfix-mysql');
  const trivial = at('trivial');
  const out: Verdict[] = [];
  for (const g of ['yaml', 'mysql-cold', 'mysql-warm'] as const) {
    const r = at(g);
    if (!r) continue;
    const vsPm = pm ? r.lookupsPerSecond / pm.lookupsPerSecond : undefined;
    const vsTr = trivial ? r.lookupsPerSecond / trivial.lookupsPerSecond : undefined;
    const checks = {
      vsPostfixMysql: vsPm === undefined ? undefined : vsPm >= TARGETS.vsPostfixMysql,
      vsTrivial: vsTr === undefined ? undefined : vsTr >= TARGETS.vsTrivial,
      p99: r.p99Us === undefined ? undefined : r.p99Us < TARGETS.p99Us,
    };
    const values = Object.values(checks);
    out.push({
      configuration: r.configuration,
      lookupsPerSecond: r.lookupsPerSecond,
      vsPostfixMysql: vsPm,
      vsTrivial: vsTr,
      p99Us: r.p99Us,
      checks,
      met: values.includes(false) ? false : values.includes(undefined) ? undefined : true,
    });
  }
  return out;
}

export function formatVerdicts(list: readonly Verdict[]): string {
  if (list.length === 0) return `No verdict: run with concurrency ${TARGETS.concurrency} and at least one mailwarden backend.`;
  const mark = (b: boolean | undefined) => (b === undefined ? '(n/a)' : b ? 'ok' : 'MISSED');
  const lines = [`Targets at concurrency ${TARGETS.concurrency}: >= ${TARGETS.vsPostfixMysql}x Postfix mysql: table, >= 2/3 of the trivial server, p99 < ${TARGETS.p99Us} µs`];
  for (const v of list) {
    lines.push(`  ${v.configuration.padEnd(28)} ${int(v.lookupsPerSecond).padStart(8)}/s  `
      + `${v.vsPostfixMysql === undefined ? '   n/a' : `${v.vsPostfixMysql.toFixed(2)}x`} mysql: ${mark(v.checks.vsPostfixMysql)}, `
      + `${v.vsTrivial === undefined ? 'n/a' : `${v.vsTrivial.toFixed(2)}x`} trivial ${mark(v.checks.vsTrivial)}, `
      + `p99 ${us(v.p99Us)} µs ${mark(v.checks.p99)}  => ${v.met === undefined ? 'INCOMPLETE' : v.met ? 'MET' : 'NOT MET'}`);
  }
  return lines.join('\n');
}
