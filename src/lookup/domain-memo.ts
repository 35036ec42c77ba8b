// Every map lookup starts with the recipient's domain row, and a host has few
// domains: remembering them spares a remote directory one round trip per cold
// lookup. Dropped on every directory change, like the answer cache.
import type { DirectoryBackend, DirectoryReader, Domain } from '../directory/types.ts';

const MAX_DOMAINS = 100_000;

export class DomainMemo implements DirectoryReader {
  readonly #dir: DirectoryBackend;
  readonly #ttlMs: number;
  #domains = new Map<string, { domain: Domain | undefined; expires: number }>();
  #generation = 0;

  constructor(dir: DirectoryBackend, ttlMs: number) {
    this.#dir = dir;
    this.#ttlMs = ttlMs;
    dir.onChange(() => {
      this.#generation++;
      this.#domains = new Map();
    });
  }

  async findDomain(name: string): Promise<Domain | undefined> {
    const now = Date.now();
    const hit = this.#domains.get(name);
    if (hit && hit.expires > now) return hit.domain;
    const generation = this.#generation;
    const domain = await this.#dir.findDomain(name);
    // Unknown names are remembered too (a spam run asks for many), within the size bound.
    if (generation === this.#generation && this.#domains.size < MAX_DOMAINS) {
      this.#domains.set(name, { domain, expires: now + this.#ttlMs });
    }
    return domain;
  }

  findMailbox(address: string) { return this.#dir.findMailbox(address); }
  findAlias(address: string) { return this.#dir.findAlias(address); }
  findSenderGrants(address: string) { return this.#dir.findSenderGrants(address); }
}
