// Directory administration: the rules every write obeys, whatever the backend
// (a mailbox needs a mailbox domain, alias domains point at mailbox domains,
// nothing is deleted by surprise). The CLI is a thin layer over this.
import { addressKey, grantAddress, parseAddress, parseAddressOrDomain, requireAddress, requireDomain, AddressError } from '../core/address.ts';
import {
  DirectoryError, type Alias, type DirectoryBackend, type Domain, type DomainUsage, type Mailbox, type SenderGrant,
} from './types.ts';

export class DirectoryAdmin {
  readonly dir: DirectoryBackend;
  readonly #now: () => Date;

  constructor(dir: DirectoryBackend, now: () => Date = () => new Date()) {
    this.dir = dir;
    this.#now = now;
  }

  // --- domains ---

  async addDomain(input: string, opts: { description?: string; enabled?: boolean } = {}): Promise<Domain> {
    const name = requireDomain(input);
    const now = this.#now();
    const domain: Domain = {
      name,
      enabled: opts.enabled ?? true,
      ...(opts.description !== undefined ? { description: opts.description } : {}),
      created: now,
      updated: now,
    };
    await this.#insertDomain(domain);
    return domain;
  }

  async addAliasDomain(aliasInput: string, targetInput: string): Promise<Domain> {
    const name = requireDomain(aliasInput);
    const target = await this.mailboxDomain(targetInput);
    if (target.name === name) throw new DirectoryError('invalid', `${name} cannot be an alias of itself`);
    const now = this.#now();
    const domain: Domain = { name, aliasFor: target.name, enabled: true, created: now, updated: now };
    await this.#insertDomain(domain);
    return domain;
  }

  async #insertDomain(domain: Domain): Promise<void> {
    const existing = await this.dir.findDomain(domain.name);
    if (existing) {
      throw new DirectoryError('exists', `domain ${domain.name} already exists${existing.aliasFor ? ` (alias domain for ${existing.aliasFor})` : ''}`);
    }
    await this.dir.insertDomain(domain);
  }

  async getDomain(input: string): Promise<Domain> {
    const name = requireDomain(input);
    const d = await this.dir.findDomain(name);
    if (!d) throw new DirectoryError('not_found', `domain ${name} does not exist`);
    return d;
  }

  /** A domain that can hold mailboxes and aliases (not an alias domain). */
  async mailboxDomain(input: string): Promise<Domain> {
    const d = await this.getDomain(input);
    if (d.aliasFor) throw new DirectoryError('invalid', `${d.name} is an alias domain for ${d.aliasFor}; use ${d.aliasFor}`);
    return d;
  }

  async showDomain(input: string): Promise<{ domain: Domain; usage: DomainUsage }> {
    const domain = await this.getDomain(input);
    return { domain, usage: await this.dir.domainUsage(domain.name) };
  }

  async setDomainEnabled(input: string, enabled: boolean): Promise<void> {
    const d = await this.getDomain(input);
    await this.dir.updateDomain(d.name, { enabled });
  }

  /** Refuses to delete a domain that still holds anything, unless forced. */
  async removeDomain(input: string, force = false): Promise<DomainUsage> {
    const d = await this.getDomain(input);
    const usage = await this.dir.domainUsage(d.name);
    const parts = [
      usage.mailboxes && `${usage.mailboxes} mailbox(es)`,
      usage.aliases && `${usage.aliases} alias(es)`,
      usage.aliasDomains && `${usage.aliasDomains} alias domain(s)`,
    ].filter(Boolean);
    if (parts.length && !force) {
      throw new DirectoryError('invalid', `domain ${d.name} still has ${parts.join(', ')}; use --force to delete them too`);
    }
    await this.dir.deleteDomain(d.name);
    return usage;
  }

  // --- mailboxes ---

  async addMailbox(input: string, opts: { passwordHash?: string; quotaBytes?: number; name?: string; enabled?: boolean } = {}): Promise<Mailbox> {
    const addr = requireAddress(input);
    await this.mailboxDomain(addr.domain);
    const now = this.#now();
    const mailbox: Mailbox = {
      address: addressKey(addr),
      domain: addr.domain,
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      ...(opts.passwordHash ? { passwordHash: opts.passwordHash } : {}),
      quotaBytes: opts.quotaBytes ?? 0,
      enabled: opts.enabled ?? true,
      created: now,
      updated: now,
    };
    if (await this.dir.findMailbox(mailbox.address)) throw new DirectoryError('exists', `mailbox ${mailbox.address} already exists`);
    await this.dir.insertMailbox(mailbox);
    return mailbox;
  }

  async getMailbox(input: string): Promise<Mailbox> {
    const address = addressKey(requireAddress(input));
    const m = await this.dir.findMailbox(address);
    if (!m) throw new DirectoryError('not_found', `mailbox ${address} does not exist`);
    return m;
  }

  async updateMailbox(input: string, patch: { passwordHash?: string | null; quotaBytes?: number; enabled?: boolean; name?: string }): Promise<Mailbox> {
    const m = await this.getMailbox(input);
    await this.dir.updateMailbox(m.address, patch);
    return this.getMailbox(m.address);
  }

  async removeMailbox(input: string): Promise<void> {
    const m = await this.getMailbox(input);
    await this.dir.deleteMailbox(m.address);
  }

  async listMailboxes(domainInput?: string): Promise<Mailbox[]> {
    const domain = domainInput ? (await this.getDomain(domainInput)).name : undefined;
    return sortBy(await this.dir.listMailboxes(domain), (m) => m.address);
  }

  // --- aliases ---

  /** `address` may be `@domain` for a catch-all; targets are local or foreign addresses. */
  async addAlias(input: string, targetInputs: readonly string[]): Promise<Alias> {
    const { address, domain } = aliasAddress(input);
    await this.mailboxDomain(domain);
    const targets = parseTargets(targetInputs);
    if (await this.dir.findAlias(address)) {
      throw new DirectoryError('exists', `alias ${address} already exists (add targets with: mailwarden alias add-target)`);
    }
    const now = this.#now();
    const alias: Alias = { address, domain, targets, enabled: true, created: now, updated: now };
    await this.dir.insertAlias(alias);
    return alias;
  }

  async getAlias(input: string): Promise<Alias> {
    const { address } = aliasAddress(input);
    const a = await this.dir.findAlias(address);
    if (!a) throw new DirectoryError('not_found', `alias ${address} does not exist`);
    return a;
  }

  async addAliasTargets(input: string, targetInputs: readonly string[]): Promise<Alias> {
    const a = await this.getAlias(input);
    const targets = [...a.targets];
    for (const t of parseTargets(targetInputs)) if (!targets.includes(t)) targets.push(t);
    await this.dir.updateAlias(a.address, { targets });
    return this.getAlias(a.address);
  }

  /** Without targets, deletes the alias; with targets, removes just those (and the alias when none remain). */
  async removeAlias(input: string, targetInputs: readonly string[] = []): Promise<Alias | undefined> {
    const a = await this.getAlias(input);
    if (targetInputs.length === 0) {
      await this.dir.deleteAlias(a.address);
      return undefined;
    }
    const drop = parseTargets(targetInputs);
    const missing = drop.filter((t) => !a.targets.includes(t));
    if (missing.length) throw new DirectoryError('not_found', `alias ${a.address} has no target ${missing.join(', ')}`);
    const targets = a.targets.filter((t) => !drop.includes(t));
    if (targets.length === 0) {
      await this.dir.deleteAlias(a.address);
      return undefined;
    }
    await this.dir.updateAlias(a.address, { targets });
    return this.getAlias(a.address);
  }

  async setAliasEnabled(input: string, enabled: boolean): Promise<void> {
    const a = await this.getAlias(input);
    await this.dir.updateAlias(a.address, { enabled });
  }

  async listAliases(domainInput?: string): Promise<Alias[]> {
    const domain = domainInput ? (await this.getDomain(domainInput)).name : undefined;
    return sortBy(await this.dir.listAliases(domain), (a) => a.address);
  }

  // --- sender grants ---

  /** Lets `login` (a mailbox) use `address` (or any address of `@domain`) as envelope sender. */
  async grantSender(addressInput: string, loginInput: string): Promise<SenderGrant> {
    const address = grantAddress(addressInput);
    if (!address) throw new AddressError(`invalid address or @domain: ${JSON.stringify(addressInput)}`);
    const login = await this.getMailbox(loginInput);
    const grant: SenderGrant = { address, login: login.address, created: this.#now() };
    await this.dir.insertSenderGrant(grant);
    return grant;
  }

  async revokeSender(addressInput: string, loginInput: string): Promise<void> {
    const address = grantAddress(addressInput);
    if (!address) throw new AddressError(`invalid address or @domain: ${JSON.stringify(addressInput)}`);
    const login = addressKey(requireAddress(loginInput));
    await this.dir.deleteSenderGrant(address, login);
  }

  async listSenderGrants(): Promise<SenderGrant[]> {
    return sortBy(await this.dir.listSenderGrants(), (g) => `${g.address} ${g.login}`);
  }

  async listDomains(): Promise<Domain[]> {
    return sortBy(await this.dir.listDomains(), (d) => d.name);
  }
}

function aliasAddress(input: string): { address: string; domain: string } {
  const parsed = parseAddressOrDomain(input);
  if (parsed) return { address: parsed.key, domain: parsed.domain };
  if (input.trim().startsWith('@')) throw new AddressError(`invalid catch-all: ${JSON.stringify(input)} (expected @domain)`);
  throw new AddressError(`invalid mail address: ${JSON.stringify(input.trim())}`);
}

/** Targets may be given as several arguments, comma lists, or both. */
function parseTargets(inputs: readonly string[]): string[] {
  const out: string[] = [];
  for (const part of inputs.flatMap((i) => i.split(','))) {
    const text = part.trim();
    if (!text) continue;
    const a = parseAddress(text);
    if (!a) throw new AddressError(`invalid target address: ${JSON.stringify(text)}`);
    const k = addressKey(a);
    if (!out.includes(k)) out.push(k);
  }
  if (out.length === 0) throw new AddressError('an alias needs at least one target address');
  return out;
}

function sortBy<T>(items: T[], key: (t: T) => string): T[] {
  return items.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}
