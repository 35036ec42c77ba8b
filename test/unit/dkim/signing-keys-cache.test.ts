// signingKeys() caches the parsed keys per domain and looks at the key
// directories at most once per recheck interval: a `dkim generate` or
// `dkim retire` (another process, same key_dir) shows within that interval,
// and between changes no key file is read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DkimKeyStore, SIGNING_KEYS_RECHECK_MS } from '../../../src/dkim/keys.ts';
import { tempDir } from '../../support/tmp.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const selectors = (keys: ReadonlyArray<{ selector: string }>) => keys.map((k) => k.selector).sort();

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const tmp = await tempDir('dkim-cache');
  t.after(() => tmp.remove());
  const keyDir = join(tmp.path, 'dkim');
  // The CLI is another process with its own store: only the files connect the two.
  const cli = new DkimKeyStore(keyDir);
  return { keyDir, cli };
}

test('between changes the key files are not read again (a file broken in place goes unnoticed until a directory changes)', async (t) => {
  const { keyDir, cli } = await setup(t);
  const rsa = await cli.generate('example.org', { algorithm: 'rsa', selector: 's1', bits: 1024 });
  const milter = new DkimKeyStore(keyDir, { recheckMs: 0 });
  const first = milter.signingKeys('example.org');
  assert.deepEqual(selectors(first), ['s1']);
  // Rewriting the file in place changes no directory mtime: the cached, parsed key is still served.
  writeFileSync(rsa.file, 'not a key any more\n');
  const second = milter.signingKeys('Example.ORG');
  assert.equal(second, first, 'the same cached array');
  // The negative control: a store without the cache reads the broken file and says so.
  assert.throws(() => new DkimKeyStore(keyDir).signingKeys('example.org'), /no PEM private key/);
});

test('generate and retire by another store are picked up at the next directory check', async (t) => {
  const { keyDir, cli } = await setup(t);
  const milter = new DkimKeyStore(keyDir, { recheckMs: 0 });
  assert.deepEqual(milter.signingKeys('example.org'), [], 'no key_dir yet');
  await cli.generate('example.org', { algorithm: 'rsa', selector: 's1', bits: 1024 });
  assert.deepEqual(selectors(milter.signingKeys('example.org')), ['s1'], 'key_dir and domain directory created');
  await cli.generate('example.org', { algorithm: 'ed25519', selector: 'e1' });
  assert.deepEqual(selectors(milter.signingKeys('example.org')), ['e1', 's1'], 'a second key in an existing directory');
  cli.retire('example.org', 'e1');
  assert.deepEqual(selectors(milter.signingKeys('example.org')), ['s1'], 'retired (rename) stops signing');
  // Rotation: the standby key takes over once the old one is retired.
  await cli.generate('example.org', { algorithm: 'rsa', selector: 's2', bits: 1024 });
  assert.deepEqual(selectors(milter.signingKeys('example.org')), ['s1'], 'the new key waits on standby');
  cli.retire('example.org', 's1');
  assert.deepEqual(selectors(milter.signingKeys('example.org')), ['s2']);
  // Another domain has its own entry.
  assert.deepEqual(milter.signingKeys('other.example'), []);
});

test(`with the default interval a change shows within ${SIGNING_KEYS_RECHECK_MS} ms, not before the interval ends`, async (t) => {
  const { keyDir, cli } = await setup(t);
  await cli.generate('example.org', { algorithm: 'rsa', selector: 's1', bits: 1024 });
  const milter = new DkimKeyStore(keyDir);
  assert.deepEqual(selectors(milter.signingKeys('example.org')), ['s1']);
  const changed = performance.now();
  await cli.generate('example.org', { algorithm: 'ed25519', selector: 'e1' });
  // Within the interval the cached answer stands (at most one stat per second).
  if (performance.now() - changed < SIGNING_KEYS_RECHECK_MS / 2) assert.deepEqual(selectors(milter.signingKeys('example.org')), ['s1']);
  let seen: string[] = [];
  while (performance.now() - changed < SIGNING_KEYS_RECHECK_MS + 500) {
    seen = selectors(milter.signingKeys('example.org'));
    if (seen.length === 2) break;
    await sleep(50);
  }
  assert.deepEqual(seen, ['e1', 's1']);
  assert.ok(performance.now() - changed <= SIGNING_KEYS_RECHECK_MS + 100, `picked up after ${Math.round(performance.now() - changed)} ms`);
});

test('a cached lookup costs microseconds, not a file read and parse', async (t) => {
  const { keyDir, cli } = await setup(t);
  await cli.generate('example.org', { algorithm: 'rsa', selector: 's1', bits: 2048 });
  await cli.generate('example.org', { algorithm: 'ed25519', selector: 'e1' });
  const time = (fn: () => unknown, n: number) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    return (performance.now() - t0) / n;
  };
  const store = new DkimKeyStore(keyDir);
  // What signingKeys() did before the cache: read and parse every file.
  const uncached = time(() => store.list('example.org').filter((k) => k.signing), 50);
  const perCall = time(() => store.signingKeys('example.org'), 5000);
  // Re-checking the directories (two stat calls) when the interval is over.
  const rechecked = new DkimKeyStore(keyDir, { recheckMs: 0 });
  const perRecheck = time(() => rechecked.signingKeys('example.org'), 500);
  t.diagnostic(`signingKeys: ${(uncached * 1000).toFixed(0)} µs reading the files, ${(perRecheck * 1000).toFixed(1)} µs with a directory check, ${(perCall * 1000).toFixed(2)} µs cached`);
  assert.ok(perCall * 20 < uncached, `cached ${perCall} ms vs uncached ${uncached} ms`);
  assert.ok(perRecheck * 3 < uncached, `rechecked ${perRecheck} ms vs uncached ${uncached} ms`);
});
