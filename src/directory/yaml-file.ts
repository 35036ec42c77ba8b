// Reading and writing the YAML directory file. The file is the source of truth
// for small hosts: hand edits are allowed (keys are canonicalised on load, and
// comments survive CLI writes), and every write is an atomic rename so a
// reader never sees half a file.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync, chownSync, constants } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Document, LineCounter, isMap, isScalar, isSeq, parseDocument, type Node, type Pair, type YAMLMap } from 'yaml';
import { NodeReader, yamlMessage, parseSize } from '../config/reader.ts';
import { addressKey, grantAddress, normalizeDomain, parseAddress, parseAddressOrDomain } from '../core/address.ts';
import { formatSize } from '../core/size.ts';
import type { Alias, Domain, Mailbox, SenderGrant } from './types.ts';
import { DirectoryError } from './types.ts';

export const SECTIONS = ['domains', 'mailboxes', 'aliases', 'sender_grants'] as const;

/** An immutable, indexed view of one version of the file. */
export class DirectorySnapshot {
  readonly domains = new Map<string, Domain>();
  readonly mailboxes = new Map<string, Mailbox>();
  readonly aliases = new Map<string, Alias>();
  readonly grants: SenderGrant[] = [];
  readonly grantsByAddress = new Map<string, SenderGrant[]>();
  /** Canonical key → the key as written in the file, for edits that keep the operator's spelling. */
  readonly sourceKeys = new Map<string, string>();
}

const EPOCH = new Date(0);

function date(r: NodeReader, map: YAMLMap, key: string, path: string): Date {
  const text = r.string(map, key, path);
  if (text === undefined) return EPOCH;
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) {
    r.fail(r.node(map, key), `${path} must be an ISO date`);
    return EPOCH;
  }
  return d;
}

function entries(r: NodeReader, root: YAMLMap | undefined, section: string): Array<[string, Node, YAMLMap | undefined, Node]> {
  const node = root?.get(section, true) as Node | null | undefined;
  if (node === undefined || node === null) return [];
  if (!isMap(node)) {
    r.fail(node, `${section} must be a mapping`);
    return [];
  }
  const out: Array<[string, Node, YAMLMap | undefined, Node]> = [];
  for (const pair of node.items as Pair<Node, Node>[]) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    const value = pair.value;
    const map = value && isMap(value) ? value : undefined;
    out.push([key, pair.key, map, value ?? pair.key]);
  }
  return out;
}

function targetList(r: NodeReader, node: Node | null | undefined, path: string): string[] {
  if (!node) return [];
  const raw: Array<[string, Node]> = [];
  if (isSeq(node)) {
    for (const item of node.items as Node[]) {
      if (isScalar(item)) raw.push([String(item.value), item]);
      else r.fail(item, `${path} entries must be addresses`);
    }
  } else if (isScalar(node)) {
    for (const part of String(node.value).split(/[\s,]+/)) if (part) raw.push([part, node]);
  } else {
    r.fail(node, `${path} must be a list of addresses`);
  }
  const targets: string[] = [];
  for (const [text, n] of raw) {
    const a = parseAddress(text);
    if (!a) r.fail(n, `${path}: invalid target address ${JSON.stringify(text)}`);
    else if (!targets.includes(addressKey(a))) targets.push(addressKey(a));
  }
  if (targets.length === 0 && raw.length === 0) r.fail(node, `${path} has no targets`);
  return targets;
}

/** Parses and validates a directory file; errors carry file:line:col. */
export function parseDirectory(text: string, file: string): { doc: Document; snapshot: DirectorySnapshot; issues: string[] } {
  const lines = new LineCounter();
  // uniqueKeys is O(n²) in the yaml package (100,000 mailboxes: minutes); duplicates
  // are caught below on canonical keys, and within small maps by checkKeys().
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: false });
  const r = new NodeReader(file, doc, lines);
  const snap = new DirectorySnapshot();
  for (const e of doc.errors) {
    const pos = e.linePos?.[0];
    r.issues.push(`${file}${pos ? `:${pos.line}:${pos.col}` : ''}: ${yamlMessage(e.message)}`);
  }
  if (r.issues.length) return { doc, snapshot: snap, issues: r.issues };
  const root = doc.contents;
  if (root !== null && !isMap(root)) {
    r.fail(root, 'the directory file must be a mapping with domains, mailboxes, aliases, sender_grants');
    return { doc, snapshot: snap, issues: r.issues };
  }
  const top = (root ?? undefined) as YAMLMap | undefined;
  if (top) r.checkKeys(top, '', SECTIONS);

  for (const [key, keyNode, map] of entries(r, top, 'domains')) {
    const name = normalizeDomain(key);
    if (!name) { r.fail(keyNode, `invalid domain name ${JSON.stringify(key)}`); continue; }
    if (snap.domains.has(name)) { r.fail(keyNode, `duplicate domain ${name}`); continue; }
    if (map) r.checkKeys(map, `domains.${key}`, ['alias_for', 'enabled', 'description', 'created', 'updated']);
    const aliasText = map ? r.string(map, 'alias_for', `domains.${key}.alias_for`) : undefined;
    const aliasFor = aliasText !== undefined ? normalizeDomain(aliasText) : undefined;
    if (aliasText !== undefined && !aliasFor) r.fail(r.node(map, 'alias_for'), `invalid domain name ${JSON.stringify(aliasText)}`);
    const description = map ? r.string(map, 'description', `domains.${key}.description`) : undefined;
    snap.domains.set(name, {
      name,
      ...(aliasFor ? { aliasFor } : {}),
      enabled: (map && r.boolean(map, 'enabled', `domains.${key}.enabled`)) ?? true,
      ...(description !== undefined ? { description } : {}),
      created: map ? date(r, map, 'created', `domains.${key}.created`) : EPOCH,
      updated: map ? date(r, map, 'updated', `domains.${key}.updated`) : EPOCH,
    });
    snap.sourceKeys.set(`domains\0${name}`, key);
  }
  for (const d of snap.domains.values()) {
    if (!d.aliasFor) continue;
    const target = snap.domains.get(d.aliasFor);
    if (!target || target.aliasFor) r.fail(null, `alias domain ${d.name} points to ${d.aliasFor}, which is not a mailbox domain in this file`);
  }

  for (const [key, keyNode, map, valueNode] of entries(r, top, 'mailboxes')) {
    const a = parseAddress(key);
    if (!a) { r.fail(keyNode, `invalid mailbox address ${JSON.stringify(key)}`); continue; }
    const address = addressKey(a);
    if (snap.mailboxes.has(address)) { r.fail(keyNode, `duplicate mailbox ${address}`); continue; }
    const domain = snap.domains.get(a.domain);
    if (!domain || domain.aliasFor) r.fail(keyNode, `mailbox ${address}: ${a.domain} is not a mailbox domain in this file`);
    if (!map && valueNode !== keyNode && !(isScalar(valueNode) && valueNode.value === null)) {
      r.fail(valueNode, `mailboxes.${key} must be a mapping`);
    }
    if (map) r.checkKeys(map, `mailboxes.${key}`, ['name', 'password', 'quota', 'enabled', 'created', 'updated']);
    const quotaText = map ? r.string(map, 'quota', `mailboxes.${key}.quota`) : undefined;
    const quotaBytes = quotaText === undefined ? 0 : parseSize(quotaText);
    if (quotaBytes === undefined) r.fail(r.node(map, 'quota'), `mailboxes.${key}.quota must be a size like 500M or 2G (0 = unlimited)`);
    const name = map ? r.string(map, 'name', `mailboxes.${key}.name`) : undefined;
    const passwordHash = map ? r.string(map, 'password', `mailboxes.${key}.password`) : undefined;
    snap.mailboxes.set(address, {
      address,
      domain: a.domain,
      ...(name !== undefined ? { name } : {}),
      ...(passwordHash ? { passwordHash } : {}),
      quotaBytes: quotaBytes ?? 0,
      enabled: (map && r.boolean(map, 'enabled', `mailboxes.${key}.enabled`)) ?? true,
      created: map ? date(r, map, 'created', `mailboxes.${key}.created`) : EPOCH,
      updated: map ? date(r, map, 'updated', `mailboxes.${key}.updated`) : EPOCH,
    });
    snap.sourceKeys.set(`mailboxes\0${address}`, key);
  }

  for (const [key, keyNode, map, valueNode] of entries(r, top, 'aliases')) {
    const parsed = parseAddressOrDomain(key);
    if (!parsed) { r.fail(keyNode, `invalid alias address ${JSON.stringify(key)}`); continue; }
    const { key: address, domain: domainName } = parsed;
    if (snap.aliases.has(address)) { r.fail(keyNode, `duplicate alias ${address}`); continue; }
    const domain = snap.domains.get(domainName);
    if (!domain || domain.aliasFor) r.fail(keyNode, `alias ${address}: ${domainName} is not a mailbox domain in this file`);
    if (map) r.checkKeys(map, `aliases.${key}`, ['targets', 'enabled', 'created', 'updated']);
    const targets = targetList(r, map ? r.node(map, 'targets') : valueNode, `aliases.${key}`);
    snap.aliases.set(address, {
      address,
      domain: domainName,
      targets,
      enabled: (map && r.boolean(map, 'enabled', `aliases.${key}.enabled`)) ?? true,
      created: map ? date(r, map, 'created', `aliases.${key}.created`) : EPOCH,
      updated: map ? date(r, map, 'updated', `aliases.${key}.updated`) : EPOCH,
    });
    snap.sourceKeys.set(`aliases\0${address}`, key);
  }

  const grantsNode = top?.get('sender_grants', true) as Node | null | undefined;
  if (grantsNode) {
    if (!isSeq(grantsNode)) r.fail(grantsNode, 'sender_grants must be a list of {address, login}');
    else {
      for (const item of grantsNode.items as Node[]) {
        if (!isMap(item)) { r.fail(item, 'sender_grants entries must be {address, login}'); continue; }
        r.checkKeys(item, 'sender_grants[]', ['address', 'login', 'created']);
        const addrText = r.string(item, 'address', 'sender_grants[].address') ?? '';
        const loginText = r.string(item, 'login', 'sender_grants[].login') ?? '';
        const address = grantAddress(addrText);
        if (!address) { r.fail(item, `sender grant: invalid address ${JSON.stringify(addrText)}`); continue; }
        const login = loginText.trim().toLowerCase();
        if (!login) { r.fail(item, 'sender grant: login is required'); continue; }
        const grant: SenderGrant = { address, login, created: date(r, item, 'created', 'sender_grants[].created') };
        snap.grants.push(grant);
        const list = snap.grantsByAddress.get(address);
        if (list) list.push(grant);
        else snap.grantsByAddress.set(address, [grant]);
      }
    }
  }
  return { doc, snapshot: snap, issues: r.issues };
}

// --- serialisation of single entities (used to edit the Document in place) ---

const iso = (d: Date) => d.toISOString();

export function domainNode(d: Domain): Record<string, unknown> {
  return {
    ...(d.aliasFor ? { alias_for: d.aliasFor } : {}),
    ...(d.description !== undefined ? { description: d.description } : {}),
    ...(d.enabled ? {} : { enabled: false }),
    created: iso(d.created),
    updated: iso(d.updated),
  };
}

export function mailboxNode(m: Mailbox): Record<string, unknown> {
  return {
    ...(m.name !== undefined ? { name: m.name } : {}),
    ...(m.passwordHash ? { password: m.passwordHash } : {}),
    ...(m.quotaBytes ? { quota: formatSize(m.quotaBytes) } : {}),
    ...(m.enabled ? {} : { enabled: false }),
    created: iso(m.created),
    updated: iso(m.updated),
  };
}

export function aliasNode(a: Alias): Record<string, unknown> {
  return {
    targets: [...a.targets],
    ...(a.enabled ? {} : { enabled: false }),
    created: iso(a.created),
    updated: iso(a.updated),
  };
}

export function grantNode(g: SenderGrant): Record<string, unknown> {
  return { address: g.address, login: g.login, created: iso(g.created) };
}

export const FILE_HEADER = ` mailwarden user directory (directory.backend: yaml).
 Managed with the mailwarden CLI; hand edits are fine (comments are kept),
 a running daemon picks up any change within a second. Keep this file 0640:
 it holds password hashes.`;

export function emptyDocument(): Document {
  const doc = new Document({});
  doc.commentBefore = FILE_HEADER;
  return doc;
}

// --- atomic file replacement and a writer lock ---

export interface FileIdentity {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

export function fileIdentity(path: string): FileIdentity | undefined {
  try {
    const st = statSync(path);
    return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export function sameIdentity(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  return a?.ino === b?.ino && a?.size === b?.size && a?.mtimeMs === b?.mtimeMs;
}

/** Writes `text` to `path` through a temp file, fsync and rename; keeps the old file's owner and mode. */
export function writeFileAtomic(path: string, text: string): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  let mode = 0o640;
  let owner: { uid: number; gid: number } | undefined;
  try {
    const st = statSync(path);
    mode = st.mode & 0o7777;
    owner = { uid: st.uid, gid: st.gid };
  } catch { /* new file */ }
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (owner && process.getuid?.() === 0) chownSync(tmp, owner.uid, owner.gid);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dir, constants.O_RDONLY);
    try { fsyncSync(dfd); } finally { closeSync(dfd); }
  } catch { /* some filesystems refuse fsync on directories */ }
}

/** Exclusive writer lock (`<file>.lock`), so two CLI runs never lose each other's change. */
export async function withFileLock<T>(path: string, fn: () => T | Promise<T>, timeoutMs = 10_000): Promise<T> {
  const lock = `${path}.lock`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(lock, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new DirectoryError('unavailable', `cannot create lock ${lock}: ${(err as Error).message}`);
      }
      if (staleLock(lock)) continue;
      if (Date.now() > deadline) throw new DirectoryError('unavailable', `directory is locked by another writer (${lock})`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  try {
    return await fn();
  } finally {
    try { unlinkSync(lock); } catch { /* already gone */ }
  }
}

function staleLock(lock: string): boolean {
  try {
    const pid = Number(readFileSync(lock, 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    try {
      process.kill(pid, 0);
      return false;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return false;
      unlinkSync(lock);
      return true;
    }
  } catch {
    return false;
  }
}
