// The milter's auth worker threads (milter.workers): mailauth's verification,
// DKIM signing and ARC sealing of each message run in one of N worker
// threads (auth-worker.ts), so the milter uses every core; the main thread
// keeps the protocol, the sessions, the DNS cache and the SPF memory.
//
// The pool provides the session's seams (MilterRuntime.verify, sign, seal,
// release) with the same contracts as the in-thread functions:
// - The message stream the session writes is read here and posted on in
//   chunks; at most WINDOW bytes are unacknowledged by the worker, so a
//   large message waits in the session's stream and then in the socket
//   (backpressure reaches Postfix), never piles up in memory. Messages up to
//   ACK_AFTER bytes (most mail) need no acknowledgements at all.
// - What is posted in one turn of the event loop goes in one postMessage
//   per worker (auth-messages.ts: a wake-up of the other thread costs more
//   than a small message's whole hand-over).
// - SPF is decided here (spfOutcome: the SPF memory or the resolver), then
//   handed to the worker for DMARC.
// - The worker's DNS questions are answered by the message's resolver (the
//   daemon's cache), errors with their `code`, so void answers stay void and
//   temporary failures temporary.
// - ARC sealing material stays in the worker that verified; the session's
//   release() frees it.
// - A worker that dies fails only its messages (the session answers
//   on_error) and is replaced.
import { Worker } from 'node:worker_threads';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { toDnsError, type DnsResolver } from '../dns/resolver.ts';
import {
  sealArc, spfOutcome, type ArcSealingKey, type ArcSealOutcome, type MessageAuthInput, type MessageAuthOptions, type MessageAuthVerdict,
} from '../checks/message-auth.ts';
import type { SignOutcome } from './dkim-sign.ts';
import type { MilterRuntime, SigningKey } from './session.ts';
import {
  fromWireError, wireError, type AuthWorkerState, type FromAuthWorker, type ToAuthWorker, type WireSealOutcome,
} from './auth-messages.ts';

/** Bytes of one message posted to a worker and not yet taken by its stream into mailauth. */
const WINDOW = 512 * 1024;
/** Chunks past this many bytes of a message ask the worker to acknowledge them. */
const ACK_AFTER = 64 * 1024;
/** A worker that dies sooner than this after it started is replaced only after a pause (a crash loop must not spin). */
const QUICK_DEATH_MS = 2000;
const MAX_RESPAWN_DELAY_MS = 30_000;
const WORKER_SCRIPT = new URL('./auth-worker.ts', import.meta.url);

export interface AuthWorkerPoolOptions {
  /** Worker threads, at least 1. */
  readonly size: number;
  readonly log: Logger;
}

interface Job {
  readonly id: number;
  readonly slot: Slot;
  /** The message's resolver: the worker's DNS questions for it go there. */
  readonly resolver?: DnsResolver;
  /** Bytes posted, and bytes the worker said it has taken. */
  posted: number;
  taken: number;
  settled: boolean;
  /** The worker keeps the verification's ARC sealing material until release. */
  sealable: boolean;
  resolve(value: unknown): void;
  reject(err: Error): void;
  /** Reads on from the session's stream (after an ack). */
  pump?: () => void;
  /** The session's stream, until the job is over. */
  stream?: Readable;
}

interface Request {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

interface Slot {
  readonly index: number;
  readonly worker: Worker;
  readonly started: number;
  /** Jobs from start to their answer, or to release() when the worker keeps sealing material. */
  readonly jobs: Map<number, Job>;
  /** Seal and state requests. */
  readonly requests: Map<number, Request>;
  /** Unsettled jobs plus requests: the worker keeps the process alive only while > 0. */
  busy: number;
  alive: boolean;
  /** Posted at the end of this event-loop turn, in one postMessage. */
  outbox: ToAuthWorker[];
  transfer: ArrayBuffer[];
}

export class AuthWorkerPool {
  readonly #log: Logger;
  readonly #slots: Array<Slot | undefined>;
  readonly #byStream = new WeakMap<Readable, Job>();
  /** Verdicts whose sealing material is in a worker: which one, under which job. */
  readonly #sealable = new WeakMap<MessageAuthVerdict, Job>();
  /** Answers DNS for jobs already released (a key lookup other messages wait for too). */
  #lastResolver: DnsResolver | undefined;
  /** A number per resolver (a reload with new dns settings makes a new one): the workers' answer cache is per resolver. */
  readonly #epochs = new WeakMap<DnsResolver, number>();
  #epoch = 0;
  #seq = 0;
  #next = 0;
  #closed = false;
  #quickDeaths = 0;
  readonly #respawnTimers = new Set<NodeJS.Timeout>();

  constructor(opts: AuthWorkerPoolOptions) {
    if (!(opts.size >= 1)) throw new Error(`auth worker pool: size must be at least 1 (got ${opts.size})`);
    this.#log = opts.log;
    this.#slots = Array.from({ length: opts.size }, (_, i) => this.#spawn(i));
    this.#log.info({ workers: opts.size }, 'milter auth worker threads started');
  }

  get size(): number {
    return this.#slots.length;
  }

  /** The session's seams, for MilterRuntime. */
  hooks(): Required<Pick<MilterRuntime, 'verify' | 'sign' | 'seal' | 'release'>> {
    this.#hooks ??= { verify: this.verify, sign: this.sign, seal: this.seal, release: this.release };
    return this.#hooks;
  }

  #hooks: Required<Pick<MilterRuntime, 'verify' | 'sign' | 'seal' | 'release'>> | undefined;

  /** verifyMessage() in a worker: same arguments, same verdict (its sealing material stays in the worker). */
  readonly verify = (message: Readable | Buffer, input: MessageAuthInput, resolver: DnsResolver, opts: MessageAuthOptions = {}): Promise<MessageAuthVerdict> => {
    const job = this.#start(resolver);
    if (!job) return Promise.reject(new Error('no milter auth worker is running'));
    let epoch = this.#epochs.get(resolver);
    if (epoch === undefined) this.#epochs.set(resolver, (epoch = ++this.#epoch));
    this.#post(job.slot, {
      t: 'verify',
      id: job.id,
      epoch,
      input: { clientIp: input.clientIp, helo: input.helo, sender: input.sender, authservId: input.authservId },
      opts: {
        ...(opts.minBitLength !== undefined ? { minBitLength: opts.minBitLength } : {}),
        ...(opts.rejectRsaSha1 !== undefined ? { rejectRsaSha1: opts.rejectRsaSha1 } : {}),
        ...(opts.prepareArcSeal ? { prepareArcSeal: true } : {}),
      },
    });
    // SPF here: the memory shared with the policy service lives in this thread. Started at once, like in-thread.
    (opts.spf ?? spfOutcome(input, resolver, opts)).then(
      (spf) => this.#post(job.slot, { t: 'spf', id: job.id, spf }),
      (err: unknown) => this.#post(job.slot, { t: 'spf', id: job.id, error: wireError(err) }),
    );
    return this.#feed(job, message) as Promise<MessageAuthVerdict>;
  };

  /** signMessage() in a worker. */
  readonly sign = (message: Readable | Buffer, keys: readonly SigningKey[]): Promise<SignOutcome> => {
    const job = this.#start(undefined);
    if (!job) return Promise.reject(new Error('no milter auth worker is running'));
    const plain = keys.map((k) => ({ domain: k.domain, selector: k.selector, algorithm: k.algorithm, privateKeyPem: k.privateKeyPem }));
    this.#post(job.slot, { t: 'sign', id: job.id, keys: plain });
    return this.#feed(job, message) as Promise<SignOutcome>;
  };

  /** sealArc() in the worker that verified `verdict` (where its material is). Never throws. */
  readonly seal = async (verdict: MessageAuthVerdict, key: ArcSealingKey, opts: { readonly signTime?: Date } = {}): Promise<ArcSealOutcome> => {
    const job = this.#sealable.get(verdict);
    // Not verified here (or not prepared for sealing): sealArc says why.
    if (!job) return sealArc(verdict, key, opts);
    this.#sealable.delete(verdict);
    const slot = job.slot;
    if (!slot.alive) return { sealed: false, reason: 'ARC sealing failed: the auth worker that verified the message is gone', error: new Error('auth worker gone') };
    const plain = { domain: key.domain, selector: key.selector, algorithm: key.algorithm, privateKeyPem: key.privateKeyPem };
    try {
      const outcome = await this.#request<WireSealOutcome>(slot, (id) => ({ t: 'seal', id, job: job.id, key: plain, ...(opts.signTime ? { signTime: opts.signTime.getTime() } : {}) }));
      return 'error' in outcome ? { sealed: false, reason: outcome.reason, error: fromWireError(outcome.error) } : outcome;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      return { sealed: false, reason: `ARC sealing failed: ${error.message}`, error };
    }
  };

  /** The session is done with the message read from `message`: the worker forgets it. Idempotent. */
  readonly release = (message: Readable): void => {
    const job = this.#byStream.get(message);
    if (!job) return;
    this.#byStream.delete(message);
    this.#drop(job, new Error('message released before the worker answered'));
  };

  /** What each worker holds (tests, diagnostics); undefined for a slot being replaced. */
  async state(): Promise<Array<AuthWorkerState | undefined>> {
    return Promise.all(this.#slots.map((slot) => (slot?.alive ? this.#request<AuthWorkerState>(slot, (id) => ({ t: 'state', id })).catch(() => undefined) : undefined)));
  }

  /** Tests: makes worker `index` fail (terminate(), an uncaught exception, or process.exit in the thread). */
  crashWorkerForTest(index: number, how: 'terminate' | 'throw' | 'exit'): void {
    const slot = this.#slots[index];
    if (!slot) throw new Error(`no auth worker ${index}`);
    if (how === 'terminate') void slot.worker.terminate();
    else this.#post(slot, { t: 'crash', how });
  }

  /** Bytes posted to the workers and not yet taken by their streams into mailauth (tests: the flow control). */
  get unackedBytes(): number {
    let n = 0;
    for (const slot of this.#slots) for (const job of slot?.jobs.values() ?? []) n += job.posted - job.taken;
    return n;
  }

  /** Messages in flight per worker slot: tests. */
  get busyPerWorker(): number[] {
    return this.#slots.map((s) => s?.busy ?? 0);
  }

  /** The live workers' thread ids (a replaced worker has a new one): tests. */
  get threadIds(): number[] {
    return this.#slots.flatMap((s) => (s?.alive ? [s.worker.threadId] : []));
  }

  /**
   * Stops the workers: waits up to `graceMs` for messages in flight (a reload
   * that resizes the pool lets the old one finish them), then terminates.
   */
  async close(graceMs = 0): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = this.#close(graceMs);
    return this.#closing;
  }

  #closing: Promise<void> | undefined;

  async #close(graceMs: number): Promise<void> {
    for (const t of this.#respawnTimers) clearTimeout(t);
    this.#respawnTimers.clear();
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && this.#slots.some((s) => s && s.busy > 0)) await new Promise((r) => setTimeout(r, 50));
    this.#closed = true;
    await Promise.all(this.#slots.map(async (slot) => {
      if (!slot) return;
      slot.alive = false;
      await slot.worker.terminate();
      this.#failAll(slot, new Error('the milter auth workers were stopped'));
    }));
  }

  #spawn(index: number): Slot {
    const worker = new Worker(WORKER_SCRIPT, {
      name: `milter-auth-${index + 1}`,
      // The daemon's flags apply (--cpu-prof profiles every thread), but --input-type (string input only) breaks loading a file.
      ...(process.execArgv.some((a) => a.startsWith('--input-type')) ? { execArgv: process.execArgv.filter((a) => !a.startsWith('--input-type')) } : {}),
    });
    const slot: Slot = { index, worker, started: Date.now(), jobs: new Map(), requests: new Map(), busy: 0, alive: true, outbox: [], transfer: [] };
    worker.on('message', (batch: FromAuthWorker[]) => {
      for (const msg of batch) this.#onMessage(slot, msg);
    });
    worker.on('error', (err) => {
      this.#log.error({ err, worker: index + 1, messages: slot.jobs.size }, 'milter auth worker failed; its messages answer on_error, a new worker takes over');
    });
    worker.on('exit', (code) => this.#onExit(slot, code));
    // Idle workers never keep the process alive; a busy one does (#busy). After the listeners: a 'message' listener refs the port.
    worker.unref();
    return slot;
  }

  #onExit(slot: Slot, code: number): void {
    const wasAlive = slot.alive;
    slot.alive = false;
    this.#failAll(slot, new Error(`milter auth worker ${slot.index + 1} stopped (exit code ${code})`));
    if (this.#closing || !wasAlive || this.#slots[slot.index] !== slot) return;
    this.#slots[slot.index] = undefined;
    this.#log.error({ worker: slot.index + 1, code }, 'milter auth worker exited; starting a new one');
    const quick = Date.now() - slot.started < QUICK_DEATH_MS;
    this.#quickDeaths = quick ? this.#quickDeaths + 1 : 0;
    const delay = quick ? Math.min(MAX_RESPAWN_DELAY_MS, 100 * 2 ** Math.min(this.#quickDeaths, 10)) : 0;
    const respawn = () => {
      if (!this.#closing && this.#slots[slot.index] === undefined) this.#slots[slot.index] = this.#spawn(slot.index);
    };
    if (delay === 0) respawn();
    else {
      const t = setTimeout(() => {
        this.#respawnTimers.delete(t);
        respawn();
      }, delay);
      t.unref();
      this.#respawnTimers.add(t);
    }
  }

  /** Rejects everything `slot` had in flight (the sessions answer on_error). */
  #failAll(slot: Slot, err: Error): void {
    for (const job of slot.jobs.values()) {
      if (!job.settled) {
        job.settled = true;
        job.reject(err);
        this.#discard(job, err);
      }
    }
    slot.jobs.clear();
    for (const r of slot.requests.values()) r.reject(err);
    slot.requests.clear();
    slot.busy = 0;
  }

  /** The live worker with the fewest messages in flight (round robin among equals). */
  #pick(): Slot | undefined {
    let best: Slot | undefined;
    const n = this.#slots.length;
    for (let k = 0; k < n; k++) {
      const slot = this.#slots[(this.#next + k) % n];
      if (slot?.alive && (!best || slot.busy < best.busy)) best = slot;
    }
    this.#next = (this.#next + 1) % n;
    return best;
  }

  #start(resolver: DnsResolver | undefined): Job | undefined {
    if (this.#closed) return undefined;
    const slot = this.#pick();
    if (!slot) return undefined;
    if (resolver) this.#lastResolver = resolver;
    const job: Job = {
      id: ++this.#seq,
      slot,
      ...(resolver ? { resolver } : {}),
      posted: 0,
      taken: 0,
      settled: false,
      sealable: false,
      resolve: () => undefined,
      reject: () => undefined,
    };
    slot.jobs.set(job.id, job);
    this.#busy(slot, 1);
    return job;
  }

  /** Posts the message's bytes to the job's worker as they come, WINDOW at most unacknowledged; resolves with the worker's answer. */
  #feed(job: Job, message: Readable | Buffer): Promise<unknown> {
    const result = new Promise<unknown>((resolve, reject) => {
      job.resolve = resolve;
      job.reject = reject;
    });
    if (Buffer.isBuffer(message)) {
      this.#postChunk(job, message);
      this.#post(job.slot, { t: 'end', id: job.id });
      return result;
    }
    const stream = message;
    job.stream = stream;
    this.#byStream.set(stream, job);
    let ended = false;
    const pump = () => {
      while (!job.settled && job.posted - job.taken < WINDOW) {
        const chunk = stream.read() as Buffer | null;
        if (chunk === null) return;
        this.#postChunk(job, chunk);
      }
    };
    job.pump = pump;
    stream.on('readable', pump);
    stream.once('end', () => {
      ended = true;
      if (!job.settled) this.#post(job.slot, { t: 'end', id: job.id });
    });
    stream.on('error', () => undefined);
    stream.once('close', () => {
      // Destroyed before its end (ABORT, too large, a failure): the worker stops reading it.
      if (!ended) this.#drop(job, stream.errored ?? new Error('message stream closed before its end'));
    });
    return result;
  }

  /**
   * The worker will not read the rest: the session's stream is destroyed, so
   * its writes stop waiting for room and it reaches end of message (on_error).
   */
  #discard(job: Job, err: Error): void {
    const stream = job.stream;
    job.stream = undefined;
    if (stream && !stream.destroyed) stream.destroy(err);
  }

  #postChunk(job: Job, chunk: Buffer): void {
    // A copy we own, transferred: the chunk itself may point into a socket buffer the main thread reuses.
    const data = new ArrayBuffer(chunk.length);
    new Uint8Array(data).set(chunk);
    job.posted += chunk.length;
    this.#post(job.slot, { t: 'chunk', id: job.id, data, ...(job.posted > ACK_AFTER ? { ack: true as const } : {}) }, data);
  }

  /** The job is over for the main thread: the worker forgets it; a caller still waiting gets `err`. */
  #drop(job: Job, err: Error): void {
    const slot = job.slot;
    if (slot.jobs.get(job.id) !== job) return;
    slot.jobs.delete(job.id);
    // The worker forgot a job it answered, unless it keeps sealing material for it.
    const held = !job.settled || job.sealable;
    this.#settle(job);
    job.reject(err);
    if (held) this.#post(slot, { t: 'release', id: job.id });
  }

  #settle(job: Job): boolean {
    if (job.settled) return false;
    job.settled = true;
    this.#busy(job.slot, -1);
    return true;
  }

  #busy(slot: Slot, delta: number): void {
    const before = slot.busy;
    slot.busy = Math.max(0, before + delta);
    if (before === 0 && slot.busy > 0) slot.worker.ref();
    else if (before > 0 && slot.busy === 0) slot.worker.unref();
  }

  #post(slot: Slot, msg: ToAuthWorker, transfer?: ArrayBuffer): void {
    if (!slot.alive) return;
    slot.outbox.push(msg);
    if (transfer) slot.transfer.push(transfer);
    if (slot.outbox.length === 1) setImmediate(() => this.#flush(slot));
  }

  #flush(slot: Slot): void {
    const batch = slot.outbox;
    const transfer = slot.transfer;
    slot.outbox = [];
    slot.transfer = [];
    if (slot.alive && batch.length > 0) slot.worker.postMessage(batch, transfer);
  }

  #request<T>(slot: Slot, make: (id: number) => ToAuthWorker): Promise<T> {
    const id = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      slot.requests.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#busy(slot, 1);
      this.#post(slot, make(id));
    });
  }

  #onMessage(slot: Slot, msg: FromAuthWorker): void {
    switch (msg.t) {
      case 'ack': {
        const job = slot.jobs.get(msg.id);
        if (!job) return;
        job.taken = msg.taken;
        job.pump?.();
        return;
      }
      case 'verdict': {
        const job = slot.jobs.get(msg.id);
        if (!job || !this.#settle(job)) return;
        job.stream = undefined;
        if (msg.sealable) {
          job.sealable = true;
          this.#sealable.set(msg.verdict, job);
        } else slot.jobs.delete(job.id); // nothing left in the worker: release() has nothing to do
        job.resolve(msg.verdict);
        return;
      }
      case 'signed': {
        const job = slot.jobs.get(msg.id);
        if (!job || !this.#settle(job)) return;
        job.stream = undefined;
        slot.jobs.delete(job.id);
        job.resolve(msg.outcome);
        return;
      }
      case 'failed': {
        const job = slot.jobs.get(msg.id);
        if (!job || !this.#settle(job)) return;
        const err = fromWireError(msg.error);
        slot.jobs.delete(job.id);
        job.reject(err);
        this.#discard(job, err);
        return;
      }
      case 'sealed':
      case 'state': {
        const r = slot.requests.get(msg.id);
        if (!r) return;
        slot.requests.delete(msg.id);
        this.#busy(slot, -1);
        r.resolve(msg.t === 'sealed' ? msg.outcome : msg.state);
        return;
      }
      case 'dns': {
        const resolver = slot.jobs.get(msg.job)?.resolver ?? this.#lastResolver;
        const answer = (m: ToAuthWorker) => this.#post(slot, m);
        if (!resolver) {
          answer({ t: 'dns-answer', id: msg.id, error: { message: `${msg.rrtype} ${msg.name}: no resolver`, code: 'ECANCELLED' } });
          return;
        }
        let pending: Promise<unknown>;
        try {
          pending = resolver(msg.name, msg.rrtype);
        } catch (err) {
          pending = Promise.reject(err);
        }
        pending.then(
          (value) => answer({ t: 'dns-answer', id: msg.id, value }),
          (err: unknown) => answer({ t: 'dns-answer', id: msg.id, error: { ...wireError(err), code: toDnsError(err, msg.name, msg.rrtype).code } }),
        );
        return;
      }
    }
  }
}
