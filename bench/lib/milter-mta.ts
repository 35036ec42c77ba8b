// The MTA side of the milter protocol for the benchmark: what Postfix's
// milter8 client does per SMTP session, with the codec's encodeCommand and
// MilterReplyDecoder. One MilterLink is one milter connection (one SMTP
// session: Postfix never reuses them across sessions); PostfixLikeSession
// drives a chain of links the way Postfix drives smtpd_milters: every
// envelope event goes to each milter in order, then each milter in turn gets
// the whole content, including the headers the milters before it added
// (Postfix's cleanup applies a milter's edits before the next one reads the
// message, which is how OpenDMARC sees OpenDKIM's Authentication-Results).
import { connect, type Socket } from 'node:net';
import { encodeCommand, MilterReplyDecoder, type MilterCommandInput, type MilterReply } from '../../src/milter/codec.ts';
import { MILTER_CHUNK_SIZE, POSTFIX_OPTNEG, SMFIP } from '../../src/milter/constants.ts';
import type { MilterHop } from './milter-types.ts';

/** A header as the MTA holds it: name and everything after the colon (leading space included, folds as bare LF). */
export interface MtaHeader {
  readonly name: string;
  readonly value: Buffer;
}

export interface ParsedMessage {
  readonly headers: readonly MtaHeader[];
  /** Body chunks of at most MILTER_CHUNK_SIZE bytes, CRLF. */
  readonly chunks: readonly Buffer[];
  readonly size: number;
}

/** Splits a CRLF message into header fields (as Postfix sends them) and 64 KB body chunks. */
export function parseMessage(raw: Buffer): ParsedMessage {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.length;
  const head = raw.subarray(0, end).toString('latin1');
  const headers: MtaHeader[] = [];
  let cur: { name: string; lines: string[] } | undefined;
  const flush = () => {
    if (cur) headers.push({ name: cur.name, value: Buffer.from(cur.lines.join('\n'), 'latin1') });
  };
  for (const line of head.split('\r\n')) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && cur) {
      cur.lines.push(line);
      continue;
    }
    flush();
    const c = line.indexOf(':');
    cur = { name: line.slice(0, c), lines: [line.slice(c + 1)] };
  }
  flush();
  const body = raw.subarray(Math.min(raw.length, end + 4));
  const chunks: Buffer[] = [];
  for (let at = 0; at < body.length; at += MILTER_CHUNK_SIZE) chunks.push(body.subarray(at, at + MILTER_CHUNK_SIZE));
  return { headers, chunks, size: raw.length };
}

/** Header modifications and the final answer of one milter at end of message. */
export interface EomOutcome {
  /** continue, accept, reject, tempfail, discard, replyCode:<code>, or `early:<type>` when it answered before EOM. */
  readonly final: string;
  /** Headers it added or inserted (values normalised to "after the colon", leading space included). */
  readonly added: ReadonlyArray<{ readonly name: string; readonly value: string; readonly index?: number }>;
  /** Headers it changed or deleted, by name. */
  readonly changed: readonly string[];
  readonly quarantined: boolean;
}

const SKIP_FLAG: Partial<Record<MilterCommandInput['type'], number>> = {
  connect: SMFIP.NOCONNECT, helo: SMFIP.NOHELO, mail: SMFIP.NOMAIL, rcpt: SMFIP.NORCPT, data: SMFIP.NODATA,
  header: SMFIP.NOHDRS, eoh: SMFIP.NOEOH, body: SMFIP.NOBODY,
};
const NO_REPLY_FLAG: Partial<Record<MilterCommandInput['type'], number>> = {
  connect: SMFIP.NR_CONN, helo: SMFIP.NR_HELO, mail: SMFIP.NR_MAIL, rcpt: SMFIP.NR_RCPT, data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR, eoh: SMFIP.NR_EOH, body: SMFIP.NR_BODY,
};
const FINAL = new Set(['continue', 'accept', 'reject', 'tempfail', 'discard', 'replyCode', 'shutdown', 'connFail', 'skip']);

/** One milter connection, MTA side. */
export class MilterLink {
  readonly hop: MilterHop;
  readonly #sock: Socket;
  readonly #decoder = new MilterReplyDecoder();
  readonly #queue: MilterReply[] = [];
  #waiter: ((r: MilterReply | Error) => void) | undefined;
  #error: Error | undefined;
  protocol = 0;
  actions = 0;
  /** Set when the milter answered accept/reject/... before end of message: skip it for the rest of the message. */
  doneWithMessage = false;

  private constructor(hop: MilterHop, sock: Socket) {
    this.hop = hop;
    this.#sock = sock;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => {
      let replies: MilterReply[];
      try {
        // The decoder's Buffers may share the chunk: we copy what we keep (header values) below.
        replies = this.#decoder.push(chunk);
      } catch (err) {
        this.#fail(new Error(`${hop.name}: bad reply: ${(err as Error).message}`));
        return;
      }
      for (const r of replies) this.#deliver(r);
    });
    sock.on('error', (err) => this.#fail(new Error(`${hop.name}: ${err.message}`)));
    sock.on('close', () => this.#fail(new Error(`${hop.name}: connection closed by the milter`)));
  }

  static open(hop: MilterHop): Promise<MilterLink> {
    return new Promise((resolve, reject) => {
      const sock = connect(hop.endpoint);
      const t = setTimeout(() => { sock.destroy(); reject(new Error(`${hop.name}: no connection within 30 s`)); }, 30_000);
      sock.once('error', (err) => { clearTimeout(t); reject(new Error(`${hop.name}: ${err.message}`)); });
      sock.once('connect', () => {
        clearTimeout(t);
        sock.removeAllListeners('error');
        const link = new MilterLink(hop, sock);
        link.#negotiate().then(() => resolve(link), reject);
      });
    });
  }

  async #negotiate(): Promise<void> {
    this.#sock.write(encodeCommand({ type: 'optneg', ...POSTFIX_OPTNEG }));
    const r = await this.#next();
    if (r.type !== 'optneg') throw new Error(`${this.hop.name}: answered OPTNEG with ${r.type}`);
    this.protocol = r.protocol;
    this.actions = r.actions;
  }

  #deliver(r: MilterReply): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w(r);
    } else {
      this.#queue.push(r);
    }
  }

  #fail(err: Error): void {
    this.#error ??= err;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w(err);
    }
  }

  #next(): Promise<MilterReply> {
    const r = this.#queue.shift();
    if (r) return Promise.resolve(r);
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => this.#fail(new Error(`${this.hop.name}: no reply within 60 s`)), 60_000);
      this.#waiter = (x) => {
        clearTimeout(t);
        if (x instanceof Error) reject(x);
        else resolve(x);
      };
    });
  }

  get leadingSpace(): boolean {
    return (this.protocol & SMFIP.HDR_LEADSPC) !== 0;
  }

  /** Sends the stage's macros and the command, unless the milter opted out; waits for the reply the protocol requires. */
  async step(cmd: MilterCommandInput, macroLetter?: string, macros?: ReadonlyMap<string, string>): Promise<void> {
    if (this.doneWithMessage) return;
    const skip = SKIP_FLAG[cmd.type];
    if (macroLetter && macros) this.#sock.write(encodeCommand({ type: 'macro', forCommand: macroLetter, macros }));
    if (skip !== undefined && (this.protocol & skip) !== 0) return;
    this.#sock.write(encodeCommand(cmd));
    const nr = NO_REPLY_FLAG[cmd.type];
    if (nr === undefined || (this.protocol & nr) !== 0) return;
    for (;;) {
      const r = await this.#next();
      if (r.type === 'progress') continue;
      if (r.type === 'continue') return;
      if (r.type === 'skip' && cmd.type === 'body') {
        this.skipBody = true;
        return;
      }
      this.doneWithMessage = true;
      this.early = r.type;
      return;
    }
  }

  skipBody = false;
  early: string | undefined;

  /** Headers, EOH, body chunks, EOM; collects the modifications. */
  async content(headers: readonly MtaHeader[], chunks: readonly Buffer[], eohMacros: ReadonlyMap<string, string>): Promise<EomOutcome> {
    const done = (): EomOutcome => ({ final: `early:${this.early ?? '?'}`, added: [], changed: [], quarantined: false });
    if (this.doneWithMessage) return done();
    for (const h of headers) {
      // Without HDR_LEADSPC Postfix drops the one space after the colon.
      const value = !this.leadingSpace && h.value[0] === 0x20 ? h.value.subarray(1) : h.value;
      await this.step({ type: 'header', name: h.name, value });
      if (this.doneWithMessage) return done();
    }
    await this.step({ type: 'eoh' }, 'N', eohMacros);
    if (this.doneWithMessage) return done();
    for (const chunk of chunks) {
      if (this.skipBody) break;
      await this.step({ type: 'body', chunk });
      if (this.doneWithMessage) return done();
    }
    this.#sock.write(encodeCommand({ type: 'macro', forCommand: 'E', macros: eohMacros }));
    this.#sock.write(encodeCommand({ type: 'bodyEob' }));
    const added: Array<{ name: string; value: string; index?: number }> = [];
    const changed: string[] = [];
    let quarantined = false;
    for (;;) {
      const r = await this.#next();
      switch (r.type) {
        case 'progress':
          continue;
        case 'addHeader':
        case 'insHeader': {
          let value = r.value.toString('latin1');
          if (!this.leadingSpace) value = ` ${value}`;
          added.push(r.type === 'insHeader' ? { name: r.name, value, index: r.index } : { name: r.name, value });
          continue;
        }
        case 'chgHeader':
          changed.push(r.name);
          continue;
        case 'quarantine':
          quarantined = true;
          continue;
        default:
          if (!FINAL.has(r.type)) continue; // other modifications (recipients, body) do not occur here
          return { final: r.type === 'replyCode' ? `replyCode:${r.reply.slice(0, 3)}` : r.type, added, changed, quarantined };
      }
    }
  }

  abort(): void {
    this.doneWithMessage = false;
    this.skipBody = false;
    this.early = undefined;
    this.#sock.write(encodeCommand({ type: 'abort' }));
  }

  quit(): void {
    this.#sock.end(encodeCommand({ type: 'quit' }));
  }

  destroy(): void {
    this.#sock.destroy();
  }
}

export interface SessionClient {
  readonly ip: string;
  readonly port: number;
  readonly helo: string;
  /** {daemon_name}: smtpd's milter_macro_daemon_name (ORIGINATING on a submission service). */
  readonly daemonName: string;
}

export interface MessageEnvelope {
  readonly sender: string;
  readonly rcpt: string;
  readonly queueId: string;
  readonly parsed: ParsedMessage;
}

/** A chain of milters for one SMTP session, driven like Postfix's smtpd + cleanup. */
export class PostfixLikeSession {
  readonly links: readonly MilterLink[];
  #messages = 0;

  private constructor(links: MilterLink[]) {
    this.links = links;
  }

  static async open(chain: readonly MilterHop[], client: SessionClient): Promise<PostfixLikeSession> {
    const links: MilterLink[] = [];
    try {
      for (const hop of chain) links.push(await MilterLink.open(hop));
    } catch (err) {
      for (const l of links) l.destroy();
      throw err;
    }
    const s = new PostfixLikeSession(links);
    // milter_connect_macros = j {daemon_name} {daemon_addr} v _ (Postfix defaults; client_* as Postfix adds them)
    const c = new Map([
      ['j', 'mx.bench.test'], ['{daemon_name}', client.daemonName], ['{daemon_addr}', '127.0.0.1'], ['v', 'Postfix 3.7.11'],
      ['_', `[${client.ip}] [${client.ip}]`], ['{client_addr}', client.ip], ['{client_port}', String(client.port)], ['{client_name}', 'unknown'],
    ]);
    for (const l of links) {
      await l.step({ type: 'connect', hostname: `[${client.ip}]`, family: '4', port: client.port, address: client.ip }, 'C', c);
      await l.step({ type: 'helo', name: client.helo }, 'H', new Map());
    }
    return s;
  }

  /** One message through every milter; resolves with each milter's outcome. */
  async message(m: MessageEnvelope): Promise<EomOutcome[]> {
    if (this.#messages++ > 0) for (const l of this.links) l.abort();
    const mailMacros = new Map([['i', m.queueId], ['{mail_addr}', m.sender], ['{mail_host}', m.sender.split('@')[1] ?? ''], ['{mail_mailer}', 'smtp']]);
    const rcptMacros = new Map([['{rcpt_addr}', m.rcpt], ['{rcpt_host}', m.rcpt.split('@')[1] ?? ''], ['{rcpt_mailer}', 'lmtp']]);
    const qid = new Map([['i', m.queueId]]);
    for (const l of this.links) {
      await l.step({ type: 'mail', args: [`<${m.sender}>`, `SIZE=${m.parsed.size}`] }, 'M', mailMacros);
      await l.step({ type: 'rcpt', args: [`<${m.rcpt}>`] }, 'R', rcptMacros);
      await l.step({ type: 'data' }, 'T', qid);
    }
    const out: EomOutcome[] = [];
    let headers = m.parsed.headers;
    for (const l of this.links) {
      const o = await l.content(headers, m.parsed.chunks, qid);
      out.push(o);
      if (o.added.length) {
        // The next milter reads the message with these headers (inserted ones at the top, as Postfix places index 0/1).
        const top: MtaHeader[] = [];
        const bottom: MtaHeader[] = [];
        for (const a of o.added) (a.index !== undefined ? top : bottom).push({ name: a.name, value: Buffer.from(a.value, 'latin1') });
        headers = [...top, ...headers, ...bottom];
      }
    }
    return out;
  }

  quit(): void {
    for (const l of this.links) l.quit();
  }

  destroy(): void {
    for (const l of this.links) l.destroy();
  }
}
