import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_KEYS_PER_STATEMENT, PointReads, padToBucket, placeholders } from '../../../src/directory/point-reads.ts';

/** A fetch that records the key lists it got and answers after a turn; `fail` keys make the whole statement fail. */
function recorder(rows: Record<string, number>, fail = new Set<string>()) {
  const calls: string[][] = [];
  const reads = new PointReads<number>(async (keys) => {
    calls.push(keys);
    await new Promise((r) => setImmediate(r));
    if (keys.some((k) => fail.has(k))) throw Object.assign(new Error('database unavailable'), { code: 'unavailable' });
    return new Map(keys.filter((k) => k in rows).map((k) => [k, rows[k]!]));
  });
  return { reads, calls };
}

test('a lone read goes out at once; reads made while one is in flight share the next statement', async () => {
  const { reads, calls } = recorder({ a: 1, b: 2, c: 3 });
  const first = reads.get('a');
  assert.deepEqual(calls, [['a']], 'sent synchronously');
  const rest = [reads.get('b'), reads.get('zz'), reads.get('c'), reads.get('b')];
  assert.equal(calls.length, 1, 'queued behind the one in flight');
  assert.deepEqual(await Promise.all([first, ...rest]), [1, 2, undefined, 3, 2]);
  assert.deepEqual(calls[1], ['b', 'zz', 'c', 'c'], 'distinct keys, padded to 4 with the last one');
  assert.deepEqual({ statements: reads.statements, keys: reads.keys }, { statements: 2, keys: 4 });
  // Idle again: the next read is not delayed.
  const again = reads.get('c');
  assert.equal(calls.length, 3);
  assert.equal(await again, 3);
});

test('a failing statement rejects every read in it, and only those', async () => {
  const { reads } = recorder({ a: 1, b: 2 }, new Set(['bad']));
  const first = reads.get('a');
  const batch = [reads.get('b'), reads.get('bad')];
  assert.equal(await first, 1);
  const settled = await Promise.allSettled(batch);
  assert.deepEqual(settled.map((s) => s.status), ['rejected', 'rejected']);
  assert.equal((settled[0] as PromiseRejectedResult).reason.code, 'unavailable');
  assert.equal(await reads.get('b'), 2, 'the next statement works again');
});

test('more keys than one statement takes are split', async () => {
  const rows = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`k${i}`, i]));
  const { reads, calls } = recorder(rows);
  const got = await Promise.all(Array.from({ length: 200 }, (_, i) => reads.get(`k${i}`)));
  assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i));
  assert.deepEqual(calls.map((c) => c.length), [1, MAX_KEYS_PER_STATEMENT, MAX_KEYS_PER_STATEMENT, MAX_KEYS_PER_STATEMENT, 8], '1 + 64 + 64 + 64 + 7 (padded to 8)');
});

test('statement sizes and placeholders', () => {
  assert.deepEqual(padToBucket(['a']), ['a']);
  assert.deepEqual(padToBucket(['a', 'b', 'c']), ['a', 'b', 'c', 'c']);
  assert.equal(padToBucket(Array.from({ length: 33 }, String)).length, 64);
  assert.equal(placeholders(1), '?');
  assert.equal(placeholders(3), '?, ?, ?');
});
