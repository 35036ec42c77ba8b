// The DNS layer against a real (test) DNS server on loopback: createResolver
// over c-ares, the cache in front of it, and the DNSBL checks end to end.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { cachedResolver } from '../../src/dns/cache.ts';
import { checkDnsbl, parseZoneSpecs } from '../../src/dns/dnsbl.ts';
import { createResolver, DnsError, forMailauth, lookup, parseDnsServer, type DnsResolver } from '../../src/dns/resolver.ts';
import { startDnsServer, zonesFromRfc7208, type TestDnsServer, type Zones } from '../support/dns-server.ts';

const LONG_TXT = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(400);
const BIG = Array.from({ length: 30 }, (_, i) => `record-${i}-${'x'.repeat(80)}`);

const ZONES: Zones = {
  'example.com': {
    A: ['192.0.2.1', { data: '192.0.2.2', ttl: 5 }],
    AAAA: ['2001:db8::1'],
    MX: [
      [20, 'mx2.example.com'],
      [10, 'mx1.example.com'],
    ],
    TXT: ['v=spf1 mx a:relay.example.com -all', ['chunk1', 'chunk2']],
    NS: ['ns1.example.com', 'ns2.example.com'],
    ttl: { TXT: 60 },
  },
  'mx1.example.com': { A: ['192.0.2.10'] },
  'mx2.example.com': { A: ['192.0.2.20'], AAAA: ['2001:db8::20'] },
  'relay.example.com': { A: ['192.0.2.30'] },
  'www.example.com': { CNAME: 'example.com' },
  'sel._domainkey.example.com': { TXT: [LONG_TXT] },
  '1.2.0.192.in-addr.arpa': { PTR: ['example.com'] },
  [`1${'.0'.repeat(31 - 8)}.8.b.d.0.1.0.0.2.ip6.arpa`]: { PTR: ['v6.example.com'] },
  'big.example.com': { TXT: BIG },
  'tc.example.com': { A: ['192.0.2.7'], truncate: true },
  'timeout.example.com': { TIMEOUT: true },
  'servfail.example.com': { SERVFAIL: true },
  'refused.example.com': { REFUSED: true },
  'slow.example.com': { A: ['192.0.2.99'], delayMs: 150 },
  'partial.example.com': { A: ['192.0.2.40'], TIMEOUT: ['TXT'] },
  'short.example.com': { A: [{ data: '192.0.2.50', ttl: 0 }], TXT: ['x'] },
};

const error = (code: string, temporary?: boolean) => (err: unknown) =>
  err instanceof DnsError && err.code === code && (temporary === undefined || err.temporary === temporary);

async function elapsed<T>(p: Promise<T>): Promise<{ ms: number; result?: T; error?: unknown }> {
  const start = performance.now();
  try {
    const result = await p;
    return { ms: performance.now() - start, result };
  } catch (err) {
    return { ms: performance.now() - start, error: err };
  }
}

let server: TestDnsServer;
before(async () => {
  server = await startDnsServer(ZONES);
});
after(async () => {
  await server.stop();
});

describe('createResolver against a DNS server', () => {
  let resolve: ReturnType<typeof createResolver>;
  before(() => {
    resolve = createResolver({ servers: [server.address], timeoutMs: 1000 });
  });

  it('answers every record type in dns.promises.resolve shapes', async () => {
    assert.deepEqual(await resolve('example.com', 'A'), ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual(await resolve('example.com', 'AAAA'), ['2001:db8::1']);
    assert.deepEqual(await resolve('example.com', 'MX'), [
      { exchange: 'mx2.example.com', priority: 20 },
      { exchange: 'mx1.example.com', priority: 10 },
    ]);
    assert.deepEqual(await resolve('example.com', 'TXT'), [['v=spf1 mx a:relay.example.com -all'], ['chunk1', 'chunk2']]);
    assert.deepEqual(await resolve('example.com', 'NS'), ['ns1.example.com', 'ns2.example.com']);
    assert.deepEqual(await resolve('www.example.com', 'CNAME'), ['example.com']);
    assert.deepEqual(await resolve('1.2.0.192.in-addr.arpa', 'PTR'), ['example.com']);
    assert.deepEqual(await resolve(`1${'.0'.repeat(23)}.8.b.d.0.1.0.0.2.ip6.arpa`, 'PTR'), ['v6.example.com']);
    // An A query for an alias follows the CNAME.
    assert.deepEqual(await resolve('www.example.com', 'A'), ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual(await resolve('EXAMPLE.COM.', 'A'), ['192.0.2.1', '192.0.2.2']);
  });

  it('reports the smallest record TTL of every answer type', async () => {
    assert.deepEqual(await resolve.query('example.com', 'A'), { value: ['192.0.2.1', '192.0.2.2'], ttlS: 5 });
    assert.deepEqual(await resolve.query('example.com', 'AAAA'), { value: ['2001:db8::1'], ttlS: 300 });
    // Node's resolver reports none for these: they come through raw-query.ts, which reads it.
    assert.equal((await resolve.query('example.com', 'TXT')).ttlS, 60);
    assert.equal((await resolve.query('example.com', 'MX')).ttlS, 300);
    assert.equal((await resolve.query('1.2.0.192.in-addr.arpa', 'PTR')).ttlS, 300);
  });

  it('keeps a long TXT string as its 255-octet <character-string>s', async () => {
    const txt = await lookup(resolve, 'sel._domainkey.example.com', 'TXT');
    assert.equal(txt.length, 1);
    assert.deepEqual(
      txt[0]!.map((c) => c.length),
      [255, LONG_TXT.length - 255],
    );
    assert.equal(txt[0]!.join(''), LONG_TXT);
  });

  it('maps NXDOMAIN, NODATA, SERVFAIL and REFUSED to codes and the temporary flag', async () => {
    await assert.rejects(resolve('nope.example.com', 'A'), error('ENOTFOUND', false));
    await assert.rejects(resolve('mx1.example.com', 'TXT'), error('ENODATA', false));
    await assert.rejects(resolve('servfail.example.com', 'TXT'), error('ESERVFAIL', true));
    await assert.rejects(resolve('refused.example.com', 'MX'), error('EREFUSED', true));
    await assert.rejects(resolve('example.com', 'SPF'), error('ENOTIMP', false));
    // Names DNS cannot carry (an empty label) fail without a query; odd but legal bytes (space, +) are asked (raw-query.ts).
    await assert.rejects(resolve('a..b.example.com', 'A'), error('EBADNAME', false));
    await assert.rejects(resolve('a b.example.com', 'A'), error('ENOTFOUND', false));
    const err = await resolve('nope.example.com', 'TXT').catch((e: unknown) => e);
    assert.ok(err instanceof DnsError && err.hostname === 'nope.example.com' && err.rrtype === 'TXT');
  });

  it('fails with ETIMEOUT at timeoutMs, retrying within the budget', async () => {
    for (const [timeoutMs, tries] of [
      [300, 1],
      [600, 2],
      [900, 3],
    ] as const) {
      const r = createResolver({ servers: [server.address], timeoutMs, tries });
      const before = server.count('timeout.example.com');
      const t = await elapsed(r('timeout.example.com', 'A'));
      assert.ok(error('ETIMEOUT', true)(t.error), String(t.error));
      assert.ok(t.ms >= timeoutMs - 30 && t.ms <= timeoutMs + 100, `${timeoutMs} ms x ${tries}: took ${t.ms.toFixed(0)} ms`);
      if (tries > 1) assert.ok(server.count('timeout.example.com') - before >= 2, 'c-ares retried inside the deadline');
    }
    // Only the timed-out type times out.
    assert.deepEqual(await resolve('partial.example.com', 'A'), ['192.0.2.40']);
  });

  it('returns a late answer that arrives inside the deadline, ETIMEOUT otherwise', async () => {
    const t = await elapsed(resolve('slow.example.com', 'A'));
    assert.deepEqual(t.result, ['192.0.2.99']);
    assert.ok(t.ms >= 140, `answered after ${t.ms.toFixed(0)} ms`);
    const tight = createResolver({ servers: [server.address], timeoutMs: 80, tries: 1 });
    const t2 = await elapsed(tight('slow.example.com', 'A'));
    assert.ok(error('ETIMEOUT')(t2.error));
    assert.ok(t2.ms < 180, `${t2.ms}`);
  });

  it('retries truncated UDP answers over TCP', async () => {
    server.clearLog();
    const big = await lookup(resolve, 'big.example.com', 'TXT');
    assert.deepEqual(big.map((r) => r.join('')), BIG);
    assert.deepEqual(await resolve('tc.example.com', 'A'), ['192.0.2.7']);
    assert.deepEqual(
      server.queries.map((q) => `${q.transport} ${q.name} ${q.outcome}`),
      ['udp big.example.com truncated', 'tcp big.example.com answer', 'udp tc.example.com truncated', 'tcp tc.example.com answer'],
    );
  });

  it('fails fast and temporarily when the server is gone', async () => {
    const gone = await startDnsServer({});
    const address = gone.address;
    await gone.stop();
    const r = createResolver({ servers: [address], timeoutMs: 500, tries: 1 });
    const t = await elapsed(r('example.com', 'A'));
    assert.ok(t.error instanceof DnsError && t.error.temporary, String(t.error));
    assert.ok(t.ms <= 600);
  });

  it('validates server entries', () => {
    assert.equal(parseDnsServer('127.0.0.1'), '127.0.0.1');
    assert.equal(parseDnsServer(' 127.0.0.1:5353 '), '127.0.0.1:5353');
    assert.equal(parseDnsServer('::1'), '::1');
    assert.equal(parseDnsServer('[::1]:53'), '[::1]:53');
    for (const bad of ['localhost', 'localhost:53', '127.0.0.1:0', '127.0.0.1:70000', '[127.0.0.1]:53', '::1:53x', '']) {
      assert.throws(() => parseDnsServer(bad), /DNS server/, bad);
    }
    assert.throws(() => createResolver({ servers: ['dns.example:53'], timeoutMs: 100 }), /expected an IP address/);
    assert.throws(() => createResolver({ servers: [], timeoutMs: 0 }), /timeout/);
    assert.ok(createResolver({ servers: [], timeoutMs: 100 }).servers.length >= 0, 'empty list = system resolvers');
  });
});

describe('cachedResolver over createResolver', () => {
  const upstream = () => createResolver({ servers: [server.address], timeoutMs: 400, tries: 1 });
  const opts = { maxEntries: 100, minTtlS: 0, maxTtlS: 3600, negativeTtlS: 30, defaultTtlS: 120 };

  it('keeps A answers for their record TTL (injected clock)', async () => {
    let clock = 1_000_000;
    const cache = cachedResolver(upstream(), { ...opts, now: () => clock });
    server.clearLog();
    assert.deepEqual(await cache('example.com', 'A'), ['192.0.2.1', '192.0.2.2']);
    clock += 4_999;
    assert.deepEqual(await cache('Example.COM.', 'A'), ['192.0.2.1', '192.0.2.2']);
    assert.equal(server.count('example.com', 'A'), 1, 'served from the cache within the 5 s TTL (the smaller record TTL)');
    clock += 2;
    await cache('example.com', 'A');
    assert.equal(server.count('example.com', 'A'), 2, 'expired after 5 s');
    assert.deepEqual({ ...cache.stats }, { hits: 1, negativeHits: 0, misses: 2, inflightJoins: 0, evictions: 0 });
  });

  it('keeps TXT answers for their record TTL, clamped to [minTtlS, maxTtlS]', async () => {
    let clock = 0;
    const cache = cachedResolver(upstream(), { ...opts, now: () => clock });
    server.clearLog();
    await cache('example.com', 'TXT');
    clock += 59_000;
    await cache('example.com', 'TXT');
    assert.equal(server.count('example.com', 'TXT'), 1);
    clock += 1_001;
    await cache('example.com', 'TXT');
    assert.equal(server.count('example.com', 'TXT'), 2, 'the record TTL (60 s), not defaultTtlS (120 s)');
    const capped = cachedResolver(upstream(), { ...opts, maxTtlS: 30, now: () => clock });
    await capped('example.com', 'TXT');
    clock += 30_001;
    await capped('example.com', 'TXT');
    assert.equal(server.count('example.com', 'TXT'), 4, 'TTL 60 capped by maxTtlS 30');

    const floor = cachedResolver(upstream(), { ...opts, minTtlS: 10, now: () => clock });
    await floor('short.example.com', 'A');
    clock += 9_000;
    await floor('short.example.com', 'A');
    assert.equal(server.count('short.example.com', 'A'), 1, 'TTL 0 raised to minTtlS');
    const noFloor = cachedResolver(upstream(), { ...opts, now: () => clock });
    await noFloor('short.example.com', 'A');
    await noFloor('short.example.com', 'A');
    assert.equal(server.count('short.example.com', 'A'), 3, 'TTL 0 with minTtlS 0: not cached');
  });

  it('caches NXDOMAIN and NODATA for negativeTtlS, and rethrows them each time', async () => {
    let clock = 0;
    const cache = cachedResolver(upstream(), { ...opts, now: () => clock });
    server.clearLog();
    for (let i = 0; i < 3; i++) {
      await assert.rejects(cache('nope.example.com', 'A'), error('ENOTFOUND', false));
      await assert.rejects(cache('mx1.example.com', 'MX'), error('ENODATA', false));
    }
    assert.equal(server.count('nope.example.com'), 1);
    assert.equal(server.count('mx1.example.com', 'MX'), 1);
    assert.equal(cache.stats.negativeHits, 4);
    clock += 30_001;
    await assert.rejects(cache('nope.example.com', 'A'), error('ENOTFOUND'));
    assert.equal(server.count('nope.example.com'), 2, 'negative entry expired');
  });

  it('never caches temporary failures', async () => {
    const cache = cachedResolver(upstream(), opts);
    server.clearLog();
    for (let i = 0; i < 3; i++) await assert.rejects(cache('servfail.example.com', 'A'), error('ESERVFAIL', true));
    assert.equal(server.count('servfail.example.com'), 3);
    await assert.rejects(cache('timeout.example.com', 'TXT'), error('ETIMEOUT', true));
    const once = server.count('timeout.example.com', 'TXT');
    await assert.rejects(cache('timeout.example.com', 'TXT'), error('ETIMEOUT', true));
    assert.ok(server.count('timeout.example.com', 'TXT') > once, 'asked upstream again');
    assert.equal(cache.stats.misses, 5);
    assert.equal(cache.size, 0);
  });

  it('coalesces concurrent identical queries into one upstream query', async () => {
    const cache = cachedResolver(upstream(), opts);
    server.clearLog();
    const answers = await Promise.all(Array.from({ length: 20 }, () => cache('slow.example.com', 'A')));
    assert.equal(server.count('slow.example.com'), 1);
    assert.deepEqual(cache.stats, { hits: 0, negativeHits: 0, misses: 1, inflightJoins: 19, evictions: 0 });
    for (const a of answers) assert.deepEqual(a, ['192.0.2.99']);
    assert.equal(new Set(answers).size, 20, 'each caller gets its own array');

    // Failures are shared too (and still not cached).
    const failures = await Promise.allSettled(Array.from({ length: 5 }, () => cache('timeout.example.com', 'A')));
    assert.ok(failures.every((f) => f.status === 'rejected' && error('ETIMEOUT')(f.reason)));
    assert.equal(cache.stats.misses, 2);
    assert.equal(cache.stats.inflightJoins, 23);
    // One lookup's packets: the first try and one retry inside the 400 ms deadline.
    assert.ok(server.count('timeout.example.com') <= 2, `${server.count('timeout.example.com')} queries`);
  });

  it('hands out copies: a caller sorting MX in place (mailauth does) does not change the cache', async () => {
    const cache = cachedResolver(upstream(), opts);
    const mx = (await cache('example.com', 'MX')) as Array<{ priority: number }>;
    mx.sort((a, b) => a.priority - b.priority);
    mx[0]!.priority = 99;
    assert.deepEqual(await cache('example.com', 'MX'), [
      { exchange: 'mx2.example.com', priority: 20 },
      { exchange: 'mx1.example.com', priority: 10 },
    ]);
    const txt = (await cache('example.com', 'TXT')) as string[][];
    txt[1]!.push('junk');
    assert.deepEqual(await cache('example.com', 'TXT'), [['v=spf1 mx a:relay.example.com -all'], ['chunk1', 'chunk2']]);
  });

  it('stays within maxEntries, dropping the least recently used', async () => {
    const cache = cachedResolver(upstream(), { ...opts, maxEntries: 2 });
    server.clearLog();
    await cache('mx1.example.com', 'A');
    await cache('mx2.example.com', 'A');
    await cache('mx1.example.com', 'A'); // mx1 is now the most recent
    await cache('relay.example.com', 'A'); // evicts mx2
    assert.equal(cache.size, 2);
    assert.equal(cache.stats.evictions, 1);
    await cache('mx1.example.com', 'A');
    await cache('mx2.example.com', 'A');
    assert.equal(server.count('mx1.example.com'), 1);
    assert.equal(server.count('mx2.example.com'), 2);
  });

  it('clear() forgets answers, including one in flight', async () => {
    const cache = cachedResolver(upstream(), opts);
    server.clearLog();
    const pending = cache('slow.example.com', 'A');
    cache.clear();
    await pending;
    await cache('slow.example.com', 'A');
    assert.equal(server.count('slow.example.com'), 2);
    assert.equal(cache.size, 1);
  });

  it('wraps any DnsResolver: no TTL reported means defaultTtlS; a synchronous throw is not stuck in flight', async () => {
    let clock = 0;
    let calls = 0;
    const plain = async (name: string): Promise<unknown> => {
      calls++;
      if (name === 'gone.test') throw Object.assign(new Error('gone'), { code: 'ENOTFOUND' });
      return [['hello']];
    };
    const cache = cachedResolver(plain, { ...opts, defaultTtlS: 10, now: () => clock });
    assert.deepEqual(await cache('x.test', 'TXT'), [['hello']]);
    clock += 9_999;
    await cache('x.test', 'TXT');
    assert.equal(calls, 1);
    clock += 2;
    await cache('x.test', 'TXT');
    assert.equal(calls, 2);
    await assert.rejects(cache('gone.test', 'A'), error('ENOTFOUND', false), 'plain errors with a code are normalised');

    let n = 0;
    const throwing = ((): never => {
      n++;
      throw Object.assign(new Error('boom'), { code: 'ECONNREFUSED' });
    }) as unknown as DnsResolver;
    const c2 = cachedResolver(throwing, opts);
    await assert.rejects(c2('a.test', 'A'), error('ECONNREFUSED', true));
    await assert.rejects(c2('a.test', 'A'), error('ECONNREFUSED', true));
    assert.equal(n, 2);
  });

  it('costs microseconds per hit (measured)', async (t) => {
    const cache = cachedResolver(upstream(), opts);
    await cache('example.com', 'TXT');
    await cache('example.com', 'A');
    const n = 50_000;
    let start = performance.now();
    for (let i = 0; i < n; i++) await cache('example.com', i % 2 ? 'TXT' : 'A');
    const hitUs = ((performance.now() - start) * 1000) / n;
    const direct = upstream();
    const m = 300;
    start = performance.now();
    for (let i = 0; i < m; i++) await direct('example.com', 'A');
    const upstreamUs = ((performance.now() - start) * 1000) / m;
    t.diagnostic(`cache hit ${hitUs.toFixed(2)} us/lookup, upstream (loopback) ${upstreamUs.toFixed(0)} us/lookup`);
    assert.ok(hitUs < 50, `cache hit ${hitUs} us`);
    assert.ok(hitUs * 5 < upstreamUs, 'a hit is much cheaper than a loopback query');
  });
});

describe('checkDnsbl end to end', () => {
  const ip = '192.0.2.99';
  const q = '99.2.0.192';
  let dnsbl: TestDnsServer;
  before(async () => {
    dnsbl = await startDnsServer({
      [`${q}.zen.test`]: { A: ['127.0.0.2', '127.0.0.10'], TXT: ['https://example.test/query/ip/192.0.2.99'] },
      [`${q}.bl.test`]: { A: ['127.0.0.2'] },
      [`${q}.wl.test`]: { A: ['127.0.10.2'] },
      [`${q}.public.test`]: { A: ['127.255.255.254'] },
      [`${q}.hijacked.test`]: { A: ['198.51.100.1'] },
      [`${q}.slow.test`]: { TIMEOUT: true },
      [`${q}.broken.test`]: { SERVFAIL: true },
      '2.0.0.127.zen.test': { A: ['127.0.0.2'] },
      'clean.test': { NS: ['ns.clean.test'] },
      [`1${'.0'.repeat(23)}.8.b.d.0.1.0.0.2.zen.test`]: { A: ['127.0.0.3'] },
    });
  });
  after(async () => {
    await dnsbl.stop();
  });

  it('scores several zones in parallel, reports the erroring ones, and caches what it may', async () => {
    const cache = cachedResolver(createResolver({ servers: [dnsbl.address], timeoutMs: 400, tries: 1 }), {
      maxEntries: 1000,
      minTtlS: 0,
      maxTtlS: 3600,
      negativeTtlS: 60,
    });
    const zones = parseZoneSpecs(
      'zen.test=127.0.0.[2..3]*3 zen.test=127.0.0.[10..11]*1 bl.test*2 wl.test=127.0.[0..255].[2..3]*-4 public.test*5 hijacked.test*5 slow.test*5 broken.test*5 clean.test*5',
    );
    const t = await elapsed(checkDnsbl(ip, zones, cache, { reasons: true }));
    const res = t.result!;
    // Waited for the one zone that times out (400 ms; libuv starts timers from its cached loop time, so a
    // busy host can see them fire a little early), and not for two timeouts in a row.
    assert.ok(t.ms >= 300 && t.ms < 790, `parallel: bounded by one timeout, took ${t.ms.toFixed(0)} ms`);
    assert.equal(res.score, 3 + 1 + 2 - 4);
    assert.deepEqual(
      res.listings.map((l) => [l.zone, l.codes, l.weight]),
      [
        ['zen.test', ['127.0.0.2'], 3],
        ['zen.test', ['127.0.0.10'], 1],
        ['bl.test', ['127.0.0.2'], 2],
        ['wl.test', ['127.0.10.2'], -4],
      ],
    );
    assert.equal(res.listings[0]!.reason, 'https://example.test/query/ip/192.0.2.99');
    assert.deepEqual(
      res.errors.map((e) => [e.zone, e.code]).sort(),
      [
        ['broken.test', 'ESERVFAIL'],
        ['hijacked.test', 'EBADANSWER'],
        ['public.test', 'ELISTERROR'],
        ['slow.test', 'ETIMEOUT'],
      ],
    );
    assert.equal(dnsbl.count(`${q}.zen.test`, 'A'), 1, 'zen.test asked once for two entries');

    // Again: everything but the failures comes from the cache.
    dnsbl.clearLog();
    const again = await checkDnsbl(ip, zones, cache, { reasons: true });
    assert.equal(again.score, res.score);
    assert.deepEqual([...new Set(dnsbl.queries.map((x) => x.name))].sort(), [`${q}.broken.test`, `${q}.slow.test`]);
  });

  it('answers the RFC 5782 test entries and IPv6 clients', async () => {
    const r = createResolver({ servers: [dnsbl.address], timeoutMs: 400 });
    const zones = parseZoneSpecs('zen.test*3');
    assert.equal((await checkDnsbl('127.0.0.2', zones, r)).score, 3);
    assert.equal((await checkDnsbl('::ffff:127.0.0.2', zones, r)).score, 3);
    assert.deepEqual(await checkDnsbl('127.0.0.1', zones, r), { score: 0, listings: [], errors: [] });
    const v6 = await checkDnsbl('2001:db8::1', zones, r);
    assert.deepEqual(v6.listings[0]!.codes, ['127.0.0.3']);
  });
});

describe('mailauth-shaped use', () => {
  it('works the way mailauth calls it: TXT rows joined, MX sorted in place, void lookups by code', async () => {
    // mailauth's option type is (name: string, rrtype: string) => Promise<any>.
    const resolver: (name: string, rrtype: string) => Promise<unknown> = forMailauth(
      cachedResolver(createResolver({ servers: [server.address], timeoutMs: 500 }), { maxEntries: 100, minTtlS: 0, maxTtlS: 3600, negativeTtlS: 60 }),
    );
    // The steps of mailauth's spf-verify.js for "v=spf1 mx a:relay.example.com -all".
    const rows = (await resolver('example.com', 'TXT')) as string[][];
    assert.ok(Array.isArray(rows) && rows.every((r) => Array.isArray(r) && r.every((c) => typeof c === 'string')));
    const record = rows.map((r) => r.join('')).find((r) => r.startsWith('v=spf1'));
    assert.equal(record, 'v=spf1 mx a:relay.example.com -all');
    const mx = ((await resolver('example.com', 'MX')) as Array<{ exchange: string; priority: number }>).sort((a, b) => a.priority - b.priority);
    const addresses: string[] = [];
    for (const m of mx) addresses.push(...((await resolver(m.exchange, 'A')) as string[]));
    assert.deepEqual(addresses, ['192.0.2.10', '192.0.2.20']);
    assert.deepEqual(await resolver('relay.example.com', 'A'), ['192.0.2.30']);
    // A void lookup is an error with code ENOTFOUND / ENODATA; anything else is temperror.
    const codes: string[] = [];
    for (const [name, type] of [
      ['nope.example.com', 'TXT'],
      ['mx1.example.com', 'AAAA'],
      ['servfail.example.com', 'TXT'],
    ] as const) {
      try {
        await resolver(name, type);
      } catch (err) {
        codes.push((err as { code: string }).code);
      }
    }
    assert.deepEqual(codes, ['ENOTFOUND', 'ENODATA', 'ESERVFAIL']);
    await assert.rejects(resolver('example.com', 'SOA'), error('ENOTIMP', false));
    assert.deepEqual(await resolver('example.com', 'txt'), [['v=spf1 mx a:relay.example.com -all'], ['chunk1', 'chunk2']]);
  });
});

describe('zonesFromRfc7208', () => {
  const suite = parseAllDocuments(readFileSync('/work/shared/conformance/rfc7208-tests.yml', 'utf8')).map(
    (d) => d.toJS() as { description: string; zonedata: Record<string, Array<string | Record<string, unknown>>> },
  );
  const scenario = (description: string) => {
    const s = suite.find((x) => x.description === description);
    assert.ok(s, description);
    return zonesFromRfc7208(s.zonedata);
  };

  it('follows the pyspf driver: SPF copied to TXT unless a TXT entry exists, TIMEOUT after records', () => {
    const z = scenario('Record lookup');
    assert.deepEqual(z['both.example.net'], { TXT: ['v=spf1 -all'], SPF: ['v=spf1 -all'] });
    assert.deepEqual(z['spfonly.example.net'], { SPF: ['v=spf1 -all'] }, 'TXT: NONE suppresses the copy');
    assert.deepEqual(z['spftimeout.example.net']!.TXT, ['v=spf1 -all']);
    assert.deepEqual(z['spftimeout.example.net']!.TIMEOUT, ['A', 'AAAA', 'MX', 'SPF', 'PTR', 'CNAME', 'NS']);
    assert.deepEqual(z['txttimeout.example.net']!.TIMEOUT, ['A', 'AAAA', 'MX', 'TXT', 'PTR', 'CNAME', 'NS']);
    assert.equal(z['alltimeout.example.net']!.TIMEOUT, true);
    const first = zonesFromRfc7208(suite[0]!.zonedata);
    assert.deepEqual(first['null.example.com']!.TXT, [['v=spf1 ip4:', '192.0.2.5 -all'], []]);
    assert.deepEqual(first['example.net']!.TXT, ['v=spf1 -all exp=exp.example.net']);
  });

  it('serves every scenario: each name answers every type without encoding problems', async () => {
    const r = createResolver({ servers: [server.address], timeoutMs: 300, tries: 1 });
    let names = 0;
    for (const s of suite) {
      const zones = zonesFromRfc7208(s.zonedata);
      server.setZones(zones);
      // One name at a time: a burst of ~2000 UDP queries overflows the server socket's receive buffer.
      for (const [name, entry] of Object.entries(zones)) {
        names++;
        await Promise.all(
          (['A', 'AAAA', 'MX', 'TXT', 'PTR', 'CNAME', 'NS'] as const)
            .filter((t) => !(entry.TIMEOUT === true || (Array.isArray(entry.TIMEOUT) && entry.TIMEOUT.includes(t))))
            .map((t) => r(name, t).catch((err: DnsError) => assert.ok(!err.temporary, `${t} ${name}: ${err.code}`))),
        );
      }
    }
    assert.deepEqual(server.problems, []);
    assert.ok(names > 150, `${names} names`);
    server.setZones(ZONES);
  });

  it('answers like the suite expects: bytes, empty strings, timeouts, CNAME loops, case', async () => {
    const r = createResolver({ servers: [server.address], timeoutMs: 300, tries: 1 });
    try {
      server.setZones(zonesFromRfc7208(suite[0]!.zonedata));
      assert.deepEqual(await r('null.example.com', 'TXT'), [['v=spf1 ip4:', '192.0.2.5 -all'], ['']]);
      // YAML "\xEF\xBB\xBF" are three octets on the wire; Node hands TXT back as Latin-1.
      assert.deepEqual(await r('hosed.example.com', 'TXT'), [['v=spf1 a:\xEF\xBB\xBFgarbage.example.net -all']]);
      await assert.rejects(r('example.com', 'TXT'), error('ETIMEOUT'));

      server.setZones(scenario('Record lookup'));
      await assert.rejects(r('spfonly.example.net', 'TXT'), error('ENODATA'));
      await assert.rejects(r('txttimeout.example.net', 'TXT'), error('ETIMEOUT'));
      assert.deepEqual(await r('spftimeout.example.net', 'TXT'), [['v=spf1 -all']]);

      const ptr = suite.find((s) => Object.keys(s.zonedata).includes('loop4.example.com'))!;
      server.setZones(zonesFromRfc7208(ptr.zonedata));
      await assert.rejects(r('loop4.example.com', 'A'), error('ENODATA'), 'a CNAME loop has no address');
      assert.deepEqual(await r('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.b.a.b.e.f.a.c.ip6.arpa', 'PTR'), ['e3.example.com']);
      assert.deepEqual(await r('e3.example.com', 'AAAA'), ['cafe:babe::1']);
    } finally {
      server.setZones(ZONES);
    }
  });
});
