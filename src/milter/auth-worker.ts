// An auth worker thread of the milter (milter.workers): runs mailauth for
// the worker pool (worker-pool.ts), i.e. the CPU-heavy part of a message:
// DKIM/ARC/DMARC verification, DKIM signing, ARC sealing. The main thread
// keeps the milter protocol, the sessions, the DNS cache and the SPF memory;
// this thread gets a message's bytes as they arrive, asks the main thread's
// resolver for DNS, and posts the verdict back. Protocol: auth-messages.ts.
//
// Kept here per message: its stream into mailauth while it runs, and after a
// verification that may be sealed, the material the seal needs (mailauth
// objects that cannot be posted) until the main thread sends `release`.
// Kept across messages: parsed DKIM/ARC key records (as in the main thread,
// one cache per worker) and the main thread's DNS answers for a few seconds:
// a DMARC check asks up to three names (the record, then up the tree), and a
// round trip to the main thread costs more than the check. And imported
// signing keys (src/checks/private-key-cache.ts, as in the main thread).
import { PassThrough } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import { DnsError, isVoidLookup, type DnsResolver } from '../dns/resolver.ts';
import { DkimKeyRecordCache } from '../checks/dkim-key-records.ts';
import { TtlCache } from '../core/ttl-cache.ts';
import { sealArc, verifyMessage, type MessageAuthVerdict, type SpfOutcome } from '../checks/message-auth.ts';
import { fromWireError, wireError, type FromAuthWorker, type ToAuthWorker, type WireSealOutcome } from './auth-messages.ts';
import { privateKeyCacheStats } from '../checks/private-key-cache.ts';
import { signMessage } from './dkim-sign.ts';

const port = parentPort;
if (!port) throw new Error('auth-worker.ts runs as a worker thread of the milter (worker-pool.ts)');

/** Room for a few 64 KiB body chunks between the main thread and mailauth (as in the session). */
const STREAM_OPTIONS = { highWaterMark: 256 * 1024 } as const;
/** Material older than this is dropped even without `release` (milter.timeout is at most 10 min): a backstop. */
const SEALABLE_MAX_AGE_MS = 15 * 60_000;
/** How long a DNS answer (or NXDOMAIN/NODATA) from the main thread is reused here; temporary failures never are. */
const DNS_ANSWER_TTL_MS = 5000;

interface Job {
  readonly stream: PassThrough;
  /** Bytes the stream has taken (acknowledged when the main thread asks). */
  taken: number;
  /** The SPF outcome from the main thread (verifications only). */
  spf?: { resolve(v: SpfOutcome): void; reject(e: Error): void };
}

const jobs = new Map<number, Job>();
const sealable = new Map<number, { verdict: MessageAuthVerdict; at: number }>();
/** Key records parsed once for this thread's messages (one cache per worker). */
const keyRecords = new DkimKeyRecordCache();
const dnsPending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; name: string; rrtype: string }>();
let dnsSeq = 0;
/** Answers per resolver epoch, name and type (copies are handed out: mailauth sorts MX lists in place). */
const dnsAnswers = new TtlCache<Promise<unknown>>(DNS_ANSWER_TTL_MS, 10_000);

let outbox: FromAuthWorker[] = [];
let flushing = false;

/** Queues `msg`; everything queued in this turn of the event loop goes in one postMessage. */
function post(msg: FromAuthWorker): void {
  outbox.push(msg);
  if (flushing) return;
  flushing = true;
  setImmediate(flush);
}

function flush(): void {
  flushing = false;
  const batch = outbox;
  outbox = [];
  port!.postMessage(batch);
}

/** DNS through the main thread's cached resolver (`epoch` names it), on behalf of message `job`. */
function resolverFor(job: number, epoch: number): DnsResolver {
  return (name, rrtype) => {
    const key = `${epoch} ${rrtype} ${name.toLowerCase()}`;
    const now = Date.now();
    let answer = dnsAnswers.get(key, now);
    if (!answer) {
      answer = new Promise((resolve, reject) => {
        const id = ++dnsSeq;
        dnsPending.set(id, { resolve, reject, name, rrtype });
        post({ t: 'dns', id, job, name, rrtype });
      });
      const asked = answer;
      // A temporary failure is asked again next time, as in the main thread's cache.
      asked.catch((err: unknown) => {
        if (!isVoidLookup(err)) dnsAnswers.delete(key, asked);
      });
      dnsAnswers.set(key, asked, now);
    }
    return answer.then((value) => structuredClone(value));
  };
}

function startJob(id: number): Job {
  const stream = new PassThrough(STREAM_OPTIONS);
  // mailauth listens for errors itself; this keeps a stream destroyed by `release` from being an unhandled 'error'.
  stream.on('error', () => undefined);
  const job: Job = { stream, taken: 0 };
  jobs.set(id, job);
  return job;
}

/** Runs `work` for job `id` and posts its outcome, unless the job was released meanwhile. */
function finish<T>(id: number, job: Job, work: Promise<T>, done: (value: T) => void): void {
  work.then(
    (value) => {
      if (jobs.get(id) !== job) return;
      jobs.delete(id);
      done(value);
    },
    (err: unknown) => {
      if (jobs.get(id) !== job) return;
      jobs.delete(id);
      post({ t: 'failed', id, error: wireError(err) });
    },
  );
}

function verify(msg: Extract<ToAuthWorker, { t: 'verify' }>): void {
  const job = startJob(msg.id);
  const spf = new Promise<SpfOutcome>((resolve, reject) => {
    job.spf = { resolve, reject };
  });
  spf.catch(() => undefined);
  const work = verifyMessage(job.stream, msg.input, resolverFor(msg.id, msg.epoch), { ...msg.opts, spf, keyRecords });
  finish(msg.id, job, work, (verdict) => {
    const keep = verdict.arcSealing !== undefined;
    if (keep) sealable.set(msg.id, { verdict, at: Date.now() });
    // Own enumerable fields only: the sealing material stays here.
    post({ t: 'verdict', id: msg.id, verdict: { ...verdict }, sealable: keep });
  });
}

function sign(msg: Extract<ToAuthWorker, { t: 'sign' }>): void {
  const job = startJob(msg.id);
  finish(msg.id, job, signMessage(job.stream, msg.keys), (outcome) => {
    // mailauth's per-key errors carry Error objects: the session reads selector, signingDomain and err.message.
    const errors = outcome.errors.map((e) => {
      const x = e as { selector?: string; signingDomain?: string; err?: unknown };
      return { selector: x.selector, signingDomain: x.signingDomain, err: wireError(x.err ?? e) };
    });
    post({ t: 'signed', id: msg.id, outcome: { signatures: outcome.signatures, errors } });
  });
}

async function seal(msg: Extract<ToAuthWorker, { t: 'seal' }>): Promise<void> {
  const entry = sealable.get(msg.job);
  // One seal per message: the material is not needed after it.
  sealable.delete(msg.job);
  let outcome: WireSealOutcome;
  if (!entry) {
    outcome = { sealed: false, reason: 'ARC sealing failed: the verification material is gone', error: { message: 'no ARC sealing material for this message in the worker' } };
  } else {
    const o = await sealArc(entry.verdict, msg.key, msg.signTime !== undefined ? { signTime: new Date(msg.signTime) } : {});
    outcome = 'error' in o ? { sealed: false, reason: o.reason, error: wireError(o.error) } : o;
  }
  post({ t: 'sealed', id: msg.id, outcome });
}

function release(id: number): void {
  const job = jobs.get(id);
  if (job) {
    jobs.delete(id);
    job.spf?.reject(new Error('message released'));
    job.stream.destroy(new Error('message released'));
  }
  sealable.delete(id);
}

port.on('message', (batch: ToAuthWorker[]) => {
  for (const msg of batch) handle(msg);
});

function handle(msg: ToAuthWorker): void {
  switch (msg.t) {
    case 'verify':
      verify(msg);
      return;
    case 'sign':
      sign(msg);
      return;
    case 'chunk': {
      const job = jobs.get(msg.id);
      if (!job || job.stream.destroyed) return;
      const bytes = msg.data.byteLength;
      // The callback comes once mailauth's side of the stream has room: that is the flow control.
      job.stream.write(Buffer.from(msg.data), () => {
        job.taken += bytes;
        if (msg.ack) post({ t: 'ack', id: msg.id, taken: job.taken });
      });
      return;
    }
    case 'end':
      jobs.get(msg.id)?.stream.end();
      return;
    case 'spf': {
      const job = jobs.get(msg.id);
      if (msg.spf) job?.spf?.resolve(msg.spf);
      else job?.spf?.reject(fromWireError(msg.error ?? { message: 'no SPF outcome' }));
      return;
    }
    case 'release':
      release(msg.id);
      return;
    case 'seal':
      void seal(msg);
      return;
    case 'dns-answer': {
      const p = dnsPending.get(msg.id);
      if (!p) return;
      dnsPending.delete(msg.id);
      if (msg.error) {
        // The code decides void (ENOTFOUND/ENODATA) versus temporary, as from the resolver itself.
        p.reject(new DnsError(msg.error.code ?? 'EUNKNOWN', p.name, p.rrtype, { message: msg.error.message }));
      } else p.resolve(msg.value);
      return;
    }
    case 'state':
      post({ t: 'state', id: msg.id, state: { running: jobs.size, sealable: sealable.size, keyRecords: keyRecords.size, dnsAnswers: dnsAnswers.size, privateKeys: privateKeyCacheStats() } });
      return;
    case 'crash':
      if (msg.how === 'exit') process.exit(3);
      setImmediate(() => {
        throw new Error('auth worker crash requested by a test');
      });
      return;
  }
}

// Backstop against a lost `release`: sealing material never outlives the longest milter.timeout by much.
setInterval(() => {
  const cutoff = Date.now() - SEALABLE_MAX_AGE_MS;
  for (const [id, entry] of sealable) if (entry.at < cutoff) sealable.delete(id);
}, 60_000).unref();
