// The policy service's socket side (check_policy_service): persistent
// connections, one reply per request in request order, a deadline per
// decision, and no reply at all on malformed input (SMTPD_POLICY_README: "in
// case of trouble the policy server must not send a reply ... log a warning
// and disconnect").
//
// A decider that answers synchronously (every input cached) is answered in the
// same tick that read the request: no promise, no deadline timer, and the
// reply bytes of a repeated action come from a small cache. Only decisions
// that wait for DNS or the directory take the async path with its deadline.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ServiceListen } from '../config/load.ts';
import { drained, listen, type ConnectionHandle, type Listener } from '../net/listener.ts';
import { encodePolicyReply, PolicyCodecError, PolicyRequestDecoder, type PolicyCodecLimits } from './codec.ts';
import type { PolicyRequest } from './request.ts';

export interface PolicySession {
  /** Connection number, as logged in `conn`. */
  readonly id: number;
  /** `ip:port` of the smtpd process, or `unix`. */
  readonly peer: string;
  /**
   * Per-message state: the value made by create() for this instance; a new
   * instance (Postfix moved on to the next message on this connection) drops
   * the old one. '' instance (CONNECT/HELO) gets its own slot, which is also
   * dropped when a request names another client_address/client_port: one smtpd
   * process carries many SMTP sessions over the same policy connection.
   */
  message<T>(instance: string, create: () => T): T;
}

/**
 * The action text, e.g. 'DUNNO', 'REJECT 5.1.1 ...', 'PREPEND Received-SPF: pass ...':
 * returned directly when the decision needed no waiting, else as a promise.
 */
export type PolicyDecider = (request: PolicyRequest, session: PolicySession) => string | Promise<string>;

export interface PolicyServerOptions {
  readonly listen: ServiceListen;
  /** Called once per request, so it can read the daemon's current state each time. May throw or reject. */
  readonly decide: PolicyDecider;
  readonly log: Logger;
  /** The answer when decide() throws, misses the deadline or returns an unusable action, e.g. 'DEFER_IF_PERMIT 4.3.0 ...'. */
  readonly defaultAction: string;
  /** Longest wait for one decision; keep it well under Postfix's smtpd_policy_service_timeout (100 s). */
  readonly deadlineMs: number;
  /** Closes a connection without traffic for this long (up to a quarter more); default 330 s, past Postfix's own smtpd_policy_service_max_idle (300 s). */
  readonly idleTimeoutMs?: number;
  readonly limits?: Partial<PolicyCodecLimits>;
}

export const POLICY_SERVER_DEFAULTS = {
  idleTimeoutMs: 330_000,
  /** Stop reading while this many decoded requests wait (Postfix sends one at a time anyway). */
  maxQueued: 8,
  /** After closing our side, how long a peer may take to close before we destroy the socket. */
  lingerMs: 2_000,
  /** Encoded replies kept per server, by action text (DUNNO, PREPEND of a cached SPF verdict, common rejects). */
  replyCacheEntries: 4_096,
} as const;

const POLICY_REQUEST = 'smtpd_access_policy';
const DUNNO = encodePolicyReply('DUNNO');

interface Settings {
  readonly decide: PolicyDecider;
  readonly replies: ReplyCache;
  readonly idle: IdleSweeper;
  readonly log: Logger;
  readonly defaultReply: Buffer;
  readonly defaultAction: string;
  readonly deadlineMs: number;
  readonly limits: Partial<PolicyCodecLimits> | undefined;
}

export async function startPolicyServer(opts: PolicyServerOptions): Promise<Listener> {
  if (!Number.isFinite(opts.deadlineMs) || opts.deadlineMs <= 0 || opts.deadlineMs > 2_147_483_647) throw new RangeError(`invalid policy deadlineMs: ${opts.deadlineMs}`);
  const settings: Settings = {
    decide: opts.decide,
    replies: new ReplyCache(POLICY_SERVER_DEFAULTS.replyCacheEntries),
    idle: new IdleSweeper(opts.idleTimeoutMs ?? POLICY_SERVER_DEFAULTS.idleTimeoutMs),
    log: opts.log,
    // Refused at startup rather than at the first failed decision.
    defaultReply: encodePolicyReply(opts.defaultAction),
    defaultAction: opts.defaultAction,
    deadlineMs: opts.deadlineMs,
    limits: opts.limits,
  };
  new PolicyRequestDecoder(settings.limits); // validates the limits now
  return listen(opts.listen.listen, opts.listen.unix, (socket) => serveConnection(socket, settings), opts.log);
}

class ConnectionSession implements PolicySession {
  readonly id: number;
  readonly peer: string;
  #client = '';
  #clientPort = '';
  #connection: { value: unknown } | undefined;
  #instance = '';
  #message: { value: unknown } | undefined;

  constructor(id: number, peer: string) {
    this.id = id;
    this.peer = peer;
  }

  /** Called before each decision: a new SMTP client on this smtpd process drops the '' slot. */
  begin(request: PolicyRequest): void {
    if (request.clientAddress !== this.#client || request.clientPort !== this.#clientPort) {
      this.#client = request.clientAddress;
      this.#clientPort = request.clientPort;
      this.#connection = undefined;
    }
  }

  message<T>(instance: string, create: () => T): T {
    if (instance === '') {
      this.#connection ??= { value: create() };
      return this.#connection.value as T;
    }
    if (this.#message === undefined || this.#instance !== instance) {
      const value = create();
      this.#instance = instance;
      this.#message = { value };
    }
    return this.#message.value as T;
  }
}

type Outcome = { readonly action: string } | { readonly err: unknown } | { readonly timedOut: true } | { readonly closed: true };

let connectionCounter = 0;

function serveConnection(socket: Socket, s: Settings): ConnectionHandle {
  const id = ++connectionCounter;
  const peer = socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
  const log = s.log.child({ conn: id, peer });
  const session = new ConnectionSession(id, peer);
  const decoder = new PolicyRequestDecoder(s.limits);
  let queue: PolicyRequest[] = [];
  let head = 0;
  let busy = false;
  /** Set once no further request will be read: codec error, shutdown or EOF. */
  let stopping = false;
  /** Close after the requests decoded before the bad bytes are answered. */
  let fatal = false;
  let draining = false;
  let warnedRequestName = false;
  let linger: NodeJS.Timeout | undefined;
  /** Ends the wait for the decision in flight (and its deadline timer) when the connection goes away. */
  let abandon: (() => void) | undefined;

  log.debug('connection opened');
  // Idleness is noticed by the server's sweep (IdleSweeper), not by a socket timer refreshed on every read and write.
  const idle: IdleConnection = { active: true, quiet: 0, busy: () => busy || head < queue.length, onIdle };
  s.idle.add(idle);

  socket.on('data', (chunk: Buffer) => {
    idle.active = true;
    if (stopping) return; // discard: we are closing, but keep reading so the kernel doesn't answer with RST
    let requests: readonly PolicyRequest[];
    try {
      requests = decoder.push(chunk);
    } catch (err) {
      if (!(err instanceof PolicyCodecError)) {
        log.error({ err }, 'policy request decoding failed');
        socket.destroy();
        return;
      }
      requests = err.requests;
      log.warn({ code: err.code, bytes: decoder.buffered, reason: err.message }, 'malformed policy request; closing connection without a reply');
      fatal = true;
      stopping = true;
    }
    for (const r of requests) queue.push(r);
    if (queue.length - head > POLICY_SERVER_DEFAULTS.maxQueued) socket.pause();
    run();
  });
  socket.on('end', () => {
    // Postfix just closes; anything still queued has nobody to read the answer.
    stopping = true;
    if (decoder.buffered > 0) log.debug({ bytes: decoder.buffered }, 'peer closed in the middle of a request');
  });
  function onIdle(): void {
    log.debug('idle timeout');
    if (socket.writableEnded) socket.destroy();
    else finish();
  }
  socket.once('close', () => {
    s.idle.remove(idle);
    stopping = true;
    clearTimeout(linger);
    abandon?.();
    queue = [];
    head = 0;
    log.debug('connection closed');
  });

  /**
   * Answers queued requests one at a time, in order: synchronous answers in
   * this loop, an async one suspends it (busy) until its reply is written.
   */
  function run(): void {
    if (busy) return;
    try {
      while (head < queue.length && socket.writable) {
        const request = queue[head++]!;
        if (head === queue.length) {
          queue.length = 0;
          head = 0;
        }
        const reply = answer(request);
        if (reply instanceof Promise) {
          busy = true;
          reply.then(
            (r) => {
              busy = false;
              if (socket.writable && send(r)) run();
            },
            (err: unknown) => {
              busy = false;
              failed(err);
            },
          );
          return;
        }
        if (!send(reply)) return;
      }
      if (fatal || draining) finish();
    } catch (err) {
      failed(err);
    }
  }

  /** Writes a reply; false when the loop must not go on now (shutdown, or waiting for the peer to read). */
  function send(reply: Buffer): boolean {
    idle.active = true;
    if (!socket.write(reply)) {
      busy = true;
      void drained(socket).then(() => {
        busy = false;
        if (draining) finish();
        else run();
      });
      return false;
    }
    if (draining) {
      // Shutdown: the in-flight request is answered, the rest is Postfix's to retry.
      finish();
      return false;
    }
    if (!stopping && socket.isPaused() && queue.length - head <= POLICY_SERVER_DEFAULTS.maxQueued / 2) socket.resume();
    return true;
  }

  function failed(err: unknown): void {
    log.error({ err }, 'policy connection failed');
    socket.destroy();
  }

  /** The reply, at once when the decider answered synchronously. */
  function answer(request: PolicyRequest): Buffer | Promise<Buffer> {
    if (request.request !== POLICY_REQUEST) {
      // One warn line per connection: a confused client would otherwise flood the log.
      const level = warnedRequestName ? 'debug' : 'warn';
      warnedRequestName = true;
      log[level]({ request: request.request }, `not an ${POLICY_REQUEST} request; answering DUNNO`);
      return DUNNO;
    }
    session.begin(request);
    let decided: string | Promise<string>;
    try {
      decided = s.decide(request, session);
    } catch (err) {
      log.error({ ...facts(request), err, action: s.defaultAction }, 'policy decision failed; answering the default action');
      return s.defaultReply;
    }
    if (typeof decided === 'string') return encoded(request, decided);
    return decideWithin(request, decided).then((outcome) => {
      if ('action' in outcome) return encoded(request, outcome.action);
      if ('closed' in outcome) return s.defaultReply; // nobody left to answer
      if ('err' in outcome) {
        log.error({ ...facts(request), err: outcome.err, action: s.defaultAction }, 'policy decision failed; answering the default action');
      } else {
        log.error({ ...facts(request), deadlineMs: s.deadlineMs, action: s.defaultAction }, 'policy decision timed out; answering the default action');
      }
      return s.defaultReply;
    });
  }

  function encoded(request: PolicyRequest, action: string): Buffer {
    try {
      return s.replies.get(action);
    } catch (err) {
      log.error({ ...facts(request), err, action: s.defaultAction }, 'policy decision is not a valid action; answering the default action');
      return s.defaultReply;
    }
  }

  /** A pending decision raced against the deadline; a result that comes later is dropped. */
  function decideWithin(request: PolicyRequest, decided: Promise<string>): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const settle = (outcome: Outcome, late: boolean) => {
        if (settled) {
          if (late) log.debug({ instance: request.instance, late: 'err' in outcome ? 'failure' : 'action' }, 'late policy decision dropped');
          return;
        }
        settled = true;
        abandon = undefined;
        clearTimeout(timer);
        resolve(outcome);
      };
      const timer = setTimeout(() => settle({ timedOut: true }, false), s.deadlineMs);
      abandon = () => settle({ closed: true }, false);
      // A thenable that is not a promise (or anything else a buggy decider returns) is normalised here.
      Promise.resolve(decided).then(
        (action) => settle({ action }, true),
        (err: unknown) => settle({ err }, true),
      );
    });
  }

  /** Half-closes after the pending writes, keeps discarding input, and destroys if the peer lingers. */
  function finish(): void {
    stopping = true;
    socket.resume();
    if (!socket.writableEnded) socket.end();
    linger ??= setTimeout(() => socket.destroy(), POLICY_SERVER_DEFAULTS.lingerMs);
  }

  return {
    drain() {
      // Shutdown: finish the decision in flight and send its reply, then close.
      // Postfix retries a request that got EOF instead of a reply.
      draining = true;
      stopping = true;
      if (!busy) finish();
    },
  };
}

/** A connection as the idle sweep sees it. */
interface IdleConnection {
  /** Set on every read and reply; the sweep clears it. */
  active: boolean;
  /** Sweeps in a row that found the connection inactive. */
  quiet: number;
  /** A decision is running or requests wait: a slow decision is not idleness. */
  busy(): boolean;
  onIdle(): void;
}

/**
 * One timer per server for idle connections: a connection inactive for
 * SWEEPS sweeps in a row (idleTimeoutMs, at most a quarter more) is closed.
 * Cheaper than socket.setTimeout(), whose timer Node re-arms on every read
 * and every write; the timer runs only while there are connections.
 */
class IdleSweeper {
  static readonly SWEEPS = 4;
  readonly #intervalMs: number;
  readonly #connections = new Set<IdleConnection>();
  #timer: NodeJS.Timeout | undefined;

  constructor(idleTimeoutMs: number) {
    this.#intervalMs = Math.min(2_147_483_647, Math.max(1, Math.ceil(idleTimeoutMs / IdleSweeper.SWEEPS)));
  }

  add(c: IdleConnection): void {
    this.#connections.add(c);
    this.#timer ??= setInterval(() => this.#sweep(), this.#intervalMs).unref();
  }

  remove(c: IdleConnection): void {
    this.#connections.delete(c);
    if (this.#connections.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #sweep(): void {
    for (const c of this.#connections) {
      if (c.active || c.busy()) {
        c.active = false;
        c.quiet = 0;
      } else if (++c.quiet >= IdleSweeper.SWEEPS) {
        c.quiet = 0;
        c.onIdle();
      }
    }
  }
}

/**
 * Encoded replies by action text. Most replies repeat (DUNNO, the PREPEND of
 * an SPF verdict every message of a client shares, 550 5.1.1), and a hit
 * saves the framing check and the encoding. Bounded: when full it starts over.
 */
export class ReplyCache {
  readonly #max: number;
  #replies = new Map<string, Buffer>();

  constructor(maxEntries: number) {
    this.#max = maxEntries;
  }

  /** The reply for `action`; throws RangeError like encodePolicyReply() for one that cannot be framed. */
  get(action: string): Buffer {
    let reply = this.#replies.get(action);
    if (reply === undefined) {
      reply = encodePolicyReply(action);
      if (this.#replies.size >= this.#max) this.#replies = new Map();
      this.#replies.set(action, reply);
    }
    return reply;
  }

  get size(): number {
    return this.#replies.size;
  }
}

/** What the error line says about the request: enough to find the SMTP session in the Postfix log. */
function facts(r: PolicyRequest): Record<string, string> {
  return {
    client_address: r.clientAddress,
    protocol_state: r.protocolState,
    sender: r.sender,
    recipient: r.recipient,
    instance: r.instance,
  };
}
