// The DNS wire format (RFC 1035 §4), just enough for the raw-query fallback
// (raw-query.ts): encode one question, decode an answer, check that it answers
// that question, and pull the records of the asked type out of the answer
// section, following CNAMEs. Pure: no sockets, no clocks.
//
// Names are sent as given: the UTF-8 bytes between dots are the label, no
// escapes are interpreted (RFC 2181 §11: a label may hold any octet; SPF
// macros put local parts such as `john+tag` into names). Names in answers are
// decoded the same way back (UTF-8, labels joined with '.', nothing escaped),
// so an MX or PTR target from this path can be asked again as it came.

export const QTYPE = { A: 1, NS: 2, CNAME: 5, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41 } as const;
export type WireRrType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'PTR' | 'CNAME' | 'NS';
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const CLASS_IN = 1;
/** The EDNS payload size we advertise, as c-ares does (DNS flag day 2020). */
export const EDNS_PAYLOAD = 1232;

/** A name we cannot send (EBADNAME) or a message we cannot read (EBADRESP), as c-ares names them. */
export class WireError extends Error {
  override readonly name = 'WireError';
  readonly code: 'EBADNAME' | 'EBADRESP';
  constructor(code: 'EBADNAME' | 'EBADRESP', message: string) {
    super(message);
    this.code = code;
  }
}

const bad = (message: string): WireError => new WireError('EBADRESP', message);

/**
 * The wire form of a name: each dot-separated part is one label, as UTF-8
 * bytes. One trailing dot is allowed; '' and '.' are the root. Empty labels,
 * labels over 63 octets and names over 255 octets are EBADNAME.
 */
export function encodeName(name: string): Buffer {
  const plain = name.endsWith('.') ? name.slice(0, -1) : name;
  if (plain === '') return Buffer.from([0]);
  const parts: Buffer[] = [];
  let length = 1;
  for (const label of plain.split('.')) {
    const b = Buffer.from(label, 'utf8');
    if (b.length === 0) throw new WireError('EBADNAME', 'empty label');
    if (b.length > 63) throw new WireError('EBADNAME', `label of ${b.length} octets (at most 63)`);
    length += 1 + b.length;
    parts.push(Buffer.from([b.length]), b);
  }
  if (length > 255) throw new WireError('EBADNAME', `name of ${length} octets (at most 255)`);
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** Labels as text, joined with '.', nothing escaped (see the file header). */
export function nameToString(wire: Buffer): string {
  const labels: string[] = [];
  for (let off = 0; off < wire.length && wire[off] !== 0; off += 1 + wire[off]!) {
    labels.push(wire.toString('utf8', off + 1, off + 1 + wire[off]!));
  }
  return labels.join('.');
}

/** DNS compares names case-insensitively for ASCII letters only (RFC 4343). */
export function sameName(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (lower(a[i]!) !== lower(b[i]!)) return false;
  return true;
}
const lower = (c: number): number => (c >= 0x41 && c <= 0x5a ? c | 0x20 : c);

export interface QueryOptions {
  readonly id: number;
  /** Wire form (encodeName). */
  readonly name: Buffer;
  readonly type: number;
  /** Add an EDNS0 OPT record (default true); c-ares too drops it for servers that answer FORMERR. */
  readonly edns?: boolean;
}

/** A standard recursive query (RD set) with one question and, unless edns is false, an EDNS0 OPT record. */
export function encodeQuery(q: QueryOptions): Buffer {
  const edns = q.edns ?? true;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id & 0xffff, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  if (edns) header.writeUInt16BE(1, 10); // ARCOUNT: the OPT record
  const question = Buffer.alloc(4);
  question.writeUInt16BE(q.type, 0);
  question.writeUInt16BE(CLASS_IN, 2);
  const opt = Buffer.alloc(11); // root name, TYPE=OPT, CLASS=payload size, TTL=0 (ext-rcode, version, flags), RDLEN=0
  opt.writeUInt16BE(QTYPE.OPT, 1);
  opt.writeUInt16BE(EDNS_PAYLOAD, 3);
  return Buffer.concat(edns ? [header, q.name, question, opt] : [header, q.name, question]);
}

/** A message as sent over TCP: a 2-octet length first (RFC 1035 §4.2.2). */
export function tcpFrame(msg: Buffer): Buffer {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(msg.length);
  return Buffer.concat([prefix, msg]);
}

/** The first whole message in bytes read from a TCP stream so far, or undefined while it is still incomplete. */
export function takeTcpFrame(buf: Buffer): { message: Buffer; rest: Buffer } | undefined {
  if (buf.length < 2) return undefined;
  const end = 2 + buf.readUInt16BE(0);
  return buf.length < end ? undefined : { message: buf.subarray(2, end), rest: buf.subarray(end) };
}

export interface MxData {
  exchange: string;
  priority: number;
}
export type RecordData = string | string[] | MxData;

export interface DnsRecord {
  /** Owner name, wire form, uncompressed. */
  readonly name: Buffer;
  readonly type: number;
  readonly class: number;
  readonly ttl: number;
  /** Decoded RDATA for the types we read (A/AAAA/NS/CNAME/PTR: a string; TXT: its strings; MX); undefined for others. */
  readonly data: RecordData | undefined;
  /** For CNAME: the target, wire form (to follow the chain). */
  readonly target?: Buffer;
}

export interface DnsQuestion {
  readonly name: Buffer;
  readonly type: number;
  readonly class: number;
}

export interface DnsMessage {
  readonly id: number;
  /** QR: this is a response. */
  readonly response: boolean;
  readonly opcode: number;
  /** TC: truncated, ask again over TCP. */
  readonly truncated: boolean;
  readonly rcode: number;
  readonly questions: readonly DnsQuestion[];
  readonly answers: readonly DnsRecord[];
}

/**
 * Reads a name at `offset`, following compression pointers (RFC 1035 §4.1.4).
 * Every pointer must point before the previous one's target (or the name's start),
 * so a loop or a forward pointer is EBADRESP rather than a hang.
 */
export function decodeName(msg: Buffer, offset: number): { name: Buffer; next: number } {
  const out: number[] = [];
  let off = offset;
  let limit = offset; // pointers must point strictly below this
  let next = -1; // where the record continues after the name (after the first pointer)
  for (;;) {
    if (off >= msg.length) throw bad(`name at ${offset} runs past the end`);
    const len = msg[off]!;
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= msg.length) throw bad(`pointer at ${off} runs past the end`);
      const target = ((len & 0x3f) << 8) | msg[off + 1]!;
      if (next < 0) next = off + 2;
      if (target >= limit) throw bad(`compression pointer at ${off} to ${target} does not point backwards`);
      limit = target;
      off = target;
      continue;
    }
    if (len & 0xc0) throw bad(`label type 0x${(len & 0xc0).toString(16)} at ${off}`);
    if (len === 0) {
      out.push(0);
      if (out.length > 255) throw bad(`name at ${offset} is over 255 octets`);
      return { name: Buffer.from(out), next: next < 0 ? off + 1 : next };
    }
    if (off + 1 + len > msg.length) throw bad(`label at ${off} runs past the end`);
    for (let i = off; i <= off + len; i++) out.push(msg[i]!);
    if (out.length > 255) throw bad(`name at ${offset} is over 255 octets`);
    off += 1 + len;
  }
}

/** Decodes header, questions and the answer section; authority and additional records are not read. */
export function decodeMessage(msg: Buffer): DnsMessage {
  if (msg.length < 12) throw bad(`message of ${msg.length} octets`);
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  let off = 12;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < qd; i++) {
    const { name, next } = decodeName(msg, off);
    if (next + 4 > msg.length) throw bad('question runs past the end');
    questions.push({ name, type: msg.readUInt16BE(next), class: msg.readUInt16BE(next + 2) });
    off = next + 4;
  }
  const answers: DnsRecord[] = [];
  for (let i = 0; i < an; i++) {
    const { name, next } = decodeName(msg, off);
    if (next + 10 > msg.length) throw bad('record header runs past the end');
    const type = msg.readUInt16BE(next);
    const cls = msg.readUInt16BE(next + 2);
    const ttl = msg.readUInt32BE(next + 4);
    const rdlen = msg.readUInt16BE(next + 8);
    const start = next + 10;
    const end = start + rdlen;
    if (end > msg.length) throw bad('record data runs past the end');
    answers.push({ name, type, class: cls, ttl: ttl > 0x7fffffff ? 0 : ttl, ...decodeRdata(msg, type, start, end) }); // RFC 2181 §8
    off = end;
  }
  return { id, response: (flags & 0x8000) !== 0, opcode: (flags >> 11) & 0xf, truncated: (flags & 0x0200) !== 0, rcode: flags & 0xf, questions, answers };
}

function decodeRdata(msg: Buffer, type: number, start: number, end: number): { data: RecordData | undefined; target?: Buffer } {
  const len = end - start;
  // A name that must fill the rest of the RDATA exactly.
  const nameAt = (at: number): Buffer => {
    const { name, next } = decodeName(msg, at);
    if (next !== end) throw bad(`name in type ${type} RDATA does not end with it`);
    return name;
  };
  switch (type) {
    case QTYPE.A:
      if (len !== 4) throw bad(`A RDATA of ${len} octets`);
      return { data: `${msg[start]}.${msg[start + 1]}.${msg[start + 2]}.${msg[start + 3]}` };
    case QTYPE.AAAA:
      if (len !== 16) throw bad(`AAAA RDATA of ${len} octets`);
      return { data: formatIpv6(msg.subarray(start, end)) };
    case QTYPE.CNAME: {
      const target = nameAt(start);
      return { data: nameToString(target), target };
    }
    case QTYPE.NS:
    case QTYPE.PTR:
      return { data: nameToString(nameAt(start)) };
    case QTYPE.MX:
      if (len < 3) throw bad(`MX RDATA of ${len} octets`);
      return { data: { exchange: nameToString(nameAt(start + 2)), priority: msg.readUInt16BE(start) } };
    case QTYPE.TXT: {
      // <character-string>s, decoded as Latin-1 as node:dns does (every octet maps to one character).
      const strings: string[] = [];
      for (let off = start; off < end; ) {
        const n = msg[off]!;
        if (off + 1 + n > end) throw bad('TXT string runs past its record');
        strings.push(msg.toString('latin1', off + 1, off + 1 + n));
        off += 1 + n;
      }
      return { data: strings };
    }
    default:
      return { data: undefined };
  }
}

/** IPv6 text as libuv's inet_ntop writes it (and so node:dns): lower case, longest zero run of 2+ as '::', IPv4 tail for ::ffff:a.b.c.d and ::a.b.c.d. */
export function formatIpv6(b: Uint8Array): string {
  const words = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let best = { base: -1, len: 0 };
  let cur = { base: -1, len: 0 };
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      cur = cur.base < 0 ? { base: i, len: 1 } : { base: cur.base, len: cur.len + 1 };
      if (cur.len > best.len) best = cur;
    } else {
      cur = { base: -1, len: 0 };
    }
  }
  if (best.len < 2) best = { base: -1, len: 0 };
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (best.base >= 0 && i >= best.base && i < best.base + best.len) {
      if (i === best.base) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && best.base === 0 && (best.len === 6 || (best.len === 5 && words[5] === 0xffff))) {
      out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
      break;
    }
    out += words[i]!.toString(16);
  }
  if (best.base >= 0 && best.base + best.len === 8) out += ':';
  return out;
}

/** Is `msg` the response to this query: same ID, a standard-query response, the one question, same name (any case), type and class IN? */
export function answersQuery(msg: DnsMessage, q: QueryOptions): boolean {
  if (msg.id !== q.id || !msg.response || msg.opcode !== 0 || msg.questions.length !== 1) return false;
  const asked = msg.questions[0]!;
  return asked.type === q.type && asked.class === CLASS_IN && sameName(asked.name, q.name);
}

/** What a response says about the question, in node:dns terms. */
export type Outcome =
  | { readonly ok: true; readonly values: RecordData[]; readonly ttlS: number }
  | { readonly ok: false; readonly code: string };

const RCODE_ERRORS: Readonly<Record<number, string>> = {
  [RCODE.FORMERR]: 'EFORMERR',
  [RCODE.SERVFAIL]: 'ESERVFAIL',
  [RCODE.NXDOMAIN]: 'ENOTFOUND',
  [RCODE.NOTIMP]: 'ENOTIMP',
  [RCODE.REFUSED]: 'EREFUSED',
};

/**
 * The records of the asked type for the asked name, following CNAMEs in the
 * answer section (records owned by other names are ignored); the TTL is the
 * smallest along the chain. No such record (also a dangling or looping chain)
 * is ENODATA; rcodes map as c-ares maps them.
 */
export function extractAnswer(msg: DnsMessage, q: QueryOptions): Outcome {
  if (msg.rcode !== RCODE.NOERROR) return { ok: false, code: RCODE_ERRORS[msg.rcode] ?? 'EBADRESP' };
  const records = msg.answers.filter((r) => r.class === CLASS_IN);
  let name = q.name;
  let ttlS = Infinity;
  // Each hop uses up one CNAME record, so the chain ends within records.length hops, loop or not.
  for (let hop = 0; hop <= records.length; hop++) {
    const own = records.filter((r) => sameName(r.name, name));
    const wanted = own.filter((r) => r.type === q.type && r.data !== undefined);
    if (wanted.length > 0) {
      for (const r of wanted) ttlS = Math.min(ttlS, r.ttl);
      return { ok: true, values: wanted.map((r) => r.data!), ttlS };
    }
    const cname = own.find((r) => r.type === QTYPE.CNAME && r.target !== undefined);
    if (cname === undefined) break;
    ttlS = Math.min(ttlS, cname.ttl);
    name = cname.target!;
  }
  return { ok: false, code: 'ENODATA' };
}
