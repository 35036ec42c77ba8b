// Minimal IMAP, POP3 and LMTP clients for tests (node:net, no TLS), enough to
// log in, read a message, check quota and deliver mail to a test Dovecot.
//
//   imapLogin(port, user, pw)           LOGIN + LOGOUT, { ok, reply }
//   openImap(port)                      session: login, select, fetchBody,
//                                       getQuotaRoot, command, logout
//   pop3Login(port, user, pw)           USER/PASS (+ STAT) + QUIT
//   lmtpDeliver(port, from, rcpts, data) LHLO/MAIL/RCPT/DATA, per-recipient replies
//
// `port` may also be a UNIX socket path (e.g. DovecotInstance.lmtpSocket).
import net from "node:net";

const DEFAULT_TIMEOUT_MS = 15_000;

/** A line/byte reader over one socket; one outstanding read at a time. */
class Conn {
  private buf = Buffer.alloc(0);
  private ended: Error | undefined;
  private wake: (() => void) | undefined;
  readonly socket: net.Socket;
  readonly timeoutMs: number;

  private constructor(socket: net.Socket, timeoutMs: number) {
    this.socket = socket;
    this.timeoutMs = timeoutMs;
    socket.on("data", (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.wake?.();
    });
    const end = (err?: Error): void => {
      this.ended ??= err ?? new Error("connection closed by server");
      this.wake?.();
    };
    socket.on("end", () => end());
    socket.on("close", () => end());
    socket.on("error", (err) => end(err));
  }

  static open(target: number | string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = typeof target === "number" ? net.connect({ host: "127.0.0.1", port: target }) : net.connect({ path: target });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${target}: timeout after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new Conn(socket, timeoutMs));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`connect to ${target}: ${err.message}`));
      });
    });
  }

  private async waitFor<T>(take: () => T | undefined, what: string): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const v = take();
      if (v !== undefined) return v;
      if (this.ended) throw new Error(`${what}: ${this.ended.message} (unread: ${JSON.stringify(this.buf.toString("latin1"))})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: timeout after ${this.timeoutMs} ms (unread: ${JSON.stringify(this.buf.toString("latin1"))})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Next line without its CRLF (or LF), decoded as UTF-8. */
  readLine(): Promise<string> {
    return this.waitFor(() => {
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) return undefined;
      const line = this.buf.subarray(0, nl > 0 && this.buf[nl - 1] === 0x0d ? nl - 1 : nl).toString("utf8");
      this.buf = this.buf.subarray(nl + 1);
      return line;
    }, "reading a line");
  }

  readBytes(n: number): Promise<Buffer> {
    return this.waitFor(() => {
      if (this.buf.length < n) return undefined;
      const out = this.buf.subarray(0, n);
      this.buf = this.buf.subarray(n);
      return out;
    }, `reading ${n} bytes`);
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------- IMAP

export interface ImapResponse {
  tag: string;
  status: "OK" | "NO" | "BAD";
  /** Text after the status, e.g. "[AUTHENTICATIONFAILED] Authentication failed." */
  text: string;
  /** The whole tagged line, e.g. "a2 NO [AUTHENTICATIONFAILED] Authentication failed." */
  line: string;
  /** Untagged lines ("* ..."), literals left out (their {n} marker stays). */
  untagged: string[];
  /** Literal contents in order of appearance (e.g. the message of a FETCH BODY[]). */
  literals: string[];
}

/** IMAP astring for a command: quoted if printable ASCII, else a LITERAL+ literal. */
export function imapString(value: string): string {
  if (/^[\x20-\x7e]*$/.test(value)) return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  return `{${Buffer.byteLength(value)}+}\r\n${value}`;
}

export interface QuotaResource {
  name: string;
  usage: number;
  limit: number;
}

export interface QuotaRootResult {
  response: ImapResponse;
  /** Quota roots of the mailbox (QUOTAROOT). */
  roots: string[];
  /** QUOTA responses: root name -> resources (STORAGE in KiB, MESSAGE count). */
  quotas: Record<string, QuotaResource[]>;
}

export interface ImapSession {
  /** The server greeting ("* OK ..."). */
  greeting: string;
  /** Sends `<tag> <command>` and reads the response (never throws on NO/BAD). */
  command(command: string): Promise<ImapResponse>;
  login(user: string, password: string): Promise<ImapResponse>;
  select(mailbox?: string): Promise<ImapResponse & { exists: number }>;
  /** FETCH <seq> BODY.PEEK[]: the whole message; throws unless OK with a literal. */
  fetchBody(seq?: number): Promise<string>;
  getQuotaRoot(mailbox?: string): Promise<QuotaRootResult>;
  /** LOGOUT and close. */
  logout(): Promise<ImapResponse>;
  /** Closes the connection without LOGOUT. */
  close(): void;
}

function imapTokens(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|\(|\)|[^\s()]+/g;
  for (const m of s.matchAll(re)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[0]);
  return out;
}

export async function openImap(port: number | string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ImapSession> {
  const conn = await Conn.open(port, timeoutMs);
  const greeting = await conn.readLine().catch((err: Error) => {
    conn.close();
    throw err;
  });
  if (!greeting.startsWith("* OK")) {
    conn.close();
    throw new Error(`IMAP greeting: ${greeting}`);
  }
  let counter = 0;

  const command = async (cmd: string): Promise<ImapResponse> => {
    const tag = `a${++counter}`;
    conn.write(`${tag} ${cmd}\r\n`);
    const untagged: string[] = [];
    const literals: string[] = [];
    for (;;) {
      let line = await conn.readLine();
      // A line ending in {n} (or {n+}) is followed by n bytes and the rest of the line.
      for (let m = /\{(\d+)\+?\}$/.exec(line); m; m = /\{(\d+)\+?\}$/.exec(line)) {
        literals.push((await conn.readBytes(Number(m[1]))).toString("utf8"));
        line += await conn.readLine();
      }
      if (line.startsWith("* ")) {
        untagged.push(line);
      } else if (line.startsWith(`${tag} `)) {
        const m = /^\S+ (OK|NO|BAD)\b ?(.*)$/.exec(line);
        if (!m) throw new Error(`IMAP: malformed tagged reply ${JSON.stringify(line)}`);
        return { tag, status: m[1] as ImapResponse["status"], text: m[2] ?? "", line, untagged, literals };
      } else if (line.startsWith("+")) {
        throw new Error(`IMAP: unexpected continuation request ${JSON.stringify(line)} for ${cmd.split(" ")[0]}`);
      } else {
        untagged.push(line);
      }
    }
  };

  return {
    greeting,
    command,
    login: (user, password) => command(`LOGIN ${imapString(user)} ${imapString(password)}`),
    async select(mailbox = "INBOX") {
      const r = await command(`SELECT ${imapString(mailbox)}`);
      const exists = r.untagged.map((l) => /^\* (\d+) EXISTS$/.exec(l)).find((m) => m !== null);
      return { ...r, exists: exists ? Number(exists[1]) : 0 };
    },
    async fetchBody(seq = 1) {
      const r = await command(`FETCH ${seq} BODY.PEEK[]`);
      if (r.status !== "OK" || r.literals.length === 0) throw new Error(`IMAP FETCH ${seq}: ${r.line} ${r.untagged.join(" | ")}`);
      return r.literals[0]!;
    },
    async getQuotaRoot(mailbox = "INBOX") {
      const response = await command(`GETQUOTAROOT ${imapString(mailbox)}`);
      const roots: string[] = [];
      const quotas: Record<string, QuotaResource[]> = {};
      for (const line of response.untagged) {
        const t = imapTokens(line);
        if (t[1] === "QUOTAROOT") roots.push(...t.slice(3));
        if (t[1] === "QUOTA" && t[2] !== undefined) {
          const inner = t.slice(t.indexOf("(") + 1, t.lastIndexOf(")"));
          const resources: QuotaResource[] = [];
          for (let i = 0; i + 2 < inner.length; i += 3) {
            resources.push({ name: inner[i]!.toUpperCase(), usage: Number(inner[i + 1]), limit: Number(inner[i + 2]) });
          }
          quotas[t[2]] = resources;
        }
      }
      return { response, roots, quotas };
    },
    async logout() {
      try {
        return await command("LOGOUT");
      } finally {
        conn.close();
      }
    },
    close: () => conn.close(),
  };
}

/** Connects, LOGINs and LOGOUTs. `reply` is the tagged LOGIN reply line. */
export async function imapLogin(port: number | string, user: string, password: string): Promise<{ ok: boolean; reply: string }> {
  const session = await openImap(port);
  try {
    const r = await session.login(user, password);
    return { ok: r.status === "OK", reply: r.line };
  } finally {
    await session.logout().catch(() => session.close());
  }
}

// ---------------------------------------------------------------- POP3

export interface Pop3LoginResult {
  ok: boolean;
  /** The reply to PASS (or to USER when that already failed), e.g. "-ERR [AUTH] Authentication failed." */
  reply: string;
  greeting: string;
  /** STAT after a successful login. */
  stat?: { messages: number; octets: number };
}

export async function pop3Login(port: number | string, user: string, password: string): Promise<Pop3LoginResult> {
  const conn = await Conn.open(port);
  try {
    const greeting = await conn.readLine();
    if (!greeting.startsWith("+OK")) throw new Error(`POP3 greeting: ${greeting}`);
    const cmd = async (line: string): Promise<string> => {
      conn.write(`${line}\r\n`);
      return await conn.readLine();
    };
    let reply = await cmd(`USER ${user}`);
    if (reply.startsWith("+OK")) reply = await cmd(`PASS ${password}`);
    const ok = reply.startsWith("+OK");
    let stat: Pop3LoginResult["stat"];
    if (ok) {
      const s = /^\+OK (\d+) (\d+)/.exec(await cmd("STAT"));
      if (s) stat = { messages: Number(s[1]), octets: Number(s[2]) };
    }
    await cmd("QUIT").catch(() => "");
    return stat ? { ok, reply, greeting, stat } : { ok, reply, greeting };
  } finally {
    conn.close();
  }
}

// ---------------------------------------------------------------- LMTP

export interface Reply {
  code: number;
  /** All lines, "\n"-joined, e.g. "250 2.0.0 <a@b> abc Saved" */
  text: string;
}

export interface LmtpRecipientResult {
  rcpt: string;
  /** Reply to RCPT TO. */
  rcptReply: Reply;
  /** Per-recipient reply after the message (only for accepted recipients). */
  dataReply?: Reply;
  /** RCPT and DATA both 2xx. */
  delivered: boolean;
}

export interface LmtpResult {
  banner: Reply;
  mailFrom: Reply;
  /** Reply to DATA (354 expected); undefined when no recipient was accepted. */
  data?: Reply;
  recipients: LmtpRecipientResult[];
}

async function readReply(conn: Conn): Promise<Reply> {
  const lines: string[] = [];
  for (;;) {
    const line = await conn.readLine();
    lines.push(line);
    const m = /^(\d{3})([ -])/.exec(line);
    if (!m) throw new Error(`LMTP: malformed reply line ${JSON.stringify(line)}`);
    if (m[2] === " ") return { code: Number(m[1]), text: lines.join("\n") };
  }
}

/** CRLF line endings, dot-stuffing and a final CRLF for a DATA payload. */
export function dotStuff(data: string): string {
  let body = data.replace(/\r?\n/g, "\r\n");
  if (!body.endsWith("\r\n")) body += "\r\n";
  return body.replace(/^\./gm, "..");
}

/**
 * Delivers one message over LMTP. Never throws on LMTP errors: inspect the
 * per-recipient replies. `from` "" is the null sender.
 */
export async function lmtpDeliver(port: number | string, from: string, rcpts: string[], data: string): Promise<LmtpResult> {
  const conn = await Conn.open(port);
  try {
    const send = async (line: string): Promise<Reply> => {
      conn.write(`${line}\r\n`);
      return await readReply(conn);
    };
    const banner = await readReply(conn);
    if (banner.code !== 220) throw new Error(`LMTP banner: ${banner.text}`);
    const lhlo = await send("LHLO client.mailwarden.test");
    if (lhlo.code !== 250) throw new Error(`LMTP LHLO: ${lhlo.text}`);
    const mailFrom = await send(`MAIL FROM:<${from}>`);
    const recipients: LmtpRecipientResult[] = [];
    if (mailFrom.code !== 250) {
      await send("QUIT").catch(() => undefined);
      return { banner, mailFrom, recipients };
    }
    for (const rcpt of rcpts) {
      const rcptReply = await send(`RCPT TO:<${rcpt}>`);
      recipients.push({ rcpt, rcptReply, delivered: false });
    }
    const accepted = recipients.filter((r) => r.rcptReply.code >= 200 && r.rcptReply.code < 300);
    let dataReply: Reply | undefined;
    if (accepted.length > 0) {
      dataReply = await send("DATA");
      if (dataReply.code === 354) {
        conn.write(`${dotStuff(data)}.\r\n`);
        for (const r of accepted) {
          r.dataReply = await readReply(conn);
          r.delivered = r.dataReply.code >= 200 && r.dataReply.code < 300;
        }
      }
    }
    await send("QUIT").catch(() => undefined);
    return dataReply ? { banner, mailFrom, data: dataReply, recipients } : { banner, mailFrom, recipients };
  } finally {
    conn.close();
  }
}
