// Header helpers for the milter: rebuilding the message header byte for byte
// from SMFIC_HEADER packets, finding the headers we must delete, and turning
// header text into what SMFIR_INSHEADER wants (postfix.md §3.5, §5 pitfall 15).
import { normalizeDomain } from '../core/address.ts';

/** One header as Postfix sent it (HDR_LEADSPC: the value keeps its leading whitespace; folds are bare LF). */
export interface ReceivedHeader {
  readonly name: string;
  readonly value: Buffer;
}

const CRLF = Buffer.from('\r\n');
const LF = 0x0a;
const CR = 0x0d;

/**
 * The header line as it was on the wire: `name:value` CRLF, the value's LF
 * folds turned back into CRLF. With SMFIP_HDR_LEADSPC Postfix keeps the
 * space after the colon, so nothing is added.
 */
export function headerBytes(h: ReceivedHeader): Buffer {
  const name = Buffer.from(`${h.name}:`, 'latin1');
  const v = h.value;
  let lfs = 0;
  for (let i = v.indexOf(LF); i >= 0; i = v.indexOf(LF, i + 1)) if (v[i - 1] !== CR) lfs++;
  if (lfs === 0) return Buffer.concat([name, v, CRLF], name.length + v.length + 2);
  const out = Buffer.allocUnsafe(name.length + v.length + lfs + 2);
  let at = name.copy(out, 0);
  let from = 0;
  for (let i = v.indexOf(LF); i >= 0; i = v.indexOf(LF, i + 1)) {
    if (v[i - 1] === CR) continue;
    at += v.copy(out, at, from, i);
    out[at++] = CR;
    from = i; // the LF itself is copied with the next piece
  }
  at += v.copy(out, at, from);
  out[at++] = CR;
  out[at++] = LF;
  return out;
}

/** The whole header section plus the empty line that ends it. */
export function headerSection(headers: readonly ReceivedHeader[]): Buffer {
  return Buffer.concat([...headers.map(headerBytes), CRLF]);
}

/** Value text on one line: folds removed, outer whitespace trimmed. */
export function unfold(value: Buffer | string): string {
  const text = typeof value === 'string' ? value : value.toString('utf8');
  return text.replace(/\r?\n(?=[ \t])/g, '').trim();
}

/** Removes RFC 5322 comments (one nesting level is plenty for the fields we read). */
function stripComments(text: string): string {
  let out = text;
  for (let k = 0; k < 4 && out.includes('('); k++) out = out.replace(/\((?:\\.|[^()\\])*\)/g, ' ');
  return out;
}

/** The authserv-id of an Authentication-Results value (RFC 8601 §2.2), lower case; undefined when unreadable. */
export function authservIdOf(value: Buffer | string): string | undefined {
  const text = stripComments(unfold(value)).trim();
  const m = /^("(?:\\.|[^"\\])*"|[^\s;"]+)/.exec(text);
  if (!m) return undefined;
  const id = m[1]!.startsWith('"') ? m[1]!.slice(1, -1).replace(/\\(.)/g, '$1') : m[1]!;
  return id.toLowerCase();
}

/**
 * CHGHEADER indexes (1-based, per name, case-insensitive, as Postfix counts
 * them) of the headers called `name` that match, last first: Postfix removes
 * a deleted header at once, so deleting from the bottom keeps the rest valid.
 */
export function headerIndexes(headers: readonly ReceivedHeader[], name: string, match: (h: ReceivedHeader) => boolean): number[] {
  const wanted = name.toLowerCase();
  const out: number[] = [];
  let n = 0;
  for (const h of headers) {
    if (h.name.toLowerCase() !== wanted) continue;
    n++;
    if (match(h)) out.push(n);
  }
  return out.reverse();
}

/** The domain of the first address in a From: (or any address-list) value, lower case. */
export function firstAddressDomain(value: Buffer | string): string | undefined {
  const text = stripComments(unfold(value));
  // An angle-addr wins; else the first bare addr-spec.
  const angle = /<\s*([^<>\s]*@[^<>\s]+)\s*>/.exec(text);
  const bare = angle ? undefined : /([^\s<>,;:"]+@[^\s<>,;:"]+)/.exec(text);
  const addr = angle?.[1] ?? bare?.[1];
  if (!addr) return undefined;
  return normalizeDomain(addr.slice(addr.lastIndexOf('@') + 1).replace(/[.>]+$/, ''));
}

/** The domain of an envelope address like `<user@example.org>`; undefined for the null sender. */
export function envelopeDomain(address: string): string | undefined {
  const a = address.trim().replace(/^<|>$/g, '');
  const at = a.lastIndexOf('@');
  return at < 0 ? undefined : normalizeDomain(a.slice(at + 1));
}

/** A tag=value list (DKIM-Signature, ARC-Seal) as a map of lower-case tag names to trimmed values. */
export function tagList(value: Buffer | string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of unfold(value).split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    out.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ''));
  }
  return out;
}

/** d= of the ARC-Seal with the highest i=: the ADMD that handed the message to us (RFC 8617 §5.2). */
export function newestArcSealer(headers: readonly ReceivedHeader[]): string | undefined {
  let best = 0;
  let domain: string | undefined;
  for (const h of headers) {
    if (h.name.toLowerCase() !== 'arc-seal') continue;
    const tags = tagList(h.value);
    const i = Number(tags.get('i'));
    if (Number.isInteger(i) && i > best) {
      best = i;
      domain = normalizeDomain(tags.get('d') ?? '');
    }
  }
  return domain;
}

/**
 * A header value for INSHEADER/ADDHEADER/CHGHEADER under SMFIP_HDR_LEADSPC:
 * it brings its own leading space (Postfix writes `Name:value`), and folds are
 * LF + whitespace (CRLF would reach the queue file as CR CR LF).
 */
export function milterValue(text: string): string {
  const lf = text.replace(/\r\n/g, '\n').replace(/\r/g, '');
  return /^[ \t]/.test(lf) ? lf : ` ${lf}`;
}

/**
 * Splits header text as mailauth returns it (`Name: value\r\n\tmore\r\nName2: ...`)
 * into fields, each value with its leading space and CRLF folds.
 */
export function splitHeaderFields(text: string): Array<{ name: string; value: string }> {
  const out: Array<{ name: string; value: string }> = [];
  for (const line of text.split('\r\n')) {
    if (line === '') continue;
    const last = out[out.length - 1];
    if (/^[ \t]/.test(line) && last) {
      last.value += `\r\n${line}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    out.push({ name: line.slice(0, colon), value: line.slice(colon + 1) });
  }
  return out;
}

/** Is `domain` equal to or below one of `list` (both lower case)? */
export function domainMatches(domain: string, list: readonly string[]): boolean {
  return list.some((d) => domain === d || domain.endsWith(`.${d}`));
}
