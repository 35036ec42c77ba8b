// Mail address and domain normalisation shared by every service.
// Canonical form: domain as lower-case A-label without trailing dot, local part
// unquoted, NFC-normalised and lower-cased (mailwarden treats local parts as
// case-insensitive, like nearly every mail host does).
import { domainToASCII } from 'node:url';

export interface MailAddress {
  /** Canonical local part (unquoted, lower case). */
  readonly local: string;
  /** Canonical domain (lower-case A-label). */
  readonly domain: string;
}

export class AddressError extends Error {
  override readonly name = 'AddressError';
}

const MAX_DOMAIN = 253;
const MAX_LABEL = 63;
const MAX_LOCAL = 64;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
// RFC 5322 dot-atom text, extended with UTF-8 (RFC 6531).
const ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10FFFF}-]+$/u;

/**
 * Canonical form of a domain name, or undefined when it is not a valid host
 * name (IP literals, empty labels, leading dot, wildcard...).
 */
export function normalizeDomain(input: string): string | undefined {
  let name = input.trim();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name === '' || name.length > MAX_DOMAIN * 4) return undefined;
  // domainToASCII lower-cases, applies UTS #46 and returns '' when invalid.
  const ascii = /^[\x21-\x7e]*$/.test(name) ? name.toLowerCase() : domainToASCII(name);
  if (ascii === '' || ascii.length > MAX_DOMAIN) return undefined;
  const labels = ascii.split('.');
  if (labels.length < 2) return undefined;
  for (const label of labels) {
    if (label.length > MAX_LABEL || !LABEL.test(label)) return undefined;
  }
  // The top-level label of a host name is never all-numeric (RFC 3696 §2).
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return undefined;
  return ascii;
}

/** Unquotes and canonicalises a local part; undefined when invalid. */
export function normalizeLocalPart(input: string): string | undefined {
  let local = input;
  if (local.length >= 2 && local.startsWith('"') && local.endsWith('"')) {
    local = local.slice(1, -1).replace(/\\(.)/gu, '$1');
    if (local === '' || /[\r\n\0]/.test(local)) return undefined;
  } else {
    if (!ATOM.test(local.replaceAll('.', 'a')) || local.startsWith('.') || local.endsWith('.') || local.includes('..')) {
      return undefined;
    }
  }
  local = local.normalize('NFC').toLowerCase();
  if (Buffer.byteLength(local) > MAX_LOCAL) return undefined;
  return local;
}

/**
 * Parses `local@domain` (local part possibly quoted). Returns undefined for
 * anything that is not a complete address: `""`, `<>`, `*`, `@domain`, `.domain`.
 */
export function parseAddress(input: string): MailAddress | undefined {
  let text = input.trim();
  if (text.startsWith('<') && text.endsWith('>')) text = text.slice(1, -1);
  const at = text.lastIndexOf('@');
  if (at <= 0 || at === text.length - 1) return undefined;
  const local = normalizeLocalPart(text.slice(0, at));
  const domain = normalizeDomain(text.slice(at + 1));
  if (local === undefined || domain === undefined) return undefined;
  return { local, domain };
}

/** Like parseAddress but throws an AddressError with a reason. */
export function requireAddress(input: string): MailAddress {
  const address = parseAddress(input);
  if (!address) throw new AddressError(`invalid mail address: ${JSON.stringify(input)}`);
  return address;
}

export function requireDomain(input: string): string {
  const domain = normalizeDomain(input);
  if (!domain) throw new AddressError(`invalid domain name: ${JSON.stringify(input)}`);
  return domain;
}

const NEEDS_QUOTES = /^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10FFFF}-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10FFFF}-]+)*)$/u;

/** External (RFC 5321) form: quotes the local part when it is not a dot-atom. */
export function formatAddress(address: MailAddress): string {
  const local = NEEDS_QUOTES.test(address.local) ? address.local : `"${address.local.replace(/(["\\])/g, '\\$1')}"`;
  return `${local}@${address.domain}`;
}

/**
 * The key an address is stored and looked up under: the external form, so a
 * stored key always parses back to the same address ("john doe"@example.org).
 */
export function addressKey(address: MailAddress): string {
  return formatAddress(address);
}

/**
 * Postfix's split_addr(): the local part splits at the first character from
 * the delimiter set, except for reserved names and when the base would be
 * empty. The delimiter actually found is kept so the extension can be
 * re-attached exactly as the sender wrote it.
 */
export function splitExtension(
  local: string,
  delimiters: string,
): { base: string; delimiter: string; extension: string } | undefined {
  if (delimiters === '') return undefined;
  if (local === 'postmaster' || local === 'mailer-daemon' || local === 'double-bounce') return undefined;
  if (delimiters.includes('-') && (local.startsWith('owner-') || (local.length > 8 && local.endsWith('-request')))) {
    return undefined;
  }
  for (let i = 0; i < local.length; i++) {
    if (delimiters.includes(local[i]!)) {
      if (i === 0) return undefined;
      return { base: local.slice(0, i), delimiter: local[i]!, extension: local.slice(i + 1) };
    }
  }
  return undefined;
}

/** Re-attaches an extension to the local part of a target address (Postfix propagate_unmatched_extensions). */
export function withExtension(address: MailAddress, delimiter: string, extension: string): MailAddress {
  return { local: `${address.local}${delimiter}${extension}`, domain: address.domain };
}

/** `@domain` catch-all key. */
export function catchAllKey(domain: string): string {
  return `@${domain}`;
}

/**
 * An address or a whole domain (`@domain`), as catch-alls and sender grants
 * name them: the canonical key and the domain it belongs to.
 */
export function parseAddressOrDomain(text: string): { key: string; domain: string } | undefined {
  const t = text.trim();
  if (t.startsWith('@')) {
    const domain = normalizeDomain(t.slice(1));
    return domain ? { key: catchAllKey(domain), domain } : undefined;
  }
  const a = parseAddress(t);
  return a ? { key: addressKey(a), domain: a.domain } : undefined;
}

/** Sender grants name an address or a whole domain (`@domain`). */
export function grantAddress(text: string): string | undefined {
  return parseAddressOrDomain(text)?.key;
}
