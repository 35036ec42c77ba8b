// Socketmap throughput/latency benchmark: mailwarden (YAML and MariaDB
// backends) against Postfix's own mysql: and lmdb: tables and a trivial
// always-OK socketmap server. See bench/README.md.
//
//   node bench/socketmap.ts [--quick] [--seconds 5] [--concurrency 1,10,50]
//       [--backends yaml,mysql] [--baselines trivial,postfix-mysql,postfix-lmdb]
//       [--mailboxes 100000] [--json] ...
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { generateDataset, directoryYaml, vmailboxSource, type Dataset } from './lib/data.ts';
import { loadDataset, bumpSerial } from './lib/mysql.ts';
import { runPostmapFor, type PostmapOptions } from './lib/postmap.ts';
import { benchTempDir, copyMailwarden, type Daemon, installSignalHandlers, interrupted, isAlive, onCleanup, QUIET, runCleanups, sleep, startDaemon, waitForQuiet, waitForSocket } from './lib/proc.ts';
import { formatTable, formatVerdicts, verdicts, type Row } from './lib/report.ts';
import type { FromLoadgen, RunParams, RunResult, ToLoadgen } from './lib/types.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BACKENDS = ['yaml', 'mysql'] as const;
const BASELINES = ['trivial', 'postfix-mysql', 'postfix-lmdb'] as const;
/** Postfix's "typical tutorial" virtual_mailbox_maps query, against mailwarden's own schema. */
const TUTORIAL_QUERY = "SELECT 1 FROM mailbox WHERE address='%s' AND enabled=1";

const USAGE = `usage: node bench/socketmap.ts [options]
  --quick                 smoke check: 10,000 mailboxes, 1.5 s runs, 0.3 s warm-up, no quiet-wait
  --seconds N             measured seconds per configuration (default 5)
  --requests N            stop each measured run after N lookups instead (still capped by --seconds x 10)
  --warmup S              unmeasured seconds before each socketmap run (default 1)
  --repeat N              run every configuration N times and report the median run (default 1)
  --concurrency LIST      connections / parallel postmap processes (default 1,10,50)
  --backends LIST         mailwarden backends: yaml,mysql (default both; "" for none)
  --baselines LIST        trivial,postfix-mysql,postfix-lmdb (default all; "" for none)
  --mailboxes N           mailboxes (default 100000)
  --domains N             mailbox domains (default 100)
  --rcpts N               RCPT addresses in the key stream (default max(20000, mailboxes))
  --seed N                data and key-mix seed (default 42)
  --cache-ttl DURATION    mailwarden MariaDB cache_ttl (default 10m)
  --pool-size N           mailwarden MariaDB pool_size (default 10)
  --mailwarden DIR        mailwarden checkout to benchmark (default: this one); its src/ and bin/ are
                          copied at start, so edits made while the benchmark runs do not affect it
  --rev REV               benchmark a git revision of --mailwarden instead of its working tree
                          (extracted with git archive; e.g. HEAD while the tree is being edited)
  --cpu-prof DIR          run mailwarden under node --cpu-prof, profiles written to DIR
  --keep                  keep the temporary directory (data, configs, logs)
  --quiet-wait S          before each run, wait up to S seconds for other processes to use < 10% of the
                          CPUs (default 300, --quick 0; 0 = do not wait)
  --retries N             re-run a run that other processes disturbed anyway, up to N times (default 2, --quick 0)
  --json                  print the results as JSON on stdout instead of the table (progress stays on stderr)
  --json-out FILE         also write the JSON results to FILE
  -h, --help`;

interface Options {
  seconds: number;
  requests: number;
  warmup: number;
  repeat: number;
  concurrency: number[];
  backends: Array<(typeof BACKENDS)[number]>;
  baselines: Array<(typeof BASELINES)[number]>;
  mailboxes: number;
  domains: number;
  rcpts: number;
  seed: number;
  cacheTtl: string;
  poolSize: number;
  cpuProf: string | undefined;
  mailwarden: string;
  rev: string | undefined;
  keep: boolean;
  quietWait: number;
  retries: number;
  json: boolean;
  jsonOut: string | undefined;
  quick: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      seconds: { type: 'string' },
      requests: { type: 'string' },
      warmup: { type: 'string' },
      repeat: { type: 'string' },
      concurrency: { type: 'string' },
      backends: { type: 'string' },
      baselines: { type: 'string' },
      mailboxes: { type: 'string' },
      domains: { type: 'string' },
      rcpts: { type: 'string' },
      seed: { type: 'string' },
      'cache-ttl': { type: 'string' },
      'pool-size': { type: 'string' },
      'cpu-prof': { type: 'string' },
      mailwarden: { type: 'string' },
      rev: { type: 'string' },
      keep: { type: 'boolean' },
      json: { type: 'boolean' },
      'quiet-wait': { type: 'string' },
      retries: { type: 'string' },
      'json-out': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const quick = values.quick ?? false;
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
    return items as T[];
  };
  const concurrency = (values.concurrency ?? '1,10,50').split(',').map((s) => Number(s.trim()));
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 1000)) usage('--concurrency must be a list of integers 1..1000');
  const mailboxes = Math.floor(num('mailboxes', values.mailboxes, quick ? 10_000 : 100_000, 10));
  return {
    seconds: num('seconds', values.seconds, quick ? 1.5 : 5, 0.1),
    requests: Math.floor(num('requests', values.requests, 0)),
    warmup: num('warmup', values.warmup, quick ? 0.3 : 1),
    repeat: Math.floor(num('repeat', values.repeat, 1, 1)),
    concurrency,
    backends: list('backends', values.backends, BACKENDS),
    baselines: list('baselines', values.baselines, BASELINES),
    mailboxes,
    domains: Math.floor(num('domains', values.domains, quick ? 20 : 100, 2)),
    rcpts: Math.floor(num('rcpts', values.rcpts, Math.max(20_000, mailboxes), 100)),
    seed: Math.floor(num('seed', values.seed, 42)),
    cacheTtl: values['cache-ttl'] ?? '10m',
    poolSize: Math.floor(num('pool-size', values['pool-size'], 10, 1)),
    cpuProf: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined,
    mailwarden: path.resolve(values.mailwarden ?? ROOT),
    rev: values.rev,
    keep: values.keep ?? false,
    quietWait: num('quiet-wait', values['quiet-wait'], quick ? 0 : 300),
    retries: Math.floor(num('retries', values.retries, quick ? 0 : 2)),
    json: values.json ?? false,
    jsonOut: values['json-out'],
    quick,
  };
}

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n${USAGE}\n`);
  process.exit(64);
}

/** Run facts for the report and --json. */
const meta: Record<string, unknown> = {};

const t0 = Date.now();
function progress(message: string): void {
  process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
}

// --- the load generator process ---

class Loadgen {
  readonly #child: ChildProcess;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (r: RunResult) => void; reject: (e: Error) => void }>();

  constructor() {
    // Its own process group: Ctrl-C reaches only us; it exits when our IPC channel closes.
    this.#child = fork(path.join(ROOT, 'bench/lib/loadgen.ts'), [], { detached: true, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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

  get pid(): number {
    return this.#child.pid!;
  }

  run(params: RunParams): Promise<RunResult> {
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

// --- a one-off socketmap client for sanity probes ---

function ask(socket: string, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let buf = Buffer.alloc(0);
    s.once('error', reject);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const colon = buf.indexOf(0x3a);
      if (colon < 0) return;
      const len = Number(buf.subarray(0, colon).toString());
      if (buf.length >= colon + 2 + len) {
        s.destroy();
        resolve(buf.subarray(colon + 1, colon + 1 + len).toString());
      }
    });
    const body = Buffer.from(payload);
    s.write(Buffer.concat([Buffer.from(`${body.length}:`), body, Buffer.from(',')]));
  });
}

/** Checks a few answers before measuring anything: a fast wrong server is worthless. */
async function probe(socket: string, ds: Dataset, what: string): Promise<void> {
  const mb = ds.mailboxes.find((m) => m.enabled)!;
  const alias = ds.aliases.find((a) => a.enabled && !a.address.startsWith('@'))!;
  const checks: Array<[string, string]> = [
    [`virtual_mailbox_maps ${mb.local}@${mb.domain}`, `OK ${mb.domain}/${mb.local}/`],
    [`virtual_mailbox_maps ${mb.local}+bench@${mb.domain}`, `OK ${mb.domain}/${mb.local}/`],
    [`virtual_alias_maps ${mb.local}@${mb.domain}`, 'NOTFOUND '],
    [`virtual_alias_maps ${alias.address}`, `OK ${alias.targets.join(',')}`],
    ['virtual_mailbox_maps nobody@no-such-domain.invalid', 'NOTFOUND '],
  ];
  for (const [req, want] of checks) {
    const got = await ask(socket, req);
    if (got !== want) throw new Error(`${what}: ${req} answered ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  }
}

// --- main ---

let quietWaitS = 300;
let retries = 2;

/**
 * Runs `fn` `repeat` times and keeps the run with the median throughput. Each
 * run waits for a quiet host first, and a run that other processes disturbed
 * anyway (other CPU >= 10%) is retried up to `retries` times; the median is
 * taken among undisturbed runs when there are any. Every kept run's
 * throughput is reported.
 */
async function medianOf<T extends { lookupsPerSecond: number; otherCpuShare: number; stealShare: number }>(repeat: number, fn: (i: number) => Promise<T>): Promise<{ best: T; all: number[] }> {
  const runs: T[] = [];
  for (let i = 0; i < repeat; i++) {
    for (let attempt = 0; ; attempt++) {
      if (quietWaitS > 0) await waitForQuiet(quietWaitS, progress);
      const r = await fn(i);
      if (r.otherCpuShare + r.stealShare < QUIET || attempt >= retries) {
        runs.push(r);
        break;
      }
      progress(`  run disturbed (other processes ${(r.otherCpuShare * 100).toFixed(0)}%, hypervisor steal ${(r.stealShare * 100).toFixed(0)}% of the CPUs): retrying`);
    }
  }
  const quiet = runs.filter((r) => r.otherCpuShare + r.stealShare < QUIET);
  const sorted = (quiet.length ? quiet : runs).slice().sort((a, b) => a.lookupsPerSecond - b.lookupsPerSecond);
  return { best: sorted[Math.floor((sorted.length - 1) / 2)]!, all: runs.map((r) => Math.round(r.lookupsPerSecond)) };
}

const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  quietWaitS = opts.quietWait;
  retries = opts.retries;
  installSignalHandlers();
  const cores = os.availableParallelism();
  const tmp = benchTempDir('mailwarden-bench-', { keep: opts.keep });
  progress(`temp dir ${tmp}${opts.keep ? ' (kept)' : ''}; ${cores} CPU cores shared by the load generator, the server and mysqld`);

  progress(`generating ${fmt(opts.mailboxes)} mailboxes over ${opts.domains} domains, ${fmt(opts.rcpts)} RCPT keys (seed ${opts.seed})`);
  const ds = generateDataset({ mailboxes: opts.mailboxes, domains: opts.domains, seed: opts.seed, rcpts: opts.rcpts });
  const files = {
    directory: path.join(tmp, 'directory.yaml'),
    stream: path.join(tmp, 'requests-stream.txt'),
    distinct: path.join(tmp, 'requests-distinct.txt'),
    jitWarmup: path.join(tmp, 'requests-jit-warmup.txt'),
    vmailbox: path.join(tmp, 'vmailbox'),
    postfixDir: path.join(tmp, 'postfix'),
  };
  writeFileSync(files.directory, directoryYaml(ds));
  writeFileSync(files.stream, `${ds.requests.join('\n')}\n`);
  writeFileSync(files.distinct, `${ds.distinctRequests.join('\n')}\n`);
  writeFileSync(files.jitWarmup, `${ds.distinctRequests.slice(-Math.min(20_000, Math.floor(ds.distinctRequests.length / 5))).join('\n')}\n`);
  mkdirSync(files.postfixDir);
  writeFileSync(path.join(files.postfixDir, 'main.cf'), '');
  progress(`${fmt(ds.requests.length)} socketmap requests per stream pass, ${fmt(ds.distinctRequests.length)} distinct`);

  // A frozen copy of the mailwarden under test: other people may be editing src/ while we run.
  const mwRoot = path.join(tmp, 'mailwarden');
  const copied = copyMailwarden(opts.mailwarden, opts.rev, mwRoot);
  if (copied.commit) meta['mailwardenRevision'] = copied.commit;
  progress(copied.description);
  meta['mailwarden'] = opts.mailwarden;

  const loadgen = new Loadgen();
  const rows: Row[] = [];
  const durationMs = opts.seconds * 1000;
  const maxRequests = opts.requests;
  const measureMs = maxRequests > 0 ? durationMs * 10 : durationMs;

  const disturbed = (other: number, steal: number) =>
    other > 0.05 || steal > 0.02 ? ` [WARNING: other processes used ${pct(other)} and steal ${pct(steal)} of the CPUs: disturbed]` : '';

  /** One socketmap configuration at one concurrency: `repeat` runs, the median kept. */
  const socketmapRow = async (group: Row['group'], configuration: string, c: number, run: (i: number) => Promise<RunResult>, note?: string) => {
    const { best: r, all } = await medianOf(opts.repeat, run);
    const errors = r.statuses.TEMP + r.statuses.PERM + r.statuses.other;
    rows.push({
      group, configuration, concurrency: c,
      lookupsPerSecond: r.lookupsPerSecond, requests: r.requests, seconds: r.seconds,
      p50Us: r.latencyUs.p50, p99Us: r.latencyUs.p99, p999Us: r.latencyUs.p999, maxUs: r.latencyUs.max,
      serverCpuUs: r.cpuUsPerLookup['server'],
      ...(r.cpuUsPerLookup['mysqld'] !== undefined ? { mysqldCpuUs: r.cpuUsPerLookup['mysqld'] } : {}),
      clientCpuUs: r.clientCpuUsPerLookup,
      found: r.requests ? r.statuses.OK / r.requests : 0,
      errors,
      otherCpuShare: r.otherCpuShare,
      stealShare: r.stealShare,
      ...(all.length > 1 ? { repeats: all } : {}),
      ...(r.exhausted ? { exhausted: true } : {}),
      ...(note ? { note } : {}),
    });
    progress(`  ${configuration} c=${c}: ${fmt(r.lookupsPerSecond)}/s${all.length > 1 ? ` (median of ${all.map(fmt).join(', ')})` : ''}, `
      + `p50 ${r.latencyUs.p50.toFixed(0)} µs, p99 ${r.latencyUs.p99.toFixed(0)} µs, server ${r.cpuUsPerLookup['server']?.toFixed(1)} µs/lookup`
      + `${r.cpuUsPerLookup['mysqld'] !== undefined ? `, mysqld ${r.cpuUsPerLookup['mysqld'].toFixed(1)} µs/lookup` : ''}`
      + `${errors ? `, ${errors} ERRORS` : ''}${r.exhausted ? ` (key list used up after ${fmt(r.requests)} lookups)` : ''}`
      + disturbed(r.otherCpuShare, r.stealShare));
  };

  const cycleRuns = async (group: Row['group'], configuration: string, socket: string, cpuPids: Record<string, number>) => {
    for (const c of opts.concurrency) {
      await socketmapRow(group, configuration, c, () => loadgen.run({
        socket, requests: files.stream, concurrency: c, mode: 'cycle', warmupMs: opts.warmup * 1000,
        durationMs: measureMs, maxRequests, cpuPids,
      }));
    }
  };

  const postmapRow = async (group: Row['group'], configuration: string, pm: PostmapOptions, n: number, calibration: Map<string, number>) => {
    const { best: r, all } = await medianOf(opts.repeat, (i) => runPostmapFor(pm, ds.mailboxMapKeys, n, opts.seconds, cores, calibration, `${group}-${n}-${i}`));
    cleanKeyFiles(tmp);
    rows.push({
      group, configuration, concurrency: n,
      lookupsPerSecond: r.lookupsPerSecond, requests: r.lookups, seconds: r.seconds,
      serverCpuUs: r.postmapCpuUsPerLookup,
      ...(r.mysqldCpuUsPerLookup !== undefined ? { mysqldCpuUs: r.mysqldCpuUsPerLookup } : {}),
      found: r.found, errors: 0, otherCpuShare: r.otherCpuShare, stealShare: r.stealShare,
      ...(all.length > 1 ? { repeats: all } : {}),
    });
    progress(`  ${configuration} x${n}: ${fmt(r.lookupsPerSecond)}/s${all.length > 1 ? ` (median of ${all.map(fmt).join(', ')})` : ''}, `
      + `postmap ${r.postmapCpuUsPerLookup.toFixed(1)} µs/lookup${r.mysqldCpuUsPerLookup !== undefined ? `, mysqld ${r.mysqldCpuUsPerLookup.toFixed(1)} µs/lookup` : ''}`
      + disturbed(r.otherCpuShare, r.stealShare));
  };

  // --- (c) the protocol ceiling ---
  if (opts.baselines.includes('trivial')) {
    progress('trivial always-OK socketmap server');
    const socket = path.join(tmp, 'trivial.sock');
    const server = await startDaemon(process.execPath, [path.join(ROOT, 'bench/lib/trivial-server.ts'), socket], { log: path.join(tmp, 'trivial.log'), name: 'trivial-server' });
    await waitForSocket(socket, 10_000, () => !server.exited, 'trivial server');
    await cycleRuns('trivial', 'trivial socketmap (always OK)', socket, { server: server.pid });
    await server.stop();
  }

  // --- mailwarden ---
  const startMailwarden = async (name: string, directory: string): Promise<{ daemon: Daemon; socket: string }> => {
    const socket = path.join(tmp, `${name}.sock`);
    const config = path.join(tmp, `${name}.yaml`);
    writeFileSync(config, [
      '# Generated by bench/socketmap.ts',
      directory,
      'recipient_delimiter: "+"',
      'log:',
      '  level: warn',
      'socketmap:',
      `  listen: unix:${socket}`,
      '  mode: "0600"',
      '',
    ].join('\n'));
    const env = { ...process.env };
    if (opts.cpuProf) {
      mkdirSync(opts.cpuProf, { recursive: true });
      env['NODE_OPTIONS'] = `${env['NODE_OPTIONS'] ?? ''} --cpu-prof --cpu-prof-dir=${opts.cpuProf}`.trim();
    }
    const started = Date.now();
    const daemon = await startDaemon(path.join(mwRoot, 'bin/mailwarden'), ['--config', config, 'serve'], { log: path.join(tmp, `${name}.log`), name: `mailwarden-${name}`, env });
    try {
      await waitForSocket(socket, 1_800_000, () => !daemon.exited, `mailwarden (${name})`);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${daemon.logTail()}`);
    }
    const startSeconds = (Date.now() - started) / 1000;
    (meta['mailwardenStartSeconds'] as Record<string, number>)[name] = startSeconds;
    progress(`  mailwarden (${name}) pid ${daemon.pid} answering after ${startSeconds.toFixed(1)} s, RSS ${rssMb(daemon.pid)} MB`);
    await probe(socket, ds, `mailwarden (${name})`);
    return { daemon, socket };
  };
  meta['mailwardenStartSeconds'] = {};

  if (opts.backends.includes('yaml')) {
    progress(`mailwarden, YAML directory backend (${fmt(statSync(files.directory).size / 1024)} KiB file)`);
    const { daemon, socket } = await startMailwarden('yaml', ['directory:', '  backend: yaml', `  path: ${files.directory}`].join('\n'));
    await cycleRuns('yaml', 'mailwarden yaml', socket, { server: daemon.pid });
    await daemon.stop();
  }

  // --- (b) Postfix lmdb: (in-process ceiling) ---
  const calibration = new Map<string, number>();
  if (opts.baselines.includes('postfix-lmdb')) {
    progress('Postfix lmdb: table (postmap -q - lmdb:...)');
    writeFileSync(files.vmailbox, vmailboxSource(ds));
    execFileSync('postmap', ['-c', files.postfixDir, `lmdb:${files.vmailbox}`], { stdio: ['ignore', 'ignore', 'inherit'] });
    const pm: PostmapOptions = { configDir: files.postfixDir, table: `lmdb:${files.vmailbox}`, workDir: tmp };
    for (const n of [...new Set([1, cores])]) await postmapRow('postfix-lmdb', 'postfix lmdb: (postmap -q)', pm, n, calibration);
  }

  // --- MariaDB: (a) Postfix mysql: and mailwarden's mysql backend ---
  if (opts.backends.includes('mysql') || opts.baselines.includes('postfix-mysql')) {
    progress('starting a private MariaDB (test/support/mariadb.ts)');
    const { startMariaDb } = await import('../test/support/mariadb.ts');
    const db = await startMariaDb();
    const mysqldPid = Number(readFileSync(path.join(path.dirname(db.socket), 'mysqld.pid'), 'utf8').trim());
    onCleanup('stop MariaDB', async () => {
      await db.stop();
      // If Ctrl-C already took down its watchdog shell, make sure mariadbd itself goes.
      if (isAlive(mysqldPid)) {
        process.kill(mysqldPid, 'SIGTERM');
        for (let i = 0; i < 300 && isAlive(mysqldPid); i++) await sleep(100);
      }
    });
    const dbName = 'mwbench';
    await db.createDatabase(dbName);
    await db.admin("CREATE USER IF NOT EXISTS 'postfix'@'localhost' IDENTIFIED BY 'postfix'");
    await db.admin(`GRANT SELECT ON \`${dbName}\`.* TO 'postfix'@'localhost'`);
    const pool = mysql.createPool({ socketPath: db.socket, user: 'root', database: dbName, connectionLimit: 2, timezone: 'Z' });
    onCleanup('close loader pool', () => pool.end());
    const loadStart = Date.now();
    await loadDataset(pool, ds);
    const version = String(((await db.admin('SELECT VERSION() AS v')) as Array<{ v: string }>)[0]?.v);
    meta['mariadb'] = version;
    progress(`  MariaDB ${version} (mysqld pid ${mysqldPid}) loaded in ${((Date.now() - loadStart) / 1000).toFixed(1)} s`);

    if (opts.baselines.includes('postfix-mysql')) {
      progress(`Postfix mysql: table (postmap -q - mysql:...), query = ${TUTORIAL_QUERY}`);
      const cf = path.join(files.postfixDir, 'mysql-virtual-mailbox-maps.cf');
      writeFileSync(cf, [
        "# A typical tutorial virtual_mailbox_maps, against mailwarden's schema",
        `hosts = unix:${db.socket}`,
        'user = postfix',
        'password = postfix',
        `dbname = ${dbName}`,
        `query = ${TUTORIAL_QUERY}`,
        '',
      ].join('\n'));
      const pm: PostmapOptions = { configDir: files.postfixDir, table: `mysql:${cf}`, workDir: tmp, mysqldPid };
      for (const n of opts.concurrency) await postmapRow('postfix-mysql', 'postfix mysql: (postmap -q)', pm, n, calibration);
    }

    if (opts.backends.includes('mysql')) {
      progress(`mailwarden, MariaDB directory backend (cache_ttl ${opts.cacheTtl}, pool_size ${opts.poolSize}, preload off)`);
      const { daemon, socket } = await startMailwarden('mysql', [
        'directory:',
        '  backend: mysql',
        `  url: "${db.socketUrl(dbName)}"`,
        `  pool_size: ${opts.poolSize}`,
        '  query_timeout: 2s',
        `  cache_ttl: ${opts.cacheTtl}`,
        '  cache_size: 1000000',
        // The cold rows measure the on-demand path (a miss read from MariaDB): with the preload a flush
        // would start a background pass racing the run. bench/dovecot.ts measures the preload (--preload).
        '  preload: false',
      ].join('\n'));
      const cpuPids = { server: daemon.pid, mysqld: mysqldPid };
      const flush = async () => {
        await bumpSerial(pool);
        await sleep(1200); // the daemon polls the change serial every second
      };
      // JIT warm-up on keys the cold runs reach last (if at all); the cache is flushed before every cold run.
      await loadgen.run({ socket, requests: files.jitWarmup, concurrency: 10, mode: 'once', warmupMs: 0, durationMs: Math.max(1000, opts.warmup * 1000), maxRequests: 0, cpuPids });
      for (const c of opts.concurrency) {
        await socketmapRow('mysql-cold', 'mailwarden mysql, cold cache', c, async () => {
          await flush();
          return loadgen.run({ socket, requests: files.distinct, concurrency: c, mode: 'once', warmupMs: 0, durationMs: measureMs, maxRequests, cpuPids });
        }, 'first pass over distinct keys right after a cache flush');
      }
      await flush();
      const fillC = Math.max(...opts.concurrency);
      progress(`  filling the cache: one pass over all ${fmt(ds.distinctRequests.length)} distinct requests at c=${fillC}`);
      const fill = await loadgen.run({ socket, requests: files.distinct, concurrency: fillC, mode: 'once', warmupMs: 0, durationMs: 1_800_000, maxRequests: 0, cpuPids });
      progress(`  cache filled: ${fmt(fill.requests)} lookups in ${fill.seconds.toFixed(1)} s (${fmt(fill.lookupsPerSecond)}/s, p99 ${fmt(fill.latencyUs.p99)} µs, `
        + `mysqld ${fill.cpuUsPerLookup['mysqld']?.toFixed(1)} µs/lookup)${fill.statuses.TEMP ? `, ${fill.statuses.TEMP} TEMP` : ''}`);
      meta['mysqlCacheFill'] = { concurrency: fillC, requests: fill.requests, seconds: fill.seconds, lookupsPerSecond: fill.lookupsPerSecond, p99Us: fill.latencyUs.p99, temp: fill.statuses.TEMP };
      await cycleRuns('mysql-warm', 'mailwarden mysql, warm cache', socket, cpuPids);
      progress(`  mailwarden (mysql) RSS ${rssMb(daemon.pid)} MB with a full cache`);
      await daemon.stop();
    }
  }

  const order: Row['group'][] = ['trivial', 'yaml', 'mysql-warm', 'mysql-cold', 'postfix-mysql', 'postfix-lmdb'];
  rows.sort((a, b) => order.indexOf(a.group) - order.indexOf(b.group) || a.concurrency - b.concurrency);
  const v = verdicts(rows);
  Object.assign(meta, {
    node: process.version,
    postfix: postfixVersion(),
    cores,
    mailboxes: ds.mailboxes.length,
    domains: ds.domains.length,
    aliases: ds.aliases.length,
    rcpts: ds.rcpts.length,
    rcptKinds: ds.rcptKinds,
    requestsPerPass: ds.requests.length,
    distinctRequests: ds.distinctRequests.length,
    seconds: opts.seconds,
    warmupSeconds: opts.warmup,
    repeat: opts.repeat,
    concurrency: opts.concurrency,
    mysqlCacheTtl: opts.cacheTtl,
    postfixMysqlQuery: TUTORIAL_QUERY,
  });
  const json = `${JSON.stringify({ meta, rows, verdicts: v }, null, 2)}\n`;
  if (opts.jsonOut) writeFileSync(opts.jsonOut, json);
  if (opts.json) {
    process.stdout.write(json);
    return;
  }
  const starts = meta['mailwardenStartSeconds'] as Record<string, number>;
  process.stdout.write([
    '',
    `mailwarden socketmap benchmark: ${fmt(ds.mailboxes.length)} mailboxes, ${ds.domains.length} domains, ${fmt(ds.aliases.length)} aliases; `
      + `${fmt(ds.rcpts.length)} RCPT keys; ${opts.seconds} s per run${opts.repeat > 1 ? `, median of ${opts.repeat}` : ''}`,
    `Node ${process.version}, Postfix ${meta['postfix']}${meta['mariadb'] ? `, MariaDB ${meta['mariadb']}` : ''}; `
      + `NOTE: load generator, server and mysqld all share the same ${cores} CPU cores.`,
    'conc = persistent connections, one request in flight each (postmap rows: processes in parallel, one MySQL connection each).',
    '',
    formatTable(rows),
    '',
    'server CPU: mailwarden / trivial server process (utime+stime, /proc); for postmap rows postmap itself, which runs the table in-process.',
    'other/steal: CPU used by everything else on the host (system busy time minus the measured processes) and hypervisor steal,',
    'as shares of all cores; anything above a few percent means the row was disturbed.',
    'postmap rows: one query per virtual_mailbox_maps key; no per-lookup latency. Socketmap rows answer the RCPT stream: virtual_alias_maps',
    'for every RCPT and virtual_mailbox_maps for hosted domains, with extension stripping and catch-alls done server-side.',
    ...(opts.backends.includes('mysql')
      ? [`mysql cold: first pass over distinct keys right after a cache flush (every lookup misses); warm: the stream with every key cached (cache_ttl ${opts.cacheTtl}).`]
      : []),
    ...(Object.keys(starts).length ? [`mailwarden start-up until the socket answered: ${Object.entries(starts).map(([k, s]) => `${k} ${s.toFixed(1)} s`).join(', ')}.`] : []),
    '',
    formatVerdicts(v),
    '',
  ].join('\n'));
}

function rssMb(pid: number): string {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return (kb / 1024).toFixed(0);
  } catch {
    return '?';
  }
}

function postfixVersion(): string {
  try {
    return execFileSync('postconf', ['-d', '-h', 'mail_version'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

function cleanKeyFiles(dir: string): void {
  for (const f of readdirSync(dir)) if (/^(keys|out)-/.test(f)) rmSync(path.join(dir, f), { force: true });
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
