import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkDnsbl, checkRhsbl, matchesFilter, parseZoneSpec, parseZoneSpecs, reverseIp, ZoneSpecError } from '../../../src/dns/dnsbl.ts';
import type { DnsResolver, DnsRrType } from '../../../src/dns/resolver.ts';

type Answer = readonly string[] | readonly string[][] | 'ETIMEOUT' | 'ESERVFAIL' | 'ENODATA' | 'EREFUSED';

/** A zone-object resolver that records its calls (mailauth's test/helpers/dns-zone.js pattern). */
function zoneResolver(zone: Record<string, Partial<Record<DnsRrType, Answer>>>): DnsResolver & { calls: string[] } {
  const calls: string[] = [];
  const fn = async (name: string, rrtype: DnsRrType): Promise<unknown> => {
    calls.push(`${rrtype} ${name}`);
    await Promise.resolve();
    const rec = zone[name.toLowerCase()];
    if (!rec) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    const a = rec[rrtype];
    if (a === undefined) throw Object.assign(new Error(`ENODATA ${name}`), { code: 'ENODATA' });
    if (typeof a === 'string') throw Object.assign(new Error(`${a} ${name}`), { code: a });
    return a;
  };
  return Object.assign(fn, { calls });
}

describe('reverseIp', () => {
  it('reverses IPv4 octets', () => {
    assert.equal(reverseIp('192.0.2.1'), '1.2.0.192');
    assert.equal(reverseIp('127.0.0.2'), '2.0.0.127');
    assert.equal(reverseIp(' 10.20.30.40 '), '40.30.20.10');
  });

  it('reverses IPv6 nibbles (RFC 5782 §2.4 example)', () => {
    assert.equal(reverseIp('2001:db8:1:2:3:4:567:89ab'), 'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2');
    assert.equal(reverseIp('2001:DB8::1'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2');
    assert.equal(reverseIp('::1'), `1${'.0'.repeat(31)}`);
    assert.equal(reverseIp('::'), `0${'.0'.repeat(31)}`);
    assert.equal(reverseIp('fe80::'), `${'0.'.repeat(28)}0.8.e.f`);
    assert.equal(reverseIp('[2001:db8::2]'), reverseIp('2001:db8::2'));
    // An IPv4 tail on a non-mapped prefix stays IPv6 (NAT64 64:ff9b::/96).
    assert.equal(reverseIp('64:ff9b::192.0.2.1'), '1.0.2.0.0.0.0.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.b.9.f.f.4.6.0.0');
  });

  it('turns IPv4-mapped IPv6 into IPv4, in both spellings', () => {
    assert.equal(reverseIp('::ffff:192.0.2.1'), '1.2.0.192');
    assert.equal(reverseIp('::FFFF:192.0.2.1'), '1.2.0.192');
    assert.equal(reverseIp('::ffff:c000:201'), '1.2.0.192');
    assert.equal(reverseIp('0:0:0:0:0:ffff:7f00:2'), '2.0.0.127');
    // ::192.0.2.1 (deprecated IPv4-compatible) is not mapped: it stays IPv6.
    assert.equal(reverseIp('::192.0.2.1').split('.').length, 32);
  });

  it('rejects what is not an address', () => {
    for (const bad of ['', 'unknown', '1.2.3', '1.2.3.256', '01.2.3.4', 'example.com', 'fe80::1%eth0', '2001:db8:::1', '1.2.3.4]', '[1.2.3.4']) {
      assert.throws(() => reverseIp(bad), TypeError, bad);
    }
  });
});

describe('parseZoneSpec', () => {
  it('accepts postscreen_dnsbl_sites forms', () => {
    assert.deepEqual(parseZoneSpec('zen.spamhaus.org'), { zone: 'zen.spamhaus.org', weight: 1, spec: 'zen.spamhaus.org' });
    assert.deepEqual(parseZoneSpec('Bl.SpamCop.Net.*2'), { zone: 'bl.spamcop.net', weight: 2, spec: 'Bl.SpamCop.Net.*2' });
    const z = parseZoneSpec('zen.spamhaus.org=127.0.0.[2..11]*3');
    assert.equal(z.zone, 'zen.spamhaus.org');
    assert.equal(z.weight, 3);
    assert.deepEqual(z.filter, [[[127, 127]], [[0, 0]], [[0, 0]], [[2, 11]]]);
    const wl = parseZoneSpec('list.dnswl.org=127.0.[0..255].[1;2;3]*-2');
    assert.equal(wl.weight, -2);
    assert.deepEqual(wl.filter?.[3], [[1, 1], [2, 2], [3, 3]]);
    assert.deepEqual(parseZoneSpec('x.test=127.0.0.[2;4..6;10]').filter?.[3], [[2, 2], [4, 6], [10, 10]]);
    assert.equal(parseZoneSpec('x.test*+4').weight, 4);
    assert.equal(parseZoneSpec('x.test*0').weight, 0);
    assert.equal(parseZoneSpec('abc123.zen.dq.spamhaus.net=127.0.0.4').weight, 1);
  });

  it('rejects malformed entries with a message naming the entry and the part', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /expected zone/],
      ['zen.spamhaus.org*', /expected zone/],
      ['zen.spamhaus.org*x', /expected zone/],
      ['zen.spamhaus.org*1.5', /expected zone/],
      ['zen.spamhaus.org=', /expected zone/],
      ['localhost', /not a DNS zone name/],
      ['-bad.example', /not a DNS zone name/],
      ['a..b.example', /not a DNS zone name/],
      ['zen.spamhaus.org=127.0.0', /must have 4 octets/],
      ['zen.spamhaus.org=127.0.0.256', /octet 4 "256".*0-255/],
      ['zen.spamhaus.org=127.0.0.[2..x]', /octet 4 "\[2..x\]": "x" is not a number/],
      ['zen.spamhaus.org=127.0.0.[11..2]', /range 11..2 is empty/],
      ['zen.spamhaus.org=127.0.0.[2', /expected \[n\]/],
      ['zen.spamhaus.org=127.0.0.[]', /expected \[n\]/],
      ['zen.spamhaus.org=127.0.0.[1...3]', /octet 4 "\[1...3\]"/],
      ['zen.spamhaus.org=127.0.0.2.', /must have 4 octets/],
      ['zen.spamhaus.org=127.0.0.2.1', /must have 4 octets/],
      ['zen.spamhaus.org=127.0.0.[1..2..3]', /not n or n..m/],
      ['zen.spamhaus.org=10.0.0.2', /can never match.*127\.0\.0\.0\/8/],
    ];
    for (const [text, re] of cases) {
      assert.throws(
        () => parseZoneSpec(text),
        (err: unknown) => err instanceof ZoneSpecError && re.test(err.message) && err.message.includes(`"${text.trim()}"`),
        text,
      );
    }
  });

  it('parses whitespace/comma separated lists', () => {
    const specs = parseZoneSpecs('zen.spamhaus.org*3,\n  bl.spamcop.net*2  list.dnswl.org=127.0.[0..255].[2..3]*-5');
    assert.deepEqual(
      specs.map((s) => [s.zone, s.weight]),
      [
        ['zen.spamhaus.org', 3],
        ['bl.spamcop.net', 2],
        ['list.dnswl.org', -5],
      ],
    );
    assert.equal(parseZoneSpecs(['a.test', 'b.test*2 c.test']).length, 3);
    assert.deepEqual(parseZoneSpecs('  '), []);
  });

  it('matches return codes against filters', () => {
    const z = parseZoneSpec('zen.test=127.0.[0;1].[2..4;10]');
    assert.ok(matchesFilter(z, '127.0.0.2'));
    assert.ok(matchesFilter(z, '127.0.1.10'));
    assert.ok(!matchesFilter(z, '127.0.0.5'));
    assert.ok(!matchesFilter(z, '127.0.2.2'));
    assert.ok(!matchesFilter(z, '128.0.0.2'));
    assert.ok(matchesFilter(parseZoneSpec('any.test'), '127.0.0.77'));
  });
});

describe('checkDnsbl', () => {
  const ip = '192.0.2.99';
  const q = '99.2.0.192';

  it('scores listings by weight, each entry once, one query per zone', async () => {
    const r = zoneResolver({
      [`${q}.zen.test`]: { A: ['127.0.0.2', '127.0.0.4', '127.0.0.10'], TXT: [['https://example.test/sbl']] },
      [`${q}.bl.test`]: { A: ['127.0.0.2'] },
    });
    const zones = parseZoneSpecs('zen.test=127.0.0.[2..3]*3 zen.test=127.0.0.[4..7]*2 zen.test=127.0.0.[10;11]*1 zen.test=127.0.0.9*50 bl.test other.test*4');
    const res = await checkDnsbl(ip, zones, r);
    assert.equal(res.score, 3 + 2 + 1 + 1);
    assert.deepEqual(res.errors, []);
    assert.deepEqual(
      res.listings.map((l) => [l.zone, l.codes, l.weight]),
      [
        ['zen.test', ['127.0.0.2'], 3],
        ['zen.test', ['127.0.0.4'], 2],
        ['zen.test', ['127.0.0.10'], 1],
        ['bl.test', ['127.0.0.2'], 1],
      ],
    );
    assert.equal(res.listings[0]!.spec, 'zen.test=127.0.0.[2..3]*3');
    assert.equal(res.listings[0]!.reason, undefined, 'no TXT unless asked');
    assert.deepEqual(r.calls.sort(), [`A ${q}.bl.test`, `A ${q}.other.test`, `A ${q}.zen.test`]);
  });

  it('counts an entry once however many codes match it', async () => {
    const r = zoneResolver({ [`${q}.zen.test`]: { A: ['127.0.0.2', '127.0.0.3'] } });
    const res = await checkDnsbl(ip, parseZoneSpecs('zen.test*3'), r);
    assert.equal(res.score, 3);
    assert.deepEqual(res.listings[0]!.codes, ['127.0.0.2', '127.0.0.3']);
  });

  it('lets allow lists (negative weights) offset block lists', async () => {
    const r = zoneResolver({
      [`${q}.bl.test`]: { A: ['127.0.0.2'] },
      [`${q}.wl.test`]: { A: ['127.0.10.3'] },
    });
    const res = await checkDnsbl(ip, parseZoneSpecs('bl.test*2 wl.test=127.0.[0..255].[2..3]*-5 wl.test=127.0.[0..255].0*-1'), r);
    assert.equal(res.score, -3);
    assert.deepEqual(
      res.listings.map((l) => l.weight),
      [2, -5],
    );
  });

  it('treats NXDOMAIN and NODATA as not listed, with no error', async () => {
    const r = zoneResolver({ [`${q}.nodata.test`]: { TXT: [['x']] } });
    const res = await checkDnsbl(ip, parseZoneSpecs('nx.test nodata.test'), r);
    assert.deepEqual(res, { score: 0, listings: [], errors: [] });
  });

  it('reports failures and refusal codes per zone, never as listed or clean', async () => {
    const r = zoneResolver({
      [`${q}.zen.test`]: { A: ['127.255.255.254'] },
      [`${q}.typo.test`]: { A: ['127.255.255.252'] },
      [`${q}.volume.test`]: { A: ['127.255.255.255', '127.0.0.2'] },
      [`${q}.wild.test`]: { A: ['198.51.100.7'] },
      [`${q}.slow.test`]: { A: 'ETIMEOUT' },
      [`${q}.broken.test`]: { A: 'ESERVFAIL' },
      [`${q}.good.test`]: { A: ['127.0.0.2'] },
      [`${q}.list.dnswl.org`]: { A: ['127.0.0.255'] },
    });
    const zones = parseZoneSpecs('zen.test*3 typo.test volume.test wild.test slow.test broken.test good.test*2 list.dnswl.org*-3');
    const res = await checkDnsbl(ip, zones, r);
    assert.equal(res.score, 2);
    assert.deepEqual(res.listings.map((l) => l.zone), ['good.test']);
    const byZone = Object.fromEntries(res.errors.map((e) => [e.zone, e]));
    assert.deepEqual(Object.keys(byZone).sort(), ['broken.test', 'list.dnswl.org', 'slow.test', 'typo.test', 'volume.test', 'wild.test', 'zen.test']);
    assert.equal(byZone['zen.test']!.code, 'ELISTERROR');
    assert.match(byZone['zen.test']!.message, /127\.255\.255\.254: query via a public\/open resolver/);
    assert.match(byZone['typo.test']!.message, /typing error/);
    assert.equal(byZone['volume.test']!.code, 'ELISTERROR', 'an error code spoils the whole answer');
    assert.deepEqual(byZone['volume.test']!.answers, ['127.255.255.255', '127.0.0.2']);
    assert.equal(byZone['wild.test']!.code, 'EBADANSWER');
    assert.match(byZone['wild.test']!.message, /outside 127\.0\.0\.0\/8 \(198\.51\.100\.7\)/);
    assert.equal(byZone['slow.test']!.code, 'ETIMEOUT');
    assert.equal(byZone['broken.test']!.code, 'ESERVFAIL');
    assert.equal(byZone['list.dnswl.org']!.code, 'ELISTERROR');
  });

  it('127.0.0.255 is an ordinary code outside dnswl.org', async () => {
    const r = zoneResolver({ [`${q}.other.test`]: { A: ['127.0.0.255'] } });
    assert.equal((await checkDnsbl(ip, parseZoneSpecs('other.test'), r)).score, 1);
  });

  it('fetches TXT reasons for listed zones only, and survives their failure', async () => {
    const r = zoneResolver({
      [`${q}.zen.test`]: { A: ['127.0.0.2'], TXT: [['Listed, see ', 'https://example.test/q/192.0.2.99'], ['second']] },
      [`${q}.notxt.test`]: { A: ['127.0.0.2'], TXT: 'ETIMEOUT' },
    });
    const res = await checkDnsbl(ip, parseZoneSpecs('zen.test zen.test=127.0.0.2*2 notxt.test clean.test'), r, { reasons: true });
    assert.equal(res.listings[0]!.reason, 'Listed, see https://example.test/q/192.0.2.99; second');
    assert.equal(res.listings[1]!.reason, res.listings[0]!.reason);
    assert.equal(res.listings[2]!.reason, undefined);
    assert.equal(res.errors.length, 0, 'a failed TXT fetch is not a zone error');
    assert.deepEqual(r.calls.filter((c) => c.startsWith('TXT')).sort(), [`TXT ${q}.notxt.test`, `TXT ${q}.zen.test`]);
  });

  it('queries the IPv4 name for IPv4-mapped clients and nibbles for IPv6', async () => {
    const r = zoneResolver({
      [`${q}.bl.test`]: { A: ['127.0.0.2'] },
      [`1${'.0'.repeat(23)}.8.b.d.0.1.0.0.2.bl.test`]: { A: ['127.0.0.3'] },
    });
    assert.equal((await checkDnsbl('::ffff:192.0.2.99', parseZoneSpecs('bl.test'), r)).score, 1);
    const v6 = await checkDnsbl('2001:db8::1', parseZoneSpecs('bl.test'), r);
    assert.deepEqual(v6.listings[0]!.codes, ['127.0.0.3']);
    await assert.rejects(checkDnsbl('unknown', parseZoneSpecs('bl.test'), r), TypeError);
  });
});

describe('checkRhsbl', () => {
  it('queries <domain>.<zone>, normalising case, trailing dot and IDN', async () => {
    const r = zoneResolver({
      'spam.example.dbl.test': { A: ['127.0.1.2'] },
      'xn--bcher-kva.example.dbl.test': { A: ['127.0.1.5'] },
    });
    const zones = parseZoneSpecs('dbl.test=127.0.1.[2..99]*4');
    assert.equal((await checkRhsbl('Spam.Example.', zones, r)).score, 4);
    assert.equal((await checkRhsbl('bücher.example', zones, r)).score, 4);
    assert.deepEqual(await checkRhsbl('clean.example', zones, r), { score: 0, listings: [], errors: [] });
    assert.ok(r.calls.includes('A xn--bcher-kva.example.dbl.test'));
  });

  it('rejects non-domains and reports names too long to query', async () => {
    const r = zoneResolver({});
    const zones = parseZoneSpecs('dbl.test');
    for (const bad of ['', '.', 'a..b', 'has space.example', '<>']) {
      await assert.rejects(checkRhsbl(bad, zones, r), TypeError, bad);
    }
    const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.example`;
    const res = await checkRhsbl(long, zones, r);
    assert.deepEqual(res.errors.map((e) => e.code), ['EBADNAME']);
    const label = await checkRhsbl(`${'x'.repeat(64)}.example`, zones, r);
    assert.deepEqual(label.errors.map((e) => e.code), ['EBADNAME']);
    assert.deepEqual(r.calls, []);
  });
});
