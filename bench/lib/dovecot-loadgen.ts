// The Dovecot benchmark's load generator, its own process (forked by
// bench/dovecot.ts) so its CPU is not Dovecot's or mailwarden's. It speaks
// Dovecot's own auth protocols the way Dovecot's clients do:
//   userdb: the auth-master protocol (lib-auth/auth-master.c, what LMTP and
//     doveadm use): `VERSION\t1\t0`, then `USER\t<id>\t<user>\tservice=lmtp`,
//     answered by `USER\t<id>\t<user>\t<fields>`, `NOTFOUND\t<id>` or `FAIL\t<id>`;
//   login: the auth-client protocol (what Postfix's SASL client and the login
//     processes use): `VERSION\t1\t2` + `CPID\t<n>`, the server's MECH/SPID/
//     CUID/COOKIE lines up to `DONE`, then `AUTH\t<id>\tPLAIN\tservice=imap\t
//     resp=<base64(\0user\0password)>`, answered by `OK\t<id>\t...` or `FAIL\t<id>\t...`.
// C persistent connections, one request in flight per connection (as each
// Dovecot process does), the next one right after the reply.
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { availableParallelism } from 'node:os';
import { cpuMicros, processTable, systemCpuMicros, treePids, type ProcessEntry } from './proc.ts';
import type { DovecotRunParams, DovecotRunResult, FromLoadgen, ToLoadgen } from './dovecot-types.ts';
import { latencySummary } from './latency.ts';


// --- requests, encoded once per file ---

interface Item {
  /** The request line after `USER\t<id>\t` or `AUTH\t<id>\t`, newline included. */
  readonly tail: string;
}

const files = new Map<string, Item[]>();
function loadItems(file: string, kind: DovecotRunParams['kind'], service: string): Item[] {
  const key = `${kind}\0${service}\0${file}`;
  let list = files.get(key);
  if (!list) {
    list = [];
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line === '') continue;
      if (kind === 'userdb') {
        list.push({ tail: `${line}\tservice=${service}\n` });
      } else {
        const tab = line.indexOf('\t');
        const user = line.slice(0, tab);
        const password = line.slice(tab + 1);
        const resp = Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64');
        // no-penalty: the anvil auth penalty is off in the harness anyway; these are all good logins.
        list.push({ tail: `PLAIN\tservice=${service}\tno-penalty\tresp=${resp}\n` });
      }
    }
    files.set(key, list);
  }
  return list;
}

// --- CPU of Dovecot's processes from /proc ---

/** Descendants of `root` (not root itself). */
function descendants(table: ReadonlyMap<number, ProcessEntry>, root: number): number[] {
  return treePids(table, root).slice(1);
}

function title(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

interface DovecotCpu {
  /** The whole tree: every live process's own and reaped children's CPU, the master included. */
  readonly total: number;
  readonly authPid: number;
  /** The auth process itself. */
  readonly auth: number;
  /** What the auth process forked (checkpassword runs): reaped and live. */
  readonly authChildren: number;
  /** Per auth-worker pid: own CPU plus reaped children. */
  readonly workers: ReadonlyMap<number, number>;
}

/** Dovecot's process titles tell the auth process (`.../auth`) from its workers (`.../auth -w`). */
function dovecotCpu(master: number): DovecotCpu {
  const table = processTable();
  const m = table.get(master);
  if (!m) throw new Error(`Dovecot master ${master} is gone`);
  let total = m.self + m.reaped;
  let authPid = 0;
  let auth = 0;
  let authChildren = 0;
  const workers = new Map<number, number>();
  const tree = descendants(table, master);
  for (const pid of tree) {
    const p = table.get(pid)!;
    total += p.self + p.reaped;
    if (p.ppid !== master) continue;
    // `dovecot/auth`, or `dovecot-<instance_name>/auth` when instance_name is set (the harness sets it).
    const t = title(pid).replace(/^dovecot[^/\s]*\//, '');
    if (/^auth( -w|[ -]worker)/.test(t)) {
      workers.set(pid, p.self + p.reaped);
    } else if (/^auth(\s|:|$)/.test(t)) {
      authPid = pid;
      auth = p.self;
      authChildren = p.reaped;
      for (const c of descendants(table, pid)) authChildren += table.get(c)!.self + table.get(c)!.reaped;
    }
  }
  return { total, authPid, auth, authChildren, workers };
}

// --- connections ---

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

/** Client pids for the auth-client protocol: unique per connection, for the life of this process. */
let nextCpid = 4_000_000;

/** Connects and completes the handshake; resolves with the socket and any bytes past the handshake. */
async function openConnection(p: DovecotRunParams): Promise<Socket> {
  const s = await openSocket(p.socket);
  s.setEncoding('latin1');
  const done = p.kind === 'userdb' ? /^SPID\t/m : /^DONE$/m;
  s.write(p.kind === 'userdb' ? 'VERSION\t1\t0\n' : `VERSION\t1\t2\nCPID\t${nextCpid++}\n`);
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => fail(new Error(`no ${p.kind === 'userdb' ? 'SPID' : 'DONE'} from ${p.socket} within 10 s (got ${JSON.stringify(buf.slice(0, 200))})`)), 10_000);
    const onData = (d: string) => {
      buf += d;
      if (!buf.endsWith('\n') || !done.test(buf)) return;
      cleanup();
      if (!/^VERSION\t1\t/.test(buf)) return reject(new Error(`unexpected handshake from ${p.socket}: ${JSON.stringify(buf.slice(0, 200))}`));
      resolve();
    };
    const fail = (err: Error) => { cleanup(); reject(err); };
    const onClose = () => fail(new Error(`${p.socket} closed the connection during the handshake (got ${JSON.stringify(buf.slice(0, 200))})`));
    const cleanup = () => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('error', fail);
      s.off('close', onClose);
    };
    s.on('data', onData);
    s.once('error', fail);
    s.once('close', onClose);
  });
  return s;
}

const PHASE = { WARMUP: 0, MEASURE: 1, STOPPED: 2 } as const;

interface Conn {
  readonly sock: Socket;
  next: number;
  /** once mode: end of this connection's slice (exclusive). */
  readonly end: number;
  /** Items sent (warm-up included): more than the connection's share of the list means some were sent twice. */
  sent: number;
  /** Item index in flight. */
  current: number;
  reqId: number;
  t0: number;
  partial: string;
  idle: boolean;
}

async function run(p: DovecotRunParams): Promise<DovecotRunResult> {
  const items = loadItems(p.items, p.kind, p.service);
  const n = items.length;
  if (n === 0) throw new Error(`no items in ${p.items}`);
  const c = p.concurrency;
  const sockets = await Promise.all(Array.from({ length: c }, () => openConnection(p)));
  const verb = p.kind === 'userdb' ? 'USER' : 'AUTH';

  let lat = new Float64Array(1 << 16);
  let count = 0;
  let ok = 0;
  let notFound = 0;
  let fail = 0;
  let firstFail: string | undefined;
  const okIndices: number[] = [];
  let phase: number = p.mode === 'once' || p.warmupMs <= 0 ? PHASE.MEASURE : PHASE.WARMUP;
  let tStart = 0;
  let tEnd = 0;
  let cpuStart: Record<string, number> = {};
  let cpuEnd: Record<string, number> = {};
  let dcStart!: DovecotCpu;
  let dcEnd!: DovecotCpu;
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

  const samplePids = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [name, pid] of Object.entries(p.cpuPids)) out[name] = cpuMicros(pid);
    return out;
  };
  const startMeasuring = () => {
    phase = PHASE.MEASURE;
    cpuStart = samplePids();
    dcStart = dovecotCpu(p.dovecotMaster);
    sysStart = systemCpuMicros();
    clientStart = process.cpuUsage();
    tStart = performance.now();
    deadline = setTimeout(stopMeasuring, p.durationMs);
  };
  function stopMeasuring() {
    if (phase === PHASE.STOPPED) return;
    tEnd = performance.now();
    cpuEnd = samplePids();
    dcEnd = dovecotCpu(p.dovecotMaster);
    sysEnd = systemCpuMicros();
    clientEnd = process.cpuUsage(clientStart);
    phase = PHASE.STOPPED;
    clearTimeout(deadline);
  }

  const conns: Conn[] = sockets.map((sock, i) => ({
    sock,
    next: Math.floor((i * n) / c),
    end: p.mode === 'once' ? Math.floor(((i + 1) * n) / c) : n,
    sent: 0,
    current: -1,
    reqId: 0,
    t0: 0,
    partial: '',
    idle: false,
  }));

  const goIdle = (st: Conn) => {
    if (st.idle) return;
    st.idle = true;
    if (++idleCount === c) {
      if (phase !== PHASE.STOPPED) {
        exhausted = p.mode === 'once';
        stopMeasuring();
      }
      finish();
    }
  };

  const send = (st: Conn) => {
    if (phase === PHASE.STOPPED || failure) return goIdle(st);
    if (st.next >= st.end) {
      if (p.mode === 'once') return goIdle(st);
      st.next = 0;
    }
    st.current = st.next++;
    st.sent++;
    st.reqId++;
    st.t0 = performance.now();
    st.sock.write(`${verb}\t${st.reqId}\t${items[st.current]!.tail}`);
  };

  const onReply = (st: Conn, line: string) => {
    const now = performance.now();
    const tab = line.indexOf('\t');
    const word = line.slice(0, tab < 0 ? line.length : tab);
    const rest = tab < 0 ? '' : line.slice(tab + 1);
    const id = Number(rest.slice(0, rest.indexOf('\t') < 0 ? rest.length : rest.indexOf('\t')));
    if (id !== st.reqId) {
      failure ??= new Error(`reply for request ${id}, expected ${st.reqId}: ${JSON.stringify(line.slice(0, 200))}`);
      return goIdle(st);
    }
    if (phase === PHASE.MEASURE && st.t0 >= tStart) {
      if (count === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[count++] = (now - st.t0) * 1000;
      if (word === 'USER' || word === 'OK') {
        ok++;
        if (p.collectOk) okIndices.push(st.current);
      } else if (word === 'NOTFOUND') {
        notFound++;
      } else {
        fail++;
        firstFail ??= line.slice(0, 300);
      }
    } else if (p.collectOk && (word === 'USER' || word === 'OK')) {
      okIndices.push(st.current);
    }
    send(st);
  };

  for (const st of conns) {
    st.sock.on('data', (chunk: string) => {
      const data = st.partial + chunk;
      const nl = data.indexOf('\n');
      if (nl < 0) {
        st.partial = data;
        return;
      }
      if (nl !== data.length - 1) {
        failure ??= new Error(`more than one reply line with one request in flight: ${JSON.stringify(data.slice(0, 200))}`);
        return goIdle(st);
      }
      st.partial = '';
      onReply(st, data.slice(0, nl));
    });
    const lost = (err?: Error) => {
      if (!st.idle) {
        failure ??= err ?? new Error(`${p.socket}: Dovecot closed the connection`);
        goIdle(st);
      }
    };
    st.sock.on('error', lost);
    st.sock.on('close', () => lost());
  }

  if (phase === PHASE.WARMUP) setTimeout(startMeasuring, p.warmupMs);
  else startMeasuring();
  for (const st of conns) send(st);
  await finished;
  for (const s of sockets) s.destroy();
  if (failure) throw failure;

  const seconds = (tEnd - tStart) / 1000;
  const per = (us: number) => (count ? us / count : 0);
  const cpuUsPerOp: Record<string, number> = {};
  let measured = clientEnd.user + clientEnd.system;
  for (const name of Object.keys(p.cpuPids)) {
    const used = cpuEnd[name]! - cpuStart[name]!;
    measured += used;
    cpuUsPerOp[name] = per(used);
  }
  const dovecotUsed = dcEnd.total - dcStart.total;
  measured += dovecotUsed;
  const sameAuth = dcStart.authPid !== 0 && dcStart.authPid === dcEnd.authPid;
  const authUsed = sameAuth ? dcEnd.auth - dcStart.auth : 0;
  let workersUsed = 0;
  for (const [pid, cpu] of dcEnd.workers) workersUsed += cpu - (dcStart.workers.get(pid) ?? 0);
  cpuUsPerOp['dovecot'] = per(dovecotUsed);
  cpuUsPerOp['auth'] = per(authUsed);
  cpuUsPerOp['authChildren'] = per(sameAuth ? dcEnd.authChildren - dcStart.authChildren : 0);
  cpuUsPerOp['workers'] = per(workersUsed);
  const capacity = seconds * 1e6 * availableParallelism();
  return {
    ops: count,
    seconds,
    opsPerSecond: seconds > 0 ? count / seconds : 0,
    latencyUs: latencySummary(lat, count),
    ok,
    notFound,
    fail,
    ...(firstFail !== undefined ? { firstFail } : {}),
    cpuUsPerOp,
    authCoreShare: seconds > 0 ? authUsed / (seconds * 1e6) : 0,
    workers: dcEnd.workers.size,
    clientCpuUsPerOp: per(clientEnd.user + clientEnd.system),
    otherCpuShare: capacity > 0 ? Math.max(0, (sysEnd.busy - sysStart.busy - measured) / capacity) : 0,
    stealShare: capacity > 0 ? (sysEnd.steal - sysStart.steal) / capacity : 0,
    exhausted,
    wrapped: conns.some((st) => st.sent > Math.floor(n / c)),
    ...(p.collectOk ? { okIndices } : {}),
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
