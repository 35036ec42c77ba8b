// The policy benchmark's load generator, its own process (forked by
// bench/policy.ts) so its CPU is not the server's. It behaves like smtpd's
// policy client: C persistent TCP connections, one request in flight per
// connection, the next request only after the reply (`action=...` and an
// empty line). Each connection walks the request stream from its own offset
// and fills in `instance` the way smtpd does: the same value for every RCPT
// of one message on that connection, a new one for the next message, never
// the same on two connections (pid.sec.usec.seqno, with the connection
// number as the pid and the pass over the stream in usec).
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { availableParallelism } from 'node:os';
import { cpuMicros, processTable, systemCpuMicros, treeCpuMicros } from './proc.ts';
import type { FromLoadgen, PolicyRunParams, PolicyRunResult, ReplyClass, StreamRequest, ToLoadgen } from './policy-types.ts';
import { latencySummary } from './latency.ts';

interface Encoded {
  readonly m: number;
  readonly head: Buffer;
  readonly tail: Buffer;
}

const streams = new Map<string, Encoded[]>();
function loadStream(file: string): Encoded[] {
  let list = streams.get(file);
  if (!list) {
    const raw = JSON.parse(readFileSync(file, 'utf8')) as StreamRequest[];
    list = raw.map((r) => ({ m: r.m, head: Buffer.from(r.head), tail: Buffer.from(r.tail) }));
    streams.set(file, list);
  }
  return list;
}


function classify(action: string): ReplyClass {
  const word = /^\S*/.exec(action)![0].toUpperCase();
  if (word === 'DUNNO') return 'DUNNO';
  if (word === 'PREPEND') return 'PREPEND';
  if (word === 'REJECT' || /^5\d\d$/.test(word)) return 'REJECT';
  if (word.startsWith('DEFER') || /^4\d\d$/.test(word)) return 'DEFER';
  if (word === 'OK' || /^\d+$/.test(word)) return 'OK';
  if (word === 'WARN' || word === 'INFO') return 'WARN';
  return 'other';
}

/** A short, comparable shape of an action: `PREPEND Received-SPF: pass`, `REJECT 5.1.1`, `550 5.7.23`... */
function shape(action: string): string {
  const words = action.split(' ');
  // policyd-spf (python) answers in lower case: `prepend`, `dunno`.
  const w0 = (words[0] ?? '').toUpperCase();
  if (w0 === 'PREPEND') return `PREPEND ${words[1] ?? ''} ${(words[2] ?? '').toLowerCase().replace(/[^a-z]/g, '')}`.trim();
  const code = words.slice(1, 3).find((w) => /^[245]\.\d{1,3}\.\d{1,3}$/.test(w));
  return code ? `${w0} ${code}` : w0;
}

function openConnection(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

const PHASE = { START: 0, WARMUP: 1, MEASURE: 2, STOPPED: 3 } as const;

interface Conn {
  readonly index: number;
  readonly sock: Socket;
  next: number;
  pass: number;
  /** Requests sent since the warm-up started. */
  warmSent: number;
  t0: number;
  opened: number;
  firstReply: number;
  buf: string;
  idle: boolean;
}

async function run(p: PolicyRunParams, onPhase: (phase: 'measure' | 'stopped') => void): Promise<PolicyRunResult> {
  const reqs = loadStream(p.requests);
  const n = reqs.length;
  if (n === 0) throw new Error(`no requests in ${p.requests}`);
  const c = p.concurrency;
  const startSecHex = Math.floor(Date.now() / 1000).toString(16);

  let lat = new Float64Array(1 << 18);
  let count = 0;
  const replies: Record<ReplyClass, number> = { DUNNO: 0, PREPEND: 0, REJECT: 0, DEFER: 0, OK: 0, WARN: 0, other: 0 };
  const actions = new Map<string, number>();
  let phase: number = PHASE.START;
  let tWarm = 0;
  let tStart = 0;
  let tEnd = 0;
  let warmRequests = 0;
  let warmupCut = false;
  let cpuStart: Record<string, number> = {};
  let cpuEnd: Record<string, number> = {};
  let processes: Record<string, number> = {};
  let sysStart = systemCpuMicros();
  let sysEnd = sysStart;
  let clientStart = process.cpuUsage();
  let clientEnd = clientStart;
  let failure: Error | undefined;
  let idleCount = 0;
  let firstReplies = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => { finish = resolve; });
  const timers: NodeJS.Timeout[] = [];

  const sampleCpu = (): Record<string, number> => {
    const out: Record<string, number> = {};
    const table = processTable();
    for (const [name, pid] of Object.entries(p.cpuTrees)) {
      const t = treeCpuMicros(table, pid);
      out[name] = t.cpu;
      processes[name] = t.processes;
    }
    for (const [name, pid] of Object.entries(p.cpuPids)) out[name] = cpuMicros(pid);
    return out;
  };

  const conns: Conn[] = [];
  for (let i = 0; i < c; i++) {
    const opened = performance.now();
    const sock = await openConnection(p.host, p.port);
    conns.push({ index: i, sock, next: Math.floor((i * n) / c), pass: 0, warmSent: 0, t0: 0, opened, firstReply: -1, buf: '', idle: false });
  }

  const startMeasuring = () => {
    if (phase !== PHASE.WARMUP) return;
    warmRequests = conns.reduce((a, s) => a + s.warmSent, 0);
    processes = {};
    cpuStart = sampleCpu();
    sysStart = systemCpuMicros();
    clientStart = process.cpuUsage();
    tStart = performance.now();
    phase = PHASE.MEASURE;
    onPhase('measure');
    timers.push(setTimeout(stopMeasuring, p.durationMs));
  };
  function stopMeasuring() {
    if (phase === PHASE.STOPPED) return;
    tEnd = performance.now();
    processes = {};
    cpuEnd = sampleCpu();
    sysEnd = systemCpuMicros();
    clientEnd = process.cpuUsage(clientStart);
    phase = PHASE.STOPPED;
    onPhase('stopped');
    for (const t of timers) clearTimeout(t);
    // Requests still in flight get a while to finish; a server that hangs fails the run.
    timers.push(setTimeout(() => fail(new Error('no reply within 20 s after the measured window')), 20_000));
  }
  /** Warm-up is over when its minimum time is up and (if asked) every connection did its share of a pass. */
  const warmDone = () => {
    if (phase !== PHASE.WARMUP) return false;
    const elapsed = performance.now() - tWarm;
    if (elapsed < p.warmupMs) return false;
    if (p.warmupPass && elapsed < p.maxWarmupMs) {
      const share = Math.ceil(n / c);
      if (conns.some((s) => s.warmSent < share)) return false;
    } else if (p.warmupPass && conns.some((s) => s.warmSent < Math.ceil(n / c))) {
      warmupCut = true;
    }
    return true;
  };
  const beginWarmup = () => {
    phase = PHASE.WARMUP;
    tWarm = performance.now();
    for (const s of conns) s.warmSent = 0;
    // Checked on every reply too; the timer covers a warm-up with nothing but slow replies.
    timers.push(setTimeout(function tick() {
      if (phase !== PHASE.WARMUP) return;
      if (warmDone()) startMeasuring();
      else timers.push(setTimeout(tick, 50));
    }, p.warmupMs));
  };

  const fail = (err: Error) => {
    failure ??= err;
    for (const s of conns) goIdle(s);
  };
  const goIdle = (st: Conn) => {
    if (st.idle) return;
    st.idle = true;
    if (++idleCount === c) {
      if (phase !== PHASE.STOPPED) stopMeasuring();
      finish();
    }
  };

  let seq = 0;
  const send = (st: Conn) => {
    if (phase === PHASE.STOPPED || failure) return goIdle(st);
    if (st.next >= n) {
      st.next = 0;
      st.pass++;
    }
    const r = reqs[st.next++]!;
    // pid.sec.usec.seqno as smtpd prints it: a connection's message, never repeated across connections, passes or runs.
    const instance = `${(p.runTag * 1000 + st.index).toString(16)}.${startSecHex}.${st.pass.toString(16)}.${r.m.toString(16)}`;
    if (phase === PHASE.WARMUP) st.warmSent++;
    seq++;
    st.t0 = performance.now();
    st.sock.write(Buffer.concat([r.head, Buffer.from(instance), r.tail]));
  };

  const onReply = (st: Conn, action: string) => {
    if (failure) return;
    const now = performance.now();
    if (st.firstReply < 0) {
      // Start-up: every connection sends one request, and traffic flows once all of them have answered.
      st.firstReply = now - st.opened;
      if (++firstReplies === c) {
        beginWarmup();
        for (const s of conns) send(s);
      }
      return;
    }
    if (phase === PHASE.MEASURE && st.t0 >= tStart) {
      if (count === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[count++] = (now - st.t0) * 1000;
      replies[classify(action)]++;
      const k = shape(action);
      if (actions.has(k) || actions.size < 40) actions.set(k, (actions.get(k) ?? 0) + 1);
      else actions.set('(other shapes)', (actions.get('(other shapes)') ?? 0) + 1);
    } else if (phase === PHASE.WARMUP && warmDone()) {
      startMeasuring();
    }
    send(st);
  };

  for (const st of conns) {
    st.sock.setEncoding('latin1');
    st.sock.on('data', (chunk: string) => {
      st.buf += chunk;
      const end = st.buf.indexOf('\n\n');
      if (end < 0) return;
      if (end + 2 !== st.buf.length) {
        return fail(new Error(`unexpected bytes after a reply: ${JSON.stringify(st.buf.slice(0, 200))}`));
      }
      const text = st.buf.slice(0, end);
      st.buf = '';
      const line = text.split('\n').find((l) => l.startsWith('action='));
      if (line === undefined) {
        return fail(new Error(`reply without action=: ${JSON.stringify(text.slice(0, 200))}`));
      }
      onReply(st, line.slice('action='.length));
    });
    const lost = (err?: Error) => {
      if (!st.idle) fail(err ?? new Error(`server closed connection ${st.index} (after ${seq} requests in all)`));
    };
    st.sock.on('error', lost);
    st.sock.on('close', () => lost());
  }

  for (const st of conns) send(st);
  const startLimit = setTimeout(() => {
    if (phase === PHASE.START) fail(new Error(`only ${firstReplies} of ${c} connections answered their first request within 120 s`));
  }, 120_000);
  await finished;
  clearTimeout(startLimit);
  for (const t of timers) clearTimeout(t);
  for (const s of conns) s.sock.destroy();
  if (failure) throw failure;

  const seconds = (tEnd - tStart) / 1000;
  const cpuUsPerRequest: Record<string, number> = {};
  let measured = clientEnd.user + clientEnd.system;
  for (const name of [...Object.keys(p.cpuTrees), ...Object.keys(p.cpuPids)]) {
    const used = cpuEnd[name]! - cpuStart[name]!;
    measured += used;
    cpuUsPerRequest[name] = count ? used / count : 0;
  }
  const capacity = seconds * 1e6 * availableParallelism();
  const firsts = conns.map((s) => s.firstReply).sort((a, b) => a - b);
  return {
    requests: count,
    seconds,
    requestsPerSecond: seconds > 0 ? count / seconds : 0,
    latencyUs: latencySummary(lat, count),
    replies,
    actions: Object.fromEntries([...actions].sort((a, b) => b[1] - a[1])),
    cpuUsPerRequest,
    clientCpuUsPerRequest: count ? (clientEnd.user + clientEnd.system) / count : 0,
    otherCpuShare: capacity > 0 ? Math.max(0, (sysEnd.busy - sysStart.busy - measured) / capacity) : 0,
    stealShare: capacity > 0 ? (sysEnd.steal - sysStart.steal) / capacity : 0,
    firstReplyMs: { p50: firsts[Math.floor((firsts.length - 1) / 2)] ?? 0, max: firsts[firsts.length - 1] ?? 0 },
    warmupSeconds: (tStart - tWarm) / 1000,
    warmupRequests: warmRequests,
    warmupCut,
    processes,
  };
}

process.on('message', (msg: ToLoadgen) => {
  if (msg.type !== 'run') return;
  run(msg.params, (phase) => process.send!({ type: 'phase', id: msg.id, phase } satisfies FromLoadgen)).then(
    (result) => process.send!({ type: 'result', id: msg.id, result } satisfies FromLoadgen),
    (err: unknown) => process.send!({ type: 'error', id: msg.id, message: (err as Error).message ?? String(err) } satisfies FromLoadgen),
  );
});
// The benchmark owns us: when it goes away (even killed), so do we.
process.on('disconnect', () => process.exit(0));
