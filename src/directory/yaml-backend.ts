// The embedded YAML directory: the whole file in memory, indexed; reloaded
// when the file changes (polled, so it also works across atomic renames and
// editors that replace the file).
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Document } from 'yaml';
import type { Logger } from 'pino';
import {
  DirectorySnapshot, aliasNode, domainNode, emptyDocument, fileIdentity, grantNode, mailboxNode, parseDirectory,
  sameIdentity, withFileLock, writeFileAtomic, type FileIdentity,
} from './yaml-file.ts';
import {
  ALL_CHANGED, DirectoryError, type Alias, type AliasPatch, type DirectoryBackend, type DirectoryChange, type Domain, type DomainPatch,
  type DomainUsage, type Mailbox, type MailboxPatch, type QuotaUsageChange, type SenderGrant,
} from './types.ts';
import { ActivityFile, activityPath } from './activity-file.ts';

const POLL_MS = 250;

export class YamlDirectory implements DirectoryBackend {
  readonly kind = 'yaml' as const;
  readonly remote = false;
  #snapshot: DirectorySnapshot;
  #identity: FileIdentity | undefined;
  #listeners: Array<(change: DirectoryChange) => void> = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #activity: ActivityFile;
  readonly path: string;
  readonly log: Logger | undefined;

  private constructor(path: string, snapshot: DirectorySnapshot, identity: FileIdentity | undefined, log: Logger | undefined) {
    this.path = path;
    this.log = log;
    this.#activity = new ActivityFile(activityPath(path));
    this.#activity.onError = (err) => log?.warn({ path: this.#activity.path, err: err.message }, 'activity file');
    this.#snapshot = snapshot;
    this.#identity = identity;
  }

  /** Opens the file (a missing file is an empty directory); throws DirectoryError 'invalid' with file:line:col issues. */
  static open(path: string, log?: Logger): YamlDirectory {
    const { snapshot, identity } = readSnapshot(path);
    return new YamlDirectory(path, snapshot, identity, log);
  }

  /** Start noticing changes made by the CLI or an editor. */
  watch(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#poll(), POLL_MS);
    this.#timer.unref();
  }

  /** Re-read the file now if it changed. Returns false (and keeps the old data) when it is invalid. */
  reload(): boolean {
    try {
      const { snapshot, identity } = readSnapshot(this.path);
      this.#install(snapshot, identity);
      return true;
    } catch (err) {
      this.log?.error({ path: this.path, err: (err as Error).message }, 'directory file invalid, keeping the previous version');
      return false;
    }
  }

  /**
   * reload(), with the parsing done by a worker thread: lookups keep being
   * answered from the current snapshot until the new one is swapped in.
   * Resolves false (old data kept) when the file is invalid.
   */
  async reloadInBackground(): Promise<boolean> {
    const result = await new Promise<{ ok: true; snapshot: DirectorySnapshot; identity: FileIdentity | undefined } | { ok: false; code: string; message: string }>((resolve) => {
      const worker = new Worker(new URL('./yaml-parse-worker.ts', import.meta.url), { workerData: { path: this.path } });
      worker.once('message', resolve);
      worker.once('error', (err) => resolve({ ok: false, code: 'unavailable', message: err.message }));
      worker.once('exit', (code) => resolve({ ok: false, code: 'unavailable', message: `parse worker exited with code ${code}` }));
    });
    if (!result.ok) {
      this.log?.error({ path: this.path, err: result.message }, 'directory file invalid, keeping the previous version');
      return false;
    }
    this.#install(reviveSnapshot(result.snapshot), result.identity);
    return true;
  }

  #install(snapshot: DirectorySnapshot, identity: FileIdentity | undefined): void {
    this.#snapshot = snapshot;
    this.#identity = identity;
    this.log?.info({ path: this.path, mailboxes: snapshot.mailboxes.size, aliases: snapshot.aliases.size }, 'directory loaded');
    for (const l of this.#listeners) l(ALL_CHANGED);
  }

  #reloading = false;

  #poll(): void {
    if (this.#reloading) return;
    let id: FileIdentity | undefined;
    try {
      id = fileIdentity(this.path);
    } catch (err) {
      this.log?.warn({ path: this.path, err: (err as Error).message }, 'cannot stat directory file');
      return;
    }
    if (sameIdentity(id, this.#identity)) return;
    // Remember the identity even when invalid, so a bad file is reported once, not every poll.
    this.#identity = id;
    this.#reloading = true;
    this.reloadInBackground()
      .catch((err: unknown) => this.log?.error({ path: this.path, err: (err as Error).message }, 'directory reload failed'))
      .finally(() => { this.#reloading = false; });
  }

  get snapshot(): DirectorySnapshot {
    return this.#snapshot;
  }

  // --- hot-path reads; `sync` lets the lookup maps answer without a promise ---
  readonly sync = {
    findDomain: (name: string) => this.#snapshot.domains.get(name),
    findMailbox: (address: string) => this.#snapshot.mailboxes.get(address),
    findAlias: (address: string) => this.#snapshot.aliases.get(address),
    findSenderGrants: (address: string): readonly SenderGrant[] => this.#snapshot.grantsByAddress.get(address) ?? [],
  };
  async findDomain(name: string) { return this.#snapshot.domains.get(name); }
  async findMailbox(address: string) { return this.#snapshot.mailboxes.get(address); }
  async findAlias(address: string) { return this.#snapshot.aliases.get(address); }
  async findSenderGrants(address: string) { return this.#snapshot.grantsByAddress.get(address) ?? []; }

  // --- listings ---
  async listDomains() { return [...this.#snapshot.domains.values()]; }
  async listMailboxes(domain?: string) {
    const all = [...this.#snapshot.mailboxes.values()];
    return domain ? all.filter((m) => m.domain === domain) : all;
  }
  async listAliases(domain?: string) {
    const all = [...this.#snapshot.aliases.values()];
    return domain ? all.filter((a) => a.domain === domain) : all;
  }
  async listSenderGrants() { return [...this.#snapshot.grants]; }
  async domainUsage(name: string): Promise<DomainUsage> {
    const s = this.#snapshot;
    let mailboxes = 0, aliases = 0, aliasDomains = 0;
    for (const m of s.mailboxes.values()) if (m.domain === name) mailboxes++;
    for (const a of s.aliases.values()) if (a.domain === name) aliases++;
    for (const d of s.domains.values()) if (d.aliasFor === name) aliasDomains++;
    return { mailboxes, aliases, aliasDomains };
  }

  // --- writes: lock, re-read the current file, edit the Document in place, replace atomically ---

  async #edit(fn: (doc: Document, snap: DirectorySnapshot) => void): Promise<void> {
    await withFileLock(this.path, () => {
      const { doc, snapshot } = readDocument(this.path);
      fn(doc, snapshot);
      writeFileAtomic(this.path, doc.toString({ lineWidth: 0 }));
    });
    this.reload();
  }

  insertDomain(d: Domain) {
    return this.#edit((doc, s) => {
      if (s.domains.has(d.name)) throw new DirectoryError('exists', `domain ${d.name} already exists`);
      doc.setIn(['domains', d.name], doc.createNode(domainNode(d)));
    });
  }

  updateDomain(name: string, patch: DomainPatch) {
    return this.#edit((doc, s) => {
      const d = s.domains.get(name);
      if (!d) throw new DirectoryError('not_found', `domain ${name} does not exist`);
      const { description, ...rest } = patch;
      const next: Domain = { ...d, ...rest, updated: new Date() };
      if (description === null) delete (next as { description?: string }).description;
      else if (description !== undefined) (next as { description?: string }).description = description;
      doc.setIn(['domains', key(s, 'domains', name)], doc.createNode(domainNode(next)));
    });
  }

  deleteDomain(name: string) {
    return this.#edit((doc, s) => {
      if (!s.domains.has(name)) throw new DirectoryError('not_found', `domain ${name} does not exist`);
      doc.deleteIn(['domains', key(s, 'domains', name)]);
      for (const d of s.domains.values()) if (d.aliasFor === name) doc.deleteIn(['domains', key(s, 'domains', d.name)]);
      for (const m of s.mailboxes.values()) if (m.domain === name) doc.deleteIn(['mailboxes', key(s, 'mailboxes', m.address)]);
      for (const a of s.aliases.values()) if (a.domain === name) doc.deleteIn(['aliases', key(s, 'aliases', a.address)]);
      const kept = s.grants.filter((g) => !(g.address.endsWith(`@${name}`)));
      if (kept.length !== s.grants.length) setGrants(doc, kept);
    });
  }

  insertMailbox(m: Mailbox) {
    return this.#edit((doc, s) => {
      if (s.mailboxes.has(m.address)) throw new DirectoryError('exists', `mailbox ${m.address} already exists`);
      doc.setIn(['mailboxes', m.address], doc.createNode(mailboxNode(m)));
    });
  }

  updateMailbox(address: string, patch: MailboxPatch) {
    return this.#edit((doc, s) => {
      const m = s.mailboxes.get(address);
      if (!m) throw new DirectoryError('not_found', `mailbox ${address} does not exist`);
      const { passwordHash, ...rest } = patch;
      const next: Mailbox = { ...m, ...rest, updated: new Date() };
      if (passwordHash === null) delete (next as { passwordHash?: string }).passwordHash;
      else if (passwordHash !== undefined) (next as { passwordHash?: string }).passwordHash = passwordHash;
      doc.setIn(['mailboxes', key(s, 'mailboxes', address)], doc.createNode(mailboxNode(next)));
    });
  }

  deleteMailbox(address: string) {
    return this.#edit((doc, s) => {
      if (!s.mailboxes.has(address)) throw new DirectoryError('not_found', `mailbox ${address} does not exist`);
      doc.deleteIn(['mailboxes', key(s, 'mailboxes', address)]);
    }).then(() => this.#activity.forget(address));
  }

  insertAlias(a: Alias) {
    return this.#edit((doc, s) => {
      if (s.aliases.has(a.address)) throw new DirectoryError('exists', `alias ${a.address} already exists`);
      doc.setIn(['aliases', a.address], doc.createNode(aliasNode(a)));
    });
  }

  updateAlias(address: string, patch: AliasPatch) {
    return this.#edit((doc, s) => {
      const a = s.aliases.get(address);
      if (!a) throw new DirectoryError('not_found', `alias ${address} does not exist`);
      const next: Alias = { ...a, ...patch, updated: new Date() };
      doc.setIn(['aliases', key(s, 'aliases', address)], doc.createNode(aliasNode(next)));
    });
  }

  deleteAlias(address: string) {
    return this.#edit((doc, s) => {
      if (!s.aliases.has(address)) throw new DirectoryError('not_found', `alias ${address} does not exist`);
      doc.deleteIn(['aliases', key(s, 'aliases', address)]);
    });
  }

  insertSenderGrant(g: SenderGrant) {
    return this.#edit((doc, s) => {
      if (s.grants.some((x) => x.address === g.address && x.login === g.login)) {
        throw new DirectoryError('exists', `${g.login} may already send as ${g.address}`);
      }
      setGrants(doc, [...s.grants, g]);
    });
  }

  deleteSenderGrant(address: string, login: string) {
    return this.#edit((doc, s) => {
      const kept = s.grants.filter((x) => !(x.address === address && x.login === login));
      if (kept.length === s.grants.length) throw new DirectoryError('not_found', `no grant for ${login} to send as ${address}`);
      setGrants(doc, kept);
    });
  }

  // --- activity reported by Dovecot ---
  async getActivity(address: string) { return this.#activity.get(address); }
  async recordLogin(address: string, at: Date, ip?: string) {
    if (this.#snapshot.mailboxes.has(address)) this.#activity.recordLogin(address, at, ip);
  }
  async updateQuotaUsage(address: string, change: QuotaUsageChange) {
    return this.#snapshot.mailboxes.has(address) ? this.#activity.updateQuota(address, change) : 'notfound';
  }

  onChange(listener: (change: DirectoryChange) => void): void {
    this.#listeners.push(listener);
  }

  async close(): Promise<void> {
    this.#activity.flush();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

function key(s: DirectorySnapshot, section: string, canonical: string): string {
  return s.sourceKeys.get(`${section}\0${canonical}`) ?? canonical;
}

function setGrants(doc: Document, grants: readonly SenderGrant[]): void {
  if (grants.length === 0) doc.deleteIn(['sender_grants']);
  else doc.setIn(['sender_grants'], doc.createNode(grants.map(grantNode)));
}

function readDocument(path: string): { doc: Document; snapshot: DirectorySnapshot } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { doc: emptyDocument(), snapshot: new DirectorySnapshot() };
    throw new DirectoryError('unavailable', `cannot read ${path}: ${(err as Error).message}`);
  }
  const { doc, snapshot, issues } = parseDirectory(text, path);
  if (issues.length) throw new DirectoryError('invalid', issues.join('\n'));
  if (doc.contents === null) return { doc: emptyDocument(), snapshot };
  return { doc, snapshot };
}

/** A posted snapshot back as a DirectorySnapshot (structured clone keeps the Maps, Dates and arrays, not the class). */
function reviveSnapshot(data: DirectorySnapshot): DirectorySnapshot {
  return Object.assign(new DirectorySnapshot(), data);
}

/** The file's snapshot and identity; also run by yaml-parse-worker.ts, which posts the result as plain data. */
export function readSnapshot(path: string): { snapshot: DirectorySnapshot; identity: FileIdentity | undefined } {
  // Identity first: if the file is replaced while we read, the next poll sees a newer identity and reloads.
  const identity = fileIdentity(path);
  const { snapshot } = readDocument(path);
  return { snapshot, identity };
}
