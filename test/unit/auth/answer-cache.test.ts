// AnswerCache: per-user rows with TTL, FIFO eviction, flush with a generation
// guard, and answers memoized per entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AnswerCache, memoAnswer } from '../../../src/auth/answer-cache.ts';
import type { Mailbox } from '../../../src/directory/types.ts';

const mailbox = (address: string): Mailbox => ({
  address, domain: address.split('@')[1]!, quotaBytes: 0, enabled: true, created: new Date(0), updated: new Date(0),
});

test('a stored row is answered until its TTL, negative answers too', () => {
  const c = new AnswerCache({ ttlMs: 1000, maxEntries: 10 });
  c.set('alice@example.org', mailbox('alice@example.org'), c.generation, 0);
  c.set('nobody@example.org', undefined, c.generation, 0);
  assert.equal(c.get('alice@example.org', 999)?.mailbox?.address, 'alice@example.org');
  const negative = c.get('nobody@example.org', 999);
  assert.ok(negative, 'an unknown user is cached as such');
  assert.equal(negative.mailbox, undefined);
  assert.equal(c.get('alice@example.org', 1000), undefined, 'expired');
  assert.equal(c.get('bob@example.org', 0), undefined);
  assert.deepEqual({ hits: c.hits, misses: c.misses }, { hits: 2, misses: 2 });
});

test('flush drops everything, and a row read before the flush is not stored after it', () => {
  const c = new AnswerCache({ ttlMs: 1000, maxEntries: 10 });
  c.set('alice@example.org', mailbox('alice@example.org'), c.generation, 0);
  const before = c.generation;
  c.flush();
  assert.equal(c.size, 0);
  assert.equal(c.get('alice@example.org', 1), undefined);
  // A lookup that started before the change finishes after it: answered, but not remembered.
  const entry = c.set('bob@example.org', mailbox('bob@example.org'), before, 1);
  assert.equal(entry.mailbox?.address, 'bob@example.org');
  assert.equal(c.get('bob@example.org', 2), undefined);
  c.set('bob@example.org', mailbox('bob@example.org'), c.generation, 1);
  assert.ok(c.get('bob@example.org', 2));
});

test('at most maxEntries users: the oldest stored goes first', () => {
  const c = new AnswerCache({ ttlMs: 1000, maxEntries: 2 });
  for (const u of ['a@x.org', 'b@x.org', 'c@x.org']) c.set(u, mailbox(u), c.generation, 0);
  assert.equal(c.size, 2);
  assert.equal(c.get('a@x.org', 1), undefined);
  assert.ok(c.get('b@x.org', 1) && c.get('c@x.org', 1));
});

test('ttl 0 or no entries: disabled, nothing kept', () => {
  for (const settings of [{ ttlMs: 0, maxEntries: 10 }, { ttlMs: 1000, maxEntries: 0 }]) {
    const c = new AnswerCache(settings);
    assert.equal(c.enabled, false);
    const entry = c.set('a@x.org', mailbox('a@x.org'), c.generation, 0);
    assert.equal(entry.mailbox?.address, 'a@x.org', 'the row is still handed back');
    assert.equal(c.size, 0);
  }
});

test('memoAnswer builds an answer once per entry and key; a new entry builds again', () => {
  const c = new AnswerCache({ ttlMs: 1000, maxEntries: 10 });
  let builds = 0;
  const build = () => ({ n: ++builds });
  const e = c.set('a@x.org', mailbox('a@x.org'), c.generation, 0);
  const first = memoAnswer(e, 'userdb 2.3', build);
  assert.equal(memoAnswer(e, 'userdb 2.3', build), first, 'the same object on every hit');
  assert.notEqual(memoAnswer(e, 'userdb 2.4', build), first);
  const again = c.set('a@x.org', mailbox('a@x.org'), c.generation, 0);
  assert.notEqual(memoAnswer(again, 'userdb 2.3', build), first);
  assert.equal(builds, 3);
});
