// OpenDKIM as an independent DKIM implementation for the tests, both ways:
// - opendkim-testmsg (Debian package opendkim-tools) verifies mailwarden's
//   signatures against the test DNS server. libopendkim asks the resolvers in
//   /etc/resolv.conf on port 53 and has no other knob, so the tool runs in a
//   private mount namespace with its own resolv.conf naming a loopback address
//   where a small forwarder relays port 53 to the test DNS server. Nothing
//   outside 127/8 is ever asked. (It can also sign, but only rsa-sha1.)
// - the opendkim milter (package opendkim) in Mode s signs rsa-sha256 or
//   ed25519-sha256 (one algorithm per instance: SignatureAlgorithm is global)
//   behind a test Postfix, for mailwarden to verify.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { freePort, waitForPort } from './ports.ts';

export const OPENDKIM_TESTMSG = '/usr/sbin/opendkim-testmsg';
export const OPENDKIM = '/usr/sbin/opendkim';

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

export interface OpendkimSignerOptions {
  /** Config, key table, pid file and log live here. */
  readonly dir: string;
  /** Every key signs mail whose From: is at its domain; all keys must be of this algorithm. */
  readonly algorithm: 'rsa-sha256' | 'ed25519-sha256';
  readonly keys: ReadonlyArray<{ readonly domain: string; readonly selector: string; readonly keyFile: string }>;
  /** Default relaxed/simple (OpenDKIM's own default is simple/simple). */
  readonly canonicalization?: string;
  /** Loopback address for resolv.conf; signing asks no DNS, this only keeps libunbound off the Internet. Default 127.0.0.1. */
  readonly nameserver?: string;
}

export interface OpendkimSigner {
  /** For smtpd_milters: `inet:127.0.0.1:PORT`. */
  readonly milter: string;
  readonly port: number;
  stop(): Promise<void>;
}

/**
 * Starts the opendkim milter in sign mode (Mode s, clients from 127.0.0.1 are
 * InternalHosts) in the foreground, in a private mount namespace with its own
 * resolv.conf, and dying with the test process (setpriv --pdeathsig), so a
 * crashed test leaves no signer behind.
 */
export async function startOpendkimSigner(opts: OpendkimSignerOptions): Promise<OpendkimSigner> {
  const port = await freePort();
  const name = `opendkim-${opts.algorithm}`;
  const path = (f: string) => join(opts.dir, `${name}.${f}`);
  const nameserver = opts.nameserver ?? '127.0.0.1';
  await writeFile(path('keytable'), opts.keys.map((k, i) => `k${i} ${k.domain}:${k.selector}:${k.keyFile}\n`).join(''));
  await writeFile(path('signingtable'), opts.keys.map((k, i) => `*@${k.domain} k${i}\n`).join(''));
  await writeFile(path('resolv.conf'), `nameserver ${nameserver}\n`);
  // libunbound would recurse from the root servers and never asks 127/8 unless told.
  await writeFile(path('unbound.conf'), ['server:', '  do-not-query-localhost: no', '  do-ip6: no', '  module-config: "iterator"', '  local-zone: "test." nodefault',
    'forward-zone:', '  name: "."', `  forward-addr: ${nameserver}`, ''].join('\n'));
  await writeFile(path('conf'), [
    'Mode s',
    `Socket inet:${port}@127.0.0.1`,
    `PidFile ${path('pid')}`,
    'Syslog no',
    'UMask 007',
    `Canonicalization ${opts.canonicalization ?? 'relaxed/simple'}`,
    `SignatureAlgorithm ${opts.algorithm}`,
    `KeyTable file:${path('keytable')}`,
    `SigningTable refile:${path('signingtable')}`,
    'InternalHosts 127.0.0.1',
    // The test's key files belong to root in a temp dir: not what OpenDKIM calls safe.
    'RequireSafeKeys no',
    `ResolverConfiguration ${path('unbound.conf')}`,
    '',
  ].join('\n'));
  const script = 'mount --bind "$0" /etc/resolv.conf || exit 70; exec setpriv --pdeathsig KILL "$@"';
  const child: ChildProcess = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, path('resolv.conf'), OPENDKIM, '-f', '-x', path('conf')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    await Promise.race([
      waitForPort(port, 10_000),
      exited.then(() => {
        throw new Error(`${name} exited at start: ${output.trim()}`);
      }),
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { milter: `inet:127.0.0.1:${port}`, port, stop };
}
