// verifyPassword() and needsRehash() against hashes from Dovecot itself (`doveadm pw`,
// live and fixed), node-argon2 in both parameter orders, and bcryptjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import argon2 from 'argon2';
import bcrypt from 'bcryptjs';
import { needsRehash, PasswordHashError, verifyPassword } from '../../../src/auth/password-verify.ts';
import { hashPassword } from '../../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../../src/config/load.ts';

const run = promisify(execFile);
const PASSWORD = 'pässwörd ✓';
const WRONG = 'pässwörd ✗';
const CHEAP = { memoryCost: 8192, timeCost: 1, parallelism: 1 };

async function doveadmHash(scheme: string, password: string, extra: string[] = []): Promise<string> {
  const { stdout } = await run('doveadm', ['pw', '-s', scheme, ...extra, '-p', password]);
  return stdout.trim();
}

/** Dovecot's own verdict, to check that a relabelled hash is one Dovecot accepts too. */
async function doveadmVerifies(hash: string, password: string): Promise<boolean> {
  try {
    await run('doveadm', ['pw', '-t', hash, '-p', password]);
    return true;
  } catch (err) {
    assert.match((err as { stderr?: string }).stderr ?? '', /mismatch/i);
    return false;
  }
}

async function assertVerifies(hash: string, password = PASSWORD, wrong = WRONG): Promise<void> {
  assert.equal(await verifyPassword(hash, password), true, `right password: ${hash}`);
  assert.equal(await verifyPassword(hash, wrong), false, `wrong password: ${hash}`);
}

async function assertHashError(hash: string, problem: PasswordHashError['problem'], scheme: string): Promise<void> {
  await assert.rejects(verifyPassword(hash, PASSWORD), (err: unknown) => {
    assert.ok(err instanceof PasswordHashError, `not a PasswordHashError: ${String(err)}`);
    assert.equal(err.problem, problem, hash);
    assert.equal(err.scheme, scheme);
    const secretPart = hash.replace(/^\{[^}]*\}/, '');
    if (secretPart.length > 4) assert.ok(!err.message.includes(secretPart), 'the message must not quote the hash');
    return true;
  });
}

// Fixed `doveadm pw -s SCHEME -p 'pässwörd ✓'` output (Dovecot 2.3.19).
const FIXED = [
  '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$SPWzGMytI+BFtMFEcHPXFw$j9E9dN5qD1dReqZvNfV1bKPv2JaWItCjPT8Eo9qZ304',
  '{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$ah8GDw0Q2U1QKVg9HZlMnA$EoKdHjHhcaEhoBckBOwzpgxOXoYWEtiBApOgQ7+dhn8',
  '{SHA512-CRYPT}$6$w3Q2C/9FXW9uuT2r$ZQjyyTTt79Te6LzDBpWR/mXouMEc7JvBU12VXyoeKQsbg0nrsAHAedu6Xv4diu.FzH2pQ4eCEMYKX.8KcfCYL/',
  '{SHA512-CRYPT}$6$rounds=10000$CwFa4umb6D6Wpqj3$XWzzi5MPMMqFVTQEcoHUvlssyQmeYa6QFhO6PXXHe2dF39FdELz/fzAwecEdcaDXKvdr0JAm.wwpQ0BTacypB0',
  '{SHA256-CRYPT}$5$MN6.BkJ3CkOpqQH3$RSySv0FuhaXUJ6KUTmaoti6uEhC9CQ5PigmvxkHjMl7',
  '{MD5-CRYPT}$1$4x3b2BRd$OQddsWo6Z6hqr4dOYFRpm0',
  '{BLF-CRYPT}$2y$05$JXDSbahkiOpH2QOxp79ztOb07F1QI41D6JQncLUdNZ7LtI5u65PrC',
];

test('fixed doveadm hashes of every scheme verify the right password and reject a wrong one', async () => {
  for (const hash of FIXED) await assertVerifies(hash);
});

test('hashes generated live by doveadm pw -s, for every scheme', async () => {
  const schemes = ['ARGON2ID', 'ARGON2I', 'SHA512-CRYPT', 'SHA256-CRYPT', 'MD5-CRYPT', 'BLF-CRYPT', 'CRYPT'];
  const hashes = await Promise.all(schemes.map((s) => doveadmHash(s, PASSWORD)));
  hashes.push(await doveadmHash('SHA512-CRYPT', PASSWORD, ['-r', '7000']), await doveadmHash('BLF-CRYPT', PASSWORD, ['-r', '4']));
  for (const hash of hashes) await assertVerifies(hash);
});

test('{CRYPT} holds any of $1$, $5$, $6$, $2y$; the *-CRYPT labels take any crypt format, as in Dovecot', async () => {
  const bodies = await Promise.all(['SHA512-CRYPT', 'SHA256-CRYPT', 'MD5-CRYPT', 'BLF-CRYPT'].map(async (s) =>
    (await doveadmHash(s, PASSWORD)).replace(/^\{[^}]+\}/, '')));
  for (const body of bodies) {
    for (const label of ['CRYPT', 'SHA512-CRYPT', 'BLF-CRYPT', 'crypt']) {
      await assertVerifies(`{${label}}${body}`);
    }
  }
  // Dovecot agrees on a cross-labelled hash...
  assert.equal(await doveadmVerifies(`{SHA512-CRYPT}${bodies[1]}`, PASSWORD), true);
  // ...but its MD5-CRYPT is its own md5crypt, which only knows $1$: an error here, not a silent mismatch.
  assert.equal(await doveadmVerifies(`{MD5-CRYPT}${bodies[0]}`, PASSWORD), false);
  await assertHashError(`{MD5-CRYPT}${bodies[0]}`, 'malformed-hash', 'MD5-CRYPT');
});

test('bcrypt $2a$ and $2b$ (bcryptjs) as well as $2y$ (PHP, Dovecot)', async () => {
  const b = await bcrypt.hash(PASSWORD, 4);
  assert.match(b, /^\$2b\$04\$/);
  await assertVerifies(`{BLF-CRYPT}${b}`);
  await assertVerifies(`{BLF-CRYPT}${b.replace('$2b$', '$2a$')}`);
  await assertVerifies(`{CRYPT}${b.replace('$2b$', '$2y$')}`);
  assert.equal(await doveadmVerifies(`{BLF-CRYPT}${b}`, PASSWORD), true);
});

test('node-argon2 hashes in m,t,p and in m,p,t order; either argon2 label takes either variant', async () => {
  const mtp = await argon2.hash(PASSWORD, { type: argon2.argon2id, ...CHEAP });
  assert.match(mtp, /\$m=8192,t=1,p=1\$/);
  const mpt = mtp.replace(/m=(\d+),t=(\d+),p=(\d+)/, 'm=$1,p=$3,t=$2');
  assert.match(mpt, /\$m=8192,p=1,t=1\$/);
  await assertVerifies(`{ARGON2ID}${mtp}`);
  await assertVerifies(`{ARGON2ID}${mpt}`);
  const argon2i = await argon2.hash(PASSWORD, { type: argon2.argon2i, ...CHEAP, parallelism: 2 });
  await assertVerifies(`{ARGON2I}${argon2i}`);
  await assertVerifies(`{ARGON2ID}${argon2i}`, PASSWORD, WRONG); // libsodium reads the type from the string
  await assertVerifies(`{ARGON2I}${mtp}`);
  await assertVerifies(await hashPassword(PASSWORD, CHEAP));
});

test('edge passwords: empty, long, and bcrypt\'s 72-byte limit', async () => {
  const long = 'x'.repeat(200);
  const hash = `{SHA512-CRYPT}${(await doveadmHash('SHA512-CRYPT', long)).replace(/^\{[^}]+\}/, '')}`;
  await assertVerifies(hash, long, 'x'.repeat(199));
  const empty = await hashPassword('', CHEAP);
  await assertVerifies(empty, '', ' ');
  // libxcrypt (Dovecot's crypt()) refuses passphrases over 511 bytes: a mismatch, not an error...
  const crypt511 = await doveadmHash('SHA512-CRYPT', 'z'.repeat(511));
  await assertVerifies(crypt511, 'z'.repeat(511), 'z'.repeat(510));
  assert.equal(await verifyPassword(crypt511.replace(/\$[^$]+$/, `$${'A'.repeat(86)}`), 'z'.repeat(512)), false);
  assert.equal(await verifyPassword(`{BLF-CRYPT}${await bcrypt.hash('q'.repeat(600), 4)}`, 'q'.repeat(600)), false);
  // ...while Dovecot's own MD5-CRYPT has no limit.
  await assertVerifies(await doveadmHash('MD5-CRYPT', 'm'.repeat(600)), 'm'.repeat(600), 'm'.repeat(599));
  // bcrypt reads at most 72 bytes, in Dovecot as here.
  const b = `{BLF-CRYPT}${await bcrypt.hash('y'.repeat(72), 4)}`;
  assert.equal(await verifyPassword(b, 'y'.repeat(80)), true);
});

test('{PLAIN}, other unknown schemes and bare hashes are a typed error, never a mismatch', async () => {
  await assertHashError('{PLAIN}secret-password', 'unsupported-scheme', 'PLAIN');
  await assertHashError('{SSHA512}c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0', 'unsupported-scheme', 'SSHA512');
  await assertHashError('{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99', 'unsupported-scheme', 'PLAIN-MD5');
  await assertHashError('$6$w3Q2C/9FXW9uuT2r$ZQjyyTTt79Te6LzDBpWR', 'unsupported-scheme', '');
  await assertHashError('', 'unsupported-scheme', '');
  await assertHashError('{CRYPT}abJnggxhB/yWI', 'unsupported-scheme', 'CRYPT'); // DES
  await assertHashError('{CRYPT}$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7', 'unsupported-scheme', 'CRYPT');
  await assertHashError('{CRYPT}$2x$05$JXDSbahkiOpH2QOxp79ztOb07F1QI41D6JQncLUdNZ7LtI5u65PrC', 'unsupported-scheme', 'CRYPT');
  assert.ok(new PasswordHashError('unsupported-scheme', 'X', 'y') instanceof Error);
});

test('a damaged hash of a known scheme is a typed error too', async () => {
  await assertHashError('{SHA512-CRYPT}$6$w3Q2C/9FXW9uuT2r$ZQjyyTTt79Te6LzDBpWR', 'malformed-hash', 'SHA512-CRYPT');
  await assertHashError(`{SHA512-CRYPT}$6$rounds=999$abc$${'a'.repeat(86)}`, 'malformed-hash', 'SHA512-CRYPT');
  await assertHashError(`{SHA512-CRYPT}$6$rounds=05000$abc$${'a'.repeat(86)}`, 'malformed-hash', 'SHA512-CRYPT');
  await assertHashError(`{SHA512-CRYPT}!$6$abc$${'a'.repeat(86)}`, 'unsupported-scheme', 'SHA512-CRYPT');
  await assertHashError('{SHA256-CRYPT}$5$toolongsaltstring12$RSySv0FuhaXUJ6KUTmaoti6uEhC9CQ5PigmvxkHjMl7', 'malformed-hash', 'SHA256-CRYPT');
  await assertHashError('{MD5-CRYPT}$1$4x3b2BRd$OQddsWo6Z6hqr4dOYF', 'malformed-hash', 'MD5-CRYPT');
  await assertHashError('{BLF-CRYPT}$2y$05$JXDSbahkiOpH2QOxp79ztOb07F1QI41D6JQnc', 'malformed-hash', 'BLF-CRYPT');
  await assertHashError('{ARGON2ID}not-a-hash', 'malformed-hash', 'ARGON2ID');
  await assertHashError('{ARGON2ID}$argon2id$v=19$m=65536,t=3$SPWzGMytI+BFtMFEcHPXFw$j9E9dN5qD1dReqZvNfV1bKPv2JaWItCjPT8Eo9qZ304', 'malformed-hash', 'ARGON2ID');
  await assertHashError('{ARGON2ID}$argon2id$v=19$m=65536,m=3,p=1$SPWzGMytI+BFtMFEcHPXFw$j9E9dN5qD1dReqZvNfV1bKPv2JaWItCjPT8Eo9qZ304', 'malformed-hash', 'ARGON2ID');
  await assertHashError('{ARGON2ID}$argon2d$v=19$m=65536,t=3,p=1$SPWzGMytI+BFtMFEcHPXFw$j9E9dN5qD1dReqZvNfV1bKPv2JaWItCjPT8Eo9qZ304', 'malformed-hash', 'ARGON2ID');
  await assertHashError('{ARGON2ID}$argon2id$v=19$m=1,t=3,p=1$SPWzGMytI+BFtMFEcHPXFw$j9E9dN5qD1dReqZvNfV1bKPv2JaWItCjPT8Eo9qZ304', 'malformed-hash', 'ARGON2ID');
});

test('needsRehash: only {ARGON2ID} argon2id v=19 with exactly the configured m,t,p (in m,t,p order) is current', async () => {
  const current = await hashPassword(PASSWORD, DEFAULT_ARGON2);
  assert.equal(needsRehash(current, DEFAULT_ARGON2), false);
  assert.equal(needsRehash(current, { ...DEFAULT_ARGON2, memoryCost: 65536 }), true);
  assert.equal(needsRehash(current, { ...DEFAULT_ARGON2, timeCost: 3 }), true);
  assert.equal(needsRehash(current, { ...DEFAULT_ARGON2, parallelism: 2 }), true);
  const body = current.replace('{ARGON2ID}', '');
  assert.equal(needsRehash(body, DEFAULT_ARGON2), true, 'no {SCHEME} prefix');
  assert.equal(needsRehash(`{ARGON2I}${body}`, DEFAULT_ARGON2), true, 'label other than ARGON2ID');
  assert.equal(needsRehash(current.replace('m=19456,t=2,p=1', 'm=19456,p=1,t=2'), DEFAULT_ARGON2), true, 'm,p,t order Dovecot cannot read');
  assert.equal(needsRehash(current.replace('v=19', 'v=16'), DEFAULT_ARGON2), true);
  const argon2i = `{ARGON2I}${await argon2.hash(PASSWORD, { type: argon2.argon2i, ...DEFAULT_ARGON2 })}`;
  assert.equal(needsRehash(argon2i, DEFAULT_ARGON2), true);
  for (const legacy of FIXED.slice(1)) assert.equal(needsRehash(legacy, DEFAULT_ARGON2), true, legacy);
  assert.equal(needsRehash(FIXED[0]!, DEFAULT_ARGON2), true, 'doveadm default m=65536,t=3 is not the configured cost');
  assert.equal(needsRehash(FIXED[0]!, { memoryCost: 65536, timeCost: 3, parallelism: 1 }), false);
  assert.equal(needsRehash('{PLAIN}x', DEFAULT_ARGON2), true);
  assert.equal(needsRehash('', DEFAULT_ARGON2), true);
});
