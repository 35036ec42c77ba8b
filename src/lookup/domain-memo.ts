// Every map lookup starts with the recipient's domain row, and a host has few
// domains: remembering them spares a remote directory one round trip per cold
// lookup. Dropped on every directory change, like the answer cache.
import { TtlCache } from '../core/ttl-cache.ts';
import type { DirectoryBackend, DirectoryReader, Domain } from '../directory/types.ts';

const MAX_DOMAINS = 100_000;

export class DomainMemo implements DirectoryReader {
  readonly #dir: DirectoryBackend;
  /** Unknown names are remembered too (a spam run asks for many), within the size bound. */
  readonly #domains: TtlCache<Domain | undefined>;

  constructor(dir: DirectoryBackend, ttlMs: number) {
    this.#dir = dir;
    this.#domains = new TtlCache(ttlMs, MAX_DOMAINS);
    dir.onChange(() => this.#domains.flush());
  }

  async findDomain(name: string): Promise<Domain | undefined> {
    const now = Date.now();
    const hit = this.#domains.entry(name, now);
    if (hit) return hit.value;
    const generation = this.#domains.generation;
    const domain = await this.#dir.findDomain(name);
    this.#domains.setIfCurrent(name, domain, now, generation);
    return domain;
  }

  findMailbox(address: string) { return this.#dir.findMailbox(address); }
  findAlias(address: string) { return this.#dir.findAlias(address); }
  findSenderGrants(address: string) { return this.#dir.findSenderGrants(address); }
}
