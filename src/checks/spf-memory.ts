// One memory of recent SPF verdicts for the whole daemon: the policy service
// decides SPF at RCPT, the milter reads the same verdict at end of message
// (the issue's "SPF is taken from the policy service's result for the same
// message"), so check_host() runs at most once per message. Keyed by what
// the verdict depends on: client IP, HELO name and the whole envelope sender
// (SPF macros such as %{l} and the Received-SPF text use it).
//
// It is the policy engine's SPF VerdictCache (TTL-bound, temperrors never
// stored), with a note of who computed each verdict, for the milter's log.
import { normalizeIp } from '../core/network.ts';
import { VerdictCache } from '../policy/verdict-cache.ts';
import type { SpfVerdict } from './spf.ts';
import { canonicalIp } from './fcrdns.ts';

/** Who computed a remembered verdict. */
export type SpfSource = 'policy' | 'milter';

/**
 * Verdicts are reused for up to a minute, long enough for a client's burst of
 * messages; the policy engine stores them with a maxLifeMs, so a verdict built from
 * shorter-lived DNS answers (an A record with a 30 s TTL) lives only as long.
 */
export const SPF_MEMORY_TTL_MS = 60_000;
export const SPF_MEMORY_ENTRIES = 50_000;

/** The key of the MAIL FROM (or, for the null sender, HELO) verdict of one transaction. */
export function spfMemoryKey(clientIp: string, helo: string, sender: string): string {
  // Postfix writes the address one way to the policy service and another to the milter (brackets, ::ffff:, case).
  const n = normalizeIp(clientIp);
  const ip = (n !== undefined ? canonicalIp(n) : undefined) ?? clientIp.trim();
  return `mfrom ${ip} ${helo.trim().toLowerCase()} ${sender.trim().toLowerCase()}`;
}

export class SpfMemory extends VerdictCache<SpfVerdict> {
  readonly #source = new WeakMap<SpfVerdict, SpfSource>();

  constructor(ttlMs: number = SPF_MEMORY_TTL_MS, maxEntries: number = SPF_MEMORY_ENTRIES) {
    super(ttlMs, maxEntries);
  }

  /** The policy engine's store (through() and its DNS-bounded set): the verdict counts as the policy service's. */
  override set(key: string, value: SpfVerdict, now: number, maxLifeMs = Infinity): void {
    this.store(key, value, now, 'policy', maxLifeMs);
  }

  /** Stores a verdict computed by `source`. Temperrors are not for reuse and are ignored. */
  store(key: string, value: SpfVerdict, now: number, source: SpfSource, maxLifeMs = Infinity): void {
    if (value.result === 'temperror') return;
    if (!this.#source.has(value)) this.#source.set(value, source);
    super.set(key, value, now, maxLifeMs);
  }

  /** The verdict for (ip, helo, sender) and who computed it, when one from the last minute is known. */
  recall(clientIp: string, helo: string, sender: string, now: number): { verdict: SpfVerdict; source: SpfSource } | undefined {
    const verdict = this.get(spfMemoryKey(clientIp, helo, sender), now);
    return verdict ? { verdict, source: this.#source.get(verdict) ?? 'policy' } : undefined;
  }
}
