// The real-MTA side of bench/milter-postfix.ts: Postfix's own test clients
// (smtp-source drives the load, smtp-sink -d receives the probe messages),
// the main.cf settings per run, CPU of process trees from /proc, and the
// checks on what the milters did to the probe messages.
//
// smtp-source -F sends the file line by line, appending CRLF to each line and
// dot-stuffing lines that start with '.', so the file holds the message with
// bare LF and unstuffed; a CR left in it would go out as "\r\r\n" (checked
// with a capturing server). It sends HELO (no EHLO) and one empty line after
// the file, which DKIM's body canonicalization ignores (trailing empty lines).
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { dkimVerify } from 'mailauth';
import { createResolver, forMailauth } from '../../src/dns/resolver.ts';
import type { BenchMessage } from './milter-types.ts';
import { childrenCpuMicros, processTable, sleep, startDaemon, track, treeCpuMicros, type Daemon } from './proc.ts';

export const SMTP_SOURCE = '/usr/sbin/smtp-source';
export const SMTP_SINK = '/usr/sbin/smtp-sink';
/** Probe messages go to this domain, which transport_maps routes to smtp-sink; everything else is discarded. */
export const PROBE_DOMAIN = 'sink.bench.example';
/** The discard transport's "next hop": it appears in the log as status=sent (this text). */
export const DISCARD_REASON = 'bench-discarded';


// --- CPU of process trees ---

/** CPU µs used so far by each named process tree (root pid and all its descendants). */
export function treeCpu(roots: Readonly<Record<string, number>>): Record<string, number> {
  const table = processTable();
  const out: Record<string, number> = {};
  for (const [name, root] of Object.entries(roots)) out[name] = treeCpuMicros(table, root).cpu;
  return out;
}

// --- smtp-sink: where the probe messages end up ---

export interface Sink {
  readonly port: number;
  readonly dir: string;
  readonly daemon: Daemon;
  /** Removes the dumped messages. */
  clear(): void;
  /** Waits until `count` messages are dumped (and no longer growing); returns their texts (LF). */
  collect(count: number, timeoutMs: number): Promise<string[]>;
}

/** smtp-sink -d: each message it receives is written to a file of its own, envelope first (X-Mail-Args etc.). */
export async function startSink(tmp: string, port: number): Promise<Sink> {
  const dir = path.join(tmp, 'sink');
  mkdirSync(dir, { mode: 0o755 });
  chownSync(dir, uid('postfix'), gid('postfix'));
  // As root smtp-sink needs -u; -h: a name other than Postfix's myhostname, or its smtp client sees a mail loop.
  const daemon = await startDaemon(SMTP_SINK, ['-u', 'postfix', '-d', `${dir}/%H%M%S.`, '-h', 'sink.bench.test', `127.0.0.1:${port}`, '64'],
    { log: path.join(tmp, 'smtp-sink.log'), name: 'smtp-sink' });
  const files = () => readdirSync(dir).filter((f) => statSync(path.join(dir, f)).isFile());
  return {
    port, dir, daemon,
    clear() {
      for (const f of readdirSync(dir)) rmSync(path.join(dir, f), { recursive: true, force: true });
    },
    async collect(count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      let lastSizes = '';
      for (;;) {
        const list = files().sort();
        if (list.length >= count) {
          const sizes = list.map((f) => statSync(path.join(dir, f)).size).join(',');
          if (sizes === lastSizes) return list.map((f) => readFileSync(path.join(dir, f), 'latin1'));
          lastSizes = sizes;
        }
        if (Date.now() > deadline) throw new Error(`smtp-sink received ${list.length} of ${count} probe messages within ${timeoutMs / 1000} s`);
        await sleep(150);
      }
    },
  };
}

function uid(user: string): number {
  return Number(execFileSync('id', ['-u', user]).toString().trim());
}
function gid(user: string): number {
  return Number(execFileSync('id', ['-g', user]).toString().trim());
}

// --- smtp-source: the load ---

/** Writes the message the way smtp-source -F wants it (bare LF, not dot-stuffed). */
export function writeSourceFile(file: string, m: BenchMessage): void {
  writeFileSync(file, Buffer.from(m.raw, 'base64').toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
}

export interface SourceRun {
  readonly seconds: number;
  /** CPU of smtp-source itself, µs (cutime of the shell that waited for it). */
  readonly clientCpuUs: number;
}

// The shell waits for smtp-source, then prints its own /proc stat: cutime/cstime is smtp-source's CPU.
const MEASURE = 'smtp-source "$@"; rc=$?; cat /proc/$$/stat; exit $rc';

/**
 * Sends `count` copies of `file` with `sessions` parallel SMTP sessions to 127.0.0.1:port. Without
 * -A smtp-source gives up at the first reply that is not the expected 2xx/3xx (a milter's tempfail,
 * a reject), so a clean exit means every message was accepted. `reuse`: -d, all of a session's
 * messages over one connection (default: one connection per message, like most inbound mail).
 */
export async function runSmtpSource(opts: { port: number; file: string; sender: string; rcpt: string; helo: string; count: number; sessions: number; reuse: boolean }): Promise<SourceRun> {
  const args = ['-4', '-m', String(opts.count), '-s', String(opts.sessions), '-F', opts.file, '-f', opts.sender, '-t', opts.rcpt, '-M', opts.helo,
    ...(opts.reuse ? ['-d'] : []), `127.0.0.1:${opts.port}`];
  const t0 = performance.now();
  const child = spawn('sh', ['-c', MEASURE, 'smtp-source', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: `/usr/sbin:/usr/bin:/sbin:/bin` } });
  track(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c ?? 1));
  });
  const seconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`smtp-source failed (exit ${code}): ${stderr.trim().split('\n').slice(-3).join(' / ') || stdout.trim().slice(0, 300)}`);
  return { seconds, clientCpuUs: childrenCpuMicros(stdout.trim().split('\n').pop() ?? '') };
}

// --- Postfix's log: how many messages went through ---

/** Reads what Postfix appended to its maillog since the last call. */
export class MaillogTail {
  readonly #file: string;
  #offset = 0;
  constructor(file: string) {
    this.#file = file;
    this.skip();
  }
  skip(): void {
    try {
      this.#offset = statSync(this.#file).size;
    } catch {
      this.#offset = 0;
    }
  }
  read(): string {
    let buf: Buffer;
    try {
      buf = readFileSync(this.#file);
    } catch {
      return '';
    }
    // Whole lines only: postlogd may be in the middle of one.
    const end = buf.lastIndexOf(0x0a) + 1;
    if (end <= this.#offset) return '';
    const text = buf.subarray(this.#offset, end).toString('latin1');
    this.#offset = end;
    return text;
  }
}

/**
 * Waits until Postfix has logged `count` discarded messages (queue drained) since the tail's
 * mark; fails on milter errors (milter_default_action = tempfail, so a failing milter defers
 * mail) or when the count is not reached in time.
 */
export async function waitForDiscards(tail: MaillogTail, count: number, timeoutMs: number): Promise<{ discarded: number; log: string }> {
  const deadline = Date.now() + timeoutMs;
  let log = '';
  let discarded = 0;
  const marker = `status=sent (${DISCARD_REASON})`;
  for (;;) {
    const chunk = tail.read();
    log += chunk;
    for (let i = chunk.indexOf(marker); i >= 0; i = chunk.indexOf(marker, i + 1)) discarded++;
    const milterTrouble = /warning: milter [^\n]*/.exec(chunk);
    if (milterTrouble) throw new Error(`Postfix: ${milterTrouble[0]}`);
    if (discarded >= count) return { discarded, log };
    if (Date.now() > deadline) throw new Error(`Postfix discarded ${discarded} of ${count} messages within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

// --- what the milters did: checks on the probe messages ---

/** Unfolded header fields of a dumped message (LF), in order; smtp-sink's own X-* envelope lines included. */
export function headerFields(text: string): Array<{ name: string; value: string }> {
  const end = text.indexOf('\n\n');
  const head = end >= 0 ? text.slice(0, end) : text;
  const out: Array<{ name: string; value: string }> = [];
  for (const line of head.split('\n')) {
    if (/^[ \t]/.test(line) && out.length) out[out.length - 1]!.value += ` ${line.trim()}`;
    else {
      const colon = line.indexOf(':');
      if (colon > 0) out.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
    }
  }
  return out;
}

export interface ProbeFinding {
  /** Authentication-Results values added by the milters (by authserv-id). */
  readonly authResults: string[];
  readonly dkimPass: boolean;
  readonly dmarcPass: boolean;
  /** spf= results seen in the A-R headers (expected: not pass, the client is 127.0.0.1). */
  readonly spf: string[];
  /** DKIM signatures by d= that verify (mailauth against the test DNS), for signed messages. */
  readonly signaturesVerified: string[];
  readonly signatures: number;
}

/**
 * What the milters did to one message as smtp-sink received it: the A-R headers with one of
 * `authservIds`, and every DKIM-Signature of `signingDomain` verified independently with
 * mailauth against the test DNS (`dnsServer`, host:port).
 */
export async function inspectProbe(text: string, authservIds: readonly string[], signingDomain: string, dnsServer: string): Promise<ProbeFinding> {
  const fields = headerFields(text);
  const authResults = fields.filter((f) => /^authentication-results$/i.test(f.name) && authservIds.some((id) => f.value.toLowerCase().startsWith(id.toLowerCase())))
    .map((f) => f.value);
  const results = (method: string) => authResults.flatMap((v) => [...v.matchAll(new RegExp(`\\b${method}=([a-z]+)`, 'gi'))].map((m) => m[1]!.toLowerCase()));
  const ours = fields.filter((f) => /^dkim-signature$/i.test(f.name) && new RegExp(`\\bd=${signingDomain.replace(/\./g, '\\.')}\\b`, 'i').test(f.value));
  const signaturesVerified: string[] = [];
  if (ours.length) {
    // Drop smtp-sink's X-* envelope lines (not part of the message), back to CRLF.
    const message = text.replace(/^(?:X-(?:Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):[^\n]*\n)+/, '').replace(/\n/g, '\r\n');
    const resolver = forMailauth(createResolver({ servers: [dnsServer], timeoutMs: 5000 }));
    const v = await dkimVerify(Buffer.from(message, 'latin1'), { resolver } as unknown as Parameters<typeof dkimVerify>[1]);
    for (const r of v.results as Array<{ signingDomain?: string; status?: { result?: string } }>) {
      if (r.status?.result === 'pass' && r.signingDomain?.toLowerCase() === signingDomain.toLowerCase()) signaturesVerified.push(r.signingDomain);
    }
  }
  return {
    authResults,
    dkimPass: results('dkim').includes('pass'),
    dmarcPass: results('dmarc').includes('pass'),
    spf: results('spf'),
    signaturesVerified,
    signatures: ours.length,
  };
}
