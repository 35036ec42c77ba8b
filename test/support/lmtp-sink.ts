// A tiny LMTP server (RFC 2033) that records deliveries, for use as Postfix's
// `virtual_transport = lmtp:inet:127.0.0.1:PORT` (or `lmtp:unix:/path`).
//
// Supports LHLO, MAIL, RCPT, DATA (one reply per accepted recipient), RSET,
// NOOP, QUIT, and PIPELINING (commands are processed strictly in order).
import { chmod, rm } from "node:fs/promises";
import net from "node:net";

export interface LmtpDelivery {
  /** Envelope sender without angle brackets ("" for the null sender). */
  from: string;
  /** Recipients this message was delivered to (DATA reply 250), as given in RCPT TO. */
  recipients: string[];
  /** Message content after dot-unstuffing, CRLF line endings, without the final ".". */
  data: string;
  /** The LHLO name Postfix sent. */
  lhlo: string;
}

export interface LmtpRcptEvent {
  stage: "rcpt" | "data";
  recipient: string;
  /** The full reply line sent for that recipient, e.g. "250 2.1.5 OK". */
  reply: string;
}

export interface LmtpSinkOptions {
  /** Listen on this UNIX socket path instead of 127.0.0.1:<random port>. */
  socketPath?: string;
  /** Recipients (case-insensitive) answered with a permanent failure. */
  reject?: Iterable<string>;
  /** Recipients (case-insensitive) answered with a temporary failure. */
  tempfail?: Iterable<string>;
  /** When reject/tempfail apply: at RCPT (default) or as the per-recipient DATA reply. */
  failAt?: "rcpt" | "data";
  /**
   * Full control: return a reply line ("550 5.1.1 nope") for a recipient at
   * the given stage, or undefined for the default behaviour.
   */
  reply?: (recipient: string, stage: "rcpt" | "data") => string | undefined;
}

export interface LmtpSink {
  /** TCP port (0 when listening on a UNIX socket). */
  port: number;
  socketPath: string | undefined;
  /** Postfix next-hop syntax: "inet:127.0.0.1:PORT" or "unix:/path". */
  endpoint: string;
  /** Value for virtual_transport / transport maps: "lmtp:" + endpoint. */
  transport: string;
  /** Completed deliveries, in order. */
  deliveries: LmtpDelivery[];
  /** Every per-recipient reply sent (RCPT and DATA stage), in order. */
  events: LmtpRcptEvent[];
  /** Mutable at run time; lower-case addresses. */
  reject: Set<string>;
  tempfail: Set<string>;
  /** Resolves with the first delivery (past or future) matching predicate. */
  waitFor(predicate: (d: LmtpDelivery) => boolean, timeoutMs?: number): Promise<LmtpDelivery>;
  /** Convenience: waitFor a delivery whose recipients include rcpt (case-insensitive). */
  waitForRecipient(rcpt: string, timeoutMs?: number): Promise<LmtpDelivery>;
  close(): Promise<void>;
}

const MAX_LINE = 64 * 1024;

function parsePath(arg: string, keyword: string): string | undefined {
  // "FROM:<a@b> SIZE=12" / "TO:<x@y> ORCPT=rfc822;x@y"; also tolerate "FROM: <a@b>".
  const m = new RegExp(`^${keyword}:\\s*<([^>]*)>`, "i").exec(arg);
  return m ? m[1] : undefined;
}

export async function startLmtpSink(opts: LmtpSinkOptions = {}): Promise<LmtpSink> {
  const deliveries: LmtpDelivery[] = [];
  const events: LmtpRcptEvent[] = [];
  const reject = new Set([...(opts.reject ?? [])].map((r) => r.toLowerCase()));
  const tempfail = new Set([...(opts.tempfail ?? [])].map((r) => r.toLowerCase()));
  const failAt = opts.failAt ?? "rcpt";
  const waiters = new Set<() => void>();
  const sockets = new Set<net.Socket>();

  const replyFor = (rcpt: string, stage: "rcpt" | "data"): string => {
    const custom = opts.reply?.(rcpt, stage);
    if (custom !== undefined) return custom;
    const key = rcpt.toLowerCase();
    if (stage === failAt) {
      if (reject.has(key)) return `550 5.1.1 <${rcpt}> rejected by lmtp-sink`;
      if (tempfail.has(key)) return `451 4.3.0 <${rcpt}> temporarily failed by lmtp-sink`;
    }
    return stage === "rcpt" ? "250 2.1.5 OK" : `250 2.0.0 <${rcpt}> delivered`;
  };

  const handle = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buffer: Buffer = Buffer.alloc(0);
    let lhlo = "";
    let from: string | undefined;
    let rcpts: string[] = [];
    let inData = false;
    let dataLines: string[] = [];

    const send = (line: string): void => {
      if (!socket.destroyed) socket.write(line + "\r\n");
    };
    const reset = (): void => {
      from = undefined;
      rcpts = [];
      inData = false;
      dataLines = [];
    };

    const onLine = (line: string): void => {
      if (inData) {
        if (line === ".") {
          const data = dataLines.map((l) => l + "\r\n").join("");
          const delivered: string[] = [];
          for (const r of rcpts) {
            const reply = replyFor(r, "data");
            events.push({ stage: "data", recipient: r, reply });
            if (reply.startsWith("2")) delivered.push(r);
            send(reply);
          }
          if (delivered.length > 0) {
            deliveries.push({ from: from ?? "", recipients: delivered, data, lhlo });
            for (const w of [...waiters]) w();
          }
          reset();
        } else {
          dataLines.push(line.startsWith(".") ? line.slice(1) : line);
        }
        return;
      }
      const sp = line.indexOf(" ");
      const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
      const arg = sp < 0 ? "" : line.slice(sp + 1).trim();
      switch (verb) {
        case "LHLO":
          lhlo = arg;
          reset();
          send("250-lmtp-sink");
          send("250-PIPELINING");
          send("250-ENHANCEDSTATUSCODES");
          send("250-8BITMIME");
          send("250 SMTPUTF8");
          return;
        case "HELO":
        case "EHLO":
          send("500 5.5.1 this is LMTP, use LHLO");
          return;
        case "MAIL": {
          const f = parsePath(arg, "FROM");
          if (!lhlo) return send("503 5.5.1 LHLO first");
          if (from !== undefined) return send("503 5.5.1 nested MAIL");
          if (f === undefined) return send("501 5.5.4 syntax: MAIL FROM:<address>");
          from = f;
          return send("250 2.1.0 OK");
        }
        case "RCPT": {
          const r = parsePath(arg, "TO");
          if (from === undefined) return send("503 5.5.1 MAIL first");
          if (r === undefined) return send("501 5.5.4 syntax: RCPT TO:<address>");
          const reply = replyFor(r, "rcpt");
          events.push({ stage: "rcpt", recipient: r, reply });
          if (reply.startsWith("2")) rcpts.push(r);
          return send(reply);
        }
        case "DATA":
          if (from === undefined) return send("503 5.5.1 MAIL first");
          if (rcpts.length === 0) return send("503 5.5.1 no valid recipients");
          inData = true;
          dataLines = [];
          return send("354 go ahead");
        case "RSET":
          reset();
          return send("250 2.0.0 OK");
        case "NOOP":
          return send("250 2.0.0 OK");
        case "QUIT":
          send("221 2.0.0 bye");
          socket.end();
          return;
        default:
          return send("500 5.5.2 unknown command");
      }
    };

    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      for (;;) {
        const nl = buffer.indexOf(0x0a);
        if (nl < 0) break;
        let end = nl;
        if (end > 0 && buffer[end - 1] === 0x0d) end--;
        const line = buffer.subarray(0, end).toString("utf8");
        buffer = buffer.subarray(nl + 1);
        onLine(line);
      }
      if (buffer.length > MAX_LINE) {
        send("500 5.5.6 line too long");
        socket.destroy();
      }
    });
    send("220 lmtp-sink LMTP ready");
  };

  const server = net.createServer(handle);
  if (opts.socketPath !== undefined) await rm(opts.socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (opts.socketPath !== undefined) server.listen(opts.socketPath, () => resolve());
    else server.listen({ host: "127.0.0.1", port: 0 }, () => resolve());
  });
  // Postfix's lmtp client runs as the unprivileged postfix user: it needs write
  // permission on the socket (the parent directory must be traversable too).
  if (opts.socketPath !== undefined) await chmod(opts.socketPath, 0o666);
  const address = server.address();
  const port = address !== null && typeof address === "object" ? address.port : 0;
  const endpoint = opts.socketPath !== undefined ? `unix:${opts.socketPath}` : `inet:127.0.0.1:${port}`;

  const waitFor = (predicate: (d: LmtpDelivery) => boolean, timeoutMs = 15_000): Promise<LmtpDelivery> =>
    new Promise<LmtpDelivery>((resolve, reject) => {
      let checked = 0;
      const check = (): boolean => {
        for (; checked < deliveries.length; checked++) {
          const d = deliveries[checked]!;
          if (predicate(d)) {
            resolve(d);
            return true;
          }
        }
        return false;
      };
      if (check()) return;
      const waiter = (): void => {
        if (check()) {
          clearTimeout(timer);
          waiters.delete(waiter);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        const seen = deliveries.map((d) => `${d.from} -> ${d.recipients.join(",")}`).join("; ") || "none";
        const replies = events.map((e) => `${e.stage} ${e.recipient}: ${e.reply}`).join("; ") || "none";
        reject(
          new Error(
            `lmtp-sink: no matching delivery within ${timeoutMs} ms (deliveries: ${seen}; recipient replies: ${replies})`,
          ),
        );
      }, timeoutMs);
      waiters.add(waiter);
    });

  return {
    port,
    socketPath: opts.socketPath,
    endpoint,
    transport: `lmtp:${endpoint}`,
    deliveries,
    events,
    reject,
    tempfail,
    waitFor,
    waitForRecipient: (rcpt, timeoutMs) =>
      waitFor((d) => d.recipients.some((r) => r.toLowerCase() === rcpt.toLowerCase()), timeoutMs),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (opts.socketPath !== undefined) await rm(opts.socketPath, { force: true });
    },
  };
}
