// The Lua bridge's requests without node:http. Dovecot's HTTP client sends
// small keep-alive GETs, one at a time, each in one segment:
//
//   GET /dovecot/passdb?user=...&service=imap&version=2.3 HTTP/1.1
//   Host: 127.0.0.1:10052 / Date: ... / Connection: Keep-Alive
//   X-Mailwarden-Secret: ... / X-Mailwarden-Password: <percent-encoded>
//
// Building node:http's request and response objects for them costs about four
// times what the whole answer costs (a cache hit), so every connection starts
// here: requests of exactly that shape are parsed and answered directly, and
// at the first request of any other shape (a POST, another path, a body,
// Expect, a malformed or oversized head...) the connection, with the bytes not
// yet handled, is handed to node:http for good. Replies to earlier requests
// are all written by then, so the order on the connection is kept.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ConnectionHandle } from '../net/listener.ts';

/** A request the fast path may answer: the endpoint, the query string (without `?`) and the headers it needs. */
export interface FastRequest {
  readonly endpoint: 'userdb' | 'passdb';
  readonly query: string;
  readonly secret: string | undefined;
  readonly password: string | undefined;
}

/** A reply ready to write: status and the JSON body (its UTF-8 length precomputed). */
export interface FastReply {
  readonly status: number;
  readonly json: string;
  readonly length: number;
}

export interface FastPathOptions {
  /** The reply, now or later. Must not reject (errors become a 500 reply in the caller). */
  readonly answer: (req: FastRequest) => FastReply | Promise<FastReply>;
  /** Gives the connection to node:http (emit 'connection'); unhandled bytes are already unshifted. */
  readonly handOver: (socket: Socket) => void;
  readonly log: Logger;
  /** An idle keep-alive connection is closed after this long (node:http's keepAliveTimeout). */
  readonly idleTimeoutMs: number;
}

/** node:http's default maximum header size. */
const MAX_HEAD = 16 * 1024;
const REQUEST_LINE = /^GET \/dovecot\/(userdb|passdb)(?:\?([\x21-\x7e]*))? HTTP\/1\.1$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

let dateSecond = -1;
let dateText = '';
/** The Date header, rebuilt once a second (an origin server with a clock sends one). */
function httpDate(now: number): string {
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

export function serveFastConnection(socket: Socket, opts: FastPathOptions): ConnectionHandle {
  let pending: Buffer | undefined;
  let busy = false;
  let closing = false;
  let handedOver = false;

  socket.setTimeout(opts.idleTimeoutMs);
  socket.on('data', onData);
  socket.on('timeout', onTimeout);

  function onData(chunk: Buffer): void {
    pending = pending ? Buffer.concat([pending, chunk]) : chunk;
    if (!busy) next();
  }

  function onTimeout(): void {
    if (busy) return;
    socket.destroy();
  }

  /** Answers the buffered requests, one at a time. */
  function next(): void {
    while (pending && !busy && !handedOver && !closing) {
      const parsed = parse(pending);
      if (parsed === 'incomplete') return;
      if (parsed === 'other') return handOver();
      pending = parsed.rest.length > 0 ? parsed.rest : undefined;
      if (parsed.close) closing = true;
      const reply = opts.answer(parsed.request);
      if (reply instanceof Promise) {
        busy = true;
        reply.then((r) => {
          busy = false;
          write(r, parsed.close);
          next();
        }, (err: unknown) => {
          // answer() promises not to reject; if it does, the connection is in an unknown state.
          opts.log.error({ err }, 'auth request failed');
          socket.destroy();
        });
        return;
      }
      write(reply, parsed.close);
    }
  }

  function write(r: FastReply, close: boolean): void {
    if (socket.destroyed || !socket.writable) return;
    socket.write(`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? ''}\r\nDate: ${httpDate(Date.now())}\r\nContent-Type: application/json\r\n`
      + `Content-Length: ${r.length}\r\n${close || closing ? 'Connection: close\r\n' : ''}\r\n${r.json}`);
    if (close || closing) socket.end();
  }

  function handOver(): void {
    handedOver = true;
    socket.off('data', onData);
    socket.off('timeout', onTimeout);
    socket.setTimeout(0);
    socket.pause();
    if (pending) socket.unshift(pending);
    pending = undefined;
    opts.handOver(socket);
    socket.resume();
  }

  return {
    drain() {
      // Shutdown: finish the request in progress, then close; an idle connection closes now.
      if (handedOver) return;
      closing = true;
      if (!busy) socket.end();
    },
  };
}

type Parsed = { readonly request: FastRequest; readonly close: boolean; readonly rest: Buffer };

/** One request of the fast path's shape, 'incomplete' (wait for more bytes) or 'other' (hand over). */
export function parse(buf: Buffer): Parsed | 'incomplete' | 'other' {
  const lineEnd = buf.indexOf('\r\n');
  if (lineEnd < 0) return buf.length > MAX_HEAD || !startsLikeGet(buf) ? 'other' : 'incomplete';
  const line = REQUEST_LINE.exec(buf.toString('latin1', 0, lineEnd));
  if (!line) return 'other';
  const headEnd = buf.indexOf('\r\n\r\n', lineEnd);
  if (headEnd < 0) return buf.length > MAX_HEAD ? 'other' : 'incomplete';
  if (headEnd > MAX_HEAD) return 'other';
  let secret: string | undefined;
  let password: string | undefined;
  let close = false;
  let host = false;
  for (const field of buf.toString('latin1', lineEnd + 2, headEnd).split('\r\n')) {
    const colon = field.indexOf(':');
    if (colon <= 0) return 'other';
    const name = field.slice(0, colon);
    if (!TOKEN.test(name)) return 'other'; // also obsolete line folding (a leading space)
    const value = field.slice(colon + 1).trim();
    switch (name.toLowerCase()) {
      case 'host':
        if (host) return 'other';
        host = true;
        break;
      case 'x-mailwarden-secret':
        if (secret !== undefined) return 'other';
        secret = value;
        break;
      case 'x-mailwarden-password':
        if (password !== undefined) return 'other';
        password = value;
        break;
      case 'content-length':
        if (value !== '0') return 'other';
        break;
      case 'transfer-encoding':
      case 'expect':
      case 'upgrade':
        return 'other';
      case 'connection':
        if (/(^|,)\s*close\s*(,|$)/i.test(value)) close = true;
        break;
      default:
        break;
    }
  }
  if (!host) return 'other'; // HTTP/1.1 requires it; node:http answers 400
  return {
    request: { endpoint: line[1] as 'userdb' | 'passdb', query: line[2] ?? '', secret, password },
    close,
    rest: buf.subarray(headEnd + 4),
  };
}

const GET = Buffer.from('GET /dovecot/');

/** While the request line is incomplete: could it still be one of ours? */
function startsLikeGet(buf: Buffer): boolean {
  const n = Math.min(buf.length, GET.length);
  return buf.subarray(0, n).equals(GET.subarray(0, n));
}
