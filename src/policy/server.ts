// The policy service's socket side (check_policy_service): persistent
// connections, one reply per request in request order, a deadline per
// decision, and no reply at all on malformed input (SMTPD_POLICY_README: "in
// case of trouble the policy server must not send a reply ... log a warning
// and disconnect").
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

/** Resolves to the action text, e.g. 'DUNNO', 'REJECT 5.1.1 ...', 'PREPEND Received-SPF: pass ...'. */
export type PolicyDecider = (request: PolicyRequest, session: PolicySession) => Promise<string>;

export interface PolicyServerOptions {
  readonly listen: ServiceListen;
  /** Called once per request, so it can read the daemon's current state each time. May throw or reject. */
  readonly decide: PolicyDecider;
  readonly log: Logger;
  /** The answer when decide() throws, misses the deadline or returns an unusable action, e.g. 'DEFER_IF_PERMIT 4.3.0 ...'. */
  readonly defaultAction: string;
  /** Longest wait for one decision; keep it well under Postfix's smtpd_policy_service_timeout (100 s). */
  readonly deadlineMs: number;
  /** Closes a connection without traffic for this long; default 330 s, past Postfix's own smtpd_policy_service_max_idle (300 s). */
  readonly idleTimeoutMs?: number;
  readonly limits?: Partial<PolicyCodecLimits>;
}

export const POLICY_SERVER_DEFAULTS = {
  idleTimeoutMs: 330_000,
  /** Stop reading while this many decoded requests wait (Postfix sends one at a time anyway). */
  maxQueued: 8,
  /** After closing our side, how long a peer may take to close before we destroy the socket. */
  lingerMs: 2_000,
} as const;

const POLICY_REQUEST = 'smtpd_access_policy';
const DUNNO = encodePolicyReply('DUNNO');

interface Settings {
  readonly decide: PolicyDecider;
  readonly log: Logger;
  readonly defaultReply: Buffer;
  readonly defaultAction: string;
  readonly deadlineMs: number;
  readonly idleTimeoutMs: number;
  readonly limits: Partial<PolicyCodecLimits> | undefined;
}

export async function startPolicyServer(opts: PolicyServerOptions): Promise<Listener> {
  if (!Number.isFinite(opts.deadlineMs) || opts.deadlineMs <= 0 || opts.deadlineMs > 2_147_483_647) throw new RangeError(`invalid policy deadlineMs: ${opts.deadlineMs}`);
  const settings: Settings = {
    decide: opts.decide,
    log: opts.log,
    // Refused at startup rather than at the first failed decision.
    defaultReply: encodePolicyReply(opts.defaultAction),
    defaultAction: opts.defaultAction,
    deadlineMs: opts.deadlineMs,
    idleTimeoutMs: opts.idleTimeoutMs ?? POLICY_SERVER_DEFAULTS.idleTimeoutMs,
    limits: opts.limits,
  };
  new PolicyRequestDecoder(settings.limits); // validates the limits now
  return listen(opts.listen.listen, opts.listen.unix, (socket) => serveConnection(socket, settings), opts.log);
}

class ConnectionSession implements PolicySession {
  readonly id: number;
  readonly peer: string;
  #client = '';
  #connection: { value: unknown } | undefined;
  #instance = '';
  #message: { value: unknown } | undefined;

  constructor(id: number, peer: string) {
    this.id = id;
    this.peer = peer;
  }

  /** Called before each decision: a new SMTP client on this smtpd process drops the '' slot. */
  begin(request: PolicyRequest): void {
    const client = `${request.clientAddress}:${request.clientPort}`;
    if (client !== this.#client) {
      this.#client = client;
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
  socket.setTimeout(s.idleTimeoutMs);

  socket.on('data', (chunk: Buffer) => {
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
    void run();
  });
  socket.on('end', () => {
    // Postfix just closes; anything still queued has nobody to read the answer.
    stopping = true;
    if (decoder.buffered > 0) log.debug({ bytes: decoder.buffered }, 'peer closed in the middle of a request');
  });
  socket.on('timeout', () => {
    if (busy || head < queue.length) return; // a slow decision is not idleness
    log.debug('idle timeout');
    if (socket.writableEnded) socket.destroy();
    else finish();
  });
  socket.once('close', () => {
    stopping = true;
    clearTimeout(linger);
    abandon?.();
    queue = [];
    head = 0;
    log.debug('connection closed');
  });

  /** Answers queued requests one at a time, in order. */
  async function run(): Promise<void> {
    if (busy) return;
    busy = true;
    try {
      while (head < queue.length && socket.writable) {
        const request = queue[head++]!;
        if (head === queue.length) {
          queue = [];
          head = 0;
        }
        const reply = await answer(request);
        if (!socket.writable) return;
        if (!socket.write(reply)) await drained(socket);
        if (draining) break; // shutdown: the in-flight request is answered, the rest is Postfix's to retry
        if (!stopping && socket.isPaused() && queue.length - head <= POLICY_SERVER_DEFAULTS.maxQueued / 2) socket.resume();
      }
      if (fatal || draining) finish();
    } catch (err) {
      log.error({ err }, 'policy connection failed');
      socket.destroy();
    } finally {
      busy = false;
    }
  }

  async function answer(request: PolicyRequest): Promise<Buffer> {
    if (request.request !== POLICY_REQUEST) {
      // One warn line per connection: a confused client would otherwise flood the log.
      const level = warnedRequestName ? 'debug' : 'warn';
      warnedRequestName = true;
      log[level]({ request: request.request }, `not an ${POLICY_REQUEST} request; answering DUNNO`);
      return DUNNO;
    }
    session.begin(request);
    const outcome = await decideWithin(request);
    if ('action' in outcome) {
      try {
        return encodePolicyReply(outcome.action);
      } catch (err) {
        log.error({ ...facts(request), err, action: s.defaultAction }, 'policy decision is not a valid action; answering the default action');
        return s.defaultReply;
      }
    }
    if ('closed' in outcome) return s.defaultReply; // nobody left to answer
    if ('err' in outcome) {
      log.error({ ...facts(request), err: outcome.err, action: s.defaultAction }, 'policy decision failed; answering the default action');
    } else {
      log.error({ ...facts(request), deadlineMs: s.deadlineMs, action: s.defaultAction }, 'policy decision timed out; answering the default action');
    }
    return s.defaultReply;
  }

  /** decide() raced against the deadline; a result that comes later is dropped. */
  function decideWithin(request: PolicyRequest): Promise<Outcome> {
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
      let pending: Promise<string>;
      try {
        pending = Promise.resolve(s.decide(request, session));
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(
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
