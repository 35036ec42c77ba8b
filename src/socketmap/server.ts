// The socketmap daemon's socket side: netstring framing, one reply per request
// in request order, and the fail-safe answers Postfix expects (socketmap_table(5)).
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ServiceListen } from '../config/load.ts';
import { drained, listen, type ConnectionHandle, type Listener } from '../net/listener.ts';
import { encodeNetstring, NetstringDecoder, NetstringError } from './netstring.ts';
import { encodeReply, parseRequest, ProtocolError, PROTOCOL_ERROR_CODES, reply, type SocketmapReply } from './protocol.ts';

export type SocketmapLookup = (map: string, key: string) => Promise<SocketmapReply>;

export interface SocketmapServerOptions {
  readonly listen: ServiceListen;
  /** Decides the answer; may throw or reject, which becomes `TEMP`. */
  readonly lookup: SocketmapLookup;
  /** Optional fast path: the encoded reply frame of an answer known without waiting (a cache hit), else undefined. */
  readonly cachedFrame?: (map: string, key: string) => Buffer | undefined;
  readonly log: Logger;
  /** Largest accepted request payload. Postfix keys are short; default 10000. */
  readonly maxRequestBytes?: number;
  /** Closes a connection without traffic for this long. Postfix itself drops idle ones after 10 s; default 60 s. */
  readonly idleTimeoutMs?: number;
}

export const SOCKETMAP_DEFAULTS = {
  maxRequestBytes: 10_000,
  idleTimeoutMs: 60_000,
  /** Stop reading while this many decoded requests wait (Postfix sends one at a time anyway). */
  maxQueued: 32,
  /** After our last reply, how long a peer may take to close before we destroy the socket. */
  lingerMs: 2_000,
} as const;

interface Settings {
  readonly lookup: SocketmapLookup;
  readonly cachedFrame: ((map: string, key: string) => Buffer | undefined) | undefined;
  readonly log: Logger;
  readonly maxRequestBytes: number;
  readonly idleTimeoutMs: number;
}

export function startSocketmapServer(opts: SocketmapServerOptions): Promise<Listener> {
  const settings: Settings = {
    lookup: opts.lookup,
    cachedFrame: opts.cachedFrame,
    log: opts.log,
    maxRequestBytes: opts.maxRequestBytes ?? SOCKETMAP_DEFAULTS.maxRequestBytes,
    idleTimeoutMs: opts.idleTimeoutMs ?? SOCKETMAP_DEFAULTS.idleTimeoutMs,
  };
  return listen(opts.listen.listen, opts.listen.unix, (socket) => serveConnection(socket, settings), opts.log);
}

let connectionCounter = 0;

function serveConnection(socket: Socket, s: Settings): ConnectionHandle {
  const peer = socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
  const log = s.log.child({ conn: ++connectionCounter, peer });
  const decoder = new NetstringDecoder(s.maxRequestBytes);
  let queue: Buffer[] = [];
  let head = 0;
  let busy = false;
  /** Set once no further request will be read: framing error, shutdown or EOF. */
  let stopping = false;
  /** A framing error, answered with PERM after the requests decoded before it. */
  let fatal: NetstringError | undefined;
  let draining = false;
  let linger: NodeJS.Timeout | undefined;

  log.debug('connection opened');
  socket.setTimeout(s.idleTimeoutMs);

  socket.on('data', (chunk: Buffer) => {
    if (stopping) return; // discard: we are closing, but keep reading so the kernel doesn't answer with RST
    let frames: readonly Buffer[];
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      if (!(err instanceof NetstringError)) throw err;
      frames = err.frames;
      fatal = err;
      stopping = true;
    }
    for (const f of frames) queue.push(f);
    if (queue.length - head > SOCKETMAP_DEFAULTS.maxQueued) socket.pause();
    if (answerImmediately()) return;
    run().catch((err: unknown) => {
      log.error({ err }, 'socketmap connection failed');
      socket.destroy();
    });
  });
  socket.on('end', () => {
    // Postfix just closes; anything still queued has nobody to read the answer.
    stopping = true;
    if (decoder.pending) log.debug('peer closed in the middle of a request');
  });
  socket.on('timeout', () => {
    if (busy || head < queue.length) return; // a slow lookup is not idleness
    log.debug('idle timeout');
    if (socket.writableEnded) socket.destroy();
    else finish();
  });
  socket.once('close', () => {
    stopping = true;
    clearTimeout(linger);
    queue = [];
    head = 0;
    parsedHead = undefined;
    log.debug('connection closed');
  });

  /** The request at `head`, parsed once even when the fast path hands it to run(). */
  let parsedHead: ReturnType<typeof parseRequest> | undefined;

  function takeHead(): ReturnType<typeof parseRequest> {
    const req = parsedHead ?? parseRequest(queue[head]!);
    parsedHead = undefined;
    if (++head === queue.length) {
      queue = [];
      head = 0;
    }
    return req;
  }

  /**
   * Writes, synchronously and in order, the replies of queued requests that
   * are known without waiting (a cache hit, an in-memory directory); stops at
   * the first one that needs waiting, is invalid, or when the socket wants a drain.
   */
  function writeReadyReplies(): void {
    if (!s.cachedFrame) return;
    while (head < queue.length && socket.writable && !socket.writableNeedDrain) {
      const req = (parsedHead ??= parseRequest(queue[head]!));
      if (req instanceof ProtocolError) return;
      const frame = s.cachedFrame(req.map, req.key);
      if (!frame) return;
      takeHead();
      socket.write(frame);
    }
  }

  function resumeIfRoom(): void {
    if (!stopping && socket.isPaused() && queue.length - head <= SOCKETMAP_DEFAULTS.maxQueued / 2) socket.resume();
  }

  /** The fast path, from the 'data' handler: true when nothing is left for the async loop to do. */
  function answerImmediately(): boolean {
    if (busy) return false;
    writeReadyReplies();
    resumeIfRoom();
    return head >= queue.length && !fatal && !draining;
  }

  /** Answers queued requests one at a time, in order. */
  async function run(): Promise<void> {
    if (busy) return;
    busy = true;
    try {
      while (head < queue.length && socket.writable) {
        if (socket.writableNeedDrain) await drained(socket);
        writeReadyReplies();
        resumeIfRoom();
        if (head >= queue.length || socket.writableNeedDrain || !socket.writable) continue;
        // One that needs waiting (or an invalid one, answered PERM and hung up on).
        const [bytes, close] = await answer(takeHead());
        if (!socket.writable) return;
        socket.write(encodeNetstring(bytes));
        if (close) return finish();
        resumeIfRoom();
      }
      if (fatal && socket.writable) {
        // One warn line per bad client; postsrsd likewise answers PERM and hangs up.
        log.warn({ code: fatal.code, reason: fatal.message }, 'malformed socketmap request; closing connection');
        socket.write(encodeNetstring(encodeReply(reply.perm(fatal.message))));
        finish();
      } else if (draining) {
        finish();
      }
    } finally {
      busy = false;
    }
  }

  /** The reply bytes for one request, and whether to hang up after sending them. */
  async function answer(req: ReturnType<typeof parseRequest>): Promise<[Buffer, boolean]> {
    if (req instanceof ProtocolError) {
      log.warn({ code: req.code, reason: req.message }, 'invalid socketmap request; closing connection');
      return [encodeReply(reply.perm(req.message)), true];
    }
    let result: SocketmapReply;
    try {
      result = await s.lookup(req.map, req.key);
    } catch (err) {
      log.error({ err, map: req.map, key: req.key }, 'socketmap lookup failed');
      return [encodeReply(reply.temp('lookup failed')), false];
    }
    try {
      return [encodeReply(result), false];
    } catch (err) {
      // Enforced here, not left to Postfix: an empty OK is a config error in
      // maps.c, and a reply over 100000 bytes is refused by dict_sockmap.c.
      const tooLong = err instanceof ProtocolError && err.code === PROTOCOL_ERROR_CODES.REPLY_TOO_LONG;
      log.error({ err, map: req.map, key: req.key }, 'socketmap lookup returned an unusable reply');
      return [encodeReply(tooLong ? reply.perm('result too long') : reply.temp('invalid lookup result')), false];
    }
  }

  /** Half-closes after the pending writes, keeps discarding input, and destroys if the peer lingers. */
  function finish(): void {
    stopping = true;
    socket.resume();
    if (!socket.writableEnded) socket.end();
    linger ??= setTimeout(() => socket.destroy(), SOCKETMAP_DEFAULTS.lingerMs);
  }

  return {
    drain() {
      // Shutdown: answer what was already received, then close. Requests that
      // arrive later are dropped; Postfix retries once after EOF (dict_sockmap.c).
      draining = true;
      stopping = true;
      if (!busy && head >= queue.length) finish();
    },
  };
}
