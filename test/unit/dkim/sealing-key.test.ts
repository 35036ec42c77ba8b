// sealingKey(): the key milter.arc seals with. Default: the RSA key that signs
// for the domain now; with a selector: that active key (standby included, its
// record is published), never a retired one. Same cache as signingKeys().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DkimKeyStore } from '../../../src/dkim/keys.ts';
import { tempDir } from '../../support/tmp.ts';

test('the signing RSA key by default, an active key by selector, nothing retired or missing', async (t) => {
  const tmp = await tempDir('dkim-sealing-key');
  t.after(() => tmp.remove());
  const keyDir = join(tmp.path, 'dkim');
  const cli = new DkimKeyStore(keyDir);
  const store = new DkimKeyStore(keyDir, { recheckMs: 0 });
  assert.equal(store.sealingKey('example.org'), undefined, 'no keys yet');

  await cli.generate('example.org', { algorithm: 'ed25519', selector: 'e1' });
  assert.equal(store.sealingKey('example.org'), undefined, 'an Ed25519 key alone is not a default sealing key');
  assert.equal(store.sealingKey('example.org', 'e1')?.algorithm, 'ed25519-sha256', 'but a named one is returned (the milter refuses it)');

  await cli.generate('example.org', { algorithm: 'rsa', selector: 's1', bits: 1024 });
  await cli.generate('example.org', { algorithm: 'rsa', selector: 's2', bits: 1024 });
  assert.equal(store.sealingKey('Example.ORG')?.selector, 's1', 'the oldest active RSA key signs, and seals');
  assert.equal(store.sealingKey('example.org', 'S2')?.selector, 's2', 'a standby key by name');
  assert.equal(store.sealingKey('example.org', 'nope'), undefined);

  cli.retire('example.org', 's1');
  assert.equal(store.sealingKey('example.org')?.selector, 's2', 'the standby key took over');
  assert.equal(store.sealingKey('example.org', 's1'), undefined, 'a retired key never seals');
  assert.throws(() => store.sealingKey('example.org', '-bad-'), /invalid selector/);
});
