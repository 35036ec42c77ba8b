// The policy engine's verdict memory (60 s) must not outlive the DNS answers a
// verdict was made from: a DNSBL listing with a 10 s TTL, an A record behind an
// SPF `a:` mechanism with a 30 s TTL. Real parts: the test DNS server behind
// createResolver (c-ares) and the daemon's DNS cache settings, the YAML
// directory; one injected clock drives the engine and the DNS cache, so "the
// TTL has passed" needs no waiting. The zone data changes between decisions,
// as a DNSBL delisting or an SPF change would.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { cachedResolver, type CachedDnsResolver } from '../../src/dns/cache.ts';
import { reverseIp } from '../../src/dns/dnsbl.ts';
import { createResolver } from '../../src/dns/resolver.ts';
import { createLogger } from '../../src/logging/logger.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { newMessageState, PolicyEngine } from '../../src/policy/engine.ts';
import { policyRequest, type PolicyRequest } from '../../src/policy/request.ts';
import { SpfMemory } from '../../src/checks/spf-memory.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { startDnsServer, type TestDnsServer, type Zones } from '../support/dns-server.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const T0 = Date.UTC(2025, 4, 5, 6, 0, 0);
const LISTED_IP = '192.0.2.77';
const SPF_IP = '192.0.2.88';
const zen = `${reverseIp(LISTED_IP)}.zen.test`;

/** The zones before the change: the client is listed (TTL 10 s), the sender's `a:` host is the client (TTL 30 s). */
function zones(listed: boolean, spfHost: string): Zones {
  return {
    ...(listed ? { [zen]: { A: [{ data: '127.0.0.2', ttl: 10 }] } } : {}),
    'ttl.test': { TXT: ['v=spf1 a:out.ttl.test -all'] },
    'out.ttl.test': { A: [{ data: spfHost, ttl: 30 }] },
  };
}

let tmp: TempDir;
let dns: TestDnsServer;
let yaml: YamlDirectory;
let lookups: LookupService;
/** ms since T0, for the engine (wall clock) and the DNS cache (monotonic) alike. */
let clock = 0;

function setup(): { engine: PolicyEngine; resolver: CachedDnsResolver } {
  const text = [
    'directory:', '  backend: yaml', `  path: ${yaml.path}`,
    'policy:', '  listen: inet:127.0.0.1:10040', '  myhostname: mx.mailwarden.test',
    '  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3"]', '    threshold: 3',
    '  spf:', '    on_fail: reject',
  ].join('\n');
  const config = parseConfig(text, join(tmp.path, 'mailwarden.yaml')).policy!;
  // The daemon's DNS cache settings (src/daemon/serve.ts), on the test clock.
  const resolver = cachedResolver(createResolver({ servers: [dns.address], timeoutMs: 1_000 }), {
    maxEntries: 1_000, minTtlS: 5, maxTtlS: 3600, negativeTtlS: 300, now: () => clock,
  });
  const engine = new PolicyEngine({ config, lookups, resolver, spfMemory: new SpfMemory(), now: () => T0 + clock });
  return { engine, resolver };
}

let instance = 0;
function rcpt(clientAddress: string, sender: string): PolicyRequest {
  return policyRequest({
    protocolState: 'RCPT', clientAddress, clientName: 'unknown', reverseClientName: 'unknown',
    heloName: 'mta.ttl.test', sender, recipient: 'alice@example.org', instance: `ttl.${++instance}`,
  });
}

async function action(engine: PolicyEngine, req: PolicyRequest): Promise<string> {
  return (await engine.decide(req, newMessageState())).action;
}

before(async () => {
  tmp = await tempDir('policy-verdict-ttl');
  dns = await startDnsServer(zones(true, SPF_IP));
  yaml = YamlDirectory.open(join(tmp.path, 'directory.yaml'));
  await seedFixture(new DirectoryAdmin(yaml));
  lookups = new LookupService(yaml, { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
});

after(async () => {
  await yaml?.close();
  await dns?.stop();
  await tmp?.remove();
});

describe('remembered verdicts live no longer than the DNS answers behind them', () => {
  it('a DNSBL listing with a 10 s TTL: delisted in DNS, the client passes once the 10 s are over', async () => {
    clock = 0;
    dns.setZones(zones(true, SPF_IP));
    const { engine } = setup();
    const sender = 'news@other.test';
    assert.match(await action(engine, rcpt(LISTED_IP, sender)), /^554 5\.7\.1 Service unavailable; Client host \[192\.0\.2\.77\] blocked using zen\.test/);
    dns.setZones(zones(false, SPF_IP));
    dns.clearLog();
    clock = 9_000; // within the TTL: the remembered verdict answers, no query
    assert.match(await action(engine, rcpt(LISTED_IP, sender)), /^554 /);
    assert.equal(dns.count(zen), 0);
    clock = 10_500; // TTL over (the 60 s verdict memory would still say "listed")
    assert.doesNotMatch(await action(engine, rcpt(LISTED_IP, sender)), /^554 /);
    assert.equal(dns.count(zen, 'A'), 1, 'the listing was asked again');
  });

  it('SPF through an `a:` host with a 30 s TTL: the host moves, and SPF says fail once the 30 s are over', async () => {
    clock = 0;
    dns.setZones(zones(false, SPF_IP));
    const { engine } = setup();
    const sender = 'news@ttl.test';
    assert.match(await action(engine, rcpt(SPF_IP, sender)), /^PREPEND Received-SPF: pass /);
    dns.setZones(zones(false, '198.51.100.1'));
    clock = 29_000;
    assert.match(await action(engine, rcpt(SPF_IP, sender)), /^PREPEND Received-SPF: pass /);
    clock = 30_500;
    assert.match(await action(engine, rcpt(SPF_IP, sender)), /^5\d\d 5\.7\.23? /);
  });

  it('answers with long TTLs keep the verdict for the whole minute', async () => {
    clock = 0;
    dns.setZones({ ...zones(false, SPF_IP), 'long.test': { TXT: ['v=spf1 a:out.long.test -all'] }, 'out.long.test': { A: [{ data: SPF_IP, ttl: 3600 }] } });
    const { engine } = setup();
    assert.match(await action(engine, rcpt(SPF_IP, 'a@long.test')), /^PREPEND Received-SPF: pass /);
    dns.setZones(zones(false, SPF_IP)); // long.test is gone from DNS, but its answers are cached for an hour
    dns.clearLog();
    clock = 59_000;
    assert.match(await action(engine, rcpt(SPF_IP, 'a@long.test')), /^PREPEND Received-SPF: pass /);
    assert.equal(dns.queries.length, 0, 'all from the verdict memory');
  });
});

describe('cachedResolver observed(): the remaining life of the answers it gives', () => {
  it('A records: their TTL, minus their age on a cache hit; void answers: the negative TTL; TXT: the default TTL; failures: nothing', async () => {
    clock = 0;
    dns.setZones({ ...zones(true, SPF_IP), 'broken.ttl.test': { SERVFAIL: true } });
    const { resolver } = setup();
    const life = { remainingMs: Infinity };
    const seen = resolver.observed(life);
    assert.deepEqual(await seen(zen, 'A'), ['127.0.0.2']);
    assert.equal(life.remainingMs, 10_000);
    clock = 4_000;
    life.remainingMs = Infinity;
    await seen(zen, 'A');
    assert.equal(life.remainingMs, 6_000);
    life.remainingMs = Infinity;
    await assert.rejects(seen('nothing.ttl.test', 'A'), { code: 'ENOTFOUND' });
    assert.equal(life.remainingMs, 300_000);
    life.remainingMs = Infinity;
    await seen('ttl.test', 'TXT'); // c-ares reports no TTL for TXT: the cache keeps it defaultTtlS (300 s)
    assert.equal(life.remainingMs, 300_000);
    life.remainingMs = 1_234;
    await assert.rejects(seen('broken.ttl.test', 'A'), { code: 'ESERVFAIL' });
    assert.equal(life.remainingMs, 1_234);
    // The resolver itself is unchanged.
    assert.deepEqual(await resolver('out.ttl.test', 'A'), [SPF_IP]);
    assert.equal(life.remainingMs, 1_234);
  });
});
