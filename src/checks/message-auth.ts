// Message authentication for inbound mail: DKIM, SPF, ARC and DMARC verdicts
// and the Authentication-Results header (RFC 8601), through mailauth 7 with
// mailwarden's DNS layer. Protocol-free: the milter feeds it a stream, tests
// and the ARC suite feed it a Buffer.
import type { Readable } from 'node:stream';
import { authenticate } from 'mailauth';
import { forMailauth, type DnsResolver } from '../dns/resolver.ts';

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
}

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
  const result = await authenticate(message, {
    ...(input.clientIp ? { ip: input.clientIp } : {}),
    helo: input.helo,
    sender: input.sender,
    mta: input.authservId,
    resolver: forMailauth(resolver) as never,
    minBitLength: opts.minBitLength ?? 1024,
    disableBimi: true,
    trustReceived: false,
  });
  const dkim: DkimVerdict[] = (result.dkim?.results ?? []).map((r) => ({
    domain: String(r.signingDomain ?? ''),
    selector: String(r.selector ?? ''),
    algorithm: String((r as { algo?: string }).algo ?? ''),
    result: String(r.status?.result ?? 'none'),
    aligned: (r.status?.aligned as string | false | undefined) || false,
    ...(r.status?.comment ? { comment: String(r.status.comment) } : {}),
  }));
  const d = result.dmarc;
  let dmarc: DmarcVerdict | undefined;
  if (d) {
    const policy = String((d as { policy?: string }).policy ?? '').toLowerCase();
    dmarc = {
      result: String(d.status?.result ?? 'none'),
      domain: String(d.domain ?? ''),
      ...(policy === 'none' || policy === 'quarantine' || policy === 'reject' ? { policy } : {}),
    };
  }
  // `headers` holds Received-SPF then Authentication-Results, each folded: keep the A-R field.
  let ar: string | undefined;
  for (const line of result.headers.split('\r\n')) {
    if (/^Authentication-Results:/i.test(line)) ar = line.replace(/^Authentication-Results:\s*/i, '');
    else if (ar !== undefined && /^[ \t]/.test(line)) ar += `\r\n${line}`;
    else if (ar !== undefined) break;
  }
  return {
    dkim,
    spf: String((result.spf || undefined)?.status?.result ?? 'none'),
    arc: String(((result.arc || undefined) as { status?: { result?: string } } | undefined)?.status?.result ?? 'none'),
    ...(dmarc ? { dmarc } : {}),
    ...((result as { dmarcSkipReason?: string }).dmarcSkipReason ? { dmarcSkipped: String((result as { dmarcSkipReason?: string }).dmarcSkipReason) } : {}),
    authenticationResults: ar ?? `${input.authservId}; none`,
    elapsedMs: performance.now() - started,
  };
}
