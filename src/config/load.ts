// mailwarden.yaml → a validated, frozen Config. Every error carries file:line:col.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LineCounter, parseDocument, isMap, isSeq, type Node, type YAMLMap } from 'yaml';
import { parseDnsServer } from '../dns/resolver.ts';
import { ConfigError, NodeReader, yamlMessage } from './reader.ts';
import { isLoopbackHost, parseListen, type ListenAddress } from './listen.ts';
import { DEFAULT_POLICY, type PolicySettings } from '../auth/policy.ts';
import { parseCidr } from '../core/network.ts';
import { readSmtpdPolicy, type SmtpdPolicyConfig } from '../policy/config.ts';
import { readMilterConfig, type MilterConfig } from '../milter/config.ts';
import { readDkimConfig, type DkimConfig } from '../dkim/config.ts';

export const DEFAULT_CONFIG_FILE = '/etc/mailwarden/mailwarden.yaml';

export type DirectoryConfig =
  | { readonly backend: 'yaml'; readonly path: string }
  | {
      readonly backend: 'mysql';
      readonly url: string;
      readonly poolSize: number;
      readonly queryTimeoutMs: number;
      readonly cacheTtlMs: number;
      readonly cacheSize: number;
      /** Load every domain, mailbox, alias and grant into memory at start (default true; absent = true). */
      readonly preload?: boolean;
    };

export interface UnixListenOptions {
  /** Socket file mode, e.g. 0o660. */
  readonly mode: number;
  readonly user?: string;
  readonly group?: string;
}

export interface ServiceListen {
  readonly listen: ListenAddress;
  readonly unix: UnixListenOptions;
}

export interface Argon2Params {
  readonly memoryCost: number;
  readonly timeCost: number;
  readonly parallelism: number;
}

/** What Dovecot's userdb gets for every mailbox. Templates: %u user, %n local part, %d domain (Dovecot's own letters). */
export interface UserdbConfig {
  readonly home: string;
  readonly uid: string;
  readonly gid: string;
  /** Optional per-user mail location (2.3 `mail`), e.g. maildir:~/Maildir. */
  readonly mail?: string;
}

export interface AuthConfig extends ServiceListen {
  /** Shared secret the Lua bridge sends (X-Mailwarden-Secret); required on inet listeners. */
  readonly secret?: string;
  /** Recent successful logins are re-verified from memory for this long (0 = off). */
  readonly verifyCacheTtlMs: number;
  /** Password hashes verified at once; the rest queue, so lookups keep answering during a login storm. */
  readonly verifyConcurrency: number;
  /** Re-hash legacy hashes (SHA512-CRYPT, BLF-CRYPT, ...) to argon2id on the next successful login. */
  readonly rehash: boolean;
  /** Brute-force throttling for Dovecot's auth_policy_server_url (auth.policy). */
  readonly policy: PolicySettings;
}

export interface Config {
  readonly file: string;
  readonly directory: DirectoryConfig;
  /** Postfix recipient_delimiter: each character is a delimiter; '' disables extensions. */
  readonly recipientDelimiter: string;
  readonly log: { readonly level: string };
  readonly dns: { readonly servers: readonly string[]; readonly timeoutMs: number };
  readonly passwords: { readonly argon2: Argon2Params };
  readonly socketmap?: ServiceListen;
  readonly userdb: UserdbConfig;
  readonly auth?: AuthConfig;
  readonly dict?: ServiceListen;
  /** Postfix SMTPD access policy service (check_policy_service). */
  readonly policy?: SmtpdPolicyConfig;
  /** Milter for smtpd_milters/non_smtpd_milters: DKIM/SPF/DMARC/ARC verification, DKIM signing. */
  readonly milter?: MilterConfig;
  /** DKIM signing keys (key_dir). */
  readonly dkim: DkimConfig;
}

const TOP_KEYS = ['directory', 'recipient_delimiter', 'log', 'dns', 'passwords', 'userdb', 'socketmap', 'auth', 'dict', 'policy', 'milter', 'dkim'];
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Current defaults for new password hashes: OWASP's argon2id baseline (19 MiB, t=2, p=1), ~25 ms per verify. */
export const DEFAULT_ARGON2: Argon2Params = { memoryCost: 19456, timeCost: 2, parallelism: 1 };

export function loadConfig(file: string): Config {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${path}: cannot read config: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return parseConfig(text, path);
}

export function parseConfig(text: string, path: string): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const r = new NodeReader(path, doc, lines);
  for (const e of doc.errors) {
    const pos = e.linePos?.[0];
    r.issues.push(`${path}${pos ? `:${pos.line}:${pos.col}` : ''}: ${yamlMessage(e.message)}`);
  }
  if (r.issues.length) throw new ConfigError(r.issues);
  const root = doc.contents;
  if (root !== null && !isMap(root)) throw new ConfigError([`${r.where(root)}: the config must be a mapping of sections`]);
  const top = (root ?? undefined) as YAMLMap | undefined;
  if (top) r.checkKeys(top, '', TOP_KEYS);
  const base = dirname(path);

  const directory = readDirectory(r, top, base);

  const delimiter = r.string(top, 'recipient_delimiter', 'recipient_delimiter') ?? '+';
  if (/[@\s"]/.test(delimiter)) r.fail(r.node(top, 'recipient_delimiter'), 'recipient_delimiter must not contain @, quotes or spaces');

  const logSec = r.section(top, 'log', 'log', ['level']);
  const level = r.string(logSec, 'level', 'log.level') ?? 'info';
  if (!LOG_LEVELS.includes(level)) r.fail(r.node(logSec, 'level'), `log.level must be one of ${LOG_LEVELS.join(', ')}`);

  const dnsSec = r.section(top, 'dns', 'dns', ['servers', 'timeout']);
  const servers: string[] = [];
  const serversNode = r.node(dnsSec, 'servers');
  for (const [i, entry] of (r.stringList(dnsSec, 'servers', 'dns.servers') ?? []).entries()) {
    try {
      servers.push(parseDnsServer(entry));
    } catch (err) {
      r.fail(isSeq(serversNode) ? (serversNode.items[i] as Node) : serversNode, `dns.servers: ${(err as Error).message}`);
    }
  }
  const dnsTimeout = r.duration(dnsSec, 'timeout', 'dns.timeout') ?? 5000;

  const pwSec = r.section(top, 'passwords', 'passwords', ['argon2']);
  const a2 = r.section(pwSec, 'argon2', 'passwords.argon2', ['memory_cost', 'time_cost', 'parallelism']);
  const argon2: Argon2Params = {
    memoryCost: r.integer(a2, 'memory_cost', 'passwords.argon2.memory_cost', 8192, 4 * 1024 * 1024) ?? DEFAULT_ARGON2.memoryCost,
    timeCost: r.integer(a2, 'time_cost', 'passwords.argon2.time_cost', 1, 100) ?? DEFAULT_ARGON2.timeCost,
    parallelism: r.integer(a2, 'parallelism', 'passwords.argon2.parallelism', 1, 16) ?? DEFAULT_ARGON2.parallelism,
  };

  const socketmap = readService(r, top, 'socketmap', []);
  const dict = readService(r, top, 'dict', []);
  const auth = readAuth(r, top, base);
  const policy = readSmtpdPolicy(r, top);
  const milter = readMilterConfig(r, top);
  const dkim = readDkimConfig(r, top);

  const udb = r.section(top, 'userdb', 'userdb', ['home', 'uid', 'gid', 'mail']);
  const userdb: UserdbConfig = {
    home: r.string(udb, 'home', 'userdb.home') ?? '/var/vmail/%d/%n',
    uid: r.string(udb, 'uid', 'userdb.uid') ?? 'vmail',
    gid: r.string(udb, 'gid', 'userdb.gid') ?? 'vmail',
    ...(r.string(udb, 'mail', 'userdb.mail') ? { mail: r.string(udb, 'mail', 'userdb.mail')! } : {}),
  };
  if (!userdb.home.startsWith('/')) r.fail(r.node(udb, 'home'), 'userdb.home must be an absolute path template like /var/vmail/%d/%n');

  if (r.issues.length) throw new ConfigError(r.issues);
  return deepFreeze({
    file: path,
    directory,
    recipientDelimiter: delimiter,
    log: { level },
    dns: { servers, timeoutMs: dnsTimeout },
    passwords: { argon2 },
    ...(socketmap ? { socketmap } : {}),
    userdb,
    ...(auth ? { auth } : {}),
    ...(dict ? { dict } : {}),
    ...(policy ? { policy } : {}),
    ...(milter ? { milter } : {}),
    dkim,
  });
}

function readAuth(r: NodeReader, top: YAMLMap | undefined, base: string): AuthConfig | undefined {
  const keys = ['secret', 'secret_file', 'verify_cache_ttl', 'verify_concurrency', 'rehash', 'policy'];
  const service = readService(r, top, 'auth', keys);
  if (!service) return undefined;
  // readService already checked the section and reported unknown keys (once).
  const sec = r.node(top, 'auth') as YAMLMap;
  if (service.listen.kind === 'inet' && !isLoopbackHost(service.listen.host)) {
    r.fail(r.node(sec, 'listen'), 'auth.listen must be a unix: socket or a loopback inet: address (it answers password checks)');
  }
  let secret = r.string(sec, 'secret', 'auth.secret');
  const secretFile = r.string(sec, 'secret_file', 'auth.secret_file');
  if (secret !== undefined && secretFile !== undefined) r.fail(r.node(sec, 'secret_file'), 'use auth.secret or auth.secret_file, not both');
  if (secretFile !== undefined) {
    try {
      secret = readFileSync(resolve(base, secretFile), 'utf8').trim();
    } catch (err) {
      r.fail(r.node(sec, 'secret_file'), `auth.secret_file: cannot read ${resolve(base, secretFile)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  if (secret !== undefined && secret.length < 16) r.fail(r.node(sec, secretFile ? 'secret_file' : 'secret'), 'the auth secret must be at least 16 characters');
  if (service.listen.kind === 'inet' && secret === undefined) {
    r.fail(r.node(sec, 'listen'), 'auth on an inet: address needs auth.secret or auth.secret_file (every local user can reach a TCP port)');
  }
  return {
    ...service,
    ...(secret !== undefined ? { secret } : {}),
    verifyCacheTtlMs: r.duration(sec, 'verify_cache_ttl', 'auth.verify_cache_ttl') ?? 300_000,
    verifyConcurrency: r.integer(sec, 'verify_concurrency', 'auth.verify_concurrency', 1, 64) ?? 2,
    rehash: r.boolean(sec, 'rehash', 'auth.rehash') ?? true,
    policy: readPolicy(r, sec),
  };
}

/** auth.policy: on by default (it only acts when Dovecot's auth_policy_server_url points here). */
function readPolicy(r: NodeReader, auth: YAMLMap | undefined): PolicySettings {
  const sec = r.section(auth, 'policy', 'auth.policy', ['enabled', 'delay_after', 'block_after', 'window', 'block_time', 'max_delay', 'allow', 'max_entries']);
  const d = DEFAULT_POLICY;
  const delayAfter = r.integer(sec, 'delay_after', 'auth.policy.delay_after', 1, 100_000) ?? d.delayAfter;
  const blockAfter = r.integer(sec, 'block_after', 'auth.policy.block_after', 1, 100_000) ?? d.blockAfter;
  if (blockAfter < delayAfter) r.fail(r.node(sec, 'block_after'), 'auth.policy.block_after must not be smaller than auth.policy.delay_after');
  const positive = (key: string, fallback: number): number => {
    const v = r.duration(sec, key, `auth.policy.${key}`);
    if (v !== undefined && v <= 0) r.fail(r.node(sec, key), `auth.policy.${key} must be more than 0`);
    return v ?? fallback;
  };
  const allowNode = r.node(sec, 'allow');
  const allow: string[] = [];
  for (const [i, entry] of (r.stringList(sec, 'allow', 'auth.policy.allow') ?? d.allow).entries()) {
    const c = parseCidr(entry);
    if (typeof c === 'string') r.fail(isSeq(allowNode) ? (allowNode.items[i] as Node) : allowNode, `auth.policy.allow: ${c}`);
    else allow.push(entry.trim());
  }
  return {
    enabled: r.boolean(sec, 'enabled', 'auth.policy.enabled') ?? d.enabled,
    delayAfter,
    blockAfter,
    windowMs: positive('window', d.windowMs),
    blockTimeMs: positive('block_time', d.blockTimeMs),
    maxDelayMs: positive('max_delay', d.maxDelayMs),
    allow,
    maxEntries: r.integer(sec, 'max_entries', 'auth.policy.max_entries', 100, 100_000_000) ?? d.maxEntries,
  };
}

function readDirectory(r: NodeReader, top: YAMLMap | undefined, base: string): DirectoryConfig {
  const sec = r.section(top, 'directory', 'directory', [
    'backend', 'path', 'url', 'pool_size', 'query_timeout', 'cache_ttl', 'cache_size', 'preload',
  ]);
  if (!sec) {
    r.fail(top ?? null, 'missing required section: directory');
    return { backend: 'yaml', path: '' };
  }
  const backend = r.string(sec, 'backend', 'directory.backend') ?? 'yaml';
  if (backend === 'yaml') {
    const path = r.string(sec, 'path', 'directory.path');
    if (!path) r.fail(sec, 'directory.path is required for the yaml backend');
    if (r.node(sec, 'url')) r.fail(r.node(sec, 'url'), 'directory.url is only for the mysql backend');
    return { backend, path: resolve(base, path ?? '') };
  }
  if (backend === 'mysql') {
    const url = r.string(sec, 'url', 'directory.url');
    if (!url) r.fail(sec, 'directory.url is required for the mysql backend');
    else if (!/^mysql:\/\//.test(url)) r.fail(r.node(sec, 'url'), 'directory.url must look like mysql://user:password@host:port/database');
    return {
      backend,
      url: url ?? '',
      poolSize: r.integer(sec, 'pool_size', 'directory.pool_size', 1, 1000) ?? 10,
      queryTimeoutMs: r.duration(sec, 'query_timeout', 'directory.query_timeout') ?? 2000,
      cacheTtlMs: r.duration(sec, 'cache_ttl', 'directory.cache_ttl') ?? 60_000,
      cacheSize: r.integer(sec, 'cache_size', 'directory.cache_size', 0, 100_000_000) ?? 1_000_000,
      preload: r.boolean(sec, 'preload', 'directory.preload') ?? true,
    };
  }
  r.fail(r.node(sec, 'backend'), `directory.backend must be yaml or mysql, got ${JSON.stringify(backend)}`);
  return { backend: 'yaml', path: '' };
}

/** A service section: present = on. `listen` in Postfix notation, plus unix socket mode/user/group. */
export function readService(r: NodeReader, top: YAMLMap | undefined, name: string, extraKeys: readonly string[]): ServiceListen | undefined {
  const sec = r.section(top, name, name, ['listen', 'mode', 'user', 'group', ...extraKeys]);
  if (!sec) return undefined;
  const text = r.string(sec, 'listen', `${name}.listen`);
  if (!text) {
    r.fail(sec, `${name}.listen is required (unix:/path or inet:127.0.0.1:port)`);
    return undefined;
  }
  const listen = parseListen(text);
  if (typeof listen === 'string') {
    r.fail(r.node(sec, 'listen'), `${name}.listen: ${listen}`);
    return undefined;
  }
  const modeText = r.string(sec, 'mode', `${name}.mode`) ?? '0660';
  if (!/^0?[0-7]{3}$/.test(modeText)) r.fail(r.node(sec, 'mode'), `${name}.mode must be an octal mode like 0660`);
  const user = r.string(sec, 'user', `${name}.user`);
  const group = r.string(sec, 'group', `${name}.group`);
  return {
    listen,
    unix: { mode: parseInt(modeText, 8), ...(user ? { user } : {}), ...(group ? { group } : {}) },
  };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** --config, then $MAILWARDEN_CONFIG, then the system default. */
export function configPath(explicit: string | undefined): string {
  return explicit ?? process.env['MAILWARDEN_CONFIG'] ?? DEFAULT_CONFIG_FILE;
}
