// The policy engine's synchronous fast path against its async path, over real
// parts: the YAML directory with the shared fixture, a test DNS server on
// loopback behind createResolver (c-ares). A "cold" engine (no lookup cache,
// directory reads only through promises, fresh verdict caches for every
// message) always takes the async path; a "warm" engine (lookup cache, DNS
// cache, its verdict caches warmed by the same message once) must answer every
// request synchronously, with the same decision.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ptrQueryName } from '../../src/checks/fcrdns.ts';
import { SpfMemory } from '../../src/checks/spf-memory.ts';
import { parseConfig } from '../../src/config/load.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { DirectoryError } from '../../src/directory/types.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { cachedResolver } from '../../src/dns/cache.ts';
import { reverseIp } from '../../src/dns/dnsbl.ts';
import { createResolver, type DnsResolver } from '../../src/dns/resolver.ts';
import { createLogger } from '../../src/logging/logger.ts';
import { LookupService } from '../../src/lookup/service.ts';
import type { SmtpdPolicyConfig } from '../../src/policy/config.ts';
import { DIRECTORY_MEMO_MS, newMessageState, PolicyEngine, TEMPORARY_HOLD_MS, type PolicyDecision } from '../../src/policy/engine.ts';
import { policyRequest, type PolicyRequest } from '../../src/policy/request.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { startDnsServer, type TestDnsServer, type Zones } from '../support/dns-server.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
import { prng as rng } from '../support/prng.ts';
import { asyncDirectory } from '../support/async-directory.ts';

const T0 = Date.UTC(2025, 4, 5, 6, 0, 0);
const bl = (ip: string, zone: string): string => `${reverseIp(ip)}.${zone}`;

const IP = {
  clean: '192.0.2.10',
  blOnly: '192.0.2.21',
  zen: '192.0.2.22',
  both: '192.0.2.23',
  zenOtherCode: '192.0.2.24',
  allowListed: '192.0.2.25',
  zenError: '192.0.2.26',
  noPtr: '192.0.2.30',
  badPtr: '192.0.2.31',
  brokenBl: '192.0.2.33',
  v6: '2001:db8::10',
} as const;

const ZONES: Zones = {
  'pass.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all'] },
  'fail.test': { TXT: ['v=spf1 ip4:198.51.100.1 -all'], A: ['198.51.100.1'] },
  'soft.test': { TXT: ['v=spf1 ~all'] },
  'neutral.test': { TXT: ['v=spf1 ?all'] },
  'perm.test': { TXT: ['v=spf1 -all', 'v=spf1 +all'] },
  'broken.test': { SERVFAIL: true },
  'macro.test': { TXT: ['v=spf1 exists:%{l}.allow.macro.test -all'] },
  'news.allow.macro.test': { A: ['127.0.0.2'] },
  'spam.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
  'mail.pass.test': { A: ['192.0.2.10'], TXT: ['v=spf1 a -all'] },
  'helofail.test': { TXT: ['v=spf1 -all'] },
  'elsewhere.test': { A: ['198.51.100.99'] },
  [ptrQueryName(IP.clean)!]: { PTR: ['mail.pass.test'] },
  [ptrQueryName(IP.badPtr)!]: { PTR: ['elsewhere.test'] },
  [bl(IP.blOnly, 'bl.test')]: { A: ['127.0.0.2'] },
  [bl(IP.zen, 'zen.test')]: { A: ['127.0.0.2', '127.0.0.4'], TXT: ['listed, see https://zen.test/q'] },
  [bl(IP.both, 'zen.test')]: { A: ['127.0.0.3'] },
  [bl(IP.both, 'bl.test')]: { A: ['127.0.0.2'] },
  [bl(IP.zenOtherCode, 'zen.test')]: { A: ['127.0.0.20'] },
  [bl(IP.allowListed, 'zen.test')]: { A: ['127.0.0.2'] },
  [bl(IP.allowListed, 'wl.test')]: { A: ['127.0.10.1'] },
  [bl(IP.zenError, 'zen.test')]: { A: ['127.255.255.254'] },
  [bl(IP.brokenBl, 'zen.test')]: { SERVFAIL: true },
  'spam.example.dbl.test': { A: ['127.0.1.2'] },
};

let tmp: TempDir;
let dns: TestDnsServer;
let plain: DnsResolver;
let yaml: YamlDirectory;
let admin: DirectoryAdmin;
/** No cache, and directory reads only through promises: every input is fetched. */
let coldLookups: LookupService;
let clock = T0;

function policyConfig(lines: readonly string[]): SmtpdPolicyConfig {
  const text = [
    'directory:', '  backend: yaml', `  path: ${yaml.path}`,
    'policy:', '  listen: inet:127.0.0.1:10040', '  myhostname: mx.mailwarden.test',
    ...lines,
  ].join('\n');
  return parseConfig(text, join(tmp.path, 'mailwarden.yaml')).policy!;
}

/** A daemon-like warm engine: lookup cache, DNS cache, SpfMemory. */
function warmEngine(config: SmtpdPolicyConfig, opts: { lookups?: LookupService; resolver?: DnsResolver } = {}): { engine: PolicyEngine; lookups: LookupService } {
  const lookups = opts.lookups ?? new LookupService(yaml, { recipientDelimiter: '+', cacheTtlMs: 3_600_000, cacheSize: 100_000 }, createLogger('silent'));
  const resolver = opts.resolver ?? cachedResolver(plain, { maxEntries: 10_000, minTtlS: 5, maxTtlS: 3600, negativeTtlS: 300, now: () => clock });
  return { engine: new PolicyEngine({ config, lookups, resolver, spfMemory: new SpfMemory(), now: () => clock }), lookups };
}

function coldEngine(config: SmtpdPolicyConfig): PolicyEngine {
  return new PolicyEngine({ config, lookups: coldLookups, resolver: plain, now: () => clock });
}

/** What two decisions must agree on: everything but SPF's evaluation time. */
function comparable(d: PolicyDecision): unknown {
  return JSON.parse(JSON.stringify(d, (k, v: unknown) => (k === 'ms' ? undefined : v)));
}


let instances = 0;

before(async () => {
  tmp = await tempDir('policy-fastpath');
  dns = await startDnsServer(ZONES);
  plain = createResolver({ servers: [dns.address], timeoutMs: 400 });
  yaml = YamlDirectory.open(join(tmp.path, 'directory.yaml'));
  admin = new DirectoryAdmin(yaml);
  await seedFixture(admin);
  coldLookups = new LookupService(asyncDirectory(yaml, () => false), { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
});

after(async () => {
  await yaml?.close();
  await dns?.stop();
  await tmp?.remove();
});

describe('synchronous fast path', () => {
  const CONFIGS: ReadonlyArray<readonly string[]> = [
    [],
    ['  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3", "bl.test*2", "wl.test*-5"]', '    threshold: 3', '    on_error: defer',
      '  rhsbl:', '    sites: ["dbl.test"]', '  fcrdns:', '    action: reject', '  helo:', '    action: reject'],
    ['  spf:', '    on_fail: annotate', '    on_softfail: reject', '    on_permerror: reject', '    on_temperror: annotate', '    helo: false',
      '  dnsbl:', '    sites: ["zen.test*3", "bl.test*2"]', '    threshold: 2', '    action: defer', '  fcrdns:', '    action: defer',
      '  recipients:', '    reject_unknown: false'],
    ['  mynetworks: ["192.0.2.20/31", "2001:db8::/64"]', '  spf:', '    skip_networks: ["192.0.2.24/32"]', '  sender_login:', '    enabled: false',
      '  dnsbl:', '    sites: ["zen.test"]', '    action: warn'],
  ];
  const clients = [IP.clean, IP.blOnly, IP.zen, IP.both, IP.zenOtherCode, IP.allowListed, IP.zenError, IP.noPtr, IP.badPtr, IP.brokenBl, IP.v6, '127.0.0.1', '::ffff:192.0.2.10'];
  const helos = ['mail.pass.test', 'mta.sender.test', 'helofail.test', '[192.0.2.10]', '[198.51.100.7]', '192.0.2.10', 'localhost', 'mx.mailwarden.test', 'example.org', 'bad_name-.test', ''];
  const senders = ['news@pass.test', 'x@fail.test', 'y@soft.test', 'z@neutral.test', 'p@perm.test', 'b@broken.test', 'news@macro.test', 'other@macro.test',
    'spam@spam.example', 'a@nospf.test', '', 'alice@example.org', 'dave@other.test', 'weird', 'Mixed@PASS.test'];
  const recipients = ['alice@example.org', 'Alice+tag@Example.ORG', 'info@example.org', 'nobody@example.org', 'bob@example.net', 'carol@example.org',
    'nobody@other.test', 'dave@other.test', 'x@foreign.example', 'user%host@example.org', '@relay:alice@example.org', '', 'alice', 'eve@off.test'];
  const logins = ['', '', '', '', 'alice@example.org', 'bob@example.org'];

  it('gives the same decision as the async path, synchronously, for many generated messages', async () => {
    const rand = rng(7208);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    let requests = 0;
    for (const [n, lines] of CONFIGS.entries()) {
      const config = policyConfig(lines);
      const warm = warmEngine(config).engine;
      for (let m = 0; m < 60; m++) {
        const client = pick(clients);
        const verified = rand() < 0.3 && client === IP.clean ? 'mail.pass.test' : 'unknown';
        const base = { clientAddress: client, clientName: verified, reverseClientName: verified, heloName: pick(helos), sender: pick(senders), saslUsername: pick(logins) };
        const message: PolicyRequest[] = [];
        for (let r = 1 + Math.floor(rand() * 3); r > 0; r--) message.push(policyRequest({ ...base, protocolState: 'RCPT', recipient: pick(recipients), instance: `fp.${++instances}` }));
        if (rand() < 0.3) message.push(policyRequest({ ...base, protocolState: pick(['DATA', 'MAIL', 'END-OF-MESSAGE']), instance: message[0]!.instance }));
        // The cold engine: every decision fetches its inputs (fresh verdict caches for the message).
        const cold = coldEngine(config);
        const coldMsg = newMessageState();
        const expected: PolicyDecision[] = [];
        for (const req of message) expected.push(await cold.decide(req, coldMsg));
        // Warm up the warm engine on the same message, then ask again with fresh per-message state.
        const warmup = newMessageState();
        for (const req of message) await warm.decideNow(req, warmup);
        const warmMsg = newMessageState();
        for (const [i, req] of message.entries()) {
          const d = warm.decideNow(req, warmMsg);
          const what = `config ${n}, message ${m}, request ${i}: ${JSON.stringify({ ...base, recipient: req.recipient, state: req.protocolState })}`;
          assert.ok(!(d instanceof Promise), `not answered synchronously: ${what}`);
          assert.deepEqual(comparable(d), comparable(expected[i]!), what);
          requests++;
        }
        assert.deepEqual(warmMsg, { ...coldMsg, ...(coldMsg.inbound ? { inbound: warmMsg.inbound } : {}) }, 'same per-message state');
      }
    }
    assert.ok(requests > 400, `${requests} requests compared`);
  });

  it('the cold path really is async, and decide() is decideNow() as a promise', async () => {
    const config = policyConfig([]);
    const req = policyRequest({ clientAddress: IP.clean, heloName: 'mail.pass.test', sender: 'news@pass.test', recipient: 'alice@example.org', instance: `fp.${++instances}` });
    const pending = coldEngine(config).decideNow(req, newMessageState());
    assert.ok(pending instanceof Promise);
    const { engine } = warmEngine(config);
    const viaDecide = await engine.decide(req, newMessageState());
    assert.equal(viaDecide.action, (await pending).action);
    assert.match(viaDecide.action, /^PREPEND Received-SPF: pass /);
    const now = engine.decideNow(req, newMessageState());
    assert.ok(!(now instanceof Promise));
    assert.equal(now.action, viaDecide.action);
  });

  it('without the decision facts (no log line) the action is the same and the checks stay sparse', async () => {
    const { engine } = warmEngine(policyConfig(['  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3"]', '    threshold: 3']));
    for (const client of [IP.clean, IP.zen]) {
      const req = policyRequest({ clientAddress: client, heloName: 'mail.pass.test', sender: 'news@pass.test', recipient: 'alice@example.org', instance: `fp.${++instances}` });
      const full = await engine.decide(req, newMessageState());
      const sparse = await engine.decideNow(req, newMessageState(), false);
      assert.equal(sparse.action, full.action);
      assert.equal(sparse.decidedBy, full.decidedBy);
      assert.deepEqual(sparse.checks, {});
      assert.ok('recipient' in full.checks && 'spf' in full.checks);
    }
  });
});

describe('caches behind the fast path', () => {
  it('a directory change is seen by the very next decision (lookup cache flushed), sync or not', async () => {
    const { engine } = warmEngine(policyConfig([]));
    const ask = async (recipient: string) => {
      const req = policyRequest({ clientAddress: IP.clean, heloName: 'mail.pass.test', sender: 'news@pass.test', recipient, instance: `fp.${++instances}` });
      return (await engine.decideNow(req, newMessageState())).action;
    };
    assert.equal(await ask('newbie@other.test'), '550 5.1.1 User unknown');
    assert.equal(await ask('newbie@other.test'), '550 5.1.1 User unknown');
    await admin.addMailbox('newbie@other.test');
    try {
      assert.match(await ask('newbie@other.test'), /^PREPEND Received-SPF: pass /);
      await admin.updateMailbox('newbie@other.test', { enabled: false });
      assert.equal(await ask('newbie@other.test'), '550 5.1.1 User unknown');
    } finally {
      await admin.removeMailbox('newbie@other.test');
    }
  });

  it('directory answers are remembered for a second at most, only with a lookup cache, and never across a change', async () => {
    clock = T0;
    const { engine, lookups } = warmEngine(policyConfig([]));
    const cache = lookups.cache!;
    const req = () => policyRequest({ clientAddress: IP.clean, heloName: 'mail.pass.test', sender: 'news@pass.test', recipient: 'bob@example.org', instance: `fp.${++instances}` });
    await engine.decideNow(req(), newMessageState());
    const reads = () => cache.hits + cache.misses;
    const before = reads();
    engine.decideNow(req(), newMessageState());
    assert.equal(reads(), before, 'within the second: no lookup at all');
    clock += DIRECTORY_MEMO_MS;
    engine.decideNow(req(), newMessageState());
    assert.ok(reads() > before, 'after it: the lookup cache is asked again');
    // Without a lookup cache (cache_ttl: 0) every decision asks the directory: an outage shows at once.
    let down = false;
    const uncached = new LookupService(asyncDirectory(yaml, () => down), { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
    const plainEngine = warmEngine(policyConfig([]), { lookups: uncached }).engine;
    assert.match((await plainEngine.decideNow(req(), newMessageState())).action, /^PREPEND /);
    down = true;
    await assert.rejects(Promise.resolve(plainEngine.decideNow(req(), newMessageState())), DirectoryError);
    clock = T0;
  });

  it('a config reload (a new engine) applies at once: verdicts do not outlive the engine that made them', async () => {
    const resolver = cachedResolver(plain, { maxEntries: 10_000, minTtlS: 5, maxTtlS: 3600, negativeTtlS: 300, now: () => clock });
    const strict = warmEngine(policyConfig(['  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3"]', '    threshold: 3']), { resolver });
    const req = () => policyRequest({ clientAddress: IP.zen, heloName: 'mta.sender.test', sender: 'news@pass.test', recipient: 'alice@example.org', instance: `fp.${++instances}` });
    assert.match((await strict.engine.decideNow(req(), newMessageState())).action, /^554 5\.7\.1 Service unavailable; Client host \[192\.0\.2\.22\] blocked using zen\.test/);
    const relaxed = warmEngine(policyConfig(['  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3"]', '    threshold: 3', '    action: warn']), { resolver, lookups: strict.lookups });
    // The new engine has its own (empty) verdict caches: it decides afresh, from the shared DNS cache.
    assert.ok(relaxed.engine.decideNow(req(), newMessageState()) instanceof Promise);
    const d = await relaxed.engine.decideNow(req(), newMessageState());
    assert.match(d.action, /^PREPEND Received-SPF: pass /);
    assert.match((await strict.engine.decideNow(req(), newMessageState())).action, /^554 /, 'the old engine keeps its own config');
    const none = warmEngine(policyConfig([]), { resolver, lookups: strict.lookups });
    assert.equal((await none.engine.decideNow(req(), newMessageState())).checks['dnsbl'], undefined);
  });

  it('verdicts expire after a minute: a client delisted meanwhile is no longer rejected', async () => {
    const zones = { ...ZONES, [bl('192.0.2.77', 'zen.test')]: { A: ['127.0.0.2'] } };
    dns.setZones(zones);
    try {
      // The listing's TTL (300 s) outlives the minute: the verdict's own limit is what expires here
      // (shorter TTLs bound it further: policy-verdict-ttl.test.ts).
      const resolver = cachedResolver(plain, { maxEntries: 10_000, minTtlS: 0, maxTtlS: 3600, negativeTtlS: 300, now: () => performance.now() + (clock - T0) });
      const { engine } = warmEngine(policyConfig(['  dnsbl:', '    sites: ["zen.test"]']), { resolver });
      const req = () => policyRequest({ clientAddress: '192.0.2.77', heloName: 'mta.sender.test', sender: 'news@pass.test', recipient: 'alice@example.org', instance: `fp.${++instances}` });
      assert.match((await engine.decideNow(req(), newMessageState())).action, /^554 /);
      dns.setZones(ZONES);
      clock += 59_000;
      const still = engine.decideNow(req(), newMessageState());
      assert.ok(!(still instanceof Promise));
      assert.match(still.action, /^554 /, 'within the minute the verdict is reused');
      clock += 2_000;
      resolver.clear(); // the DNS cache would still say "listed" (TTL 300 s)
      const after = engine.decideNow(req(), newMessageState());
      assert.ok(after instanceof Promise, 'expired: asked again');
      assert.match((await after).action, /^PREPEND Received-SPF: pass /);
    } finally {
      dns.setZones(ZONES);
      clock = T0;
    }
  });
});

describe('fail-safe: a cached path never turns an error into a reject', () => {
  it('an SPF temperror is held for a few seconds, still defers (never 5xx), and is evaluated again after the hold', async () => {
    clock = T0;
    const { engine } = warmEngine(policyConfig([]));
    const req = () => policyRequest({ clientAddress: IP.clean, heloName: 'mail.pass.test', sender: 'b@broken.test', recipient: 'alice@example.org', instance: `fp.${++instances}` });
    dns.clearLog();
    const first = await engine.decideNow(req(), newMessageState());
    assert.match(first.action, /^DEFER_IF_PERMIT 4\.7\.24 SPF temporary error: broken\.test/);
    const asked = dns.count('broken.test', 'TXT');
    assert.ok(asked >= 1);
    clock += TEMPORARY_HOLD_MS - 1;
    const held = engine.decideNow(req(), newMessageState());
    assert.ok(!(held instanceof Promise), 'held: answered from memory');
    assert.equal(held.action, first.action);
    assert.equal(dns.count('broken.test', 'TXT'), asked, 'no new query while held');
    // The domain is fixed; after the hold the next message sees it.
    dns.setZones({ ...ZONES, 'broken.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] } });
    try {
      clock += 1;
      assert.match((await engine.decideNow(req(), newMessageState())).action, /^PREPEND Received-SPF: pass /);
    } finally {
      dns.setZones(ZONES);
      clock = T0;
    }
  });

  it('a DNSBL zone that fails is held as an error: deferred with on_error: defer, never counted as a listing, asked again later', async () => {
    clock = T0;
    const lists = ['  dnsbl:', '    sites: ["zen.test*3"]', '    threshold: 3'];
    const defer = warmEngine(policyConfig([...lists, '    on_error: defer'])).engine;
    const ignore = warmEngine(policyConfig(lists)).engine;
    const req = () => policyRequest({ clientAddress: IP.brokenBl, heloName: 'mta.sender.test', sender: 'news@pass.test', recipient: 'alice@example.org', instance: `fp.${++instances}` });
    for (let i = 0; i < 3; i++) {
      const d = await defer.decideNow(req(), newMessageState());
      assert.equal(d.action, 'DEFER_IF_PERMIT 4.7.1 Client host [192.0.2.33] could not be checked against zen.test, try again later');
      const i2 = await ignore.decideNow(req(), newMessageState());
      assert.match(i2.action, /^PREPEND Received-SPF: pass /);
      clock += 1_000;
    }
    dns.clearLog();
    clock += TEMPORARY_HOLD_MS;
    await defer.decideNow(req(), newMessageState());
    assert.equal(dns.count(bl(IP.brokenBl, 'zen.test'), 'A'), 1, 'asked again after the hold');
    clock = T0;
  });

  it('a directory outage is never answered from the verdict caches: the decision fails (default action), and recovers', async () => {
    let down = false;
    const lookups = new LookupService(asyncDirectory(yaml, () => down), { recipientDelimiter: '+', cacheTtlMs: 3_600_000, cacheSize: 100_000 }, createLogger('silent'));
    const { engine } = warmEngine(policyConfig([]), { lookups });
    const req = (recipient: string) => policyRequest({ clientAddress: IP.clean, heloName: 'mail.pass.test', sender: 'news@pass.test', recipient, instance: `fp.${++instances}` });
    assert.match((await engine.decideNow(req('alice@example.org'), newMessageState())).action, /^PREPEND /);
    down = true;
    // Cached directory answers still serve (that is the lookup cache's contract); an uncached one fails the decision.
    assert.match((await engine.decideNow(req('alice@example.org'), newMessageState())).action, /^PREPEND /);
    const failing = engine.decideNow(req('bob@example.org'), newMessageState());
    assert.ok(failing instanceof Promise);
    await assert.rejects(failing, (err: unknown) => err instanceof DirectoryError && err.code === 'unavailable');
    down = false;
    assert.match((await engine.decideNow(req('bob@example.org'), newMessageState())).action, /^PREPEND /);
  });
});
