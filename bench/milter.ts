// Milter benchmark: mailwarden's milter against OpenDKIM and OpenDKIM +
// OpenDMARC (Debian packages) and a trivial always-CONTINUE milter, on the
// same messages and the same test DNS, driven by a load generator that
// speaks the MTA side like Postfix, over UNIX sockets (Debian's default for
// OpenDKIM and OpenDMARC; --transport inet for 127.0.0.1 TCP). Verify-only
// (inbound, DKIM-signed messages) and sign-only (submission with
// {daemon_name}=ORIGINATING), then 10 MB (and, for mailwarden, 30 MB)
// messages on fresh processes for the flat-memory check. See bench/README.md.
//
//   node bench/milter.ts [--seconds 4] [--concurrency 1,10,50] [--only mailwarden,opendkim] ...
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/support/ports.ts';
import { AUTHSERV_ID, generateMilterDataset } from './lib/milter-data.ts';
import { installedTargets, postfixNotation, startMilter, type MilterEndpoint, type MilterKind, type RunningMilter } from './lib/milter-peers.ts';
import type { FromMilterLoadgen, MilterRunParams, MilterRunResult, ToMilterLoadgen } from './lib/milter-types.ts';
import type { DnsStats, FromDns, ToDns } from './lib/policy-types.ts';
import { writeResolvConf } from './lib/policy-peers.ts';
import { benchTempDir, copyMailwarden, installSignalHandlers, interrupted, QUIET, runCleanups, sleep, waitForQuiet } from './lib/proc.ts';
import { Child } from './lib/child.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const TARGETS = ['trivial', 'mailwarden', 'opendkim', 'opendkim+opendmarc'] as const;
type TargetName = (typeof TARGETS)[number];
type Phase = 'verify' | 'sign';

/** Which milters make up a target in each phase (a chain is called in order per message, like smtpd_milters). */
const CHAINS: Record<Phase, Partial<Record<TargetName, MilterKind[]>>> = {
  verify: { trivial: ['trivial'], mailwarden: ['mailwarden'], opendkim: ['opendkim-verify'], 'opendkim+opendmarc': ['opendkim-verify', 'opendmarc'] },
  sign: { trivial: ['trivial'], mailwarden: ['mailwarden'], opendkim: ['opendkim-sign'] },
};
const WORK: Record<Phase, Record<string, string>> = {
  verify: {
    trivial: 'nothing (CONTINUE at EOM): protocol ceiling for a Node milter',
    mailwarden: 'SPF + DKIM (all signatures) + DMARC + ARC, one A-R header; DNS cache',
    opendkim: 'DKIM only (Mode v), A-R header',
    'opendkim+opendmarc': 'OpenDKIM (Mode v) then OpenDMARC (SPF self-validated, DMARC from OpenDKIM\'s A-R), two A-R headers',
  },
  sign: {
    trivial: 'nothing (CONTINUE at EOM)',
    mailwarden: 'DKIM-Signature rsa-sha256 relaxed/relaxed ({daemon_name}=ORIGINATING)',
    opendkim: 'DKIM-Signature rsa-sha256 relaxed/relaxed (Mode s, client in InternalHosts, SigningTable)',
  },
};

const USAGE = `usage: node bench/milter.ts [options]
  --seconds N          measured seconds per run (default 4)
  --warmup S           unmeasured seconds before each run (default 1)
  --concurrency LIST   concurrent SMTP sessions, each with its own milter connection(s) (default 1,10,50)
  --only LIST          targets (default all): ${TARGETS.join(',')}
  --phases LIST        verify,sign (default both)
  --messages N         distinct messages per phase, 5-20 KB each (default 200)
  --per-session N      messages per milter connection (ABORT between, QUIT after; default 3)
  --big-mb N           size of the large message for the memory check, MB (default 10; mailwarden also gets 3x that,
                       for the flat-memory verdict; each on a fresh milter process; 0 = skip)
  --big-count N        large messages per memory check (default 12, 4 concurrent sessions)
  --seed N             data seed (default 42)
  --mailwarden DIR     mailwarden checkout to benchmark (default: this one; src/, bin/ copied at start)
  --rev REV            benchmark a git revision of --mailwarden instead of its working tree (git archive; e.g. HEAD)
  --dns-address IP     loopback address for the test DNS on port 53 (default 127.53.0.3; bench/policy.ts uses .1)
  --transport T        unix (default; Debian's default for OpenDKIM/OpenDMARC) or inet (127.0.0.1 TCP: OpenDKIM and
                       OpenDMARC then wait ~40 ms per message for a delayed ACK, see bench/README.md)
  --log-level LEVEL    mailwarden log.level (default warn)
  --milter-workers N   mailwarden milter.workers: auto or a number (default: not set, i.e. the daemon's default auto =
                       none below 4 cores, else half of them; 0 = everything in the main thread; older revisions know no
                       such setting). The report shows how many worker threads the daemon ran.
  --cpu-prof DIR       run mailwarden under node --cpu-prof; DIR/mailwarden-<phase>/ gets one profile per thread (main
                       thread and auth workers; the thread id is in the name) when it stops
  --quiet-wait S       wait up to S s before each run for other processes to use < 10% of the CPUs (default 60)
  --keep               keep the temp dir
  --json-out FILE      also write the results as JSON
Peers come from Debian packages: sudo bash bench/setup-milter-peers.sh`;

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n${USAGE}\n`);
  process.exit(64);
}

const t0 = Date.now();
function progress(message: string): void {
  process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
}
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (us: number) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
const mb = (kib: number) => (kib / 1024).toFixed(0);
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;


async function waitForEndpoint(endpoint: MilterEndpoint, timeoutMs: number, m: RunningMilter, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(endpoint);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${postfixNotation(endpoint)} within ${timeoutMs / 1000} s\n${m.logTail()}`);
    await sleep(100);
  }
}


/** Size factor of the control run for the flat-memory verdict (mailwarden only): 3 x --big-mb. */
const BIG_CONTROL = 3;
const BIG_SESSIONS = 4;

interface Row {
  readonly phase: Phase | 'verify-big' | 'sign-big';
  /** Size of the large message (memory check rows). */
  readonly bigMb?: number;
  readonly target: TargetName;
  readonly concurrency: number;
  readonly result: MilterRunResult;
  readonly dnsPerMessage: number;
}

/** What a target must have done for its numbers to count. */
function checkWork(phase: Phase, target: TargetName, r: MilterRunResult): string | undefined {
  const n = r.messages;
  if (n === 0) return 'no message completed';
  const e = r.evidence;
  if (target === 'trivial') return undefined;
  if (phase === 'sign') return e.dkimSigned === n ? undefined : `only ${e.dkimSigned}/${n} messages got a DKIM-Signature`;
  if (e.dkimPass !== n) return `only ${e.dkimPass}/${n} messages got dkim=pass`;
  if (target !== 'opendkim' && e.dmarcPass !== n) return `only ${e.dmarcPass}/${n} messages got dmarc=pass`;
  if (target !== 'opendkim' && e.spfPass !== n) return `only ${e.spfPass}/${n} messages got spf=pass`;
  return undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' }, warmup: { type: 'string' }, concurrency: { type: 'string' }, only: { type: 'string' },
      phases: { type: 'string' }, messages: { type: 'string' }, 'per-session': { type: 'string' }, 'big-mb': { type: 'string' },
      'big-count': { type: 'string' }, seed: { type: 'string' }, 'dns-address': { type: 'string' }, 'log-level': { type: 'string' },
      'quiet-wait': { type: 'string' }, keep: { type: 'boolean' }, 'json-out': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      transport: { type: 'string' }, 'cpu-prof': { type: 'string' }, mailwarden: { type: 'string' }, rev: { type: 'string' },
      'milter-workers': { type: 'string' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const num = (name: string, text: string | undefined, fallback: number, min = 0): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) usage(`--${name} must be a number >= ${min}`);
    return n;
  };
  const seconds = num('seconds', values.seconds, 4, 0.2);
  const warmup = num('warmup', values.warmup, 1);
  const concurrency = (values.concurrency ?? '1,10,50').split(',').map(Number);
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 500)) usage('--concurrency: integers 1..500');
  const only = (values.only ?? TARGETS.join(',')).split(',').map((s) => s.trim()) as TargetName[];
  for (const t of only) if (!TARGETS.includes(t)) usage(`--only: unknown target ${t}`);
  const phases = (values.phases ?? 'verify,sign').split(',').map((s) => s.trim()) as Phase[];
  for (const p of phases) if (p !== 'verify' && p !== 'sign') usage(`--phases: unknown phase ${p}`);
  const messages = Math.floor(num('messages', values.messages, 200, 5));
  const perSession = Math.floor(num('per-session', values['per-session'], 3, 1));
  const bigMb = num('big-mb', values['big-mb'], 10);
  const bigCount = Math.floor(num('big-count', values['big-count'], 12, 1));
  const seed = Math.floor(num('seed', values.seed, 42));
  const dnsAddress = values['dns-address'] ?? '127.53.0.3';
  const quietWait = num('quiet-wait', values['quiet-wait'], 60);
  const logLevel = values['log-level'] ?? 'warn';
  const transport = values.transport ?? 'unix';
  if (transport !== 'unix' && transport !== 'inet') usage('--transport: unix or inet');
  const cpuProf = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
  const milterWorkers = values['milter-workers'];
  if (milterWorkers !== undefined && milterWorkers !== 'auto' && !/^\d+$/.test(milterWorkers)) usage('--milter-workers: auto or a number');
  /** Auth worker threads the mailwarden daemon ran, per phase (counted in /proc). */
  const mwWorkers: Partial<Record<Phase, number>> = {};

  installSignalHandlers();
  if (process.getuid?.() !== 0) usage('needs root: the peers run in a private mount namespace (unshare -m) and the test DNS binds port 53');
  const targets = installedTargets(only, progress);

  const tmp = benchTempDir('mailwarden-milter-bench-', { keep: values.keep, shared: true });
  const cores = os.availableParallelism();
  const sockDir = path.join(tmp, 'sockets');
  mkdirSync(sockDir, { mode: 0o755 });
  progress(`temp dir ${tmp}${values.keep ? ' (kept)' : ''}; ${cores} CPU cores shared by the load generator, the milters and the test DNS`);

  // A frozen copy of the mailwarden under test: the tree may be edited while we run.
  const mwSource = path.resolve(values.mailwarden ?? ROOT);
  const mwRoot = path.join(tmp, 'mailwarden');
  progress(copyMailwarden(mwSource, values.rev, mwRoot).description);

  const keyDir = path.join(tmp, 'dkim');
  const bigSizesMb = bigMb > 0 ? [bigMb, BIG_CONTROL * bigMb] : [];
  const ds = await generateMilterDataset({ seed, messages, tmp, keyDir, bigSizes: bigSizesMb.map((m) => Math.round(m * 1024 * 1024)) });
  const files = { verify: path.join(tmp, 'inbound.json'), sign: path.join(tmp, 'outbound.json'), resolvConf: path.join(tmp, 'resolv.conf') };
  writeFileSync(files.verify, JSON.stringify(ds.inbound));
  writeFileSync(files.sign, JSON.stringify(ds.outbound));
  const bigFiles = bigSizesMb.map((sizeMb, k) => {
    const big = { sizeMb, verify: path.join(tmp, `big-${sizeMb}-inbound.json`), sign: path.join(tmp, `big-${sizeMb}-outbound.json`) };
    writeFileSync(big.verify, JSON.stringify([ds.big[k]!.inbound]));
    writeFileSync(big.sign, JSON.stringify([ds.big[k]!.outbound]));
    return big;
  });
  const avg = (list: typeof ds.inbound) => list.reduce((a, m) => a + (m.raw.length * 3) / 4, 0) / list.length;
  progress(`${messages} inbound messages (avg ${(avg(ds.inbound) / 1024).toFixed(1)} KB; ${ds.mix['inbound:rsa'] ?? 0} RSA-2048 signed, ${ds.mix['inbound:rsa+ed25519'] ?? 0} RSA-2048 + Ed25519) `
    + `from ${ds.senderDomains} domains; ${messages} outbound from ${ds.ourKey.domain} (avg ${(avg(ds.outbound) / 1024).toFixed(1)} KB)`);

  const dns = new Child<ToDns, FromDns>(path.join(ROOT, 'bench/lib/policy-dns.ts'), 'test DNS');
  const ready = await dns.request({ type: 'start', zones: ds.zones, ttl: 3600, host: dnsAddress, dnsblZones: [] });
  if (ready.type !== 'ready') throw new Error('test DNS did not start');
  writeResolvConf(files.resolvConf, ready.address);
  progress(`test DNS on ${ready.address} (pid ${dns.pid})`);
  const dnsTotal = async (): Promise<number> => {
    const m = await dns.request({ type: 'stats' });
    return m.type === 'stats' ? (m.stats as DnsStats).total : 0;
  };

  const loadgen = new Child<ToMilterLoadgen, FromMilterLoadgen>(path.join(ROOT, 'bench/lib/milter-loadgen.ts'), 'load generator');
  const runLoad = async (params: MilterRunParams): Promise<{ result: MilterRunResult; dnsPerMessage: number }> => {
    await dnsTotal();
    const m = await loadgen.request({ type: 'run', params });
    if (m.type !== 'result') throw new Error('load generator: bad reply');
    const q = await dnsTotal();
    return { result: m.result, dnsPerMessage: q / Math.max(1, m.result.messages + m.result.warmupMessages) };
  };

  const rows: Row[] = [];
  const failed: Record<string, string> = {};
  const samples: Record<string, Record<string, string>> = {};
  for (const phase of phases) {
    for (const target of targets) {
      const kinds = CHAINS[phase][target];
      if (!kinds) continue;
      const key = `${phase}/${target}`;
      progress(`${key}: ${WORK[phase][target]}`);
      const running: RunningMilter[] = [];
      /** Starts the chain's milters (fresh processes); `run` names the profile and the sockets. */
      const startChain = async (run: string) => {
        for (const kind of kinds) {
          const endpoint: MilterEndpoint = transport === 'unix' ? { path: path.join(sockDir, `${phase}-${kind}${run}.sock`) } : { host: '127.0.0.1', port: await freePort() };
          let env: NodeJS.ProcessEnv | undefined;
          if (kind === 'mailwarden' && cpuProf) {
            // One directory per run: the main thread and each auth worker thread write their own profile (Node's default names carry the thread id).
            const dir = path.join(cpuProf, `mailwarden-${phase}${run}`);
            mkdirSync(dir, { recursive: true });
            env = { ...process.env, NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --cpu-prof --cpu-prof-dir=${dir}`.trim() };
          }
          const m = await startMilter(kind, { tmp, endpoint, dnsServer: ready.address, resolvConf: files.resolvConf, mwRoot, keyDir, ourKeyPemFile: ds.ourKeyPemFile, logLevel, ...(env ? { env } : {}), ...(milterWorkers !== undefined ? { milterWorkers } : {}) });
          running.push(m);
          await waitForEndpoint(endpoint, 60_000, m, kind);
        }
        const chain = kinds.map((k, i) => ({ name: k, endpoint: running[i]!.endpoint }));
        const trees = Object.fromEntries(kinds.map((k, i) => [k, running[i]!.pid]));
        return { chain, perSession, phase, cpuTrees: trees, rssTrees: trees };
      };
      try {
        const base = await startChain('');
        // Probe: a few messages must come back with the work done, before anything is measured.
        const probe = await runLoad({ ...base, messages: files[phase], concurrency: 1, warmupMs: 0, durationMs: 30_000, maxMessages: 3 });
        const bad = checkWork(phase, target, probe.result);
        if (bad) throw new Error(`probe: ${bad}; ${probe.dnsPerMessage.toFixed(2)} DNS queries per message reached the test DNS; headers ${JSON.stringify(probe.result.samples)}; finals ${JSON.stringify(probe.result.finals)}`);
        samples[key] = probe.result.samples;
        progress(`  probe ok: ${Object.entries(probe.result.samples).map(([k, v]) => `${k}: ${v.slice(0, 140)}`).join(' | ') || 'no headers (expected)'}`);
        if (target === 'mailwarden') {
          mwWorkers[phase] = authWorkerThreads(base.cpuTrees['mailwarden']!);
          progress(`  mailwarden runs ${mwWorkers[phase]} auth worker thread(s) (milter.workers: ${milterWorkers ?? 'default'})`);
        }
        for (const c of concurrency) {
          if (quietWait > 0) await waitForQuiet(quietWait, progress);
          const { result: r, dnsPerMessage } = await runLoad({ ...base, messages: files[phase], concurrency: c, warmupMs: warmup * 1000, durationMs: seconds * 1000, maxMessages: 0 });
          const badRun = checkWork(phase, target, r);
          rows.push({ phase, target, concurrency: c, result: r, dnsPerMessage });
          const cpu = Object.values(r.cpuUsPerMessage).reduce((a, b) => a + b, 0);
          const rss = Object.values(r.rssKiB).reduce((a, b) => a + b.peak, 0);
          progress(`  C=${c}: ${fmt(r.messagesPerSecond)} msg/s, p50 ${ms(r.latencyUs.p50)} ms, p99 ${ms(r.latencyUs.p99)} ms, milter CPU ${fmt(cpu)} µs/msg, `
            + `peak RSS ${mb(rss)} MB, DNS ${dnsPerMessage.toFixed(2)} q/msg, finals ${JSON.stringify(r.finals)}`
            + `${badRun ? ` [WORK MISSING: ${badRun}]` : ''}${r.otherCpuShare + r.stealShare >= QUIET ? ` [disturbed: other ${pct(r.otherCpuShare)}, steal ${pct(r.stealShare)}]` : ''}`);
          if (badRun) failed[`${key} C=${c}`] = badRun;
        }
        // Large messages: --big-mb for every target, and 3 x that for mailwarden (the flat-memory verdict compares the two).
        for (const big of bigFiles.filter((b, k) => target !== 'trivial' && (k === 0 || target === 'mailwarden'))) {
          // Fresh processes: the garbage the 50-session runs left in a heap would hide what the large messages cost.
          for (const m of running.splice(0).reverse()) await m.stop();
          const fresh = await startChain(`-${big.sizeMb}MB`);
          await runLoad({ ...fresh, messages: files[phase], concurrency: 1, warmupMs: 0, durationMs: 30_000, maxMessages: 3 });
          const { result: r } = await runLoad({ ...fresh, messages: big[phase], concurrency: BIG_SESSIONS, perSession: 1, warmupMs: 0, durationMs: 600_000, maxMessages: bigCount });
          rows.push({ phase: phase === 'verify' ? 'verify-big' : 'sign-big', bigMb: big.sizeMb, target, concurrency: BIG_SESSIONS, result: r, dnsPerMessage: 0 });
          const badBig = checkWork(phase, target, r);
          progress(`  ${big.sizeMb} MB x ${r.messages} (${BIG_SESSIONS} sessions, fresh process): ${r.messagesPerSecond.toFixed(1)} msg/s, p50 ${ms(r.latencyUs.p50)} ms, `
            + `RSS ${Object.entries(r.rssKiB).map(([k, v]) => `${k} ${mb(v.start)} -> peak ${mb(v.peak)} -> ${mb(v.end)} MB`).join(', ')}${badBig ? ` [WORK MISSING: ${badBig}]` : ''}`);
          if (badBig) failed[`${key} ${big.sizeMb} MB`] = badBig;
        }
      } catch (err) {
        if (interrupted) throw err;
        const msg = (err as Error).message.split('\n').slice(0, 3).join(' ');
        progress(`  FAILED: ${msg}\n${running.map((m) => m.logTail()).join('\n')}`);
        failed[key] = msg;
      }
      for (const m of running.reverse()) await m.stop();
    }
  }

  const versions: Record<string, string> = {};
  for (const pkg of ['opendkim', 'opendmarc']) {
    try {
      versions[pkg] = execFileSync('dpkg-query', ['-W', '-f=${Version}', pkg], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      versions[pkg] = 'not installed';
    }
  }
  if (values['json-out']) writeFileSync(values['json-out'], `${JSON.stringify({ meta: { node: process.version, cores, seed, messages, perSession, seconds, transport, bigMb, bigCount, versions, samples, failed, milterWorkers: milterWorkers ?? 'default', mailwardenWorkerThreads: mwWorkers }, rows }, null, 2)}\n`);

  const out: string[] = [];
  out.push('', `mailwarden milter benchmark: ${messages} distinct messages per phase cycling, ${perSession} per milter connection; ${seconds} s per run after ${warmup} s warm-up; `
    + `Node ${process.version}; ${cores} cores shared by load generator, milters and test DNS; milters on ${transport === 'unix' ? 'UNIX sockets' : '127.0.0.1 TCP'}. `
    + `Peers: opendkim ${versions['opendkim']}, opendmarc ${versions['opendmarc']}.`);
  if (Object.keys(mwWorkers).length) {
    out.push(`mailwarden milter.workers: ${milterWorkers ?? 'default (auto: none below 4 cores, else half of them)'}; auth worker threads running: `
      + `${Object.entries(mwWorkers).map(([phase, n]) => `${phase} ${n}`).join(', ')} (0 = verification and signing in the main thread).`);
  }
  for (const phase of phases) {
    out.push('', `${phase === 'verify' ? 'Verify only (inbound, DKIM-signed 5-20 KB)' : 'Sign only (outbound from our domain, 5-20 KB)'}:`);
    out.push(`${'target'.padEnd(20)} ${'C'.padStart(3)} ${'msg/s'.padStart(7)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'CPU µs/msg'.padStart(10)} ${'RSS MB'.padStart(7)} ${'DNS q/msg'.padStart(9)} ${'other'.padStart(5)}  work seen (of measured messages)`);
    for (const c of concurrency) {
      for (const r of rows.filter((x) => x.phase === phase && x.concurrency === c)) {
        const x = r.result;
        const cpu = Object.values(x.cpuUsPerMessage).reduce((a, b) => a + b, 0);
        const rss = Object.values(x.rssKiB).reduce((a, b) => a + b.peak, 0);
        const e = x.evidence;
        const work = r.target === 'trivial' ? `${fmt(x.messages)} CONTINUE`
          : phase === 'sign' ? `DKIM-Signature ${fmt(e.dkimSigned)}/${fmt(x.messages)}`
          : `dkim=pass ${fmt(e.dkimPass)}, spf=pass ${fmt(e.spfPass)}, dmarc=pass ${fmt(e.dmarcPass)} /${fmt(x.messages)}`;
        out.push(`${r.target.padEnd(20)} ${String(c).padStart(3)} ${fmt(x.messagesPerSecond).padStart(7)} ${ms(x.latencyUs.p50).padStart(7)} ${ms(x.latencyUs.p99).padStart(7)} `
          + `${fmt(cpu).padStart(10)} ${mb(rss).padStart(7)} ${r.dnsPerMessage.toFixed(2).padStart(9)} ${pct(x.otherCpuShare + x.stealShare).padStart(5)}  ${work}`);
      }
    }
  }
  const big = rows.filter((r) => r.bigMb !== undefined);
  if (big.length) {
    out.push('', `Large messages (${bigCount} per run, ${BIG_SESSIONS} concurrent sessions, fresh milter processes after 3 small messages; RSS of the milter process(es): before -> highest 100 ms sample -> after):`);
    for (const r of big) {
      const x = r.result;
      out.push(`  ${`${r.phase.replace('-big', '')} ${r.bigMb} MB`.padEnd(14)} ${r.target.padEnd(20)} ${x.messagesPerSecond.toFixed(2).padStart(6)} msg/s, p50 ${ms(x.latencyUs.p50)} ms, `
        + `${Object.entries(x.rssKiB).map(([k, v]) => `${k} ${mb(v.start)} -> ${mb(v.peak)} -> ${mb(v.end)} MB`).join(', ')}; `
        + `${r.phase.startsWith('sign') ? `signed ${x.evidence.dkimSigned}` : `dkim=pass ${x.evidence.dkimPass}`}/${x.messages}`);
    }
  }
  // Targets from issue 5.
  out.push('', 'Targets (issue 5):');
  for (const c of concurrency) {
    const get = (phase: Phase, t: TargetName) => rows.find((r) => r.phase === phase && r.target === t && r.concurrency === c)?.result;
    const line = (phase: Phase, peer: TargetName, peerLabel: string, factor: number) => {
      const mw = get(phase, 'mailwarden');
      const other = get(phase, peer);
      if (!mw || !other) return;
      const disturbed = [mw, other].some((x) => x.otherCpuShare + x.stealShare >= QUIET);
      const ratio = mw.messagesPerSecond / other.messagesPerSecond;
      out.push(`  ${phase.padEnd(6)} C=${String(c).padEnd(3)} mailwarden ${fmt(mw.messagesPerSecond)} msg/s vs ${peerLabel} ${fmt(other.messagesPerSecond)}: ${ratio.toFixed(2)}x `
        + `(target >= ${factor}x) ${ratio >= factor ? 'MET' : 'NOT MET'}${disturbed ? ' (disturbed: other processes used the CPUs)' : ''}`);
    };
    line('verify', 'opendkim+opendmarc', 'OpenDKIM+OpenDMARC', 2);
    line('sign', 'opendkim', 'OpenDKIM', 1);
  }
  // Flat: the RSS growth does not follow the message size. Tripling the size adds 2 x BIG_SESSIONS x --big-mb
  // to what is in flight; a milter that held the messages would grow by at least that much more, a streaming
  // one by about nothing (half of it, at least 32 MB, is the margin for the noise of V8's heap sizing, which
  // moves the peak by 20-30 MB from run to run: below --big-mb 10 the verdict says little).
  for (const phase of phases) {
    const growth = (sizeMb: number) => {
      const r = big.find((x) => x.target === 'mailwarden' && x.phase === `${phase}-big` && x.bigMb === sizeMb);
      const v = r && Object.values(r.result.rssKiB)[0];
      return v && r.result.messages > 0 ? (v.peak - v.start) / 1024 : undefined;
    };
    const g1 = growth(bigMb);
    const g3 = growth(BIG_CONTROL * bigMb);
    if (g1 === undefined || g3 === undefined) continue;
    const extra = (BIG_CONTROL - 1) * BIG_SESSIONS * bigMb;
    const margin = Math.max(extra / 2, 32);
    out.push(`  ${phase.padEnd(6)} ${bigMb} MB mailwarden RSS growth ${g1.toFixed(0)} MB, at ${BIG_CONTROL * bigMb} MB ${g3.toFixed(0)} MB (${extra} MB more in flight; `
      + `flat = less than ${margin.toFixed(0)} MB more): ${g3 - g1 < margin ? 'MET' : 'NOT MET'}`);
  }
  for (const [k, v] of Object.entries(failed)) out.push(`FAILED ${k}: ${v}`);
  out.push(`authserv-id of mailwarden: ${AUTHSERV_ID}. Latency: MAIL to the final EOM reply of the last milter. CPU: utime+stime of the milter process tree(s) per message, from /proc. `
    + `other: share of the ${cores} CPUs used by other processes (test DNS included) and steal during the run; >= ${pct(QUIET)} = disturbed.`);
  process.stdout.write(`${out.join('\n')}\n`);
}

/** Threads named milter-auth-N (mailwarden's auth worker threads) in the process tree under `root`. */
function authWorkerThreads(root: number): number {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parent.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // Gone meanwhile.
    }
  }
  const inTree = (pid: number): boolean => {
    for (let p: number | undefined = pid, hops = 0; p && hops < 64; p = parent.get(p), hops++) if (p === root) return true;
    return false;
  };
  let n = 0;
  for (const pid of parent.keys()) {
    if (!inTree(pid)) continue;
    try {
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        if (readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').startsWith('milter-auth-')) n++;
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return n;
}

main().then(
  () => runCleanups(),
  async (err: unknown) => {
    if (interrupted) return;
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    await runCleanups();
    process.exitCode = 1;
  },
);
