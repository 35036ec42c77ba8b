// Socketmap request and reply payloads (socketmap_table(5), pf:src/util/dict_sockmap.c).
// Pure: the netstring framing lives in netstring.ts, the sockets in server.ts.
import { isUtf8 } from 'node:buffer';

/** dict_sockmap.c: replies longer than this are refused by Postfix ("not yet configurable"). */
export const MAX_REPLY_BYTES = 100_000;
/** Postfix logs at most 200 characters of a TEMP/PERM reason; we never send more. */
export const MAX_REASON_CHARS = 200;

const MAP_NAME = /^[a-z0-9_]+$/;

export interface SocketmapRequest {
  readonly map: string;
  /** Everything after the first space, in original case; may be empty and may contain spaces. */
  readonly key: string;
}

export type SocketmapReply =
  | { readonly status: 'OK'; readonly data: string }
  | { readonly status: 'NOTFOUND' }
  | { readonly status: 'TEMP' | 'TIMEOUT' | 'PERM'; readonly reason: string };

export const PROTOCOL_ERROR_CODES = {
  BAD_UTF8: 'bad_utf8',
  NUL_BYTE: 'nul_byte',
  NO_SPACE: 'no_space',
  BAD_MAP_NAME: 'bad_map_name',
  /** `OK ` with empty data: maps.c treats it as a configuration error, not "found". */
  EMPTY_DATA: 'empty_data',
  BAD_DATA: 'bad_data',
  REPLY_TOO_LONG: 'reply_too_long',
} as const;

export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[keyof typeof PROTOCOL_ERROR_CODES];

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * Splits a request payload `"NAME KEY"`. Postfix builds it with
 * `vstring_sprintf(buf, "%s %s", name, key)`, so only the FIRST space separates:
 * keys such as `"john doe"@example.com` contain spaces, and the key may be empty.
 * Returns (never throws) a ProtocolError for anything Postfix would not send.
 */
export function parseRequest(payload: Buffer): SocketmapRequest | ProtocolError {
  if (!isUtf8(payload)) return new ProtocolError(PROTOCOL_ERROR_CODES.BAD_UTF8, 'request is not valid UTF-8');
  // Postfix keys are C strings; a NUL can only come from a confused or hostile client.
  if (payload.includes(0)) return new ProtocolError(PROTOCOL_ERROR_CODES.NUL_BYTE, 'request contains a NUL byte');
  const text = payload.toString('utf8');
  const space = text.indexOf(' ');
  if (space < 0) return new ProtocolError(PROTOCOL_ERROR_CODES.NO_SPACE, 'request has no space between map name and key');
  const map = text.slice(0, space);
  if (!MAP_NAME.test(map)) return new ProtocolError(PROTOCOL_ERROR_CODES.BAD_MAP_NAME, 'invalid map name');
  return { map, key: text.slice(space + 1) };
}

/** Reply constructors, so lookup functions don't spell out object literals. */
export const reply = {
  ok: (data: string): SocketmapReply => ({ status: 'OK', data }),
  notFound: (): SocketmapReply => ({ status: 'NOTFOUND' }),
  temp: (reason: string): SocketmapReply => ({ status: 'TEMP', reason }),
  timeout: (reason: string): SocketmapReply => ({ status: 'TIMEOUT', reason }),
  perm: (reason: string): SocketmapReply => ({ status: 'PERM', reason }),
} as const;

/** Control characters would corrupt Postfix's log line; long reasons are cut to what Postfix logs anyway. */
export function sanitizeReason(reason: string): string {
  let clean = String(reason).replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  // Cut by code points so a surrogate pair is never split.
  if (clean.length > MAX_REASON_CHARS) clean = Array.from(clean.slice(0, 2 * MAX_REASON_CHARS)).slice(0, MAX_REASON_CHARS).join('').trimEnd();
  return clean === '' ? 'unspecified' : clean;
}

/**
 * The reply payload (without netstring framing). Throws a ProtocolError for a
 * reply Postfix would mishandle, so the caller can log it and substitute a safe
 * answer: empty OK data (EMPTY_DATA), NUL in OK data (BAD_DATA: Postfix would
 * silently truncate at it) or more than MAX_REPLY_BYTES (REPLY_TOO_LONG).
 */
export function encodeReply(r: SocketmapReply): Buffer {
  let text: string;
  switch (r.status) {
    case 'OK':
      if (typeof r.data !== 'string' || r.data === '') {
        throw new ProtocolError(PROTOCOL_ERROR_CODES.EMPTY_DATA, 'OK reply with empty data');
      }
      if (r.data.includes('\0')) throw new ProtocolError(PROTOCOL_ERROR_CODES.BAD_DATA, 'OK reply data contains a NUL byte');
      text = `OK ${r.data}`;
      break;
    case 'NOTFOUND':
      // The trailing space is what dict_sockmap's split_at() expects.
      text = 'NOTFOUND ';
      break;
    case 'TEMP':
    case 'TIMEOUT':
    case 'PERM':
      text = `${r.status} ${sanitizeReason(r.reason)}`;
      break;
    default:
      throw new ProtocolError(PROTOCOL_ERROR_CODES.BAD_DATA, `unknown reply status ${JSON.stringify((r as { status?: unknown }).status)}`);
  }
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > MAX_REPLY_BYTES) {
    throw new ProtocolError(PROTOCOL_ERROR_CODES.REPLY_TOO_LONG, `reply is ${bytes.length} bytes, limit ${MAX_REPLY_BYTES}`);
  }
  return bytes;
}
