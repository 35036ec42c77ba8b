// The milter benchmark's load generator, its own process (forked by
// bench/milter.ts) so its CPU is not the target's. C concurrent SMTP
// sessions as Postfix would run them against smtpd_milters: each opens one
// connection per milter of the chain (OPTNEG with what Postfix 3.7 offers,
// CONNECT and HELO with their macros), then sends messages (MAIL, RCPT, DATA,
// headers, EOH, 64 KB body chunks, EOM, waiting for exactly the replies the
// negotiated protocol requires; ABORT between messages) and QUITs after
// perSession messages to open the next session.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseMessage, PostfixLikeSession, type EomOutcome, type ParsedMessage } from './milter-mta.ts';
import type { BenchMessage, FromMilterLoadgen, MilterRunParams, MilterRunResult, ToMilterLoadgen } from './milter-types.ts';
import { processTable, systemCpuMicros, treeCpuMicros, treePids } from './proc.ts';
import { latencySummary } from './latency.ts';

interface Loaded {
  readonly meta: BenchMessage;
  readonly parsed: ParsedMessage;
}

const cache = new Map<string, Loaded[]>();
function load(file: string): Loaded[] {
  let list = cache.get(file);
  if (!list) {
    const raw = JSON.parse(readFileSync(file, 'utf8')) as BenchMessage[];
    list = raw.map((meta) => ({ meta, parsed: parseMessage(Buffer.from(meta.raw, 'base64')) }));
    cache.set(file, list);
  }
  return list;
}

// --- /proc: CPU and RSS of process trees ---

function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function run(p: MilterRunParams, onPhase: (ph: 'measure' | 'stopped') => void): Promise<MilterRunResult> {
  const msgs = load(p.messages);
  const n = msgs.length;
  if (n === 0) throw new Error(`no messages in ${p.messages}`);
  let phase: 'warmup' | 'measure' | 'stopped' = 'warmup';
  // Read through a function: the phase changes while a message is in flight.
  const current = () => phase;
  let lat = new Float64Array(1 << 16);
  let count = 0;
  let bytes = 0;
  let warmMessages = 0;
  const finals: Record<string, number> = {};
  const headers: Record<string, number> = {};
  const samples: Record<string, string> = {};
  const evidence = { dkimPass: 0, dkimSigned: 0, dmarcPass: 0, spfPass: 0, dmarcAny: 0 };
  let failure: Error | undefined;
  let tStart = 0;
  let tEnd = 0;
  let seq = 0;
  let next = 0;

  const treeCpu = (): Record<string, number> => {
    const table = processTable();
    const out: Record<string, number> = {};
    for (const [name, root] of Object.entries(p.cpuTrees)) out[name] = treeCpuMicros(table, root).cpu;
    return out;
  };
  const rssNow = (): Record<string, number> => {
    const table = processTable();
    const out: Record<string, number> = {};
    for (const [name, root] of Object.entries(p.rssTrees)) out[name] = treePids(table, root).reduce((a, pid) => a + rssKiB(pid), 0);
    return out;
  };
  let cpuStart: Record<string, number> = {};
  let cpuEnd: Record<string, number> = {};
  let sysStart = systemCpuMicros();
  let sysEnd = sysStart;
  let clientStart = process.cpuUsage();
  let clientEnd = clientStart;
  let rssStart: Record<string, number> = {};
  const rssPeak: Record<string, number> = {};
  let rssEnd: Record<string, number> = {};
  const rssTimer = setInterval(() => {
    if (phase !== 'measure') return;
    for (const [k, v] of Object.entries(rssNow())) rssPeak[k] = Math.max(rssPeak[k] ?? 0, v);
  }, 100);

  const startMeasuring = () => {
    if (phase !== 'warmup') return;
    cpuStart = treeCpu();
    rssStart = rssNow();
    for (const [k, v] of Object.entries(rssStart)) rssPeak[k] = v;
    sysStart = systemCpuMicros();
    clientStart = process.cpuUsage();
    tStart = performance.now();
    phase = 'measure';
    onPhase('measure');
    stopTimer = setTimeout(stopMeasuring, p.durationMs);
  };
  let stopTimer: NodeJS.Timeout | undefined;
  function stopMeasuring() {
    if (phase !== 'measure') return;
    tEnd = performance.now();
    cpuEnd = treeCpu();
    rssEnd = rssNow();
    for (const [k, v] of Object.entries(rssEnd)) rssPeak[k] = Math.max(rssPeak[k] ?? 0, v);
    sysEnd = systemCpuMicros();
    clientEnd = process.cpuUsage(clientStart);
    phase = 'stopped';
    onPhase('stopped');
    if (stopTimer) clearTimeout(stopTimer);
  }
  const warmTimer = setTimeout(startMeasuring, p.warmupMs);

  const record = (t0: number, size: number, outs: EomOutcome[]) => {
    if (count === lat.length) {
      const bigger = new Float64Array(lat.length * 2);
      bigger.set(lat);
      lat = bigger;
    }
    lat[count++] = (performance.now() - t0) * 1000;
    bytes += size;
    const last = outs[outs.length - 1]!;
    finals[last.final] = (finals[last.final] ?? 0) + 1;
    let dkimPass = false, dkimSigned = false, dmarcPass = false, spfPass = false, dmarcAny = false;
    outs.forEach((o, i) => {
      const hop = p.chain[i]!.name;
      for (const a of o.added) {
        const key = `${hop}:${a.name}`;
        headers[key] = (headers[key] ?? 0) + 1;
        samples[key] ??= a.value.replace(/\s+/g, ' ').trim().slice(0, 400);
        const lower = a.name.toLowerCase();
        if (lower === 'authentication-results') {
          if (/\bdkim=pass\b/i.test(a.value)) dkimPass = true;
          if (/\bdmarc=pass\b/i.test(a.value)) dmarcPass = true;
          if (/\bdmarc=/i.test(a.value)) dmarcAny = true;
          if (/\bspf=pass\b/i.test(a.value)) spfPass = true;
        } else if (lower === 'dkim-signature') {
          dkimSigned = true;
        }
      }
      if (o.changed.length) headers[`${hop}:(changed)`] = (headers[`${hop}:(changed)`] ?? 0) + o.changed.length;
      if (o.quarantined) headers[`${hop}:(quarantine)`] = (headers[`${hop}:(quarantine)`] ?? 0) + 1;
    });
    if (dkimPass) evidence.dkimPass++;
    if (dkimSigned) evidence.dkimSigned++;
    if (dmarcPass) evidence.dmarcPass++;
    if (spfPass) evidence.spfPass++;
    if (dmarcAny) evidence.dmarcAny++;
    if (p.maxMessages > 0 && count >= p.maxMessages) stopMeasuring();
  };

  const worker = async (w: number) => {
    let port = 40000 + w * 7;
    while (current() !== 'stopped' && !failure) {
      const first = msgs[next % n]!;
      port = port >= 65000 ? 40000 + w : port + 1;
      const session = await PostfixLikeSession.open(p.chain, p.phase === 'sign'
        ? { ip: first.meta.clientIp, port, helo: first.meta.helo, daemonName: 'ORIGINATING' }
        : { ip: first.meta.clientIp, port, helo: first.meta.helo, daemonName: 'mx.bench.test' });
      try {
        for (let k = 0; k < p.perSession && current() !== 'stopped' && !failure; k++) {
          const m = msgs[next++ % n]!;
          const queueId = `4Q${(++seq).toString(16).toUpperCase().padStart(8, '0')}`;
          const t0 = performance.now();
          const started = phase;
          const outs = await session.message({ sender: m.meta.sender, rcpt: m.meta.rcpt, queueId, parsed: m.parsed });
          if (started === 'measure' && current() === 'measure') record(t0, m.parsed.size, outs);
          else if (started === 'warmup') warmMessages++;
        }
        session.quit();
      } catch (err) {
        session.destroy();
        throw err;
      }
    }
  };

  await Promise.all(Array.from({ length: p.concurrency }, (_, w) => worker(w).catch((err: Error) => {
    failure ??= err;
    stopMeasuring();
  })));
  clearTimeout(warmTimer);
  clearInterval(rssTimer);
  if (stopTimer) clearTimeout(stopTimer);
  if (failure) throw failure;
  if (tEnd === 0) throw new Error('the run ended before the measured window');

  const seconds = (tEnd - tStart) / 1000;
  const cpuUsPerMessage: Record<string, number> = {};
  let measured = clientEnd.user + clientEnd.system;
  for (const name of Object.keys(p.cpuTrees)) {
    const used = cpuEnd[name]! - cpuStart[name]!;
    measured += used;
    cpuUsPerMessage[name] = count ? used / count : 0;
  }
  const capacity = seconds * 1e6 * availableParallelism();
  const rss: Record<string, { start: number; end: number; peak: number }> = {};
  for (const k of Object.keys(p.rssTrees)) rss[k] = { start: rssStart[k] ?? 0, end: rssEnd[k] ?? 0, peak: rssPeak[k] ?? 0 };
  return {
    messages: count,
    seconds,
    messagesPerSecond: seconds > 0 ? count / seconds : 0,
    bytesPerMessage: count ? bytes / count : 0,
    latencyUs: latencySummary(lat, count),
    finals,
    headers,
    evidence,
    samples,
    cpuUsPerMessage,
    clientCpuUsPerMessage: count ? (clientEnd.user + clientEnd.system) / count : 0,
    rssKiB: rss,
    otherCpuShare: capacity > 0 ? Math.max(0, (sysEnd.busy - sysStart.busy - measured) / capacity) : 0,
    stealShare: capacity > 0 ? (sysEnd.steal - sysStart.steal) / capacity : 0,
    warmupMessages: warmMessages,
  };
}

process.on('message', (msg: ToMilterLoadgen) => {
  if (msg.type !== 'run') return;
  run(msg.params, (phase) => process.send!({ type: 'phase', id: msg.id, phase } satisfies FromMilterLoadgen)).then(
    (result) => process.send!({ type: 'result', id: msg.id, result } satisfies FromMilterLoadgen),
    (err: unknown) => process.send!({ type: 'error', id: msg.id, message: (err as Error).message ?? String(err) } satisfies FromMilterLoadgen),
  );
});
process.on('disconnect', () => process.exit(0));
