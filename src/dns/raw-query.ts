// A minimal stub resolver on node:dgram / node:net for the names c-ares
// refuses to ask (EBADNAME for "+", "=", ":", space and most other non
// letter-digit-hyphen characters, although DNS allows any octet in a label,
// RFC 2181 §11). createResolver() uses it only for those names, so it is
// small on purpose: one question, the same servers, the same deadline, the
// same answer shapes and error codes as the c-ares path.
//
// Against off-path spoofing: a random 16-bit ID and a fresh socket (random
// source port, chosen by the kernel) per try; the socket is connected, so
// datagrams from any other address or port never reach us; an answer counts
// only with the same ID and the same question (RFC 5452 §9.1). Anything else
// is ignored and we keep waiting.
//
// Timing: tries go round the servers every `attemptMs` (a quarter of the
// budget with the default 2 tries, as the c-ares path), earlier tries keep
// listening, so a slow answer still counts; SERVFAIL/REFUSED/NOTIMP and
// socket errors move on to the next server at once (as c-ares does). The
// lookup fails with the last such error once every try failed that way, and
// with ETIMEOUT at `timeoutMs` otherwise. A truncated UDP answer (TC) moves
// this lookup to TCP.
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { DnsError, type DnsAnswer, type DnsRrType } from './resolver.ts';
import {
  answersQuery,
  decodeMessage,
  encodeName,
  encodeQuery,
  extractAnswer,
  QTYPE,
  RCODE,
  takeTcpFrame,
  tcpFrame,
  type DnsMessage,
  type QueryOptions,
  type WireRrType,
} from './wire.ts';

export interface RawQueryOptions {
  /** As Resolver.getServers() gives them: `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`, `[2001:db8::53]:5353`. */
  readonly servers: readonly string[];
  /** Deadline for the whole lookup, all tries and TCP included: then ETIMEOUT. */
  readonly timeoutMs: number;
  /** Tries per server (default 2), as ResolverOptions.tries. */
  readonly tries?: number;
  /** Aborting fails the lookup with ECANCELLED and closes its sockets. */
  readonly signal?: AbortSignal;
}

export interface ServerAddress {
  readonly host: string;
  readonly port: number;
}

/** `host`, `host:port`, `v6` or `[v6]:port` (port 53 when none). */
export function parseServerAddress(entry: string): ServerAddress {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const hostPort = /^([^:]+):(\d+)$/.exec(entry);
  const [host, port] = bracket ? [bracket[1]!, bracket[2]] : hostPort ? [hostPort[1]!, hostPort[2]] : [entry, undefined];
  const p = port === undefined ? 53 : Number(port);
  if (!(bracket ? net.isIPv6(host) : net.isIP(host)) || !(p >= 1 && p <= 65535)) throw new Error(`DNS server "${entry}": expected an IP address, IP:port or [IPv6]:port`);
  return { host, port: p };
}

/** Codes that are answers: the lookup ends with them at once. */
const FINAL = new Set(['ENOTFOUND', 'ENODATA']);

/** One question to the servers, answered in createResolver's shapes (A/AAAA/TXT/MX/PTR/CNAME/NS) with the smallest TTL. */
export function rawQuery(name: string, rrtype: DnsRrType, opts: RawQueryOptions): Promise<DnsAnswer> {
  const fail = (code: string, message?: string): DnsError => new DnsError(code, name, rrtype, message === undefined ? undefined : { message: `${rrtype} ${name}: ${message}` });
  const type = rrtype === 'SPF' ? undefined : QTYPE[rrtype as WireRrType];
  if (type === undefined) return Promise.reject(fail('ENOTIMP', 'record type not supported'));
  let qname: Buffer;
  let servers: ServerAddress[];
  try {
    qname = encodeName(name);
  } catch (err) {
    return Promise.reject(fail('EBADNAME', `EBADNAME (${(err as Error).message})`));
  }
  try {
    servers = opts.servers.map(parseServerAddress);
  } catch (err) {
    return Promise.reject(fail('ECONNREFUSED', (err as Error).message));
  }
  if (servers.length === 0) return Promise.reject(fail('ECONNREFUSED', 'no DNS servers'));
  if (opts.signal?.aborted) return Promise.reject(fail('ECANCELLED'));
  const tries = opts.tries ?? 2;
  const attemptMs = Math.max(1, Math.floor(opts.timeoutMs / (2 * tries)));
  const budget = tries * servers.length;

  return new Promise<DnsAnswer>((resolve, reject) => {
    const sockets = new Set<{ destroy(): void }>();
    let started = 0;
    let pending = 0;
    let useTcp = false;
    let edns = true;
    let done = false;
    let tryTimer: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => finish(fail('ETIMEOUT', `ETIMEOUT after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    const onAbort = (): void => finish(fail('ECANCELLED'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    function finish(result: DnsAnswer | DnsError): void {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearTimeout(tryTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (result instanceof DnsError) reject(result);
      else resolve(result);
    }

    function ask(server: ServerAddress): void {
      if (done) return;
      clearTimeout(tryTimer);
      started++;
      pending++;
      const q: QueryOptions = { id: randomInt(0x10000), name: qname, type: type!, edns };
      const tcp = useTcp;
      let settled = false;
      const socket = (tcp ? overTcp : overUdp)(server, encodeQuery(q), q, (result) => {
        if (settled || done) return;
        settled = true;
        pending--;
        socket.destroy();
        sockets.delete(socket);
        onResult(server, q, tcp, result);
      });
      sockets.add(socket);
      // No answer yet: ask the next server too, and keep listening here.
      tryTimer = setTimeout(() => ask(servers[started % servers.length]!), attemptMs);
    }

    function onResult(server: ServerAddress, q: QueryOptions, tcp: boolean, result: DnsMessage | string): void {
      if (typeof result !== 'string') {
        if (result.truncated && !tcp) {
          useTcp = true;
          return ask(server);
        }
        if (result.rcode === RCODE.FORMERR && q.edns === true) {
          edns = false; // an old server that does not know EDNS0
          return ask(server);
        }
        const outcome = extractAnswer(result, q);
        if (outcome.ok) return finish({ value: outcome.values, ttlS: outcome.ttlS });
        if (FINAL.has(outcome.code)) return finish(fail(outcome.code));
        result = outcome.code;
      }
      // A failure from this server (SERVFAIL, REFUSED, ICMP unreachable, ...): the next one, now.
      if (pending > 0) return;
      if (started >= budget) return finish(fail(result));
      ask(servers[started % servers.length]!);
    }

    ask(servers[0]!);
  });
}

type Reply = (result: DnsMessage | string) => void;

/** Sends over a connected UDP socket: only that server's address and port reach us; non-matching datagrams are ignored. */
function overUdp(server: ServerAddress, query: Buffer, q: QueryOptions, reply: Reply): { destroy(): void } {
  const socket = dgram.createSocket(net.isIPv6(server.host) ? 'udp6' : 'udp4');
  let closed = false;
  socket.on('error', () => reply('ECONNREFUSED'));
  socket.on('message', (buf) => {
    let msg: DnsMessage;
    try {
      msg = decodeMessage(buf);
    } catch {
      return; // garbage: keep waiting for the real answer
    }
    if (answersQuery(msg, q)) reply(msg);
  });
  socket.once('connect', () => {
    if (!closed) socket.send(query, (err) => err && reply('ECONNREFUSED'));
  });
  socket.connect(server.port, server.host); // a failure comes as 'error'
  return {
    destroy() {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}

/** One query over TCP (2-octet length prefix, RFC 1035 §4.2.2); an answer that does not match is EBADRESP. */
function overTcp(server: ServerAddress, query: Buffer, q: QueryOptions, reply: Reply): { destroy(): void } {
  const socket = net.connect({ host: server.host, port: server.port });
  socket.write(tcpFrame(query));
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    const frame = takeTcpFrame(buf);
    if (frame === undefined) return;
    let msg: DnsMessage;
    try {
      msg = decodeMessage(frame.message);
    } catch {
      return reply('EBADRESP');
    }
    reply(answersQuery(msg, q) ? msg : 'EBADRESP');
  });
  socket.on('error', () => reply('ECONNREFUSED'));
  socket.on('close', () => reply('ECONNREFUSED')); // closed before a whole answer
  return { destroy: () => socket.destroy() };
}
