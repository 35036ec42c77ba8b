// Process plumbing for the benchmark: CPU accounting from /proc, daemons that
// cannot outlive the benchmark, and one cleanup list run on every exit path.
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';

/** Clock ticks per second for /proc/<pid>/stat; 100 on every Linux port Node supports. */
const CLK_TCK = 100;
const TICK_US = 1_000_000 / CLK_TCK;

/** Fields of /proc/<pid>/stat after the `(comm)` (which may contain spaces), 0-based from field 3. */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
}

/** utime + stime of a process (all its threads), in µs. Resolution: 10 ms. */
export function cpuMicros(pid: number): number {
  const f = statFields(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  return (Number(f[11]) + Number(f[12])) * TICK_US;
}

/** cutime + cstime (CPU of waited-for children) from a /proc/<pid>/stat text, in µs. */
export function childrenCpuMicros(statText: string): number {
  const f = statFields(statText);
  return (Number(f[13]) + Number(f[14])) * TICK_US;
}

/** One process in a /proc snapshot: its parent and CPU in µs. */
export interface ProcessEntry {
  readonly ppid: number;
  /** utime + stime. */
  readonly self: number;
  /**
   * cutime + cstime: children that exited and were waited for. A child that
   * exits moves its CPU here when reaped, so a tree's sum only ever grows and
   * the difference of two snapshots is what the tree used between them.
   */
  readonly reaped: number;
}

/** Every process's parent and CPU, read once from /proc. */
export function processTable(): Map<number, ProcessEntry> {
  const table = new Map<number, ProcessEntry>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue; // gone meanwhile
    }
    const f = statFields(text);
    table.set(Number(name), { ppid: Number(f[1]), self: (Number(f[11]) + Number(f[12])) * TICK_US, reaped: (Number(f[13]) + Number(f[14])) * TICK_US });
  }
  return table;
}

/** The pids of `root` and all its descendants in `table` (none if root is gone). */
export function treePids(table: ReadonlyMap<number, ProcessEntry>, root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, p] of table) {
    const list = children.get(p.ppid);
    if (list) list.push(pid);
    else children.set(p.ppid, [pid]);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    if (!table.has(pid)) continue;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** CPU µs of a process tree (own and reaped, every process) and how many processes it has. */
export function treeCpuMicros(table: ReadonlyMap<number, ProcessEntry>, root: number): { cpu: number; processes: number } {
  const pids = treePids(table, root);
  let cpu = 0;
  for (const pid of pids) {
    const p = table.get(pid)!;
    cpu += p.self + p.reaped;
  }
  return { cpu, processes: pids.length };
}

/** System-wide busy and steal CPU time since boot (all cores, from /proc/stat), in µs. */
export function systemCpuMicros(): { busy: number; steal: number } {
  const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!;
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user)
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]!;
  return { busy: busy * TICK_US, steal: f[7]! * TICK_US };
}

/** A run is "disturbed" when other processes and hypervisor steal take at least this share of the CPUs. */
export const QUIET = 0.1;

/**
 * Waits (up to quietWaitS) until other processes and hypervisor steal take
 * less than QUIET of the CPUs over one second; measures anyway after that.
 */
export async function waitForQuiet(quietWaitS: number, progress: (message: string) => void): Promise<void> {
  const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
  const deadline = Date.now() + quietWaitS * 1000;
  let told = false;
  for (;;) {
    const a = systemCpuMicros();
    await sleep(1000);
    const b = systemCpuMicros();
    const share = (b.busy - a.busy + b.steal - a.steal) / (1e6 * os.availableParallelism());
    if (share < QUIET) return;
    if (Date.now() > deadline) {
      progress(`  host still busy (${pct(share)} of the CPUs used by others or stolen) after ${quietWaitS} s; measuring anyway`);
      return;
    }
    if (!told) progress(`  host busy (${pct(share)} of the CPUs used by other processes or stolen): waiting up to ${quietWaitS} s for it to calm down`);
    told = true;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// --- cleanup: LIFO, once, on normal end, error, Ctrl-C and SIGTERM ---

type CleanupFn = () => Promise<void> | void;
const cleanups: Array<{ name: string; fn: CleanupFn }> = [];
/** Last-resort synchronous kills for process.on('exit') (pids) and directories to remove. */
const exitPids = new Set<number>();
const exitDirs = new Set<string>();
let cleaning: Promise<void> | undefined;

export function onCleanup(name: string, fn: CleanupFn): () => void {
  const entry = { name, fn };
  cleanups.push(entry);
  return () => {
    const i = cleanups.indexOf(entry);
    if (i >= 0) cleanups.splice(i, 1);
  };
}

export function killAtExit(pid: number): () => void {
  exitPids.add(pid);
  return () => exitPids.delete(pid);
}

export function removeAtExit(dir: string): void {
  exitDirs.add(dir);
}

/**
 * A temp dir for one benchmark run, removed on every exit path unless `keep`.
 * `shared`: mode 0755, for daemons that drop privileges and read from it.
 */
export function benchTempDir(prefix: string, opts: { keep?: boolean | undefined; shared?: boolean }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  if (opts.shared) chmodSync(dir, 0o755);
  if (!opts.keep) {
    removeAtExit(dir);
    onCleanup('remove temp dir', () => rmSync(dir, { recursive: true, force: true }));
  }
  return dir;
}

export function runCleanups(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      const { name, fn } = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`bench: cleanup ${name} failed: ${(err as Error).message}\n`);
      }
    }
  })();
  return cleaning;
}

/** Set once a signal asked us to stop: errors from the children we are killing are expected then. */
export let interrupted = false;

let handlersInstalled = false;
export function installSignalHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (interrupted) return;
      interrupted = true;
      process.stderr.write(`\nbench: ${sig}, stopping everything...\n`);
      const force = setTimeout(() => process.exit(130), 30_000);
      force.unref();
      void runCleanups().finally(() => process.exit(130));
    });
  }
  process.on('exit', () => {
    for (const pid of exitPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const dir of exitDirs) rmSync(dir, { recursive: true, force: true });
  });
}

// --- a daemon under a stdin watchdog ---

// $1 = log file, the rest = the command. The daemon runs with stdin from
// /dev/null; the shell keeps our pipe on fd 3, and a reader subshell TERMs the
// daemon as soon as the pipe closes: when we ask (stop()) or when the
// benchmark dies in any way, even SIGKILL. Prints the daemon's pid first.
const WATCHDOG = `
log=$1; shift
exec 3<&0 0</dev/null
"$@" 3<&- >>"$log" 2>&1 &
pid=$!
echo "$pid"
( read -r _ <&3; kill -TERM $pid 2>/dev/null ) &
watcher=$!
exec 3<&-
wait $pid; status=$?
kill $watcher 2>/dev/null
exit $status
`;

export interface Daemon {
  /** The daemon's own pid (not the watchdog's): what /proc CPU accounting needs. */
  readonly pid: number;
  readonly log: string;
  readonly exited: boolean;
  /** SIGTERM via the watchdog, SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
  logTail(lines?: number): string;
}

export async function startDaemon(command: string, args: readonly string[], opts: { log: string; env?: NodeJS.ProcessEnv; name: string }): Promise<Daemon> {
  // detached: its own process group, so Ctrl-C reaches only us and we shut it down in order.
  const child = spawn('sh', ['-c', WATCHDOG, `${opts.name}-watchdog`, opts.log, command, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
    detached: true,
    env: opts.env ?? process.env,
  });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  const pid = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(Number(buf.slice(0, nl)));
    });
    child.once('exit', (code) => reject(new Error(`${opts.name} watchdog exited (${code}) before starting the daemon`)));
  });
  const forget = killAtExit(pid);
  let stopping: Promise<void> | undefined;
  const daemon: Daemon = {
    pid,
    log: opts.log,
    get exited() { return exited; },
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        child.stdin!.end();
        const timer = setTimeout(() => {
          try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        }, graceMs);
        await exit;
        clearTimeout(timer);
        forget();
      })();
      return stopping;
    },
    logTail(lines = 20) {
      try {
        return readFileSync(opts.log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '(no log)';
      }
    },
  };
  onCleanup(`stop ${opts.name}`, () => daemon.stop());
  return daemon;
}

/** Resolves once something accepts connections on the UNIX socket `path`. */
export async function waitForSocket(path: string, timeoutMs: number, alive: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s: Socket = connect(path);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`${what} exited before listening on ${path}`);
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${path} within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

/** Tracks short-lived children (postmap) so Ctrl-C kills them too. */
export function track(child: ChildProcess): void {
  if (child.pid === undefined) return;
  const forget = killAtExit(child.pid);
  child.once('exit', forget);
}

/**
 * A frozen copy of the mailwarden under test in `dest` (`parts` of it, default
 * src/, bin/, package.json; node_modules symlinked), so edits made while a
 * benchmark runs cannot break it half-way: the working tree of `source`, or
 * `rev` of its git history (extracted with git archive). Returns the commit
 * (for a revision) and a line for the progress log.
 */
export function copyMailwarden(source: string, rev: string | undefined, dest: string, parts: readonly string[] = ['src', 'bin', 'package.json']): { commit?: string; description: string } {
  mkdirSync(dest, { recursive: true });
  let result: { commit?: string; description: string };
  if (rev) {
    const commit = execFileSync('git', ['-C', source, 'rev-parse', '--verify', `${rev}^{commit}`]).toString().trim();
    const tar = execFileSync('git', ['-C', source, 'archive', commit, ...parts], { maxBuffer: 1 << 30 });
    execFileSync('tar', ['-x', '-C', dest], { input: tar });
    result = { commit, description: `benchmarking ${source} at ${commit.slice(0, 12)} (${rev})` };
  } else {
    for (const part of parts) cpSync(path.join(source, part), path.join(dest, part), { recursive: true });
    result = { description: `benchmarking the working tree of ${source} (copied now)` };
  }
  symlinkSync(path.join(source, 'node_modules'), path.join(dest, 'node_modules'));
  return result;
}
