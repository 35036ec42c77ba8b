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
//
// sealArc() adds our ARC set (RFC 8617) to a message verified with
// prepareArcSeal, from what the verification kept (body hash, parsed header,
// chain), as authenticate()'s `seal` option does, without reading it again.
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import './mailauth-setup.ts'; // before mailauth: see the file
import { arc, createSeal, dkimVerify } from 'mailauth';
import { evaluateDmarc } from 'mailauth/lib/dmarc/index.js';
import { forMailauth, type DnsResolver } from '../dns/resolver.ts';
import { evaluateSpf, type SpfVerdict } from './spf.ts';
import { DkimKeyRecordCache, type MailauthKeyCache } from './dkim-key-records.ts';
import { spfMemoryKey, type SpfMemory, type SpfSource } from './spf-memory.ts';

// Not in mailauth's typings: the A-R row formatter and the alignment helper authenticate() uses.
const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  formatAuthHeaderRow(method: string, status: Record<string, unknown>, options?: { strict?: boolean }): string;
  formatDomain(domain: string): string;
  getAlignment(fromDomain: string, domainList: string[], strict: boolean): { domain: string } | false | undefined;
  writeToStream(stream: NodeJS.WritableStream, input: Readable | Buffer): Promise<void>;
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
   * rsa-sha1 signatures get dkim=policy (weak algorithm) and never count for DMARC: RFC 8301 §3.1
   * says verifiers must not consider them valid. Default true.
   */
  readonly rejectRsaSha1?: boolean;
  /**
   * Keep what an ARC seal needs (the relaxed body hash, the parsed header and chain): the verdict
   * then carries `arcSealing` for sealArc(). Costs one more body hash unless a DKIM signature
   * already uses relaxed/sha256.
   */
  readonly prepareArcSeal?: boolean;
  /** The daemon's memory of SPF verdicts: a verdict for this (IP, HELO, sender) is used, a computed one stored. */
  readonly spfMemory?: SpfMemory;
  /** Wall clock in ms for the memory (tests). */
  readonly now?: () => number;
  /** Parsed key records across messages (default: one cache for the process, answers kept 60 s). */
  readonly keyRecords?: DkimKeyRecordCache;
  /**
   * The SPF outcome, decided elsewhere: the milter's worker pool computes it (or takes it from
   * spfMemory) in the main thread with spfOutcome() and verifies the rest in a worker thread.
   * Absent: spfOutcome() here.
   */
  readonly spf?: Promise<SpfOutcome>;
}

/** The SPF verdict of a transaction and where it came from (no verdict for locally submitted mail). */
export interface SpfOutcome {
  readonly verdict?: SpfVerdict;
  readonly source: SpfVerdictSource;
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
  /** With prepareArcSeal: the material sealArc() works from (not enumerable: never logged). */
  readonly arcSealing?: ArcSealMaterial;
}

/** What mailauth's createSeal() needs from the verification, kept opaque. */
export interface ArcSealMaterial {
  readonly headers: unknown;
  readonly arc: unknown;
  readonly bodyHash: string | undefined;
  /** The incoming chain could not be validated for a temporary reason (DNS): its verdict fail is not final. */
  readonly chainTemporary: boolean;
  /** Why the incoming chain failed, as mailauth words it. */
  readonly chainComment?: string;
}

/** Key records shared by every verification of this process (see dkim-key-records.ts). */
const sharedKeyRecords = new DkimKeyRecordCache();

const { DkimVerifier } = createRequire(import.meta.url)('mailauth/lib/dkim/dkim-verifier.js') as {
  DkimVerifier: new (options: Record<string, unknown>) => NodeJS.WritableStream & {
    keyCache: MailauthKeyCache; arc: object; headers?: unknown; seal?: unknown;
    headerFrom?: string[]; fromFields?: unknown; envelopeFrom?: unknown; results?: unknown[];
  };
};

/**
 * mailauth's dkimVerify() (lib/dkim/verify.js), with our key cache in place of
 * its per-message one, for DKIM-Signatures and (through arc.keyCache) the ARC
 * chain alike. The result has verify.js's shape, hidden properties included.
 */
async function dkimVerifyWithKeys(message: Readable | Buffer, options: Record<string, unknown>, keys: MailauthKeyCache): Promise<Awaited<ReturnType<typeof dkimVerify>>> {
  const verifier = new DkimVerifier(options);
  verifier.keyCache = keys;
  Object.defineProperty(verifier.arc, 'keyCache', { value: keys, enumerable: false, configurable: true, writable: true });
  await tools.writeToStream(verifier, message);
  const result = { headerFrom: verifier.headerFrom, fromFields: verifier.fromFields, envelopeFrom: verifier.envelopeFrom, results: verifier.results };
  for (const name of ['headers', 'arc', 'seal'] as const) {
    if (verifier[name]) Object.defineProperty(result, name, { enumerable: false, configurable: false, writable: false, value: verifier[name] });
  }
  return result as never;
}

/** Verifies one message. Never throws for DNS trouble (results become temperror); throws only on a broken stream. */
export async function verifyMessage(message: Readable | Buffer, input: MessageAuthInput, resolver: DnsResolver, opts: MessageAuthOptions = {}): Promise<MessageAuthVerdict> {
  const started = performance.now();
  const mailauthResolver = forMailauth(resolver) as never;
  const minBitLength = opts.minBitLength ?? 1024;
  // SPF first: remembered, or computed while the message streams in.
  const spfPromise = opts.spf ?? spfOutcome(input, resolver, opts);
  spfPromise.catch(() => undefined);
  // dkimVerify computes the relaxed/sha256 body hash into this object (seal.bodyHash) while the body streams.
  const seal: { bodyHash?: string } | undefined = opts.prepareArcSeal ? {} : undefined;
  const dkimResult = await dkimVerifyWithKeys(message, {
    resolver: mailauthResolver,
    sender: input.sender,
    minBitLength,
    rejectRsaSha1: opts.rejectRsaSha1 ?? true,
    ...(seal ? { seal } : {}),
  }, (opts.keyRecords ?? sharedKeyRecords).forMessage(mailauthResolver));
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
  const arcStatus = (arcResult as { status?: { result?: string; comment?: string } } | undefined)?.status;
  const verdict: MessageAuthVerdict = {
    dkim,
    spf: spf.verdict?.result ?? 'none',
    spfSource: spf.source,
    arc: String(arcStatus?.result ?? 'none'),
    ...(dmarc ? { dmarc } : {}),
    ...(!dmarcResult && dmarcSkipped ? { dmarcSkipped } : {}),
    authenticationResults: rows.length ? `${input.authservId};\r\n ${rows.join(';\r\n ')}` : `${input.authservId}; none`,
    elapsedMs: performance.now() - started,
  };
  if (seal) {
    const d = dkimResult as unknown as { headers?: unknown; arc?: { lastEntry?: { messageSignature?: { status?: { result?: string } } } } };
    const material: ArcSealMaterial = {
      headers: d.headers,
      arc: d.arc,
      bodyHash: seal.bodyHash,
      // mailauth's arc() calls every failure permanent; it words the permanent ones (bad seal, no key, ...) and
      // leaves DNS timeouts and SERVFAILs without a comment. A chain must not be sealed cv=fail for those.
      chainTemporary: arcStatus?.result === 'fail' &&
        (!arcStatus.comment || d.arc?.lastEntry?.messageSignature?.status?.result === 'temperror'),
      ...(arcStatus?.comment ? { chainComment: arcStatus.comment } : {}),
    };
    Object.defineProperty(verdict, 'arcSealing', { value: material, enumerable: false });
  }
  return verdict;
}

/** The key an ARC set is signed with (a DkimKey of the store fits). */
export interface ArcSealingKey {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: string;
  readonly privateKeyPem: string;
}

export type ArcSealOutcome =
  /** `fields`: ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results (`Name: value` CRLF-folded), top first. */
  | { readonly sealed: true; readonly instance: number; readonly cv: 'none' | 'pass' | 'fail'; readonly fields: readonly string[]; readonly reason?: string }
  /** Not sealed on purpose (the chain state says so); `reason` says why. */
  | { readonly sealed: false; readonly reason: string }
  /** Sealing failed (an unusable key, a broken message): an error for the log. */
  | { readonly sealed: false; readonly reason: string; readonly error: Error };

/**
 * Adds our ARC set (RFC 8617 §5.1) on top of the message verifyMessage()
 * checked with prepareArcSeal: ARC-Authentication-Results = our A-R, cv= from
 * the incoming chain (none, pass, or fail for a chain that failed for good;
 * one that could not be validated now, or already carries cv=fail, is not
 * sealed). Never throws.
 */
export async function sealArc(verdict: MessageAuthVerdict, key: ArcSealingKey, opts: { readonly signTime?: Date } = {}): Promise<ArcSealOutcome> {
  const m = verdict.arcSealing;
  if (!m || !m.bodyHash) return { sealed: false, reason: 'the message was not prepared for sealing', error: new Error('no ARC sealing material (prepareArcSeal off, or the body hash is missing)') };
  const chain = verdict.arc.toLowerCase();
  if (chain !== 'none' && chain !== 'pass' && chain !== 'fail') return { sealed: false, reason: `incoming ARC chain status ${verdict.arc} is not one ARC knows` };
  if (chain === 'fail' && m.chainTemporary) {
    return { sealed: false, reason: `incoming ARC chain could not be validated now${m.chainComment ? ` (${m.chainComment})` : ' (DNS)'}: not sealed, a temporary failure must not mark it cv=fail for good` };
  }
  try {
    const result = await createSeal(false, {
      headers: m.headers,
      arc: m.arc as never,
      seal: {
        signingDomain: key.domain,
        selector: key.selector,
        privateKey: key.privateKeyPem,
        algorithm: key.algorithm,
        cv: chain,
        authResults: withArcRow(verdict.authenticationResults, chain),
        bodyHash: m.bodyHash,
        signTime: opts.signTime ?? new Date(),
      } as never,
    });
    if (result.headers.length === 0) {
      const first = result.errors[0]?.err;
      const code = (first as { code?: string } | undefined)?.code;
      // RFC 8617 §5.1 step 1: a chain whose newest seal says cv=fail stays as it is.
      if (code === 'EARCCHAINFAILED') return { sealed: false, reason: 'the newest ARC-Seal already has cv=fail: a failed chain is sealed once' };
      const error = first instanceof Error ? first : new Error(String(first ?? 'mailauth created no ARC set'));
      return { sealed: false, reason: `ARC sealing failed: ${error.message}`, error };
    }
    const instance = Number(/^ARC-Seal:\s*i=(\d+)/i.exec(result.headers[0] ?? '')?.[1] ?? 0);
    return {
      sealed: true,
      instance,
      cv: chain,
      fields: result.headers,
      ...(chain === 'fail' ? { reason: `incoming ARC chain fails${m.chainComment ? ` (${m.chainComment})` : ''}: sealed with cv=fail (RFC 8617 §5.1.2), so no later hop trusts it` } : {}),
    };
  } catch (err) {
    const error = err instanceof Error ? err : new Error(String(err));
    return { sealed: false, reason: `ARC sealing failed: ${error.message}`, error };
  }
}

/**
 * RFC 8617 §4.1.1: the ARC-Authentication-Results carries the arc= verdict;
 * mailauth's lenient mode leaves arc=none out of the A-R, so it is added here.
 */
function withArcRow(authResults: string, chain: string): string {
  if (/;\s*arc=/i.test(authResults)) return authResults;
  return /;\s*none\s*$/.test(authResults) ? authResults.replace(/;\s*none\s*$/, `; arc=${chain}`) : `${authResults};\r\n arc=${chain}`;
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
export async function spfOutcome(input: MessageAuthInput, resolver: DnsResolver, opts: Pick<MessageAuthOptions, 'spfMemory' | 'now'>): Promise<SpfOutcome> {
  // Locally submitted mail has no SMTP client: nothing to check (A-R spf=none would claim a lookup).
  if (!input.clientIp) return { source: 'none' };
  const memory = opts.spfMemory;
  const now = opts.now ?? Date.now;
  const known = memory?.recall(input.clientIp, input.helo, input.sender, now());
  if (known) return known;
  const verdict = await evaluateSpf({ clientIp: input.clientIp, helo: input.helo, sender: input.sender, receiver: input.authservId }, resolver);
  memory?.store(spfMemoryKey(input.clientIp, input.helo, input.sender), verdict, now(), 'milter');
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
