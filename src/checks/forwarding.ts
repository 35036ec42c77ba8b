// Where mail for a recipient ends up after Postfix's virtual alias expansion:
// does an alias forward it outside our domains? The milter asks at RCPT (it
// sees the envelope as the client gave it; cleanup expands virtual_alias_maps
// later, out of its sight) to decide whether to ARC-seal the message.
//
// Expansion follows Postfix's cleanup (cleanup_map1n.c): each address is
// looked up in virtual_alias_maps, the same lookup the socketmap answers;
// every result address is expanded again, except one equal to the address
// looked up (an alias that also delivers to itself); an address without an
// entry is final. Whether a final address is ours is classifyRecipient's
// verdict, the one the policy service uses for relay decisions.
import type { LookupService } from '../lookup/service.ts';
import { classifyRecipient } from './recipient.ts';

export interface ForwardingVerdict {
  readonly recipient: string;
  /** Final addresses outside our domains, in expansion order. */
  readonly foreign: readonly string[];
  /** How many final addresses are ours (mailboxes, or aliases delivered as is). */
  readonly local: number;
  /** The expansion hit a limit (Postfix would refuse it too); the addresses seen so far are reported. */
  readonly truncated: boolean;
}

export interface ForwardingLimits {
  /** Postfix virtual_alias_recursion_limit (1000). */
  readonly maxDepth: number;
  /** Postfix virtual_alias_expansion_limit (1000): addresses looked at per recipient. */
  readonly maxAddresses: number;
}

export const FORWARDING_LIMITS: ForwardingLimits = { maxDepth: 1000, maxAddresses: 1000 };

/**
 * Expands one envelope recipient. Throws DirectoryError('unavailable') when
 * the directory cannot answer (the caller decides what that means).
 */
export async function forwardingOf(lookups: LookupService, recipient: string, limits: ForwardingLimits = FORWARDING_LIMITS): Promise<ForwardingVerdict> {
  const foreign: string[] = [];
  const seen = new Set<string>();
  let local = 0;
  let truncated = false;

  const expand = async (address: string, depth: number): Promise<void> => {
    const key = address.toLowerCase();
    // A loop (a -> b -> a) or a target reached twice: counted once.
    if (seen.has(key)) return;
    if (seen.size >= limits.maxAddresses) {
      truncated = true;
      return;
    }
    seen.add(key);
    const where = await classifyRecipient(lookups, address);
    if (where.kind === 'invalid') return;
    if (where.kind === 'remote') {
      foreign.push(address);
      return;
    }
    // Unknown at one of our domains: Postfix bounces it, nothing is forwarded.
    if (!where.exists) return;
    const alias = await lookups.lookup('virtual_alias_maps', address);
    if (!alias.found || !alias.value) {
      local++;
      return;
    }
    if (depth >= limits.maxDepth) {
      truncated = true;
      return;
    }
    for (const target of alias.value.split(',')) {
      const t = target.trim();
      if (t === '') continue;
      // Postfix delivers an address that expands to itself as is (user@x -> user@x, copy@y).
      if (t.toLowerCase() === key) local++;
      else await expand(t, depth + 1);
    }
  };

  await expand(recipient.trim().replace(/^<|>$/g, ''), 0);
  return { recipient, foreign, local, truncated };
}
