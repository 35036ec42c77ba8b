// The dict service's socket side: Dovecot's `proxy:` dict client (2.3 and 2.4)
// on a UNIX or loopback socket. Lines are parsed by codec.ts; transactions are
// kept per connection; replies go out strictly in command order because every
// connection is served one command at a time (dovecot.md §2.4: Dovecot's
// auth-workers send one request at a time anyway, and the client matches plain
// replies to its oldest outstanding command).
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ServiceListen } from '../config/load.ts';
import { drained, listen, type ConnectionHandle, type Listener } from '../net/listener.ts';
import {
  commitFailed,
  commitNotFound,
  commitOk,
  DICT_ERROR_CODES,
  DICT_ITERATE_FLAGS,
  DICT_MAX_LINE_BYTES,
  DictLineSplitter,
  DictProtocolError,
  iterateEnd,
  iterateFailed,
  iterateRow,
  lookupFailed,
  lookupFound,
  lookupNotFound,
  parseCommand,
  type DictCommand,
} from './codec.ts';

/** What the handler learns about the connection a request came from. */
export interface DictContext {
  /** The dict name from the handshake: `proxy:<socket>:<name>` (2.3) or `dict_proxy_name` (2.4). */
  readonly dictName: string;
  /** 3 = Dovecot 2.3, 4 = Dovecot 2.4. */
  readonly protocolMajor: number;
  /** `unix` or `host:port`, for log lines. */
  readonly peer: string;
}

export interface DictIterateContext extends DictContext {
  /** Row limit requested by the client; 0 = none. The server stops after this many rows anyway. */
  readonly maxRows: number;
}

/** One iterate result: the full key (e.g. `shared/userdb/alice@example.org`) and its value. */
export type DictRow = readonly [key: string, value: string];

export type DictOp =
  | { readonly op: 'set'; readonly key: string; readonly value: string }
  | { readonly op: 'unset'; readonly key: string }
  /** Atomic increment by a signed 64-bit diff; `notfound` from commit() when the key does not exist. */
  | { readonly op: 'inc'; readonly key: string; readonly diff: bigint };

export interface DictTransaction {
  /** The client's transaction id (only meaningful within its connection). */
  readonly id: number;
  /** From `B`: whose `priv/` keys these are; may be empty. */
  readonly user: string;
  /** In the order the client sent them. */
  readonly ops: readonly DictOp[];
  /** 2.4 `B … expire_secs`, when non-zero: the values should expire after this many seconds. */
  readonly expireSecs?: number;
  /** From `T`: the time the client wants the writes stamped with. */
  readonly timestamp?: { readonly secs: number; readonly nsecs: number };
  /** From `V yes` (2.4): the client asked that values not be logged (we never log them anyway). */
  readonly hideLogValues: boolean;
  readonly ctx: DictContext;
}

/**
 * What the dict service answers. Transport-agnostic: plain strings in and out,
 * no protocol details. Every method may throw or reject; the client then gets
 * `F` with a generic text (or the message of a DictFailure) and the connection
 * stays open.
 */
export interface DictHandler {
  /** The value for `key`, or undefined when there is none (`N`). */
  lookup(key: string, user: string, ctx: DictContext): Promise<string | undefined>;
  /**
   * Optional fast path: the complete reply line (lookupFound()/lookupNotFound())
   * when the answer is known without waiting (a cache hit), else undefined and
   * lookup() is asked. Must not throw.
   */
  cachedLookup?(key: string, user: string, ctx: DictContext): string | undefined;
  /**
   * The rows under `path`. `flags` are DICT_ITERATE_FLAGS (RECURSE, EXACT_KEY,
   * SORT_*, NO_VALUE): honouring them is the handler's job, except NO_VALUE
   * (the server drops values) and the row limit (the server stops reading).
   * The server stops early (calling return()) when the client goes away.
   */
  iterate(path: string, flags: number, user: string, ctx: DictIterateContext): AsyncIterable<DictRow> | Iterable<DictRow>;
  /** Applies the operations atomically: `ok`, or `notfound` (an inc of a missing key). */
  commit(tx: DictTransaction): Promise<'ok' | 'notfound'>;
}

/** Throw this from a handler to send its message to Dovecot (which logs it); other errors send a generic text. */
export class DictFailure extends Error {
  override readonly name = 'DictFailure';
}

export interface DictServerOptions {
  readonly listen: ServiceListen;
  readonly handler: DictHandler;
  readonly log: Logger;
  /** Closes a connection without traffic for this long (default 5 min; set Dovecot's idle timeout below it). */
  readonly idleTimeoutMs?: number;
  /** Longest accepted line; default DICT_MAX_LINE_BYTES (Dovecot's 64 KiB plus a margin). */
  readonly maxLineBytes?: number;
  /** Open transactions per connection; default 16. */
  readonly maxTransactions?: number;
  /** Operations per transaction; default 1000. */
  readonly maxOpsPerTransaction?: number;
}

export const DICT_SERVER_DEFAULTS = {
  idleTimeoutMs: 300_000,
  maxLineBytes: DICT_MAX_LINE_BYTES,
  maxTransactions: 16,
  maxOpsPerTransaction: 1000,
  /** Key and value bytes buffered in one open transaction. */
  maxTransactionBytes: 4 * 1024 * 1024,
  /** Stop reading while this many commands wait for their turn (Dovecot's own server: 1000). */
  maxQueued: 64,
  /** After our last reply, how long a peer may take to close before we destroy the socket. */
  lingerMs: 2_000,
} as const;

interface Settings {
  readonly handler: DictHandler;
  readonly log: Logger;
  readonly idleTimeoutMs: number;
  readonly maxLineBytes: number;
  readonly maxTransactions: number;
  readonly maxOpsPerTransaction: number;
}

export function startDictServer(opts: DictServerOptions): Promise<Listener> {
  const settings: Settings = {
    handler: opts.handler,
    log: opts.log,
    idleTimeoutMs: opts.idleTimeoutMs ?? DICT_SERVER_DEFAULTS.idleTimeoutMs,
    maxLineBytes: opts.maxLineBytes ?? DICT_SERVER_DEFAULTS.maxLineBytes,
    maxTransactions: opts.maxTransactions ?? DICT_SERVER_DEFAULTS.maxTransactions,
    maxOpsPerTransaction: opts.maxOpsPerTransaction ?? DICT_SERVER_DEFAULTS.maxOpsPerTransaction,
  };
  return listen(opts.listen.listen, opts.listen.unix, (socket) => serveConnection(socket, settings), opts.log);
}

/** A transaction being assembled from B/S/U/A/T/V lines. */
interface OpenTransaction {
  readonly id: number;
  readonly user: string;
  readonly expireSecs?: number;
  readonly ops: DictOp[];
  bytes: number;
  timestamp?: { secs: number; nsecs: number };
  hideLogValues: boolean;
}

/** A command that produces a reply (or ends the connection), waiting for its turn. */
type Job =
  | { readonly kind: 'lookup'; readonly key: string; readonly user: string }
  | { readonly kind: 'iterate'; readonly flags: number; readonly maxRows: number; readonly path: string; readonly user: string }
  | { readonly kind: 'commit'; readonly tx: DictTransaction; readonly async: boolean }
  | { readonly kind: 'fatal'; readonly error: DictProtocolError };

let connectionCounter = 0;

function serveConnection(socket: Socket, s: Settings): ConnectionHandle {
  const peer = socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
  const log = s.log.child({ conn: ++connectionCounter, peer });
  const splitter = new DictLineSplitter(s.maxLineBytes);
  const transactions = new Map<number, OpenTransaction>();
  let ctx: DictContext | undefined;
  let queue: Job[] = [];
  let head = 0;
  let busy = false;
  /** Set once no further line will be read: protocol error, shutdown, EOF or close. */
  let stopping = false;
  let draining = false;
  let linger: NodeJS.Timeout | undefined;

  log.debug('connection opened');
  socket.setTimeout(s.idleTimeoutMs);

  socket.on('data', (chunk: Buffer) => {
    if (stopping) return; // discard: we are closing, but keep reading so the kernel doesn't answer with RST
    let lines: readonly Buffer[];
    let fatal: DictProtocolError | undefined;
    try {
      lines = splitter.push(chunk);
    } catch (err) {
      if (!(err instanceof DictProtocolError)) throw err;
      lines = err.lines;
      fatal = err;
    }
    for (const line of lines) {
      if (stopping) break;
      accept(line);
    }
    if (fatal && !stopping) fail(fatal);
    if (queue.length - head > DICT_SERVER_DEFAULTS.maxQueued) socket.pause();
    kick();
  });
  socket.on('end', () => {
    // The client hung up; with allowHalfOpen off Node ends our side too. Queued
    // lookups have nobody to read them; queued commits still run (see run()).
    stopping = true;
    if (splitter.pending) log.debug('peer closed in the middle of a line');
  });
  socket.on('timeout', () => {
    if (busy || head < queue.length) return; // a slow handler is not idleness
    log.debug('idle timeout');
    if (socket.writableEnded) socket.destroy();
    else finish();
  });
  socket.once('close', () => {
    stopping = true;
    clearTimeout(linger);
    transactions.clear();
    log.debug('connection closed');
  });

  /** Handles one line as it arrives: the handshake and transaction bookkeeping are synchronous; replies queue. */
  function accept(line: Buffer): void {
    const cmd = parseCommand(line);
    if (cmd instanceof DictProtocolError) return fail(cmd);
    if (ctx === undefined) {
      if (cmd.cmd !== 'hello') return fail(new DictProtocolError(DICT_ERROR_CODES.HANDSHAKE, `expected the H handshake, got ${cmd.cmd}`));
      ctx = Object.freeze({ dictName: cmd.name, protocolMajor: cmd.major, peer });
      // Dovecot expects no reply to H.
      log.debug({ cmd: 'hello', version: `${cmd.major}.${cmd.minor}`, dict: cmd.name }, 'dict handshake');
      return;
    }
    transact(cmd, ctx);
  }

  function transact(cmd: DictCommand, c: DictContext): void {
    switch (cmd.cmd) {
      case 'hello':
        return fail(new DictProtocolError(DICT_ERROR_CODES.HANDSHAKE, 'second H handshake'));
      case 'lookup':
        // Nothing queued before it: a cached answer can go out now, in order, without a promise.
        if (!busy && head >= queue.length && answerNow(cmd.key, cmd.user, c)) return;
        return enqueue({ kind: 'lookup', key: cmd.key, user: cmd.user });
      case 'iterate':
        return enqueue({ kind: 'iterate', flags: cmd.flags, maxRows: cmd.maxRows, path: cmd.path, user: cmd.user });
      case 'begin': {
        if (transactions.has(cmd.id)) return fail(new DictProtocolError(DICT_ERROR_CODES.DUPLICATE_TRANSACTION, `transaction ${cmd.id} is already open`));
        if (transactions.size >= s.maxTransactions) {
          return fail(new DictProtocolError(DICT_ERROR_CODES.TRANSACTION_LIMIT, `more than ${s.maxTransactions} open transactions`));
        }
        const tx: OpenTransaction = { id: cmd.id, user: cmd.user, ops: [], bytes: 0, hideLogValues: false };
        transactions.set(cmd.id, cmd.expireSecs === undefined ? tx : { ...tx, expireSecs: cmd.expireSecs });
        return;
      }
      case 'set':
      case 'unset':
      case 'atomicInc': {
        const tx = open(cmd.id);
        if (!tx) return;
        const op: DictOp =
          cmd.cmd === 'set' ? { op: 'set', key: cmd.key, value: cmd.value } : cmd.cmd === 'unset' ? { op: 'unset', key: cmd.key } : { op: 'inc', key: cmd.key, diff: cmd.diff };
        tx.bytes += cmd.key.length + (cmd.cmd === 'set' ? cmd.value.length : 0);
        if (tx.ops.length >= s.maxOpsPerTransaction) {
          return fail(new DictProtocolError(DICT_ERROR_CODES.TRANSACTION_LIMIT, `more than ${s.maxOpsPerTransaction} operations in transaction ${cmd.id}`));
        }
        if (tx.bytes > DICT_SERVER_DEFAULTS.maxTransactionBytes) {
          return fail(new DictProtocolError(DICT_ERROR_CODES.TRANSACTION_LIMIT, `transaction ${cmd.id} exceeds ${DICT_SERVER_DEFAULTS.maxTransactionBytes} bytes`));
        }
        tx.ops.push(op);
        return;
      }
      case 'timestamp': {
        const tx = open(cmd.id);
        if (tx) tx.timestamp = { secs: cmd.secs, nsecs: cmd.nsecs };
        return;
      }
      case 'hideLogValues': {
        const tx = open(cmd.id);
        if (tx) tx.hideLogValues = cmd.hide;
        return;
      }
      case 'rollback': {
        const tx = open(cmd.id);
        if (!tx) return;
        transactions.delete(cmd.id);
        log.debug({ cmd: 'rollback', id: cmd.id, ops: tx.ops.length }, 'dict rollback');
        return;
      }
      case 'commit':
      case 'commitAsync': {
        const tx = open(cmd.id);
        if (!tx) return;
        transactions.delete(cmd.id);
        const done: DictTransaction = {
          id: tx.id,
          user: tx.user,
          ops: tx.ops,
          hideLogValues: tx.hideLogValues,
          ctx: c,
          ...(tx.expireSecs === undefined ? {} : { expireSecs: tx.expireSecs }),
          ...(tx.timestamp === undefined ? {} : { timestamp: tx.timestamp }),
        };
        return enqueue({ kind: 'commit', tx: done, async: cmd.cmd === 'commitAsync' });
      }
    }
  }

  function open(id: number): OpenTransaction | undefined {
    const tx = transactions.get(id);
    if (!tx) fail(new DictProtocolError(DICT_ERROR_CODES.UNKNOWN_TRANSACTION, `transaction ${id} is not open`));
    return tx;
  }

  function enqueue(job: Job): void {
    queue.push(job);
  }

  /** Stops reading; the error is logged and the connection closed once the replies before it are out. */
  function fail(error: DictProtocolError): void {
    stopping = true;
    transactions.clear();
    queue.push({ kind: 'fatal', error });
    socket.resume();
  }

  function kick(): void {
    run().catch((err: unknown) => {
      log.error({ err }, 'dict connection failed');
      socket.destroy();
    });
  }

  /** Answers queued commands one at a time, in order. */
  async function run(): Promise<void> {
    if (busy) return;
    busy = true;
    try {
      while (head < queue.length) {
        const job = queue[head++]!;
        if (head === queue.length) {
          queue = [];
          head = 0;
        }
        if (job.kind === 'fatal') {
          // One warn line per bad client; Dovecot's own dict server also just disconnects.
          log.warn({ code: job.error.code, reason: job.error.message }, 'invalid dict request; closing connection');
          queue = [];
          head = 0;
          finish();
          return;
        }
        // A commit the client sent before hanging up still runs: it meant it.
        if (job.kind !== 'commit' && !socket.writable) continue;
        if (job.kind === 'iterate') await iterate(job, ctx!);
        else await write(job.kind === 'lookup' ? await lookup(job, ctx!) : await commit(job));
        if (!stopping && socket.isPaused() && queue.length - head <= DICT_SERVER_DEFAULTS.maxQueued / 2) socket.resume();
      }
      if (draining) finish();
    } finally {
      busy = false;
    }
  }

  /** Writes a cached answer at once; false when there is none (or the socket needs draining). */
  function answerNow(key: string, user: string, c: DictContext): boolean {
    if (!socket.writable || socket.writableNeedDrain) return false;
    const reply = cachedReply(key, user, c);
    if (reply === undefined) return false;
    socket.write(reply);
    return true;
  }

  function cachedReply(key: string, user: string, c: DictContext): string | undefined {
    if (!s.handler.cachedLookup) return undefined;
    let reply: string | undefined;
    try {
      reply = s.handler.cachedLookup(key, user, c);
    } catch (err) {
      log.error({ err, key }, 'dict cached lookup failed');
      return undefined;
    }
    if (reply !== undefined && log.isLevelEnabled('debug')) {
      log.debug({ cmd: 'lookup', key, user, result: reply === 'N\n' ? 'notfound' : 'found', cached: true }, 'dict lookup');
    }
    return reply;
  }

  async function write(text: string): Promise<void> {
    if (!socket.writable) return;
    if (!socket.write(text)) await drained(socket);
  }

  async function lookup(job: { key: string; user: string }, c: DictContext): Promise<string> {
    const cached = cachedReply(job.key, job.user, c);
    if (cached !== undefined) return cached;
    const started = performance.now();
    let reply: string;
    let result: string;
    try {
      const value = await s.handler.lookup(job.key, job.user, c);
      if (value === undefined) {
        [reply, result] = [lookupNotFound(), 'notfound'];
      } else if (typeof value === 'string') {
        [reply, result] = [lookupFound(value), 'found'];
      } else {
        log.error({ key: job.key, type: typeof value }, 'dict lookup returned a non-string value');
        [reply, result] = [lookupFailed('invalid lookup result'), 'failed'];
      }
    } catch (err) {
      log.error({ err, key: job.key, user: job.user }, 'dict lookup failed');
      [reply, result] = [lookupFailed(failureText(err, 'lookup failed')), 'failed'];
    }
    if (log.isLevelEnabled('debug')) log.debug({ cmd: 'lookup', key: job.key, user: job.user, result, ms: elapsed(started) }, 'dict lookup');
    return reply;
  }

  async function iterate(job: { flags: number; maxRows: number; path: string; user: string }, c: DictContext): Promise<void> {
    const started = performance.now();
    const noValue = (job.flags & DICT_ITERATE_FLAGS.NO_VALUE) !== 0;
    let rows = 0;
    let failure: string | undefined;
    try {
      const iterable = s.handler.iterate(job.path, job.flags, job.user, { ...c, maxRows: job.maxRows });
      for await (const row of iterable) {
        if (!socket.writable) break; // gone: return() lets the handler stop its query
        if (!Array.isArray(row) || typeof row[0] !== 'string' || (!noValue && typeof row[1] !== 'string')) {
          throw new InvalidRow('dict iterate returned a row that is not [key, value] strings');
        }
        await write(iterateRow(row[0], noValue ? undefined : row[1]));
        rows++;
        if (job.maxRows > 0 && rows >= job.maxRows) break;
      }
    } catch (err) {
      log.error({ err, path: job.path, user: job.user, rows }, 'dict iterate failed');
      failure = err instanceof InvalidRow ? 'invalid iterate result' : failureText(err, 'iterate failed');
    }
    await write(failure === undefined ? iterateEnd() : iterateFailed(failure));
    log.debug({ cmd: 'iterate', path: job.path, flags: job.flags, user: job.user, rows, result: failure === undefined ? 'ok' : 'failed', ms: elapsed(started) }, 'dict iterate');
  }

  async function commit(job: { tx: DictTransaction; async: boolean }): Promise<string> {
    const { tx } = job;
    const started = performance.now();
    let reply: string;
    let result: string;
    try {
      const r = await s.handler.commit(tx);
      if (r === 'ok') [reply, result] = [commitOk(tx.id, job.async), 'ok'];
      else if (r === 'notfound') [reply, result] = [commitNotFound(tx.id, job.async), 'notfound'];
      else {
        log.error({ id: tx.id, result: String(r) }, 'dict commit returned an invalid result');
        [reply, result] = [commitFailed(tx.id, 'invalid commit result', job.async), 'failed'];
      }
    } catch (err) {
      log.error({ err, id: tx.id, user: tx.user, keys: keyList(tx.ops) }, 'dict commit failed');
      [reply, result] = [commitFailed(tx.id, failureText(err, 'commit failed'), job.async), 'failed'];
    }
    // Key names only: values (passwords, tokens) are never logged.
    log.debug({ cmd: 'commit', id: tx.id, user: tx.user, ops: tx.ops.length, keys: keyList(tx.ops), result, ms: elapsed(started) }, 'dict commit');
    return reply;
  }

  /** Half-closes after the pending writes, keeps discarding input, and destroys if the peer lingers. */
  function finish(): void {
    stopping = true;
    socket.resume();
    if (!socket.writableEnded) socket.end();
    linger ??= setTimeout(() => socket.destroy(), DICT_SERVER_DEFAULTS.lingerMs);
  }

  return {
    drain() {
      // Shutdown: answer what was already received, then close. Open
      // transactions are dropped (never committed); Dovecot reports them failed.
      draining = true;
      stopping = true;
      if (!busy && head >= queue.length) finish();
    },
  };
}

class InvalidRow extends Error {}

function failureText(err: unknown, fallback: string): string {
  return err instanceof DictFailure ? err.message : fallback;
}

function keyList(ops: readonly DictOp[]): string[] {
  const keys = ops.slice(0, 10).map((o) => o.key);
  if (ops.length > 10) keys.push(`(+${ops.length - 10} more)`);
  return keys;
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
