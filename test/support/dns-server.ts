// A small authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP on the
// same port, as resolvers expect). Zone data is a plain object; per-name knobs
// make a name time out, answer SERVFAIL/REFUSED, answer late, or force the TC
// bit so the resolver retries over TCP. Every received query is logged, so
// tests can assert how many upstream queries a cache let through.
//
// Keep bursts under ~250 concurrent UDP queries: the server shares the test's
// event loop, and while the test sends, the kernel's default UDP receive buffer
// (net.core.rmem_default, 208 KiB) holds only 256 small datagrams; the rest are
// dropped (RcvbufErrors) and the resolver times out.
//
// Written on node:dgram/node:net rather than dns2 so that the behaviours the
// resolver layer must survive (no answer at all, truncation, late answers to a
// closed socket) are fully under the test's control.
import dgram from 'node:dgram';
import net from 'node:net';

export const RR_TYPES = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41, SPF: 99 } as const;
/** The record types a zone may hold. */
export type RRTypeName = 'A' | 'AAAA' | 'MX' | 'TXT' | 'SPF' | 'PTR' | 'CNAME' | 'NS';
const DATA_TYPES: readonly RRTypeName[] = ['A', 'AAAA', 'MX', 'TXT', 'SPF', 'PTR', 'CNAME', 'NS'];
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** A record with its own TTL; anything else is a bare value that takes the name's TTL. */
export interface TtlRecord<T> {
  readonly data: T;
  readonly ttl: number;
}
type Rec<T> = T | TtlRecord<T>;
/** TXT/SPF: one string (split into 255-byte chunks on the wire if longer) or explicit chunks. */
export type TxtData = string | readonly string[];

/** Applies to every type (`true`) or to the listed types only. */
export type Behaviour = true | readonly RRTypeName[];

export interface ZoneName {
  readonly A?: readonly Rec<string>[];
  readonly AAAA?: readonly Rec<string>[];
  /** `[preference, exchange]` */
  readonly MX?: readonly Rec<readonly [number, string]>[];
  readonly TXT?: readonly Rec<TxtData>[];
  readonly SPF?: readonly Rec<TxtData>[];
  readonly PTR?: readonly Rec<string>[];
  readonly CNAME?: string | readonly Rec<string>[];
  readonly NS?: readonly Rec<string>[];
  /** Default TTL for this name's records (seconds), overall or per type. */
  readonly ttl?: number | Partial<Record<RRTypeName, number>>;
  /** Never answer (the query is still logged). */
  readonly TIMEOUT?: Behaviour;
  readonly SERVFAIL?: Behaviour;
  readonly REFUSED?: Behaviour;
  /** Answer this many ms late (UDP and TCP). */
  readonly delayMs?: number;
  /** Always answer UDP queries with TC=1 and no records, forcing a TCP retry. */
  readonly truncate?: boolean;
}
export type Zones = Readonly<Record<string, ZoneName>>;

export type QueryOutcome = 'answer' | 'nodata' | 'nxdomain' | 'timeout' | 'servfail' | 'refused' | 'truncated' | 'formerr';
export interface LoggedQuery {
  /** As received (case preserved, no trailing dot). */
  readonly name: string;
  /** `A`, `TXT`, ... or `TYPE<n>` for types this server does not know. */
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
  readonly outcome: QueryOutcome;
  /** performance.now() when the query arrived. */
  readonly at: number;
}

export interface DnsServerOptions {
  /** TTL of records that set none (default 300 s). */
  readonly defaultTtl?: number;
  /** SOA minimum in negative answers (default 60 s). */
  readonly negativeTtl?: number;
  /**
   * Largest UDP answer. Default: the EDNS payload size the query advertises,
   * or 512 without EDNS (RFC 1035 §4.2.1); larger answers get TC=1.
   */
  readonly udpPayloadLimit?: number;
}

export interface TestDnsServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `127.0.0.1:<port>`, the form `dns.servers` and Resolver.setServers take. */
  readonly address: string;
  /** Every query received so far, oldest first. */
  readonly queries: readonly LoggedQuery[];
  /** Zone data the server could not encode (it answered SERVFAIL instead); empty when all is well. */
  readonly problems: readonly string[];
  /** Queries for `name` (case-insensitive), optionally of one type. */
  count(name?: string, type?: string): number;
  clearLog(): void;
  /** Replaces the zone data; queries already waiting on a delay still see the old data. */
  setZones(zones: Zones): void;
  /** Closes both sockets and drops pending (delayed) answers. Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Question {
  readonly id: number;
  readonly flags: number;
  readonly nameWire: Buffer;
  readonly name: string;
  readonly qtype: number;
  readonly qclass: number;
  /** EDNS payload size from an OPT record, if the query had one. */
  readonly edns?: number;
}

interface Answer {
  rcode: number;
  outcome: QueryOutcome;
  records: Buffer[];
  authority: Buffer[];
}

const norm = (name: string): string => name.toLowerCase().replace(/\.$/, '');
const typeName = (qtype: number): string =>
  (Object.keys(RR_TYPES) as Array<keyof typeof RR_TYPES>).find((k) => RR_TYPES[k] === qtype) ?? `TYPE${qtype}`;

function applies(b: Behaviour | undefined, type: string): boolean {
  return b === true || (Array.isArray(b) && b.includes(type as RRTypeName));
}

// ---------------------------------------------------------------------------
// Wire format (RFC 1035 §4). Names are written uncompressed.

/** Parses the header and the single question; undefined when it is not a query we can answer at all. */
function parseQuery(msg: Buffer): Question | 'formerr' | undefined {
  if (msg.length < 12) return undefined;
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000) return undefined; // a response, not a query
  const qd = msg.readUInt16BE(4);
  const ar = msg.readUInt16BE(10);
  if (qd !== 1) return 'formerr';
  let off = 12;
  const labels: string[] = [];
  for (;;) {
    if (off >= msg.length) return 'formerr';
    const len = msg[off]!;
    if (len === 0) {
      off++;
      break;
    }
    if (len > 63 || off + 1 + len > msg.length) return 'formerr'; // no compression in a query's only name
    labels.push(msg.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  if (off + 4 > msg.length) return 'formerr';
  const nameWire = msg.subarray(12, off);
  const qtype = msg.readUInt16BE(off);
  const qclass = msg.readUInt16BE(off + 2);
  off += 4;
  let edns: number | undefined;
  // Additional section: look for OPT (root name, type 41; the class is the payload size).
  for (let i = 0; i < ar && off + 11 <= msg.length; i++) {
    if (msg[off] !== 0) break; // OPT always has the root name; anything else we do not parse
    const type = msg.readUInt16BE(off + 1);
    const cls = msg.readUInt16BE(off + 3);
    const rdlen = msg.readUInt16BE(off + 9);
    if (type === RR_TYPES.OPT) edns = Math.max(512, cls);
    off += 11 + rdlen;
  }
  return { id, flags, nameWire, name: labels.join('.'), qtype, qclass, ...(edns !== undefined ? { edns } : {}) };
}

function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of norm(name).split('.')) {
    if (label === '') continue;
    const b = Buffer.from(label, 'latin1');
    if (b.length > 63) throw new Error(`test DNS server: label too long in ${name}`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** TXT strings go out as Latin-1 when they fit (Node decodes TXT as Latin-1, so they round-trip), else UTF-8. */
function textBytes(s: string): Buffer {
  return /^[\x00-\xff]*$/.test(s) ? Buffer.from(s, 'latin1') : Buffer.from(s, 'utf8');
}

function txtRdata(data: TxtData): Buffer {
  const chunks: Buffer[] = [];
  for (const s of typeof data === 'string' ? [data] : data) {
    const b = textBytes(s);
    for (let i = 0; i < b.length || (i === 0 && b.length === 0); i += 255) {
      const part = b.subarray(i, i + 255);
      chunks.push(Buffer.from([part.length]), part);
    }
  }
  // An empty list still needs one <character-string> to be a valid TXT RR.
  return chunks.length ? Buffer.concat(chunks) : Buffer.from([0]);
}

function ipv4Rdata(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  throw new Error(`test DNS server: bad A record ${ip}`);
}

function ipv6Rdata(ip: string): Buffer {
  if (!net.isIPv6(ip)) throw new Error(`test DNS server: bad AAAA record ${ip}`);
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const o = v4[1]!.split('.').map(Number);
    s = s.slice(0, -v4[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function rr(owner: Buffer, type: number, ttl: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(1, 2); // IN
  head.writeUInt32BE(ttl >>> 0, 4);
  head.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([owner, head, rdata]);
}

function encodeResponse(q: Question, rcode: number, answers: readonly Buffer[], authority: readonly Buffer[], tc: boolean): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  // QR, opcode and RD copied, AA set, RA clear (we are authoritative, not recursive).
  const flags = 0x8000 | (q.flags & 0x7900) | 0x0400 | (tc ? 0x0200 : 0) | (rcode & 0xf);
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(answers.length, 6);
  header.writeUInt16BE(authority.length, 8);
  const opt = q.edns !== undefined ? [optRecord()] : [];
  header.writeUInt16BE(opt.length, 10);
  const question = Buffer.alloc(4);
  question.writeUInt16BE(q.qtype, 0);
  question.writeUInt16BE(q.qclass, 2);
  return Buffer.concat([header, q.nameWire, question, ...answers, ...authority, ...opt]);
}

function optRecord(): Buffer {
  const b = Buffer.alloc(11);
  b[0] = 0;
  b.writeUInt16BE(RR_TYPES.OPT, 1);
  b.writeUInt16BE(1232, 3);
  return b;
}

// ---------------------------------------------------------------------------

export async function startDnsServer(initial: Zones = {}, opts: DnsServerOptions = {}): Promise<TestDnsServer> {
  const defaultTtl = opts.defaultTtl ?? 300;
  const negativeTtl = opts.negativeTtl ?? 60;
  let zones = new Map<string, ZoneName>();
  let parents = new Set<string>();
  const setZones = (z: Zones): void => {
    zones = new Map(Object.entries(z).map(([k, v]) => [norm(k), v]));
    // Empty non-terminals (a.b.c exists, so b.c exists without data): NODATA, not NXDOMAIN.
    parents = new Set();
    for (const name of zones.keys()) {
      const labels = name.split('.');
      for (let i = 1; i < labels.length; i++) parents.add(labels.slice(i).join('.'));
    }
  };
  setZones(initial);

  const log: LoggedQuery[] = [];
  const problems: string[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const tcpSockets = new Set<net.Socket>();
  let stopped = false;

  const ttlOf = (entry: ZoneName, type: RRTypeName): number =>
    typeof entry.ttl === 'number' ? entry.ttl : (entry.ttl?.[type] ?? defaultTtl);

  function recordsOf(entry: ZoneName, type: RRTypeName, owner: Buffer): Buffer[] {
    const raw = type === 'CNAME' && typeof entry.CNAME === 'string' ? [entry.CNAME] : (entry[type] as readonly unknown[] | undefined);
    if (!raw) return [];
    const out: Buffer[] = [];
    for (const item of raw) {
      const isTtl = typeof item === 'object' && item !== null && !Array.isArray(item) && 'data' in item;
      const data = isTtl ? (item as TtlRecord<unknown>).data : item;
      const ttl = isTtl ? (item as TtlRecord<unknown>).ttl : ttlOf(entry, type);
      let rdata: Buffer;
      switch (type) {
        case 'A':
          rdata = ipv4Rdata(data as string);
          break;
        case 'AAAA':
          rdata = ipv6Rdata(data as string);
          break;
        case 'MX': {
          const [pref, host] = data as readonly [number, string];
          const p = Buffer.alloc(2);
          p.writeUInt16BE(pref);
          rdata = Buffer.concat([p, encodeName(host)]);
          break;
        }
        case 'TXT':
        case 'SPF':
          rdata = txtRdata(data as TxtData);
          break;
        default: // PTR, CNAME, NS: one domain name
          rdata = encodeName(data as string);
      }
      out.push(rr(owner, RR_TYPES[type], ttl, rdata));
    }
    return out;
  }

  function soa(qname: string): Buffer {
    const labels = norm(qname).split('.');
    const apex = labels.slice(-2).join('.');
    const fixed = Buffer.alloc(20);
    fixed.writeUInt32BE(1, 0); // serial
    fixed.writeUInt32BE(3600, 4);
    fixed.writeUInt32BE(600, 8);
    fixed.writeUInt32BE(86400, 12);
    fixed.writeUInt32BE(negativeTtl, 16); // minimum = negative TTL (RFC 2308 §5)
    return rr(encodeName(apex), RR_TYPES.SOA, negativeTtl, Buffer.concat([encodeName('ns.test'), encodeName('hostmaster.test'), fixed]));
  }

  /** Decides the answer; 'timeout' means never answer. */
  function resolve(q: Question): Answer | 'timeout' {
    const type = typeName(q.qtype);
    const answer: Answer = { rcode: RCODE.NOERROR, outcome: 'answer', records: [], authority: [] };
    let name = q.name;
    let owner = q.nameWire;
    const seen = new Set<string>();
    // Follow CNAMEs inside our data, as an authoritative server does for in-zone targets.
    for (let hop = 0; hop < 16; hop++) {
      const key = norm(name);
      const entry = zones.get(key);
      if (entry && applies(entry.TIMEOUT, type)) return 'timeout';
      if (entry && applies(entry.SERVFAIL, type)) return { rcode: RCODE.SERVFAIL, outcome: 'servfail', records: [], authority: [] };
      if (entry && applies(entry.REFUSED, type)) return { rcode: RCODE.REFUSED, outcome: 'refused', records: [], authority: [] };
      if (!entry) {
        if (parents.has(key)) break; // empty non-terminal: NODATA
        answer.rcode = RCODE.NXDOMAIN;
        answer.outcome = 'nxdomain';
        break;
      }
      if (type !== 'CNAME' && entry.CNAME !== undefined) {
        const cname = recordsOf(entry, 'CNAME', owner);
        answer.records.push(...cname);
        seen.add(key);
        const target = typeof entry.CNAME === 'string' ? entry.CNAME : (entry.CNAME as readonly Rec<string>[])[0];
        const t = typeof target === 'string' ? target : (target as TtlRecord<string> | undefined)?.data;
        if (t === undefined || seen.has(norm(t))) break; // a loop: answer with the chain so far
        name = t;
        owner = encodeName(t);
        continue;
      }
      if ((DATA_TYPES as readonly string[]).includes(type)) answer.records.push(...recordsOf(entry, type as RRTypeName, owner));
      break;
    }
    if (answer.rcode === RCODE.NOERROR && answer.records.length === 0) answer.outcome = 'nodata';
    if (answer.outcome !== 'answer') answer.authority.push(soa(name));
    return answer;
  }

  function handle(msg: Buffer, transport: 'udp' | 'tcp', reply: (b: Buffer) => void): void {
    const q = parseQuery(msg);
    if (q === undefined) return;
    const at = performance.now();
    if (q === 'formerr') {
      const r = Buffer.from(msg.subarray(0, 12));
      r.writeUInt16BE(0x8000 | RCODE.FORMERR, 2);
      r.writeUInt32BE(0, 4);
      r.writeUInt32BE(0, 8);
      log.push({ name: '', type: '', transport, outcome: 'formerr', at });
      reply(r);
      return;
    }
    const entry = zones.get(norm(q.name));
    const type = typeName(q.qtype);
    let result: Answer | 'timeout';
    try {
      result = resolve(q);
    } catch (err) {
      // Zone data we cannot encode: answer SERVFAIL and keep the reason for the test to see.
      problems.push(`${type} ${q.name}: ${(err as Error).message}`);
      result = { rcode: RCODE.SERVFAIL, outcome: 'servfail', records: [], authority: [] };
    }
    if (result === 'timeout') {
      log.push({ name: q.name, type, transport, outcome: 'timeout', at });
      return;
    }
    let bytes = encodeResponse(q, result.rcode, result.records, result.authority, false);
    let outcome = result.outcome;
    const limit = Math.min(opts.udpPayloadLimit ?? Infinity, q.edns ?? 512);
    if (transport === 'udp' && (entry?.truncate === true || bytes.length > limit)) {
      bytes = encodeResponse(q, result.rcode, [], [], true);
      outcome = 'truncated';
    }
    log.push({ name: q.name, type, transport, outcome, at });
    const delay = entry?.delayMs ?? 0;
    if (delay <= 0) {
      reply(bytes);
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!stopped) reply(bytes); // a late answer after stop() would throw ERR_SOCKET_DGRAM_NOT_RUNNING
    }, delay);
    timers.add(timer);
  }

  function onUdp(udp: dgram.Socket): void {
    udp.on('message', (msg, rinfo) => {
      handle(msg, 'udp', (b) => {
        if (!stopped) udp.send(b, rinfo.port, rinfo.address, () => {});
      });
    });
    udp.on('error', () => {}); // e.g. ICMP port unreachable from a client that gave up
  }

  function onTcp(socket: net.Socket): void {
    tcpSockets.add(socket);
    socket.on('close', () => tcpSockets.delete(socket));
    socket.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        handle(msg, 'tcp', (b) => {
          if (stopped || socket.destroyed) return;
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(b.length);
          socket.write(Buffer.concat([prefix, b]));
        });
      }
    });
  }

  // UDP picks a free port; TCP must get the same one (resolvers use one port for both), so retry on collisions.
  let udp: dgram.Socket | undefined;
  let tcp: net.Server | undefined;
  for (let attempt = 0; udp === undefined; attempt++) {
    const u = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      u.once('error', reject);
      u.bind({ address: '127.0.0.1', port: 0, exclusive: true }, () => {
        u.off('error', reject);
        resolve();
      });
    });
    const t = net.createServer(onTcp);
    const ok = await new Promise<boolean>((resolve) => {
      t.once('error', () => resolve(false));
      t.listen({ host: '127.0.0.1', port: u.address().port, exclusive: true }, () => resolve(true));
    });
    if (ok) {
      udp = u;
      tcp = t;
      break;
    }
    await new Promise<void>((resolve) => u.close(() => resolve()));
    if (attempt >= 20) throw new Error('test DNS server: no port free for both UDP and TCP');
  }
  onUdp(udp);
  tcp!.on('error', () => {});
  const port = udp.address().port;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const s of tcpSockets) s.destroy();
    await Promise.all([
      new Promise<void>((resolve) => udp.close(() => resolve())),
      new Promise<void>((resolve) => tcp!.close(() => resolve())),
    ]);
  };

  return {
    host: '127.0.0.1',
    port,
    address: `127.0.0.1:${port}`,
    get queries() {
      return log;
    },
    problems,
    count(name?: string, type?: string): number {
      return log.filter((q) => (name === undefined || norm(q.name) === norm(name)) && (type === undefined || q.type === type)).length;
    },
    clearLog() {
      log.length = 0;
    },
    setZones,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

// ---------------------------------------------------------------------------
// The RFC 7208 suite's zonedata (rfc7208-tests.yml), converted with the
// semantics of pyspf's driver (test/testspf.py), which the suite is written for:
// - names are case-insensitive;
// - an SPF-type record is also served as TXT when the name has no TXT entry at
//   all (`TXT: NONE` counts as one: it only suppresses that duplication);
// - a bare `TIMEOUT` item makes every type not seen *before it* in the list time
//   out; `TYPE: TIMEOUT` makes that type time out;
// - names not in the data are NXDOMAIN (the driver's `error.` prefix rule is
//   not used by rfc7208-tests.yml).

type SuiteItem = string | Readonly<Record<string, unknown>>;

export function zonesFromRfc7208(zonedata: Readonly<Record<string, readonly SuiteItem[]>>): Zones {
  const out: Record<string, ZoneName> = {};
  for (const [rawName, items] of Object.entries(zonedata)) {
    // pyspf's getrdata: expand to (type, value) pairs, dropping NONE, appending SPF→TXT copies.
    const pairs: Array<[string, unknown]> = [];
    const generated: Array<[string, unknown]> = [];
    let generate = true;
    for (const item of items ?? []) {
      if (typeof item === 'string') {
        pairs.push([item, undefined]); // 'TIMEOUT'
        continue;
      }
      for (const [t, v] of Object.entries(item)) {
        if (t === 'TXT') generate = false;
        else if (t === 'SPF' && generate) generated.push(['TXT', v]);
        if (v !== 'NONE') pairs.push([t, v]);
      }
    }
    if (generate) pairs.push(...generated);

    const entry: Record<string, unknown> = {};
    const timeouts: RRTypeName[] = [];
    for (const type of DATA_TYPES) {
      // pyspf's DNSLookup for this type.
      let seenType = false;
      let timedOut = false;
      const values: unknown[] = [];
      for (const [t, v] of pairs) {
        if (t === 'TIMEOUT' && v === undefined) {
          timedOut = !seenType;
          break;
        }
        if (t === type) seenType = true;
        if (v === 'TIMEOUT') {
          if (t === type) {
            timedOut = true;
            break;
          }
          continue;
        }
        if (t === type) values.push(v);
      }
      if (timedOut) {
        timeouts.push(type);
        continue;
      }
      if (values.length === 0) continue;
      entry[type] = values.map((v) => {
        if (type === 'MX') {
          const [pref, host] = v as [number, string];
          return [Number(pref), String(host)] as const;
        }
        if (type === 'TXT' || type === 'SPF') return Array.isArray(v) ? v.map(String) : String(v);
        return String(v);
      });
    }
    if (timeouts.length === DATA_TYPES.length) entry.TIMEOUT = true;
    else if (timeouts.length) entry.TIMEOUT = timeouts;
    const name = norm(rawName.split('.').filter(Boolean).join('.'));
    out[name] = entry as ZoneName;
  }
  return out;
}
