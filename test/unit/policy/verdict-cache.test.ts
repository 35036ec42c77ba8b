// VerdictCache: the per-client/per-sender memory behind the policy engine's
// synchronous fast path (and, as SpfMemory, the milter's SPF reuse).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VerdictCache } from '../../../src/policy/verdict-cache.ts';

describe('VerdictCache', () => {
  it('answers until the TTL is over, not at or after it', () => {
    const c = new VerdictCache<string>(1_000, 10);
    c.set('k', 'v', 5_000);
    assert.equal(c.get('k', 5_000), 'v');
    assert.equal(c.get('k', 5_999), 'v');
    assert.equal(c.get('k', 6_000), undefined);
    assert.equal(c.size, 0, 'an expired entry is dropped when met');
  });

  it('drops the oldest entry when full, and stores nothing with a TTL or size of 0', () => {
    const c = new VerdictCache<number>(60_000, 3);
    for (let i = 0; i < 4; i++) c.set(`k${i}`, i, 0);
    assert.equal(c.size, 3);
    assert.equal(c.get('k0', 1), undefined);
    assert.deepEqual([1, 2, 3].map((i) => c.get(`k${i}`, 1)), [1, 2, 3]);
    for (const off of [new VerdictCache<number>(0, 10), new VerdictCache<number>(1_000, 0)]) {
      off.set('k', 1, 0);
      assert.equal(off.get('k', 0), undefined);
      assert.equal(off.size, 0);
    }
  });

  it('clear() forgets everything', () => {
    const c = new VerdictCache<number>(60_000, 10);
    c.set('a', 1, 0);
    c.clear();
    assert.equal(c.get('a', 1), undefined);
    assert.equal(c.size, 0);
  });

  it('through() computes once, and does not store what `keep` refuses (temporary failures)', async () => {
    const c = new VerdictCache<string>(60_000, 10);
    let computed = 0;
    const compute = async (v: string) => {
      computed++;
      return v;
    };
    assert.equal(await c.through('ok', 0, () => compute('pass'), (v) => v !== 'temperror'), 'pass');
    assert.equal(await c.through('ok', 1, () => compute('other'), (v) => v !== 'temperror'), 'pass');
    assert.equal(computed, 1);
    assert.equal(await c.through('bad', 0, () => compute('temperror'), (v) => v !== 'temperror'), 'temperror');
    assert.equal(await c.through('bad', 1, () => compute('temperror'), (v) => v !== 'temperror'), 'temperror');
    assert.equal(computed, 3, 'a refused value is computed again');
    await assert.rejects(c.through('err', 0, () => Promise.reject(new Error('boom')), () => true), /boom/);
    assert.equal(c.get('err', 1), undefined, 'a failure is never stored');
  });
});
