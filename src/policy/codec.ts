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

/** Attribute names in the order Postfix 3.7+ sends them (postfix.md §1.2): the decoder expects this order and checks it with one string compare per line. */
const WIRE_ORDER = [
  'request', 'protocol_state', 'protocol_name', 'client_address', 'client_name', 'client_port', 'reverse_client_name',
  'server_address', 'server_port', 'helo_name', 'sender', 'recipient', 'recipient_count', 'queue_id', 'instance', 'size',
  'etrn_domain', 'stress', 'sasl_method', 'sasl_username', 'sasl_sender', 'ccert_subject', 'ccert_issuer', 'ccert_fingerprint',
  'ccert_pubkey_fingerprint', 'encryption_protocol', 'encryption_cipher', 'encryption_keysize', 'policy_context',
] as const;
type WireName = (typeof WIRE_ORDER)[number];
const WIRE_INDEX: ReadonlyMap<string, number> = new Map(WIRE_ORDER.map((name, i) => [name, i]));
const WIRE_PREFIX: readonly string[] = WIRE_ORDER.map((name) => `${name}=`);
const WIRE_BYTES: readonly Uint8Array[] = WIRE_PREFIX.map((prefix) => new Uint8Array(Buffer.from(prefix, 'latin1')));
/** A plain loop: Array.prototype.fill() is a call into the runtime, per request. */
function clearValues(values: Array<string | undefined>): void {
  for (let i = 0; i < values.length; i++) values[i] = undefined;
}

/** Whether `buf` holds `prefix` at `at` (the caller knows it fits). */
function prefixAt(buf: Buffer, at: number, prefix: Uint8Array): boolean {
  for (let i = 0; i < prefix.length; i++) if (buf[at + i] !== prefix[i]) return false;
  return true;
}
const at = (name: WireName): number => WIRE_INDEX.get(name)!;
const I = {
  request: at('request'), protocolState: at('protocol_state'), protocolName: at('protocol_name'), clientAddress: at('client_address'),
  clientName: at('client_name'), clientPort: at('client_port'), reverseClientName: at('reverse_client_name'), serverAddress: at('server_address'),
  serverPort: at('server_port'), heloName: at('helo_name'), sender: at('sender'), recipient: at('recipient'), recipientCount: at('recipient_count'),
  queueId: at('queue_id'), instance: at('instance'), size: at('size'), etrnDomain: at('etrn_domain'), stress: at('stress'),
  saslMethod: at('sasl_method'), saslUsername: at('sasl_username'), saslSender: at('sasl_sender'), ccertSubject: at('ccert_subject'),
  ccertIssuer: at('ccert_issuer'), ccertFingerprint: at('ccert_fingerprint'), ccertPubkeyFingerprint: at('ccert_pubkey_fingerprint'),
  encryptionProtocol: at('encryption_protocol'), encryptionCipher: at('encryption_cipher'), encryptionKeysize: at('encryption_keysize'),
  policyContext: at('policy_context'),
} as const;

/** A decimal number as decodePolicyAttributes reads it (digits only, else 0), without a regex. */
function decimal(text: string | undefined): number {
  if (text === undefined || text === '') return 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return 0;
  }
  return Number(text);
}

/**
 * A decoded request: the typed fields, in one fixed shape, and the attribute
 * map built only when someone asks for it (the policy engine never does; it
 * was a tenth of the decoding cost).
 */
class DecodedPolicyRequest implements PolicyRequest {
  readonly request: string;
  readonly protocolState: string;
  readonly protocolName: string;
  readonly clientAddress: string;
  readonly clientName: string;
  readonly reverseClientName: string;
  readonly clientPort: string;
  readonly serverAddress: string;
  readonly serverPort: string;
  readonly heloName: string;
  readonly sender: string;
  readonly recipient: string;
  readonly queueId: string;
  readonly instance: string;
  readonly etrnDomain: string;
  readonly saslMethod: string;
  readonly saslUsername: string;
  readonly saslSender: string;
  readonly ccertSubject: string;
  readonly ccertIssuer: string;
  readonly ccertFingerprint: string;
  readonly ccertPubkeyFingerprint: string;
  readonly encryptionProtocol: string;
  readonly encryptionCipher: string;
  readonly policyContext: string;
  readonly recipientCount: number;
  readonly size: number;
  readonly encryptionKeysize: number;
  readonly stress: boolean;
  /** name, value, name, value... as received; or undefined when the attribute lines are #text[#from, #to). */
  readonly #pairs: string[] | undefined;
  readonly #text: string | null;
  readonly #from: number;
  readonly #to: number;
  #attributes: Map<string, string> | undefined;

  constructor(v: ReadonlyArray<string | undefined>, pairs: string[] | undefined, text: string | null, from: number, to: number) {
    this.request = v[I.request] ?? '';
    this.protocolState = v[I.protocolState] ?? '';
    this.protocolName = v[I.protocolName] ?? '';
    this.clientAddress = v[I.clientAddress] ?? '';
    this.clientName = v[I.clientName] ?? '';
    this.reverseClientName = v[I.reverseClientName] ?? '';
    this.clientPort = v[I.clientPort] ?? '';
    this.serverAddress = v[I.serverAddress] ?? '';
    this.serverPort = v[I.serverPort] ?? '';
    this.heloName = v[I.heloName] ?? '';
    this.sender = v[I.sender] ?? '';
    this.recipient = v[I.recipient] ?? '';
    this.queueId = v[I.queueId] ?? '';
    this.instance = v[I.instance] ?? '';
    this.etrnDomain = v[I.etrnDomain] ?? '';
    this.saslMethod = v[I.saslMethod] ?? '';
    this.saslUsername = v[I.saslUsername] ?? '';
    this.saslSender = v[I.saslSender] ?? '';
    this.ccertSubject = v[I.ccertSubject] ?? '';
    this.ccertIssuer = v[I.ccertIssuer] ?? '';
    this.ccertFingerprint = v[I.ccertFingerprint] ?? '';
    this.ccertPubkeyFingerprint = v[I.ccertPubkeyFingerprint] ?? '';
    this.encryptionProtocol = v[I.encryptionProtocol] ?? '';
    this.encryptionCipher = v[I.encryptionCipher] ?? '';
    this.policyContext = v[I.policyContext] ?? '';
    this.recipientCount = decimal(v[I.recipientCount]);
    this.size = decimal(v[I.size]);
    this.encryptionKeysize = decimal(v[I.encryptionKeysize]);
    this.stress = v[I.stress] === 'yes';
    this.#pairs = pairs;
    this.#text = text;
    this.#from = from;
    this.#to = to;
  }

  get attributes(): ReadonlyMap<string, string> {
    if (this.#attributes === undefined) {
      const map = new Map<string, string>();
      let p = this.#pairs;
      if (p === undefined) {
        p = [];
        if (this.#text !== null) collectPairs(this.#text, this.#from, this.#to, p);
      }
      for (let i = 0; i < p.length; i += 2) map.set(p[i]!, p[i + 1]!);
      this.#attributes = map;
    }
    return this.#attributes;
  }
}

/**
 * The name, value pairs of the attribute lines in text[from, to): complete
 * lines that push() has already checked (each has a name and '=', no NUL, and
 * is not empty once a trailing CR is dropped).
 */
function collectPairs(text: string, from: number, to: number, out: string[]): void {
  let s = from;
  while (s < to) {
    const lf = text.indexOf('\n', s);
    const e = text.charCodeAt(lf - 1) === CR ? lf - 1 : lf;
    const eq = text.indexOf('=', s);
    out.push(text.slice(s, eq), text.slice(eq + 1, e));
    s = lf + 1;
  }
}

/**
 * Incremental request decoder. Feed it socket chunks split anywhere; it returns
 * the complete requests. Lines are decoded straight from the chunk; only a line
 * that spans chunks is copied. After an error the decoder stays failed: every
 * later push() throws it again, because the stream position is lost.
 */
export class PolicyRequestDecoder {
  readonly limits: Readonly<PolicyCodecLimits>;
  /** Values of the known attributes of the current request, by WIRE_ORDER index (the last one of a repeated name). */
  #values: Array<string | undefined> = new Array<string | undefined>(WIRE_ORDER.length).fill(undefined);
  /** Every attribute of the current request as name, value pairs, for the attribute map. */
  #pairs: string[] = [];
  /** WIRE_ORDER index the next line most likely has. */
  #expect = 0;
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
    // Postfix's requests are plain ASCII: then one latin1 decode of the whole chunk serves every line, and the
    // line ends are found in that string (byte and character offsets agree) instead of one Buffer call per line.
    const ascii: string | null = isAscii(chunk) ? chunk.toString('latin1') : null;
    // While every line of the current request is in `ascii` (it began in this chunk), they start at `first` and
    // its attribute list is made from that text only if someone asks for it; -1: lines go to #pairs as they come.
    let first = ascii !== null && this.#lines === 0 && this.#partial === 0 ? 0 : -1;
    while (start < n) {
      const lf = ascii !== null ? ascii.indexOf('\n', start) : chunk.indexOf(LF, start);
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
        if (first >= 0) {
          requests.push(new DecodedPolicyRequest(this.#values, undefined, ascii, first, s));
        } else {
          requests.push(new DecodedPolicyRequest(this.#values, this.#pairs, null, 0, 0));
          this.#pairs = [];
        }
        first = ascii !== null ? start : -1;
        clearValues(this.#values);
        this.#expect = 0;
        this.#lines = 0;
        this.#requestBytes = 0;
        continue;
      }
      if (++this.#lines > maxAttributes) this.#fail('too_many_attributes', `more than ${maxAttributes} attributes in one request`, requests);
      let line: string;
      let from: number;
      /** The line is ascii[s, e) and chunk[s, e). */
      let inAscii = false;
      if (buf === chunk) {
        if (nul === -2) nul = ascii !== null ? ascii.indexOf('\0') : chunk.indexOf(NUL);
        if (nul >= s && nul < e) this.#fail('bad_attribute', 'NUL byte in an attribute', requests);
        if (ascii !== null) {
          line = ascii;
          from = s;
          inAscii = true;
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
      let index: number;
      let name: string;
      let eq: number;
      const expected = WIRE_ORDER[this.#expect];
      // Postfix's own order: one compare of `name=` finds both the attribute and the '='; on an ASCII chunk
      // byte by byte in the Buffer (a third of the cost of startsWith() at an offset).
      if (expected !== undefined && e - from > expected.length
        && (inAscii ? prefixAt(chunk, s, WIRE_BYTES[this.#expect]!) : line.startsWith(WIRE_PREFIX[this.#expect]!, from))) {
        index = this.#expect;
        name = expected;
        eq = from + expected.length;
      } else {
        // On a line without '=' the search may run into later lines; that line is refused anyway.
        eq = line.indexOf('=', from);
        if (eq < 0 || eq >= e) this.#fail('bad_attribute', 'attribute line without "="', requests);
        if (eq === from) this.#fail('bad_attribute', 'attribute with an empty name', requests);
        name = line.slice(from, eq);
        index = WIRE_INDEX.get(name) ?? -1;
      }
      // Repeated names keep the last value (README allows either).
      const value = line.slice(eq + 1, e);
      if (index >= 0) {
        this.#values[index] = value;
        this.#expect = index + 1;
      }
      if (first < 0) this.#pairs.push(name, value);
    }
    // The current request goes on in the next chunk: the lines it has so far become pairs.
    if (first >= 0 && this.#lines > 0) collectPairs(ascii!, first, start, this.#pairs);
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
    this.#values.fill(undefined);
    this.#pairs = [];
    this.#error = new PolicyCodecError(code, message);
    throw new PolicyCodecError(code, message, requests);
  }
}

const STRING_FIELDS = Object.entries(STRING_ATTRIBUTES);
const NUMBER_FIELDS = Object.entries(NUMBER_ATTRIBUTES);
const DIGITS = /^[0-9]+$/;
/** Every field in one fixed order: copying it gives each request the same object shape, which keeps field reads fast. */
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
