import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  evaluateHeloSpf,
  evaluateSpf,
  headerValue,
  heloIdentity,
  sanitizeReplyText,
  spfDeferText,
  spfIdentity,
  spfRejectText,
  type SpfVerdict,
} from '../../../src/checks/spf.ts';
import type { DnsResolver } from '../../../src/dns/resolver.ts';

/** A resolver that must not be asked: these cases are decided without DNS. */
const noDns: DnsResolver = (name, rrtype) => assert.fail(`unexpected DNS query ${rrtype} ${name}`);

const verdict = (v: Partial<SpfVerdict>): SpfVerdict => ({
  result: 'fail',
  identity: 'mailfrom',
  domain: 'example.com',
  clientIp: '192.0.2.1',
  comment: '',
  receivedSpf: '',
  lookups: 0,
  voidLookups: 0,
  elapsedMs: 0,
  ...v,
});

describe('spfIdentity (RFC 7208 §2.3, §2.4, §4.3)', () => {
  const rows: Array<[sender: string, helo: string, identity: 'mailfrom' | 'helo', mailbox: string, domain: string, skip?: RegExp]> = [
    ['alice@Example.COM', 'mx.example.org', 'mailfrom', 'alice@Example.COM', 'example.com'],
    ['"odd@local"@example.com', 'h.example', 'mailfrom', '"odd@local"@example.com', 'example.com'],
    ['@example.net', 'h.example', 'mailfrom', 'postmaster@example.net', 'example.net'],
    ['example.net', 'h.example', 'mailfrom', 'postmaster@example.net', 'example.net'],
    ['', 'Mail.Example.ORG', 'helo', 'postmaster@Mail.Example.ORG', 'mail.example.org'],
    ['<>', 'mail.example.org', 'helo', 'postmaster@mail.example.org', 'mail.example.org'],
    ['', 'mail.example.org.', 'helo', 'postmaster@mail.example.org.', 'mail.example.org'],
    ['', '', 'helo', 'postmaster@', '', /no HELO/],
    ['', '[192.0.2.1]', 'helo', 'postmaster@[192.0.2.1]', '[192.0.2.1]', /address literal/],
    ['', '192.0.2.1', 'helo', 'postmaster@192.0.2.1', '192.0.2.1', /IP address/],
    ['', '2001:db8::1', 'helo', 'postmaster@2001:db8::1', '2001:db8::1', /IP address/],
    ['', 'OEMCOMPUTER', 'helo', 'postmaster@OEMCOMPUTER', 'oemcomputer', /not a fully qualified/],
  ];
  for (const [sender, helo, identity, mailbox, domain, skip] of rows) {
    it(`sender ${JSON.stringify(sender)}, HELO ${JSON.stringify(helo)} -> ${identity} ${mailbox}${skip ? ' (skipped)' : ''}`, () => {
      const id = spfIdentity({ sender, helo });
      assert.equal(id.identity, identity);
      assert.equal(id.mailbox, mailbox);
      assert.equal(id.domain, domain);
      if (skip) assert.match(id.skip ?? '', skip);
      else assert.equal(id.skip, undefined);
    });
  }

  it('heloIdentity ignores the sender', () => {
    assert.deepEqual(heloIdentity('mail.example.org'), { identity: 'helo', mailbox: 'postmaster@mail.example.org', domain: 'mail.example.org' });
  });
});

describe('evaluateSpf without DNS', () => {
  const base = { clientIp: '192.0.2.1', helo: 'mail.example.org', sender: 'a@example.com', receiver: 'mx.example.net' };

  it('null sender with a HELO that is a literal or not an FQDN: none, identity helo, no query', async () => {
    for (const helo of ['[192.0.2.1]', 'OEMCOMPUTER', '', '192.0.2.1']) {
      const v = await evaluateSpf({ ...base, sender: '', helo }, noDns);
      assert.equal(v.result, 'none', helo);
      assert.equal(v.identity, 'helo');
      assert.equal(v.lookups, 0);
      assert.ok(v.receivedSpf.startsWith('Received-SPF: none (mx.example.net: '), v.receivedSpf);
      assert.match(v.receivedSpf, / identity=helo;$/);
    }
    assert.match((await evaluateHeloSpf({ ...base, helo: '[192.0.2.1]' }, noDns)).receivedSpf, / helo="\[192\.0\.2\.1\]"; identity=helo;$/);
  });

  it('an invalid client address is a temperror, never a fail', async () => {
    for (const clientIp of ['', 'unknown', '192.0.2.256', 'fe80::1%eth0']) {
      const v = await evaluateSpf({ ...base, clientIp }, noDns);
      assert.equal(v.result, 'temperror', clientIp);
      assert.equal(v.problem, 'invalid client IP address');
    }
  });

  it('never throws: a resolver failing in unexpected ways gives temperror', async () => {
    const weird: DnsResolver[] = [
      () => {
        throw new TypeError('boom');
      },
      () => Promise.reject(new Error('no code')),
      () => Promise.reject('a string'),
      () => Promise.reject(Object.assign(new Error('odd'), { code: 'ECONNREFUSED' })),
    ];
    for (const [i, r] of weird.entries()) {
      const v = await evaluateSpf(base, r);
      assert.equal(v.result, 'temperror', `resolver ${i}: ${v.comment}`);
      assert.ok(!/[\r\n]/.test(v.receivedSpf));
    }
  });

  it('mailauth is asked with our options: a zero or negative limit falls back to the default', async () => {
    // One TXT answer, no further lookups: the options only need to be accepted.
    const r: DnsResolver = async (name, rrtype) => {
      if (rrtype === 'TXT' && name === 'example.com') return [['v=spf1 ip4:192.0.2.0/24 -all']];
      throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    };
    const v = await evaluateSpf(base, r, { maxLookups: 0, maxVoidLookups: -1, maxElapsedMs: Number.NaN });
    assert.equal(v.result, 'pass');
  });
});

describe('Received-SPF values', () => {
  it('dot-atom when possible, else quoted-string with escapes, always one line', () => {
    assert.equal(headerValue('192.0.2.1'), '192.0.2.1');
    assert.equal(headerValue('mail.example.org'), 'mail.example.org');
    assert.equal(headerValue('2001:db8::1'), '"2001:db8::1"');
    assert.equal(headerValue('[192.0.2.1]'), '"[192.0.2.1]"');
    assert.equal(headerValue('a "b" \\c'), '"a \\"b\\" \\\\c"');
    assert.equal(headerValue('x\r\ny'), '"x  y"');
  });

  it('client-controlled values cannot break the header: no CR/LF, parentheses escaped, at most 998 characters', async () => {
    const r: DnsResolver = async () => [['v=spf1 -all']];
    const sender = `${'x'.repeat(64)}(evil)\r\nBcc: victim@example.org@${'d'.repeat(60)}.example`;
    const helo = `${'h'.repeat(63)}.`.repeat(4) + 'example';
    const v = await evaluateSpf({ clientIp: '2001:db8::1', helo, sender, receiver: 'mx.example.net' }, r);
    assert.equal(v.result, 'fail');
    assert.ok(!/[\r\n\0]/.test(v.receivedSpf));
    assert.ok(Buffer.byteLength(v.receivedSpf) <= 998, `${Buffer.byteLength(v.receivedSpf)}`);
    assert.ok(v.receivedSpf.startsWith('Received-SPF: fail (mx.example.net: '));
    assert.ok(v.receivedSpf.includes('\\(evil\\)'), v.receivedSpf);
    assert.match(v.receivedSpf, / identity=mailfrom;$/);
  });

  it('the 998 limit counts octets: non-ASCII (SMTPUTF8) senders', async () => {
    const r: DnsResolver = async () => [['v=spf1 -all']];
    const sender = `${'\u00e9'.repeat(300)}@example.com`;
    const v = await evaluateSpf({ clientIp: '192.0.2.1', helo: 'mail.example.org', sender, receiver: 'mx.example.net' }, r);
    assert.ok(v.receivedSpf.length < 998);
    assert.ok(Buffer.byteLength(v.receivedSpf) <= 998, `${Buffer.byteLength(v.receivedSpf)} octets`);
    assert.match(v.receivedSpf, /envelope-from="\u00e9{300}@example\.com"; helo=mail\.example\.org; identity=mailfrom;$/);
  });

  it('an over-long line drops the long optional pairs and shortens the comment', async () => {
    const r: DnsResolver = async () => [['v=spf1 -all']];
    const sender = `${'x'.repeat(400)}@example.com`;
    const helo = `${'h'.repeat(60)}.`.repeat(8) + 'example';
    const v = await evaluateSpf({ clientIp: '192.0.2.1', helo, sender, receiver: 'mx.example.net' }, r);
    assert.ok(Buffer.byteLength(v.receivedSpf) <= 998, `${Buffer.byteLength(v.receivedSpf)}`);
    // The checked identity (envelope-from) stays, the long HELO goes.
    assert.match(v.receivedSpf, /^Received-SPF: fail \(mx\.example\.net: .*\.\.\.\) receiver=mx\.example\.net; client-ip=192\.0\.2\.1; envelope-from="x{400}@example\.com"; identity=mailfrom;$/);
    const h = await evaluateHeloSpf({ clientIp: '192.0.2.1', helo, sender, receiver: 'mx.example.net' }, r);
    assert.ok(Buffer.byteLength(h.receivedSpf) <= 998, `${Buffer.byteLength(h.receivedSpf)}`);
    assert.match(h.receivedSpf, /; client-ip=192\.0\.2\.1; helo=h{60}\.[^;]*; identity=helo;$/);
  });
});

describe('spfRejectText / spfDeferText (RFC 7372)', () => {
  it('fail: 550 5.7.23 with the domain and the address', () => {
    assert.equal(spfRejectText(verdict({})), '550 5.7.23 SPF fail: example.com does not designate 192.0.2.1 as permitted sender');
    assert.equal(
      spfRejectText(verdict({ result: 'softfail', domain: 'mail.example.org', identity: 'helo', clientIp: '2001:db8::1' })),
      '550 5.7.23 SPF softfail: mail.example.org does not designate 2001:db8::1 as permitted sender',
    );
  });

  it('fail with an explanation: appended, sanitised (no CR/LF/NUL, printable ASCII), bounded', () => {
    const t = spfRejectText(verdict({ explanation: 'See\r\nhttp://example.com/why\0 \u00e9t\u00e9\t ok' }));
    assert.equal(t, '550 5.7.23 SPF fail: example.com does not designate 192.0.2.1 as permitted sender; example.com explains: See http://example.com/why? ?t? ok');
    const long = spfRejectText(verdict({ explanation: 'y'.repeat(5000) }));
    assert.ok(long.length <= 450, `${long.length}`);
    assert.match(long, /explains: y{197}\.\.\.$/);
    assert.ok(/^[\x20-\x7e]+$/.test(long));
  });

  it('permerror: 550 5.7.24 with the problem', () => {
    assert.equal(spfRejectText(verdict({ result: 'permerror', problem: 'Too many DNS requests' })), '550 5.7.24 SPF permanent error: example.com: Too many DNS requests');
    assert.equal(spfRejectText(verdict({ result: 'permerror' })), '550 5.7.24 SPF permanent error: example.com: the SPF record is invalid');
  });

  it('temperror: 451 4.7.24, from spfRejectText too (never a 5xx)', () => {
    const v = verdict({ result: 'temperror', problem: 'DNS timeout' });
    assert.equal(spfDeferText(v), '451 4.7.24 SPF temporary error: example.com: DNS timeout; try again later');
    assert.equal(spfRejectText(v), spfDeferText(v));
    assert.equal(spfDeferText(verdict({ result: 'temperror' })), '451 4.7.24 SPF temporary error: example.com: DNS lookup failed; try again later');
  });

  it('client-controlled domain text is sanitised as well', () => {
    const t = spfRejectText(verdict({ domain: 'ex\r\nample.com\u0000' }));
    assert.equal(t, '550 5.7.23 SPF fail: ex ample.com? does not designate 192.0.2.1 as permitted sender');
  });

  it('sanitizeReplyText', () => {
    assert.equal(sanitizeReplyText('  a \t\r\n b  '), 'a b');
    assert.equal(sanitizeReplyText('abcdef', 5), 'ab...');
  });
});
