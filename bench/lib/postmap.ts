// Postfix's own tables as baselines: `postmap -q - TYPE:NAME < keys` looks up
// every key of its input in order, in-process, exactly as smtpd(8) would
// through dict_mysql / dict_lmdb. Several processes in parallel stand for
// several smtpd processes (each has its own MySQL connection).
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { childrenCpuMicros, cpuMicros, systemCpuMicros, track } from './proc.ts';

export interface PostmapRun {
  readonly processes: number;
  readonly lookups: number;
  readonly seconds: number;
  readonly lookupsPerSecond: number;
  /** Mean time per lookup seen by one process (processes / throughput). */
  readonly meanLatencyUs: number;
  /** postmap's own CPU (the table runs inside it), per lookup. */
  readonly postmapCpuUsPerLookup: number;
  /** mysqld's CPU per lookup, when a mysqld pid was given. */
  readonly mysqldCpuUsPerLookup: number | undefined;
  /** Share of keys the table answered. */
  readonly found: number;
  /** CPU of everything else on the machine (see RunResult.otherCpuShare); includes the orchestrating shells. */
  readonly otherCpuShare: number;
  readonly stealShare: number;
}

// Reports its own children's CPU after postmap was waited for: cutime/cstime of
// this shell then hold exactly postmap's utime+stime (cat is not yet waited for).
const MEASURE = `postmap -c "$1" -q - "$2" < "$3" > "$4"; status=$?; cat /proc/$$/stat; exit $status`;

export interface PostmapOptions {
  /** Directory with main.cf (postmap -c). */
  readonly configDir: string;
  /** `mysql:/path/to.cf`, `lmdb:/path/vmailbox`. */
  readonly table: string;
  /** Scratch directory for key and output files. */
  readonly workDir: string;
  readonly mysqldPid?: number;
}

/** Writes `count` keys (cycling through `keys` from `offset`) to a file and returns its path. */
function keyFile(dir: string, tag: string, keys: readonly string[], offset: number, count: number): string {
  const file = join(dir, `keys-${tag}-${offset}-${count}.txt`);
  const out: string[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = keys[(offset + i) % keys.length]!;
  writeFileSync(file, `${out.join('\n')}\n`);
  return file;
}

/** Runs `processes` postmap processes in parallel, each over `perProcess` keys. */
export async function runPostmap(opts: PostmapOptions, keys: readonly string[], processes: number, perProcess: number, tag: string): Promise<PostmapRun> {
  const files: Array<{ keys: string; out: string }> = [];
  for (let i = 0; i < processes; i++) {
    const offset = Math.floor((i * keys.length) / processes);
    files.push({ keys: keyFile(opts.workDir, tag, keys, offset, perProcess), out: join(opts.workDir, `out-${tag}-${i}.txt`) });
  }
  const mysqldBefore = opts.mysqldPid ? cpuMicros(opts.mysqldPid) : 0;
  const sysBefore = systemCpuMicros();
  const t0 = performance.now();
  const results = await Promise.all(files.map((f) => new Promise<{ cpu: number }>((resolve, reject) => {
    const child = spawn('sh', ['-c', MEASURE, 'postmap-run', opts.configDir, opts.table, f.keys, f.out], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    // 'close', not 'exit': only then has all of stdout been read.
    child.once('close', (code) => {
      // postmap -q exits 1 when the last key was not found: not an error here.
      if (code !== 0 && code !== 1) return reject(new Error(`postmap -q ${opts.table} failed (${code}): ${stderr.trim()}`));
      if (/fatal|error/i.test(stderr)) return reject(new Error(`postmap -q ${opts.table}: ${stderr.trim().split('\n').slice(-3).join(' / ')}`));
      resolve({ cpu: childrenCpuMicros(stdout) });
    });
  })));
  const seconds = (performance.now() - t0) / 1000;
  const mysqldAfter = opts.mysqldPid ? cpuMicros(opts.mysqldPid) : 0;
  const sysAfter = systemCpuMicros();
  const lookups = processes * perProcess;
  let found = 0;
  for (const f of files) found += readFileSync(f.out, 'utf8').split('\n').filter(Boolean).length;
  const cpu = results.reduce((a, r) => a + r.cpu, 0);
  const rate = lookups / seconds;
  const capacity = seconds * 1e6 * availableParallelism();
  return {
    processes,
    lookups,
    seconds,
    lookupsPerSecond: rate,
    meanLatencyUs: (processes / rate) * 1e6,
    postmapCpuUsPerLookup: cpu / lookups,
    mysqldCpuUsPerLookup: opts.mysqldPid ? (mysqldAfter - mysqldBefore) / lookups : undefined,
    found: found / lookups,
    otherCpuShare: Math.max(0, (sysAfter.busy - sysBefore.busy - cpu - (mysqldAfter - mysqldBefore)) / capacity),
    stealShare: (sysAfter.steal - sysBefore.steal) / capacity,
  };
}

/**
 * A run sized to last about `seconds`: a short calibration run (also the
 * warm-up) measures one process's speed, then every process gets its share.
 */
export async function runPostmapFor(opts: PostmapOptions, keys: readonly string[], processes: number, seconds: number, cores: number, calibration: Map<string, number>, tag: string): Promise<PostmapRun> {
  let single = calibration.get(opts.table);
  if (single === undefined) {
    const probe = await runPostmap(opts, keys, 1, Math.min(keys.length, 2000), `${tag}-cal`);
    const probe2 = await runPostmap(opts, keys, 1, Math.max(2000, Math.min(200_000, Math.round(probe.lookupsPerSecond * 0.5))), `${tag}-cal`);
    single = probe2.lookupsPerSecond;
    calibration.set(opts.table, single);
  }
  const total = single * Math.min(processes, cores) * seconds;
  const perProcess = Math.max(200, Math.round(total / processes));
  return runPostmap(opts, keys, processes, perProcess, tag);
}
