// Send-rate limits per SASL login, counted in the shared policy state so all
// instances enforce one limit (policyd-rate-limit's messages and recipients
// count modes, both at once).
//
// Counting happens once per message, at DATA, with Postfix's recipient_count
// (postfix.md §5 pitfall 4: RCPT is per recipient, and a recipient refused
// later must not count). Checking happens at every RCPT and counts nothing:
// a recipient is refused when accepting it would take the login over a limit,
// counting the recipients already accepted for this message, so a message is
// refused at the RCPT that would overflow instead of slipping through at DATA.
//
// Messages in flight in parallel sessions are not counted until their DATA,
// so N concurrent sessions can overshoot a limit by up to N-1 messages (and
// their recipients). The window is approximate by at most window/12 in the
// strict direction (src/state/window.ts).
import type { PolicyStateStore, WindowCount } from '../state/types.ts';
import { waitUntilBelow } from '../state/window.ts';

export interface RateLimit {
  readonly count: number;
  readonly windowMs: number;
}

export interface SendLimits {
  messages?: RateLimit;
  recipients?: RateLimit;
}

export interface SendRate {
  readonly allowed: boolean;
  /** Messages counted in the messages window (0 when that limit is off). */
  readonly messages: number;
  /** Recipients counted in the recipients window (0 when that limit is off). */
  readonly recipients: number;
  /** The limit that refused. */
  readonly limit?: 'messages' | 'recipients';
  /**
   * When a retry could succeed. Absent when refused and it never will: the
   * recipients of this one message alone exceed the limit.
   */
  readonly retryAfterMs?: number;
}

/** The counter key: `sasl:<login>:messages`. The caller passes the login in canonical form. */
export function rateKey(login: string, what: 'messages' | 'recipients'): string {
  return `sasl:${login}:${what}`;
}

/**
 * At RCPT: may this recipient be accepted? `pendingRecipients` are the ones
 * already accepted for this message (counted at its DATA, not yet). One read.
 */
export async function checkSendRate(
  store: PolicyStateStore,
  input: { readonly login: string; readonly now: number; readonly pendingRecipients?: number },
  limits: SendLimits,
): Promise<SendRate> {
  const { login, now } = input;
  const pending = input.pendingRecipients ?? 0;
  const kinds = configured(limits);
  if (kinds.length === 0) return { allowed: true, messages: 0, recipients: 0 };
  const counts = await store.readCounters(kinds.map(([what, l]) => ({ key: rateKey(login, what), windowMs: l.windowMs })), now);
  const totals = totalsOf(kinds, counts);
  // This message adds one message and, with this recipient, pending + 1 recipients.
  for (const [i, [what, l]] of kinds.entries()) {
    const add = what === 'messages' ? 1 : pending + 1;
    const count = counts[i]!;
    if (count.total + add <= l.count) continue;
    const wait = waitUntilBelow(count, add, l.count, now);
    return { allowed: false, ...totals, limit: what, ...(wait !== undefined ? { retryAfterMs: Math.max(1, wait) } : {}) };
  }
  return { allowed: true, ...totals };
}

/** At DATA: counts the message and its recipients, once. Returns the totals including it. */
export async function recordMessage(
  store: PolicyStateStore,
  input: { readonly login: string; readonly recipients: number; readonly now: number },
  limits: SendLimits,
): Promise<{ readonly messages: number; readonly recipients: number }> {
  const kinds = configured(limits);
  if (kinds.length === 0) return { messages: 0, recipients: 0 };
  const recipients = Math.max(0, Math.trunc(input.recipients));
  const counts = await store.addToCounters(kinds.map(([what, l]) => ({
    key: rateKey(input.login, what), windowMs: l.windowMs, amount: what === 'messages' ? 1 : recipients,
  })), input.now);
  return totalsOf(kinds, counts);
}

type Kind = ['messages' | 'recipients', RateLimit];

function configured(limits: SendLimits): Kind[] {
  const kinds: Kind[] = [];
  if (limits.messages) kinds.push(['messages', limits.messages]);
  if (limits.recipients) kinds.push(['recipients', limits.recipients]);
  return kinds;
}

function totalsOf(kinds: readonly Kind[], counts: readonly WindowCount[]): { messages: number; recipients: number } {
  const out = { messages: 0, recipients: 0 };
  kinds.forEach(([what], i) => { out[what] = counts[i]?.total ?? 0; });
  return out;
}
