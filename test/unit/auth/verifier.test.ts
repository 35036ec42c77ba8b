// PasswordVerifier: the concurrency limit, the cache of successful checks, upgrade on
// login, and the unknown-user dummy check. Real argon2 throughout; argon2.verify is
// only wrapped to count how many run at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import argon2 from 'argon2';
import { PasswordVerifier, Semaphore, type PasswordVerifierOptions } from '../../../src/auth/verifier.ts';
import { needsRehash, PasswordHashError, verifyPassword } from '../../../src/auth/password-verify.ts';
import { hashPassword } from '../../../src/directory/passwords.ts';
import { DEFAULT_ARGON2, type Argon2Params } from '../../../src/config/load.ts';

const CHEAP: Argon2Params = { memoryCost: 8192, timeCost: 1, parallelism: 1 };
// `doveadm pw -s SHA512-CRYPT -p 'pässwörd ✓'`
const LEGACY = '{SHA512-CRYPT}$6$w3Q2C/9FXW9uuT2r$ZQjyyTTt79Te6LzDBpWR/mXouMEc7JvBU12VXyoeKQsbg0nrsAHAedu6Xv4diu.FzH2pQ4eCEMYKX.8KcfCYL/';
const LEGACY_PASSWORD = 'pässwörd ✓';

/** Wraps argon2.verify to count calls and the most that ran at once. */
function countArgon2(): { calls: number; peak: number; restore: () => void } {
  const target = argon2 as { verify: typeof argon2.verify };
  const real = target.verify;
  let running = 0;
  const counter = {
    calls: 0,
    peak: 0,
    restore: () => { target.verify = real; },
  };
  target.verify = async (...args) => {
    counter.calls++;
    counter.peak = Math.max(counter.peak, ++running);
    try {
      return await real(...args);
    } finally {
      running--;
    }
  };
  return counter;
}

function verifier(over: Partial<PasswordVerifierOptions> = {}): PasswordVerifier {
  return new PasswordVerifier({ concurrency: 2, cacheTtlMs: 60_000, cacheMaxEntries: 1000, argon2: CHEAP, ...over });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

test('Semaphore: never more than the limit at once, waiters served in FIFO order, slots freed on errors', async () => {
  const sem = new Semaphore(3);
  let running = 0;
  let peak = 0;
  const started: number[] = [];
  const gates: (() => void)[] = [];
  const tasks = Array.from({ length: 10 }, (_, i) => sem.run(async () => {
    started.push(i);
    peak = Math.max(peak, ++running);
    await new Promise<void>((resolve) => gates.push(resolve));
    running--;
    if (i === 4) throw new Error('task 4 fails');
    return i;
  }));
  const settled = Promise.allSettled(tasks); // handled from the start: task 4 rejects
  while (started.length < 10) {
    await new Promise((r) => setImmediate(r));
    assert.ok(sem.active <= 3);
    gates.splice(0).forEach((open, k) => setTimeout(open, k)); // finish in arrival order
  }
  const results = await settled;
  assert.equal(peak, 3);
  assert.deepEqual(started, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(results[4]!.status, 'rejected');
  assert.equal(sem.active, 0);
  assert.equal(sem.queued, 0);
  assert.throws(() => new Semaphore(0), RangeError);
});

test('20 parallel verifies never run more than `concurrency` argon2 checks at once', async () => {
  const hash = await hashPassword('pw', CHEAP);
  for (const concurrency of [1, 2, 3]) {
    const counter = countArgon2();
    try {
      const v = verifier({ concurrency });
      const all = Array.from({ length: 20 }, (_, i) => v.verify(`user${i}`, hash, i % 2 ? 'pw' : 'wrong'));
      assert.equal(v.stats.active, concurrency);
      assert.equal(v.stats.queued, 20 - concurrency);
      const results = await Promise.all(all);
      assert.deepEqual(results.map((r) => r.ok), Array.from({ length: 20 }, (_, i) => i % 2 === 1));
      assert.equal(counter.calls, 20);
      assert.equal(counter.peak, concurrency, `concurrency ${concurrency}`);
      assert.deepEqual(v.stats, { active: 0, queued: 0, cached: 10 });
    } finally {
      counter.restore();
    }
  }
});

test('a login storm leaves libuv threads for fs work: stat() answers while 16 default-cost verifies queue', async () => {
  const hash = await hashPassword('pw', DEFAULT_ARGON2);
  const v = verifier({ argon2: DEFAULT_ARGON2 });
  const t0 = performance.now();
  const storm = Promise.all(Array.from({ length: 16 }, (_, i) => v.verify(`u${i}`, hash, 'wrong')));
  const lat: number[] = [];
  for (let i = 0; i < 5; i++) {
    const s = performance.now();
    await stat('/');
    lat.push(performance.now() - s);
  }
  const fsDone = performance.now() - t0;
  await storm;
  const stormMs = performance.now() - t0;
  console.log(`storm of 16 verifies: ${stormMs.toFixed(0)} ms; 5 fs.stat during it: max ${Math.max(...lat).toFixed(2)} ms`);
  assert.ok(fsDone < stormMs / 2, `fs work finished after ${fsDone.toFixed(0)} ms of a ${stormMs.toFixed(0)} ms storm`);
});

test('cache: a second correct login is a hit; wrong passwords never hit and are never cached', async () => {
  const hash = await hashPassword('right', CHEAP);
  const counter = countArgon2();
  try {
    const v = verifier();
    assert.deepEqual(await v.verify('alice', hash, 'right'), { ok: true, cached: false });
    assert.deepEqual(await v.verify('alice', hash, 'right'), { ok: true, cached: true });
    assert.equal(counter.calls, 1);
    for (let i = 0; i < 3; i++) assert.deepEqual(await v.verify('alice', hash, 'wrong'), { ok: false, cached: false });
    assert.equal(counter.calls, 4, 'every wrong password costs a real check');
    assert.deepEqual(await v.verify('bob', hash, 'right'), { ok: true, cached: false }, 'the user is part of the key');
    assert.equal(v.stats.cached, 2);
  } finally {
    counter.restore();
  }
});

test('cache: a password change (new stored hash) misses; forget(user) and clear() flush', async () => {
  const old = await hashPassword('old', CHEAP);
  const v = verifier();
  await v.verify('alice', old, 'old');
  await v.verify('bob', old, 'old');
  const changed = await hashPassword('new', CHEAP);
  assert.deepEqual(await v.verify('alice', changed, 'old'), { ok: false, cached: false }, 'old password, new hash');
  assert.deepEqual(await v.verify('alice', changed, 'new'), { ok: true, cached: false });
  assert.equal((await v.verify('alice', changed, 'new')).cached, true);
  v.forget('alice');
  assert.equal((await v.verify('alice', changed, 'new')).cached, false);
  assert.equal((await v.verify('bob', old, 'old')).cached, true, 'forget() keeps other users');
  v.clear();
  assert.equal(v.stats.cached, 0);
  assert.equal((await v.verify('bob', old, 'old')).cached, false);
});

test('cache: a check still running when forget() is called is not remembered', async () => {
  const hash = await hashPassword('pw', CHEAP);
  const v = verifier();
  const pending = v.verify('alice', hash, 'pw');
  v.forget('alice'); // e.g. the account was disabled meanwhile
  assert.equal((await pending).ok, true);
  assert.equal((await v.verify('alice', hash, 'pw')).cached, false);
});

test('cache: TTL with an injected clock, LRU bound on entries, disabled by 0', async () => {
  let now = 1_000;
  const hash = await hashPassword('pw', CHEAP);
  const v = verifier({ cacheTtlMs: 5_000, cacheMaxEntries: 2, now: () => now });
  await v.verify('a', hash, 'pw');
  now += 4_999;
  assert.equal((await v.verify('a', hash, 'pw')).cached, true, 'just before expiry');
  now += 1;
  assert.equal((await v.verify('a', hash, 'pw')).cached, false, 'expired at exactly the TTL; a hit does not extend it');
  assert.equal((await v.verify('a', hash, 'pw')).cached, true, 'remembered again');

  await v.verify('b', hash, 'pw'); // cache: a, b
  assert.equal((await v.verify('a', hash, 'pw')).cached, true); // a is now the most recent
  await v.verify('c', hash, 'pw'); // evicts b, the least recently used
  assert.equal(v.stats.cached, 2);
  assert.equal((await v.verify('a', hash, 'pw')).cached, true);
  assert.equal((await v.verify('b', hash, 'pw')).cached, false);

  for (const off of [{ cacheTtlMs: 0 }, { cacheMaxEntries: 0 }]) {
    const none = verifier(off);
    await none.verify('a', hash, 'pw');
    assert.equal((await none.verify('a', hash, 'pw')).cached, false);
  }
});

test('a hash that cannot be checked rejects with PasswordHashError and frees its slot', async () => {
  const v = verifier({ concurrency: 1 });
  await assert.rejects(v.verify('alice', '{PLAIN}secret', 'secret'), PasswordHashError);
  await assert.rejects(v.verify('alice', '{PLAIN}secret', 'secret'), PasswordHashError, 'never cached');
  assert.deepEqual(v.stats, { active: 0, queued: 0, cached: 0 });
  assert.equal((await v.verify('alice', await hashPassword('pw', CHEAP), 'pw')).ok, true);
});

test('legacy and outdated hashes come back with an {ARGON2ID} rehash at the configured cost', async () => {
  const v = verifier();
  const r = await v.verify('carol', LEGACY, LEGACY_PASSWORD);
  assert.equal(r.ok, true);
  assert.equal(r.cached, false);
  assert.match(r.rehash ?? '', /^\{ARGON2ID\}\$argon2id\$v=19\$m=8192,t=1,p=1\$/);
  assert.equal(needsRehash(r.rehash!, CHEAP), false);
  assert.equal(await verifyPassword(r.rehash!, LEGACY_PASSWORD), true);
  // Not cached: until the caller stores the upgrade, every login offers it again.
  const again = await v.verify('carol', LEGACY, LEGACY_PASSWORD);
  assert.equal(again.cached, false);
  assert.ok(again.rehash && again.rehash !== r.rehash, 'a fresh salt each time');
  assert.deepEqual(await v.verify('carol', LEGACY, 'wrong'), { ok: false, cached: false }, 'no rehash without the right password');

  const outdated = await hashPassword('pw', { ...CHEAP, timeCost: 2 });
  assert.ok((await v.verify('dave', outdated, 'pw')).rehash);
  const current = await hashPassword('pw', CHEAP);
  assert.deepEqual(await v.verify('dave', current, 'pw'), { ok: true, cached: false });
});

test('speed: a cache hit is at least 50x faster than a fresh argon2id check (m=19456,t=2,p=1)', async () => {
  const hash = await hashPassword('correct horse', DEFAULT_ARGON2);
  const v = verifier({ argon2: DEFAULT_ARGON2 });
  const fresh: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    const r = await v.verify(`user${i}`, hash, 'correct horse'); // a new user each time: a miss
    fresh.push(performance.now() - t);
    assert.equal(r.cached, false);
  }
  const hits: number[] = [];
  for (let round = 0; round < 5; round++) {
    const n = 1000;
    const t = performance.now();
    for (let i = 0; i < n; i++) assert.equal((await v.verify('user0', hash, 'correct horse')).cached, true);
    hits.push((performance.now() - t) / n);
  }
  const f = median(fresh);
  const h = median(hits);
  console.log(`fresh argon2id verify (m=19456,t=2,p=1): median ${f.toFixed(2)} ms; cache hit: ${(h * 1000).toFixed(1)} µs; ${Math.round(f / h)}x`);
  assert.ok(f / h >= 50, `only ${(f / h).toFixed(1)}x`);
});

test('verifyDummy: costs what a wrong password costs, through the same queue, and says nothing', async () => {
  const hash = await hashPassword('pw', DEFAULT_ARGON2);
  const counter = countArgon2();
  try {
    const v = verifier({ argon2: DEFAULT_ARGON2, concurrency: 1 });
    const pending = v.verifyDummy('guess');
    assert.equal(v.stats.active, 1, 'it takes a slot like a real check');
    assert.equal(await pending, undefined);
    assert.equal(counter.calls, 1);
    // Pairs run back to back and compared as ratios, so load from other processes hits both sides.
    const wrong: number[] = [];
    const dummy: number[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < 7; i++) {
      let t = performance.now();
      await v.verify('alice', hash, `guess${i}`);
      wrong.push(performance.now() - t);
      t = performance.now();
      await v.verifyDummy(`guess${i}`);
      dummy.push(performance.now() - t);
      ratios.push(dummy[i]! / wrong[i]!);
    }
    const r = median(ratios);
    console.log(`wrong password: median ${median(wrong).toFixed(2)} ms; unknown user (verifyDummy): median ${median(dummy).toFixed(2)} ms; median ratio ${r.toFixed(2)}`);
    assert.ok(r > 0.5 && r < 2, `dummy/wrong time ratio ${r.toFixed(2)}`);
  } finally {
    counter.restore();
  }
});
