// The main thread's signer (milter.workers: 0) also reuses imported signing
// keys: mailauth-setup.ts is evaluated before mailauth by every module of ours
// that imports it. This file imports only our modules, so mailauth is loaded
// the way the daemon loads it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { signMessage } from '../../../src/milter/dkim-sign.ts';
import { privateKeyCacheStats } from '../../../src/checks/private-key-cache.ts';

test('signing in the main thread imports each private key once', async () => {
  const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const key = { domain: 'example.org', selector: 's1', algorithm: 'rsa-sha256', privateKeyPem: pem } as const;
  const message = Buffer.from('From: a@example.org\r\nTo: b@example.net\r\nSubject: x\r\n\r\nhello\r\n');
  const before = privateKeyCacheStats();
  const first = await signMessage(message, [key as never]);
  const second = await signMessage(message, [key as never]);
  assert.match(first.signatures, /^DKIM-Signature: .*d=example\.org/s);
  assert.equal(second.signatures.replace(/t=\d+/, ''), first.signatures.replace(/t=\d+/, ''), 'same key, same signature');
  const after = privateKeyCacheStats();
  assert.equal(after.keys - before.keys, 1, 'imported once');
  assert.ok(after.hits - before.hits >= 1, 'the second signature reused it');
});
