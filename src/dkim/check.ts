// Is a key published correctly? Fetches `<selector>._domainkey.<domain>` TXT
// through mailwarden's resolver layer and compares the record with the key
// the way a verifier reads it (RFC 6376 §3.6.1, RFC 8463).
import { createPublicKey } from 'node:crypto';
import { isVoidLookup, lookup, toDnsError, type DnsResolver } from '../dns/resolver.ts';
import { dnsRecordName, keyType, type DkimKey } from './keys.ts';

/**
 * match: verifiers find exactly this key; mismatch: a record is there but our
 * signatures would not verify with it; missing: no DKIM record at the name;
 * temperror: DNS did not answer (ask again later).
 */
export type DkimCheckStatus = 'match' | 'mismatch' | 'missing' | 'temperror';

export interface DkimCheckResult {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: DkimKey['algorithm'];
  readonly name: string;
  readonly status: DkimCheckStatus;
  /** Why, when not a match. */
  readonly detail?: string;
  /** Worth knowing even on a match (t=y). */
  readonly warnings: readonly string[];
  /** The TXT records found at the name, strings joined. */
  readonly published: readonly string[];
}

/** RFC 6376 §3.2 tag=value list; an error string when it is not one (duplicate tags make it invalid). */
export function parseTagList(text: string): Map<string, string> | string {
  const tags = new Map<string, string>();
  for (const spec of text.split(';')) {
    if (spec.trim() === '') continue;
    const eq = spec.indexOf('=');
    if (eq < 0) return `"${spec.trim()}" is not tag=value`;
    const name = spec.slice(0, eq).trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) return `invalid tag name "${name}"`;
    if (tags.has(name)) return `tag ${name}= appears twice`;
    tags.set(name, spec.slice(eq + 1).trim());
  }
  return tags;
}

/** Does this TXT record claim to be a DKIM key record? (v=DKIM1 first, or a p= tag.) */
function looksLikeDkim(text: string): boolean {
  return /^\s*v\s*=\s*DKIM1\s*(;|$)/.test(text) || /(^|;)\s*p\s*=/.test(text);
}

interface Verdict {
  readonly ok: boolean;
  readonly problems: string[];
  readonly warnings: string[];
}

/** One record against the key: what a verifier would make of our signatures. */
export function judgeRecord(key: Pick<DkimKey, 'algorithm' | 'publicKeyBase64'>, text: string): Verdict {
  const problems: string[] = [];
  const warnings: string[] = [];
  const tags = parseTagList(text);
  if (typeof tags === 'string') return { ok: false, problems: [`the record does not parse: ${tags}`], warnings };
  const v = tags.get('v');
  // v= is optional, but when present it must be first and DKIM1 (§3.6.1).
  if (v !== undefined && (v !== 'DKIM1' || tags.keys().next().value !== 'v')) problems.push(`v=${v} must be the first tag and DKIM1`);
  const ours = keyType(key.algorithm);
  const k = tags.get('k') ?? 'rsa';
  if (k !== ours) problems.push(`k=${k}${tags.has('k') ? '' : ' (the default)'} but the key is ${ours}: add k=${ours}`);
  const h = tags.get('h');
  if (h !== undefined && !h.split(':').map((x) => x.trim()).includes('sha256')) problems.push(`h=${h} does not allow sha256, which we sign with`);
  const s = tags.get('s');
  if (s !== undefined && !s.split(':').map((x) => x.trim()).some((x) => x === '*' || x === 'email')) problems.push(`s=${s} does not allow email`);
  const flags = (tags.get('t') ?? '').split(':').map((x) => x.trim());
  if (flags.includes('y')) warnings.push('t=y: the domain is testing DKIM; verifiers may ignore failed signatures (remove t=y when done)');
  const p = tags.get('p');
  if (p === undefined) problems.push('no p= tag');
  else if (p.replace(/\s+/g, '') === '') problems.push('p= is empty: the key is revoked');
  else {
    const published = publishedKey(p.replace(/\s+/g, ''), ours);
    if (published === undefined) problems.push(`p= is not a valid ${ours} public key`);
    else if (published !== key.publicKeyBase64) problems.push('p= is a different key');
  }
  return { ok: problems.length === 0, problems, warnings };
}

/** p= in our canonical form (RSA: SPKI DER, Ed25519: raw 32 bytes), or undefined when unreadable. */
function publishedKey(p: string, type: 'rsa' | 'ed25519'): string | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(p)) return undefined;
  const der = Buffer.from(p, 'base64');
  if (type === 'ed25519') return der.length === 32 ? der.toString('base64') : undefined;
  // Some tools publish the bare PKCS#1 RSAPublicKey; verifiers built on OpenSSL accept both.
  for (const t of ['spki', 'pkcs1'] as const) {
    try {
      const k = createPublicKey({ key: der, format: 'der', type: t });
      if (k.asymmetricKeyType === 'rsa') return k.export({ type: 'spki', format: 'der' }).toString('base64');
    } catch { /* try the next encoding */ }
  }
  return undefined;
}

/** Compares the TXT records found at the key's name (each joined) with the key. */
export function compareRecords(key: DkimKey, records: readonly string[]): DkimCheckResult {
  const base = { domain: key.domain, selector: key.selector, algorithm: key.algorithm, name: dnsRecordName(key), published: records };
  const dkim = records.filter(looksLikeDkim);
  if (dkim.length === 0) {
    return { ...base, status: 'missing', detail: records.length ? `TXT at ${base.name} holds no DKIM key record` : `no TXT record at ${base.name}`, warnings: [] };
  }
  const verdicts = dkim.map((r) => judgeRecord(key, r));
  const warnings = [...new Set(verdicts.flatMap((v) => v.warnings))];
  if (verdicts.every((v) => v.ok)) {
    if (dkim.length > 1) warnings.push(`${dkim.length} identical DKIM records at ${base.name}; one is enough`);
    return { ...base, status: 'match', warnings };
  }
  const problems = [...new Set(verdicts.flatMap((v) => v.problems))];
  // RFC 6376 §3.6.2.2: with several records the verifier's choice is undefined.
  const several = dkim.length > 1 ? `${dkim.length} DKIM records at ${base.name}, verifiers pick any one; ` : '';
  return { ...base, status: 'mismatch', detail: `${several}${problems.join('; ')}`, warnings };
}

/** Looks the key's record up and compares. Never throws for DNS failures: they are `temperror`. */
export async function checkPublished(key: DkimKey, resolver: DnsResolver): Promise<DkimCheckResult> {
  const name = dnsRecordName(key);
  let txt: string[][];
  try {
    txt = await lookup(resolver, name, 'TXT');
  } catch (err) {
    if (isVoidLookup(err)) return compareRecords(key, []);
    const e = toDnsError(err, name, 'TXT');
    return {
      domain: key.domain, selector: key.selector, algorithm: key.algorithm, name,
      status: 'temperror', detail: `DNS lookup failed: ${e.code}`, warnings: [], published: [],
    };
  }
  return compareRecords(key, txt.map((strings) => strings.join('')));
}
