// Where a recipient lives, answered from the same maps Postfix reads over the
// socketmap, so the policy service and Postfix can never disagree about
// which domains are ours and which addresses exist.
import { parseAddress, normalizeDomain } from '../core/address.ts';
import type { LookupService } from '../lookup/service.ts';

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
  const text = recipient.trim();
  // A source route (@relay:user@host, RFC 5321 §4.1.2 / Appendix C) is routing by the client.
  if (text.startsWith('@')) return { kind: 'invalid', reason: 'source route' };
  const at = text.lastIndexOf('@');
  if (at <= 0) return { kind: 'invalid', reason: text === '' ? 'empty recipient' : 'no domain' };
  const domain = normalizeDomain(text.slice(at + 1).replace(/^\[|\]$/g, ''));
  if (!domain) return { kind: 'invalid', reason: 'domain is not a host name' };
  const [mailboxDomain, aliasDomain] = await Promise.all([
    lookups.lookup('virtual_mailbox_domains', domain),
    lookups.lookup('virtual_alias_domains', domain),
  ]);
  if (!mailboxDomain.found && !aliasDomain.found) return { kind: 'remote', domain };
  const address = parseAddress(text);
  if (!address) return { kind: 'local', exists: false, domain, rule: 'not a valid address' };
  const alias = await lookups.lookup('virtual_alias_maps', text);
  if (alias.found) return { kind: 'local', exists: true, domain, rule: alias.rule };
  if (aliasDomain.found) return { kind: 'local', exists: false, domain, rule: alias.rule };
  const mailbox = await lookups.lookup('virtual_mailbox_maps', text);
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
