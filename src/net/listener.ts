// TCP and unix-socket listeners shared by every mailwarden service: safe socket
// file handling, a Set of live connections and a graceful close.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname, resolve as resolvePath } from 'node:path';
import type { Logger } from 'pino';
import { formatListen, type ListenAddress } from '../config/listen.ts';
import type { UnixListenOptions } from '../config/load.ts';

/** Optional per-connection hook: drain() is called once when the listener starts closing. */
export interface ConnectionHandle {
  drain(): void;
}

export type ConnectionHandler = (socket: Socket) => ConnectionHandle | void;

export interface Listener {
  /** The bound address; for `inet:host:0` this carries the port the kernel picked. */
  readonly address: ListenAddress;
  /** Number of live connections. */
  readonly connections: number;
  /**
   * Stops accepting, asks every connection to drain, waits up to graceMs for
   * them to close and then destroys the rest. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

export class ListenError extends Error {
  override readonly name = 'ListenError';
}

const DEFAULT_GRACE_MS = 10_000;
const PROBE_TIMEOUT_MS = 1_000;
const QUIET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

export async function listen(
  address: ListenAddress,
  unix: UnixListenOptions,
  onConnection: ConnectionHandler,
  log: Logger,
): Promise<Listener> {
  const where = formatListen(address);
  const sockets = new Map<Socket, ConnectionHandle | undefined>();
  /** Set while closing: called when the last connection is gone. */
  let onIdle: (() => void) | undefined;
  // noDelay: replies are small and, when pipelined, must not wait for delayed ACKs.
  const server = createServer({ noDelay: true }, (socket) => {
    sockets.set(socket, undefined);
    socket.once('close', () => {
      sockets.delete(socket);
      if (sockets.size === 0) onIdle?.();
    });
    // Attached first so that a reset peer can never crash the process.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (QUIET_ERRORS.has(err.code ?? '')) log.debug({ err: err.message, code: err.code }, 'socket error');
      else log.warn({ err }, 'socket error');
    });
    try {
      const handle = onConnection(socket);
      if (handle && sockets.has(socket)) sockets.set(socket, handle);
    } catch (err) {
      log.error({ err }, 'connection handler failed');
      socket.destroy();
    }
  });

  if (address.kind === 'unix') await prepareUnixPath(address.path);
  await bind(server, address);
  server.on('error', (err) => log.error({ err, listen: where }, 'listener error'));
  if (address.kind === 'unix') {
    try {
      applyOwnership(address.path, unix, log);
      chmodSync(address.path, unix.mode);
    } catch (err) {
      server.close();
      throw err;
    }
  }
  const bound = boundAddress(server, address);
  log.info({ listen: formatListen(bound) }, 'listening');

  let closing: Promise<void> | undefined;
  return {
    address: bound,
    get connections() {
      return sockets.size;
    },
    close(graceMs = DEFAULT_GRACE_MS) {
      closing ??= new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        let serverClosed = false;
        const settle = () => {
          if (!serverClosed || sockets.size > 0) return;
          clearTimeout(timer);
          resolve();
        };
        onIdle = settle;
        // server.close() stops accepting at once; its callback can run a tick
        // before the last socket's 'close', hence settle() waits for both.
        // libuv unlinks the unix socket file itself (uv__pipe_close).
        server.close(() => {
          serverClosed = true;
          settle();
        });
        for (const [socket, handle] of sockets) {
          try {
            handle?.drain();
          } catch (err) {
            log.error({ err }, 'connection drain failed');
            socket.destroy();
          }
        }
        if (sockets.size > 0) {
          timer = setTimeout(() => {
            if (sockets.size > 0) log.warn({ connections: sockets.size }, 'grace period over; dropping connections');
            for (const socket of sockets.keys()) socket.destroy();
          }, graceMs);
        }
      });
      return closing;
    },
  };
}

function bind(server: Server, address: ListenAddress): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.message;
      reject(new ListenError(`cannot listen on ${formatListen(address)}: ${why}`, { cause: err }));
    };
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      resolve();
    });
    if (address.kind === 'inet') {
      server.listen(address.port, address.host);
      return;
    }
    // bind(2) creates the socket file with mode 0777 & ~umask. Binding under a
    // 0177 umask means nobody else can connect before chown/chmod below. The
    // bind happens synchronously inside listen(), so the process-wide umask is
    // restored before any other code runs.
    const old = process.umask(0o177);
    try {
      server.listen(address.path);
    } finally {
      process.umask(old);
    }
  });
}

/** Creates the directory, and removes a socket file only when it is provably stale. */
async function prepareUnixPath(path: string): Promise<void> {
  makeParents(dirname(path));
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new ListenError(`${path} exists and is not a socket; refusing to replace it`);
  const state = await probe(path);
  if (state !== 'stale') {
    throw new ListenError(`another process is already listening on unix:${path} (${state}); refusing to start`);
  }
  // Left behind by a process that died without closing it: nothing answers.
  unlinkSync(path);
}

/** mkdir -p with 0755 regardless of the umask (a daemon's 0077 would lock Postfix out of the directory). */
function makeParents(dir: string): void {
  const missing: string[] = [];
  for (let d = resolvePath(dir); !existsSync(d); d = dirname(d)) missing.push(d);
  if (missing.length === 0) return;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const d of missing) chmodSync(d, 0o755);
}

/** 'stale' only on ECONNREFUSED/ENOENT; anything else (answer, EACCES, timeout) means hands off. */
function probe(path: string): Promise<string> {
  return new Promise((resolve) => {
    const client = connect(path);
    const done = (state: string) => {
      clearTimeout(timer);
      client.destroy();
      resolve(state);
    };
    const timer = setTimeout(() => done('no answer within 1 s'), PROBE_TIMEOUT_MS);
    client.once('connect', () => done('it accepted a connection'));
    client.once('error', (err: NodeJS.ErrnoException) => {
      done(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'stale' : `probe failed: ${err.code ?? err.message}`);
    });
  });
}

/** chown needs root; as another user the socket keeps our own uid/gid. */
function applyOwnership(path: string, unix: UnixListenOptions, log: Logger): void {
  if (unix.user === undefined && unix.group === undefined) return;
  if (process.getuid?.() !== 0) {
    log.warn({ path, user: unix.user, group: unix.group }, 'not running as root: socket user/group not applied');
    return;
  }
  const uid = unix.user === undefined ? -1 : resolveId('passwd', unix.user);
  const gid = unix.group === undefined ? -1 : resolveId('group', unix.group);
  chownSync(path, uid, gid);
}

/** Resolves a user or group name through NSS (getent), so LDAP/sssd names work too. Numeric ids pass through. */
export function resolveId(db: 'passwd' | 'group', name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  const what = db === 'passwd' ? 'user' : 'group';
  let out = '';
  try {
    out = execFileSync('getent', [db, '--', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 });
  } catch {
    // getent exits 2 for an unknown name.
  }
  // name:password:ID:...
  const field = out.split('\n')[0]?.split(':')[2] ?? '';
  if (!/^\d+$/.test(field)) throw new ListenError(`unknown ${what} ${JSON.stringify(name)}`);
  return Number(field);
}

function boundAddress(server: Server, requested: ListenAddress): ListenAddress {
  const info = server.address();
  if (requested.kind === 'unix' || info === null || typeof info === 'string') return requested;
  return { kind: 'inet', host: info.address, port: info.port };
}

/** Resolves when a socket can take more writes, or is gone. Shared by the line/frame servers. */
export function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}
