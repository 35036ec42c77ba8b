// SPF and FCrDNS over the real DNS path: a test DNS server on loopback,
// createResolver (c-ares) and the shared cache in front of it, as the
// policy service wires them.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { checkFcrdns, ptrQueryName } from '../../src/checks/fcrdns.ts';
import { evaluateHeloSpf, evaluateSpf, spfDeferText, spfRejectText, type SpfInput, type SpfVerdict } from '../../src/checks/spf.ts';
import { cachedResolver, type CachedDnsResolver } from '../../src/dns/cache.ts';
import { createResolver } from '../../src/dns/resolver.ts';
import { startDnsServer, type TestDnsServer, type Zones } from '../support/dns-server.ts';

const RECEIVER = 'mx.test.example';
const ptr = (ip: string): string => ptrQueryName(ip)!;

/** include chain l0 -> l1 -> ... -> l11: twelve DNS-querying terms. */
const LONG_CHAIN: Zones = Object.fromEntries(
  Array.from({ length: 12 }, (_, i) => [`l${i}.chain.example`, { TXT: [i < 11 ? `v=spf1 include:l${i + 1}.chain.example` : 'v=spf1 ip4:192.0.2.0/24'] }]),
);

const ZONES: Zones = {
  ...LONG_CHAIN,
  'pass.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all', 'some other TXT record'] },
  'fail.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all exp=exp.fail.example'] },
  'exp.fail.example': { TXT: ["%{i} is not one of %{d}'s designated mail servers."] },
  'badexp.example': { TXT: ['v=spf1 -all exp=exp.badexp.example'] },
  'exp.badexp.example': { TXT: ['Go away\x07 %{i} \x7f' + ' spam'.repeat(80)] },
  'softfail.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 ~all'] },
  'neutral.example': { TXT: ['v=spf1 ?all'] },
  'nospf.example': { A: ['192.0.2.1'], TXT: ['google-site-verification=abc'] },
  'syntax.example': { TXT: ['v=spf1 ip4:192.0.2.300 -all'] },
  // A syntax error after the matching term: RFC 7208 §4.6 still makes the whole record a permerror.
  'latesyntax.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 foo:bar -all'] },
  'twice.example': { TXT: ['v=spf1 -all', 'v=spf1 +all'] },
  'toomany.example': { TXT: ['v=spf1 include:l0.chain.example -all'] },
  // v1..v3.void.example are not in the data: NXDOMAIN, void lookups.
  'void.example': { TXT: ['v=spf1 a:v1.void.example a:v2.void.example a:v3.void.example -all'] },
  'twovoid.example': { TXT: ['v=spf1 a:v1.void.example a:v2.void.example -all'] },
  // include chains and redirect
  'inc.example': { TXT: ['v=spf1 include:_a.inc.example -all'] },
  '_a.inc.example': { TXT: ['v=spf1 include:_b.inc.example ~all'] },
  '_b.inc.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all'] },
  'redirect.example': { TXT: ['v=spf1 redirect=_spf.redirect.example'] },
  '_spf.redirect.example': { TXT: ['v=spf1 a:mail.redirect.example mx -all'] },
  'mail.redirect.example': { A: ['198.51.100.10'], AAAA: ['2001:db8:10::1'] },
  'redirect2.example': { TXT: ['v=spf1 redirect=_spf.redirect.example'], MX: [[10, 'mx.redirect.example']] },
  'mx.redirect.example': { A: ['198.51.100.20'] },
  // temporary failures, directly and behind include / redirect / mx / exists
  'timeout.example': { TIMEOUT: true },
  'servfail.example': { SERVFAIL: true },
  'inctimeout.example': { TXT: ['v=spf1 include:timeout.example -all'] },
  'incservfail.example': { TXT: ['v=spf1 include:servfail.example ?all'] },
  'redirservfail.example': { TXT: ['v=spf1 redirect=servfail.example'] },
  'mxservfail.example': { TXT: ['v=spf1 mx -all'], MX: [[10, 'mx.mxservfail.example']] },
  'mx.mxservfail.example': { SERVFAIL: ['A'] },
  'existstimeout.example': { TXT: ['v=spf1 exists:timeout.example -all'] },
  'refused.example': { REFUSED: true },
  // HELO identity
  'mail.helo.example': { TXT: ['v=spf1 a -all'], A: ['192.0.2.1'] },
  // FCrDNS
  [ptr('192.0.2.1')]: { PTR: ['mail.pass.example'] },
  'mail.pass.example': { A: ['192.0.2.1'], AAAA: ['2001:db8::25'] },
  [ptr('192.0.2.2')]: { PTR: ['liar.example', 'gone.example'] },
  'liar.example': { A: ['192.0.2.99'] },
  [ptr('192.0.2.4')]: { TIMEOUT: ['PTR'] },
  [ptr('192.0.2.5')]: { PTR: ['wrong.example', 'broken.example'] },
  'wrong.example': { A: ['192.0.2.98'] },
  'broken.example': { SERVFAIL: true },
  [ptr('192.0.2.6')]: { PTR: ['broken.example', 'six.example'] },
  'six.example': { A: ['192.0.2.7', '192.0.2.6'] },
  [ptr('2001:db8::25')]: { PTR: ['mail.pass.example.'] },
  [ptr('2001:db8::26')]: { PTR: ['v6only.example'] },
  'v6only.example': { A: ['192.0.2.26'] },
};

let server: TestDnsServer;
let resolver: CachedDnsResolver;

before(async () => {
  server = await startDnsServer(ZONES);
});
after(async () => {
  await server.stop();
});
beforeEach(() => {
  // A short deadline: TIMEOUT names never answer.
  resolver = cachedResolver(createResolver({ servers: [server.address], timeoutMs: 300 }), {
    maxEntries: 1000,
    minTtlS: 0,
    maxTtlS: 3600,
    negativeTtlS: 60,
  });
});

const input = (sender: string, clientIp = '192.0.2.1', helo = 'client.example.org'): SpfInput => ({ sender, clientIp, helo, receiver: RECEIVER });
const spf = (sender: string, clientIp?: string, helo?: string): Promise<SpfVerdict> => evaluateSpf(input(sender, clientIp, helo), resolver);

describe('evaluateSpf over DNS', () => {
  it('pass, with a Received-SPF line per RFC 7208 §9.1', async () => {
    const v = await spf('alice@pass.example');
    assert.equal(v.result, 'pass');
    assert.equal(v.identity, 'mailfrom');
    assert.equal(v.domain, 'pass.example');
    assert.equal(v.clientIp, '192.0.2.1');
    assert.equal(v.lookups, 0);
    assert.equal(v.voidLookups, 0);
    assert.equal(v.explanation, undefined);
    assert.match(v.comment, /^domain of alice@pass\.example designates 192\.0\.2\.1 as permitted sender$/);
    assert.equal(
      v.receivedSpf,
      'Received-SPF: pass (mx.test.example: domain of alice@pass.example designates 192.0.2.1 as permitted sender) ' +
        'receiver=mx.test.example; client-ip=192.0.2.1; envelope-from="alice@pass.example"; helo=client.example.org; identity=mailfrom;',
    );
    assert.ok(v.elapsedMs >= 0 && v.elapsedMs < 5000);
  });

  it('fail with the exp= explanation, expanded; the reject text carries it', async () => {
    const v = await spf('bob@fail.example', '198.51.100.7');
    assert.equal(v.result, 'fail');
    assert.equal(v.explanation, "198.51.100.7 is not one of fail.example's designated mail servers.");
    assert.equal(
      spfRejectText(v),
      "550 5.7.23 SPF fail: fail.example does not designate 198.51.100.7 as permitted sender; fail.example explains: 198.51.100.7 is not one of fail.example's designated mail servers.",
    );
  });

  it('an explanation with control or non-ASCII characters is not used (mailauth drops it)', async () => {
    const v = await spf('bob@badexp.example', '198.51.100.7');
    assert.equal(v.result, 'fail');
    assert.equal(v.explanation, undefined);
    assert.equal(spfRejectText(v), '550 5.7.23 SPF fail: badexp.example does not designate 198.51.100.7 as permitted sender');
  });

  it('softfail, neutral, none (no SPF record, no domain)', async () => {
    assert.equal((await spf('x@softfail.example', '198.51.100.7')).result, 'softfail');
    assert.equal((await spf('x@neutral.example')).result, 'neutral');
    const none = await spf('x@nospf.example');
    assert.equal(none.result, 'none');
    assert.equal((await spf('x@nonexistent.example')).result, 'none');
    assert.match(none.receivedSpf, /^Received-SPF: none \(/);
  });

  it('permerror: syntax errors (also after the matching term) and two records', async () => {
    for (const domain of ['syntax.example', 'latesyntax.example', 'twice.example']) {
      const v = await spf(`x@${domain}`);
      assert.equal(v.result, 'permerror', domain);
      assert.ok(v.problem, domain);
      assert.match(v.receivedSpf, / problem="(?:[^"\\]|\\.)+"; identity=mailfrom;$/);
      assert.match(spfRejectText(v), new RegExp(`^550 5\\.7\\.24 SPF permanent error: ${domain.replace('.', '\\.')}: `));
    }
  });

  it('permerror: more than 10 DNS-querying terms; lookups counts up to limit + 1', async () => {
    const v = await spf('x@toomany.example', '198.51.100.7');
    assert.equal(v.result, 'permerror');
    assert.equal(v.problem, 'Too many DNS requests');
    assert.equal(v.lookups, 11);
    // The same chain is fine with a higher limit.
    const ok = await evaluateSpf(input('x@toomany.example'), resolver, { maxLookups: 12 });
    assert.equal(ok.result, 'pass');
    assert.equal(ok.lookups, 12);
  });

  it('permerror: more than 2 void lookups; 2 are allowed', async () => {
    const v = await spf('x@void.example', '198.51.100.7');
    assert.equal(v.result, 'permerror');
    assert.equal(v.problem, 'Too many void DNS results');
    assert.equal(v.voidLookups, 3);
    const two = await spf('x@twovoid.example', '198.51.100.7');
    assert.equal(two.result, 'fail');
    assert.equal(two.voidLookups, 2);
    assert.equal(two.lookups, 2);
  });

  it('include chains and redirect, with their lookup counts', async () => {
    const inc = await spf('x@inc.example');
    assert.equal(inc.result, 'pass');
    assert.equal(inc.lookups, 2);
    // Inside the chain _b fails and _a softfails: neither include matches, so the top -all applies.
    assert.equal((await spf('x@inc.example', '198.51.100.7')).result, 'fail');

    const red = await spf('x@redirect.example', '198.51.100.10');
    assert.equal(red.result, 'pass');
    assert.equal(red.domain, 'redirect.example');
    assert.ok(red.lookups >= 2, `${red.lookups}`);
    assert.equal((await spf('x@redirect.example', '198.51.100.11')).result, 'fail');
    // "mx" after a redirect means the MX of the redirect target, not of the original domain.
    assert.equal((await spf('x@redirect2.example', '198.51.100.20')).result, 'fail');
  });

  it('IPv6 clients: ip6, include and a mechanisms; IPv4-mapped clients are IPv4', async () => {
    const v6 = await spf('x@pass.example', '2001:db8::25');
    assert.equal(v6.result, 'pass');
    assert.match(v6.receivedSpf, / client-ip="2001:db8::25";/);
    assert.equal((await spf('x@inc.example', '2001:DB8:0::25')).result, 'pass');
    assert.equal((await spf('x@redirect.example', '2001:db8:10::1')).result, 'pass');
    assert.equal((await spf('x@pass.example', '2001:db9::1')).result, 'fail');
    const mapped = await spf('x@pass.example', '::ffff:192.0.2.9');
    assert.equal(mapped.result, 'pass');
    assert.equal(mapped.clientIp, '192.0.2.9');
    assert.match(mapped.receivedSpf, / client-ip=192\.0\.2\.9;/);
  });

  it('temperror on TIMEOUT, SERVFAIL and REFUSED, never fail or none, also behind include/redirect/mx/exists', async () => {
    const cases = ['timeout.example', 'servfail.example', 'refused.example', 'inctimeout.example', 'incservfail.example', 'redirservfail.example', 'mxservfail.example', 'existstimeout.example'];
    const verdicts = await Promise.all(cases.map((d) => spf(`x@${d}`, '198.51.100.7')));
    for (const [i, v] of verdicts.entries()) {
      assert.equal(v.result, 'temperror', `${cases[i]}: ${v.result} (${v.comment})`);
      assert.ok(v.problem, cases[i]);
      assert.ok(v.elapsedMs < 2000, `${cases[i]} took ${v.elapsedMs} ms`);
      assert.match(spfRejectText(v), /^451 4\.7\.24 /, 'a temperror never gets a 5xx');
      assert.match(spfDeferText(v), new RegExp(`^451 4\\.7\\.24 SPF temporary error: ${cases[i]!.replace('.', '\\.')}: `));
    }
    assert.equal(verdicts[0]!.problem, 'DNS timeout');
  });

  it('temporary failures are not cached: the next evaluation asks again', async () => {
    await spf('x@servfail.example');
    const before = server.count('servfail.example', 'TXT');
    assert.equal((await spf('x@servfail.example')).result, 'temperror');
    // (Asked again at once: the stub client tries a SERVFAIL twice per server.)
    assert.ok(server.count('servfail.example', 'TXT') > before, 'asked upstream again');
  });

  it('a second identical evaluation is served from the cache: no new upstream queries', async () => {
    const first = await spf('x@redirect2.example', '198.51.100.20');
    const queries = server.queries.length;
    const hits = resolver.stats.hits;
    const second = await spf('x@redirect2.example', '198.51.100.20');
    assert.equal(server.queries.length, queries, 'no new query reached the DNS server');
    assert.ok(resolver.stats.hits > hits);
    assert.equal(second.result, first.result);
    assert.equal(second.receivedSpf, first.receivedSpf);
  });

  it('null sender: the HELO identity, postmaster@<helo>', async () => {
    const v = await spf('', '192.0.2.1', 'mail.helo.example');
    assert.equal(v.result, 'pass');
    assert.equal(v.identity, 'helo');
    assert.equal(v.domain, 'mail.helo.example');
    assert.match(v.comment, /postmaster@mail\.helo\.example/);
    assert.doesNotMatch(v.receivedSpf, /envelope-from=/);
    assert.match(v.receivedSpf, / helo=mail\.helo\.example; identity=helo;$/);
    assert.equal((await spf('', '192.0.2.2', 'mail.helo.example')).result, 'fail');
  });

  it('evaluateHeloSpf checks the HELO name whatever the sender; literals and non-FQDNs are none without DNS', async () => {
    const v = await evaluateHeloSpf(input('alice@pass.example', '192.0.2.2', 'mail.helo.example'), resolver);
    assert.equal(v.result, 'fail');
    assert.equal(v.identity, 'helo');
    assert.match(v.receivedSpf, /envelope-from="alice@pass\.example"; helo=mail\.helo\.example; identity=helo;$/);
    server.clearLog();
    for (const helo of ['[192.0.2.1]', '192.0.2.1', 'localhost', '']) {
      const n = await evaluateHeloSpf(input('alice@pass.example', '192.0.2.1', helo), resolver);
      assert.equal(n.result, 'none', helo);
      assert.equal(n.identity, 'helo');
    }
    assert.equal(server.queries.length, 0);
  });
});

describe('checkFcrdns over DNS', () => {
  it('pass without any DNS query when Postfix gave a verified client_name', async () => {
    server.clearLog();
    const v = await checkFcrdns({ clientIp: '192.0.2.77', clientName: 'Mail.Example.COM.', reverseClientName: 'mail.example.com' }, resolver);
    assert.deepEqual(v, { result: 'pass', ptrNames: ['mail.example.com'], confirmedName: 'mail.example.com', detail: 'verified by Postfix: mail.example.com' });
    assert.equal(server.queries.length, 0);
  });

  it('pass: PTR name resolves back (IPv4), asked when client_name is unknown', async () => {
    server.clearLog();
    const v = await checkFcrdns({ clientIp: '192.0.2.1', clientName: 'unknown', reverseClientName: 'unknown' }, resolver);
    assert.equal(v.result, 'pass');
    assert.equal(v.confirmedName, 'mail.pass.example');
    assert.equal(server.count(ptr('192.0.2.1'), 'PTR'), 1);
    assert.equal(server.count('mail.pass.example', 'A'), 1);
    assert.equal(server.count('mail.pass.example', 'AAAA'), 0, 'only the client address family is asked');
  });

  it('pass: one of several PTR names confirms even when another fails temporarily', async () => {
    const v = await checkFcrdns({ clientIp: '192.0.2.6' }, resolver);
    assert.equal(v.result, 'pass');
    assert.equal(v.confirmedName, 'six.example');
    assert.deepEqual(v.ptrNames, ['broken.example', 'six.example']);
  });

  it('pass: IPv6 nibble PTR, and IPv4-mapped IPv6 asks in-addr.arpa', async () => {
    const v6 = await checkFcrdns({ clientIp: '2001:DB8:0:0::25' }, resolver);
    assert.equal(v6.result, 'pass');
    assert.equal(v6.confirmedName, 'mail.pass.example');
    assert.equal(server.count('mail.pass.example', 'AAAA'), 1);
    const mapped = await checkFcrdns({ clientIp: '::ffff:192.0.2.1' }, resolver);
    assert.equal(mapped.result, 'pass');
  });

  it('fail: PTR names that do not resolve back (wrong address, NXDOMAIN, other family only)', async () => {
    const v = await checkFcrdns({ clientIp: '192.0.2.2', clientName: 'unknown' }, resolver);
    assert.equal(v.result, 'fail');
    assert.deepEqual(v.ptrNames, ['liar.example', 'gone.example']);
    assert.equal(v.confirmedName, undefined);
    assert.equal((await checkFcrdns({ clientIp: '2001:db8::26' }, resolver)).result, 'fail');
  });

  it('none: no PTR record', async () => {
    const v = await checkFcrdns({ clientIp: '192.0.2.3', clientName: 'unknown' }, resolver);
    assert.equal(v.result, 'none');
    assert.deepEqual(v.ptrNames, []);
    assert.equal((await checkFcrdns({ clientIp: '2001:db8::99' }, resolver)).result, 'none');
  });

  it('temperror: the PTR lookup times out, or no name confirms and one could not be resolved', async () => {
    const t = await checkFcrdns({ clientIp: '192.0.2.4', clientName: 'unknown' }, resolver);
    assert.equal(t.result, 'temperror');
    assert.match(t.detail, /ETIMEOUT/);
    const s = await checkFcrdns({ clientIp: '192.0.2.5', clientName: 'unknown' }, resolver);
    assert.equal(s.result, 'temperror');
    assert.match(s.detail, /broken\.example: ESERVFAIL/);
  });
});
