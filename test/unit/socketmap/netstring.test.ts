import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { prng as rng } from '../../support/prng.ts';
import { encodeNetstring, NetstringDecoder, NetstringError, type NetstringErrorCode } from '../../../src/socketmap/netstring.ts';

const b = (s: string) => Buffer.from(s, 'latin1');
const MAX = 100;

/** Decodes `input` delivered as the given chunks; returns frames (as latin1) and the error code, if any. */
function decode(chunks: readonly Buffer[], max = MAX): { frames: string[]; error?: NetstringErrorCode } {
  const decoder = new NetstringDecoder(max);
  const frames: string[] = [];
  for (const chunk of chunks) {
    try {
      for (const f of decoder.push(chunk)) frames.push(f.toString('latin1'));
    } catch (err) {
      assert.ok(err instanceof NetstringError, `unexpected ${String(err)}`);
      for (const f of err.frames) frames.push(f.toString('latin1'));
      return { frames, error: err.code };
    }
  }
  return { frames };
}


function randomChunks(input: Buffer, rand: () => number): Buffer[] {
  const chunks: Buffer[] = [];
  let i = 0;
  while (i < input.length) {
    const n = 1 + Math.floor(rand() * Math.min(16, input.length - i));
    chunks.push(input.subarray(i, i + n));
    i += n;
  }
  return chunks;
}

const VALID: Array<[string, string[]]> = [
  ['0:,', ['']],
  ['5:hello,', ['hello']],
  ['1::,', [':']],
  ['1:,,', [',']],
  ['3:1:,,', ['1:,']],
  ['4:\x00\xff\r\n,', ['\x00\xff\r\n']],
  ['21:virtual_mailbox a@b.c,', ['virtual_mailbox a@b.c']],
  ['5:hello,0:,3:abc,', ['hello', '', 'abc']],
  [`100:${'x'.repeat(100)},`, ['x'.repeat(100)]],
  ['10:0123456789,10:9876543210,', ['0123456789', '9876543210']],
];

const INVALID: Array<[string, NetstringErrorCode, string[]]> = [
  [':,', 'bad_length', []],
  ['a:,', 'bad_length', []],
  ['-1:x,', 'bad_length', []],
  [' 1:x,', 'bad_length', []],
  ['1 :x,', 'bad_length', []],
  ['+1:x,', 'bad_length', []],
  ['1\n', 'bad_length', []],
  ['01:x,', 'leading_zero', []],
  ['00:,', 'leading_zero', []],
  ['3:abc;', 'missing_comma', []],
  ['3:abcd,', 'missing_comma', []],
  ['0:x', 'missing_comma', []],
  ['101:', 'too_long', []],
  ['1000', 'too_long', []],
  ['99999999999999999999999999999999999999', 'too_long', []],
  ['5:hello,3:abc;', 'missing_comma', ['hello']],
  ['5:hello,0:,x', 'bad_length', ['hello', '']],
  ['2:ok,999:', 'too_long', ['ok']],
];

describe('NetstringDecoder', () => {
  it('decodes valid streams (table)', () => {
    for (const [input, frames] of VALID) assert.deepEqual(decode([b(input)]), { frames }, input);
  });

  it('rejects malformed streams with a stable code (table)', () => {
    for (const [input, code, frames] of INVALID) assert.deepEqual(decode([b(input)]), { frames, error: code }, input);
  });

  it('gives identical results for every split point and byte-at-a-time', () => {
    const cases: Array<[string, { frames: string[]; error?: NetstringErrorCode }]> = [
      ...VALID.map(([s, frames]): [string, { frames: string[] }] => [s, { frames }]),
      ...INVALID.map(([s, error, frames]): [string, { frames: string[]; error: NetstringErrorCode }] => [s, { frames, error }]),
    ];
    // All valid streams back to back, too, so boundaries between frames are covered.
    cases.push([VALID.map(([s]) => s).join(''), { frames: VALID.flatMap(([, f]) => f) }]);
    for (const [input, expected] of cases) {
      const buf = b(input);
      for (let i = 0; i <= buf.length; i++) {
        assert.deepEqual(decode([buf.subarray(0, i), buf.subarray(i)]), expected, `${JSON.stringify(input)} split at ${i}`);
        for (let j = i; j <= buf.length && buf.length <= 40; j++) {
          const three = [buf.subarray(0, i), buf.subarray(i, j), buf.subarray(j)];
          assert.deepEqual(decode(three), expected, `${JSON.stringify(input)} split at ${i},${j}`);
        }
      }
      const bytes = [...buf].map((x) => Buffer.from([x]));
      assert.deepEqual(decode(bytes), expected, `${JSON.stringify(input)} byte by byte`);
    }
  });

  it('gives identical results for random chunkings of a long stream', () => {
    const rand = rng(1);
    const payloads: string[] = [];
    for (let i = 0; i < 300; i++) {
      const len = Math.floor(rand() * (MAX + 1));
      payloads.push(Array.from({ length: len }, () => String.fromCharCode(Math.floor(rand() * 256))).join(''));
    }
    const stream = Buffer.concat(payloads.map((p) => encodeNetstring(b(p))));
    for (let round = 0; round < 200; round++) {
      assert.deepEqual(decode(randomChunks(stream, rand)), { frames: payloads });
    }
  });

  it('refuses an oversized length before any payload arrives', () => {
    const decoder = new NetstringDecoder(10_000);
    assert.deepEqual(decoder.push(b('1000')), []);
    assert.throws(() => decoder.push(b('1')), { name: 'NetstringError', code: 'too_long' });
    // Exactly the maximum is fine.
    const ok = new NetstringDecoder(5);
    assert.deepEqual(ok.push(b('5:abcde,')).map(String), ['abcde']);
    assert.throws(() => new NetstringDecoder(5).push(b('6:')), { code: 'too_long' });
    // A zero maximum still allows the empty netstring.
    assert.deepEqual(new NetstringDecoder(0).push(b('0:,')).map(String), ['']);
  });

  it('stays failed after an error', () => {
    const decoder = new NetstringDecoder(MAX);
    assert.throws(() => decoder.push(b('x')), { code: 'bad_length' });
    assert.throws(() => decoder.push(b('1:a,')), { code: 'bad_length' });
  });

  it('reports whether a frame is in progress', () => {
    const decoder = new NetstringDecoder(MAX);
    assert.equal(decoder.pending, false);
    decoder.push(b('1'));
    assert.equal(decoder.pending, true);
    decoder.push(b(':a'));
    assert.equal(decoder.pending, true);
    decoder.push(b(','));
    assert.equal(decoder.pending, false);
  });

  it('copies payloads that span chunks', () => {
    const decoder = new NetstringDecoder(MAX);
    decoder.push(b('5:he'));
    const chunk = b('llo,');
    const [frame] = decoder.push(chunk);
    chunk.fill(0);
    assert.equal(frame?.toString(), 'hello');
  });

  it('handles a large payload in many small chunks in linear time', () => {
    const size = 4_000_000;
    const decoder = new NetstringDecoder(size);
    const stream = encodeNetstring(Buffer.alloc(size, 0x61));
    const started = performance.now();
    const frames: Buffer[] = [];
    for (let i = 0; i < stream.length; i += 64) frames.push(...decoder.push(stream.subarray(i, i + 64)));
    assert.equal(frames.length, 1);
    assert.equal(frames[0]?.length, size);
    // 62500 chunks; a quadratic re-concatenation would take minutes.
    assert.ok(performance.now() - started < 2_000, 'decoding took too long');
  });

  it('rejects a bad maxLength', () => {
    assert.throws(() => new NetstringDecoder(-1), RangeError);
    assert.throws(() => new NetstringDecoder(1.5), RangeError);
    assert.throws(() => new NetstringDecoder(Number.MAX_SAFE_INTEGER), RangeError);
  });

  it('survives 20000 random and mutated inputs with only NetstringErrors', () => {
    const rand = rng(42);
    const seeds = VALID.map(([s]) => b(s));
    const alphabet = b('0123456789:,, 0a\x00\xff');
    for (let n = 0; n < 20_000; n++) {
      let input: Buffer;
      if (n % 2 === 0) {
        const len = Math.floor(rand() * 40);
        // Mostly netstring-ish bytes, sometimes anything.
        input = Buffer.from(Array.from({ length: len }, () => (rand() < 0.8 ? alphabet[Math.floor(rand() * alphabet.length)]! : Math.floor(rand() * 256))));
      } else {
        input = Buffer.from(Buffer.concat([seeds[Math.floor(rand() * seeds.length)]!, seeds[Math.floor(rand() * seeds.length)]!]));
        const edits = 1 + Math.floor(rand() * 3);
        for (let e = 0; e < edits && input.length > 0; e++) {
          const at = Math.floor(rand() * input.length);
          const op = rand();
          if (op < 0.5) input[at] = alphabet[Math.floor(rand() * alphabet.length)]!;
          else if (op < 0.75) input = Buffer.concat([input.subarray(0, at), input.subarray(at + 1)]);
          else input = Buffer.concat([input.subarray(0, at), Buffer.from([Math.floor(rand() * 256)]), input.subarray(at)]);
        }
      }
      const whole = decode([input]);
      const chunked = decode(randomChunks(input, rand));
      assert.deepEqual(chunked, whole, `input ${input.toString('hex')}`);
      for (const f of whole.frames) assert.ok(f.length <= MAX);
    }
  });
});

describe('encodeNetstring', () => {
  it('frames strings by UTF-8 byte length and buffers as-is', () => {
    assert.equal(encodeNetstring('').toString(), '0:,');
    assert.equal(encodeNetstring('OK x').toString(), '4:OK x,');
    assert.equal(encodeNetstring('é').toString('utf8'), '2:é,');
    assert.deepEqual(encodeNetstring(Buffer.from([0, 255])), Buffer.from([0x32, 0x3a, 0, 255, 0x2c]));
  });

  it('round-trips through the decoder', () => {
    for (const s of ['', 'a', 'NOTFOUND ', 'OK ü@exämple.com', 'x'.repeat(1000)]) {
      const [frame] = new NetstringDecoder(10_000).push(encodeNetstring(s));
      assert.equal(frame?.toString('utf8'), s);
    }
  });
});
