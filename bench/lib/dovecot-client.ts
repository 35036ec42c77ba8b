// One-off requests over Dovecot's auth sockets, for the probes that check a
// target answers correctly before it is measured (the load generator has its
// own tight loop; see dovecot-loadgen.ts for the protocol notes).
import { connect } from 'node:net';

/** Sends `hello`, waits for the handshake to end (`until`), sends `request`, resolves with the first reply line after it. */
function exchange(socket: string, hello: string, until: RegExp, request: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let buf = '';
    let handshaken = false;
    const timer = setTimeout(() => finish(new Error(`${socket}: no answer within ${timeoutMs} ms (got ${JSON.stringify(buf.slice(0, 200))})`)), timeoutMs);
    const finish = (err: Error | undefined, line?: string) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(line!);
    };
    s.setEncoding('latin1');
    s.once('error', (err) => finish(err));
    s.once('close', () => finish(new Error(`${socket}: closed by Dovecot (got ${JSON.stringify(buf.slice(0, 200))})`)));
    s.on('data', (d: string) => {
      buf += d;
      if (!handshaken) {
        if (!buf.endsWith('\n') || !until.test(buf)) return;
        handshaken = true;
        buf = '';
        s.write(request);
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(undefined, buf.slice(0, nl));
    });
    s.write(hello);
  });
}

/** `USER` over the auth-master protocol: the reply line (`USER\t1\t<user>\t<fields>`, `NOTFOUND\t1`, `FAIL\t1...`). */
export function masterUser(socket: string, user: string, service = 'lmtp', timeoutMs = 10_000): Promise<string> {
  return exchange(socket, 'VERSION\t1\t0\n', /^SPID\t/m, `USER\t1\t${user}\tservice=${service}\n`, timeoutMs);
}

let cpid = 3_000_000 + (process.pid % 100_000);

/** `AUTH PLAIN` over the auth-client protocol: the reply line (`OK\t1\tuser=...`, `FAIL\t1\t...`). */
export function plainLogin(socket: string, user: string, password: string, service = 'imap', timeoutMs = 20_000): Promise<string> {
  const resp = Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64');
  return exchange(socket, `VERSION\t1\t2\nCPID\t${cpid++}\n`, /^DONE$/m, `AUTH\t1\tPLAIN\tservice=${service}\tno-penalty\tresp=${resp}\n`, timeoutMs);
}

/** A USER reply's fields without the request id, sorted: what two userdbs must agree on. */
export function userdbAnswer(line: string): string {
  const parts = line.split('\t');
  if (parts[0] !== 'USER') return parts[0] ?? '';
  return [`USER ${parts[2] ?? ''}`, ...parts.slice(3).filter(Boolean).sort()].join(' ');
}
