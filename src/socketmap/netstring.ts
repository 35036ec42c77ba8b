// Netstrings (https://cr.yp.to/proto/netstrings.txt): `<decimal length>:<bytes>,`.
// Postfix frames every socketmap request and reply this way (pf:src/util/netstring.c,
// pf:src/util/dict_sockmap.c). This module is pure: no sockets, no timers.

export const NETSTRING_ERROR_CODES = {
  /** A non-digit where the length should be, or an empty length. */
  BAD_LENGTH: 'bad_length',
  /** `01:x,`: the spec forbids extra zeros in front of the length. */
  LEADING_ZERO: 'leading_zero',
  /** The announced length exceeds the decoder's maximum. */
  TOO_LONG: 'too_long',
  /** The payload is not followed by `,`. */
  MISSING_COMMA: 'missing_comma',
} as const;

export type NetstringErrorCode = (typeof NETSTRING_ERROR_CODES)[keyof typeof NETSTRING_ERROR_CODES];

export class NetstringError extends Error {
  override readonly name = 'NetstringError';
  readonly code: NetstringErrorCode;
  /** Payloads completed earlier in the same push(): the caller may still answer them, in order. */
  readonly frames: readonly Buffer[];
  constructor(code: NetstringErrorCode, message: string, frames: readonly Buffer[] = []) {
    super(message);
    this.code = code;
    this.frames = frames;
  }
}

const COLON = 0x3a;
const COMMA = 0x2c;
const ZERO = 0x30;
const NINE = 0x39;

const STATE = { LENGTH: 0, PAYLOAD: 1, COMMA: 2 } as const;
type State = (typeof STATE)[keyof typeof STATE];

/**
 * Incremental netstring decoder. Feed it socket chunks of any size; it returns
 * the complete payloads. Work and memory are O(bytes): length digits are parsed
 * in place, payloads are subarrays of the input chunks (copied only when a
 * payload spans chunks), and nothing already consumed is kept.
 *
 * After an error the decoder stays failed: every later push() throws it again,
 * because the stream position is lost and the connection must be dropped.
 */
export class NetstringDecoder {
  readonly maxLength: number;
  #state: State = STATE.LENGTH;
  #digits = 0;
  #length = 0;
  /** Parts of the payload being assembled, and how many bytes are still missing. */
  #parts: Buffer[] = [];
  #missing = 0;
  #error: NetstringError | undefined;

  constructor(maxLength: number) {
    if (!Number.isSafeInteger(maxLength) || maxLength < 0 || maxLength > 0x7fffffff) {
      throw new RangeError(`invalid netstring maxLength: ${maxLength}`);
    }
    this.maxLength = maxLength;
  }

  /** True while a netstring has been started but not finished (EOF now would truncate it). */
  get pending(): boolean {
    return this.#state !== STATE.LENGTH || this.#digits > 0;
  }

  push(chunk: Buffer): Buffer[] {
    if (this.#error) throw this.#error;
    const frames: Buffer[] = [];
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.#state === STATE.LENGTH) {
        const byte = chunk[i++]!;
        if (byte >= ZERO && byte <= NINE) {
          if (this.#digits === 1 && this.#length === 0) {
            return this.#fail(NETSTRING_ERROR_CODES.LEADING_ZERO, 'netstring length has a leading zero', frames);
          }
          this.#length = this.#length * 10 + (byte - ZERO);
          this.#digits++;
          // Checked per digit, so an endless digit run is refused as soon as it
          // exceeds the limit, long before any payload is buffered.
          if (this.#length > this.maxLength) {
            return this.#fail(NETSTRING_ERROR_CODES.TOO_LONG, `netstring longer than ${this.maxLength} bytes`, frames);
          }
        } else if (byte === COLON && this.#digits > 0) {
          this.#state = this.#length > 0 ? STATE.PAYLOAD : STATE.COMMA;
          this.#missing = this.#length;
        } else {
          return this.#fail(NETSTRING_ERROR_CODES.BAD_LENGTH, 'malformed netstring length', frames);
        }
      } else if (this.#state === STATE.PAYLOAD) {
        const take = Math.min(this.#missing, n - i);
        this.#parts.push(chunk.subarray(i, i + take));
        this.#missing -= take;
        i += take;
        if (this.#missing === 0) this.#state = STATE.COMMA;
      } else {
        if (chunk[i++] !== COMMA) {
          return this.#fail(NETSTRING_ERROR_CODES.MISSING_COMMA, 'netstring not terminated by a comma', frames);
        }
        const parts = this.#parts;
        frames.push(parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.#length));
        this.#parts = [];
        this.#state = STATE.LENGTH;
        this.#digits = 0;
        this.#length = 0;
      }
    }
    return frames;
  }

  #fail(code: NetstringErrorCode, message: string, frames: Buffer[]): never {
    this.#parts = [];
    this.#error = new NetstringError(code, message);
    throw new NetstringError(code, message, frames);
  }
}

const COMMA_BUFFER = Buffer.from(',');

export function encodeNetstring(payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return Buffer.concat([Buffer.from(`${body.length}:`, 'latin1'), body, COMMA_BUFFER]);
}
