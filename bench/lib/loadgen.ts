// The load generator, run as its own process (forked by bench/socketmap.ts)
// so its CPU is not the server's. It behaves like Postfix's dict_sockmap
// clients: persistent connections, one request in flight per connection, the
// next request only after the previous reply. Requests are netstring-encoded
// once per file; replies are only scanned for their length and first byte.
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { availableParallelism } from 'node:os';
import { cpuMicros, systemCpuMicros } from './proc.ts';
import type { FromLoadgen, RunParams, RunResult, ToLoadgen } from './types.ts';
import { latencySummary } from './latency.ts';

const encoded = new Map<string, Buffer[]>();

function loadRequests(file: string): Buffer[] {
  let list = encoded.get(file);
  if (!list) {
    list = [];
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line === '') continue;
      const body = Buffer.from(line, 'utf8');
      list.push(Buffer.concat([Buffer.from(`${body.length}:`), body, Buffer.from(',')]));
    }
    encoded.set(file, list);
  }
  return list;
}

function openConnection(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

const enum_ = { WARMUP: 0, MEASURE: 1, STOPPED: 2 } as const;

interface Conn {
  readonly sock: Socket;
  next: number;
  /** once mode: end of this connection's slice (exclusive). */
  readonly end: number;
  t0: number;
  partial: Buffer | undefined;
  idle: boolean;
}

async function run(p: RunParams): Promise<RunResult> {
  const reqs = loadRequests(p.requests);
  const n = reqs.length;
  if (n === 0) throw new Error(`no requests in ${p.requests}`);
  const c = p.concurrency;
  const sockets = await Promise.all(Array.from({ length: c }, () => openConnection(p.socket)));

  let lat = new Float64Array(1 << 18);
  let count = 0;
  const statuses = { OK: 0, NOTFOUND: 0, TEMP: 0, PERM: 0, other: 0 };
  let phase: number = p.mode === 'once' || p.warmupMs <= 0 ? enum_.MEASURE : enum_.WARMUP;
  let tStart = 0;
  let tEnd = 0;
  let cpuStart: Record<string, number> = {};
  let cpuEnd: Record<string, number> = {};
  let sysStart = systemCpuMicros();
  let sysEnd = sysStart;
  let clientStart = process.cpuUsage();
  let clientEnd = clientStart;
  let exhausted = false;
  let failure: Error | undefined;
  let idleCount = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => { finish = resolve; });
  let deadline: NodeJS.Timeout | undefined;

  const sampleCpu = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [name, pid] of Object.entries(p.cpuPids)) out[name] = cpuMicros(pid);
    return out;
  };
  const startMeasuring = () => {
    phase = enum_.MEASURE;
    cpuStart = sampleCpu();
    sysStart = systemCpuMicros();
    clientStart = process.cpuUsage();
    tStart = performance.now();
    deadline = setTimeout(stopMeasuring, p.durationMs);
  };
  function stopMeasuring() {
    if (phase === enum_.STOPPED) return;
    tEnd = performance.now();
    cpuEnd = sampleCpu();
    sysEnd = systemCpuMicros();
    clientEnd = process.cpuUsage(clientStart);
    phase = enum_.STOPPED;
    clearTimeout(deadline);
  }

  const conns: Conn[] = sockets.map((sock, i) => ({
    sock,
    next: Math.floor((i * n) / c),
    end: p.mode === 'once' ? Math.floor(((i + 1) * n) / c) : n,
    t0: 0,
    partial: undefined,
    idle: false,
  }));

  const goIdle = (st: Conn) => {
    if (st.idle) return;
    st.idle = true;
    if (++idleCount === c) {
      if (phase !== enum_.STOPPED) {
        exhausted = p.mode === 'once';
        stopMeasuring();
      }
      finish();
    }
  };

  const send = (st: Conn) => {
    if (phase === enum_.STOPPED || failure) return goIdle(st);
    if (st.next >= st.end) {
      if (p.mode === 'once') return goIdle(st);
      st.next = 0;
    }
    const req = reqs[st.next++]!;
    st.t0 = performance.now();
    st.sock.write(req);
  };

  const onReply = (st: Conn, status: number) => {
    const now = performance.now();
    if (phase === enum_.MEASURE && st.t0 >= tStart) {
      if (count === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[count++] = (now - st.t0) * 1000;
      if (status === 0x4f) statuses.OK++;
      else if (status === 0x4e) statuses.NOTFOUND++;
      else if (status === 0x54) statuses.TEMP++;
      else if (status === 0x50) statuses.PERM++;
      else statuses.other++;
      if (p.maxRequests > 0 && count >= p.maxRequests) stopMeasuring();
    }
    send(st);
  };

  for (const st of conns) {
    st.sock.on('data', (chunk: Buffer) => {
      let data = chunk;
      if (st.partial) {
        data = Buffer.concat([st.partial, chunk]);
        st.partial = undefined;
      }
      // `<digits>:<payload>,` with exactly one reply outstanding.
      let i = 0;
      let len = 0;
      while (i < data.length && data[i] !== 0x3a) len = len * 10 + (data[i++]! - 0x30);
      const total = i + 1 + len + 1;
      if (i >= data.length || data.length < total) {
        st.partial = data;
        return;
      }
      if (data.length > total || data[total - 1] !== 0x2c) {
        failure ??= new Error(`unexpected reply bytes: ${JSON.stringify(data.toString('latin1').slice(0, 80))}`);
        return goIdle(st);
      }
      onReply(st, len > 0 ? data[i + 1]! : 0);
    });
    const lost = (err?: Error) => {
      if (!st.idle) {
        failure ??= err ?? new Error('server closed the connection');
        goIdle(st);
      }
    };
    st.sock.on('error', lost);
    st.sock.on('close', () => lost());
  }

  if (phase === enum_.WARMUP) setTimeout(startMeasuring, p.warmupMs);
  else startMeasuring();
  for (const st of conns) send(st);
  await finished;
  for (const s of sockets) s.destroy();
  if (failure) throw failure;

  const seconds = (tEnd - tStart) / 1000;
  const cpuUsPerLookup: Record<string, number> = {};
  let measured = clientEnd.user + clientEnd.system;
  for (const name of Object.keys(p.cpuPids)) {
    const used = cpuEnd[name]! - cpuStart[name]!;
    measured += used;
    cpuUsPerLookup[name] = count ? used / count : 0;
  }
  const capacity = seconds * 1e6 * availableParallelism();
  return {
    requests: count,
    seconds,
    lookupsPerSecond: seconds > 0 ? count / seconds : 0,
    latencyUs: latencySummary(lat, count),
    statuses,
    cpuUsPerLookup,
    clientCpuUsPerLookup: count ? (clientEnd.user + clientEnd.system) / count : 0,
    otherCpuShare: capacity > 0 ? Math.max(0, (sysEnd.busy - sysStart.busy - measured) / capacity) : 0,
    stealShare: capacity > 0 ? (sysEnd.steal - sysStart.steal) / capacity : 0,
    exhausted,
  };
}

process.on('message', (msg: ToLoadgen) => {
  if (msg.type !== 'run') return;
  run(msg.params).then(
    (result) => process.send!({ type: 'result', id: msg.id, result } satisfies FromLoadgen),
    (err: unknown) => process.send!({ type: 'error', id: msg.id, message: (err as Error).message ?? String(err) } satisfies FromLoadgen),
  );
});
// The benchmark owns us: when it goes away (even killed), so do we.
process.on('disconnect', () => process.exit(0));
