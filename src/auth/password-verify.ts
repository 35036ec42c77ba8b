// Checks a password against a stored `{SCHEME}hash` the way Dovecot does, for the
// schemes mailwarden imports (passwords.ts KNOWN_SCHEMES) plus {CRYPT}.
// A hash we cannot check is an error, never a mismatch: a silent "wrong password"
// would lock users out and hide the cause.
import { timingSafeEqual } from 'node:crypto';
import argon2 from 'argon2';
import bcrypt from 'bcryptjs';
import type { Argon2Params } from '../config/load.ts';
import { cryptAsync } from './crypt.ts';

export type PasswordHashProblem = 'unsupported-scheme' | 'malformed-hash';

/**
 * The stored hash cannot be verified (unknown scheme, or a known scheme whose hash is
 * damaged). Callers answer a temporary failure and log `scheme` and `problem`; the
 * message never contains the hash.
 */
export class PasswordHashError extends Error {
  readonly problem: PasswordHashProblem;
  readonly scheme: string;
  constructor(problem: PasswordHashProblem, scheme: string, detail: string) {
    super(`${problem === 'unsupported-scheme' ? 'unsupported password scheme' : 'malformed password hash'} {${scheme}}: ${detail}`);
    this.name = 'PasswordHashError';
    this.problem = problem;
    this.scheme = scheme;
  }
}

/** `{SCHEME}body`; scheme names are case-insensitive in Dovecot. */
function splitScheme(storedHash: string): { scheme: string; body: string } {
  const m = /^\{([A-Za-z0-9.-]+)\}(.*)$/s.exec(storedHash);
  if (!m) throw new PasswordHashError('unsupported-scheme', '', 'the stored hash has no {SCHEME} prefix');
  return { scheme: m[1]!.toUpperCase(), body: m[2]! };
}

/** Equal strings in time independent of where they differ; the length (public: it follows from the format) may leak. */
function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

// ---- argon2 -------------------------------------------------------------------

// `$argon2id$v=19$m=…,t=…,p=…$salt$hash`, parameters in any order (node-argon2 0.45 writes m,p,t).
const ARGON2_RE = /^\$argon2(?:id|i)\$(?:v=\d+\$)?([mtp]=\d+,[mtp]=\d+,[mtp]=\d+)\$[A-Za-z0-9+/]{8,}\$[A-Za-z0-9+/]{16,}$/;

async function verifyArgon2(scheme: string, body: string, password: string): Promise<boolean> {
  const m = ARGON2_RE.exec(body);
  // Like libsodium (Dovecot), either label accepts either variant: the string names its own type.
  if (!m || new Set(m[1]!.split(',').map((kv) => kv[0])).size !== 3) {
    throw new PasswordHashError('malformed-hash', scheme, 'not an argon2i/argon2id PHC string with m, t and p');
  }
  try {
    return await argon2.verify(body, password); // compares with timingSafeEqual itself
  } catch {
    // The library's messages may quote parts of the hash: keep them out of logs.
    throw new PasswordHashError('malformed-hash', scheme, 'argon2 rejected the hash parameters');
  }
}

// ---- crypt(3) family ------------------------------------------------------------

// Salt characters libxcrypt (Debian's crypt) accepts: printable ASCII except $ : ; * ! \
const SALT = String.raw`["-#%-)+-9<-\[\]-~]`;
const CRYPT_FORMATS = [
  { prefix: '$6$', re: new RegExp(String.raw`^\$6\$(?:rounds=([1-9]\d{0,8})\$)?${SALT}{0,16}\$[./0-9A-Za-z]{86}$`) },
  { prefix: '$5$', re: new RegExp(String.raw`^\$5\$(?:rounds=([1-9]\d{0,8})\$)?${SALT}{0,16}\$[./0-9A-Za-z]{43}$`) },
  { prefix: '$1$', re: new RegExp(String.raw`^\$1\$${SALT}{0,8}\$[./0-9A-Za-z]{22}$`) },
] as const;
const BCRYPT_RE = /^\$2[aby]\$(?:0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;
/** libxcrypt refuses longer passphrases (crypt() fails, Dovecot says mismatch); it also bounds the work. */
const CRYPT_MAX_PASSPHRASE = 511;

/**
 * What glibc/libxcrypt crypt() does for {CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT} and
 * {BLF-CRYPT} in Dovecot: the hash names its own algorithm, so any label takes any of
 * these formats (`doveadm pw -t '{SHA512-CRYPT}$5$…'` verifies).
 */
async function verifyCrypt(scheme: string, body: string, password: string): Promise<boolean> {
  const tooLong = scheme !== 'MD5-CRYPT' && Buffer.byteLength(password, 'utf8') > CRYPT_MAX_PASSPHRASE;
  if (/^\$2[aby]\$/.test(body)) {
    if (!BCRYPT_RE.test(body)) throw new PasswordHashError('malformed-hash', scheme, 'bad bcrypt string');
    if (tooLong) return false;
    // bcryptjs is pure JS; its async form works in slices so the event loop keeps turning.
    return constantTimeEqual(await bcrypt.hash(password, body.slice(0, 29)), body);
  }
  const format = CRYPT_FORMATS.find((f) => body.startsWith(f.prefix));
  if (!format) throw new PasswordHashError('unsupported-scheme', scheme, 'crypt format other than $1$, $5$, $6$, $2a$/$2b$/$2y$');
  const m = format.re.exec(body);
  if (!m || (m[1] !== undefined && Number(m[1]) < 1000)) {
    throw new PasswordHashError('malformed-hash', scheme, `bad ${format.prefix} crypt string`);
  }
  if (tooLong) return false;
  // Runs on the main thread in ~2 ms slices, so lookups keep being answered meanwhile.
  return constantTimeEqual(await cryptAsync(password, body), body);
}

// ---- entry points -----------------------------------------------------------------

/**
 * True if `password` matches `storedHash` (`{SCHEME}…`). Throws PasswordHashError for a
 * scheme it does not implement ({PLAIN}, {SSHA512}, a bare hash…) or a damaged hash.
 */
export async function verifyPassword(storedHash: string, password: string): Promise<boolean> {
  const { scheme, body } = splitScheme(storedHash);
  switch (scheme) {
    case 'ARGON2ID':
    case 'ARGON2I':
      return verifyArgon2(scheme, body, password);
    case 'SHA512-CRYPT':
    case 'SHA256-CRYPT':
    case 'BLF-CRYPT':
    case 'CRYPT':
      return verifyCrypt(scheme, body, password);
    case 'MD5-CRYPT':
      // Dovecot's own md5crypt, not crypt(): only `$1$`, and no passphrase length limit.
      if (!body.startsWith('$1$')) throw new PasswordHashError('malformed-hash', scheme, 'MD5-CRYPT hash without $1$');
      return verifyCrypt(scheme, body, password);
    default:
      throw new PasswordHashError('unsupported-scheme', scheme, 'mailwarden does not verify this scheme');
  }
}

/**
 * True unless the hash is exactly what hashPassword() writes today: `{ARGON2ID}` argon2id
 * v=19 with the configured m, t, p, in the m,t,p order Dovecot (libsodium) can parse.
 * Never throws: anything unparsable should be replaced.
 */
export function needsRehash(storedHash: string, params: Argon2Params): boolean {
  const m = /^\{ARGON2ID\}\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/.exec(storedHash);
  return !m || Number(m[1]) !== params.memoryCost || Number(m[2]) !== params.timeCost || Number(m[3]) !== params.parallelism;
}
