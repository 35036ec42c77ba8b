// Sendmail milter protocol, version 6, as Postfix 3.7 speaks it (postfix.md §3;
// libmilter mfdef.h; the MTA side is pf:src/milter/milter8.c). Every packet is
// `uint32 length (big-endian, counts the command byte) | command byte | data`.
// Strings are NUL-terminated. Pure: no sockets, no timers.
//
// Both directions are here: MilterDecoder + encodeReply for the milter we run,
// encodeCommand + MilterReplyDecoder for playing Postfix (tests, bench).
import {
  MILTER_CHUNK_SIZE,
  SMFI_CURR_ACTS,
  SMFI_CURR_PROT,
  SMFI_PROT_VERSION,
  SMFIC,
  SMFIF,
  SMFIM,
  SMFIP,
  SMFIR,
} from './constants.ts';

export type MilterCodecErrorCode =
  /** The length word announces more than the decoder's maxFrameBytes. */
  | 'frame_too_large'
  /** Length word 0: not even a command byte. */
  | 'empty_frame'
  /** The data does not fit the command: missing NUL, too short, bytes left over, odd macro list, bad family. */
  | 'bad_payload'
  /** A command (or reply) byte this protocol does not define. */
  | 'unknown_command'
  /** negotiate(): the MTA offers a protocol version below 6. */
  | 'unsupported_version';

/** Malformed input from the peer (or an impossible negotiation). The decoders throw nothing else on input. */
export class MilterCodecError extends Error {
  override readonly name = 'MilterCodecError';
  readonly code: MilterCodecErrorCode;
  /** MilterDecoder: commands completed earlier in the same push(), still to be handled in order. */
  readonly commands: readonly MilterCommand[];
  /** MilterReplyDecoder: replies completed earlier in the same push(). */
  readonly replies: readonly MilterReply[];
  constructor(code: MilterCodecErrorCode, message: string, commands: readonly MilterCommand[] = [], replies: readonly MilterReply[] = []) {
    super(message);
    this.code = code;
    this.commands = commands;
    this.replies = replies;
  }
}

/**
 * Default limit on the length word (command byte + data). Postfix never sends
 * more than MILTER_CHUNK_SIZE + 1 for a body chunk and truncates headers to
 * 60000 bytes; the margin covers large macro packets.
 */
export const MILTER_MAX_FRAME_BYTES = 1024 * 1024 + 64;

// ---------------------------------------------------------------------------
// Types

/** SMFIA_*: '4' inet, '6' inet6, 'L' unix socket, 'U' unknown (then no port or address is sent). */
export type MilterFamily = '4' | '6' | 'L' | 'U';

/**
 * MTA → milter commands. Strings are UTF-8 (invalid sequences become U+FFFD),
 * except header names: latin1, one char per byte, so `Buffer.from(name,
 * 'latin1')` gives back the wire bytes. Header values and body chunks stay
 * Buffers, byte for byte (DKIM needs them exact).
 *
 * Buffers in decoded commands may share memory with the chunk given to push()
 * (see MilterDecoder): keep that chunk unchanged while you hold them.
 */
export type MilterCommand =
  /** `O`: what the MTA offers. `extra` holds bytes after the 12 defined ones, if any (none from Postfix). */
  | { readonly type: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number; readonly extra?: Buffer }
  /**
   * `D`: macros for the command letter `forCommand` (C H M R T L N B E U), sent
   * just before that command, and also when the milter opted out of it. Postfix
   * sends only the macros that have a value; the map may be empty.
   */
  | { readonly type: 'macro'; readonly forCommand: string; readonly macros: ReadonlyMap<string, string> }
  /**
   * `C`: `hostname` is `[address]` when Postfix has no verified name. For 'U' the
   * port is 0 and the address '' (not on the wire); for 'L' Postfix sends port 0.
   */
  | { readonly type: 'connect'; readonly hostname: string; readonly family: MilterFamily; readonly port: number; readonly address: string }
  | { readonly type: 'helo'; readonly name: string }
  /** `M`: args[0] is the sender in angle brackets (`<>` for the null sender), then ESMTP parameters (`SIZE=1234`, `BODY=8BITMIME`). */
  | { readonly type: 'mail'; readonly args: readonly string[] }
  /** `R`: args[0] is the recipient in angle brackets, then ESMTP parameters. */
  | { readonly type: 'rcpt'; readonly args: readonly string[] }
  /** `T`: DATA (also sent for BDAT). */
  | { readonly type: 'data' }
  /**
   * `L`: one header, Postfix's own Received: excluded. Folded lines are joined
   * with a bare LF. One leading space after the colon is removed unless
   * SMFIP_HDR_LEADSPC was negotiated, in which case `value` is everything after
   * the colon, leading whitespace included.
   */
  | { readonly type: 'header'; readonly name: string; readonly value: Buffer }
  | { readonly type: 'eoh' }
  /** `B`: at most MILTER_CHUNK_SIZE bytes from Postfix, CRLF line ends, dot-unstuffed. */
  | { readonly type: 'body'; readonly chunk: Buffer }
  /** `E`: end of message. Postfix sends the last chunk as a `B` first; Sendmail may attach it here. */
  | { readonly type: 'bodyEob'; readonly chunk?: Buffer }
  /** `U`: an SMTP command smtpd did not recognise, as the client sent it. */
  | { readonly type: 'unknown'; readonly command: string }
  /** `A`: the transaction ended (RSET, next MAIL, end of message); Postfix may send several in a row. No reply. */
  | { readonly type: 'abort' }
  /** `Q`: close the connection. No reply. */
  | { readonly type: 'quit' }
  /** `K`: quit, a new connection follows. Never sent by Postfix. */
  | { readonly type: 'quitNc' };

export type MilterCommandType = MilterCommand['type'];

/** Macro stages of the OPTNEG reply's macro lists (SMFIM_*), by name. */
export const MILTER_MACRO_STAGES = Object.freeze({
  connect: SMFIM.CONNECT,
  helo: SMFIM.HELO,
  envfrom: SMFIM.ENVFROM,
  envrcpt: SMFIM.ENVRCPT,
  data: SMFIM.DATA,
  eom: SMFIM.EOM,
  eoh: SMFIM.EOH,
});

export type MilterMacroStage = keyof typeof MILTER_MACRO_STAGES;

/**
 * Macro names the milter wants per stage (e.g. `{ connect: ['{client_addr}', 'j'] }`),
 * sent after the OPTNEG reply fields (libmilter smfi_setsymlist). Postfix
 * replaces its list for that stage (milter_connect_macros …
 * milter_end_of_data_macros) with a non-empty list here; stages
 * not listed keep Postfix's list. An empty list cannot suppress macros (Postfix
 * falls back to its own list), so encodeReply refuses it.
 */
export type MilterSymbolLists = Readonly<Partial<Record<MilterMacroStage, readonly string[]>>>;

export interface MilterOptnegReply {
  readonly type: 'optneg';
  /** ≤ the MTA's version. */
  readonly version: number;
  /** SMFIF_* the milter may use: must be a subset of what the MTA offered, else Postfix drops the milter. */
  readonly actions: number;
  /** SMFIP_* steps to skip, replies the milter will not send, extensions. */
  readonly protocol: number;
  readonly symbolLists?: MilterSymbolLists;
}

/** Replies without data. */
export type MilterSimpleReplyType =
  | 'continue'
  | 'accept'
  | 'reject'
  | 'tempfail'
  | 'discard'
  | 'progress'
  | 'skip'
  | 'shutdown'
  | 'connFail';

/**
 * Milter → MTA replies.
 *
 * Accept/reject class, valid after any event that expects a reply: continue,
 * accept, reject (550 5.7.1), tempfail (451 4.7.1), discard (not at
 * CONNECT/HELO), replyCode, shutdown (421); progress resets the MTA's timer
 * and the real reply follows; quarantine does not end the exchange. `skip`
 * needs SMFIP_SKIP in the negotiated protocol (the codec cannot check that).
 * `connFail` exists in mfdef.h but Postfix treats it as a protocol error.
 *
 * Modification class (addHeader … replBody): only before the final reply to
 * `bodyEob`, and only if the matching SMFIF_* action was negotiated; Postfix
 * treats them as a protocol error anywhere else.
 *
 * Header values (addHeader/insHeader/chgHeader) follow the same leading-space
 * rule as received headers: without SMFIP_HDR_LEADSPC Postfix writes
 * `Name: value` (it adds the space), with it Postfix writes `Name:value`, so
 * the value must bring its own leading space. Folded lines are separated by a
 * bare LF followed by a space or tab; CRLF would end up as CR CR LF.
 */
export type MilterReply =
  | MilterOptnegReply
  | { readonly type: MilterSimpleReplyType }
  /**
   * `y`: a complete SMTP reply, e.g. `550 5.7.1 Rejected`; multi-line replies use
   * `550-5.7.1 first\r\n550 5.7.1 last`. As the SMTP client will see it: the
   * encoder doubles `%` (Sendmail treats the text as a format string, Postfix
   * undoes it) and the decoder undoes it. Build it with replyCode().
   */
  | { readonly type: 'replyCode'; readonly reply: string }
  /** `q`: put the message on hold; Postfix (3.x milter8.c) keeps at most 100 bytes of `reason` as the hold reason. */
  | { readonly type: 'quarantine'; readonly reason: string }
  /** `h`: append a header. */
  | { readonly type: 'addHeader'; readonly name: string; readonly value: Buffer }
  /** `i`: insert at `index`; Postfix: 0 = before its own Received:, 1 = just after it. */
  | { readonly type: 'insHeader'; readonly index: number; readonly name: string; readonly value: Buffer }
  /**
   * `m`: change the index-th (1-based, per name; 0 counts as 1) header called
   * `name`; an empty value deletes it. Postfix removes deleted headers at once,
   * so later indexes shift: delete from the last one backwards.
   */
  | { readonly type: 'chgHeader'; readonly index: number; readonly name: string; readonly value: Buffer }
  | { readonly type: 'addRcpt'; readonly rcpt: string }
  /** `2`: add a recipient with ESMTP parameters (one space-separated string). */
  | { readonly type: 'addRcptPar'; readonly rcpt: string; readonly args?: string }
  | { readonly type: 'delRcpt'; readonly rcpt: string }
  /** `e`: replace the envelope sender; Postfix 3.7 ignores `args` with a warning. */
  | { readonly type: 'chgFrom'; readonly sender: string; readonly args?: string }
  /** `b`: a piece of the replacement body (CRLF line ends); all pieces must come back to back. */
  | { readonly type: 'replBody'; readonly chunk: Buffer };

export type MilterReplyType = MilterReply['type'];

type WidenBuffers<T> = {
  [K in keyof T]: T[K] extends Buffer ? Buffer | string : T[K] extends Buffer | undefined ? Buffer | string | undefined : T[K];
};
type DistributeWiden<U> = U extends unknown ? WidenBuffers<U> : never;

/** What encodeCommand() takes: a MilterCommand whose Buffer fields may also be strings (encoded as UTF-8). */
export type MilterCommandInput = DistributeWiden<MilterCommand>;
/** What encodeReply() takes: a MilterReply whose Buffer fields may also be strings (encoded as UTF-8). */
export type MilterReplyInput = DistributeWiden<MilterReply>;

// ---------------------------------------------------------------------------
// Framing

const HEAD_BYTES = 5;
const NUL = 0x00;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HTAB = 0x09;
const EMPTY = Buffer.alloc(0);

const byteOf = (letter: string): number => letter.charCodeAt(0);

function checkMaxFrameBytes(value: number): number {
  // Below 13 even an OPTNEG would not fit; above 2^31 the length word is not a valid ssize_t for Postfix.
  if (!Number.isSafeInteger(value) || value < 13 || value > 0x7fffffff) throw new RangeError(`invalid milter maxFrameBytes: ${value}`);
  return value;
}

export interface MilterDecoderOptions {
  /** Largest accepted length word (command byte + data). Default MILTER_MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
}

/**
 * Incremental packet splitter shared by both decoders. A packet that lies
 * wholly inside one pushed chunk is decoded from a subarray of that chunk (no
 * copy); a packet spread over chunks is copied into a buffer of its own as the
 * bytes arrive, so nothing of a pushed chunk is kept after push() returns.
 * After an error the decoder stays failed: the stream position is lost.
 */
abstract class FrameDecoder<T> {
  readonly maxFrameBytes: number;
  readonly #head = Buffer.alloc(HEAD_BYTES);
  #headFill = 0;
  #code = 0;
  /** The data of a packet that spans chunks, and how much of it has arrived. */
  #payload: Buffer | undefined;
  #filled = 0;
  #error: MilterCodecError | undefined;

  constructor(options: MilterDecoderOptions | undefined) {
    this.maxFrameBytes = checkMaxFrameBytes(options?.maxFrameBytes ?? MILTER_MAX_FRAME_BYTES);
  }

  /** True while a packet has been started but not finished (EOF now would truncate it). */
  get pending(): boolean {
    return this.#headFill > 0 || this.#payload !== undefined;
  }

  protected abstract decodeFrame(code: number, payload: Buffer): T;
  protected abstract wrapError(code: MilterCodecErrorCode, message: string, decoded: T[]): MilterCodecError;

  push(chunk: Buffer): T[] {
    if (this.#error) throw this.#error;
    const out: T[] = [];
    const n = chunk.length;
    let i = 0;
    try {
      while (i < n) {
        const pending = this.#payload;
        if (pending !== undefined) {
          const take = Math.min(pending.length - this.#filled, n - i);
          chunk.copy(pending, this.#filled, i, i + take);
          this.#filled += take;
          i += take;
          if (this.#filled === pending.length) {
            this.#payload = undefined;
            this.#filled = 0;
            out.push(this.decodeFrame(this.#code, pending));
          }
          continue;
        }
        let length: number;
        if (this.#headFill === 0 && n - i >= HEAD_BYTES) {
          length = this.#checkLength(chunk.readUInt32BE(i));
          this.#code = chunk[i + 4]!;
          i += HEAD_BYTES;
        } else {
          const take = Math.min(HEAD_BYTES - this.#headFill, n - i);
          chunk.copy(this.#head, this.#headFill, i, i + take);
          this.#headFill += take;
          i += take;
          // Refuse a bad length as soon as its 4 bytes are in, before the command byte.
          if (this.#headFill >= 4) this.#checkLength(this.#head.readUInt32BE(0));
          if (this.#headFill < HEAD_BYTES) break;
          length = this.#head.readUInt32BE(0);
          this.#code = this.#head[4]!;
          this.#headFill = 0;
        }
        const size = length - 1;
        if (n - i >= size) {
          out.push(this.decodeFrame(this.#code, size === 0 ? EMPTY : chunk.subarray(i, i + size)));
          i += size;
        } else {
          this.#payload = Buffer.allocUnsafe(size);
          this.#filled = 0;
        }
      }
    } catch (err) {
      if (!(err instanceof MilterCodecError)) throw err;
      this.#payload = undefined;
      this.#error = this.wrapError(err.code, err.message, []);
      throw this.wrapError(err.code, err.message, out);
    }
    return out;
  }

  #checkLength(length: number): number {
    if (length === 0) throw new MilterCodecError('empty_frame', 'milter packet with length 0 (no command byte)');
    if (length > this.maxFrameBytes) {
      throw new MilterCodecError('frame_too_large', `milter packet of ${length} bytes exceeds the limit of ${this.maxFrameBytes}`);
    }
    return length;
  }
}

// ---------------------------------------------------------------------------
// Payload parsing helpers (throw bad_payload)

function bad(message: string): MilterCodecError {
  return new MilterCodecError('bad_payload', message);
}

/** Index of the NUL that ends the string starting at `from`. */
function stringEnd(p: Buffer, from: number, what: string): number {
  const end = from < p.length ? p.indexOf(NUL, from) : -1;
  if (end < 0) throw bad(`${what} is not NUL-terminated`);
  return end;
}

function expectEnd(p: Buffer, at: number, what: string): void {
  if (at !== p.length) throw bad(`${what}: ${p.length - at} unexpected bytes after the data`);
}

function expectEmpty(p: Buffer, what: string): void {
  if (p.length !== 0) throw bad(`${what} carries ${p.length} unexpected data bytes`);
}

/** One string filling the whole payload. */
function onlyString(p: Buffer, what: string): string {
  const end = stringEnd(p, 0, what);
  expectEnd(p, end + 1, what);
  return p.toString('utf8', 0, end);
}

/** Consecutive NUL-terminated strings up to the end of `p`, from `from` on. */
function stringArray(p: Buffer, from: number, what: string): string[] {
  const out: string[] = [];
  let start = from;
  while (start < p.length) {
    const end = stringEnd(p, start, what);
    out.push(p.toString('utf8', start, end));
    start = end + 1;
  }
  return out;
}

/** `name\0value\0` filling the payload from `from` on: a header. */
function headerFields(p: Buffer, from: number, what: string): { name: string; value: Buffer } {
  const nameEnd = stringEnd(p, from, `${what} name`);
  const valueEnd = stringEnd(p, nameEnd + 1, `${what} value`);
  expectEnd(p, valueEnd + 1, what);
  return { name: p.toString('latin1', from, nameEnd), value: p.subarray(nameEnd + 1, valueEnd) };
}

/** One or two strings (the second optional): CHGFROM and ADDRCPT_PAR. */
function stringWithOptionalArgs(p: Buffer, what: string): { first: string; args: string | undefined } {
  const firstEnd = stringEnd(p, 0, what);
  const first = p.toString('utf8', 0, firstEnd);
  if (firstEnd + 1 === p.length) return { first, args: undefined };
  const argsEnd = stringEnd(p, firstEnd + 1, `${what} arguments`);
  expectEnd(p, argsEnd + 1, what);
  return { first, args: p.toString('utf8', firstEnd + 1, argsEnd) };
}

/** A string that Postfix reads as raw data and then uses up to the first NUL (REPLYCODE, QUARANTINE). */
function cString(p: Buffer): string {
  const nul = p.indexOf(NUL);
  return p.toString('utf8', 0, nul < 0 ? p.length : nul);
}

// ---------------------------------------------------------------------------
// MTA → milter: decoder

const C_ABORT = byteOf(SMFIC.ABORT);
const C_BODY = byteOf(SMFIC.BODY);
const C_CONNECT = byteOf(SMFIC.CONNECT);
const C_MACRO = byteOf(SMFIC.MACRO);
const C_BODYEOB = byteOf(SMFIC.BODYEOB);
const C_HELO = byteOf(SMFIC.HELO);
const C_QUIT_NC = byteOf(SMFIC.QUIT_NC);
const C_HEADER = byteOf(SMFIC.HEADER);
const C_MAIL = byteOf(SMFIC.MAIL);
const C_EOH = byteOf(SMFIC.EOH);
const C_OPTNEG = byteOf(SMFIC.OPTNEG);
const C_QUIT = byteOf(SMFIC.QUIT);
const C_RCPT = byteOf(SMFIC.RCPT);
const C_DATA = byteOf(SMFIC.DATA);
const C_UNKNOWN = byteOf(SMFIC.UNKNOWN);

const FAMILIES: ReadonlySet<string> = new Set(['4', '6', 'L', 'U']);

function describeByte(code: number): string {
  return code >= 0x21 && code <= 0x7e ? `'${String.fromCharCode(code)}'` : `0x${code.toString(16).padStart(2, '0')}`;
}

function decodeCommand(code: number, p: Buffer): MilterCommand {
  switch (code) {
    case C_OPTNEG: {
      if (p.length < 12) throw bad(`OPTNEG needs 12 data bytes, got ${p.length}`);
      const base = { type: 'optneg' as const, version: p.readUInt32BE(0), actions: p.readUInt32BE(4), protocol: p.readUInt32BE(8) };
      return p.length > 12 ? { ...base, extra: p.subarray(12) } : base;
    }
    case C_MACRO: {
      if (p.length < 1) throw bad('MACRO without a command letter');
      const list = stringArray(p, 1, 'MACRO name or value');
      if (list.length % 2 !== 0) throw bad(`MACRO list has a name without a value (${list.length} strings)`);
      const macros = new Map<string, string>();
      for (let k = 0; k < list.length; k += 2) macros.set(list[k]!, list[k + 1]!);
      return { type: 'macro', forCommand: String.fromCharCode(p[0]!), macros };
    }
    case C_CONNECT: {
      const hostEnd = stringEnd(p, 0, 'CONNECT hostname');
      const hostname = p.toString('utf8', 0, hostEnd);
      if (hostEnd + 1 >= p.length) throw bad('CONNECT without an address family');
      const family = String.fromCharCode(p[hostEnd + 1]!);
      if (!FAMILIES.has(family)) throw bad(`CONNECT with unknown address family ${describeByte(p[hostEnd + 1]!)}`);
      if (family === 'U') {
        expectEnd(p, hostEnd + 2, 'CONNECT (family U)');
        return { type: 'connect', hostname, family, port: 0, address: '' };
      }
      if (p.length < hostEnd + 4) throw bad('CONNECT without a port');
      const port = p.readUInt16BE(hostEnd + 2);
      const addressEnd = stringEnd(p, hostEnd + 4, 'CONNECT address');
      expectEnd(p, addressEnd + 1, 'CONNECT');
      return { type: 'connect', hostname, family: family as MilterFamily, port, address: p.toString('utf8', hostEnd + 4, addressEnd) };
    }
    case C_HELO:
      return { type: 'helo', name: onlyString(p, 'HELO name') };
    case C_MAIL: {
      const args = stringArray(p, 0, 'MAIL argument');
      if (args.length === 0) throw bad('MAIL without a sender');
      return { type: 'mail', args };
    }
    case C_RCPT: {
      const args = stringArray(p, 0, 'RCPT argument');
      if (args.length === 0) throw bad('RCPT without a recipient');
      return { type: 'rcpt', args };
    }
    case C_DATA:
      expectEmpty(p, 'DATA');
      return { type: 'data' };
    case C_HEADER:
      return { type: 'header', ...headerFields(p, 0, 'HEADER') };
    case C_EOH:
      expectEmpty(p, 'EOH');
      return { type: 'eoh' };
    case C_BODY:
      return { type: 'body', chunk: p };
    case C_BODYEOB:
      return p.length > 0 ? { type: 'bodyEob', chunk: p } : { type: 'bodyEob' };
    case C_UNKNOWN:
      return { type: 'unknown', command: onlyString(p, 'UNKNOWN command') };
    case C_ABORT:
      expectEmpty(p, 'ABORT');
      return { type: 'abort' };
    case C_QUIT:
      expectEmpty(p, 'QUIT');
      return { type: 'quit' };
    case C_QUIT_NC:
      expectEmpty(p, 'QUIT_NC');
      return { type: 'quitNc' };
    default:
      throw new MilterCodecError('unknown_command', `unknown milter command ${describeByte(code)}`);
  }
}

/**
 * Decodes what the MTA sends. Feed it socket chunks split anywhere; it returns
 * the complete commands in order.
 *
 * Buffer reuse: `header.value`, `body.chunk`, `bodyEob.chunk` and
 * `optneg.extra` are subarrays of the pushed chunk when their packet arrived
 * whole inside it (the usual case; no copy), else of a private buffer. Node's
 * `socket.on('data')` chunks are never reused, so that is safe there; a caller
 * that recycles its read buffer (net `onread` with a fixed buffer) must copy
 * what it keeps before the next read.
 */
export class MilterDecoder extends FrameDecoder<MilterCommand> {
  constructor(options?: MilterDecoderOptions) {
    super(options);
  }

  protected decodeFrame(code: number, payload: Buffer): MilterCommand {
    return decodeCommand(code, payload);
  }

  protected wrapError(code: MilterCodecErrorCode, message: string, decoded: MilterCommand[]): MilterCodecError {
    return new MilterCodecError(code, message, decoded);
  }
}

// ---------------------------------------------------------------------------
// Milter → MTA: decoder (the Postfix side: tests, bench)

const R_ADDRCPT = byteOf(SMFIR.ADDRCPT);
const R_DELRCPT = byteOf(SMFIR.DELRCPT);
const R_ADDRCPT_PAR = byteOf(SMFIR.ADDRCPT_PAR);
const R_SHUTDOWN = byteOf(SMFIR.SHUTDOWN);
const R_ACCEPT = byteOf(SMFIR.ACCEPT);
const R_REPLBODY = byteOf(SMFIR.REPLBODY);
const R_CONTINUE = byteOf(SMFIR.CONTINUE);
const R_DISCARD = byteOf(SMFIR.DISCARD);
const R_CHGFROM = byteOf(SMFIR.CHGFROM);
const R_CONN_FAIL = byteOf(SMFIR.CONN_FAIL);
const R_ADDHEADER = byteOf(SMFIR.ADDHEADER);
const R_INSHEADER = byteOf(SMFIR.INSHEADER);
const R_CHGHEADER = byteOf(SMFIR.CHGHEADER);
const R_PROGRESS = byteOf(SMFIR.PROGRESS);
const R_QUARANTINE = byteOf(SMFIR.QUARANTINE);
const R_REJECT = byteOf(SMFIR.REJECT);
const R_SKIP = byteOf(SMFIR.SKIP);
const R_TEMPFAIL = byteOf(SMFIR.TEMPFAIL);
const R_REPLYCODE = byteOf(SMFIR.REPLYCODE);

const SIMPLE_REPLY_BYTES: Readonly<Record<MilterSimpleReplyType, number>> = {
  continue: R_CONTINUE,
  accept: R_ACCEPT,
  reject: R_REJECT,
  tempfail: R_TEMPFAIL,
  discard: R_DISCARD,
  progress: R_PROGRESS,
  skip: R_SKIP,
  shutdown: R_SHUTDOWN,
  connFail: R_CONN_FAIL,
};
const SIMPLE_REPLY_TYPES: ReadonlyMap<number, MilterSimpleReplyType> = new Map(
  Object.entries(SIMPLE_REPLY_BYTES).map(([type, code]) => [code, type as MilterSimpleReplyType]),
);

/** SMFIM number → stage name. */
const STAGE_NAMES: readonly MilterMacroStage[] = (Object.keys(MILTER_MACRO_STAGES) as MilterMacroStage[]).sort(
  (a, b) => MILTER_MACRO_STAGES[a] - MILTER_MACRO_STAGES[b],
);

/** Postfix splits macro lists on CHARS_COMMA_SP. */
const MACRO_LIST_SEPARATORS = /[, \t\r\n]+/;

function decodeOptnegReply(p: Buffer): MilterOptnegReply {
  if (p.length < 12) throw bad(`OPTNEG reply needs 12 data bytes, got ${p.length}`);
  const base = { type: 'optneg' as const, version: p.readUInt32BE(0), actions: p.readUInt32BE(4), protocol: p.readUInt32BE(8) };
  if (p.length === 12) return base;
  const lists: Partial<Record<MilterMacroStage, string[]>> = {};
  let at = 12;
  while (at < p.length) {
    if (p.length - at < 4) throw bad('OPTNEG reply macro list without a complete stage number');
    const stage = p.readUInt32BE(at);
    const end = stringEnd(p, at + 4, 'OPTNEG reply macro list');
    const name = STAGE_NAMES[stage];
    // Postfix ignores unknown stages with a warning; later lists for a stage replace earlier ones.
    if (name !== undefined) lists[name] = p.toString('utf8', at + 4, end).split(MACRO_LIST_SEPARATORS).filter((m) => m !== '');
    at = end + 1;
  }
  return { ...base, symbolLists: lists };
}

/** Postfix's REPLYCODE check (milter8_event): [45]dd then ' ' or '-', and an enhanced code, if any, of the same class. */
function checkReceivedReplyCode(text: string): void {
  const ok =
    (text[0] === '4' || text[0] === '5') &&
    isDigit(text[1]) &&
    isDigit(text[2]) &&
    (text[3] === ' ' || text[3] === '-') &&
    (!isDigit(text[4]) || text[4] === text[0]);
  if (!ok) throw bad(`malformed REPLYCODE ${JSON.stringify(text.slice(0, 100))}`);
}

function isDigit(c: string | undefined): boolean {
  return c !== undefined && c >= '0' && c <= '9';
}

/** `%%` → `%`, a lone `%` dropped: what Postfix does to REPLYCODE text. */
function unescapePercent(text: string): string {
  return text.includes('%') ? text.replace(/%(%?)/g, '$1') : text;
}

function decodeReply(code: number, p: Buffer): MilterReply {
  const simple = SIMPLE_REPLY_TYPES.get(code);
  if (simple !== undefined) {
    expectEmpty(p, `reply ${simple}`);
    return { type: simple };
  }
  switch (code) {
    case C_OPTNEG:
      return decodeOptnegReply(p);
    case R_REPLYCODE: {
      const text = cString(p);
      checkReceivedReplyCode(text);
      return { type: 'replyCode', reply: unescapePercent(text) };
    }
    case R_QUARANTINE:
      return { type: 'quarantine', reason: cString(p) };
    case R_ADDHEADER:
      return { type: 'addHeader', ...headerFields(p, 0, 'ADDHEADER') };
    case R_INSHEADER:
    case R_CHGHEADER: {
      if (p.length < 4) throw bad('header change without an index');
      const index = p.readUInt32BE(0);
      return code === R_INSHEADER
        ? { type: 'insHeader', index, ...headerFields(p, 4, 'INSHEADER') }
        : { type: 'chgHeader', index, ...headerFields(p, 4, 'CHGHEADER') };
    }
    case R_ADDRCPT:
      return { type: 'addRcpt', rcpt: onlyString(p, 'ADDRCPT') };
    case R_DELRCPT:
      return { type: 'delRcpt', rcpt: onlyString(p, 'DELRCPT') };
    case R_ADDRCPT_PAR: {
      const { first, args } = stringWithOptionalArgs(p, 'ADDRCPT_PAR');
      return args === undefined ? { type: 'addRcptPar', rcpt: first } : { type: 'addRcptPar', rcpt: first, args };
    }
    case R_CHGFROM: {
      const { first, args } = stringWithOptionalArgs(p, 'CHGFROM');
      return args === undefined ? { type: 'chgFrom', sender: first } : { type: 'chgFrom', sender: first, args };
    }
    case R_REPLBODY:
      return { type: 'replBody', chunk: p };
    default:
      throw new MilterCodecError('unknown_command', `unknown milter reply ${describeByte(code)}`);
  }
}

/**
 * Decodes what a milter sends back, checked the way Postfix 3.7 checks it
 * (milter8_event, milter8_connect): data after a data-less reply, a malformed
 * REPLYCODE, unknown reply bytes and broken strings are errors. Whether a reply
 * is allowed at this point of the conversation is the caller's business.
 * Buffers share memory with the pushed chunk like MilterDecoder's.
 */
export class MilterReplyDecoder extends FrameDecoder<MilterReply> {
  constructor(options?: MilterDecoderOptions) {
    super(options);
  }

  protected decodeFrame(code: number, payload: Buffer): MilterReply {
    return decodeReply(code, payload);
  }

  protected wrapError(code: MilterCodecErrorCode, message: string, decoded: MilterReply[]): MilterCodecError {
    return new MilterCodecError(code, message, [], decoded);
  }
}

// ---------------------------------------------------------------------------
// Encoding helpers (throw RangeError on values that cannot be encoded)

function packet(code: number, parts: readonly Buffer[]): Buffer {
  let size = 0;
  for (const part of parts) size += part.length;
  const out = Buffer.allocUnsafe(HEAD_BYTES + size);
  out.writeUInt32BE(size + 1, 0);
  out[4] = code;
  let at = HEAD_BYTES;
  for (const part of parts) at += part.copy(out, at);
  return out;
}

function uint32(value: number, what: string): Buffer {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`${what} is not a uint32: ${value}`);
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(value, 0);
  return out;
}

function toBytes(value: Buffer | string): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
}

const NUL_BUFFER = Buffer.from([NUL]);

/** A NUL-terminated UTF-8 string. */
function cstr(value: string, what: string): Buffer {
  if (typeof value !== 'string') throw new RangeError(`${what} is not a string`);
  if (value.includes('\0')) throw new RangeError(`${what} contains NUL: ${JSON.stringify(value.slice(0, 200))}`);
  return Buffer.from(`${value}\0`, 'utf8');
}

/** A NUL-terminated string that must also be a single line (addresses, reasons, command text). */
function lineCstr(value: string, what: string): Buffer {
  if (typeof value === 'string' && /[\r\n]/.test(value)) throw new RangeError(`${what} contains CR or LF: ${JSON.stringify(value.slice(0, 200))}`);
  return cstr(value, what);
}

/** Raw bytes plus a NUL, refusing an embedded NUL (header values). */
function bytesCstr(value: Buffer, what: string): Buffer[] {
  if (value.includes(NUL)) throw new RangeError(`${what} contains NUL`);
  return [value, NUL_BUFFER];
}

/** Header names as latin1, the way MilterDecoder reads them. */
function headerNameCstr(name: string, what: string): Buffer {
  if (typeof name !== 'string' || /[^\x01-\xff]/.test(name)) throw new RangeError(`${what} must be latin1 without NUL: ${JSON.stringify(String(name).slice(0, 200))}`);
  return Buffer.from(`${name}\0`, 'latin1');
}

// ---------------------------------------------------------------------------
// MTA → milter: encoder (playing Postfix)

/**
 * A command packet as the MTA sends it. Checks only what would break the
 * framing (NUL inside strings, numbers out of range, unknown family), so tests
 * can also send things Postfix never would (a 1 MiB body chunk, say).
 */
export function encodeCommand(cmd: MilterCommandInput): Buffer {
  switch (cmd.type) {
    case 'optneg':
      return packet(C_OPTNEG, [
        uint32(cmd.version, 'OPTNEG version'),
        uint32(cmd.actions, 'OPTNEG actions'),
        uint32(cmd.protocol, 'OPTNEG protocol'),
        cmd.extra === undefined ? EMPTY : toBytes(cmd.extra),
      ]);
    case 'macro': {
      const letter = cmd.forCommand;
      if (typeof letter !== 'string' || letter.length !== 1 || letter.charCodeAt(0) > 0xff) {
        throw new RangeError(`MACRO forCommand must be one command letter: ${JSON.stringify(letter)}`);
      }
      const parts: Buffer[] = [Buffer.from([letter.charCodeAt(0)])];
      for (const [name, value] of cmd.macros) parts.push(cstr(name, 'macro name'), cstr(value, `macro ${name} value`));
      return packet(C_MACRO, parts);
    }
    case 'connect': {
      if (!FAMILIES.has(cmd.family)) throw new RangeError(`unknown CONNECT family: ${JSON.stringify(cmd.family)}`);
      const parts = [cstr(cmd.hostname, 'CONNECT hostname'), Buffer.from(cmd.family, 'latin1')];
      if (cmd.family !== 'U') {
        if (!Number.isInteger(cmd.port) || cmd.port < 0 || cmd.port > 0xffff) throw new RangeError(`CONNECT port out of range: ${cmd.port}`);
        const port = Buffer.allocUnsafe(2);
        port.writeUInt16BE(cmd.port, 0);
        parts.push(port, cstr(cmd.address, 'CONNECT address'));
      }
      return packet(C_CONNECT, parts);
    }
    case 'helo':
      return packet(C_HELO, [cstr(cmd.name, 'HELO name')]);
    case 'mail':
    case 'rcpt': {
      if (cmd.args.length === 0) throw new RangeError(`${cmd.type.toUpperCase()} needs at least the address`);
      return packet(cmd.type === 'mail' ? C_MAIL : C_RCPT, cmd.args.map((arg) => cstr(arg, `${cmd.type.toUpperCase()} argument`)));
    }
    case 'data':
      return packet(C_DATA, []);
    case 'header':
      return packet(C_HEADER, [headerNameCstr(cmd.name, 'HEADER name'), ...bytesCstr(toBytes(cmd.value), 'HEADER value')]);
    case 'eoh':
      return packet(C_EOH, []);
    case 'body':
      return packet(C_BODY, [toBytes(cmd.chunk)]);
    case 'bodyEob':
      return packet(C_BODYEOB, cmd.chunk === undefined ? [] : [toBytes(cmd.chunk)]);
    case 'unknown':
      return packet(C_UNKNOWN, [cstr(cmd.command, 'UNKNOWN command')]);
    case 'abort':
      return packet(C_ABORT, []);
    case 'quit':
      return packet(C_QUIT, []);
    case 'quitNc':
      return packet(C_QUIT_NC, []);
    default:
      throw new RangeError(`unknown milter command type: ${JSON.stringify((cmd as { type: unknown }).type)}`);
  }
}

// ---------------------------------------------------------------------------
// Milter → MTA: encoder

/** RFC 5322 field name: printable ASCII except ':'. */
const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

function checkHeaderName(name: string, what: string): Buffer {
  if (typeof name !== 'string' || !HEADER_NAME.test(name)) throw new RangeError(`${what}: invalid header name ${JSON.stringify(String(name).slice(0, 200))}`);
  return Buffer.from(`${name}\0`, 'latin1');
}

/**
 * A header value to send to Postfix: no NUL, no CR (Postfix wants folded lines
 * joined with a bare LF), every LF followed by a space or tab (a continuation
 * line; anything else would start a new header), no LF at the end.
 */
function checkHeaderValue(value: Buffer, what: string): Buffer[] {
  if (value.includes(NUL)) throw new RangeError(`${what}: header value contains NUL`);
  if (value.includes(CR)) throw new RangeError(`${what}: header value contains CR; fold with LF + space/tab, not CRLF`);
  for (let lf = value.indexOf(LF); lf >= 0; lf = value.indexOf(LF, lf + 1)) {
    const next = value[lf + 1];
    if (next !== SP && next !== HTAB) throw new RangeError(`${what}: header value has a line break not followed by a space or tab`);
  }
  return [value, NUL_BUFFER];
}

function checkMacroName(name: string, stage: string): string {
  if (typeof name !== 'string' || !/^[^\s,\0]+$/.test(name)) throw new RangeError(`invalid macro name for stage ${stage}: ${JSON.stringify(name)}`);
  return name;
}

/** The main.cf list each stage replaces. */
const POSTFIX_MACRO_PARAMETERS: Readonly<Record<MilterMacroStage, string>> = {
  connect: 'milter_connect_macros',
  helo: 'milter_helo_macros',
  envfrom: 'milter_mail_macros',
  envrcpt: 'milter_rcpt_macros',
  data: 'milter_data_macros',
  eom: 'milter_end_of_data_macros',
  eoh: 'milter_end_of_header_macros',
};

function encodeSymbolLists(lists: MilterSymbolLists): Buffer[] {
  const parts: Buffer[] = [];
  for (const stage of STAGE_NAMES) {
    const names = lists[stage];
    if (names === undefined) continue;
    if (names.length === 0) {
      throw new RangeError(`empty macro list for stage ${stage}: Postfix would fall back to its ${POSTFIX_MACRO_PARAMETERS[stage]}, leave the stage out instead`);
    }
    parts.push(uint32(MILTER_MACRO_STAGES[stage], 'macro stage'), cstr(names.map((n) => checkMacroName(n, stage)).join(' '), `macro list ${stage}`));
  }
  for (const key of Object.keys(lists)) {
    if (!Object.hasOwn(MILTER_MACRO_STAGES, key)) throw new RangeError(`unknown macro stage: ${JSON.stringify(key)}`);
  }
  return parts;
}

/** libmilter limits (smfi_setmlreply): 32 lines of at most 980 bytes of text. */
const MAX_REPLY_LINES = 32;
const MAX_REPLY_TEXT_BYTES = 980;
/** One line of a REPLYCODE: `550 5.7.1 text` or `550-5.7.1 text`; SMTP text is HTAB and printable (UTF-8 allowed). */
const REPLY_LINE = /^([45][0-9][0-9])([ -])([45])\.([0-9]{1,3})\.([0-9]{1,3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;

/**
 * Checks a complete SMTP reply for REPLYCODE: 4xx/5xx, an enhanced status code
 * of the same class on every line, one reply code throughout, `-` on all lines
 * but the last, and no CR, LF or NUL inside a line (the text of a verdict may
 * come from DNS, so a line break in it must not forge another line).
 */
function checkReplyCode(reply: string): void {
  if (typeof reply !== 'string') throw new RangeError('REPLYCODE reply is not a string');
  const lines = reply.split('\r\n');
  if (lines.length > MAX_REPLY_LINES) throw new RangeError(`REPLYCODE has ${lines.length} lines, at most ${MAX_REPLY_LINES}`);
  let code: string | undefined;
  lines.forEach((line, k) => {
    const m = REPLY_LINE.exec(line);
    if (m === null) throw new RangeError(`malformed REPLYCODE line ${JSON.stringify(line.slice(0, 200))}: need "4xx/5xx x.y.z text" without CR, LF or NUL`);
    if (m[1]![0] !== m[3]) throw new RangeError(`REPLYCODE ${m[1]} with enhanced status code class ${m[3]}`);
    if (code !== undefined && m[1] !== code) throw new RangeError(`REPLYCODE lines with different codes: ${code} and ${m[1]}`);
    code = m[1];
    const last = k === lines.length - 1;
    if ((m[2] === '-') === last) throw new RangeError(`REPLYCODE line ${k + 1} must use "${last ? ' ' : '-'}" after the code`);
    if (Buffer.byteLength(m[6] ?? '', 'utf8') > MAX_REPLY_TEXT_BYTES) throw new RangeError(`REPLYCODE line text longer than ${MAX_REPLY_TEXT_BYTES} bytes`);
  });
}

/**
 * Builds a REPLYCODE reply: `replyCode(550, '5.7.1', 'Rejected')`, or with an
 * array of lines a multi-line reply. Throws RangeError on a code that is not
 * 4xx/5xx, an enhanced code of another class, or text with CR, LF or NUL.
 */
export function replyCode(code: number | string, enhanced: string, text: string | readonly string[]): Extract<MilterReply, { type: 'replyCode' }> {
  const lines = typeof text === 'string' ? [text] : text;
  if (lines.length === 0) throw new RangeError('REPLYCODE without text');
  const reply = lines.map((line, k) => `${code}${k === lines.length - 1 ? ' ' : '-'}${enhanced} ${line}`).join('\r\n');
  // A CR or LF inside one line would split it into lines the check below would see as well-formed.
  for (const line of lines) {
    if (/[\r\n\0]/.test(line)) throw new RangeError(`REPLYCODE text contains CR, LF or NUL: ${JSON.stringify(line.slice(0, 200))}`);
  }
  checkReplyCode(reply);
  return { type: 'replyCode', reply };
}

/** One reply as the milter sends it. `replBody` longer than MILTER_CHUNK_SIZE becomes several packets. */
export function encodeReply(reply: MilterReplyInput): Buffer {
  switch (reply.type) {
    case 'optneg':
      return packet(C_OPTNEG, [
        uint32(reply.version, 'OPTNEG version'),
        uint32(reply.actions, 'OPTNEG actions'),
        uint32(reply.protocol, 'OPTNEG protocol'),
        ...(reply.symbolLists === undefined ? [] : encodeSymbolLists(reply.symbolLists)),
      ]);
    case 'continue':
    case 'accept':
    case 'reject':
    case 'tempfail':
    case 'discard':
    case 'progress':
    case 'skip':
    case 'shutdown':
    case 'connFail':
      return packet(SIMPLE_REPLY_BYTES[reply.type], []);
    case 'replyCode':
      checkReplyCode(reply.reply);
      return packet(R_REPLYCODE, [cstr(reply.reply.replaceAll('%', '%%'), 'REPLYCODE')]);
    case 'quarantine':
      return packet(R_QUARANTINE, [lineCstr(reply.reason, 'QUARANTINE reason')]);
    case 'addHeader':
      return packet(R_ADDHEADER, [checkHeaderName(reply.name, 'ADDHEADER'), ...checkHeaderValue(toBytes(reply.value), 'ADDHEADER')]);
    case 'insHeader':
      return packet(R_INSHEADER, [
        uint32(reply.index, 'INSHEADER index'),
        checkHeaderName(reply.name, 'INSHEADER'),
        ...checkHeaderValue(toBytes(reply.value), 'INSHEADER'),
      ]);
    case 'chgHeader':
      return packet(R_CHGHEADER, [
        uint32(reply.index, 'CHGHEADER index'),
        checkHeaderName(reply.name, 'CHGHEADER'),
        ...checkHeaderValue(toBytes(reply.value), 'CHGHEADER'),
      ]);
    case 'addRcpt':
      return packet(R_ADDRCPT, [lineCstr(reply.rcpt, 'ADDRCPT recipient')]);
    case 'addRcptPar':
      return packet(R_ADDRCPT_PAR, [
        lineCstr(reply.rcpt, 'ADDRCPT_PAR recipient'),
        ...(reply.args === undefined ? [] : [lineCstr(reply.args, 'ADDRCPT_PAR arguments')]),
      ]);
    case 'delRcpt':
      return packet(R_DELRCPT, [lineCstr(reply.rcpt, 'DELRCPT recipient')]);
    case 'chgFrom':
      return packet(R_CHGFROM, [
        lineCstr(reply.sender, 'CHGFROM sender'),
        ...(reply.args === undefined ? [] : [lineCstr(reply.args, 'CHGFROM arguments')]),
      ]);
    case 'replBody': {
      const body = toBytes(reply.chunk);
      if (body.length <= MILTER_CHUNK_SIZE) return packet(R_REPLBODY, [body]);
      const packets: Buffer[] = [];
      for (let at = 0; at < body.length; at += MILTER_CHUNK_SIZE) packets.push(packet(R_REPLBODY, [body.subarray(at, at + MILTER_CHUNK_SIZE)]));
      return Buffer.concat(packets);
    }
    default:
      throw new RangeError(`unknown milter reply type: ${JSON.stringify((reply as { type: unknown }).type)}`);
  }
}

// ---------------------------------------------------------------------------
// Negotiation

export interface MilterOffer {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
}

export interface MilterWants {
  /** SMFIF_* the milter would like to use. SETSYMLIST is added when symbolLists is given. */
  readonly actions: number;
  /** SMFIP_* flags: steps to skip (NOHELO…), replies it won't send (NR_*), HDR_LEADSPC, SKIP, RCPT_REJ. */
  readonly protocol: number;
  readonly symbolLists?: MilterSymbolLists;
}

export interface MilterNegotiation {
  /** The OPTNEG reply to send: version 6, the wanted actions and flags that the MTA offers. */
  readonly reply: MilterOptnegReply;
  /** Wanted actions the MTA does not offer: the milter must not send those modifications. */
  readonly missingActions: number;
  /**
   * Wanted protocol flags the MTA does not offer: the milter must cope without
   * them, e.g. without NR_HDR it still owes a reply to every header, without
   * NOHELO it still gets HELO, without HDR_LEADSPC header values lose one space.
   */
  readonly missingProtocol: number;
}

/**
 * The milter's answer to the MTA's OPTNEG: version 6 and, of what we want, only
 * what the MTA offers (Postfix drops a milter that replies with a higher
 * version or an action it did not offer, postfix.md §3.4). Postfix 3.7 offers
 * version 6, actions 0x1FF, protocol 0x1FFFFF (POSTFIX_OPTNEG). Throws
 * MilterCodecError('unsupported_version') for an MTA below version 6 and
 * RangeError for wants outside protocol 6.
 */
export function negotiate(offer: MilterOffer, want: MilterWants): MilterNegotiation {
  if (!(offer.version >= SMFI_PROT_VERSION)) {
    throw new MilterCodecError(
      'unsupported_version',
      `MTA offers milter protocol version ${offer.version}; version ${SMFI_PROT_VERSION} is required (Postfix: milter_protocol = 6, the default since 2.6)`,
    );
  }
  uint32(want.actions, 'wanted actions');
  uint32(want.protocol, 'wanted protocol');
  if ((want.actions & ~SMFI_CURR_ACTS) !== 0) throw new RangeError(`wanted actions 0x${want.actions.toString(16)} outside protocol 6`);
  if ((want.protocol & ~SMFI_CURR_PROT) !== 0) throw new RangeError(`wanted protocol flags 0x${want.protocol.toString(16)} outside protocol 6`);
  const lists = want.symbolLists !== undefined && Object.keys(want.symbolLists).length > 0 ? want.symbolLists : undefined;
  if (lists !== undefined) encodeSymbolLists(lists); // refuse bad lists here rather than at encode time
  const wantedActions = (want.actions | (lists !== undefined ? SMFIF.SETSYMLIST : 0)) >>> 0;
  const actions = (wantedActions & offer.actions) >>> 0;
  const protocol = (want.protocol & offer.protocol) >>> 0;
  const reply: MilterOptnegReply =
    lists !== undefined && (actions & SMFIF.SETSYMLIST) !== 0
      ? { type: 'optneg', version: SMFI_PROT_VERSION, actions, protocol, symbolLists: lists }
      : { type: 'optneg', version: SMFI_PROT_VERSION, actions, protocol };
  return { reply, missingActions: (wantedActions & ~actions) >>> 0, missingProtocol: (want.protocol & ~protocol) >>> 0 };
}

/** SMFIP no-reply flag per command; commands missing here always (optneg, bodyEob) or never (macro, abort, quit) get a reply. */
const NO_REPLY_FLAGS: Partial<Record<MilterCommandType, number>> = {
  connect: SMFIP.NR_CONN,
  helo: SMFIP.NR_HELO,
  mail: SMFIP.NR_MAIL,
  rcpt: SMFIP.NR_RCPT,
  data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
  unknown: SMFIP.NR_UNKN,
};

/** Whether the MTA waits for a reply to `cmd`, given the negotiated protocol flags. */
export function commandExpectsReply(cmd: MilterCommand | MilterCommandType, protocol: number): boolean {
  const type = typeof cmd === 'string' ? cmd : cmd.type;
  if (type === 'optneg' || type === 'bodyEob') return true;
  if (type === 'macro' || type === 'abort' || type === 'quit' || type === 'quitNc') return false;
  const flag = NO_REPLY_FLAGS[type];
  return flag === undefined || (protocol & flag) === 0;
}
