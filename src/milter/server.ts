// The milter's socket side: one connection per SMTP session (Postfix opens a
// new one each time, postfix.md §3.4), commands handled strictly in order by
// a MilterSession, replies written as they come. A malformed or oversized
// packet is logged and the connection closed: Postfix then applies
// milter_default_action for the rest of that SMTP session.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ServiceListen } from '../config/load.ts';
import { drained, listen, type ConnectionHandle, type Listener } from '../net/listener.ts';
import { encodeReply, MilterCodecError, MilterDecoder, type MilterCommand } from './codec.ts';
import { MilterSession, type MessageReport, type MilterRuntime } from './session.ts';

export interface MilterServerOptions {
  readonly listen: ServiceListen;
  readonly log: Logger;
  /** Read at each MAIL, so a reload applies to the next message. */
  readonly runtime: () => MilterRuntime;
  /** Closes a connection without traffic for this long; default 1 h (an SMTP session may idle between messages). */
  readonly idleTimeoutMs?: number;
  readonly progressIntervalMs?: number;
  readonly onMessage?: (report: MessageReport) => void;
}

export const MILTER_SERVER_DEFAULTS = {
  idleTimeoutMs: 3_600_000,
  /** Stop reading while this many decoded commands wait (pipelined headers and body chunks). */
  maxQueued: 64,
  lingerMs: 2_000,
} as const;

const PROGRESS = encodeReply({ type: 'progress' });

export async function startMilterServer(opts: MilterServerOptions): Promise<Listener> {
  return listen(opts.listen.listen, opts.listen.unix, (socket) => serveConnection(socket, opts), opts.log);
}

let connectionCounter = 0;

function serveConnection(socket: Socket, opts: MilterServerOptions): ConnectionHandle {
  const id = ++connectionCounter;
  const log = opts.log.child({ conn: id });
  const decoder = new MilterDecoder();
  const session = new MilterSession({
    runtime: opts.runtime,
    log,
    progress: () => {
      if (socket.writable) socket.write(PROGRESS);
    },
    ...(opts.progressIntervalMs !== undefined ? { progressIntervalMs: opts.progressIntervalMs } : {}),
    ...(opts.onMessage ? { onMessage: opts.onMessage } : {}),
  });
  let queue: MilterCommand[] = [];
  let head = 0;
  let busy = false;
  let stopping = false;
  let draining = false;
  let linger: NodeJS.Timeout | undefined;

  log.debug('milter connection opened');
  socket.setTimeout(opts.idleTimeoutMs ?? MILTER_SERVER_DEFAULTS.idleTimeoutMs);

  socket.on('data', (chunk: Buffer) => {
    if (stopping) return;
    let commands: MilterCommand[];
    try {
      commands = decoder.push(chunk);
    } catch (err) {
      // The stream position is lost: nothing more can be read. Postfix applies its default action.
      const code = err instanceof MilterCodecError ? err.code : undefined;
      log.warn({ err: (err as Error).message, code }, 'malformed milter packet; closing the connection');
      stopping = true;
      session.close();
      socket.destroy();
      return;
    }
    for (const c of commands) queue.push(c);
    if (queue.length - head > MILTER_SERVER_DEFAULTS.maxQueued) socket.pause();
    void run();
  });
  socket.on('end', () => {
    stopping = true;
    if (!busy) finish();
  });
  socket.on('timeout', () => {
    if (busy) return;
    log.debug('idle milter connection closed');
    socket.destroy();
  });
  socket.once('close', () => {
    stopping = true;
    clearTimeout(linger);
    session.close();
    queue = [];
    head = 0;
    log.debug('milter connection closed');
  });

  async function run(): Promise<void> {
    if (busy) return;
    busy = true;
    try {
      while (head < queue.length && !socket.destroyed) {
        const cmd = queue[head++]!;
        if (head === queue.length) {
          queue = [];
          head = 0;
        }
        let replies;
        try {
          replies = await session.handle(cmd);
        } catch (err) {
          // Only a failed negotiation gets here: without it there is no protocol to speak.
          log.warn({ err: (err as Error).message }, 'milter negotiation failed; closing the connection');
          socket.destroy();
          return;
        }
        // All replies to one command in one write (end of message: header edits and the answer): one
        // syscall and one wakeup of Postfix instead of one per reply.
        if (replies.length > 0) {
          if (!socket.writable) return;
          const bytes = replies.length === 1 ? encodeReply(replies[0]!) : Buffer.concat(replies.map((r) => encodeReply(r)));
          if (!socket.write(bytes)) await drained(socket);
        }
        if (cmd.type === 'quit' || cmd.type === 'quitNc') {
          finish();
          return;
        }
        if (draining && !session.inMessage) {
          finish();
          return;
        }
        if (socket.isPaused() && !stopping && queue.length - head <= MILTER_SERVER_DEFAULTS.maxQueued / 2) socket.resume();
      }
      if (stopping) finish();
    } catch (err) {
      log.error({ err }, 'milter connection failed');
      socket.destroy();
    } finally {
      busy = false;
    }
  }

  function finish(): void {
    stopping = true;
    session.close();
    socket.resume();
    if (!socket.writableEnded) socket.end();
    linger ??= setTimeout(() => socket.destroy(), MILTER_SERVER_DEFAULTS.lingerMs);
  }

  return {
    drain() {
      // Shutdown or reload: let the message in progress finish, then close. Postfix
      // opens a new connection for the next SMTP session.
      draining = true;
      if (!busy && !session.inMessage) finish();
    },
  };
}
