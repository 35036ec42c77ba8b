// New password hashes must verify in Dovecot itself: `doveadm pw -t`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import argon2 from 'argon2';
import { hashPassword, normalizePhc, normalizeImportedHash } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';

const run = promisify(execFile);

async function doveadmVerifies(hash: string, password: string): Promise<boolean> {
  try {
    await run('doveadm', ['pw', '-t', hash, '-p', password]);
    return true;
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    assert.match(e.stderr ?? '', /Password mismatch/, `doveadm failed for another reason: ${e.stderr}`);
    return false;
  }
}

test('argon2id hashes from mailwarden verify in Dovecot (m,t,p order)', async () => {
  const hash = await hashPassword('correct horse', DEFAULT_ARGON2);
  assert.match(hash, /^\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  assert.equal(await doveadmVerifies(hash, 'correct horse'), true);
  assert.equal(await doveadmVerifies(hash, 'wrong horse'), false);
  const p4 = await hashPassword('pw', { memoryCost: 8192, timeCost: 3, parallelism: 4 });
  assert.equal(await doveadmVerifies(p4, 'pw'), true);
});

test('the m,p,t order some argon2 versions emit is rejected by Dovecot and fixed by normalizePhc', async () => {
  const phc = await argon2.hash('pw', { type: argon2.argon2id, memoryCost: 8192, timeCost: 2, parallelism: 1 });
  const swapped = phc.replace(/m=(\d+),t=(\d+),p=(\d+)/, 'm=$1,p=$3,t=$2');
  assert.notEqual(swapped, phc);
  assert.equal(await doveadmVerifies(`{ARGON2ID}${swapped}`, 'pw'), false, 'Dovecot rejects m,p,t');
  assert.equal(normalizePhc(swapped), phc);
  assert.equal(await doveadmVerifies(`{ARGON2ID}${normalizePhc(swapped)}`, 'pw'), true);
  assert.equal(normalizeImportedHash(swapped), `{ARGON2ID}${phc}`);
});

test('imported crypt hashes keep a scheme Dovecot understands', async () => {
  const { stdout } = await run('doveadm', ['pw', '-s', 'SHA512-CRYPT', '-p', 'legacy']);
  const bare = stdout.trim().replace(/^\{SHA512-CRYPT\}/, '');
  const imported = normalizeImportedHash(bare);
  assert.equal(imported, `{SHA512-CRYPT}${bare}`);
  assert.equal(await doveadmVerifies(imported!, 'legacy'), true);
  assert.equal(normalizeImportedHash('{PLAIN}secret'), undefined, 'plain text is refused');
  assert.equal(normalizeImportedHash('5f4dcc3b5aa765d61d8327deb882cf99'), undefined, 'bare MD5 is refused');
});
