// OpenDKIM's verifier (opendkim-testmsg, Debian package opendkim-tools) as an
// independent check of mailwarden's DKIM signatures, against the test DNS
// server. libopendkim asks the resolvers in /etc/resolv.conf on port 53 and
// has no other knob, so the tool runs in a private mount namespace with its
// own resolv.conf naming a loopback address where a small forwarder relays
// port 53 to the test DNS server. Nothing outside 127/8 is ever asked.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';

export const OPENDKIM_TESTMSG = '/usr/sbin/opendkim-testmsg';

export interface DnsForwarder {
  /** The loopback address listening on port 53 (UDP and TCP). */
  readonly address: string;
  stop(): Promise<void>;
}

/** Relays 127.x.y.z:53 (UDP and TCP) to the test DNS server at 127.0.0.1:`port`. Needs root (port 53). */
export async function startDnsForwarder(upstreamPort: number): Promise<DnsForwarder> {
  const address = `127.53.${1 + Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`;
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    const up = dgram.createSocket('udp4');
    const timer = setTimeout(() => up.close(), 10_000);
    up.on('message', (answer) => {
      clearTimeout(timer);
      udp.send(answer, rinfo.port, rinfo.address, () => up.close());
    });
    up.on('error', () => undefined);
    up.send(msg, upstreamPort, '127.0.0.1');
  });
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(53, address, () => resolve());
  });
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer((client) => {
    const up = net.connect(upstreamPort, '127.0.0.1');
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(up).pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(53, address, () => resolve());
  });
  return {
    address,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => tcp.close(() => r()));
      await new Promise<void>((r) => udp.close(() => r()));
    },
  };
}

export interface OpendkimResult {
  /** opendkim-testmsg exit code: 0 = the message verified. */
  readonly code: number;
  /** Empty when the message verified; the reason otherwise. */
  readonly output: string;
}

/** Verifies a message (CRLF or LF) with opendkim-testmsg, resolving through `nameserver` (port 53). */
export async function opendkimVerify(message: Buffer | string, nameserver: string, tmpDir: string): Promise<OpendkimResult> {
  const resolvConf = join(tmpDir, `resolv-${nameserver}.conf`);
  await writeFile(resolvConf, `nameserver ${nameserver}\noptions timeout:2 attempts:1\n`);
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['-m', 'sh', '-c', 'mount --bind "$1" /etc/resolv.conf && exec "$2"', 'sh', resolvConf, OPENDKIM_TESTMSG], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, output: output.trim() });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(message);
  });
}

/** Signs a message with opendkim-testmsg (RSA key file in PEM); returns the signed message with CRLF line ends. */
export async function opendkimSign(message: string, opts: { domain: string; selector: string; keyFile: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(OPENDKIM_TESTMSG, ['-C', '-d', opts.domain, '-s', opts.selector, '-k', opts.keyFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`opendkim-testmsg exited ${code}: ${err}`));
      else resolve(out.replace(/\r?\n/g, '\r\n'));
    });
    child.stdin.end(message);
  });
}
