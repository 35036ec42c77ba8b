// Triplet normalisation and the greylisting sequence, on the in-memory policy
// state (FilePolicyState without a file) with an injected clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AUTO_ALLOW_COUNT_EVERY_MS, GREYLIST_DEFAULTS, checkGreylist, clientNetwork, greylistTriplet, normalizeSender,
  type GreylistSettings,
} from '../../../src/checks/greylist.ts';
import { nextClient, nextTriplet, refreshEvery } from '../../../src/state/greylist-state.ts';
import { FilePolicyState } from '../../../src/state/file-store.ts';

const S = 1000;
const MIN = 60 * S;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2025, 2, 3, 10, 0, 0);

function memoryStore(t: { after: (fn: () => Promise<void>) => void }): FilePolicyState {
  const store = FilePolicyState.open(undefined, { sweep: false });
  t.after(() => store.close());
  return store;
}

test('defaults are postgrey\'s', () => {
  assert.deepEqual({ ...GREYLIST_DEFAULTS }, {
    delayMs: 300 * S, maxAgeMs: 35 * DAY, retryWindowMs: 2 * DAY, autoAllowAfter: 5, ipv4Prefix: 24, ipv6Prefix: 64,
  });
});

test('client network: prefix masks, IPv4-mapped IPv6, RFC 5952 text', () => {
  const d = GREYLIST_DEFAULTS;
  assert.equal(clientNetwork('192.0.2.201', d), '192.0.2.0/24');
  assert.equal(clientNetwork('192.0.2.201', { ipv4Prefix: 32, ipv6Prefix: 128 }), '192.0.2.201/32');
  assert.equal(clientNetwork('198.51.100.77', { ipv4Prefix: 20, ipv6Prefix: 64 }), '198.51.96.0/20');
  assert.equal(clientNetwork('::ffff:192.0.2.9', d), '192.0.2.0/24', 'IPv4-mapped counts as IPv4');
  assert.equal(clientNetwork('::FFFF:C000:0209', d), '192.0.2.0/24', 'mapped, hex form');
  assert.equal(clientNetwork('2001:DB8:0:0:1:2:3:4', d), '2001:db8::/64');
  assert.equal(clientNetwork('2001:db8:aa:bb:1:2:3:4', d), '2001:db8:aa:bb::/64');
  assert.equal(clientNetwork('2001:db8:aa:bb:1:2:3:4', { ipv4Prefix: 24, ipv6Prefix: 48 }), '2001:db8:aa::/48');
  assert.equal(clientNetwork('2001:db8:aa:bb:1:2:3:4', { ipv4Prefix: 24, ipv6Prefix: 56 }), '2001:db8:aa::/56', 'bb masked away');
  assert.equal(clientNetwork('2001:db8:aa:1bb:1:2:3:4', { ipv4Prefix: 24, ipv6Prefix: 56 }), '2001:db8:aa:100::/56');
  assert.equal(clientNetwork('2001:db8:0:1:0:0:0:1', { ipv4Prefix: 24, ipv6Prefix: 128 }), '2001:db8:0:1::1/128', 'longest zero run');
  assert.equal(clientNetwork('2001:0:0:1:0:0:1:1', { ipv4Prefix: 24, ipv6Prefix: 128 }), '2001::1:0:0:1:1/128', 'first of equal runs');
  assert.equal(clientNetwork('fe80::1%eth0', d), 'fe80::/64', 'zone id dropped');
  assert.equal(clientNetwork('::1', d), '::/64');
  assert.equal(clientNetwork('[2001:db8::1]', d), '2001:db8::/64');
  assert.equal(clientNetwork('unknown', d), 'unknown', 'not an address: as is');
});

test('sender normalisation: postgrey substitutions plus SRS', () => {
  const cases: Array<[string, string]> = [
    ['Alice@Example.ORG', 'alice@example.org'],
    ['', '<>'],
    ['news+bob=example.org@lists.example', 'news@lists.example'],
    ['bounce-12345-678@mailer.example', 'bounce-#-#@mailer.example'],
    ['user2024@example.com', 'user2024@example.com'], // digits inside a word are kept
    ['prvs=1234abcdef=alice@example.org', 'alice@example.org'],
    ['prvs=alice=1234abcdef@example.org', 'alice@example.org'],
    ['SRS0=HhJk=2T=example.org=alice@forwarder.example', 'srs0=#=#=example.org=alice@forwarder.example'],
    ['SRS0+x/9A=ZZ=example.org=alice@forwarder.example', 'srs0=#=#=example.org=alice@forwarder.example'],
    ['SRS1=AbCd=first.example==EfGh=3Q=example.org=alice@second.example', 'srs1=#=first.example==#=#=example.org=alice@second.example'],
    ['srs0=HhJk=2T=example.org=list+42@fwd.example', 'srs0=#=#=example.org=list+#@fwd.example'],
    ['no-at-sign', 'no-at-sign'],
  ];
  for (const [input, want] of cases) assert.equal(normalizeSender(input), want, input);
  // Same sender on another day through SRS: one triplet.
  const a = greylistTriplet('192.0.2.1', 'SRS0=HhJk=2T=example.org=alice@fwd.example', 'bob@example.net', GREYLIST_DEFAULTS);
  const b = greylistTriplet('192.0.2.77', 'SRS0=q9Zz=2U=example.org=alice@fwd.example', 'Bob@Example.NET', GREYLIST_DEFAULTS);
  assert.equal(a, b);
  assert.equal(a, '192.0.2.0/24/srs0=#=#=example.org=alice@fwd.example/bob@example.net');
});

test('state machine: expiry, refresh and the pass', () => {
  const rules = { delayMs: 5 * MIN, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY };
  const first = nextTriplet(undefined, T0, rules);
  assert.deepEqual(first, { record: { firstSeen: T0, lastSeen: T0, expiresAt: T0 + 2 * DAY }, passedNow: false, write: true });
  const passed = nextTriplet(first.record, T0 + 6 * MIN, rules);
  assert.deepEqual(passed.record, { firstSeen: T0, lastSeen: T0 + 6 * MIN, passedAt: T0 + 6 * MIN, expiresAt: T0 + 6 * MIN + 35 * DAY });
  assert.equal(passed.passedNow, true);
  // Seen again soon after: nothing to write.
  assert.deepEqual(nextTriplet(passed.record, T0 + 30 * MIN, rules), { record: passed.record, passedNow: false, write: false });
  assert.equal(refreshEvery(rules.maxAgeMs), HOUR);
  const refreshed = nextTriplet(passed.record, T0 + 6 * MIN + HOUR, rules);
  assert.equal(refreshed.write, true);
  assert.equal(refreshed.record.expiresAt, T0 + 6 * MIN + HOUR + 35 * DAY);
  // A clock behind the stored last seen never moves it backwards.
  assert.equal(nextTriplet(first.record, T0 - S, rules).record.lastSeen, T0);
  // delay 0: passes on first sight.
  assert.equal(nextTriplet(undefined, T0, { ...rules, delayMs: 0 }).passedNow, true);

  const c1 = nextClient(undefined, T0, { pass: true, minPassIntervalMs: HOUR, maxAgeMs: 35 * DAY });
  assert.deepEqual(c1, { passes: 1, firstSeen: T0, lastSeen: T0, lastPass: T0, expiresAt: T0 + 35 * DAY });
  assert.equal(nextClient(c1, T0 + MIN, { pass: true, minPassIntervalMs: HOUR, maxAgeMs: 35 * DAY }).passes, 1, 'once an hour');
  assert.equal(nextClient(c1, T0 + HOUR, { pass: true, minPassIntervalMs: HOUR, maxAgeMs: 35 * DAY }).passes, 2);
  assert.equal(nextClient(c1, T0 + 36 * DAY, { pass: false, minPassIntervalMs: HOUR, maxAgeMs: 35 * DAY }).passes, 0, 'expired: afresh');
});

test('greylisting sequence: first, early retry, retry after the delay, passed, expired', async (t) => {
  const store = memoryStore(t);
  const s: GreylistSettings = { ...GREYLIST_DEFAULTS, autoAllowAfter: 0 };
  const msg = { clientIp: '203.0.113.9', sender: 'alice@example.org', recipient: 'bob@example.net' };

  const first = await checkGreylist(store, { ...msg, now: T0 }, s);
  assert.deepEqual(first, { result: 'greylisted', triplet: '203.0.113.0/24/alice@example.org/bob@example.net', firstSeen: T0, retryAfterMs: 5 * MIN });
  const early = await checkGreylist(store, { ...msg, clientIp: '203.0.113.10', now: T0 + MIN }, s);
  assert.deepEqual(early, { ...first, retryAfterMs: 4 * MIN }, 'same /24: same triplet, first seen kept');
  assert.equal((await checkGreylist(store, { ...msg, now: T0 + 5 * MIN - 1 }, s)).result, 'greylisted');
  const retry = await checkGreylist(store, { ...msg, now: T0 + 5 * MIN }, s);
  assert.deepEqual(retry, { result: 'pass', triplet: first.triplet, firstSeen: T0 });
  assert.equal((await checkGreylist(store, { ...msg, now: T0 + 20 * DAY }, s)).result, 'pass', 'passed: passes while seen within max age');
  assert.equal((await checkGreylist(store, { ...msg, recipient: 'carol@example.net', now: T0 + 20 * DAY }, s)).result, 'greylisted', 'another recipient');
  assert.equal((await checkGreylist(store, { ...msg, clientIp: '203.0.114.9', now: T0 + 20 * DAY }, s)).result, 'greylisted', 'another /24');

  // Not seen for longer than max age: starts over.
  const stale = await checkGreylist(store, { ...msg, now: T0 + 55 * DAY + 1 }, s);
  assert.deepEqual(stale, { result: 'greylisted', triplet: first.triplet, firstSeen: T0 + 55 * DAY + 1, retryAfterMs: 5 * MIN });
});

test('greylisting: a first retry after the retry window starts over', async (t) => {
  const store = memoryStore(t);
  const s: GreylistSettings = { ...GREYLIST_DEFAULTS, autoAllowAfter: 0 };
  const msg = { clientIp: '2001:db8:1:2::25', sender: 'alice@example.org', recipient: 'bob@example.net' };
  assert.equal((await checkGreylist(store, { ...msg, now: T0 }, s)).result, 'greylisted');
  assert.equal((await checkGreylist(store, { ...msg, now: T0 + MIN }, s)).result, 'greylisted');
  const late = await checkGreylist(store, { ...msg, now: T0 + 2 * DAY + 1 }, s);
  assert.deepEqual(late, { result: 'greylisted', triplet: '2001:db8:1:2::/64/alice@example.org/bob@example.net', firstSeen: T0 + 2 * DAY + 1, retryAfterMs: 5 * MIN });
  assert.equal((await checkGreylist(store, { ...msg, now: T0 + 2 * DAY + 1 + 5 * MIN }, s)).result, 'pass');
  // Within the window exactly: passes.
  const edge = { ...msg, recipient: 'dave@example.net' };
  await checkGreylist(store, { ...edge, now: T0 }, s);
  assert.equal((await checkGreylist(store, { ...edge, now: T0 + 2 * DAY }, s)).result, 'pass');
});

test('auto-allow: a client network that passed often enough skips greylisting; passes count once an hour', async (t) => {
  const store = memoryStore(t);
  const s: GreylistSettings = { ...GREYLIST_DEFAULTS, autoAllowAfter: 2 };
  const send = (recipient: string, now: number, clientIp = '198.51.100.20') =>
    checkGreylist(store, { clientIp, sender: 'news@lists.example', recipient, now }, s);

  // One message to two recipients: both pass at the same retry, one pass counted.
  await send('a@example.net', T0);
  await send('b@example.net', T0);
  assert.equal((await send('a@example.net', T0 + 6 * MIN)).result, 'pass');
  assert.equal((await send('b@example.net', T0 + 6 * MIN)).result, 'pass');
  assert.equal((await store.readClient('198.51.100.0/24', T0 + 6 * MIN))?.passes, 1);
  assert.equal((await send('c@example.net', T0 + 7 * MIN)).result, 'greylisted');

  // A pass an hour later makes two.
  const later = T0 + 6 * MIN + AUTO_ALLOW_COUNT_EVERY_MS;
  assert.equal((await send('c@example.net', later)).result, 'pass');
  const allowed = await send('d@example.net', later + S, '198.51.100.99');
  assert.deepEqual(allowed, { result: 'auto_allowed', triplet: '198.51.100.0/24/news@lists.example/d@example.net', firstSeen: T0 + 6 * MIN });
  assert.equal(await store.readTriplet(allowed.triplet, later + S), undefined, 'auto-allowed: no triplet written');
  assert.equal((await send('d@example.net', later + S, '198.51.101.1')).result, 'greylisted', 'another network');

  // Not seen for max age: the allowance is gone.
  assert.equal((await send('e@example.net', later + 36 * DAY)).result, 'greylisted');

  // autoAllowAfter 0: never.
  assert.equal((await checkGreylist(store, { clientIp: '198.51.100.20', sender: 'x@lists.example', recipient: 'z@example.net', now: later + 2 * S }, { ...s, autoAllowAfter: 0 })).result, 'greylisted');
});
