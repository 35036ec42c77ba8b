import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  answersQuery,
  decodeMessage,
  decodeName,
  encodeName,
  encodeQuery,
  extractAnswer,
  formatIpv6,
  nameToString,
  QTYPE,
  sameName,
  takeTcpFrame,
  tcpFrame,
  WireError,
  type QueryOptions,
} from '../../../src/dns/wire.ts';

// Hand-built messages, independent of the codec under test.
const label = (s: string): Buffer => Buffer.concat([Buffer.from([Buffer.byteLength(s, 'latin1')]), Buffer.from(s, 'latin1')]);
const wireName = (s: string): Buffer => Buffer.concat([...s.split('.').filter(Boolean).map(label), Buffer.from([0])]);
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u32 = (n: number): Buffer => Buffer.from([n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const ptr = (offset: number): Buffer => u16(0xc000 | offset);

function rr(owner: Buffer, type: number, ttl: number, rdata: Buffer, cls = 1): Buffer {
  return Buffer.concat([owner, u16(type), u16(cls), u32(ttl), u16(rdata.length), rdata]);
}

interface Msg {
  id?: number;
  flags?: number;
  qname?: Buffer;
  qtype?: number;
  qclass?: number;
  questions?: number;
  answers?: Buffer[];
  /** Count in the header, when it should differ from answers.length. */
  ancount?: number;
}

/** A response: header, one question (unless questions is 0), the answer records. Question name at offset 12. */
function msg(m: Msg = {}): Buffer {
  const answers = m.answers ?? [];
  const qd = m.questions ?? 1;
  const header = Buffer.concat([u16(m.id ?? 0x1234), u16(m.flags ?? 0x8180), u16(qd), u16(m.ancount ?? answers.length), u16(0), u16(0)]);
  const question = qd === 0 ? [] : [m.qname ?? wireName('john+tag._spf.test'), u16(m.qtype ?? QTYPE.A), u16(m.qclass ?? 1)];
  return Buffer.concat([header, ...question, ...answers]);
}

const Q: QueryOptions = { id: 0x1234, name: wireName('john+tag._spf.test'), type: QTYPE.A };
const Q_AT = ptr(12); // the question name, compressed

const code = (c: string) => (err: unknown) => err instanceof WireError && err.code === c;

describe('encodeName', () => {
  it('sends every label as its raw bytes, escaping nothing', () => {
    assert.deepEqual(encodeName('john+tag._spf.test'), wireName('john+tag._spf.test'));
    for (const n of ['a=b.example', 'foo:bar/baz.example.com', 'macro%percent  space%20url-space.example.com', 'x\\y.test', '"q"@(1);$.test']) {
      assert.deepEqual(encodeName(n), wireName(n), n);
    }
    assert.deepEqual(encodeName('café.test'), Buffer.from([5, 0x63, 0x61, 0x66, 0xc3, 0xa9, 4, 0x74, 0x65, 0x73, 0x74, 0]), 'UTF-8');
  });

  it('one trailing dot is allowed; "" and "." are the root', () => {
    assert.deepEqual(encodeName('a+b.test.'), wireName('a+b.test'));
    assert.deepEqual(encodeName(''), Buffer.from([0]));
    assert.deepEqual(encodeName('.'), Buffer.from([0]));
  });

  it('EBADNAME for empty labels, labels over 63 octets and names over 255 octets', () => {
    for (const n of ['a..b', '.a', 'a.b..', '..']) assert.throws(() => encodeName(n), code('EBADNAME'), n);
    assert.equal(encodeName(`${'x'.repeat(63)}.test`).length, 1 + 63 + 1 + 4 + 1);
    assert.throws(() => encodeName(`${'x'.repeat(64)}.test`), code('EBADNAME'));
    assert.throws(() => encodeName(`${'é'.repeat(32)}.test`), code('EBADNAME'), '64 octets in UTF-8');
    const l63 = 'y'.repeat(63);
    assert.equal(encodeName(`${l63}.${l63}.${l63}.${'z'.repeat(61)}`).length, 255);
    assert.throws(() => encodeName(`${l63}.${l63}.${l63}.${'z'.repeat(62)}`), code('EBADNAME'));
  });
});

describe('encodeQuery', () => {
  it('one recursive question with an EDNS0 OPT record (payload 1232)', () => {
    const q = encodeQuery({ id: 0xbeef, name: encodeName('a+b.test'), type: QTYPE.TXT });
    assert.deepEqual(q.subarray(0, 12), Buffer.concat([u16(0xbeef), u16(0x0100), u16(1), u16(0), u16(0), u16(1)]));
    assert.deepEqual(q.subarray(12), Buffer.concat([wireName('a+b.test'), u16(16), u16(1), Buffer.from([0]), u16(41), u16(1232), u32(0), u16(0)]));
    const plain = encodeQuery({ id: 1, name: encodeName('a+b.test'), type: QTYPE.A, edns: false });
    assert.equal(plain.readUInt16BE(10), 0);
    assert.equal(plain.length, 12 + wireName('a+b.test').length + 4);
  });

  it('its own output decodes and answers itself once QR is set', () => {
    const q = { id: 7, name: encodeName('Foo:Bar.test'), type: QTYPE.MX };
    const bytes = encodeQuery(q);
    const d = decodeMessage(bytes);
    assert.equal(d.response, false);
    assert.equal(answersQuery(d, q), false, 'a query is not an answer');
    bytes.writeUInt16BE(0x8180, 2);
    assert.equal(answersQuery(decodeMessage(bytes), q), true);
  });
});

describe('TCP framing', () => {
  it('length prefix; a message split over reads is whole only once all of it arrived', () => {
    const m = msg({ answers: [rr(Q_AT, QTYPE.A, 60, Buffer.from([192, 0, 2, 1]))] });
    const framed = tcpFrame(m);
    assert.equal(framed.readUInt16BE(0), m.length);
    for (let cut = 0; cut < framed.length; cut++) assert.equal(takeTcpFrame(framed.subarray(0, cut)), undefined, `cut at ${cut}`);
    const two = Buffer.concat([framed, tcpFrame(Buffer.from('xy'))]);
    const first = takeTcpFrame(two)!;
    assert.deepEqual(first.message, m);
    assert.deepEqual(takeTcpFrame(first.rest)?.message, Buffer.from('xy'));
  });
});

describe('decodeName: compression pointers', () => {
  it('follows pointers, also chains of them, and continues after the first pointer', () => {
    // offset 12: "b.test"; offset 20: "a" + ptr(12); offset 24: "x" + ptr(20)
    const m = Buffer.concat([Buffer.alloc(12), wireName('b.test'), label('a'), ptr(12), label('x'), ptr(20), Buffer.from([0xaa])]);
    assert.equal(m.length, 12 + 8 + 4 + 4 + 1);
    assert.equal(nameToString(decodeName(m, 12).name), 'b.test');
    assert.equal(nameToString(decodeName(m, 20).name), 'a.b.test');
    const { name, next } = decodeName(m, 24);
    assert.equal(nameToString(name), 'x.a.b.test');
    assert.deepEqual(name, wireName('x.a.b.test'), 'returned uncompressed');
    assert.equal(next, 28, 'the record goes on after the pointer, not after the target');
  });

  it('EBADRESP for loops, self and forward pointers', () => {
    const self = Buffer.concat([Buffer.alloc(12), ptr(12)]);
    assert.throws(() => decodeName(self, 12), code('EBADRESP'), 'pointer to itself');
    // offset 12: "a" + ptr(16); offset 16: "b" + ptr(12): a two-name loop.
    const loop = Buffer.concat([Buffer.alloc(12), label('a'), ptr(16), label('b'), ptr(12)]);
    assert.throws(() => decodeName(loop, 12), code('EBADRESP'), 'forward pointer');
    assert.throws(() => decodeName(loop, 16), code('EBADRESP'), 'loop back');
    // A pointer into the name's own labels, before the pointer (a suffix loop).
    const suffix = Buffer.concat([Buffer.alloc(12), label('a'), label('b'), ptr(14)]);
    assert.throws(() => decodeName(suffix, 12), code('EBADRESP'));
  });

  it('EBADRESP for truncated names and pointers, reserved label types, and names over 255 octets', () => {
    assert.throws(() => decodeName(Buffer.concat([Buffer.alloc(12), label('abc')]), 12), code('EBADRESP'), 'no root label');
    assert.throws(() => decodeName(Buffer.concat([Buffer.alloc(12), Buffer.from([5, 0x61])]), 12), code('EBADRESP'), 'label past the end');
    assert.throws(() => decodeName(Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0])]), 12), code('EBADRESP'), 'half a pointer');
    for (const t of [0x40, 0x80]) assert.throws(() => decodeName(Buffer.concat([Buffer.alloc(12), Buffer.from([t | 1, 0x61, 0])]), 12), code('EBADRESP'));
    // Four 63-octet labels: 257 octets uncompressed, even though each piece is legal; also when built from pointers.
    const l = label('q'.repeat(63));
    assert.throws(() => decodeName(Buffer.concat([Buffer.alloc(12), l, l, l, l, Buffer.from([0])]), 12), code('EBADRESP'));
    const viaPtr = Buffer.concat([Buffer.alloc(12), l, l, Buffer.from([0]), l, l, ptr(12)]);
    assert.throws(() => decodeName(viaPtr, 12 + 129), code('EBADRESP'));
    assert.equal(decodeName(viaPtr, 12).name.length, 129);
  });
});

describe('decodeMessage', () => {
  it('reads every supported record type, names compressed or not', () => {
    const mxName = Buffer.concat([label('m x'), Q_AT]);
    const m = msg({
      answers: [
        rr(Q_AT, QTYPE.A, 60, Buffer.from([192, 0, 2, 1])),
        rr(Q_AT, QTYPE.AAAA, 61, Buffer.from('20010db8000000000000000000000001', 'hex')),
        rr(Q_AT, QTYPE.MX, 62, Buffer.concat([u16(10), mxName])),
        rr(Q_AT, QTYPE.TXT, 63, Buffer.concat([label('v=spf1 -all'), label(''), Buffer.from([2, 0xe9, 0xff])])),
        rr(Q_AT, QTYPE.PTR, 64, wireName('p:tr.test')),
        rr(Q_AT, QTYPE.NS, 65, Buffer.concat([label('ns'), Q_AT])),
        rr(wireName('c.test'), QTYPE.CNAME, 66, Q_AT),
        rr(Q_AT, 99, 67, Buffer.from([3, 0x61, 0x62, 0x63])),
      ],
    });
    const d = decodeMessage(m);
    assert.equal(d.id, 0x1234);
    assert.equal(d.response, true);
    assert.equal(d.truncated, false);
    assert.equal(d.rcode, 0);
    assert.equal(d.questions.length, 1);
    assert.deepEqual(d.questions[0], { name: wireName('john+tag._spf.test'), type: QTYPE.A, class: 1 });
    assert.deepEqual(
      d.answers.map((a) => [a.type, a.ttl, a.data]),
      [
        [1, 60, '192.0.2.1'],
        [28, 61, '2001:db8::1'],
        [15, 62, { exchange: 'm x.john+tag._spf.test', priority: 10 }],
        [16, 63, ['v=spf1 -all', '', 'éÿ']],
        [12, 64, 'p:tr.test'],
        [2, 65, 'ns.john+tag._spf.test'],
        [5, 66, 'john+tag._spf.test'],
        [99, 67, undefined],
      ],
    );
    assert.deepEqual(d.answers[6]!.target, wireName('john+tag._spf.test'));
    assert.deepEqual(d.answers[0]!.name, wireName('john+tag._spf.test'));
  });

  it('flags: TC, rcode, opcode; TTLs over 2^31-1 count as 0 (RFC 2181 §8)', () => {
    const d = decodeMessage(msg({ flags: 0x8000 | 0x0200 | 0x0800 | 3, answers: [rr(Q_AT, QTYPE.A, 0x80000000, Buffer.from([1, 2, 3, 4]))] }));
    assert.equal(d.truncated, true);
    assert.equal(d.rcode, 3);
    assert.equal(d.opcode, 1);
    assert.equal(d.answers[0]!.ttl, 0);
  });

  it('names in answers come back as UTF-8 text, unescaped', () => {
    const d = decodeMessage(msg({ answers: [rr(Q_AT, QTYPE.PTR, 1, Buffer.concat([label('caf\xc3\xa9'), label('a@b;c'), Buffer.from([0])]))] }));
    assert.equal(d.answers[0]!.data, 'café.a@b;c');
  });

  it('EBADRESP for messages cut anywhere, and for malformed records', () => {
    const good = msg({ answers: [rr(Q_AT, QTYPE.TXT, 60, label('hello')), rr(Q_AT, QTYPE.MX, 60, Buffer.concat([u16(1), Q_AT]))] });
    decodeMessage(good);
    for (let cut = 0; cut < good.length; cut++) assert.throws(() => decodeMessage(good.subarray(0, cut)), code('EBADRESP'), `cut at ${cut}`);
    const bad: Array<[string, Buffer]> = [
      ['more answers than present', msg({ ancount: 2, answers: [rr(Q_AT, QTYPE.A, 1, Buffer.from([1, 2, 3, 4]))] })],
      ['A of 5 octets', msg({ answers: [rr(Q_AT, QTYPE.A, 1, Buffer.from([1, 2, 3, 4, 5]))] })],
      ['AAAA of 4 octets', msg({ answers: [rr(Q_AT, QTYPE.AAAA, 1, Buffer.from([1, 2, 3, 4]))] })],
      ['TXT string past its record', msg({ answers: [rr(Q_AT, QTYPE.TXT, 1, Buffer.from([5, 0x61]))] })],
      ['MX without a name', msg({ answers: [rr(Q_AT, QTYPE.MX, 1, u16(10))] })],
      ['CNAME with bytes after the name', msg({ answers: [rr(Q_AT, QTYPE.CNAME, 1, Buffer.concat([Q_AT, Buffer.from([0])]))] })],
      ['PTR name running out of its RDATA', msg({ answers: [Buffer.concat([Q_AT, u16(QTYPE.PTR), u16(1), u32(1), u16(3), label('abc'), Buffer.from([0])])] })],
      ['answer owner pointing forward', msg({ answers: [rr(ptr(200), QTYPE.A, 1, Buffer.from([1, 2, 3, 4]))] })],
      ['pointer loop in the answer owner', msg({ answers: [rr(Buffer.concat([label('a'), ptr(12 + 24)]), QTYPE.A, 1, Buffer.from([1, 2, 3, 4]))] })],
    ];
    for (const [what, m] of bad) assert.throws(() => decodeMessage(m), code('EBADRESP'), what);
  });
});

describe('formatIpv6 (as libuv inet_ntop writes it)', () => {
  const hex = (s: string): Buffer => Buffer.from(s.replace(/[^0-9a-f]/g, ''), 'hex');
  it('compresses the first longest zero run of 2+ groups, lower case, IPv4 tails for mapped/compatible', () => {
    const cases: Array<[string, string]> = [
      ['0000 0000 0000 0000 0000 0000 0000 0000', '::'],
      ['0000 0000 0000 0000 0000 0000 0000 0001', '::1'],
      ['2001 0db8 0000 0000 0000 0000 0000 0001', '2001:db8::1'],
      ['2001 0db8 0000 0001 0000 0000 0000 0000', '2001:db8:0:1::'],
      ['0001 0000 0000 0001 0000 0000 0001 0001', '1::1:0:0:1:1'],
      ['0001 0000 0001 0000 0001 0000 0001 0000', '1:0:1:0:1:0:1:0'],
      ['CAFE BABE 0000 0000 0000 0000 0000 0001', 'cafe:babe::1'],
      ['0000 0000 0000 0000 0000 ffff c000 0201', '::ffff:192.0.2.1'],
      ['0000 0000 0000 0000 0000 0000 c000 0201', '::192.0.2.1'],
      ['0064 ff9b 0000 0000 0000 0000 c000 0201', '64:ff9b::c000:201'],
    ];
    for (const [bytes, text] of cases) assert.equal(formatIpv6(hex(bytes.toLowerCase())), text, bytes);
  });
});

describe('answersQuery (anti-spoofing)', () => {
  it('the same ID, a standard-query response, exactly the question asked (name in any ASCII case)', () => {
    assert.equal(answersQuery(decodeMessage(msg()), Q), true);
    assert.equal(answersQuery(decodeMessage(msg({ qname: wireName('JOHN+TAG._SPF.Test') })), Q), true);
    const wrong: Array<[string, Buffer]> = [
      ['other ID', msg({ id: 0x1235 })],
      ['not a response', msg({ flags: 0x0100 })],
      ['other opcode', msg({ flags: 0x8000 | 0x1000 })],
      ['other name', msg({ qname: wireName('john+tab._spf.test') })],
      ['other type', msg({ qtype: QTYPE.TXT })],
      ['other class', msg({ qclass: 3 })],
      ['no question', msg({ questions: 0 })],
      ['two questions', Buffer.concat([msg({ questions: 2 }), wireName('x.test'), u16(1), u16(1)])],
    ];
    for (const [what, m] of wrong) assert.equal(answersQuery(decodeMessage(m), Q), false, what);
  });

  it('sameName folds ASCII letters only', () => {
    assert.equal(sameName(wireName('AbC.test'), wireName('aBc.TEST')), true);
    assert.equal(sameName(Buffer.from([1, 0xc9, 0]), Buffer.from([1, 0xe9, 0])), false, 'É is not é in DNS');
    assert.equal(sameName(wireName('a@b'), wireName('a`b')), false, '0x40 and 0x60 are not letters');
  });
});

describe('extractAnswer', () => {
  const A = (owner: Buffer, ip: number[], ttl = 300): Buffer => rr(owner, QTYPE.A, ttl, Buffer.from(ip));
  const cname = (owner: Buffer, target: Buffer, ttl = 300): Buffer => rr(owner, QTYPE.CNAME, ttl, target);
  const get = (m: Buffer, q: QueryOptions = Q) => extractAnswer(decodeMessage(m), q);

  it('the records of the asked type owned by the asked name, with the smallest TTL', () => {
    assert.deepEqual(get(msg({ answers: [A(Q_AT, [192, 0, 2, 1], 300), A(Q_AT, [192, 0, 2, 2], 30)] })), { ok: true, values: ['192.0.2.1', '192.0.2.2'], ttlS: 30 });
  });

  it('follows CNAMEs in the answer section; records of other owners and other classes are ignored', () => {
    const t1 = wireName('t1.test');
    const m = msg({
      answers: [
        A(wireName('elsewhere.test'), [198, 51, 100, 1]),
        cname(Q_AT, wireName('T1.test'), 100),
        rr(t1, QTYPE.A, 5, Buffer.from([203, 0, 113, 9]), 3), // class CHAOS
        cname(t1, wireName('t2.test'), 200),
        A(wireName('t2.test'), [192, 0, 2, 7], 400),
      ],
    });
    assert.deepEqual(get(m), { ok: true, values: ['192.0.2.7'], ttlS: 100 });
    assert.deepEqual(get(m, { ...Q, type: QTYPE.CNAME }), { ok: true, values: ['T1.test'], ttlS: 100 }, 'CNAME asked: the alias itself');
  });

  it('ENODATA for no records, a dangling chain, a CNAME loop, or only other types', () => {
    assert.deepEqual(get(msg()), { ok: false, code: 'ENODATA' });
    assert.deepEqual(get(msg({ answers: [cname(Q_AT, wireName('gone.test'))] })), { ok: false, code: 'ENODATA' });
    const loop = msg({ answers: [cname(Q_AT, wireName('l.test')), cname(wireName('l.test'), wireName('john+tag._spf.test'))] });
    assert.deepEqual(get(loop), { ok: false, code: 'ENODATA' });
    assert.deepEqual(get(msg({ answers: [rr(Q_AT, QTYPE.TXT, 1, label('x'))] })), { ok: false, code: 'ENODATA' });
  });

  it('rcodes as c-ares maps them', () => {
    const rc = (n: number) => get(msg({ flags: 0x8180 | n }));
    assert.deepEqual(rc(3), { ok: false, code: 'ENOTFOUND' });
    assert.deepEqual(rc(2), { ok: false, code: 'ESERVFAIL' });
    assert.deepEqual(rc(5), { ok: false, code: 'EREFUSED' });
    assert.deepEqual(rc(4), { ok: false, code: 'ENOTIMP' });
    assert.deepEqual(rc(1), { ok: false, code: 'EFORMERR' });
    assert.deepEqual(rc(9), { ok: false, code: 'EBADRESP' });
    // NXDOMAIN wins over records (a CNAME to a name that does not exist).
    assert.deepEqual(get(msg({ flags: 0x8183, answers: [cname(Q_AT, wireName('gone.test'))] })), { ok: false, code: 'ENOTFOUND' });
  });
});
