// Postfix SMTPD access policy delegation protocol (SMTPD_POLICY_README;
// postfix.md §1): `name=value\n` lines ended by an empty line, answered with
// `action=<value>\n\n`. Grammar from pf:src/util/attr_scan_plain.c: the name
// runs up to the first '=', the value is the rest of the line. Pure: no
// sockets, no timers; the connection handling lives in server.ts.
import { isAscii } from 'node:buffer';
import { NUMBER_ATTRIBUTES, STRING_ATTRIBUTES, type PolicyRequest } from './request.ts';

export type PolicyCodecErrorCode = 'line_too_long' | 'request_too_large' | 'too_many_attributes' | 'bad_attribute';

/** Malformed or oversized input from the peer. The decoder throws nothing else on input. */
export class PolicyCodecError extends Error {
  override readonly name = 'PolicyCodecError';
  readonly code: PolicyCodecErrorCode;
  /** Requests completed earlier in the same push(): the caller may still answer them, in order. */
  readonly requests: readonly PolicyRequest[];
  constructor(code: PolicyCodecErrorCode, message: string, requests: readonly PolicyRequest[] = []) {
    super(message);
    this.code = code;
    this.requests = requests;
  }
}

export interface PolicyCodecLimits {
  /** Longest `name=value` line, without its `\n` or `\r\n`. Postfix allows 8192 per string (4 * line_limit). */
  maxLineBytes: number;
  /** Attribute lines in one request, repeats included. Postfix 3.7 sends 28, 3.12 sends 31. */
  maxAttributes: number;
  /** Bytes of one request on the wire, from its first byte through the `\n` of the empty line. */
  maxRequestBytes: number;
}

export const POLICY_CODEC_DEFAULTS: Readonly<PolicyCodecLimits> = Object.freeze({
  maxLineBytes: 8192 + 64,
  maxAttributes: 128,
  maxRequestBytes: 64 * 1024,
});

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;

function checkLimits(limits: Partial<PolicyCodecLimits> | undefined): PolicyCodecLimits {
  const merged = { ...POLICY_CODEC_DEFAULTS, ...limits };
  for (const [name, value] of Object.entries(merged)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`invalid policy codec limit ${name}: ${value}`);
  }
  return merged;
}

/**
 * Incremental request decoder. Feed it socket chunks split anywhere; it returns
 * the complete requests. Lines are decoded straight from the chunk; only a line
 * that spans chunks is copied. After an error the decoder stays failed: every
 * later push() throws it again, because the stream position is lost.
 */
export class PolicyRequestDecoder {
  readonly limits: Readonly<PolicyCodecLimits>;
  #attributes = new Map<string, string>();
  /** Attribute lines of the current request. */
  #lines = 0;
  /** Complete lines of the current request, terminators included. */
  #requestBytes = 0;
  /** The line being assembled across chunks. */
  #parts: Buffer[] = [];
  #partial = 0;
  #error: PolicyCodecError | undefined;

  constructor(limits?: Partial<PolicyCodecLimits>) {
    this.limits = Object.freeze(checkLimits(limits));
  }

  /** Bytes of the unfinished request received so far (0 between requests; after an error, up to the bad byte). */
  get buffered(): number {
    return this.#requestBytes + this.#partial;
  }

  push(chunk: Buffer): PolicyRequest[] {
    if (this.#error) throw this.#error;
    const { maxLineBytes, maxRequestBytes, maxAttributes } = this.limits;
    const requests: PolicyRequest[] = [];
    const n = chunk.length;
    let start = 0;
    /** The first NUL in `chunk` (-1: none), searched once per chunk: the line holding it is refused, so no later line needs another search. */
    let nul = -2;
    /** The whole chunk as a string if it is ASCII (null if not), so byte and character offsets agree. */
    let ascii: string | null | undefined;
    while (start < n) {
      const lf = chunk.indexOf(LF, start);
      if (lf < 0) {
        this.#hold(chunk.subarray(start), requests);
        break;
      }
      let buf = chunk;
      let s = start;
      let e = lf;
      if (this.#partial > 0) {
        this.#parts.push(chunk.subarray(start, lf));
        buf = Buffer.concat(this.#parts, this.#partial + (lf - start));
        s = 0;
        e = buf.length;
        this.#parts = [];
        this.#partial = 0;
      }
      start = lf + 1;
      this.#requestBytes += e - s + 1;
      if (e > s && buf[e - 1] === CR) e--;
      if (e - s > maxLineBytes) this.#fail('line_too_long', `attribute line longer than ${maxLineBytes} bytes`, requests);
      if (this.#requestBytes > maxRequestBytes) this.#fail('request_too_large', `request longer than ${maxRequestBytes} bytes`, requests);
      if (e === s) {
        requests.push(decodePolicyAttributes(this.#attributes));
        this.#attributes = new Map();
        this.#lines = 0;
        this.#requestBytes = 0;
        continue;
      }
      if (++this.#lines > maxAttributes) this.#fail('too_many_attributes', `more than ${maxAttributes} attributes in one request`, requests);
      let line: string;
      let from: number;
      if (buf === chunk) {
        if (nul === -2) nul = chunk.indexOf(NUL);
        if (nul >= s && nul < e) this.#fail('bad_attribute', 'NUL byte in an attribute', requests);
        // Postfix's requests are plain ASCII: then one latin1 decode of the whole chunk serves every line.
        if (ascii === undefined) ascii = isAscii(chunk) ? chunk.toString('latin1') : null;
        if (ascii !== null) {
          line = ascii;
          from = s;
        } else {
          line = chunk.toString('utf8', s, e);
          from = 0;
          e = line.length;
        }
      } else {
        if (buf.indexOf(NUL) >= 0) this.#fail('bad_attribute', 'NUL byte in an attribute', requests);
        line = buf.toString('utf8', s, e);
        from = 0;
        e = line.length;
      }
      // On a line without '=' the search may run into later lines; that line is refused anyway.
      const eq = line.indexOf('=', from);
      if (eq < 0 || eq >= e) this.#fail('bad_attribute', 'attribute line without "="', requests);
      if (eq === from) this.#fail('bad_attribute', 'attribute with an empty name', requests);
      // Repeated names keep the last value (README allows either).
      this.#attributes.set(line.slice(from, eq), line.slice(eq + 1, e));
    }
    return requests;
  }

  /** Keeps the unterminated tail of a chunk, refusing it as soon as it is provably over a limit. */
  #hold(rest: Buffer, requests: PolicyRequest[]): void {
    this.#parts.push(rest);
    this.#partial += rest.length;
    const { maxLineBytes, maxRequestBytes } = this.limits;
    // One byte over is still fine if it is the '\r' of a '\r\n'.
    if (this.#partial > maxLineBytes + 1 || (this.#partial === maxLineBytes + 1 && rest[rest.length - 1] !== CR)) {
      this.#fail('line_too_long', `attribute line longer than ${maxLineBytes} bytes`, requests);
    }
    if (this.#requestBytes + this.#partial > maxRequestBytes) {
      this.#fail('request_too_large', `request longer than ${maxRequestBytes} bytes`, requests);
    }
  }

  #fail(code: PolicyCodecErrorCode, message: string, requests: PolicyRequest[]): never {
    this.#parts = [];
    this.#attributes = new Map();
    this.#error = new PolicyCodecError(code, message);
    throw new PolicyCodecError(code, message, requests);
  }
}

const STRING_FIELDS = Object.entries(STRING_ATTRIBUTES);
const NUMBER_FIELDS = Object.entries(NUMBER_ATTRIBUTES);
const DIGITS = /^[0-9]+$/;
/** Every field in one fixed order: copying it gives each request the same object shape, which keeps decoding and field reads fast. */
const EMPTY_REQUEST: Readonly<Record<string, unknown>> = Object.freeze({
  ...Object.fromEntries(STRING_FIELDS.map(([, field]) => [field, ''])),
  ...Object.fromEntries(NUMBER_FIELDS.map(([, field]) => [field, 0])),
  stress: false,
  attributes: undefined,
});

/** Maps raw attributes to the typed request. Absent attributes read as '' or 0; the map is kept as `attributes`. */
export function decodePolicyAttributes(attrs: ReadonlyMap<string, string>): PolicyRequest {
  const out: Record<string, unknown> = { ...EMPTY_REQUEST };
  for (const [name, field] of STRING_FIELDS) {
    const text = attrs.get(name);
    if (text !== undefined) out[field] = text;
  }
  for (const [name, field] of NUMBER_FIELDS) {
    const text = attrs.get(name);
    if (text !== undefined && DIGITS.test(text)) out[field] = Number(text);
  }
  out['stress'] = attrs.get('stress') === 'yes';
  out['attributes'] = attrs;
  return out as unknown as PolicyRequest;
}

/**
 * `action=<action>\n\n`. Throws RangeError on an action that would break the
 * framing: the text of a verdict comes partly from DNS TXT records, so a CR/LF
 * in it could otherwise inject a second reply.
 */
export function encodePolicyReply(action: string): Buffer {
  if (typeof action !== 'string' || action === '') throw new RangeError('empty policy action');
  if (/[\r\n\0]/.test(action)) throw new RangeError(`policy action contains CR, LF or NUL: ${JSON.stringify(action.slice(0, 200))}`);
  return Buffer.from(`action=${action}\n\n`, 'utf8');
}

/** A request as Postfix sends it (the client side: tests, bench, `mailwarden policy test`). Throws RangeError on unencodable attributes. */
export function encodePolicyRequest(attrs: Record<string, string | number> | ReadonlyMap<string, string>): Buffer {
  const entries = attrs instanceof Map ? attrs.entries() : Object.entries(attrs as Record<string, string | number>);
  let text = '';
  for (const [name, raw] of entries as Iterable<[string, string | number]>) {
    if (name === '' || /[=\n\0]/.test(name)) throw new RangeError(`invalid policy attribute name: ${JSON.stringify(name)}`);
    if (typeof raw === 'number' && !Number.isFinite(raw)) throw new RangeError(`invalid number for policy attribute ${name}: ${raw}`);
    const value = String(raw);
    // A trailing '\r' would be read back as part of a CRLF line end.
    if (/[\n\0]|\r$/.test(value)) throw new RangeError(`policy attribute ${name} has a value with LF, NUL or a trailing CR`);
    text += `${name}=${value}\n`;
  }
  return Buffer.from(`${text}\n`, 'utf8');
}

/**
 * The client side of a reply: one action per reply block. Like Postfix
 * (attr_scan_plain without ATTR_FLAG_EXTRA), other attributes are skipped and
 * the first `action=` wins; a block without one yields '' (Postfix then
 * applies its default action).
 */
export class PolicyReplyDecoder {
  readonly maxLineBytes: number;
  #parts: Buffer[] = [];
  #partial = 0;
  #action: string | undefined;

  constructor(maxLineBytes: number = POLICY_CODEC_DEFAULTS.maxLineBytes) {
    this.maxLineBytes = maxLineBytes;
  }

  push(chunk: Buffer): string[] {
    const actions: string[] = [];
    let start = 0;
    while (start < chunk.length) {
      const lf = chunk.indexOf(LF, start);
      if (lf < 0) {
        this.#parts.push(chunk.subarray(start));
        this.#partial += chunk.length - start;
        if (this.#partial > this.maxLineBytes + 1) throw new PolicyCodecError('line_too_long', `reply line longer than ${this.maxLineBytes} bytes`);
        break;
      }
      this.#parts.push(chunk.subarray(start, lf));
      let line = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts);
      this.#parts = [];
      this.#partial = 0;
      start = lf + 1;
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      if (line.length === 0) {
        actions.push(this.#action ?? '');
        this.#action = undefined;
      } else if (this.#action === undefined && line.toString('latin1', 0, 7) === 'action=') {
        this.#action = line.toString('utf8', 7);
      }
    }
    return actions;
  }
}
