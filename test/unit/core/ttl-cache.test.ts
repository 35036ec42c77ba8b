import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TtlCache } from '../../../src/core/ttl-cache.ts';

test('entries expire after the TTL, the oldest go first at the size bound', () => {
  const c = new TtlCache<string>(100, 2);
  c.set('a', 'A', 0);
  c.set('b', 'B', 10);
  assert.deepEqual(c.entry('a', 99), { value: 'A', expires: 100 });
  assert.equal(c.get('a', 100), undefined, 'expired at exactly ttl');
  assert.equal(c.size, 1, 'an expired entry is dropped when seen');
  c.set('c', 'C', 20);
  c.set('d', 'D', 20);
  assert.equal(c.get('b', 20), undefined, 'the oldest went first');
  assert.deepEqual([c.get('c', 20), c.get('d', 20), c.size], ['C', 'D', 2]);
  assert.deepEqual({ hits: c.hits, misses: c.misses }, { hits: 3, misses: 2 });
});

test('a value fetched before a flush is not stored after it; delete only removes the given value', () => {
  const c = new TtlCache<object>(1000, 10);
  const before = c.generation;
  c.flush();
  const stale = {};
  assert.equal(c.setIfCurrent('k', stale, 0, before).value, stale, 'handed back');
  assert.equal(c.get('k', 1), undefined, 'but not kept');
  const fresh = {};
  c.setIfCurrent('k', fresh, 0, c.generation);
  c.delete('k', {});
  assert.equal(c.get('k', 1), fresh, 'another value: kept');
  c.delete('k', fresh);
  assert.equal(c.get('k', 1), undefined);
});

test('a TTL or size of 0 keeps nothing', () => {
  for (const [ttl, max] of [[0, 10], [1000, 0]] as const) {
    const c = new TtlCache<string>(ttl, max);
    assert.equal(c.enabled, false);
    c.set('k', 'v', 0);
    assert.equal(c.get('k', 0), undefined);
  }
});

test('maxLifeMs shortens an entry below the TTL, never lengthens it; 0 or less keeps nothing', () => {
  const c = new TtlCache<string>(60_000, 10);
  c.set('short', 'S', 1000, 10_000);
  c.set('long', 'L', 1000, 120_000);
  assert.deepEqual(c.entry('short', 1000), { value: 'S', expires: 11_000 });
  assert.equal(c.get('short', 11_000), undefined, 'gone after its 10 s');
  assert.deepEqual(c.entry('long', 1000), { value: 'L', expires: 61_000 }, 'the TTL still bounds it');
  c.set('none', 'N', 1000, 0);
  c.set('nan', 'N', 1000, Number.NaN);
  assert.deepEqual([c.get('none', 1000), c.get('nan', 1000)], [undefined, undefined]);
});
