// Milter benchmark through a real Postfix: a private Postfix 3.7 (stock
// Debian binaries, test/support/postfix.ts) on 127.0.0.1:<port> with the
// milters in smtpd_milters on UNIX sockets, loaded by Postfix's own
// smtp-source; every message is accepted, run through the milters and then
// thrown away by the discard transport. Verify-only (an inbound DKIM-signed
// message) and sign-only (an outbound one, milter_macro_daemon_name =
// ORIGINATING), for mailwarden, OpenDKIM, OpenDKIM + OpenDMARC, Postfix
// without a milter (the ceiling) and Postfix with a do-nothing milter
// (bench/lib/milter-trivial.ts: the ceiling for any milter). Before a target
// is measured, probe messages are relayed to smtp-sink and checked (A-R
// dkim=pass/dmarc=pass, a DKIM-Signature that verifies; without a milter or
// with the do-nothing one: the message unchanged). bench/milter.ts is the
// same comparison with a load generator in Postfix's place. See
// bench/README.md.
//
//   flock /tmp/mw-bench.lock node bench/milter-postfix.ts [--messages 2000] [--concurrency 1,10] [--only ...] [--phases ...]
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/support/ports.ts';
import { startPostfix, type PostfixInstance } from '../test/support/postfix.ts';
import { AUTHSERV_ID, OUR_DOMAIN, generateMilterDataset } from './lib/milter-data.ts';
import { installedTargets, OPENDKIM_AUTHSERV, OPENDMARC_AUTHSERV, type MilterKind, type RunningMilter } from './lib/milter-peers.ts';
import { startMilterForPostfix } from './lib/milter-postfix-peers.ts';
import {
  DISCARD_REASON, MaillogTail, PROBE_DOMAIN, SMTP_SINK, SMTP_SOURCE, inspectProbe, runSmtpSource, startSink, treeCpu,
  waitForDiscards, writeSourceFile, type ProbeFinding,
} from './lib/milter-postfix-mta.ts';
import { writeResolvConf } from './lib/policy-peers.ts';
import { benchTempDir, copyMailwarden, installSignalHandlers, interrupted, isAlive, onCleanup, QUIET, runCleanups, sleep, systemCpuMicros, waitForQuiet, waitForSocket } from './lib/proc.ts';
import { Child } from './lib/child.ts';
import type { FromDns, ToDns } from './lib/policy-types.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const TARGETS = ['no-milter', 'trivial-milter', 'mailwarden', 'opendkim', 'opendkim+opendmarc'] as const;
type TargetName = (typeof TARGETS)[number];
type Phase = 'verify' | 'sign';

/** The milters of a target, in smtpd_milters order (Postfix calls them in turn; OpenDMARC reads OpenDKIM's A-R). */
const CHAINS: Record<Phase, Partial<Record<TargetName, MilterKind[]>>> = {
  verify: {
    'no-milter': [], 'trivial-milter': ['trivial'], mailwarden: ['mailwarden'], opendkim: ['opendkim-verify'],
    'opendkim+opendmarc': ['opendkim-verify', 'opendmarc'],
  },
  sign: { 'no-milter': [], 'trivial-milter': ['trivial'], mailwarden: ['mailwarden'], opendkim: ['opendkim-sign'] },
};
const TRIVIAL_WORK = 'nothing (bench/lib/milter-trivial.ts, CONTINUE at end of message): the ceiling for any milter through Postfix';
const WORK: Record<Phase, Record<string, string>> = {
  verify: {
    'no-milter': 'Postfix alone (no smtpd_milters): the ceiling',
    'trivial-milter': TRIVIAL_WORK,
    mailwarden: 'SPF + DKIM + DMARC + ARC, one A-R header',
    opendkim: 'DKIM only (Mode v), A-R header',
    'opendkim+opendmarc': 'OpenDKIM (Mode v) then OpenDMARC (SPF self-validated, DMARC from OpenDKIM\'s A-R)',
  },
  sign: {
    'no-milter': 'Postfix alone (no smtpd_milters): the ceiling',
    'trivial-milter': TRIVIAL_WORK,
    mailwarden: 'DKIM-Signature rsa-sha256 relaxed/relaxed ({daemon_name}=ORIGINATING)',
    opendkim: 'DKIM-Signature rsa-sha256 relaxed/relaxed (Mode s, 127.0.0.1 in InternalHosts)',
  },
};

const USAGE = `usage: flock /tmp/mw-bench.lock node bench/milter-postfix.ts [options]     (as root)
  --messages N         messages per measured run at C >= 10 (default 2000; runs at C < 10 send a quarter)
  --warmup N           unmeasured messages before each run at C >= 10 (default 200; a quarter at C < 10)
  --concurrency LIST   parallel SMTP sessions of smtp-source (-s) (default 1,10)
  --only LIST          targets (default all): ${TARGETS.join(',')}
  --phases LIST        verify,sign (default both)
  --probes N           probe messages relayed to smtp-sink and checked before each target is measured (default 3)
  --reuse-connections  smtp-source -d: all messages of a session over one SMTP connection (default: one connection
                       per message, like most inbound mail; each connection is a new milter connection too)
  --queue disk|tmpfs   where Postfix's queue lives: the temp dir on disk (default; Postfix fsyncs every queue file)
                       or /dev/shm (takes the disk's fsync latency out of the ceiling)
  --seed N             data seed (default 42)
  --mailwarden DIR     mailwarden checkout to benchmark (default: this one; src/, bin/ copied at start)
  --rev REV            benchmark a git revision of --mailwarden instead of its working tree (git archive; e.g. HEAD)
  --dns-address IP     loopback address for the test DNS on port 53 (default 127.53.0.4; milter.ts uses .3, policy.ts .1)
  --log-level LEVEL    mailwarden log.level (default warn)
  --milter-workers N   mailwarden milter.workers: auto or a number (default: not set, the daemon's default)
  --quiet-wait S       wait up to S s before each run for other processes to use < 10% of the CPUs (default 60)
  --keep               keep the temp dir
  --json-out FILE      also write the results as JSON
Peers come from Debian packages: sudo bash bench/setup-milter-peers.sh; smtp-source and smtp-sink from postfix.`;

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n${USAGE}\n`);
  process.exit(64);
}

const t0 = Date.now();
function progress(message: string): void {
  process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
}
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;


interface Row {
  readonly phase: Phase;
  readonly target: TargetName;
  readonly concurrency: number;
  readonly messages: number;
  readonly seconds: number;
  readonly messagesPerSecond: number;
  /** CPU µs per message of each milter process tree (utime+stime, /proc). */
  readonly milterCpuUs: Readonly<Record<string, number>>;
  /** CPU µs per message of Postfix (master and all its children), until the queue was empty. */
  readonly postfixCpuUs: number;
  readonly clientCpuUs: number;
  readonly dnsPerMessage: number;
  readonly otherCpuShare: number;
  readonly stealShare: number;
}

const sum = (r: Readonly<Record<string, number>>) => Object.values(r).reduce((a, b) => a + b, 0);

/** Targets that must relay the message as it was sent: no milter, or one that does nothing. */
const HANDS_OFF: readonly TargetName[] = ['no-milter', 'trivial-milter'];

/**
 * How the message smtp-sink dumped differs from the file smtp-source sent, if it does: smtp-sink's
 * X-* envelope lines and the Received: fields Postfix prepended left out, the rest must be the
 * file byte for byte (LF), give or take the empty line smtp-source sends after it.
 */
function changedInTransit(dump: string, sent: string): string | undefined {
  let text = dump.replace(/^(?:X-(?:Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):[^\n]*\n)+/, '');
  text = text.replace(/^(?:Received:[^\n]*\n(?:[ \t][^\n]*\n)*)+/, '');
  const trim = (t: string) => t.replace(/\n+$/, '\n');
  const [a, b] = [trim(text), trim(sent)];
  if (a === b) return undefined;
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  const line = a.slice(0, i).split('\n').length;
  return `line ${line} (after Postfix's Received:) differs from what was sent: got ${JSON.stringify(a.slice(i, i + 60))}, sent ${JSON.stringify(b.slice(i, i + 60))}`;
}

/** Whether a probe message shows the target's work (or, for HANDS_OFF targets, none); the reason if not. */
function checkProbe(phase: Phase, target: TargetName, f: ProbeFinding, dump: string, sent: string): string | undefined {
  if (HANDS_OFF.includes(target)) {
    const who = target === 'no-milter' ? 'Postfix without milters' : 'Postfix with the do-nothing milter';
    if (f.authResults.length || f.signatures) return `${who}, yet the message has milter headers: ${JSON.stringify(f.authResults)}, ${f.signatures} DKIM-Signature(s) of ${OUR_DOMAIN}`;
    const changed = changedInTransit(dump, sent);
    return changed ? `${who}: ${changed}` : undefined;
  }
  if (phase === 'sign') {
    if (f.signatures < 1) return `no DKIM-Signature of ${OUR_DOMAIN}`;
    if (f.signaturesVerified.length !== f.signatures) return `${f.signatures - f.signaturesVerified.length} of ${f.signatures} DKIM-Signature(s) do not verify (mailauth, test DNS)`;
    return undefined;
  }
  if (!f.dkimPass) return `no A-R with dkim=pass (${JSON.stringify(f.authResults)})`;
  if (target !== 'opendkim' && !f.dmarcPass) return `no A-R with dmarc=pass (${JSON.stringify(f.authResults)})`;
  return undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' }, warmup: { type: 'string' }, concurrency: { type: 'string' }, only: { type: 'string' },
      phases: { type: 'string' }, probes: { type: 'string' }, 'reuse-connections': { type: 'boolean' }, queue: { type: 'string' },
      seed: { type: 'string' }, mailwarden: { type: 'string' }, rev: { type: 'string' }, 'dns-address': { type: 'string' },
      'log-level': { type: 'string' }, 'milter-workers': { type: 'string' }, 'quiet-wait': { type: 'string' }, keep: { type: 'boolean' },
      'json-out': { type: 'string' }, help: { type: 'boolean', short: 'h' },
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
  const messages = Math.floor(num('messages', values.messages, 2000, 4));
  const warmup = Math.floor(num('warmup', values.warmup, 200, 0));
  const concurrency = (values.concurrency ?? '1,10').split(',').map(Number);
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 100)) usage('--concurrency: integers 1..100 (smtpd_client_connection_count_limit is 50 for non-mynetworks clients; 127.0.0.1 is exempt)');
  const only = (values.only ?? TARGETS.join(',')).split(',').map((s) => s.trim()) as TargetName[];
  for (const t of only) if (!TARGETS.includes(t)) usage(`--only: unknown target ${t}`);
  const phases = (values.phases ?? 'verify,sign').split(',').map((s) => s.trim()) as Phase[];
  for (const p of phases) if (p !== 'verify' && p !== 'sign') usage(`--phases: unknown phase ${p}`);
  const probes = Math.floor(num('probes', values.probes, 3, 1));
  const reuse = values['reuse-connections'] ?? false;
  const queue = values.queue ?? 'disk';
  if (queue !== 'disk' && queue !== 'tmpfs') usage('--queue: disk or tmpfs');
  const seed = Math.floor(num('seed', values.seed, 42));
  const dnsAddress = values['dns-address'] ?? '127.53.0.4';
  const quietWait = num('quiet-wait', values['quiet-wait'], 60);
  const logLevel = values['log-level'] ?? 'warn';
  const milterWorkers = values['milter-workers'];
  if (milterWorkers !== undefined && milterWorkers !== 'auto' && !/^\d+$/.test(milterWorkers)) usage('--milter-workers: auto or a number');
  const perRun = (c: number, n: number) => (c >= 10 ? n : Math.max(1, Math.floor(n / 4)));

  installSignalHandlers();
  if (process.getuid?.() !== 0) usage('needs root: Postfix\'s master starts as root, the milters run in a private mount namespace, the test DNS binds port 53');
  for (const f of [SMTP_SOURCE, SMTP_SINK, '/usr/sbin/postfix']) if (!existsSync(f)) usage(`${f} not found (Debian package postfix)`);
  const targets = installedTargets(only, progress);

  const tmp = benchTempDir('mailwarden-milter-postfix-bench-', { keep: values.keep, shared: true });
  const cores = os.availableParallelism();
  const sockDir = path.join(tmp, 'sockets');
  mkdirSync(sockDir, { mode: 0o755 });
  progress(`temp dir ${tmp}${values.keep ? ' (kept)' : ''}; ${cores} CPU cores shared by smtp-source, Postfix, the milters and the test DNS`);

  // A frozen copy of the mailwarden under test: the tree may be edited while we run.
  const mwRoot = path.join(tmp, 'mailwarden');
  progress(copyMailwarden(path.resolve(values.mailwarden ?? ROOT), values.rev, mwRoot).description);

  const keyDir = path.join(tmp, 'dkim');
  const ds = await generateMilterDataset({ seed, messages: 12, tmp, keyDir, bigSizes: [] });
  // One message per phase, sent over and over: an RSA-2048-signed inbound one (9 of 12 sender domains have
  // only RSA), and an unsigned outbound one from our domain.
  const chosen = { verify: ds.inbound.find((m) => m.kind === 'rsa') ?? ds.inbound[0]!, sign: ds.outbound[0]! };
  const files = { verify: path.join(tmp, 'inbound.eml'), sign: path.join(tmp, 'outbound.eml'), resolvConf: path.join(tmp, 'resolv.conf') };
  for (const phase of ['verify', 'sign'] as const) writeSourceFile(files[phase], chosen[phase]);
  const size = (m: typeof chosen.verify) => Buffer.from(m.raw, 'base64').length;
  progress(`verify: ${(size(chosen.verify) / 1024).toFixed(1)} KB from ${chosen.verify.sender} (${chosen.verify.kind}); `
    + `sign: ${(size(chosen.sign) / 1024).toFixed(1)} KB from ${chosen.sign.sender}`);

  const dns = new Child<ToDns, FromDns>(path.join(ROOT, 'bench/lib/policy-dns.ts'), 'test DNS');
  /** Queries the test DNS answered since the last call. */
  const dnsQueries = async (): Promise<number> => {
    const m = await dns.request({ type: 'stats' });
    return m.type === 'stats' ? m.stats.total : 0;
  };
  const ready = await dns.request({ type: 'start', zones: ds.zones, ttl: 3600, host: dnsAddress, dnsblZones: [] });
  if (ready.type !== 'ready') throw new Error('test DNS did not start');
  writeResolvConf(files.resolvConf, ready.address);
  progress(`test DNS on ${ready.address} (pid ${dns.pid})`);

  const sink = await startSink(tmp, await freePort());
  // Postfix: everything is discarded after the milters, except the probes, which go to smtp-sink.
  const mainCf: Record<string, string> = {
    myhostname: 'mx.bench.test',
    smtpd_peername_lookup: 'no',
    default_transport: `discard:${DISCARD_REASON}`,
    transport_maps: `inline:{${PROBE_DOMAIN}=smtp:[127.0.0.1]:${sink.port}}`,
    milter_protocol: '6',
    milter_default_action: 'tempfail',
    smtpd_milters: '',
    milter_macro_daemon_name: '$myhostname',
  };
  const savedTmpdir = process.env['TMPDIR'];
  if (queue === 'tmpfs') process.env['TMPDIR'] = '/dev/shm';
  let postfix: PostfixInstance;
  try {
    postfix = await startPostfix({ mainCf });
  } finally {
    if (savedTmpdir === undefined) delete process.env['TMPDIR'];
    else process.env['TMPDIR'] = savedTmpdir;
  }
  onCleanup('stop Postfix', () => postfix.stop());
  const masterPid = Number(readFileSync(path.join(postfix.queueDir, 'pid', 'master.pid'), 'utf8').trim());
  const tail = new MaillogTail(postfix.logFile);
  progress(`Postfix on 127.0.0.1:${postfix.smtpPort} (master pid ${masterPid}, queue in ${postfix.queueDir}), smtp-sink on 127.0.0.1:${sink.port}`);

  const rows: Row[] = [];
  const failed: Record<string, string> = {};
  const probeNotes: Record<string, string> = {};
  /** spf= in the verify probes' A-R headers, per target. */
  const spfSeen: Record<string, string> = {};
  for (const phase of phases) {
    const m = chosen[phase];
    for (const target of targets) {
      const kinds = CHAINS[phase][target];
      if (!kinds) continue;
      const key = `${phase}/${target}`;
      progress(`${key}: ${WORK[phase][target]}`);
      const running: Array<{ kind: MilterKind; m: RunningMilter }> = [];
      try {
        for (const kind of kinds) {
          const sock = path.join(sockDir, `${phase}-${kind}.sock`);
          const mr = await startMilterForPostfix(kind, {
            tmp, endpoint: { path: sock }, dnsServer: ready.address, resolvConf: files.resolvConf, mwRoot, keyDir,
            ourKeyPemFile: ds.ourKeyPemFile, logLevel, ...(milterWorkers !== undefined ? { milterWorkers } : {}),
          });
          running.push({ kind, m: mr });
          await waitForSocket(sock, 60_000, () => isAlive(mr.pid), kind).catch((err: Error) => { throw new Error(`${err.message}\n${mr.logTail()}`); });
          // smtpd runs as the postfix user; the milters create their sockets as root, 0660/0770.
          chmodSync(sock, 0o666);
        }
        await postfix.setMainCf({
          smtpd_milters: running.map((r) => `unix:${(r.m.endpoint as { path: string }).path}`).join(', '),
          milter_macro_daemon_name: phase === 'sign' ? 'ORIGINATING' : '$myhostname',
        });
        await sleep(1000); // idle smtpd processes of the old configuration exit

        // Proof of work: probe messages relayed to smtp-sink must show what the milters did.
        sink.clear();
        await runSmtpSource({ port: postfix.smtpPort, file: files[phase], sender: m.sender, rcpt: `probe@${PROBE_DOMAIN}`, helo: m.helo, count: probes, sessions: 1, reuse: false });
        const dumps = await sink.collect(probes, 30_000);
        const ids = target === 'mailwarden' ? [AUTHSERV_ID] : [OPENDKIM_AUTHSERV, OPENDMARC_AUTHSERV];
        const handsOff = HANDS_OFF.includes(target);
        const findings = await Promise.all(dumps.map((d) => inspectProbe(d, handsOff ? [AUTHSERV_ID, OPENDKIM_AUTHSERV, OPENDMARC_AUTHSERV] : ids, OUR_DOMAIN, ready.address)));
        const sent = readFileSync(files[phase], 'latin1');
        findings.forEach((f, i) => {
          const bad = checkProbe(phase, target, f, dumps[i]!, sent);
          if (bad) throw new Error(`probe: ${bad}`);
        });
        const f0 = findings[0]!;
        if (phase === 'verify' && !handsOff) spfSeen[target] = [...new Set(findings.flatMap((f) => f.spf))].join(',') || 'none';
        // The do-nothing milter leaves no trace in the message; that it was asked at all follows from
        // milter_default_action = tempfail (a milter Postfix cannot reach or talk to defers the mail).
        probeNotes[key] = handsOff
          ? `relayed unchanged (Postfix's Received: only; no A-R, no DKIM-Signature)${target === 'trivial-milter' ? '; the milter answered (else tempfail)' : ''}`
          : phase === 'sign'
            ? `${f0.signaturesVerified.length} DKIM-Signature d=${OUR_DOMAIN}, verifies (mailauth)`
            : f0.authResults.map((a) => a.replace(/\s+/g, ' ')).join(' | ');
        progress(`  probe ok (${probes}/${probes} through smtp-sink): ${probeNotes[key]!.slice(0, 400)}`);

        const roots = Object.fromEntries(running.map((r) => [r.kind, r.m.pid]));
        for (const c of concurrency) {
          const n = perRun(c, messages);
          const w = perRun(c, warmup);
          const send = (count: number) => runSmtpSource({ port: postfix.smtpPort, file: files[phase], sender: m.sender, rcpt: m.rcpt, helo: m.helo, count, sessions: c, reuse });
          if (w > 0) {
            await send(w);
            await waitForDiscards(tail, w, 60_000);
          }
          if (quietWait > 0) await waitForQuiet(quietWait, progress);
          await dnsQueries();
          const sys0 = systemCpuMicros();
          const cpu0 = treeCpu({ ...roots, postfix: masterPid });
          const run = await send(n);
          const sys1 = systemCpuMicros();
          const cpu1 = treeCpu({ ...roots, postfix: masterPid });
          await waitForDiscards(tail, n, 120_000);
          const cpu2 = treeCpu({ postfix: masterPid });
          const dnsQ = await dnsQueries();
          const milterCpuUs = Object.fromEntries(Object.keys(roots).map((k) => [k, (cpu1[k]! - cpu0[k]!) / n]));
          const measured = sum(milterCpuUs) * n + (cpu1['postfix']! - cpu0['postfix']!) + run.clientCpuUs;
          const capacity = run.seconds * 1e6 * cores;
          const row: Row = {
            phase, target, concurrency: c, messages: n, seconds: run.seconds, messagesPerSecond: n / run.seconds, milterCpuUs,
            postfixCpuUs: (cpu2['postfix']! - cpu0['postfix']!) / n, clientCpuUs: run.clientCpuUs / n, dnsPerMessage: dnsQ / n,
            otherCpuShare: Math.max(0, (sys1.busy - sys0.busy - measured) / capacity), stealShare: (sys1.steal - sys0.steal) / capacity,
          };
          rows.push(row);
          progress(`  C=${c}: ${n} messages in ${run.seconds.toFixed(2)} s = ${fmt(row.messagesPerSecond)} msg/s; CPU µs/msg: milter ${fmt(sum(milterCpuUs))}, `
            + `Postfix ${fmt(row.postfixCpuUs)}, smtp-source ${fmt(row.clientCpuUs)}; DNS ${row.dnsPerMessage.toFixed(2)} q/msg`
            + `${row.otherCpuShare + row.stealShare >= QUIET ? ` [disturbed: other ${pct(row.otherCpuShare)}, steal ${pct(row.stealShare)}]` : ''}`);
        }
      } catch (err) {
        if (interrupted) throw err;
        const msg = (err as Error).message.split('\n').slice(0, 3).join(' ');
        progress(`  FAILED: ${msg}\n${running.map((r) => `--- ${r.kind} ---\n${r.m.logTail()}`).join('\n')}`);
        failed[key] = msg;
      }
      for (const r of running.reverse()) await r.m.stop();
    }
  }

  const version = (pkg: string) => {
    try {
      return execFileSync('dpkg-query', ['-W', '-f=${Version}', pkg], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      return 'not installed';
    }
  };
  const versions = { postfix: version('postfix'), opendkim: version('opendkim'), opendmarc: version('opendmarc') };
  if (values['json-out']) {
    writeFileSync(values['json-out'], `${JSON.stringify({ meta: { node: process.version, cores, seed, messages, warmup, probes, reuse, queue, versions, probeNotes, failed }, rows }, null, 2)}\n`);
  }

  const out: string[] = [];
  out.push('', `mailwarden milter benchmark through Postfix ${versions.postfix} (smtp-source -> smtpd -> smtpd_milters on UNIX sockets -> discard): `
    + `${messages} messages per run at C >= 10, ${perRun(1, messages)} below; ${reuse ? 'all of a session\'s messages over one connection' : 'one SMTP connection per message'}; `
    + `queue on ${queue === 'tmpfs' ? 'tmpfs (/dev/shm)' : 'disk'}; Node ${process.version}; ${cores} cores shared by smtp-source, Postfix, the milters and the test DNS. `
    + `Peers: opendkim ${versions.opendkim}, opendmarc ${versions.opendmarc}.`);
  for (const phase of phases) {
    const m = chosen[phase];
    out.push('', phase === 'verify'
      ? `Verify only (one inbound ${(size(m) / 1024).toFixed(1)} KB message, DKIM-signed ${m.kind}, from ${m.sender}):`
      : `Sign only (one outbound ${(size(m) / 1024).toFixed(1)} KB message from ${m.sender}, milter_macro_daemon_name = ORIGINATING):`);
    out.push(`${'target'.padEnd(20)} ${'C'.padStart(3)} ${'msgs'.padStart(5)} ${'msg/s'.padStart(6)} ${'ceiling'.padStart(7)} ${'ms/msg'.padStart(6)} `
      + `${'milter µs/msg'.padStart(13)} ${'Postfix µs/msg'.padStart(14)} ${'client µs'.padStart(9)} ${'DNS q/msg'.padStart(9)} ${'other'.padStart(5)}`);
    for (const c of concurrency) {
      const ceiling = rows.find((r) => r.phase === phase && r.concurrency === c && r.target === 'no-milter');
      for (const r of rows.filter((x) => x.phase === phase && x.concurrency === c)) {
        out.push(`${r.target.padEnd(20)} ${String(c).padStart(3)} ${String(r.messages).padStart(5)} ${fmt(r.messagesPerSecond).padStart(6)} `
          + `${(ceiling ? pct(r.messagesPerSecond / ceiling.messagesPerSecond) : '-').padStart(7)} ${((1000 * c) / r.messagesPerSecond).toFixed(1).padStart(6)} `
          + `${fmt(sum(r.milterCpuUs)).padStart(13)} ${fmt(r.postfixCpuUs).padStart(14)} ${fmt(r.clientCpuUs).padStart(9)} ${r.dnsPerMessage.toFixed(2).padStart(9)} `
          + `${pct(r.otherCpuShare + r.stealShare).padStart(5)}`);
      }
    }
    out.push('  probes (relayed to smtp-sink, checked before measuring):');
    for (const t of targets) if (probeNotes[`${phase}/${t}`]) out.push(`    ${t.padEnd(20)} ${probeNotes[`${phase}/${t}`]}`);
  }
  const versus: string[] = [];
  for (const c of concurrency) {
    const get = (phase: Phase, t: TargetName) => rows.find((r) => r.phase === phase && r.target === t && r.concurrency === c);
    const line = (phase: Phase, peer: TargetName, label: string, target: string) => {
      const mw = get(phase, 'mailwarden');
      const other = get(phase, peer);
      if (!mw || !other) return;
      const disturbed = [mw, other].some((x) => x.otherCpuShare + x.stealShare >= QUIET);
      versus.push(`  ${phase.padEnd(6)} C=${String(c).padEnd(3)} mailwarden ${fmt(mw.messagesPerSecond)} msg/s vs ${label} ${fmt(other.messagesPerSecond)}: `
        + `${(mw.messagesPerSecond / other.messagesPerSecond).toFixed(2)}x (issue 5's target for the milter alone: ${target}); milter CPU ${fmt(sum(mw.milterCpuUs))} vs ${fmt(sum(other.milterCpuUs))} µs/msg`
        + `${disturbed ? ' (disturbed: other processes used the CPUs)' : ''}`);
    };
    line('verify', 'opendkim+opendmarc', 'OpenDKIM+OpenDMARC', '>= 2x');
    line('sign', 'opendkim', 'OpenDKIM', '>= 1x');
  }
  if (versus.length) out.push('', 'mailwarden vs the peers (message rate through Postfix; milter CPU per message):', ...versus);
  // The do-nothing milter is the ceiling for any milter through this Postfix: what it costs is the
  // protocol on both sides, which every milter pays; what a milter costs beyond it is its work.
  const trivialRows = rows.filter((r) => r.target === 'trivial-milter');
  if (trivialRows.length) {
    out.push('', 'Against the do-nothing milter (trivial-milter: the ceiling for any milter through this Postfix):');
    out.push(`  ${'phase'.padEnd(6)} ${'C'.padStart(3)} ${'target'.padEnd(20)} ${'msg/s'.padStart(6)} ${'of trivial'.padStart(10)} ${'milter µs'.padStart(9)} `
      + `${'Postfix µs'.padStart(10)} ${'milter share'.padStart(12)} ${'µs above trivial'.padStart(16)}`);
    for (const t of trivialRows) {
      const base = sum(t.milterCpuUs) + t.postfixCpuUs;
      for (const r of rows.filter((x) => x.phase === t.phase && x.concurrency === t.concurrency && x.target !== 'no-milter')) {
        const milter = sum(r.milterCpuUs);
        const disturbed = [r, t].some((x) => x.otherCpuShare + x.stealShare >= QUIET);
        out.push(`  ${r.phase.padEnd(6)} ${String(r.concurrency).padStart(3)} ${r.target.padEnd(20)} ${fmt(r.messagesPerSecond).padStart(6)} `
          + `${pct(r.messagesPerSecond / t.messagesPerSecond).padStart(10)} ${fmt(milter).padStart(9)} ${fmt(r.postfixCpuUs).padStart(10)} `
          + `${pct(milter / (milter + r.postfixCpuUs)).padStart(12)} ${(r === t ? '-' : fmt(milter + r.postfixCpuUs - base)).padStart(16)}`
          + `${disturbed ? ' (disturbed)' : ''}`);
      }
    }
    out.push(`  of trivial: share of trivial-milter's rate at the same C. milter share: milter CPU / (milter + Postfix CPU) per message, the part `
      + `of the MTA host's CPU the milter takes (smtp-source left out: it stands for remote clients). µs above trivial: (milter + Postfix) CPU per `
      + `message minus trivial-milter's, what the milter's work costs the host beyond speaking the protocol (Postfix's share of a milter's `
      + `cost, e.g. a second milter in the chain, included).`);
  }
  for (const [k, v] of Object.entries(failed)) out.push(`FAILED ${k}: ${v}`);
  if (Object.keys(spfSeen).length) {
    out.push(`SPF: the SMTP client is smtp-source on 127.0.0.1 (it has no source-address option), outside every sender domain's SPF record (-all). `
      + `Seen in the probes: ${Object.entries(spfSeen).map(([t, v]) => `${t} spf=${v}`).join(', ')}. OpenDMARC's SPF (libspf2) passes loopback clients `
      + `without a lookup ("localhost is always allowed"), so its SPF check costs next to nothing here, while mailwarden evaluates the record (fail). `
      + `DMARC passes through the aligned DKIM signature either way.`);
  }
  out.push(`ceiling: share of Postfix's rate without milters (no-milter). ms/msg: C / rate (mean SMTP transaction, connect to QUIT; `
    + `smtp-source reports no per-message latency). CPU: utime+stime per message from /proc, milter process tree(s) during the run, Postfix (master and all its `
    + `children) until the queue was empty, client = smtp-source. other: share of the ${cores} CPUs used by other processes (test DNS included) and steal during the run; `
    + `>= ${pct(QUIET)} = disturbed. authserv-id of mailwarden: ${AUTHSERV_ID}.`);
  process.stdout.write(`${out.join('\n')}\n`);
  if (Object.keys(failed).length) process.exitCode = 1;
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
