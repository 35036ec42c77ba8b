// Dovecot dict protocol (the `proxy:` dict client, lib-dict/dict-client.h in
// 2.3, lib-dict-extra in 2.4): LF-terminated lines, one command letter, then
// tab-separated, tab-escaped arguments. Protocol 3.x is Dovecot 2.3, 4.x is
// 2.4 (/work/shared/reference/dovecot.md §2). Pure: no sockets, no timers; the
// connection handling lives in server.ts.
import { isUtf8 } from 'node:buffer';

/** Dovecot's DICT_CLIENT_MAX_LINE_LENGTH; its own dict server refuses longer client lines. */
export const DICT_CLIENT_MAX_LINE_BYTES = 64 * 1024;
/** What we accept: Dovecot's limit plus a margin for the command letter, ids and the line ending. */
export const DICT_MAX_LINE_BYTES = DICT_CLIENT_MAX_LINE_BYTES + 1024;

/** Protocol majors we speak: 3 = Dovecot 2.3 (sends 3.2), 4 = Dovecot 2.4 (sends 4.0). */
export const DICT_PROTOCOL_MAJORS = [3, 4] as const;

/** dict.h `enum dict_iterate_flags` (unchanged in 2.4). */
export const DICT_ITERATE_FLAGS = {
  RECURSE: 0x01,
  SORT_BY_KEY: 0x02,
  SORT_BY_VALUE: 0x04,
  NO_VALUE: 0x08,
  EXACT_KEY: 0x10,
  ASYNC: 0x20,
} as const;

/** `H` value types (dict.h `enum dict_data_type`); 2.4 always sends 0. */
export const DICT_VALUE_TYPES = { STRING: 0, UINT32: 1 } as const;

export const DICT_ERROR_CODES = {
  /** A line longer than the splitter's maximum (raised by DictLineSplitter). */
  LINE_TOO_LONG: 'line_too_long',
  EMPTY_LINE: 'empty_line',
  BAD_UTF8: 'bad_utf8',
  /** `\x01` followed by anything but 1 t r n 0, or at the end of an argument. */
  BAD_ESCAPE: 'bad_escape',
  UNKNOWN_COMMAND: 'unknown_command',
  /** Too few or too many arguments for the command. */
  BAD_ARGUMENTS: 'bad_arguments',
  /** A transaction id, flag set, row limit, diff or time that is not a valid number. */
  BAD_NUMBER: 'bad_number',
  /** `H` with a protocol major we do not speak, or a bad value type. */
  BAD_VERSION: 'bad_version',
  // Connection-level errors, raised by the server (the codec is stateless):
  /** The first line is not `H`, or a second `H` arrives. */
  HANDSHAKE: 'handshake',
  /** An operation, commit or rollback names a transaction id that is not open. */
  UNKNOWN_TRANSACTION: 'unknown_transaction',
  /** `B` with an id that is already open. */
  DUPLICATE_TRANSACTION: 'duplicate_transaction',
  /** Too many open transactions, or too many operations or bytes in one. */
  TRANSACTION_LIMIT: 'transaction_limit',
} as const;

export type DictErrorCode = (typeof DICT_ERROR_CODES)[keyof typeof DICT_ERROR_CODES];

/**
 * Everything wrong with a client's bytes. parseCommand() returns it, the line
 * splitter throws it; nothing in this module throws anything else on input.
 */
export class DictProtocolError extends Error {
  override readonly name = 'DictProtocolError';
  readonly code: DictErrorCode;
  /** Splitter only: complete lines found earlier in the same push(), still to be handled in order. */
  readonly lines: readonly Buffer[];
  constructor(code: DictErrorCode, message: string, lines: readonly Buffer[] = []) {
    super(message);
    this.code = code;
    this.lines = lines;
  }
}

// ---------------------------------------------------------------------------
// Tab escaping (lib/strescape.c str_append_tabescaped / str_tabunescape)

const ESCAPE_CHAR = '\x01';
const NEEDS_ESCAPE = /[\x00\x01\t\r\n]/;
const ESCAPES: Readonly<Record<string, string>> = { '\x00': '\x010', '\x01': '\x011', '\t': '\x01t', '\r': '\x01r', '\n': '\x01n' };
const UNESCAPES: Readonly<Record<string, string>> = { '0': '\x00', '1': '\x01', t: '\t', r: '\r', n: '\n' };

/** `\x01`→`\x01 1`, TAB→`\x01 t`, CR→`\x01 r`, LF→`\x01 n`, NUL→`\x01 0` (without the spaces). */
export function tabEscape(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return s;
  return s.replace(/[\x00\x01\t\r\n]/g, (c) => ESCAPES[c]!);
}

/** The inverse of tabEscape(); an unknown or dangling escape is a DictProtocolError. */
export function tabUnescape(s: string): string | DictProtocolError {
  let i = s.indexOf(ESCAPE_CHAR);
  if (i < 0) return s;
  let out = '';
  let from = 0;
  while (i >= 0) {
    const decoded = UNESCAPES[s.charAt(i + 1)];
    if (decoded === undefined) {
      return new DictProtocolError(DICT_ERROR_CODES.BAD_ESCAPE, i + 1 >= s.length ? 'dangling escape character' : 'invalid escape sequence');
    }
    out += s.slice(from, i) + decoded;
    from = i + 2;
    i = s.indexOf(ESCAPE_CHAR, from);
  }
  return out + s.slice(from);
}

// ---------------------------------------------------------------------------
// Line splitting

const LF = 0x0a;
const CR = 0x0d;

/**
 * Incremental LF line splitter. Feed it socket chunks of any size; it returns
 * the complete lines without the LF (and without a CR right before it, as
 * Dovecot's i_stream_next_line() does). A line longer than maxLineBytes is
 * refused as soon as that many bytes are buffered, without waiting for its end.
 *
 * After an error the splitter stays failed: every later push() throws again,
 * because the rest of the stream cannot be trusted.
 */
export class DictLineSplitter {
  readonly maxLineBytes: number;
  #parts: Buffer[] = [];
  #partial = 0;
  #error: DictProtocolError | undefined;

  constructor(maxLineBytes: number = DICT_MAX_LINE_BYTES) {
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) throw new RangeError(`invalid maxLineBytes: ${maxLineBytes}`);
    this.maxLineBytes = maxLineBytes;
  }

  /** True while part of a line is buffered (EOF now would truncate it). */
  get pending(): boolean {
    return this.#partial > 0;
  }

  push(chunk: Buffer): Buffer[] {
    if (this.#error) throw this.#error;
    const lines: Buffer[] = [];
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(LF, start);
      const end = lf < 0 ? chunk.length : lf;
      if (this.#partial + (end - start) > this.maxLineBytes) {
        this.#parts = [];
        this.#partial = 0;
        this.#error = new DictProtocolError(DICT_ERROR_CODES.LINE_TOO_LONG, `line longer than ${this.maxLineBytes} bytes`);
        throw new DictProtocolError(this.#error.code, this.#error.message, lines);
      }
      if (lf < 0) {
        if (end > start) {
          this.#parts.push(chunk.subarray(start, end));
          this.#partial += end - start;
        }
        return lines;
      }
      let line: Buffer;
      if (this.#partial === 0) {
        line = chunk.subarray(start, lf);
      } else {
        this.#parts.push(chunk.subarray(start, lf));
        line = Buffer.concat(this.#parts, this.#partial + (lf - start));
        this.#parts = [];
        this.#partial = 0;
      }
      lines.push(line.length > 0 && line[line.length - 1] === CR ? line.subarray(0, line.length - 1) : line);
      start = lf + 1;
    }
  }
}

// ---------------------------------------------------------------------------
// Commands

export type DictCommand =
  /** `H major \t minor \t value_type \t user \t dict_name`; no reply. */
  | {
      readonly cmd: 'hello';
      readonly major: number;
      readonly minor: number;
      readonly valueType: number;
      /** Obsolete, sent empty by 2.3 and 2.4. */
      readonly user: string;
      /** The dict name from `proxy:…:<name>` (2.3) or `dict_proxy_name` (2.4). */
      readonly name: string;
    }
  /** `L key \t user` → lookupFound/NotFound/Failed. */
  | { readonly cmd: 'lookup'; readonly key: string; readonly user: string }
  /** `I flags \t max_rows \t path \t user` → rows, then iterateEnd or iterateFailed. maxRows 0 = no limit. */
  | { readonly cmd: 'iterate'; readonly flags: number; readonly maxRows: number; readonly path: string; readonly user: string }
  /** `B id \t user [\t expire_secs]` (the expiry is 2.4 only; 0 = none, then omitted here). */
  | { readonly cmd: 'begin'; readonly id: number; readonly user: string; readonly expireSecs?: number }
  | { readonly cmd: 'set'; readonly id: number; readonly key: string; readonly value: string }
  | { readonly cmd: 'unset'; readonly id: number; readonly key: string }
  /** `A id \t key \t diff`: a signed 64-bit decimal, hence bigint. */
  | { readonly cmd: 'atomicInc'; readonly id: number; readonly key: string; readonly diff: bigint }
  | { readonly cmd: 'timestamp'; readonly id: number; readonly secs: number; readonly nsecs: number }
  /** `V id \t yes|no` (2.4). */
  | { readonly cmd: 'hideLogValues'; readonly id: number; readonly hide: boolean }
  | { readonly cmd: 'rollback'; readonly id: number }
  /** → commitOk/NotFound/Failed(id). */
  | { readonly cmd: 'commit'; readonly id: number }
  /** `D id` (2.3 servers accept it; no Dovecot client sends it) → the same replies with async = true. */
  | { readonly cmd: 'commitAsync'; readonly id: number };

export type DictCommandName = DictCommand['cmd'];

/** Commands Dovecot expects a reply to, in command order. */
export function expectsReply(cmd: DictCommand): boolean {
  return cmd.cmd === 'lookup' || cmd.cmd === 'iterate' || cmd.cmd === 'commit' || cmd.cmd === 'commitAsync';
}

const UINT32_MAX = 0xffff_ffff;
const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const DIGITS = /^[0-9]{1,20}$/;
const SIGNED_DIGITS = /^-?[0-9]{1,20}$/;

/** str_to_uint: plain decimal digits, no sign, no spaces, at most 2^32-1. */
function uint32(s: string): number | undefined {
  if (!DIGITS.test(s) || s.length > 10) return undefined;
  const n = Number(s);
  return n <= UINT32_MAX ? n : undefined;
}

/** str_to_uint64; values beyond 2^53 (an absurd row limit) are clamped to MAX_SAFE_INTEGER. */
function uint64(s: string): number | undefined {
  if (!DIGITS.test(s)) return undefined;
  const n = BigInt(s);
  if (n > UINT64_MAX) return undefined;
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}

/** str_to_llong: optional '-', digits, within int64. */
function int64(s: string): bigint | undefined {
  if (!SIGNED_DIGITS.test(s)) return undefined;
  const n = BigInt(s);
  return n < INT64_MIN || n > INT64_MAX ? undefined : n;
}

const ARITY: Readonly<Record<string, readonly [name: DictCommandName, min: number, max: number]>> = {
  H: ['hello', 5, 5],
  L: ['lookup', 1, 2],
  I: ['iterate', 3, 4],
  B: ['begin', 1, 3],
  S: ['set', 3, 3],
  U: ['unset', 2, 2],
  A: ['atomicInc', 3, 3],
  T: ['timestamp', 3, 3],
  V: ['hideLogValues', 2, 2],
  R: ['rollback', 1, 1],
  C: ['commit', 1, 1],
  D: ['commitAsync', 1, 1],
};

function badNumber(what: string): DictProtocolError {
  return new DictProtocolError(DICT_ERROR_CODES.BAD_NUMBER, `invalid ${what}`);
}

/**
 * Parses one line (without its LF). Returns, never throws, a DictProtocolError
 * for anything a Dovecot client would not send: unknown command letters, wrong
 * argument counts, bad numbers or escapes, invalid UTF-8, an unsupported
 * protocol major in `H`.
 */
export function parseCommand(line: Buffer | string): DictCommand | DictProtocolError {
  let text: string;
  if (typeof line === 'string') {
    text = line;
  } else {
    if (!isUtf8(line)) return new DictProtocolError(DICT_ERROR_CODES.BAD_UTF8, 'line is not valid UTF-8');
    text = line.toString('utf8');
  }
  if (text === '') return new DictProtocolError(DICT_ERROR_CODES.EMPTY_LINE, 'empty line');
  const letter = text.charAt(0);
  const spec = ARITY[letter];
  if (spec === undefined) {
    const shown = /^[\x21-\x7e]$/.test(letter) ? letter : `0x${letter.charCodeAt(0).toString(16).padStart(2, '0')}`;
    return new DictProtocolError(DICT_ERROR_CODES.UNKNOWN_COMMAND, `unknown command ${shown}`);
  }
  const [name, min, max] = spec;
  const raw = text.slice(1).split('\t');
  if (raw.length < min || raw.length > max) {
    return new DictProtocolError(DICT_ERROR_CODES.BAD_ARGUMENTS, `${name}: expected ${min === max ? min : `${min} to ${max}`} arguments, got ${raw.length}`);
  }
  const a: string[] = [];
  for (const r of raw) {
    const u = tabUnescape(r);
    if (u instanceof DictProtocolError) return u;
    a.push(u);
  }
  const arg = (i: number): string => a[i] ?? '';

  switch (name) {
    case 'hello': {
      const major = uint32(arg(0));
      const minor = uint32(arg(1));
      const valueType = uint32(arg(2));
      if (major === undefined || minor === undefined || valueType === undefined) return badNumber('handshake version or value type');
      if (!(DICT_PROTOCOL_MAJORS as readonly number[]).includes(major)) {
        return new DictProtocolError(DICT_ERROR_CODES.BAD_VERSION, `unsupported dict protocol version ${major}.${minor}`);
      }
      if (valueType !== DICT_VALUE_TYPES.STRING && valueType !== DICT_VALUE_TYPES.UINT32) {
        return new DictProtocolError(DICT_ERROR_CODES.BAD_VERSION, `unsupported dict value type ${valueType}`);
      }
      return { cmd: 'hello', major, minor, valueType, user: arg(3), name: arg(4) };
    }
    case 'lookup':
      return { cmd: 'lookup', key: arg(0), user: arg(1) };
    case 'iterate': {
      const flags = uint32(arg(0));
      if (flags === undefined) return badNumber('iterate flags');
      const maxRows = uint64(arg(1));
      if (maxRows === undefined) return badNumber('iterate row limit');
      return { cmd: 'iterate', flags, maxRows, path: arg(2), user: arg(3) };
    }
    default:
      break;
  }

  const id = uint32(arg(0));
  if (id === undefined) return badNumber('transaction id');
  switch (name) {
    case 'begin': {
      if (a.length < 3) return { cmd: 'begin', id, user: arg(1) };
      const expireSecs = uint32(arg(2));
      if (expireSecs === undefined) return badNumber('transaction expiry');
      return expireSecs > 0 ? { cmd: 'begin', id, user: arg(1), expireSecs } : { cmd: 'begin', id, user: arg(1) };
    }
    case 'set':
      return { cmd: 'set', id, key: arg(1), value: arg(2) };
    case 'unset':
      return { cmd: 'unset', id, key: arg(1) };
    case 'atomicInc': {
      const diff = int64(arg(2));
      if (diff === undefined) return badNumber('atomic-inc diff');
      return { cmd: 'atomicInc', id, key: arg(1), diff };
    }
    case 'timestamp': {
      const secs = int64(arg(1));
      const nsecs = uint32(arg(2));
      if (secs === undefined || secs < BigInt(Number.MIN_SAFE_INTEGER) || secs > BigInt(Number.MAX_SAFE_INTEGER)) return badNumber('timestamp seconds');
      if (nsecs === undefined || nsecs > 999_999_999) return badNumber('timestamp nanoseconds');
      return { cmd: 'timestamp', id, secs: Number(secs), nsecs };
    }
    case 'hideLogValues': {
      const v = arg(1);
      if (v !== 'yes' && v !== 'no') return new DictProtocolError(DICT_ERROR_CODES.BAD_ARGUMENTS, 'hide-log-values: expected yes or no');
      return { cmd: 'hideLogValues', id, hide: v === 'yes' };
    }
    case 'rollback':
      return { cmd: 'rollback', id };
    case 'commit':
      return { cmd: 'commit', id };
    case 'commitAsync':
      return { cmd: 'commitAsync', id };
    default:
      // Unreachable: every ARITY entry is handled above.
      return new DictProtocolError(DICT_ERROR_CODES.UNKNOWN_COMMAND, `unknown command ${letter}`);
  }
}

// ---------------------------------------------------------------------------
// Replies. Each returns one or more complete lines, LF included. Dovecot's
// client splits the whole reply line with t_strsplit_tabescaped(), so every
// field (status letter + first argument included) is tab-escaped. The optional
// timing suffix Dovecot's own server appends is never sent (clients ignore it).

/** A failure text for `F`: one line, no control characters, at most 200 characters, never empty. */
export function sanitizeError(err: string): string {
  let clean = String(err).replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  if (clean.length > 200) clean = Array.from(clean.slice(0, 400)).slice(0, 200).join('').trimEnd();
  return clean === '' ? 'unspecified error' : clean;
}

/** `O<value>`. */
export function lookupFound(value: string): string {
  return `O${tabEscape(value)}\n`;
}

/** `N`. */
export function lookupNotFound(): string {
  return 'N\n';
}

/** `F<error>`: Dovecot logs "dict-server returned failure: <error>". */
export function lookupFailed(err: string): string {
  return `F${tabEscape(sanitizeError(err))}\n`;
}

/** `O<key>\t<value>`. Without a value (NO_VALUE) the tab stays: the client requires the second field. */
export function iterateRow(key: string, value?: string): string {
  return `O${tabEscape(key)}\t${value === undefined ? '' : tabEscape(value)}\n`;
}

/** The empty line that ends an iteration. */
export function iterateEnd(): string {
  return '\n';
}

/** `F<error>`: ends the iteration with an error (rows sent before it are kept by the client). */
export function iterateFailed(err: string): string {
  return `F${tabEscape(sanitizeError(err))}\n`;
}

function commitReply(status: 'O' | 'N' | 'W' | 'F', id: number, async: boolean, err?: string): string {
  const head = `${async ? 'A' : ''}${status}${id}`;
  return err === undefined ? `${head}\n` : `${head}\t${tabEscape(sanitizeError(err))}\n`;
}

/** `O<id>` (`AO<id>` for commitAsync). */
export function commitOk(id: number, async = false): string {
  return commitReply('O', id, async);
}

/** `N<id>`: e.g. an atomic-inc of a missing key; Dovecot's quota code then recalculates. */
export function commitNotFound(id: number, async = false): string {
  return commitReply('N', id, async);
}

/** `W<id>\t<error>`: the write may or may not have happened. */
export function commitWriteUncertain(id: number, err: string, async = false): string {
  return commitReply('W', id, async, err);
}

/** `F<id>\t<error>`. */
export function commitFailed(id: number, err: string, async = false): string {
  return commitReply('F', id, async, err);
}
