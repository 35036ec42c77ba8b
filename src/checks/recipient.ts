// Where a recipient lives, answered from the same maps Postfix reads over the
// socketmap, so the policy service and Postfix can never disagree about
// which domains are ours and which addresses exist.
import { parseAddress, normalizeDomain } from '../core/address.ts';
import type { LookupService } from '../lookup/service.ts';
import { withLookups, type MapReader } from './map-reader.ts';

export type RecipientVerdict =
  /** One of our domains and the address is deliverable (mailbox, alias, catch-all, alias domain). */
  | { readonly kind: 'local'; readonly exists: true; readonly domain: string; readonly rule: string }
  /** One of our domains, and nothing accepts this address. */
  | { readonly kind: 'local'; readonly exists: false; readonly domain: string; readonly rule: string }
  /** Not a domain we host: delivering there is relaying. */
  | { readonly kind: 'remote'; readonly domain: string }
  /** Not an address we can reason about (Postfix normally refuses these itself). */
  | { readonly kind: 'invalid'; readonly reason: string };

/** Mail routing operators in a local part: user%host, user!host, "user@host" (Postfix allow_untrusted_routing). */
const ROUTING = /[%!@]/;

/**
 * Classifies an envelope recipient. Throws DirectoryError('unavailable') when
 * the directory cannot answer (the caller answers "try later").
 */
export async function classifyRecipient(lookups: LookupService, recipient: string): Promise<RecipientVerdict> {
  return withLookups(lookups, (read) => classifyRecipientWith(read, recipient));
}

/** What a recipient's text alone says (no directory): where to look, or the verdict already. */
interface ParsedRecipient {
  /** Set when the text alone decides (source route, no domain, not a host name). */
  readonly verdict?: RecipientVerdict;
  /** The trimmed text, as the maps are asked. */
  readonly text: string;
  readonly domain: string;
  /** A complete, valid address (else: one of our domains, but nothing can exist there). */
  readonly valid: boolean;
}

/**
 * Parsed recipients, by text: parsing is pure, and a busy MX sees the same
 * recipients over and over. Bounded in entries and (RFC 5321's 256-octet
 * path limit) in key length; starts over when full.
 */
const parsedRecipients = new Map<string, ParsedRecipient>();
const PARSED_RECIPIENTS_MAX = 20_000;
const PARSED_RECIPIENT_MAX_LENGTH = 256;

function parseRecipient(recipient: string): ParsedRecipient {
  if (recipient.length > PARSED_RECIPIENT_MAX_LENGTH) return parseRecipientText(recipient);
  let p = parsedRecipients.get(recipient);
  if (p === undefined) {
    p = parseRecipientText(recipient);
    if (parsedRecipients.size >= PARSED_RECIPIENTS_MAX) parsedRecipients.clear();
    parsedRecipients.set(recipient, p);
  }
  return p;
}

function parseRecipientText(recipient: string): ParsedRecipient {
  const text = recipient.trim();
  const invalid = (reason: string): ParsedRecipient => ({ verdict: { kind: 'invalid', reason }, text, domain: '', valid: false });
  // A source route (@relay:user@host, RFC 5321 §4.1.2 / Appendix C) is routing by the client.
  if (text.startsWith('@')) return invalid('source route');
  const at = text.lastIndexOf('@');
  if (at <= 0) return invalid(text === '' ? 'empty recipient' : 'no domain');
  const domain = normalizeDomain(text.slice(at + 1).replace(/^\[|\]$/g, ''));
  if (!domain) return invalid('domain is not a host name');
  return { text, domain, valid: parseAddress(text) !== undefined };
}

/** classifyRecipient over a MapReader: undefined while an answer it needs is not at hand. */
export function classifyRecipientWith(read: MapReader, recipient: string): RecipientVerdict | undefined {
  const { verdict, text, domain, valid } = parseRecipient(recipient);
  if (verdict !== undefined) return verdict;
  // Both asked before either is awaited: a cold cache fetches them together.
  const mailboxDomain = read('virtual_mailbox_domains', domain);
  const aliasDomain = read('virtual_alias_domains', domain);
  if (mailboxDomain === undefined || aliasDomain === undefined) return undefined;
  if (!mailboxDomain.found && !aliasDomain.found) return { kind: 'remote', domain };
  if (!valid) return { kind: 'local', exists: false, domain, rule: 'not a valid address' };
  const alias = read('virtual_alias_maps', text);
  if (alias === undefined) return undefined;
  if (alias.found) return { kind: 'local', exists: true, domain, rule: alias.rule };
  if (aliasDomain.found) return { kind: 'local', exists: false, domain, rule: alias.rule };
  const mailbox = read('virtual_mailbox_maps', text);
  if (mailbox === undefined) return undefined;
  return mailbox.found
    ? { kind: 'local', exists: true, domain, rule: mailbox.rule }
    : { kind: 'local', exists: false, domain, rule: `${mailbox.rule}; ${alias.rule}` };
}

/** True when the local part carries a routing operator a remote client must not use (user%host@our.domain). */
export function hasSenderSpecifiedRouting(recipient: string): boolean {
  const at = recipient.lastIndexOf('@');
  const local = at < 0 ? recipient : recipient.slice(0, at);
  return ROUTING.test(local.replace(/^"|"$/g, ''));
}
