// Message authentication for inbound mail: DKIM, SPF, ARC and DMARC verdicts
// and the Authentication-Results header (RFC 8601), through mailauth 7 with
// mailwarden's DNS layer. Protocol-free: the milter feeds it a stream, tests
// and the ARC suite feed it a Buffer.
//
// mailauth's authenticate() always evaluates SPF itself; here the same steps
// are composed (lib/mailauth.js: dkimVerify, spf, arc, evaluateDmarc, the A-R
// rows) so that the SPF verdict the policy service already decided for this
// transaction (SpfMemory, src/checks/spf-memory.ts) is used instead: SPF runs
// at most once per message across policy service and milter. Without a
// remembered verdict SPF is computed with evaluateSpf() (the policy service's
// strict RFC 7208 mode), started at once so its DNS overlaps the body stream.
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { arc, dkimVerify } from 'mailauth';
import { evaluateDmarc } from 'mailauth/lib/dmarc/index.js';
import { forMailauth, type DnsResolver } from '../dns/resolver.ts';
import { evaluateSpf, type SpfVerdict } from './spf.ts';
import { spfMemoryKey, type SpfMemory, type SpfSource } from './spf-memory.ts';

// Not in mailauth's typings: the A-R row formatter and the alignment helper authenticate() uses.
const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  formatAuthHeaderRow(method: string, status: Record<string, unknown>, options?: { strict?: boolean }): string;
  formatDomain(domain: string): string;
  getAlignment(fromDomain: string, domainList: string[], strict: boolean): { domain: string } | false | undefined;
};
const libmime = createRequire(createRequire(import.meta.url).resolve('mailauth'))('libmime') as { foldLines(s: string, len: number): string };

export interface MessageAuthInput {
  /** SMTP client address; '' for locally submitted mail (SPF is then none). */
  readonly clientIp: string;
  readonly helo: string;
  /** Envelope sender; '' = null sender. */
  readonly sender: string;
  /** Our authserv-id (RFC 8601 §2.5): the name in Authentication-Results. */
  readonly authservId: string;
}

export interface MessageAuthOptions {
  /** Shortest RSA key accepted for DKIM and ARC (RFC 8301: 1024). */
  readonly minBitLength?: number;
  /**
   * rsa-sha1 signatures get dkim=policy (RFC 8301 §3.1). Default false for now: opendkim-testmsg, the
   * independent signer of the e2e test, only signs rsa-sha1; turn on once that test signs rsa-sha256
   * through the opendkim milter.
   */
  readonly rejectRsaSha1?: boolean;
  /** The daemon's memory of SPF verdicts: a verdict for this (IP, HELO, sender) is used, a computed one stored. */
  readonly spfMemory?: SpfMemory;
  /** Wall clock in ms for the memory (tests). */
  readonly now?: () => number;
}

/** Where the SPF verdict came from: the policy service, an earlier message in the milter, computed now, or none (local submission). */
export type SpfVerdictSource = SpfSource | 'computed' | 'none';

export interface DkimVerdict {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: string;
  readonly result: string;
  /** The aligned DMARC domain, when this signature aligns with From:. */
  readonly aligned: string | false;
  readonly comment?: string;
}

export type DmarcPolicy = 'none' | 'quarantine' | 'reject';

export interface DmarcVerdict {
  /** pass, fail, none, temperror, permerror. */
  readonly result: string;
  /** The author (From:) domain. */
  readonly domain: string;
  /** The policy that applies to this message (p=, or sp=/np= for subdomains), when a record was found. */
  readonly policy?: DmarcPolicy;
}

export interface MessageAuthVerdict {
  readonly dkim: readonly DkimVerdict[];
  readonly spf: string;
  readonly spfSource: SpfVerdictSource;
  readonly arc: string;
  readonly dmarc?: DmarcVerdict;
  /** Why DMARC could not be evaluated (no From:, several From: domains...). */
  readonly dmarcSkipped?: string;
  /** The Authentication-Results value (after "Authentication-Results: "), lines joined with CRLF + space. */
  readonly authenticationResults: string;
  readonly elapsedMs: number;
}

/** Verifies one message. Never throws for DNS trouble (results become temperror); throws only on a broken stream. */
export async function verifyMessage(message: Readable | Buffer, input: MessageAuthInput, resolver: DnsResolver, opts: MessageAuthOptions = {}): Promise<MessageAuthVerdict> {
  const started = performance.now();
  const mailauthResolver = forMailauth(resolver) as never;
  const minBitLength = opts.minBitLength ?? 1024;
  // SPF first: remembered, or computed while the message streams in.
  const spfPromise = spfFor(input, resolver, opts);
  spfPromise.catch(() => undefined);
  const dkimResult = await dkimVerify(message, {
    resolver: mailauthResolver,
    sender: input.sender,
    minBitLength,
    rejectRsaSha1: opts.rejectRsaSha1 ?? false,
  } as never);
  const [spf, arcResult] = await Promise.all([
    spfPromise,
    arc((dkimResult as unknown as { arc: never }).arc, { resolver: mailauthResolver, minBitLength, ip: input.clientIp || undefined } as never),
  ]);
  const rows: string[] = (dkimResult.results ?? []).map((row) => libmime.foldLines(String((row as { info?: string }).info ?? ''), 160));
  if (spf.verdict) rows.push(libmime.foldLines(spfRow(spf.verdict, input), 160));
  const arcInfo = (arcResult as { info?: string } | undefined)?.info;
  if (arcInfo) rows.push(libmime.foldLines(arcInfo, 160));

  const d0 = dkimResult as unknown as { headerFrom?: string[]; fromFields?: unknown; results?: DkimRow[] };
  let dmarcResult: DmarcResponse | false | undefined;
  let dmarcSkipped: string | undefined;
  if (d0.headerFrom) {
    const v = spf.verdict;
    const evaluated = await evaluateDmarc({
      headerFrom: d0.headerFrom,
      fromFields: d0.fromFields,
      // DMARC's SPF identifier: the domain SPF checked (MAIL FROM, or HELO for the null sender), when it passed.
      spfDomains: v && v.result === 'pass' && v.domain ? [v.domain] : [],
      dkimDomains: (d0.results ?? [])
        .filter((r) => r.status.result === 'pass')
        .map((r) => ({ id: r.id, domain: r.signingDomain, aligned: r.status.aligned, underSized: r.status.underSized })),
      arcResult,
      resolver: mailauthResolver,
    } as never);
    dmarcResult = evaluated.response as DmarcResponse | false;
    dmarcSkipped = evaluated.reason;
    if (dmarcResult && dmarcResult.info) rows.push(libmime.foldLines(dmarcResult.info, 160));
    if (evaluated.dkimAligned && dmarcResult) {
      // As authenticate() does: passing signatures take DMARC's alignment verdict, failing ones the record's mode.
      const fromDomain = dmarcResult.status.header.from;
      for (const row of d0.results ?? []) {
        if (row.status.result === 'pass') {
          row.status.aligned = evaluated.dkimAligned.has(tools.formatDomain(row.signingDomain)) ? row.signingDomain : false;
        } else if (dmarcResult.alignment?.dkim?.strict) {
          row.status.aligned = (row.status.aligned && (tools.getAlignment(fromDomain, [row.signingDomain], true) || undefined)?.domain) || false;
        }
      }
    }
  }

  const dkim: DkimVerdict[] = (d0.results ?? []).map((r) => ({
    domain: String(r.signingDomain ?? ''),
    selector: String(r.selector ?? ''),
    algorithm: String(r.algo ?? ''),
    result: String(r.status?.result ?? 'none'),
    aligned: r.status?.aligned || false,
    ...(r.status?.comment ? { comment: String(r.status.comment) } : {}),
  }));
  let dmarc: DmarcVerdict | undefined;
  if (dmarcResult) {
    const policy = String(dmarcResult.policy ?? '').toLowerCase();
    dmarc = {
      result: String(dmarcResult.status?.result ?? 'none'),
      domain: String(dmarcResult.domain ?? ''),
      ...(policy === 'none' || policy === 'quarantine' || policy === 'reject' ? { policy } : {}),
    };
  }
  return {
    dkim,
    spf: spf.verdict?.result ?? 'none',
    spfSource: spf.source,
    arc: String((arcResult as { status?: { result?: string } } | undefined)?.status?.result ?? 'none'),
    ...(dmarc ? { dmarc } : {}),
    ...(!dmarcResult && dmarcSkipped ? { dmarcSkipped } : {}),
    authenticationResults: rows.length ? `${input.authservId};\r\n ${rows.join(';\r\n ')}` : `${input.authservId}; none`,
    elapsedMs: performance.now() - started,
  };
}

interface DkimRow {
  id?: string;
  signingDomain: string;
  selector?: string;
  algo?: string;
  info?: string;
  status: { result?: string; comment?: string; aligned?: string | false; underSized?: number };
}

interface DmarcResponse {
  domain?: string;
  policy?: string;
  info?: string;
  status: { result?: string; header: { from: string } };
  alignment?: { dkim?: { strict?: boolean } };
}

/** The SPF verdict for the transaction: remembered (policy service, earlier message), or computed and remembered. */
async function spfFor(input: MessageAuthInput, resolver: DnsResolver, opts: MessageAuthOptions): Promise<{ verdict?: SpfVerdict; source: SpfVerdictSource }> {
  // Locally submitted mail has no SMTP client: nothing to check (A-R spf=none would claim a lookup).
  if (!input.clientIp) return { source: 'none' };
  const memory = opts.spfMemory;
  const now = opts.now ?? Date.now;
  const known = memory?.recall(input.clientIp, input.helo, input.sender, now());
  if (known) return known;
  const verdict = await evaluateSpf({ clientIp: input.clientIp, helo: input.helo, sender: input.sender, receiver: input.authservId }, resolver);
  memory?.set(spfMemoryKey(input.clientIp, input.helo, input.sender), verdict, now(), 'milter');
  return { verdict, source: 'computed' };
}

/** The spf= row of the A-R (RFC 8601 §2.7.2): the verdict with the identities checked, as mailauth words it. */
function spfRow(v: SpfVerdict, input: MessageAuthInput): string {
  const sender = input.sender.trim();
  const helo = input.helo.trim();
  return tools.formatAuthHeaderRow('spf', {
    result: v.result,
    comment: `${input.authservId}: ${v.comment}`,
    smtp: { mailfrom: sender || `postmaster@${helo}`, ...(helo ? { helo } : {}) },
  });
}
