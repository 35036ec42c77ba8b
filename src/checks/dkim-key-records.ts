// DKIM/ARC key records, parsed once for many messages. mailauth looks keys up
// through a per-message cache (tools.createKeyCache) and so parses and
// re-exports the same public key for every message a domain sends: about a
// fifth of a verification's CPU. This cache has the same shape and the same
// key (everything that changes getPublicKey's answer), lives across messages
// (a TtlCache), and keeps an answer for at most `ttlMs`, so a revoked or rotated key is
// seen within that time even when DNS would allow longer.
import { createRequire } from 'node:module';
import { TtlCache } from '../core/ttl-cache.ts';

/** What mailauth's getPublicKey() resolves to; opaque to us. */
type KeyRecord = unknown;
type MailauthResolver = unknown;
interface LookupOptions { readonly strict?: boolean; readonly hashAlgo?: string }

const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  getPublicKey(type: string, name: string, minBitLength: number | undefined, resolver: MailauthResolver, options?: LookupOptions): Promise<KeyRecord>;
};

/** mailauth's key cache interface (createKeyCache): ARC validation reuses it only when `resolver` is the one it was given. */
export interface MailauthKeyCache {
  readonly resolver: MailauthResolver;
  get(type: string, name: string, minBitLength?: number, options?: LookupOptions): Promise<KeyRecord>;
}

export class DkimKeyRecordCache {
  readonly #records: TtlCache<Promise<KeyRecord>>;

  constructor(ttlMs = 60_000, maxEntries = 10_000) {
    this.#records = new TtlCache(ttlMs, maxEntries);
  }

  get hits(): number { return this.#records.hits; }
  get misses(): number { return this.#records.misses; }
  get size(): number { return this.#records.size; }

  /** The view one message's verifier uses, bound to that message's resolver object. */
  forMessage(resolver: MailauthResolver): MailauthKeyCache {
    return { resolver, get: (type, name, minBitLength, options) => this.#get(type, name, minBitLength, options, resolver) };
  }

  #get(type: string, name: string, minBitLength: number | undefined, options: LookupOptions | undefined, resolver: MailauthResolver): Promise<KeyRecord> {
    const key = `${type}:${options?.strict === true}:${minBitLength ?? ''}:${options?.hashAlgo ?? ''}:${name.toLowerCase()}`;
    const now = Date.now();
    const hit = this.#records.get(key, now);
    if (hit) return hit;
    const record = tools.getPublicKey(type, name, minBitLength, resolver, options);
    // Only answers are kept: a failure (no key, DNS trouble) is shared by the messages already waiting for it, then dropped.
    record.catch(() => this.#records.delete(key, record));
    this.#records.set(key, record, now);
    return record;
  }
}
