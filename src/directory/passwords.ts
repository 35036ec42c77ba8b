// Password hashes in the form Dovecot reads from a passdb: `{SCHEME}hash`.
// New hashes are argon2id, encoded exactly as libsodium (Dovecot's
// {ARGON2ID}) accepts them.
import argon2 from 'argon2';
import type { Argon2Params } from '../config/load.ts';

/** Schemes mailwarden stores and (from issue 3 on) verifies; anything else is refused at import. */
export const KNOWN_SCHEMES = ['ARGON2ID', 'ARGON2I', 'SHA512-CRYPT', 'SHA256-CRYPT', 'BLF-CRYPT', 'MD5-CRYPT'] as const;

/**
 * libsodium's crypto_pwhash_str_verify only parses `m=…,t=…,p=…`; node-argon2
 * 0.45 writes `m=…,p=…,t=…` (ranisalt/node-argon2#559). Reorder whatever we get.
 */
export function normalizePhc(phc: string): string {
  return phc.replace(/\$((?:[mtp]=\d+,?){3})\$/, (_all, params: string) => {
    const kv = new Map(params.split(',').map((p) => p.split('=') as [string, string]));
    return `$m=${kv.get('m')},t=${kv.get('t')},p=${kv.get('p')}$`;
  });
}

export async function hashPassword(password: string, params: Argon2Params): Promise<string> {
  const phc = await argon2.hash(password, {
    type: argon2.argon2id,
    memoryCost: params.memoryCost,
    timeCost: params.timeCost,
    parallelism: params.parallelism,
  });
  return `{ARGON2ID}${normalizePhc(phc)}`;
}

/** Accepts `{SCHEME}…` with a known scheme, or a bare `$2y$`/`$6$`/`$argon2id$` crypt string (PostfixAdmin exports). */
export function normalizeImportedHash(text: string): string | undefined {
  const hash = text.trim();
  const m = /^\{([A-Z0-9.-]+)\}(.+)$/.exec(hash);
  if (m) return (KNOWN_SCHEMES as readonly string[]).includes(m[1]!) ? `{${m[1]}}${normalizePhc(m[2]!)}` : undefined;
  if (/^\$argon2id\$/.test(hash)) return `{ARGON2ID}${normalizePhc(hash)}`;
  if (/^\$argon2i\$/.test(hash)) return `{ARGON2I}${normalizePhc(hash)}`;
  if (/^\$6\$/.test(hash)) return `{SHA512-CRYPT}${hash}`;
  if (/^\$5\$/.test(hash)) return `{SHA256-CRYPT}${hash}`;
  if (/^\$2[abyx]\$/.test(hash)) return `{BLF-CRYPT}${hash}`;
  if (/^\$1\$/.test(hash)) return `{MD5-CRYPT}${hash}`;
  return undefined;
}

/** The scheme name only, for display: never show a hash. */
export function hashScheme(hash: string | undefined): string | undefined {
  return hash ? /^\{([^}]+)\}/.exec(hash)?.[1] : undefined;
}
