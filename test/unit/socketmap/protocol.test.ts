import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NetstringDecoder, NetstringError } from '../../../src/socketmap/netstring.ts';
import {
  encodeReply,
  MAX_REPLY_BYTES,
  parseRequest,
  ProtocolError,
  reply,
  sanitizeReason,
  type ProtocolErrorCode,
  type SocketmapReply,
} from '../../../src/socketmap/protocol.ts';
import { prng as rng } from '../../support/prng.ts';

const utf8 = (s: string) => Buffer.from(s, 'utf8');


describe('parseRequest', () => {
  it('splits at the first space only (table)', () => {
    const cases: Array<[string, string, string]> = [
      ['virtual_mailbox user@example.com', 'virtual_mailbox', 'user@example.com'],
      ['virtual_alias User+Ext@Example.COM', 'virtual_alias', 'User+Ext@Example.COM'], // case preserved
      ['domains ', 'domains', ''], // empty key
      ['canonical ""', 'canonical', '""'], // null sender (postsrsd #141)
      ['transport *', 'transport', '*'], // transport_maps wildcard
      ['tls_policy .example.com', 'tls_policy', '.example.com'], // parent-domain query
      ['m "john doe"@example.com', 'm', '"john doe"@example.com'],
      ['m  leading', 'm', ' leading'],
      ['m trailing ', 'm', 'trailing '],
      ['m a\tb', 'm', 'a\tb'],
      ['m2_x üser@exämple.com', 'm2_x', 'üser@exämple.com'],
      ['m 日本@例え.jp', 'm', '日本@例え.jp'],
    ];
    for (const [input, map, key] of cases) assert.deepEqual(parseRequest(utf8(input)), { map, key }, input);
  });

  it('returns a ProtocolError for what Postfix never sends (table)', () => {
    const cases: Array<[Buffer, ProtocolErrorCode]> = [
      [utf8(''), 'no_space'],
      [utf8('nospace'), 'no_space'],
      [utf8(' key'), 'bad_map_name'],
      [utf8('Map key'), 'bad_map_name'],
      [utf8('my-map key'), 'bad_map_name'],
      [utf8('my.map key'), 'bad_map_name'],
      [utf8('mäp key'), 'bad_map_name'],
      [utf8('map\tkey'), 'no_space'],
      [Buffer.from([0x6d, 0x20, 0xff]), 'bad_utf8'],
      [Buffer.from([0x6d, 0x20, 0xc0, 0x80]), 'bad_utf8'], // overlong NUL
      [Buffer.from([0x6d, 0x20, 0xed, 0xa0, 0x80]), 'bad_utf8'], // UTF-16 surrogate
      [Buffer.from([0x6d, 0x20, 0xe6, 0x97]), 'bad_utf8'], // truncated sequence
      [utf8('m a\0b'), 'nul_byte'],
    ];
    for (const [input, code] of cases) {
      const result = parseRequest(input);
      assert.ok(result instanceof ProtocolError, input.toString('hex'));
      assert.equal(result.code, code, input.toString('hex'));
    }
  });

  it('never throws and keeps its invariants on 20000 random payloads', () => {
    const rand = rng(7);
    const pieces = ['m', 'map_1', ' ', '  ', 'a@b', 'ü', '\0', 'X', '-', '\xff'];
    for (let n = 0; n < 20_000; n++) {
      let payload: Buffer;
      if (n % 2 === 0) {
        payload = Buffer.from(Array.from({ length: Math.floor(rand() * 24) }, () => Math.floor(rand() * 256)));
      } else {
        const parts = Array.from({ length: Math.floor(rand() * 6) }, () => pieces[Math.floor(rand() * pieces.length)]!);
        payload = Buffer.from(parts.join(''), rand() < 0.2 ? 'latin1' : 'utf8');
      }
      const result = parseRequest(payload);
      if (result instanceof ProtocolError) continue;
      assert.match(result.map, /^[a-z0-9_]+$/);
      assert.deepEqual(utf8(`${result.map} ${result.key}`), payload);
    }
  });

  it('composes with the decoder: 20000 random streams throw only typed errors', () => {
    const rand = rng(99);
    const alphabet = Buffer.from('0123456789:, m_ak@\xff\x00', 'latin1');
    for (let n = 0; n < 20_000; n++) {
      const input = Buffer.from(Array.from({ length: Math.floor(rand() * 48) }, () => alphabet[Math.floor(rand() * alphabet.length)]!));
      try {
        for (const frame of new NetstringDecoder(32).push(input)) parseRequest(frame);
      } catch (err) {
        assert.ok(err instanceof NetstringError, String(err));
      }
    }
  });
});

describe('encodeReply', () => {
  it('encodes each status (table)', () => {
    const cases: Array<[SocketmapReply, string]> = [
      [reply.ok('example.com/user/'), 'OK example.com/user/'],
      [reply.ok('a@x.org, b@y.org'), 'OK a@x.org, b@y.org'],
      [reply.ok('secure match=mx1:mx2 servername=hostname'), 'OK secure match=mx1:mx2 servername=hostname'],
      [reply.notFound(), 'NOTFOUND '], // trailing space, as dict_sockmap.c expects
      [reply.temp('database unavailable'), 'TEMP database unavailable'],
      [reply.timeout('backend timeout'), 'TIMEOUT backend timeout'],
      [reply.perm('unknown map'), 'PERM unknown map'],
      [{ status: 'TEMP', reason: 'line1\r\nline2\0x' }, 'TEMP line1 line2 x'],
      [{ status: 'PERM', reason: '' }, 'PERM unspecified'],
      [{ status: 'PERM', reason: '\r\n' }, 'PERM unspecified'],
      [reply.ok('ünïcode'), 'OK ünïcode'],
    ];
    for (const [r, wire] of cases) assert.equal(encodeReply(r).toString('utf8'), wire, JSON.stringify(r));
  });

  it('refuses OK with empty data, which Postfix treats as a configuration error', () => {
    assert.throws(() => encodeReply(reply.ok('')), { name: 'ProtocolError', code: 'empty_data' });
    assert.throws(() => encodeReply(reply.ok('a\0b')), { code: 'bad_data' });
    assert.throws(() => encodeReply({ status: 'BOGUS' } as unknown as SocketmapReply), { code: 'bad_data' });
  });

  it('enforces the 100000-byte reply limit in bytes, not characters', () => {
    const fits = 'x'.repeat(MAX_REPLY_BYTES - 3);
    assert.equal(encodeReply(reply.ok(fits)).length, MAX_REPLY_BYTES);
    assert.throws(() => encodeReply(reply.ok(`${fits}x`)), { code: 'reply_too_long' });
    // 'é' is two bytes in UTF-8.
    assert.throws(() => encodeReply(reply.ok('é'.repeat(50_000))), { code: 'reply_too_long' });
  });

  it('truncates reasons to 200 characters without splitting a code point', () => {
    assert.equal(sanitizeReason('a'.repeat(500)), 'a'.repeat(200));
    const emoji = sanitizeReason(`${'a'.repeat(199)}😀😀`);
    assert.equal(Array.from(emoji).length, 200);
    assert.ok(emoji.endsWith('😀'));
    assert.equal(encodeReply(reply.temp('r'.repeat(10_000))).length, 'TEMP '.length + 200);
  });
});
