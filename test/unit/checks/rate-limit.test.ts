// Rolling-window bucket math and the send-rate check, on the in-memory policy
// state (FilePolicyState without a file) with an injected clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSendRate, rateKey, recordMessage, type SendLimits } from '../../../src/checks/rate-limit.ts';
import { FilePolicyState } from '../../../src/state/file-store.ts';
import {
  bucketExpiry, bucketStart, bucketWidth, firstCountedBucket, waitUntilBelow, windowCount,
} from '../../../src/state/window.ts';
import { prng } from '../../support/prng.ts';
import { DirectoryError } from '../../../src/directory/types.ts';

const MIN = 60_000;
const HOUR = 60 * MIN;
const T0 = Date.UTC(2025, 0, 6, 9, 0, 0); // a multiple of every bucket width used here

function memoryStore(t: { after: (fn: () => Promise<void>) => void }): FilePolicyState {
  const store = FilePolicyState.open(undefined, { sweep: false });
  t.after(() => store.close());
  return store;
}


test('bucket math: width window/12, epoch-aligned starts, expiry after window + width', () => {
  assert.equal(bucketWidth(HOUR), 5 * MIN);
  assert.equal(bucketWidth(MIN), 5000);
  assert.equal(bucketWidth(1000), 84, 'rounded up: 12 buckets never cover less than the window');
  assert.equal(bucketWidth(5), 1);
  assert.equal(bucketStart(T0 + 4999, 5000), T0);
  assert.equal(bucketStart(T0 + 5000, 5000), T0 + 5000);
  // At T0 + 2.5 s with a 60 s window, the oldest counted bucket holds T0 - 57.5 s.
  assert.equal(firstCountedBucket(T0 + 2500, MIN), T0 - MIN);
  assert.equal(bucketExpiry(T0, MIN), T0 + MIN + 5000);
});

test('window totals: never miss an event inside the window, include at most one bucket width more', () => {
  const W = HOUR;
  const w = bucketWidth(W);
  const random = prng(42);
  const events = Array.from({ length: 3000 }, () => T0 + Math.floor(random() * 6 * HOUR));
  for (let i = 0; i < 500; i++) {
    const now = T0 + HOUR + Math.floor(random() * 5 * HOUR);
    const past = events.filter((e) => e <= now);
    const buckets = new Map<number, number>();
    for (const e of past) buckets.set(bucketStart(e, w), (buckets.get(bucketStart(e, w)) ?? 0) + 1);
    const exact = past.filter((e) => e > now - W).length;
    const upper = past.filter((e) => e > now - W - w).length;
    const { total, expiring } = windowCount([...buckets].map(([start, count]) => ({ start, count })), now, W);
    assert.ok(total >= exact, `at ${now - T0}: ${total} < exact ${exact}`);
    assert.ok(total <= upper, `at ${now - T0}: ${total} > ${upper} (window + one bucket)`);
    assert.equal(expiring.reduce((s, p) => s + p.count, 0), total);
    assert.ok(expiring.every((p, j) => p.at > now && (j === 0 || p.at > expiring[j - 1]!.at)), 'ascending, all in the future');
  }
});

test('window boundaries: an event exactly one window old still counts, one bucket older does not', () => {
  const W = MIN;
  const buckets = [{ start: T0 - MIN, count: 1 }, { start: T0 - MIN - 5000, count: 10 }, { start: T0, count: 100 }];
  assert.equal(windowCount(buckets, T0, W).total, 101);
  assert.equal(windowCount(buckets, T0 + 4999, W).total, 101);
  assert.equal(windowCount(buckets, T0 + 5000, W).total, 100, 'the T0 - 60 s bucket left at T0 + 5 s');
  assert.deepEqual(windowCount(buckets, T0, W).expiring, [{ at: T0 + 5000, count: 1 }, { at: T0 + MIN + 5000, count: 100 }]);
});

test('waitUntilBelow: time until enough of the total has expired', () => {
  const count = { total: 10, expiring: [{ at: T0 + 100, count: 3 }, { at: T0 + 500, count: 7 }] };
  assert.equal(waitUntilBelow(count, 1, 20, T0), 0);
  assert.equal(waitUntilBelow(count, 1, 10, T0), 100, '10 + 1 - 10 = 1 must expire: the first part');
  assert.equal(waitUntilBelow(count, 4, 10, T0), 500, '4 must expire: both parts');
  assert.equal(waitUntilBelow(count, 11, 10, T0), undefined, 'more than the limit on its own: never');
});

test('messages: refused at RCPT once the window holds the limit; counted only at DATA', async (t) => {
  const store = memoryStore(t);
  const limits: SendLimits = { messages: { count: 3, windowMs: HOUR } };
  const login = 'alice@example.org';
  for (let i = 0; i < 3; i++) {
    const at = T0 + i * 10 * MIN;
    const ok = await checkSendRate(store, { login, now: at }, limits);
    assert.deepEqual(ok, { allowed: true, messages: i, recipients: 0 });
    // RCPT checks count nothing: asking again gives the same total.
    assert.equal((await checkSendRate(store, { login, now: at, pendingRecipients: 5 }, limits)).messages, i);
    assert.deepEqual(await recordMessage(store, { login, recipients: 2, now: at + 1000 }, limits), { messages: i + 1, recipients: 0 });
  }
  const refused = await checkSendRate(store, { login, now: T0 + 30 * MIN }, limits);
  assert.equal(refused.allowed, false);
  assert.equal(refused.limit, 'messages');
  assert.equal(refused.messages, 3);
  // The first message (bucket T0) stops counting at T0 + 1 h + 5 min.
  assert.equal(refused.retryAfterMs, HOUR + 5 * MIN - 30 * MIN);
  assert.equal((await checkSendRate(store, { login, now: T0 + HOUR + 5 * MIN - 1 }, limits)).allowed, false);
  const later = await checkSendRate(store, { login, now: T0 + HOUR + 5 * MIN }, limits);
  assert.deepEqual(later, { allowed: true, messages: 2, recipients: 0 });
  assert.equal((await checkSendRate(store, { login: 'bob@example.org', now: T0 + 30 * MIN }, limits)).allowed, true, 'per login');
});

test('recipients: the RCPT that would overflow is refused, counting the ones already accepted in this message', async (t) => {
  const store = memoryStore(t);
  const limits: SendLimits = { messages: { count: 100, windowMs: HOUR }, recipients: { count: 10, windowMs: HOUR } };
  const login = 'alice@example.org';
  await recordMessage(store, { login, recipients: 7, now: T0 }, limits);
  assert.deepEqual(await store.readCounters([{ key: rateKey(login, 'recipients'), windowMs: HOUR }], T0), [
    { total: 7, expiring: [{ at: T0 + HOUR + 5 * MIN, count: 7 }] },
  ]);
  const now = T0 + 20 * MIN;
  // A new message: recipients 1..3 fit (7 + 3 = 10), the 4th does not.
  assert.equal((await checkSendRate(store, { login, now, pendingRecipients: 0 }, limits)).allowed, true);
  assert.equal((await checkSendRate(store, { login, now, pendingRecipients: 2 }, limits)).allowed, true);
  const fourth = await checkSendRate(store, { login, now, pendingRecipients: 3 }, limits);
  assert.deepEqual(fourth, { allowed: false, messages: 1, recipients: 7, limit: 'recipients', retryAfterMs: HOUR + 5 * MIN - 20 * MIN });
  // One message with more recipients than the limit can never pass: no retry time.
  const huge = await checkSendRate(store, { login, now, pendingRecipients: 10 }, limits);
  assert.equal(huge.allowed, false);
  assert.equal(huge.retryAfterMs, undefined);
  await recordMessage(store, { login, recipients: 3, now }, limits);
  assert.equal((await checkSendRate(store, { login, now: now + 1 }, limits)).allowed, false, '10 recipients counted');
});

test('no limits configured: allowed, nothing read or counted', async (t) => {
  const store = memoryStore(t);
  await store.close(); // a closed store throws on any use
  assert.deepEqual(await checkSendRate(store, { login: 'a@example.org', now: T0 }, {}), { allowed: true, messages: 0, recipients: 0 });
  assert.deepEqual(await recordMessage(store, { login: 'a@example.org', recipients: 3, now: T0 }, {}), { messages: 0, recipients: 0 });
  await assert.rejects(checkSendRate(store, { login: 'a@example.org', now: T0 }, { messages: { count: 1, windowMs: HOUR } }),
    (err: unknown) => err instanceof DirectoryError && err.code === 'unavailable');
});

test('counters reject windows and amounts the stores cannot represent', async (t) => {
  const store = memoryStore(t);
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    await assert.rejects(store.readCounters([{ key: 'k', windowMs: bad }], T0), (err: unknown) => err instanceof DirectoryError && err.code === 'invalid');
  }
  await assert.rejects(store.addToCounters([{ key: 'k', windowMs: MIN, amount: -1 }], T0), /amount/);
  await assert.rejects(store.addToCounters([{ key: 'k', windowMs: MIN, amount: 1 }], 1.5), /time/);
});

test('several counters in one call; the same bucket twice adds up', async (t) => {
  const store = memoryStore(t);
  const totals = await store.addToCounters([
    { key: 'a', windowMs: MIN, amount: 2 }, { key: 'a', windowMs: MIN, amount: 3 }, { key: 'b', windowMs: HOUR, amount: 1 },
  ], T0);
  assert.deepEqual(totals.map((x) => x.total), [5, 5, 1]);
  // Same key, other window: its own buckets.
  assert.deepEqual((await store.readCounters([{ key: 'a', windowMs: HOUR }, { key: 'a', windowMs: MIN }], T0)).map((x) => x.total), [0, 5]);
});
