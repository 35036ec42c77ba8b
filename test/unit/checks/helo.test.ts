import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkHelo, hostnameProblem, type HeloInput, type HeloVerdict } from '../../../src/checks/helo.ts';

const OUR_NAMES = ['mx.example.net', 'Example.NET.'] as const;
const OUR_ADDRESSES = ['198.51.100.25', '2001:db8:25::1'] as const;

type Row = [helo: string, clientIp: string, expected: HeloVerdict['result'], opts?: Partial<HeloInput>];

const TABLE: Row[] = [
  // missing
  ['', '192.0.2.1', 'missing'],
  ['   ', '192.0.2.1', 'missing'],
  // valid names
  ['mail.example.org', '192.0.2.1', 'pass'],
  ['MAIL.Example.ORG', '192.0.2.1', 'pass'],
  ['mail.example.org.', '192.0.2.1', 'pass'], // one trailing dot is ignored, as in Postfix
  ['a-b.c_d.example', '192.0.2.1', 'pass'], // '_' accepted, as Postfix's valid_hostname does
  ['xn--bcher-kva.example', '192.0.2.1', 'pass'],
  ['1mail.2example.org', '192.0.2.1', 'pass'],
  [`${'a'.repeat(63)}.example`, '192.0.2.1', 'pass'],
  // address literals
  ['[192.0.2.1]', '192.0.2.1', 'pass'],
  ['[192.0.2.1]', '::ffff:192.0.2.1', 'pass'],
  ['[IPv6:2001:db8::1]', '2001:db8::1', 'pass'],
  ['[ipv6:2001:DB8:0:0::1]', '2001:db8::1', 'pass'],
  ['[192.0.2.9]', '192.0.2.1', 'literal_mismatch'],
  ['[IPv6:2001:db8::2]', '2001:db8::1', 'literal_mismatch'],
  ['[192.0.2.1]', '2001:db8::1', 'literal_mismatch'],
  ['[192.0.2.9]', '192.0.2.1', 'literal_mismatch', { trusted: true }],
  ['[2001:db8::1]', '2001:db8::1', 'invalid'], // IPv6 literals need the IPv6: tag
  ['[IPv6:192.0.2.1]', '192.0.2.1', 'invalid'],
  ['[192.0.2.256]', '192.0.2.1', 'invalid'],
  ['[mail.example.org]', '192.0.2.1', 'invalid'],
  ['[]', '192.0.2.1', 'invalid'],
  ['[IPv6:fe80::1%eth0]', 'fe80::1', 'invalid'],
  // bare IPs and numeric names
  ['192.0.2.1', '192.0.2.1', 'invalid'],
  ['2001:db8::1', '2001:db8::1', 'invalid'],
  ['192.0.2', '192.0.2.1', 'invalid'],
  ['12345', '192.0.2.1', 'invalid'],
  // syntax
  ['mail..example.org', '192.0.2.1', 'invalid'],
  ['.example.org', '192.0.2.1', 'invalid'],
  ['mail.example.org..', '192.0.2.1', 'invalid'],
  ['-mail.example.org', '192.0.2.1', 'invalid'],
  ['mail-.example.org', '192.0.2.1', 'invalid'],
  ['mail example.org', '192.0.2.1', 'invalid'],
  ['mail.exa$mple.org', '192.0.2.1', 'invalid'],
  ['müller.example', '192.0.2.1', 'invalid'],
  ['mail.example.org\r\nX', '192.0.2.1', 'invalid'],
  [`${'a'.repeat(64)}.example`, '192.0.2.1', 'invalid'],
  [`${'abcdefghi.'.repeat(26)}example`, '192.0.2.1', 'invalid'], // 267 characters
  ['[192.0.2.1', '192.0.2.1', 'invalid'],
  // not fully qualified
  ['localhost', '127.0.0.1', 'not_fqdn'],
  ['OEMCOMPUTER', '192.0.2.1', 'not_fqdn'],
  ['OEMCOMPUTER.', '192.0.2.1', 'not_fqdn'],
  ['mail_server', '192.0.2.1', 'not_fqdn'],
  // our own names and addresses
  ['mx.example.net', '192.0.2.1', 'forged'],
  ['MX.EXAMPLE.NET.', '192.0.2.1', 'forged'],
  ['example.net', '192.0.2.1', 'forged'],
  ['other.example.net', '192.0.2.1', 'pass'],
  ['mx.example.net', '192.0.2.1', 'pass', { trusted: true }],
  ['[198.51.100.25]', '192.0.2.1', 'forged'],
  ['[IPv6:2001:db8:25:0::1]', '2001:db8::1', 'forged'],
  ['[198.51.100.25]', '192.0.2.1', 'literal_mismatch', { trusted: true }],
  ['[198.51.100.25]', '198.51.100.25', 'pass'], // we talking to ourselves: the literal is true
];

describe('checkHelo', () => {
  for (const [helo, clientIp, expected, opts] of TABLE) {
    it(`${JSON.stringify(helo)} from ${clientIp}${opts?.trusted ? ' (trusted)' : ''} -> ${expected}`, () => {
      const v = checkHelo({ helo, clientIp, ourNames: OUR_NAMES, ourAddresses: OUR_ADDRESSES, ...opts });
      assert.equal(v.result, expected, v.detail);
      assert.ok(v.detail.length > 0 && v.detail.length < 200, v.detail);
    });
  }

  it('without ourAddresses a literal is only compared with the client', () => {
    assert.equal(checkHelo({ helo: '[198.51.100.25]', clientIp: '192.0.2.1', ourNames: [] }).result, 'literal_mismatch');
  });

  it('details name the problem and never echo more than 100 characters of the HELO', () => {
    assert.match(checkHelo({ helo: 'mail-.example.org', clientIp: '192.0.2.1', ourNames: [] }).detail, /starts or ends with "-"/);
    assert.match(checkHelo({ helo: '[192.0.2.9]', clientIp: '192.0.2.1', ourNames: [] }).detail, /not the client address 192\.0\.2\.1/);
    const long = checkHelo({ helo: 'x'.repeat(5000), clientIp: '192.0.2.1', ourNames: [] });
    assert.equal(long.result, 'invalid');
    assert.ok(long.detail.length < 200);
  });
});

describe('hostnameProblem', () => {
  it('accepts host names and says what is wrong with the rest', () => {
    assert.equal(hostnameProblem('mail.example.org'), undefined);
    assert.equal(hostnameProblem('a'), undefined);
    assert.equal(hostnameProblem('a..b'), 'empty label');
    assert.equal(hostnameProblem('1.2.3'), 'numeric name');
    assert.equal(hostnameProblem(`${'a'.repeat(64)}.b`), 'label longer than 63 characters');
    assert.match(hostnameProblem('a b.c')!, /non-ASCII, space or control/);
  });
});
