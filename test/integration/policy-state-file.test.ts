// The YAML backend's policy state: a JSON side file next to the directory,
// written atomically at most once a second and on close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { checkGreylist, GREYLIST_DEFAULTS } from '../../src/checks/greylist.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { FilePolicyState, policyStatePath } from '../../src/state/file-store.ts';
import { openPolicyState } from '../../src/state/open.ts';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2025, 4, 5, 6, 0, 0);
const RULES = { delayMs: 5 * MIN, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY };

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'mw-policy-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('side file path: next to the directory, named after it', () => {
  assert.equal(policyStatePath('/etc/mailwarden/directory.yaml'), '/etc/mailwarden/directory.policy-state.json');
  assert.equal(policyStatePath('/srv/mail/users.yml'), '/srv/mail/users.policy-state.json');
});

test('state survives a reopen; expired entries are dropped at load', async (t) => {
  const path = join(tempDir(t), 'directory.policy-state.json');
  const clock = () => T0 + MIN;
  const one = FilePolicyState.open(path, { sweep: false, clock });
  await one.addToCounters([{ key: 'sasl:a@example.org:messages', windowMs: HOUR, amount: 3 }], T0);
  await one.addToCounters([{ key: 'short', windowMs: 1000, amount: 1 }], T0 - 10_000); // expired by T0 + 1 min
  await one.seeTriplet('192.0.2.0/24/a@example.org/b@example.net', T0, RULES);
  await one.seeTriplet('192.0.2.0/24/a@example.org/b@example.net', T0 + 6 * MIN, RULES);
  await one.updateClient('192.0.2.0/24', T0 + 6 * MIN, { pass: true, minPassIntervalMs: HOUR, maxAgeMs: 35 * DAY });
  await one.close();
  assert.ok(existsSync(path));
  assert.ok(!readFileSync(path, 'utf8').includes('b@example.net'), 'triplets are stored as digests');

  const two = FilePolicyState.open(path, { sweep: false, clock });
  t.after(() => two.close());
  assert.deepEqual(two.size, { buckets: 1, triplets: 1, clients: 1 }, 'the expired counter bucket was not loaded');
  assert.equal((await two.readCounters([{ key: 'sasl:a@example.org:messages', windowMs: HOUR }], T0 + MIN))[0]!.total, 3);
  assert.deepEqual(await two.readTriplet('192.0.2.0/24/a@example.org/b@example.net', T0 + 7 * MIN), {
    firstSeen: T0, lastSeen: T0 + 6 * MIN, passedAt: T0 + 6 * MIN, expiresAt: T0 + 6 * MIN + 35 * DAY,
  });
  assert.equal((await two.readClient('192.0.2.0/24', T0 + 7 * MIN))?.passes, 1);
});

test('writes go to a temp file that is renamed over the old one; a stale temp file is ignored', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'directory.policy-state.json');
  // What a crash between writing and renaming leaves behind.
  writeFileSync(join(dir, '.directory.policy-state.json.99999.tmp'), '{"version":1,"counters":[["trunc');
  const store = FilePolicyState.open(path, { sweep: false, flushMs: 20 });
  t.after(() => store.close());
  assert.deepEqual(store.size, { buckets: 0, triplets: 0, clients: 0 });

  await store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0);
  store.flush();
  const first = statSync(path);
  const before = readFileSync(path, 'utf8');
  await store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0);
  store.flush();
  const second = statSync(path);
  assert.notEqual(second.ino, first.ino, 'replaced by rename, not rewritten in place');
  assert.notEqual(readFileSync(path, 'utf8'), before);
  JSON.parse(readFileSync(path, 'utf8')); // complete
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp') && f.includes(String(process.pid))), [], 'no temp file of ours left');
});

test('flushed at most once a second, and on close', async (t) => {
  const path = join(tempDir(t), 'directory.policy-state.json');
  const store = FilePolicyState.open(path, { sweep: false });
  await store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0);
  assert.ok(!existsSync(path), 'not written on every change');
  const start = Date.now();
  while (!existsSync(path) && Date.now() - start < 3000) await sleep(20);
  const took = Date.now() - start;
  assert.ok(existsSync(path) && took >= 800 && took < 2000, `written after ${took} ms`);
  const ino = statSync(path).ino;
  await store.addToCounters([{ key: 'k', windowMs: HOUR, amount: 1 }], T0);
  await sleep(100);
  assert.equal(statSync(path).ino, ino, 'the next write waits for its second');
  await store.close();
  assert.notEqual(statSync(path).ino, ino, 'close writes what is pending');
  const reopened = FilePolicyState.open(path, { sweep: false, clock: () => T0 });
  t.after(() => reopened.close());
  assert.equal((await reopened.readCounters([{ key: 'k', windowMs: HOUR }], T0))[0]!.total, 2);
});

test('a corrupt file is empty state, not a failure', async (t) => {
  const path = join(tempDir(t), 'directory.policy-state.json');
  for (const text of ['{"version":1,"counters":[["k",', '{"version":99}', '{"version":1,"counters":"x","triplets":[],"clients":[]}']) {
    writeFileSync(path, text);
    const warnings: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
    const store = FilePolicyState.open(path, { sweep: false, log });
    assert.deepEqual(store.size, { buckets: 0, triplets: 0, clients: 0 }, text);
    assert.equal((await store.seeTriplet('t', T0, RULES)).record.firstSeen, T0);
    assert.equal(warnings.length, 1, text);
    await store.close();
  }
});

test('bounded: the least recently written entries go first', async (t) => {
  const warnings: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
  const store = FilePolicyState.open(join(tempDir(t), 'state.json'), { sweep: false, maxEntries: 10, log });
  t.after(() => store.close());
  for (let i = 0; i < 10; i++) await store.seeTriplet(`t${i}`, T0 + i, RULES);
  await store.seeTriplet('t0', T0 + 100, RULES); // t0 written again: now the most recent
  for (let i = 10; i < 15; i++) await store.seeTriplet(`t${i}`, T0 + i, RULES);
  assert.equal(store.size.triplets, 10);
  assert.ok(await store.readTriplet('t0', T0 + 200), 'rewritten recently: kept');
  for (const gone of ['t1', 't2', 't3', 't4', 't5']) assert.equal(await store.readTriplet(gone, T0 + 200), undefined, gone);
  for (const kept of ['t6', 't9', 't14']) assert.ok(await store.readTriplet(kept, T0 + 200), kept);
  assert.equal(warnings.length, 1, 'one warning per minute, not per eviction');

  // Counter buckets count one entry each.
  for (let i = 0; i < 12; i++) await store.addToCounters([{ key: `c${i}`, windowMs: HOUR, amount: 1 }], T0);
  assert.equal(store.size.buckets, 10);
  assert.equal((await store.readCounters([{ key: 'c0', windowMs: HOUR }], T0))[0]!.total, 0, 'oldest counter dropped');
  assert.equal((await store.readCounters([{ key: 'c11', windowMs: HOUR }], T0))[0]!.total, 1);
  for (let i = 0; i < 12; i++) await store.updateClient(`n${i}`, T0, { pass: false, minPassIntervalMs: HOUR, maxAgeMs: DAY });
  assert.equal(store.size.clients, 10);
});

test('sweep removes expired entries only, at most limit per kind', async (t) => {
  const store = FilePolicyState.open(undefined, { sweep: false });
  t.after(() => store.close());
  for (let i = 0; i < 8; i++) await store.seeTriplet(`old${i}`, T0, RULES); // expire at T0 + 2 d
  await store.seeTriplet('new', T0 + 3 * DAY, RULES);
  for (let i = 0; i < 3; i++) await store.addToCounters([{ key: `old${i}`, windowMs: MIN, amount: 1 }], T0);
  await store.addToCounters([{ key: 'new', windowMs: DAY, amount: 1 }], T0 + 3 * DAY);
  const now = T0 + 3 * DAY;
  assert.deepEqual(await store.sweep(now, 5), { deleted: 5 + 3, more: true });
  assert.deepEqual(await store.sweep(now, 5), { deleted: 3, more: false });
  assert.deepEqual(store.size, { buckets: 1, triplets: 1, clients: 0 });
  assert.ok(await store.readTriplet('new', now));
});

test('openPolicyState: the YAML backend gets the side file; greylisting persists across restarts', async (t) => {
  const dir = tempDir(t);
  const directoryPath = join(dir, 'directory.yaml');
  const config = { backend: 'yaml' as const, path: directoryPath };
  const msg = { clientIp: '198.51.100.7', sender: 'a@example.org', recipient: 'b@example.net' };
  const silent = pino({ level: 'silent' });
  // Real time: at load the store drops what expired by the wall clock.
  const start = Date.now();

  const directory = YamlDirectory.open(directoryPath);
  const store = await openPolicyState(config, directory, silent);
  assert.equal(store.kind, 'file');
  assert.equal((await checkGreylist(store, { ...msg, now: start }, GREYLIST_DEFAULTS)).result, 'greylisted');
  await store.close();
  await directory.close();
  assert.ok(existsSync(join(dir, 'directory.policy-state.json')));

  // "Restart": the retry after the delay passes, because the first sighting was kept.
  const again = await openPolicyState(config, YamlDirectory.open(directoryPath), silent);
  t.after(() => again.close());
  assert.equal((await checkGreylist(again, { ...msg, now: start + 6 * MIN }, GREYLIST_DEFAULTS)).result, 'pass');
});
