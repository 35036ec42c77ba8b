// Dovecot benchmark: userdb lookups and logins through a real Dovecot 2.3 for
// each of mailwarden's paths (the Lua bridge over HTTP with LuaSocket and with
// Dovecot's lib-http, dict, checkpassword), next to Dovecot's own passdb/userdb
// sql on the same MariaDB data and trivial dict/HTTP servers as ceilings. See
// bench/README.md ("Dovecot").
//
//   node bench/dovecot.ts [--seconds 5] [--only lua,lua-libhttp,dict,sql,trivial-dict,checkpassword]
//       [--concurrency 1,10,50] [--login-concurrency 1,10] [--repeat N] [--mailboxes 100000] ...
import { execFileSync, fork, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import argon2 from 'argon2';
import mysql from 'mysql2/promise';
import { DEFAULT_ARGON2, type Argon2Params } from '../src/config/load.ts';
import { migrateDatabase } from '../src/directory/mysql-admin.ts';
import { startDovecot, type DovecotInstance } from '../test/support/dovecot.ts';
import { freePort } from '../test/support/ports.ts';
import { address, generateDovecotDataset, loadDovecotDataset } from './lib/dovecot-data.ts';
import { masterUser, plainLogin, userdbAnswer } from './lib/dovecot-client.ts';
import { formatLogins, formatLookups, formatVerdicts, verdicts, type Argon2Cost, type DovecotRow, type Phase } from './lib/dovecot-report.ts';
import {
  TARGETS, TARGET_INFO, checkpasswordConf, dictConf, luaConf, mailwardenConfig, sqlConf, sqlQueries, type TargetName,
} from './lib/dovecot-targets.ts';
import type { DovecotRunParams, DovecotRunResult, FromLoadgen, ToLoadgen } from './lib/dovecot-types.ts';
import { benchTempDir, copyMailwarden, type Daemon, installSignalHandlers, interrupted, isAlive, onCleanup, QUIET, runCleanups, sleep, startDaemon, waitForQuiet, waitForSocket } from './lib/proc.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOVECOT_DEFAULT_ARGON2: Argon2Params = { memoryCost: 65536, timeCost: 3, parallelism: 1 };

const USAGE = `usage: node bench/dovecot.ts [options]
  --seconds N             measured seconds per run (default 5)
  --warmup S              unmeasured seconds before each lookup and repeated-login run (default 1)
  --only LIST             targets, in this order: ${TARGETS.join(',')} (default all)
  --ops LIST              userdb,login (default both)
  --lookups LIST          first,repeated userdb lookups (default both): first = every mailbox once, mailwarden
                          restarted before each run (empty cache); repeated = the --hot-users again and again
  --hot-users N           mailboxes the repeated lookups cycle over, each looked up once right before the run (default 5000)
  --concurrency LIST      connections for userdb lookups (default 1,10,50)
  --preload yes|no        set directory.preload (default: mailwarden's default, on); after each start the bench waits
                          until mailwarden's CPU is idle (the preload done) and reports its RSS
  --lua-blocking yes|no   the Lua passdb/userdb in auth-workers (yes, as shipped) or in the auth process itself (no)
  --login-concurrency LIST  connections for logins (default 1,10)
  --repeat N              run every row N times and report the median run (default 1)
  --mailboxes N           mailboxes in MariaDB (default 100000)
  --domains N             mailbox domains (default 100)
  --first-logins N        distinct users per first-login run (default 150); a run also ends after --seconds
  --login-users N         users with a real argon2id hash (default first-logins x login concurrencies)
  --seed N                data seed (default 42)
  --pool-size N           mailwarden's MariaDB pool_size (default 10)
  --mailwarden DIR        mailwarden checkout to benchmark (default: this one); src/ and bin/ are copied at start
  --rev REV               benchmark a git revision of --mailwarden instead of its working tree (git archive)
  --cpu-prof DIR           run mailwarden under node --cpu-prof, profiles written to DIR when it stops
  --keep                  keep the temporary directory (data, configs, logs)
  --quiet-wait S          before each run, wait up to S seconds for other processes to use < 10% of the CPUs (default 60)
  --retries N             re-run a run that other processes disturbed anyway, up to N times (default 1)
  --json                  print the results as JSON on stdout instead of the tables
  --json-out FILE         also write the JSON results to FILE
  -h, --help`;

interface Options {
  seconds: number;
  warmup: number;
  only: TargetName[];
  ops: Array<'userdb' | 'login'>;
  lookups: Array<'first' | 'repeated'>;
  hotUsers: number;
  luaBlocking: boolean;
  preload: boolean | undefined;
  concurrency: number[];
  loginConcurrency: number[];
  repeat: number;
  mailboxes: number;
  domains: number;
  firstLogins: number;
  loginUsers: number;
  seed: number;
  poolSize: number;
  mailwarden: string;
  rev: string | undefined;
  cpuProf: string | undefined;
  keep: boolean;
  quietWait: number;
  retries: number;
  json: boolean;
  jsonOut: string | undefined;
}

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n${USAGE}\n`);
  process.exit(64);
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string' }, warmup: { type: 'string' }, only: { type: 'string' }, ops: { type: 'string' },
      lookups: { type: 'string' }, 'hot-users': { type: 'string' }, 'lua-blocking': { type: 'string' }, preload: { type: 'string' },
      concurrency: { type: 'string' }, 'login-concurrency': { type: 'string' }, repeat: { type: 'string' },
      mailboxes: { type: 'string' }, domains: { type: 'string' }, 'first-logins': { type: 'string' }, 'login-users': { type: 'string' },
      seed: { type: 'string' }, 'pool-size': { type: 'string' }, mailwarden: { type: 'string' }, rev: { type: 'string' }, 'cpu-prof': { type: 'string' },
      keep: { type: 'boolean' }, 'quiet-wait': { type: 'string' }, retries: { type: 'string' },
      json: { type: 'boolean' }, 'json-out': { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const num = (name: string, text: string | undefined, fallback: number, min = 0): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) usage(`--${name} must be a number >= ${min}`);
    return n;
  };
  const list = <T extends string>(name: string, text: string | undefined, allowed: readonly T[]): T[] => {
    if (text === undefined) return [...allowed];
    const items = text.split(',').map((s) => s.trim()).filter(Boolean);
    for (const i of items) if (!allowed.includes(i as T)) usage(`--${name}: unknown ${JSON.stringify(i)} (known: ${allowed.join(', ')})`);
    return allowed.filter((a) => items.includes(a));
  };
  const ints = (name: string, text: string | undefined, fallback: string) => {
    const out = (text ?? fallback).split(',').map((s) => Number(s.trim()));
    if (out.some((c) => !Number.isInteger(c) || c < 1 || c > 500)) usage(`--${name} must be a list of integers 1..500`);
    return out;
  };
  const loginConcurrency = ints('login-concurrency', values['login-concurrency'], '1,10');
  const firstLogins = Math.floor(num('first-logins', values['first-logins'], 150, 1));
  return {
    seconds: num('seconds', values.seconds, 5, 0.1),
    warmup: num('warmup', values.warmup, 1),
    only: list('only', values.only, TARGETS),
    ops: list('ops', values.ops, ['userdb', 'login'] as const),
    lookups: list('lookups', values.lookups, ['first', 'repeated'] as const),
    hotUsers: Math.floor(num('hot-users', values['hot-users'], 5000, 1)),
    luaBlocking: list('lua-blocking', values['lua-blocking'] ?? 'yes', ['yes', 'no'] as const)[0] !== 'no',
    preload: values.preload === undefined ? undefined : list('preload', values.preload, ['yes', 'no'] as const)[0] === 'yes',
    concurrency: ints('concurrency', values.concurrency, '1,10,50'),
    loginConcurrency,
    repeat: Math.floor(num('repeat', values.repeat, 1, 1)),
    mailboxes: Math.floor(num('mailboxes', values.mailboxes, 100_000, 100)),
    domains: Math.floor(num('domains', values.domains, 100, 2)),
    firstLogins,
    loginUsers: Math.floor(num('login-users', values['login-users'], firstLogins * loginConcurrency.length, 1)),
    seed: Math.floor(num('seed', values.seed, 42)),
    poolSize: Math.floor(num('pool-size', values['pool-size'], 10, 1)),
    mailwarden: path.resolve(values.mailwarden ?? ROOT),
    rev: values.rev,
    cpuProf: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined,
    keep: values.keep ?? false,
    quietWait: num('quiet-wait', values['quiet-wait'], 60),
    retries: Math.floor(num('retries', values.retries, 1)),
    json: values.json ?? false,
    jsonOut: values['json-out'],
  };
}

const t0 = Date.now();
function progress(message: string): void {
  process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
}
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;

// --- the load generator process ---

class Loadgen {
  readonly #child: ChildProcess;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (r: DovecotRunResult) => void; reject: (e: Error) => void }>();

  constructor() {
    // Its own process group: Ctrl-C reaches only us; it exits when our IPC channel closes.
    this.#child = fork(path.join(ROOT, 'bench/lib/dovecot-loadgen.ts'), [], { detached: true, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (m: FromLoadgen) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.type === 'result') p.resolve(m.result);
      else p.reject(new Error(`load generator: ${m.message}`));
    });
    this.#child.once('exit', (code) => {
      for (const p of this.#pending.values()) p.reject(new Error(`load generator exited (${code})`));
      this.#pending.clear();
    });
    onCleanup('stop load generator', () => this.stop());
  }

  run(params: DovecotRunParams): Promise<DovecotRunResult> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.send({ type: 'run', id, params } satisfies ToLoadgen);
    });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise((r) => this.#child.once('exit', r));
    this.#child.disconnect();
    const t = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}

// --- a quiet host, retries, medians (as in socketmap.ts) ---



async function medianOf(opts: Options, fn: () => Promise<DovecotRunResult>): Promise<{ best: DovecotRunResult; all: number[] }> {
  const runs: DovecotRunResult[] = [];
  for (let i = 0; i < opts.repeat; i++) {
    for (let attempt = 0; ; attempt++) {
      if (opts.quietWait > 0) await waitForQuiet(opts.quietWait, progress);
      const r = await fn();
      if (r.otherCpuShare + r.stealShare < QUIET || attempt >= opts.retries) {
        runs.push(r);
        break;
      }
      progress(`  run disturbed (other processes ${pct(r.otherCpuShare)}, hypervisor steal ${pct(r.stealShare)} of the CPUs): retrying`);
    }
  }
  const quiet = runs.filter((r) => r.otherCpuShare + r.stealShare < QUIET);
  const sorted = (quiet.length ? quiet : runs).slice().sort((a, b) => a.opsPerSecond - b.opsPerSecond);
  return { best: sorted[Math.floor((sorted.length - 1) / 2)]!, all: runs.map((r) => Math.round(r.opsPerSecond)) };
}

// --- argon2id cost on this host ---

/** CPU (all threads) and wall time per argon2id verification, in this process, sequentially. */
async function argon2Cost(params: Argon2Params, n: number): Promise<Argon2Cost> {
  const hash = await argon2.hash('calibration password', { type: argon2.argon2id, ...params });
  await argon2.verify(hash, 'calibration password'); // first run: allocations, thread pool start
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let i = 0; i < n; i++) {
    if (!(await argon2.verify(hash, 'calibration password'))) throw new Error('argon2 calibration: verify failed');
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    params: `m=${params.memoryCost},t=${params.timeCost},p=${params.parallelism}`,
    cpuMsPerVerify: (cpu.user + cpu.system) / 1000 / n,
    wallMsPerVerify: (performance.now() - wall0) / n,
  };
}

// --- helpers ---

/** Waits until `pid` uses less than 10 % of a core over two 250 ms samples in a row; returns the time waited. */
async function waitForIdleProcess(pid: number, timeoutMs: number): Promise<number> {
  const started = Date.now();
  const cpu = () => {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(fields[11]) + Number(fields[12])) * 10; // clock ticks (100/s) -> ms
    } catch {
      return NaN;
    }
  };
  let calm = 0;
  while (Date.now() - started < timeoutMs && calm < 2) {
    const before = cpu();
    await sleep(250);
    const used = cpu() - before;
    calm = used < 25 ? calm + 1 : 0;
    if (Number.isNaN(used)) break;
  }
  return Date.now() - started;
}

function rssMiB(pid: number): string {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    return (kb / 1024).toFixed(0);
  } catch {
    return '?';
  }
}

function waitForPort(port: number, timeoutMs: number, alive: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return (async () => {
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = connect({ host: '127.0.0.1', port });
        s.once('connect', () => { s.destroy(); resolve(true); });
        s.once('error', () => resolve(false));
      });
      if (ok) return;
      if (!alive()) throw new Error(`${what} exited before listening on 127.0.0.1:${port}`);
      if (Date.now() > deadline) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs / 1000} s`);
      await sleep(100);
    }
  })();
}

function masterPid(d: DovecotInstance): number {
  return Number(readFileSync(path.join(d.baseDir, 'master.pid'), 'utf8').trim());
}

function reachableByDovecotUser(file: string): boolean {
  return spawnSync('runuser', ['-u', 'dovecot', '--', 'test', '-r', file]).status === 0;
}

function versionOf(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n')[0]!;
  } catch {
    return 'unknown';
  }
}

// --- main ---

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  installSignalHandlers();
  if (process.getuid?.() !== 0) throw new Error('run as root: Dovecot\'s master starts as root (test/support/dovecot.ts)');
  const cores = os.availableParallelism();
  const meta: Record<string, unknown> = { node: process.version, dovecot: versionOf('dovecot', ['--version']), cores };
  const wantLogins = opts.ops.includes('login');
  const wantLookups = opts.ops.includes('userdb');
  const targets = opts.only.filter((t) => (wantLookups && TARGET_INFO[t].lookups) || (wantLogins && TARGET_INFO[t].logins));
  if (targets.includes('sql') && !existsDriver()) {
    throw new Error('Dovecot\'s MySQL driver is missing (/usr/lib/dovecot/modules/libdriver_mysql.so): apt-get install dovecot-mysql, or leave sql out of --only');
  }

  // Dovecot's processes (user dovecot) read configs and run the checkpassword program from here.
  const tmp = benchTempDir('mailwarden-dovecot-bench-', { keep: opts.keep, shared: true });
  progress(`temp dir ${tmp}${opts.keep ? ' (kept)' : ''}; ${cores} CPU cores shared by the load generator, Dovecot, mailwarden and mysqld`);

  // A frozen copy of the mailwarden under test: other people may be editing src/ while we run.
  const mwRoot = path.join(tmp, 'mailwarden');
  const copied = copyMailwarden(opts.mailwarden, opts.rev, mwRoot, ['src', 'bin', 'package.json', 'dovecot-conf']);
  if (copied.commit) meta['mailwardenRevision'] = copied.commit;
  progress(copied.description);

  // --- data ---
  const params = DEFAULT_ARGON2;
  progress(`generating ${fmt(opts.mailboxes)} mailboxes over ${opts.domains} domains; ${opts.loginUsers} login users with argon2id m=${params.memoryCost},t=${params.timeCost},p=${params.parallelism}`);
  const ds = generateDovecotDataset({ mailboxes: opts.mailboxes, domains: opts.domains, seed: opts.seed, loginUsers: opts.loginUsers, argon2: params });
  const lookupFile = path.join(tmp, 'userdb-lookups.txt');
  writeFileSync(lookupFile, `${ds.lookupOrder.join('\n')}\n`);
  // Repeated lookups: a working set small enough for every cache, e.g. the recipients of the last minute.
  // The trivial servers answer these as unknown users, as mailwarden and sql do.
  const disabledFile = path.join(tmp, 'disabled.txt');
  writeFileSync(disabledFile, `${ds.mailboxes.filter((m) => !m.enabled).map(address).join('\n')}\n`);
  const hotFile = path.join(tmp, 'userdb-hot.txt');
  writeFileSync(hotFile, `${ds.lookupOrder.slice(0, Math.min(opts.hotUsers, ds.lookupOrder.length)).join('\n')}\n`);

  progress('starting a private MariaDB (test/support/mariadb.ts)');
  const { startMariaDb } = await import('../test/support/mariadb.ts');
  const db = await startMariaDb();
  const mysqldPid = Number(readFileSync(path.join(path.dirname(db.socket), 'mysqld.pid'), 'utf8').trim());
  onCleanup('stop MariaDB', async () => {
    await db.stop();
    if (isAlive(mysqldPid)) {
      process.kill(mysqldPid, 'SIGTERM');
      for (let i = 0; i < 300 && isAlive(mysqldPid); i++) await sleep(100);
    }
  });
  // Dovecot's auth process (user dovecot) opens the sql driver's connection too, as on a real host: let it reach the socket.
  chmodSync(path.dirname(db.socket), 0o711);
  const dbName = 'mwbench';
  await db.createDatabase(dbName);
  const mysqlUrl = db.socketUrl(dbName);
  await migrateDatabase({ backend: 'mysql', url: mysqlUrl, poolSize: 1, queryTimeoutMs: 60_000, cacheTtlMs: 0, cacheSize: 0 });
  const sqlUser = { user: 'dovecot', password: 'dovecot-bench' };
  await db.admin('CREATE USER IF NOT EXISTS ?@? IDENTIFIED BY ?', [sqlUser.user, 'localhost', sqlUser.password]);
  await db.admin(`GRANT SELECT ON \`${dbName}\`.* TO ?@?`, [sqlUser.user, 'localhost']);
  const pool = mysql.createPool({ socketPath: db.socket, user: 'root', database: dbName, connectionLimit: 2, timezone: 'Z' });
  onCleanup('close loader pool', () => pool.end());
  const loadStart = Date.now();
  const { hashSeconds } = await loadDovecotDataset(pool, ds, params);
  meta['mariadb'] = String(((await db.admin('SELECT VERSION() AS v')) as Array<{ v: string }>)[0]?.v);
  progress(`  MariaDB ${meta['mariadb']} (mysqld pid ${mysqldPid}): ${fmt(ds.mailboxes.length)} mailboxes loaded in ${((Date.now() - loadStart) / 1000).toFixed(1)} s `
    + `(${hashSeconds.toFixed(1)} s of it hashing ${ds.loginUsers.length} passwords)`);

  // --- argon2id on this host ---
  let a2: Argon2Cost | undefined;
  let a2Dovecot: Argon2Cost | undefined;
  if (wantLogins) {
    a2 = await argon2Cost(params, 20);
    a2Dovecot = await argon2Cost(DOVECOT_DEFAULT_ARGON2, 6);
    progress(`  argon2id verify in Node (node-argon2), one at a time: ${a2.params} ${a2.cpuMsPerVerify.toFixed(1)} ms CPU (${a2.wallMsPerVerify.toFixed(1)} ms wall); `
      + `Dovecot's default ${a2Dovecot.params} ${a2Dovecot.cpuMsPerVerify.toFixed(1)} ms CPU`);
    meta['argon2'] = a2;
    meta['argon2DovecotDefault'] = a2Dovecot;
  }

  // --- shared settings ---
  const nobody = { uid: 65534, gid: 65534 };
  const vmail = path.join(tmp, 'vmail');
  const secret = randomBytes(18).toString('hex');
  const userdbJson = (m: { domain: string; local: string }) =>
    JSON.stringify({ home: `${vmail}/${m.domain}/${m.local}`, uid: String(nobody.uid), gid: String(nobody.gid), quota_rule: `*:bytes=${2 * 1024 ** 3}` });
  let files = 0;
  // A new file every time: the load generator keeps what it read per file name.
  const loginFile = (name: string, users: readonly number[]) => {
    const file = path.join(tmp, `logins-${name}-${++files}.txt`);
    writeFileSync(file, `${users.map((i) => `${ds.loginUsers[i]!.address}\t${ds.loginUsers[i]!.password}`).join('\n')}\n`);
    return file;
  };
  meta['sqlQueries'] = sqlQueries({ socket: db.socket, database: dbName, ...sqlUser, vmail, ...nobody });

  const loadgen = new Loadgen();
  const rows: DovecotRow[] = [];
  const durationMs = opts.seconds * 1000;
  const disturbed = (r: DovecotRunResult) =>
    r.otherCpuShare > 0.05 || r.stealShare > 0.02 ? ` [WARNING: other processes used ${pct(r.otherCpuShare)} and steal ${pct(r.stealShare)} of the CPUs: disturbed]` : '';

  const record = (target: TargetName, phase: Phase, c: number, r: DovecotRunResult, all: number[], argon2CpuMs?: number) => {
    const cpuUs: Record<string, number> = { ...r.cpuUsPerOp };
    rows.push({
      target, label: TARGET_INFO[target].label, phase, concurrency: c,
      opsPerSecond: r.opsPerSecond, ops: r.ops, seconds: r.seconds,
      p50Us: r.latencyUs.p50, p99Us: r.latencyUs.p99, maxUs: r.latencyUs.max,
      cpuUs, authCoreShare: r.authCoreShare, workers: r.workers, clientCpuUs: r.clientCpuUsPerOp,
      ok: r.ok, notFound: r.notFound, fail: r.fail, ...(r.firstFail ? { firstFail: r.firstFail } : {}),
      otherCpuShare: r.otherCpuShare, stealShare: r.stealShare,
      ...(all.length > 1 ? { repeats: all } : {}),
      ...(phase === 'first login' && r.exhausted ? { exhausted: true } : {}),
      ...(phase === 'first lookup' && r.wrapped ? { wrapped: true } : {}),
      ...(argon2CpuMs !== undefined ? { argon2CpuMs } : {}),
    });
    const ms = phase.endsWith('login');
    const show = (us: number | undefined) => (us === undefined ? '—' : ms ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`);
    progress(`  ${TARGET_INFO[target].label} ${phase} C=${c}: ${fmt(r.opsPerSecond)}/s${all.length > 1 ? ` (median of ${all.map(fmt).join(', ')})` : ''}, `
      + `${argon2CpuMs !== undefined ? `argon2id verify around it ${argon2CpuMs.toFixed(1)} ms CPU, ` : ''}`
      + `p50 ${show(r.latencyUs.p50)}, p99 ${show(r.latencyUs.p99)}; CPU/op: server ${show(cpuUs['server'])}, mysqld ${show(cpuUs['mysqld'])}, `
      + `auth ${show(cpuUs['auth'])} (${pct(r.authCoreShare)} of a core), workers ${show(cpuUs['workers'])} (${r.workers}), dovecot ${show(cpuUs['dovecot'])}`
      + `${r.fail ? `; ${r.fail} FAIL, first: ${r.firstFail}` : ''}${disturbed(r)}`);
    if (r.fail) throw new Error(`${TARGET_INFO[target].label}: ${r.fail} failed requests (${r.firstFail}); see the Dovecot and mailwarden logs${opts.keep ? ` in ${tmp}` : ' (--keep)'}`);
  };

  /** One target: its server, its Dovecot, probes, then every run; everything it started is stopped whatever happens. */
  const runTarget = async (target: TargetName): Promise<void> => {
    const info = TARGET_INFO[target];
    progress(`${info.label}`);
    const dir = path.join(tmp, target);
    mkdirSync(dir, { mode: 0o755 });
    const cpuPids: Record<string, number> = { mysqld: mysqldPid };
    const stops: Array<() => Promise<void>> = [];
    let startMailwarden: (() => Promise<Daemon>) | undefined;
    let mailwarden: Daemon | undefined;
    let dovecot: DovecotInstance | undefined;
    try {
      // The server behind Dovecot.
      let conf: string;
      const mwConfig = path.join(dir, 'mailwarden.yaml');
      const dictSocket = path.join(dir, 'dict.sock');
      if (info.mailwarden) {
        const authPort = await freePort();
        writeFileSync(mwConfig, mailwardenConfig({
          mysqlUrl, vmail, ...nobody, authPort, secret, dictSocket, argon2: params, poolSize: opts.poolSize,
          ...(opts.preload === undefined ? {} : { preload: opts.preload }),
        }), { mode: 0o644 });
        let starts = 0;
        startMailwarden = async () => {
          const started = Date.now();
          const env = { ...process.env };
          if (opts.cpuProf) {
            mkdirSync(opts.cpuProf, { recursive: true });
            env['NODE_OPTIONS'] = `${env['NODE_OPTIONS'] ?? ''} --cpu-prof --cpu-prof-dir=${opts.cpuProf}`.trim();
          }
          const d = await startDaemon(path.join(mwRoot, 'bin/mailwarden'), ['--config', mwConfig, 'serve'], { log: path.join(dir, `mailwarden-${++starts}.log`), name: `mailwarden-${target}`, env });
          try {
            await waitForSocket(dictSocket, 120_000, () => !d.exited, 'mailwarden');
            await waitForPort(authPort, 120_000, () => !d.exited, 'mailwarden');
          } catch (err) {
            throw new Error(`${(err as Error).message}\n${d.logTail()}`);
          }
          // A preload runs in the background after start: "first" lookups are measured once it is done.
          const idleAfter = await waitForIdleProcess(d.pid, 60_000);
          progress(`  mailwarden pid ${d.pid} answering after ${((Date.now() - started) / 1000).toFixed(1)} s, idle after ${(idleAfter / 1000).toFixed(1)} s, RSS ${rssMiB(d.pid)} MiB`);
          cpuPids['server'] = d.pid;
          return d;
        };
        mailwarden = await startMailwarden();
      }
      if (target === 'trivial-dict') {
        const sample = ds.mailboxes[0]!;
        const d = await startDaemon(process.execPath, [path.join(ROOT, 'bench/lib/dovecot-trivial-dict.ts'), dictSocket, userdbJson(sample), disabledFile], { log: path.join(dir, 'trivial-dict.log'), name: 'trivial-dict' });
        await waitForSocket(dictSocket, 10_000, () => !d.exited, 'trivial dict server');
        cpuPids['server'] = d.pid;
        stops.push(() => d.stop());
        conf = await dictConf(dir, 'trivial', dictSocket);
      } else if (target === 'trivial-http' || target === 'trivial-http-libhttp') {
        const port = await freePort();
        const sample = ds.mailboxes[0]!;
        const d = await startDaemon(process.execPath, [path.join(ROOT, 'bench/lib/dovecot-trivial-http.ts'), String(port), userdbJson(sample), disabledFile], { log: path.join(dir, 'trivial-http.log'), name: 'trivial-http' });
        await waitForPort(port, 10_000, () => !d.exited, 'trivial HTTP server');
        cpuPids['server'] = d.pid;
        stops.push(() => d.stop());
        conf = await luaConf(mwRoot, dir, `http://127.0.0.1:${port}`, secret, info.transport!, opts.luaBlocking);
      } else if (target === 'sql') {
        conf = await sqlConf(dir, { socket: db.socket, database: dbName, ...sqlUser, vmail, ...nobody });
      } else if (target === 'dict') {
        conf = await dictConf(dir, 'mailwarden', dictSocket);
      } else if (target === 'lua' || target === 'lua-libhttp') {
        const port = Number(/inet:127\.0\.0\.1:(\d+)/.exec(readFileSync(mwConfig, 'utf8'))![1]);
        conf = await luaConf(mwRoot, dir, `http://127.0.0.1:${port}`, secret, info.transport!, opts.luaBlocking);
      } else {
        const program = path.join(mwRoot, 'bin/mailwarden-checkpassword');
        const node = path.join(mwRoot, 'node_modules/node/bin/node');
        const authAsRoot = !(reachableByDovecotUser(program) && reachableByDovecotUser(node) && reachableByDovecotUser(mwConfig));
        if (authAsRoot) progress('  the checkpassword program is out of the dovecot user\'s reach here: Dovecot\'s auth process runs as root');
        conf = await checkpasswordConf(mwRoot, program, mwConfig, authAsRoot);
      }

      const dc = await startDovecot({ conf });
      dovecot = dc;
      const master = masterPid(dc);
      const masterSocket = path.join(dc.baseDir, 'auth-master');
        // Probes: a fast wrong answer is worthless.
        const enabled = ds.mailboxes.find((m) => m.enabled)!;
        const disabled = ds.mailboxes.find((m) => !m.enabled);
        if (info.lookups && wantLookups) {
          const got = userdbAnswer(await masterUser(masterSocket, address(enabled)));
          const fields = JSON.parse(userdbJson(enabled)) as Record<string, string>;
          const want = [`USER ${address(enabled)}`, ...Object.entries(fields).map(([k, v]) => `${k}=${v}`).sort()].join(' ');
          const trivial = target.startsWith('trivial');
          if (!trivial && got !== want) throw new Error(`${info.label}: userdb ${address(enabled)} answered ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
          if (disabled) {
            const off = await masterUser(masterSocket, address(disabled));
            if (!off.startsWith('NOTFOUND\t')) throw new Error(`${info.label}: userdb of the disabled ${address(disabled)} answered ${JSON.stringify(off)}`);
          }
        }
        if (info.logins && wantLogins) {
          // Not a login user: keeps every login user cold for the first-login runs.
          const wrong = await plainLogin(dc.authClientSocket, ds.loginUsers[0]!.address, 'not the password');
          if (!wrong.startsWith('FAIL\t')) throw new Error(`${info.label}: a wrong password answered ${JSON.stringify(wrong)}`);
        }

        const base = { dovecotMaster: master, cpuPids, durationMs, collectOk: false } as const;
        if (info.lookups && wantLookups) {
          const lookup = { ...base, kind: 'userdb', socket: masterSocket, mode: 'cycle', warmupMs: opts.warmup * 1000, service: 'lmtp' } as const;
          if (opts.lookups.includes('first')) {
            for (const c of opts.concurrency) {
              const { best, all } = await medianOf(opts, async () => {
                // An empty answer cache: every lookup in the run is a mailbox not seen since mailwarden started.
                if (mailwarden && startMailwarden) {
                  await mailwarden.stop();
                  mailwarden = await startMailwarden();
                }
                return loadgen.run({ ...lookup, items: lookupFile, concurrency: c });
              });
              if (best.wrapped) progress(`  (the run got through a connection's share of the ${fmt(ds.lookupOrder.length)} mailboxes: some were looked up twice)`);
              record(target, 'first lookup', c, best, all);
            }
          }
          if (opts.lookups.includes('repeated')) {
            for (const c of opts.concurrency) {
              const { best, all } = await medianOf(opts, async () => {
                // Every hot user once, right before (cache entries live for directory.cache_ttl, 60 s by default).
                await loadgen.run({ ...lookup, items: hotFile, concurrency: 10, mode: 'once', warmupMs: 0, durationMs: 300_000 });
                return loadgen.run({ ...lookup, items: hotFile, concurrency: c });
              });
              record(target, 'repeated lookup', c, best, all);
            }
          }
        }

        if (info.logins && wantLogins) {
          // First logins take fresh users; mailwarden's verification cache only knows users that logged in since it started.
          let cursor = 0;
          let cached = new Set<number>();
          const nextSlice = async (): Promise<number[]> => {
            if (cursor + opts.firstLogins > ds.loginUsers.length) {
              cursor = 0;
              if (info.verifier === 'mailwarden' && mailwarden && startMailwarden) {
                progress('  login users used up: restarting mailwarden for a cold verification cache');
                await mailwarden.stop();
                mailwarden = await startMailwarden();
                cached = new Set();
              }
            }
            const slice = Array.from({ length: Math.min(opts.firstLogins, ds.loginUsers.length) }, (_, i) => cursor + i);
            cursor += slice.length;
            return slice;
          };
          // argon2id's CPU cost moves with what the host's other tenants do (shared cores and memory bandwidth
          // under virtualisation): it is measured right before and right after every first-login run.
          const calibration = new WeakMap<DovecotRunResult, number>();
          for (const c of opts.loginConcurrency) {
            const { best, all } = await medianOf(opts, async () => {
              const users = await nextSlice();
              const before = await argon2Cost(params, 8);
              const r = await loadgen.run({
                ...base, kind: 'login', socket: dc.authClientSocket, items: loginFile(`${target}-first`, users), concurrency: c, mode: 'once',
                warmupMs: 0, service: 'imap', collectOk: true,
              });
              const after = await argon2Cost(params, 8);
              calibration.set(r, (before.cpuMsPerVerify + after.cpuMsPerVerify) / 2);
              for (const i of r.okIndices ?? []) cached.add(users[i]!);
              return r;
            });
            record(target, 'first login', c, best, all, calibration.get(best));
          }
          const again = loginFile(`${target}-repeated`, cached.size ? [...cached] : ds.loginUsers.map((_, i) => i));
          for (const c of opts.loginConcurrency) {
            const { best, all } = await medianOf(opts, () => loadgen.run({
              ...base, kind: 'login', socket: dc.authClientSocket, items: again, concurrency: c, mode: 'cycle', warmupMs: opts.warmup * 1000, service: 'imap',
            }));
            record(target, 'repeated login', c, best, all);
          }
        }
    } finally {
      // Dovecot's log goes with the temp dir (--keep keeps it); stopping removes Dovecot's own dir.
      if (dovecot) writeFileSync(path.join(dir, 'dovecot.log'), await dovecot.logs());
      await dovecot?.stop();
      await mailwarden?.stop();
      for (const stop of stops) await stop();
    }
  };

  // A target that fails (wrong probe answer, a FAIL reply, a server that does not start) is reported; the others still run.
  const failures: string[] = [];
  for (const target of targets) {
    try {
      await runTarget(target);
    } catch (err) {
      if (interrupted) throw err;
      const message = (err as Error).message;
      failures.push(`${TARGET_INFO[target].label}: ${message}`);
      progress(`  FAILED: ${message}${opts.keep ? '' : ' (--keep keeps the logs)'}`);
    }
  }

  const lookupC = opts.concurrency.includes(10) ? 10 : opts.concurrency[Math.floor(opts.concurrency.length / 2)]!;
  const v = verdicts(rows, lookupC);
  Object.assign(meta, {
    mailboxes: ds.mailboxes.length,
    disabled: ds.mailboxes.filter((m) => !m.enabled).length,
    loginUsers: ds.loginUsers.length,
    seconds: opts.seconds,
    warmupSeconds: opts.warmup,
    repeat: opts.repeat,
    concurrency: opts.concurrency,
    loginConcurrency: opts.loginConcurrency,
    firstLogins: opts.firstLogins,
  });
  const json = `${JSON.stringify({ meta, rows, verdicts: v, failures }, null, 2)}\n`;
  if (opts.jsonOut) writeFileSync(opts.jsonOut, json);
  if (opts.json) {
    process.stdout.write(json);
    if (failures.length) process.exitCode = 1;
    return;
  }
  process.stdout.write([
    '',
    `mailwarden Dovecot benchmark: ${fmt(ds.mailboxes.length)} mailboxes (${fmt(meta['disabled'] as number)} disabled) in MariaDB ${meta['mariadb']}; `
      + `Dovecot ${meta['dovecot']}, Node ${process.version}; ${opts.seconds} s per run${opts.repeat > 1 ? `, median of ${opts.repeat}` : ''}; auth cache off.`,
    `NOTE: load generator, Dovecot, mailwarden and mysqld all share the same ${cores} CPU cores.`,
    ...(a2 ? [`argon2id here (node-argon2, one verify at a time): ${a2.params} ${a2.cpuMsPerVerify.toFixed(1)} ms CPU per verify; `
      + `Dovecot's default ${a2Dovecot!.params} ${a2Dovecot!.cpuMsPerVerify.toFixed(1)} ms.`] : []),
    '',
    'userdb lookups: USER over the auth-master socket, random mailboxes (1 % disabled: NOTFOUND), C connections with one request in flight each; CPU per lookup.',
    `first = every mailbox once (* = some twice), mailwarden restarted before each run; repeated = ${fmt(Math.min(opts.hotUsers, ds.lookupOrder.length))} mailboxes over and over, each looked up once right before the run.`,
    formatLookups(rows),
    '',
    ...(rows.some((r) => r.phase.endsWith('login')) ? [
      'logins: AUTH PLAIN over the auth-client socket (passdb only, as Postfix SMTP AUTH); first = users not seen since mailwarden started (* = all used before the time was up),',
      'repeated = the same users and passwords again; CPU per login.',
      formatLogins(rows),
      '',
    ] : []),
    'CPU per op from /proc: server = mailwarden (or the trivial dict/HTTP server); auth = Dovecot\'s auth process; workers = its auth-worker processes',
    '(count at the end of the run); checkpw = the checkpassword processes the auth process forks; dovecot = every Dovecot process (auth, workers, checkpassword,',
    'log, stats, ...); auth %core = the single auth process\'s share of one core; other/steal = CPU of everything else on the host, and hypervisor steal.',
    '',
    formatVerdicts(v, `m=${params.memoryCost},t=${params.timeCost},p=${params.parallelism}`, lookupC),
    ...(failures.length ? ['', 'FAILED targets:', ...failures.map((f) => `  ${f.split('\n')[0]}`)] : []),
    '',
  ].join('\n'));
  if (failures.length) process.exitCode = 1;
}

function existsDriver(): boolean {
  return existsSync('/usr/lib/dovecot/modules/libdriver_mysql.so');
}

main().then(
  () => runCleanups(),
  async (err: unknown) => {
    if (interrupted) return; // the signal handler is already cleaning up and exits
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    await runCleanups();
    process.exitCode = 1;
  },
);
