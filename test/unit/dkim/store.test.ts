// The on-disk key store: layout, modes, which key signs, retire/remove, and
// keys an operator copies in by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { chownSync, mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DkimKeyError, DkimKeyStore, publicKeyBase64 } from '../../../src/dkim/keys.ts';
import { tempDir } from '../../support/tmp.ts';

/** A store whose clock the test moves. */
async function storeWithClock(t: { after: (fn: () => Promise<void>) => void }) {
  const tmp = await tempDir('dkim-store');
  t.after(() => tmp.remove());
  let now = new Date('2026-11-05T10:00:00Z');
  const keyDir = join(tmp.path, 'dkim');
  const store = new DkimKeyStore(keyDir, { now: () => now });
  return { store, keyDir, tick: (ms = 60_000) => (now = new Date(+now + ms)) };
}

const mode = (path: string) => statSync(path).mode & 0o777;

async function rejects(p: Promise<unknown> | (() => unknown), code: string, message: RegExp): Promise<void> {
  await assert.rejects(async () => (typeof p === 'function' ? p() : p), (err: unknown) => {
    assert.ok(err instanceof DkimKeyError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

test('generate: PKCS#8 PEM with a header, 0600 in a 0700 directory, default selectors per type', async (t) => {
  const { store, keyDir } = await storeWithClock(t);
  const rsa = await store.generate('Example.ORG');
  const ed = await store.generate('example.org', { algorithm: 'ed25519' });
  assert.equal(rsa.selector, 's202611');
  assert.equal(ed.selector, 'e202611');
  assert.equal(rsa.file, join(keyDir, 'example.org', 's202611.rsa.key'));
  assert.equal(ed.file, join(keyDir, 'example.org', 'e202611.ed25519.key'));
  assert.equal(mode(keyDir), 0o700);
  assert.equal(mode(join(keyDir, 'example.org')), 0o700);
  assert.equal(mode(rsa.file), 0o600);
  assert.equal(mode(ed.file), 0o600);
  assert.deepEqual(readdirSync(join(keyDir, 'example.org')).sort(), ['e202611.ed25519.key', 's202611.rsa.key'], 'no temp files left');
  const text = readFileSync(rsa.file, 'utf8');
  assert.match(text, /^# mailwarden DKIM signing key.*\ndomain: example\.org\nselector: s202611\nalgorithm: rsa-sha256\ncreated: 2026-11-05T10:00:00\.000Z\n-----BEGIN PRIVATE KEY-----\n/);
  assert.equal(rsa.bits, 2048);
  assert.equal(ed.bits, 256);
  assert.match(rsa.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/);
  assert.equal(Buffer.from(ed.publicKeyBase64, 'base64').length, 32);
  assert.deepEqual(store.signingKeys('example.org').map((k) => k.selector).sort(), ['e202611', 's202611']);
});

test('selectors are never reused: same selector, other type, retired, or racing', async (t) => {
  const { store, keyDir } = await storeWithClock(t);
  await store.generate('example.org', { selector: 'Mail' });
  await rejects(store.generate('example.org', { selector: 'mail', algorithm: 'ed25519' }), 'exists', /^selector mail of example\.org already exists \(rsa\); choose another$/);
  await store.generate('example.org', { selector: 'old', bits: 1024 });
  store.retire('example.org', 'old');
  await rejects(store.generate('example.org', { selector: 'old' }), 'exists', /\(rsa, retired\)/);
  // Defaults step around taken selectors.
  await store.generate('example.org', { selector: 's202611', algorithm: 'ed25519' });
  assert.equal((await store.generate('example.org', { bits: 1024 })).selector, 's202611-2');
  // Two runs at once: both pass the check, link() lets exactly one key in.
  const race = await Promise.allSettled([1, 2].map(() => store.generate('example.org', { selector: 'race', algorithm: 'ed25519' })));
  assert.deepEqual(race.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  const lost = race.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.ok(lost.reason instanceof DkimKeyError && lost.reason.code === 'exists', String(lost.reason));
  assert.deepEqual(readdirSync(join(keyDir, 'example.org')).filter((n) => n.startsWith('.')), [], 'the loser left no temp file');
});

test('bad input is refused before any key is made', async (t) => {
  const { store, keyDir } = await storeWithClock(t);
  await rejects(store.generate('not a domain'), 'invalid', /^invalid domain name: "not a domain"$/);
  await rejects(store.generate('example.org', { selector: 'a_b' }), 'invalid', /invalid selector "a_b"/);
  await rejects(store.generate('example.org', { bits: 512 }), 'invalid', /at least 1024/);
  await rejects(store.generate('example.org', { bits: 2047 }), 'invalid', /got 2047/);
  await rejects(store.generate('example.org', { algorithm: 'ed25519', bits: 2048 }), 'invalid', /fixed size/);
  await rejects(store.generate('example.org', { algorithm: 'dsa' as 'rsa' }), 'invalid', /use rsa or ed25519/);
  await rejects(store.generate('example.org', { selector: `${'a.'.repeat(100)}a` }), 'invalid', /invalid selector/);
  assert.throws(() => statSync(keyDir), /ENOENT/);
});

test('the oldest active key of each type signs; a newer one waits on standby until the old one is retired', async (t) => {
  const { store, tick } = await storeWithClock(t);
  await store.generate('example.org', { selector: 'old', bits: 1024 });
  tick();
  await store.generate('example.org', { selector: 'ed1', algorithm: 'ed25519' });
  tick();
  await store.generate('example.org', { selector: 'new', bits: 1024 });
  const state = () => store.list('example.org').map((k) => `${k.selector}:${k.signing ? 'signing' : k.active ? 'standby' : 'retired'}`);
  assert.deepEqual(state(), ['new:standby', 'ed1:signing', 'old:signing'], 'newest first');
  assert.deepEqual(store.signingKeys('example.org').map((k) => k.selector), ['ed1', 'old']);

  const retired = store.retire('example.org', 'old');
  assert.equal(retired.active, false);
  assert.ok(retired.file.endsWith('/old.rsa.key.retired'));
  assert.equal(mode(retired.file), 0o600);
  assert.deepEqual(state(), ['new:signing', 'ed1:signing', 'old:retired']);
  assert.deepEqual(store.signingKeys('example.org').map((k) => k.selector), ['new', 'ed1']);
  await rejects(() => store.retire('example.org', 'old'), 'invalid', /already retired/);
  await rejects(() => store.retire('example.org', 'ghost'), 'not_found', /example\.org has no DKIM key with selector ghost/);

  await rejects(() => store.remove('example.org', 'new'), 'active', /is active: retire it first \(mailwarden dkim retire example\.org new\)/);
  store.remove('example.org', 'old');
  assert.deepEqual(state(), ['new:signing', 'ed1:signing']);
  await rejects(() => store.get('example.org', 'old'), 'not_found', /selector old/);
  assert.deepEqual(store.signingKeys('nokeys.example'), []);
});

test('list: every domain in order; missing key_dir is an empty list', async (t) => {
  const { store } = await storeWithClock(t);
  assert.deepEqual(store.list(), []);
  await store.generate('b.example', { algorithm: 'ed25519' });
  await store.generate('a.example', { algorithm: 'ed25519' });
  assert.deepEqual(store.list().map((k) => k.domain), ['a.example', 'b.example']);
  assert.deepEqual(store.list('B.Example').map((k) => k.domain), ['b.example']);
});

test('keys copied in by hand: PKCS#1 without a header is read, mtime stands in for created; junk is ignored or reported', async (t) => {
  const { store, keyDir } = await storeWithClock(t);
  const dir = join(keyDir, 'example.org');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pair = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const file = join(dir, 'legacy.rsa.key');
  writeFileSync(file, pair.privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o644 });
  utimesSync(file, new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
  writeFileSync(join(dir, '.x.rsa.key.123.tmp'), 'half a key');
  writeFileSync(join(dir, 'README'), 'notes');
  const [k] = store.list('example.org');
  assert.equal(store.list('example.org').length, 1);
  assert.equal(k!.selector, 'legacy');
  assert.equal(k!.created.toISOString(), '2020-01-01T00:00:00.000Z');
  assert.equal(k!.publicKeyBase64, publicKeyBase64(pair.publicKey));
  assert.match(k!.privateKeyPem, /^-----BEGIN PRIVATE KEY-----/, 'handed out as PKCS#8');
  assert.equal(k!.fileMode, 0o644, 'loose modes are visible to warn about');
  assert.ok(k!.signing);

  writeFileSync(join(dir, 'wrong.ed25519.key'), pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await rejects(() => store.list('example.org'), 'invalid', /wrong\.ed25519\.key: holds a rsa key, the name says ed25519/);
  writeFileSync(join(dir, 'wrong.ed25519.key'), '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n');
  await rejects(() => store.list('example.org'), 'invalid', /wrong\.ed25519\.key: not a private key/);
});

test('as root, new directories and files take the owner of key_dir', { skip: process.getuid?.() !== 0 && 'needs root' }, async (t) => {
  const { store, keyDir } = await storeWithClock(t);
  mkdirSync(keyDir, { mode: 0o700 });
  chownSync(keyDir, 65534, 65534);
  const k = await store.generate('example.org', { algorithm: 'ed25519' });
  for (const p of [join(keyDir, 'example.org'), k.file]) {
    const st = statSync(p);
    assert.deepEqual([st.uid, st.gid], [65534, 65534], p);
  }
});
