import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalIp, checkFcrdns, MAX_PTR_NAMES, ptrQueryName } from '../../../src/checks/fcrdns.ts';
import type { DnsResolver, DnsRrType } from '../../../src/dns/resolver.ts';

type Answer = readonly string[] | 'ETIMEOUT' | 'ESERVFAIL' | 'ENODATA' | 'EBADNAME';

/** A zone-object resolver that records its calls. */
function zoneResolver(zone: Record<string, Partial<Record<DnsRrType, Answer>>>): DnsResolver & { calls: string[] } {
  const calls: string[] = [];
  const fn = async (name: string, rrtype: DnsRrType): Promise<unknown> => {
    calls.push(`${rrtype} ${name}`);
    const rec = zone[name.toLowerCase()];
    if (!rec) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    const a = rec[rrtype];
    if (a === undefined) throw Object.assign(new Error(`ENODATA ${name}`), { code: 'ENODATA' });
    if (typeof a === 'string') throw Object.assign(new Error(`${a} ${name}`), { code: a });
    return [...a];
  };
  return Object.assign(fn, { calls });
}

describe('canonicalIp / ptrQueryName', () => {
  it('canonical forms; IPv4-mapped IPv6 becomes IPv4', () => {
    assert.equal(canonicalIp('192.0.2.1'), '192.0.2.1');
    assert.equal(canonicalIp(' 192.0.2.1 '), '192.0.2.1');
    assert.equal(canonicalIp('2001:DB8:0:0:0::1'), '2001:db8::1');
    assert.equal(canonicalIp('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(canonicalIp('::FFFF:C000:0201'), '192.0.2.1');
    assert.equal(canonicalIp('::1'), '::1');
    for (const bad of ['', 'unknown', '192.0.2.256', '01.2.3.4', 'fe80::1%eth0', '[192.0.2.1]']) assert.equal(canonicalIp(bad), undefined, bad);
  });

  it('reverse names for IPv4 and IPv6 (nibbles)', () => {
    assert.equal(ptrQueryName('192.0.2.1'), '1.2.0.192.in-addr.arpa');
    assert.equal(ptrQueryName('::ffff:192.0.2.1'), '1.2.0.192.in-addr.arpa');
    assert.equal(ptrQueryName('2001:db8::25'), '5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
    assert.equal(ptrQueryName('nope'), undefined);
  });
});

describe('checkFcrdns', () => {
  const PTR1 = '1.2.0.192.in-addr.arpa';

  it('a verified Postfix client_name is a pass without DNS', async () => {
    const r = zoneResolver({});
    const v = await checkFcrdns({ clientIp: '192.0.2.1', clientName: 'mail.example.org' }, r);
    assert.equal(v.result, 'pass');
    assert.equal(v.confirmedName, 'mail.example.org');
    assert.deepEqual(r.calls, []);
  });

  it("client_name 'unknown' (any case) or empty means: look it up", async () => {
    for (const clientName of ['unknown', 'UNKNOWN', '', undefined]) {
      const r = zoneResolver({ [PTR1]: { PTR: ['mail.example.org'] }, 'mail.example.org': { A: ['192.0.2.1'] } });
      const v = await checkFcrdns({ clientIp: '192.0.2.1', ...(clientName !== undefined ? { clientName } : {}) }, r);
      assert.equal(v.result, 'pass', String(clientName));
      assert.deepEqual(r.calls, [`PTR ${PTR1}`, 'A mail.example.org']);
    }
  });

  it('PTR names are normalised, de-duplicated and capped at MAX_PTR_NAMES', async () => {
    const names = Array.from({ length: 15 }, (_, i) => `h${i}.example.org.`);
    const r = zoneResolver({ [PTR1]: { PTR: ['H0.Example.ORG.', ...names] } });
    const v = await checkFcrdns({ clientIp: '192.0.2.1' }, r);
    assert.equal(v.result, 'fail');
    assert.equal(v.ptrNames.length, MAX_PTR_NAMES);
    assert.equal(v.ptrNames[0], 'h0.example.org');
    assert.equal(r.calls.length, 1 + MAX_PTR_NAMES);
  });

  it('a PTR name the resolver refuses (EBADNAME) does not confirm, and is not a temporary failure', async () => {
    const r = zoneResolver({ [PTR1]: { PTR: ['bad name.example'] }, 'bad name.example': { A: 'EBADNAME' } });
    assert.equal((await checkFcrdns({ clientIp: '192.0.2.1' }, r)).result, 'fail');
  });

  it('SERVFAIL on the PTR lookup is a temperror; NODATA is none', async () => {
    assert.equal((await checkFcrdns({ clientIp: '192.0.2.1' }, zoneResolver({ [PTR1]: { PTR: 'ESERVFAIL' } }))).result, 'temperror');
    assert.equal((await checkFcrdns({ clientIp: '192.0.2.1' }, zoneResolver({ [PTR1]: { TXT: ['x'] } }))).result, 'none');
  });

  it('never throws: odd input and odd resolvers', async () => {
    assert.equal((await checkFcrdns({ clientIp: 'not-an-ip' }, zoneResolver({}))).result, 'none');
    const throwing: DnsResolver = () => {
      throw new TypeError('boom');
    };
    assert.equal((await checkFcrdns({ clientIp: '192.0.2.1' }, throwing)).result, 'temperror');
    const garbage: DnsResolver = async () => 'not a list';
    assert.equal((await checkFcrdns({ clientIp: '192.0.2.1' }, garbage)).result, 'temperror');
  });
});
