// Tables and the verdict against issue 3's targets for bench/dovecot.ts.
import type { TargetName } from './dovecot-targets.ts';

export type Phase = 'first lookup' | 'repeated lookup' | 'first login' | 'repeated login';

const isLookup = (p: Phase) => p === 'first lookup' || p === 'repeated lookup';

export interface DovecotRow {
  readonly target: TargetName;
  readonly label: string;
  readonly phase: Phase;
  readonly concurrency: number;
  readonly opsPerSecond: number;
  readonly ops: number;
  readonly seconds: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
  /** CPU µs per op: server (mailwarden or the trivial dict server), mysqld, dovecot (whole tree), auth, workers, authChildren. */
  readonly cpuUs: Readonly<Record<string, number>>;
  readonly authCoreShare: number;
  readonly workers: number;
  readonly clientCpuUs: number;
  readonly ok: number;
  readonly notFound: number;
  readonly fail: number;
  readonly firstFail?: string;
  readonly otherCpuShare: number;
  readonly stealShare: number;
  readonly repeats?: readonly number[];
  /** A first-login run that used up its users before the time was up. */
  readonly exhausted?: boolean;
  /** A first-lookup run in which some mailboxes were looked up twice (a connection got through its share of the list). */
  readonly wrapped?: boolean;
  /** First logins: one argon2id verification's CPU ms, measured in the benchmark process right before and after the run (mean). */
  readonly argon2CpuMs?: number;
}

export interface Argon2Cost {
  readonly params: string;
  readonly cpuMsPerVerify: number;
  readonly wallMsPerVerify: number;
}

export const GOALS = {
  /** Lookups: at least as fast as Dovecot's sql userdb, within 10 % of the trivial dict server. */
  vsSql: 1,
  vsTrivial: 0.9,
  /** First logins: what mailwarden spends beyond one argon2id verification, as a share of it. */
  firstLoginOverhead: 0.1,
  /** Repeated logins at least 50x faster than a fresh verification. */
  repeatSpeedup: 50,
} as const;

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const num = (n: number | undefined, unit: 'us' | 'ms') => {
  if (n === undefined) return '—';
  const v = unit === 'ms' ? n / 1000 : n;
  return v >= 100 ? int(v) : v >= 10 ? v.toFixed(1) : v.toFixed(unit === 'ms' ? 2 : 1);
};
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;

function layout(head: string[], body: string[][], groups: string[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i <= 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (let i = 0; i < body.length; i++) {
    if (i > 0 && groups[i] !== groups[i - 1]) out.push('');
    out.push(line(body[i]!));
  }
  return out.join('\n');
}

/** userdb lookups: µs per lookup. */
export function formatLookups(rows: readonly DovecotRow[]): string {
  const list = rows.filter((r) => isLookup(r.phase));
  if (!list.length) return '(no userdb runs)';
  const head = ['target', 'lookups', 'C', 'lookups/s', 'p50 µs', 'p99 µs', 'server µs', 'mysqld µs', 'auth µs', 'workers µs', 'dovecot µs', 'auth %core', 'workers', 'client µs', 'found', 'fail', 'other/steal'];
  const body = list.map((r) => [
    r.label, r.phase === 'first lookup' ? `first${r.wrapped ? '*' : ''}` : 'repeated', String(r.concurrency), int(r.opsPerSecond), num(r.p50Us, 'us'), num(r.p99Us, 'us'),
    num(r.cpuUs['server'], 'us'), num(r.cpuUs['mysqld'], 'us'), num(r.cpuUs['auth'], 'us'), num(r.cpuUs['workers'], 'us'), num(r.cpuUs['dovecot'], 'us'),
    pct(r.authCoreShare), String(r.workers), num(r.clientCpuUs, 'us'),
    `${r.ops ? ((r.ok / r.ops) * 100).toFixed(1) : '0'}%`, String(r.fail), `${pct(r.otherCpuShare)}/${pct(r.stealShare)}`,
  ]);
  return layout(head, body, list.map((r) => r.target));
}

/** Logins: ms per login. */
export function formatLogins(rows: readonly DovecotRow[]): string {
  const list = rows.filter((r) => !isLookup(r.phase));
  if (!list.length) return '(no login runs)';
  const head = ['target', 'logins', 'C', 'logins/s', 'p50 ms', 'p99 ms', 'mailwarden ms', 'mysqld ms', 'auth ms', 'workers ms', 'checkpw ms', 'dovecot ms', 'auth %core', 'ok', 'fail', 'other/steal'];
  const body = list.map((r) => [
    r.label, r.phase === 'first login' ? `first${r.exhausted ? '*' : ''}` : 'repeated', String(r.concurrency), int(r.opsPerSecond),
    num(r.p50Us, 'ms'), num(r.p99Us, 'ms'),
    num(r.cpuUs['server'], 'ms'), num(r.cpuUs['mysqld'], 'ms'), num(r.cpuUs['auth'], 'ms'), num(r.cpuUs['workers'], 'ms'),
    r.target === 'checkpassword' ? num(r.cpuUs['authChildren'], 'ms') : '—', num(r.cpuUs['dovecot'], 'ms'),
    pct(r.authCoreShare), int(r.ok), String(r.fail), `${pct(r.otherCpuShare)}/${pct(r.stealShare)}`,
  ]);
  return layout(head, body, list.map((r) => r.target));
}

export interface Verdict {
  /** The path the check is about (mailwarden's dict, lua, checkpassword; sql for comparison). */
  readonly target: TargetName;
  readonly check: 'first lookups' | 'repeated lookups' | 'first logins' | 'repeated logins';
  readonly line: string;
  /** undefined: not measured, or for comparison only (Dovecot's own sql). */
  readonly met: boolean | undefined;
}

const MAILWARDEN_PATHS: readonly TargetName[] = ['dict', 'lua', 'lua-libhttp', 'checkpassword'];
/** Each Lua transport's ceiling: the same script against the trivial HTTP server. */
const LUA_CEILING: Partial<Record<TargetName, TargetName>> = { lua: 'trivial-http', 'lua-libhttp': 'trivial-http-libhttp' };

export function verdicts(rows: readonly DovecotRow[], lookupC: number): Verdict[] {
  const out: Verdict[] = [];
  const find = (t: TargetName, phase: Phase, c: number) => rows.find((r) => r.target === t && r.phase === phase && r.concurrency === c);
  const mark = (ok: boolean) => (ok ? 'ok' : 'MISSED');
  const label = (t: TargetName) => (rows.find((r) => r.target === t)?.label ?? t).padEnd(29);

  // Lookups at the reference concurrency, each kind against the same kind of run of sql and the trivial servers
  // (which cache nothing: their first and repeated lookups cost the same).
  for (const phase of ['first lookup', 'repeated lookup'] as const) {
    const sql = find('sql', phase, lookupC);
    const trivial = find('trivial-dict', phase, lookupC);
    const kind = phase === 'first lookup' ? 'first lookups   ' : 'repeated lookups';
    for (const t of ['dict', 'lua', 'lua-libhttp'] as const) {
      const r = find(t, phase, lookupC);
      if (!r) continue;
      const parts: string[] = [];
      let missed = false;
      let missing = false;
      for (const [name, ref, goal] of [['Dovecot sql', sql, GOALS.vsSql], ['trivial dict', trivial, GOALS.vsTrivial]] as const) {
        if (!ref) {
          missing = true;
          parts.push(`${name} n/a`);
          continue;
        }
        const x = r.opsPerSecond / ref.opsPerSecond;
        if (x < goal) missed = true;
        parts.push(`${x.toFixed(2)}x ${name} (${int(ref.opsPerSecond)}/s) ${mark(x >= goal)}`);
      }
      const met = missed ? false : missing ? undefined : true;
      const ceiling = LUA_CEILING[t] && find(LUA_CEILING[t], phase, lookupC);
      if (ceiling) parts.push(`[${(r.opsPerSecond / ceiling.opsPerSecond).toFixed(2)}x the same transport to a trivial HTTP server, ${int(ceiling.opsPerSecond)}/s]`);
      out.push({ target: t, check: `${phase}s` as Verdict['check'], met, line: `${kind} C=${lookupC} ${label(t)} ${int(r.opsPerSecond).padStart(7)}/s: ${parts.join(', ')}` });
    }
  }

  // First logins, one at a time (C=1, like the calibration): the whole path's CPU against one argon2id verification.
  for (const t of ['lua', 'lua-libhttp', 'checkpassword', 'dict', 'sql'] as const) {
    const r = find(t, 'first login', 1) ?? rows.find((x) => x.target === t && x.phase === 'first login');
    if (!r || r.argon2CpuMs === undefined) continue;
    const whole = ((r.cpuUs['server'] ?? 0) + (r.cpuUs['dovecot'] ?? 0) + (r.cpuUs['mysqld'] ?? 0)) / 1000;
    const ratio = whole / r.argon2CpuMs;
    const ok = ratio <= 1 + GOALS.firstLoginOverhead;
    const who = t === 'lua' || t === 'lua-libhttp' || t === 'checkpassword' ? `mailwarden ${num(r.cpuUs['server'], 'ms')}` : `Dovecot's auth-workers ${num(r.cpuUs['workers'], 'ms')}`;
    const extra = t === 'checkpassword' ? `, the checkpassword process ${num(r.cpuUs['authChildren'], 'ms')}` : '';
    out.push({
      target: t, check: 'first logins', met: t === 'sql' ? undefined : ok,
      line: `first logins C=${r.concurrency} ${label(t)} ${whole.toFixed(1)} ms CPU per login (${who}${extra}) = ${ratio.toFixed(2)}x one argon2id verify (${r.argon2CpuMs.toFixed(1)} ms) ${mark(ok)}`,
    });
  }

  // Repeated vs first logins.
  for (const t of ['lua', 'lua-libhttp', 'checkpassword', 'dict', 'sql'] as const) {
    const cs = [...new Set(rows.filter((r) => r.target === t && r.phase === 'repeated login').map((r) => r.concurrency))].sort((a, b) => a - b);
    const parts: string[] = [];
    let met: boolean | undefined;
    for (const c of cs) {
      const first = find(t, 'first login', c);
      const again = find(t, 'repeated login', c);
      if (!first || !again) continue;
      // C=1: what one client sees (latency); higher C: capacity (throughput).
      const speedup = c === 1 ? first.p50Us / again.p50Us : again.opsPerSecond / first.opsPerSecond;
      const ok = speedup >= GOALS.repeatSpeedup;
      met = (met ?? true) && ok;
      parts.push(c === 1
        ? `C=1 ${speedup.toFixed(1)}x (p50 ${num(first.p50Us, 'ms')} -> ${num(again.p50Us, 'ms')} ms) ${mark(ok)}`
        : `C=${c} ${speedup.toFixed(1)}x (${int(first.opsPerSecond)} -> ${int(again.opsPerSecond)} logins/s) ${mark(ok)}`);
    }
    if (!parts.length) continue;
    const note = t === 'dict' || t === 'sql' ? ' (Dovecot verifies every time: nothing to cache)' : '';
    out.push({ target: t, check: 'repeated logins', met: t === 'sql' ? undefined : met, line: `repeated logins ${label(t)} ${parts.join(', ')}${note}` });
  }
  return out;
}

export function formatVerdicts(list: readonly Verdict[], params: string, lookupC: number): string {
  const lines = [
    `Targets (issue 3): lookups at C=${lookupC} >= ${GOALS.vsSql}x Dovecot sql and >= ${GOALS.vsTrivial}x the trivial dict server (first and repeated lookups each);`,
    `first logins cost only argon2id ${params} (whole path <= ${1 + GOALS.firstLoginOverhead}x one verify, measured next to the logins);`,
    `repeated logins >= ${GOALS.repeatSpeedup}x faster than first ones (C=1: p50 latency, C>1: logins/s). Dovecot sql rows are for comparison.`,
  ];
  if (!list.length) return [...lines, '  (no verdict: run the sql, trivial-dict and mailwarden targets)'].join('\n');
  for (const v of list) lines.push(`  ${v.line}`);
  const summary: string[] = [];
  for (const t of MAILWARDEN_PATHS) {
    const mine = list.filter((v) => v.target === t && v.met !== undefined);
    if (!mine.length) continue;
    const missed = mine.filter((v) => v.met === false).map((v) => v.check);
    summary.push(`${t}: ${missed.length ? `NOT MET (${missed.join(', ')})` : 'MET'}`);
  }
  lines.push(`  => ${summary.join('; ') || 'INCOMPLETE'}`);
  return lines.join('\n');
}
