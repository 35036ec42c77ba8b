// DKIM signing keys on disk and the DNS records that publish them. The CLI
// (`mailwarden dkim`) manages them; the milter signs with signingKeys().
// (Keys in the MariaDB directory backend can come later behind the same API.)
//
// Layout under dkim.key_dir (default: `dkim` next to the config file):
//
//   <key_dir>/                           0700, created on first use
//     example.org/                       0700, the domain as a lower-case A-label
//       s202611.rsa.key                  0600, active RSA key, selector s202611
//       e202611.ed25519.key              0600, active Ed25519 key, selector e202611
//       s202605.rsa.key.retired          0600, retired: never signs again, kept until `dkim remove`
//
// A key file is a PKCS#8 PEM private key (`openssl pkey -in FILE` reads it)
// after a few `name: value` lines (domain, selector, algorithm, created):
// explanatory text RFC 7468 §2 allows before the BEGIN line. The creation
// time is kept in the file so that copies and restores keep it. Files without
// those lines (a key copied in by hand, PKCS#1 too) work: the file name says
// selector and type, the modification time stands in for `created`.
//
// Every active key is published; per algorithm the OLDEST active key signs.
// A key added next to an active one of the same algorithm (`dkim rotate`)
// waits on standby until the old one is retired, so it never signs before its
// record had time to appear in DNS. Retiring is an atomic rename.
//
// New files are created 0600 under a temporary name and link()ed into place:
// never readable by others, never overwriting a key. As root, new directories
// and files take the owner of key_dir, so create key_dir owned by the user the
// milter runs as.
import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import {
  chownSync, closeSync, constants, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync,
  unlinkSync, writeSync, type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { normalizeDomain } from '../core/address.ts';

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';
/** The key type as DNS (k=) and the file names spell it. */
export type DkimKeyType = 'rsa' | 'ed25519';

export interface DkimKey {
  /** Signing domain (d=), lower-case A-label. */
  readonly domain: string;
  /** s=, lower case. */
  readonly selector: string;
  readonly algorithm: DkimAlgorithm;
  /** PKCS#8 PEM, what mailauth's signatureData.privateKey takes. */
  readonly privateKeyPem: string;
  /** p= of the DNS record: RSA the SPKI DER, Ed25519 the raw 32-byte key (RFC 8463), base64. */
  readonly publicKeyBase64: string;
  readonly created: Date;
  /** Not retired: published, and signing or on standby. */
  readonly active: boolean;
  /** The key that signs for its algorithm now: the oldest active one. */
  readonly signing: boolean;
  /** RSA modulus length; 256 for Ed25519. */
  readonly bits: number;
  readonly file: string;
  /** Permission bits of the file (a group/other bit set deserves a warning). */
  readonly fileMode: number;
}

export type DkimKeyErrorCode = 'invalid' | 'exists' | 'not_found' | 'active' | 'io';

export class DkimKeyError extends Error {
  override readonly name = 'DkimKeyError';
  readonly code: DkimKeyErrorCode;
  constructor(code: DkimKeyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export interface GenerateOptions {
  /** Default: `s` (RSA) or `e` (Ed25519) + yyyymm, with -2, -3... when taken. */
  readonly selector?: string;
  /** Default rsa. */
  readonly algorithm?: DkimKeyType | DkimAlgorithm;
  /** RSA only: 1024, 2048 (default), 3072 or 4096. */
  readonly bits?: number;
}

export const RSA_BITS: readonly number[] = [1024, 2048, 3072, 4096];
export const DEFAULT_RSA_BITS = 2048;

const KEY_FILE = /^(.+)\.(rsa|ed25519)\.key(\.retired)?$/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const ED25519_SPKI_PREFIX = 12;

export function keyType(algorithm: DkimAlgorithm): DkimKeyType {
  return algorithm === 'rsa-sha256' ? 'rsa' : 'ed25519';
}

/** `rsa`, `rsa-sha256`, `ed25519`, `ed25519-sha256` (any case) → the algorithm; undefined otherwise. */
export function parseAlgorithm(input: string): DkimAlgorithm | undefined {
  const s = input.trim().toLowerCase();
  if (s === 'rsa' || s === 'rsa-sha256') return 'rsa-sha256';
  if (s === 'ed25519' || s === 'ed25519-sha256') return 'ed25519-sha256';
  return undefined;
}

/**
 * A selector in canonical (lower-case) form, or undefined: DNS labels of
 * letters, digits and inner hyphens, dot-separated (RFC 6376 §3.1).
 */
export function normalizeSelector(input: string): string | undefined {
  const s = input.trim().toLowerCase();
  if (s === '' || s.length > 200) return undefined;
  return s.split('.').every((label) => LABEL.test(label)) ? s : undefined;
}

// --- DNS records ---

type RecordKey = Pick<DkimKey, 'domain' | 'selector' | 'algorithm' | 'publicKeyBase64'>;

/** `<selector>._domainkey.<domain>` */
export function dnsRecordName(key: Pick<DkimKey, 'domain' | 'selector'>): string {
  return `${key.selector}._domainkey.${key.domain}`;
}

/** The record as verifiers see it after joining the strings: `v=DKIM1; k=rsa; p=...` */
export function dnsRecordText(key: RecordKey): string {
  return `v=DKIM1; k=${keyType(key.algorithm)}; p=${key.publicKeyBase64}`;
}

/**
 * The record as DNS <character-string>s of at most 255 bytes (RFC 1035 §3.3.14);
 * verifiers join them without separators (RFC 6376 §3.6.2.2). A record that
 * fits in one string stays one; a longer one is split after the tags, then
 * p= in 255-byte pieces.
 */
export function dnsRecordStrings(key: RecordKey): string[] {
  const text = dnsRecordText(key);
  if (Buffer.byteLength(text) <= 255) return [text];
  const head = `v=DKIM1; k=${keyType(key.algorithm)}; `;
  return [head, ...splitCharacterStrings(`p=${key.publicKeyBase64}`)];
}

/** Splits text into pieces of at most `max` bytes, never inside a UTF-8 character. */
export function splitCharacterStrings(text: string, max = 255): string[] {
  if (max < 4) throw new RangeError('max must be at least 4 bytes');
  const bytes = Buffer.from(text, 'utf8');
  const out: string[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(start + max, bytes.length);
    // Back off continuation bytes (10xxxxxx) so a character is never cut.
    while (end < bytes.length && end > start && (bytes[end]! & 0xc0) === 0x80) end--;
    out.push(bytes.subarray(start, end).toString('utf8'));
    start = end;
  }
  return out.length ? out : [''];
}

/** A character-string in zone-file (master file) syntax. */
function quoted(s: string): string {
  return `"${s.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * One zone-file line, as BIND, nsupdate (after `update add NAME TTL`) and most
 * DNS web UIs take it:
 * `s2026._domainkey.example.org. IN TXT ( "v=DKIM1; k=rsa; " "p=..." "..." )`
 */
export function zoneFileLine(key: RecordKey): string {
  const strings = dnsRecordStrings(key).map(quoted);
  const rdata = strings.length === 1 ? strings[0]! : `( ${strings.join(' ')} )`;
  return `${dnsRecordName(key)}. IN TXT ${rdata}`;
}

/** p= for a public key: SPKI DER for RSA, the raw 32 bytes for Ed25519 (RFC 8463 §4.2). */
export function publicKeyBase64(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  return (pub.asymmetricKeyType === 'ed25519' ? der.subarray(ED25519_SPKI_PREFIX) : der).toString('base64');
}

// --- the store ---

interface Entry {
  readonly selector: string;
  readonly type: DkimKeyType;
  readonly active: boolean;
  readonly file: string;
}

const generateKeyPairAsync = promisify(generateKeyPair);

/** How often signingKeys() looks at the directories again (ms): `dkim generate/retire` shows within this. */
export const SIGNING_KEYS_RECHECK_MS = 1000;

interface SigningKeysEntry {
  /** The signing keys (the oldest active one per algorithm). */
  keys: DkimKey[];
  /** Every active key (signing and standby): what an explicitly chosen selector may use. */
  active: DkimKey[];
  /** key_dir's and the domain directory's mtime (ns) when the keys were read; a key added, retired or removed changes one. */
  stamp: string;
  checkedAt: number;
}

export class DkimKeyStore {
  readonly keyDir: string;
  readonly #now: () => Date;
  readonly #recheckMs: number;
  /** Signing keys per domain: reading and parsing the key files costs ~0.7 ms, the milter asks per message. */
  readonly #signing = new Map<string, SigningKeysEntry>();

  constructor(keyDir: string, opts: { now?: () => Date; recheckMs?: number } = {}) {
    this.keyDir = keyDir;
    this.#now = opts.now ?? (() => new Date());
    this.#recheckMs = opts.recheckMs ?? SIGNING_KEYS_RECHECK_MS;
  }

  /** Creates and stores a new active key. Refuses a selector the domain has used before (retired keys included). */
  async generate(domainInput: string, opts: GenerateOptions = {}): Promise<DkimKey> {
    const domain = requireKeyDomain(domainInput);
    const algorithm = parseAlgorithm(opts.algorithm ?? 'rsa');
    if (!algorithm) throw new DkimKeyError('invalid', `unknown DKIM algorithm ${JSON.stringify(opts.algorithm)}: use rsa or ed25519`);
    const type = keyType(algorithm);
    let bits = 256;
    if (type === 'rsa') {
      bits = opts.bits ?? DEFAULT_RSA_BITS;
      // RFC 8301 §3.2: signers MUST use at least 1024 bits.
      if (!RSA_BITS.includes(bits)) throw new DkimKeyError('invalid', `RSA keys must have ${RSA_BITS.join(', ')} bits (RFC 8301: at least 1024), got ${bits}`);
    } else if (opts.bits !== undefined && opts.bits !== 256) {
      throw new DkimKeyError('invalid', 'Ed25519 keys have a fixed size: leave out bits');
    }
    const entries = this.#entries(domain);
    const used = new Set(entries.map((e) => e.selector));
    let selector: string;
    if (opts.selector !== undefined) {
      const s = normalizeSelector(opts.selector);
      if (!s) throw new DkimKeyError('invalid', `invalid selector ${JSON.stringify(opts.selector)}: use letters, digits and hyphens (DNS labels)`);
      // One selector is one DNS name, which holds one key: an RSA and an Ed25519 key need two selectors.
      if (used.has(s)) throw new DkimKeyError('exists', `selector ${s} of ${domain} already exists (${entries.filter((e) => e.selector === s).map(describeEntry).join(', ')}); choose another`);
      selector = s;
    } else {
      selector = defaultSelector(type, this.#now(), used);
    }
    const name = dnsRecordName({ domain, selector });
    if (name.length > 253) throw new DkimKeyError('invalid', `${name} is longer than a DNS name may be (253)`);

    const pair = type === 'rsa'
      ? await generateKeyPairAsync('rsa', { modulusLength: bits, publicExponent: 0x10001 })
      : await generateKeyPairAsync('ed25519');
    const pem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const created = this.#now();
    const header = [
      '# mailwarden DKIM signing key; publish with: mailwarden dkim show ' + `${domain} ${selector}`,
      `domain: ${domain}`,
      `selector: ${selector}`,
      `algorithm: ${algorithm}`,
      `created: ${created.toISOString()}`,
    ].join('\n');
    const dir = this.#domainDir(domain, true);
    const file = join(dir, `${selector}.${type}.key`);
    writeNewFile(file, `${header}\n${pem}`, this.#owner());
    this.#signing.delete(domain);
    return this.get(domain, selector);
  }

  /** Every key (active and retired) of one domain or of all, domains in order, newest key first. */
  list(domainInput?: string): DkimKey[] {
    const domains = domainInput === undefined ? this.#domains() : [requireKeyDomain(domainInput)];
    return domains.flatMap((d) => this.#load(d));
  }

  /** One key by selector. */
  get(domainInput: string, selectorInput: string): DkimKey {
    const domain = requireKeyDomain(domainInput);
    const selector = requireSelector(selectorInput);
    const key = this.#load(domain).find((k) => k.selector === selector);
    if (!key) throw new DkimKeyError('not_found', `${domain} has no DKIM key with selector ${selector}`);
    return key;
  }

  /**
   * The keys the signer uses for mail from `domain`: at most one RSA and one
   * Ed25519 key (the oldest active of each), newest first. Empty: sign nothing.
   */
  signingKeys(domainInput: string): DkimKey[] {
    return this.#activeKeys(requireKeyDomain(domainInput)).keys;
  }

  /**
   * The key that ARC-seals for `domain` (milter.arc): the active key with
   * `selector`, else the RSA key that signs for the domain now. Undefined when
   * there is none. Cached like signingKeys().
   */
  sealingKey(domainInput: string, selectorInput?: string): DkimKey | undefined {
    const entry = this.#activeKeys(requireKeyDomain(domainInput));
    if (selectorInput === undefined) return entry.keys.find((k) => k.algorithm === 'rsa-sha256');
    const selector = requireSelector(selectorInput);
    return entry.active.find((k) => k.selector === selector);
  }

  #activeKeys(domain: string): SigningKeysEntry {
    const now = performance.now();
    const cached = this.#signing.get(domain);
    if (cached && now - cached.checkedAt < this.#recheckMs) return cached;
    // At most one pair of stat() calls per domain and second; the files are read again only when a directory changed.
    // (A key file rewritten in place changes no directory: the CLI never does that, it links and renames.)
    const stamp = this.#stamp(domain);
    if (cached && stamp === cached.stamp) {
      cached.checkedAt = now;
      return cached;
    }
    const active = this.#load(domain).filter((k) => k.active);
    const entry: SigningKeysEntry = { keys: active.filter((k) => k.signing), active, stamp, checkedAt: now };
    if (this.#signing.size >= 10_000 && !cached) this.#signing.clear();
    this.#signing.set(domain, entry);
    return entry;
  }

  #stamp(domain: string): string {
    const mtime = (dir: string): string => {
      try {
        return String(statSync(dir, { bigint: true }).mtimeNs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '-';
        throw ioError(`cannot read ${dir}`, err);
      }
    };
    return `${mtime(this.keyDir)} ${mtime(join(this.keyDir, domain))}`;
  }

  /** Stops signing and publishing with a key; the next active key of its algorithm takes over. */
  retire(domainInput: string, selectorInput: string): DkimKey {
    const domain = requireKeyDomain(domainInput);
    const selector = requireSelector(selectorInput);
    const entry = this.#entries(domain).find((e) => e.selector === selector);
    if (!entry) throw new DkimKeyError('not_found', `${domain} has no DKIM key with selector ${selector}`);
    if (!entry.active) throw new DkimKeyError('invalid', `key ${selector} of ${domain} is already retired`);
    const to = `${entry.file}.retired`;
    try {
      renameSync(entry.file, to);
      syncDir(this.#domainDir(domain, false));
    } catch (err) {
      throw ioError(`cannot retire ${entry.file}`, err);
    } finally {
      this.#signing.delete(domain);
    }
    return this.get(domain, selector);
  }

  /** Deletes a retired key for good (an active key must be retired first). */
  remove(domainInput: string, selectorInput: string): DkimKey {
    const key = this.get(domainInput, selectorInput);
    if (key.active) throw new DkimKeyError('active', `key ${key.selector} of ${key.domain} is active: retire it first (mailwarden dkim retire ${key.domain} ${key.selector})`);
    try {
      unlinkSync(key.file);
      syncDir(this.#domainDir(key.domain, false));
    } catch (err) {
      throw ioError(`cannot remove ${key.file}`, err);
    } finally {
      this.#signing.delete(key.domain);
    }
    return key;
  }

  #domainDir(domain: string, create: boolean): string {
    const dir = join(this.keyDir, domain);
    if (!create) return dir;
    try {
      const owner = this.#owner(true);
      for (const d of [this.keyDir, dir]) {
        if (mkdirSync(d, { recursive: true, mode: 0o700 }) !== undefined && owner) chownSync(d, owner.uid, owner.gid);
      }
    } catch (err) {
      throw ioError(`cannot create ${dir}`, err);
    }
    return dir;
  }

  /** Owner new files and directories take: key_dir's, when we are root and it is not. */
  #owner(beforeCreate = false): { uid: number; gid: number } | undefined {
    if (process.getuid?.() !== 0) return undefined;
    try {
      const st = statSync(this.keyDir);
      return st.uid === 0 && st.gid === 0 ? undefined : { uid: st.uid, gid: st.gid };
    } catch (err) {
      if (beforeCreate && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  #domains(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.keyDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError(`cannot read ${this.keyDir}`, err);
    }
    return names.filter((n) => normalizeDomain(n) === n).sort();
  }

  #entries(domain: string): Entry[] {
    const dir = join(this.keyDir, domain);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError(`cannot read ${dir}`, err);
    }
    const out: Entry[] = [];
    for (const n of names) {
      const m = KEY_FILE.exec(n);
      // Anything else (temp files, notes) is not ours to judge.
      if (!m || normalizeSelector(m[1]!) !== m[1]) continue;
      out.push({ selector: m[1]!, type: m[2] as DkimKeyType, active: !m[3], file: join(dir, n) });
    }
    return out;
  }

  #load(domain: string): DkimKey[] {
    const loaded = this.#entries(domain).map((e) => ({ e, ...readKeyFile(e) }));
    // Per algorithm, the oldest active key signs (ties: selector order, so the choice is stable).
    const signer = new Map<DkimKeyType, (typeof loaded)[number]>();
    for (const k of loaded) {
      if (!k.e.active) continue;
      const cur = signer.get(k.e.type);
      if (!cur || k.created < cur.created || (+k.created === +cur.created && k.e.selector < cur.e.selector)) signer.set(k.e.type, k);
    }
    return loaded
      .map((k): DkimKey => ({
        domain,
        selector: k.e.selector,
        algorithm: k.e.type === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
        privateKeyPem: k.pem,
        publicKeyBase64: k.publicKeyBase64,
        created: k.created,
        active: k.e.active,
        signing: signer.get(k.e.type) === k,
        bits: k.bits,
        file: k.e.file,
        fileMode: k.mode,
      }))
      .sort((a, b) => +b.created - +a.created || a.selector.localeCompare(b.selector));
  }
}

function describeEntry(e: Entry): string {
  return `${e.type}${e.active ? '' : ', retired'}`;
}

function requireKeyDomain(input: string): string {
  const domain = normalizeDomain(input);
  if (!domain) throw new DkimKeyError('invalid', `invalid domain name: ${JSON.stringify(input)}`);
  return domain;
}

function requireSelector(input: string): string {
  const s = normalizeSelector(input);
  if (!s) throw new DkimKeyError('invalid', `invalid selector ${JSON.stringify(input)}`);
  return s;
}

/** `s202611` for RSA, `e202611` for Ed25519 (UTC month); `-2`, `-3`... when taken. */
export function defaultSelector(type: DkimKeyType, now: Date, used: ReadonlySet<string>): string {
  const base = `${type === 'rsa' ? 's' : 'e'}${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
  if (!used.has(base)) return base;
  for (let i = 2; ; i++) if (!used.has(`${base}-${i}`)) return `${base}-${i}`;
}

function readKeyFile(e: Entry): { pem: string; publicKeyBase64: string; created: Date; bits: number; mode: number } {
  let text: string;
  let st: Stats;
  try {
    st = statSync(e.file);
    text = readFileSync(e.file, 'utf8');
  } catch (err) {
    throw ioError(`cannot read ${e.file}`, err);
  }
  const begin = text.search(/^-----BEGIN /m);
  if (begin < 0) throw new DkimKeyError('invalid', `${e.file}: no PEM private key in the file`);
  let key: KeyObject;
  try {
    key = createPrivateKey(text.slice(begin));
  } catch (err) {
    throw new DkimKeyError('invalid', `${e.file}: not a private key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== e.type) {
    throw new DkimKeyError('invalid', `${e.file}: holds a ${key.asymmetricKeyType ?? 'unknown'} key, the name says ${e.type}`);
  }
  const created = /^created:\s*(\S+)\s*$/m.exec(text.slice(0, begin))?.[1];
  const createdDate = created !== undefined && !Number.isNaN(Date.parse(created)) ? new Date(created) : st.mtime;
  return {
    // Re-exported so that a PKCS#1 key copied in by hand reaches the signer as PKCS#8 like ours.
    pem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyBase64: publicKeyBase64(key),
    created: createdDate,
    bits: e.type === 'rsa' ? (key.asymmetricKeyDetails?.modulusLength ?? 0) : 256,
    mode: st.mode & 0o777,
  };
}

/** Creates `file` with `text`, mode 0600, atomically, failing if it exists. */
function writeNewFile(file: string, text: string, owner: { uid: number; gid: number } | undefined): void {
  const dir = join(file, '..');
  const tmp = join(dir, `.${file.slice(dir.length + 1)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    // O_EXCL + 0600 at creation: the key is never readable by others, not even for a moment.
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (owner) chownSync(tmp, owner.uid, owner.gid);
    try {
      // link() fails with EEXIST instead of replacing: a key is never overwritten.
      linkSync(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new DkimKeyError('exists', `${file} already exists`);
      throw err;
    }
    syncDir(dir);
  } catch (err) {
    if (err instanceof DkimKeyError) throw err;
    throw ioError(`cannot write ${file}`, err);
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, constants.O_RDONLY);
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* some filesystems refuse fsync on directories */ }
}

function ioError(what: string, err: unknown): DkimKeyError {
  if (err instanceof DkimKeyError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return new DkimKeyError('io', `${what}: ${code ?? (err as Error).message}`, { cause: err });
}
