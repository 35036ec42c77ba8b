import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  commitFailed,
  commitNotFound,
  commitOk,
  commitWriteUncertain,
  DICT_MAX_LINE_BYTES,
  DictLineSplitter,
  DictProtocolError,
  expectsReply,
  iterateEnd,
  iterateFailed,
  iterateRow,
  lookupFailed,
  lookupFound,
  lookupNotFound,
  parseCommand,
  sanitizeError,
  tabEscape,
  tabUnescape,
  type DictCommand,
  type DictErrorCode,
} from '../../../src/dict/codec.ts';
import { prng as rng } from '../../support/prng.ts';


const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

/** Characters that matter to the protocol, plus multi-byte UTF-8 and a surrogate pair. */
const ALPHABET = ['a', 'Z', '0', '9', '-', '/', '@', ' ', '\t', '\n', '\r', '\x00', '\x01', '\x01', 't', 'n', 'é', '€', '😀', '\\'];

function randomString(rand: () => number, max = 24): string {
  let s = '';
  const n = Math.floor(rand() * max);
  for (let i = 0; i < n; i++) s += pick(rand, ALPHABET);
  return s;
}

// ---------------------------------------------------------------------------

describe('tab escaping', () => {
  it('escapes exactly \\x01, TAB, CR, LF and NUL', () => {
    assert.equal(tabEscape('plain/key@example.com'), 'plain/key@example.com');
    assert.equal(tabEscape('x\ty'), 'x\x01ty');
    assert.equal(tabEscape('\x01\t\r\n\x00'), '\x011\x01t\x01r\x01n\x010');
    assert.equal(tabEscape('\x01t'), '\x011t');
    assert.equal(tabEscape(''), '');
  });

  it('unescapes every sequence and refuses unknown or dangling ones', () => {
    assert.equal(tabUnescape('x\x01ty'), 'x\ty');
    assert.equal(tabUnescape('\x011\x01t\x01r\x01n\x010'), '\x01\t\r\n\x00');
    assert.equal(tabUnescape('\x011t'), '\x01t');
    for (const bad of ['\x01', 'abc\x01', '\x01x', '\x01T', '\x01\x01']) {
      const r = tabUnescape(bad);
      assert.ok(r instanceof DictProtocolError, JSON.stringify(bad));
      assert.equal(r.code, 'bad_escape');
    }
  });

  it('round-trips 20000 random strings, and escaped text has no raw separators', () => {
    const rand = rng(1);
    for (let i = 0; i < 20_000; i++) {
      const s = randomString(rand);
      const e = tabEscape(s);
      assert.doesNotMatch(e, /[\t\r\n\x00]/);
      assert.equal(tabUnescape(e), s);
    }
  });
});

// ---------------------------------------------------------------------------

describe('parseCommand: lines captured from Dovecot (dovecot.md §2.7, doveadm dict)', () => {
  const CAPTURED: Array<[version: string, line: string, cmd: DictCommand]> = [
    ['2.3', 'H3\t2\t0\t\tauth', { cmd: 'hello', major: 3, minor: 2, valueType: 0, user: '', name: 'auth' }],
    ['2.3', 'Lshared/passdb/alice@example.com\talice@example.com', { cmd: 'lookup', key: 'shared/passdb/alice@example.com', user: 'alice@example.com' }],
    ['2.3', 'Lshared/passdb/nobody@example.com\tnobody@example.com', { cmd: 'lookup', key: 'shared/passdb/nobody@example.com', user: 'nobody@example.com' }],
    ['2.3', 'I0\t0\tshared/userdb/\t*', { cmd: 'iterate', flags: 0, maxRows: 0, path: 'shared/userdb/', user: '*' }],
    ['2.3', 'H3\t2\t0\t\tlastlogin', { cmd: 'hello', major: 3, minor: 2, valueType: 0, user: '', name: 'lastlogin' }],
    ['2.3', 'B1\talice@example.com', { cmd: 'begin', id: 1, user: 'alice@example.com' }],
    ['2.3', 'S1\tshared/last-login/alice@example.com\t1795424008', { cmd: 'set', id: 1, key: 'shared/last-login/alice@example.com', value: '1795424008' }],
    ['2.3', 'C1', { cmd: 'commit', id: 1 }],
    ['2.3', 'Lpriv/quota/storage\talice@example.com', { cmd: 'lookup', key: 'priv/quota/storage', user: 'alice@example.com' }],
    ['2.3', 'U1\tpriv/quota/storage', { cmd: 'unset', id: 1, key: 'priv/quota/storage' }],
    ['2.3', 'S1\tpriv/quota/messages\t0', { cmd: 'set', id: 1, key: 'priv/quota/messages', value: '0' }],
    ['2.3', 'A1\tpriv/counter\t5', { cmd: 'atomicInc', id: 1, key: 'priv/counter', diff: 5n }],
    ['2.3', 'S1\tshared/foo/a\tx\x01ty', { cmd: 'set', id: 1, key: 'shared/foo/a', value: 'x\ty' }],
    // doveadm dict without -u sends an empty user; -1 -R -V iterate flags; a negative inc.
    ['2.3', 'B1\t', { cmd: 'begin', id: 1, user: '' }],
    ['2.3', 'Lshared/foo\t', { cmd: 'lookup', key: 'shared/foo', user: '' }],
    ['2.3', 'I25\t0\tshared/\talice', { cmd: 'iterate', flags: 25, maxRows: 0, path: 'shared/', user: 'alice' }],
    ['2.3', 'A1\tshared/x\t-3', { cmd: 'atomicInc', id: 1, key: 'shared/x', diff: -3n }],
    ['2.3', 'S1\tshared/x\t', { cmd: 'set', id: 1, key: 'shared/x', value: '' }],
    ['2.4', 'H4\t0\t0\t\tlastlogin', { cmd: 'hello', major: 4, minor: 0, valueType: 0, user: '', name: 'lastlogin' }],
    ['2.4', 'B1\talice@example.com\t0', { cmd: 'begin', id: 1, user: 'alice@example.com' }],
    ['2.4', 'S1\tshared/last-login/alice@example.com\t1795424261', { cmd: 'set', id: 1, key: 'shared/last-login/alice@example.com', value: '1795424261' }],
    ['2.4', 'H4\t0\t0\t\tquotaclone', { cmd: 'hello', major: 4, minor: 0, valueType: 0, user: '', name: 'quotaclone' }],
    ['2.4', 'S1\tpriv/quota/storage\t5', { cmd: 'set', id: 1, key: 'priv/quota/storage', value: '5' }],
    ['2.4', 'S1\tpriv/quota/messages\t1', { cmd: 'set', id: 1, key: 'priv/quota/messages', value: '1' }],
    ['2.4', 'C1', { cmd: 'commit', id: 1 }],
    // Other commands from the §2.3 table.
    ['2.4', 'B7\talice@example.com\t3600', { cmd: 'begin', id: 7, user: 'alice@example.com', expireSecs: 3600 }],
    ['2.4', 'V7\tyes', { cmd: 'hideLogValues', id: 7, hide: true }],
    ['2.4', 'V7\tno', { cmd: 'hideLogValues', id: 7, hide: false }],
    ['2.3', 'T7\t1795424008\t123456789', { cmd: 'timestamp', id: 7, secs: 1795424008, nsecs: 123456789 }],
    ['2.3', 'R7', { cmd: 'rollback', id: 7 }],
    ['2.3', 'D7', { cmd: 'commitAsync', id: 7 }],
    ['2.3', 'B1', { cmd: 'begin', id: 1, user: '' }],
    ['2.3', 'I3\t10\tshared/a', { cmd: 'iterate', flags: 3, maxRows: 10, path: 'shared/a', user: '' }],
    ['2.3', 'A4294967295\tk\t-9223372036854775808', { cmd: 'atomicInc', id: 4294967295, key: 'k', diff: -(2n ** 63n) }],
    ['2.3', 'A1\tk\t9223372036854775807', { cmd: 'atomicInc', id: 1, key: 'k', diff: 2n ** 63n - 1n }],
    ['2.3', 'I0\t18446744073709551615\tshared/\tu', { cmd: 'iterate', flags: 0, maxRows: Number.MAX_SAFE_INTEGER, path: 'shared/', user: 'u' }],
    ['2.3', 'H3\t2\t1\t\tquota', { cmd: 'hello', major: 3, minor: 2, valueType: 1, user: '', name: 'quota' }],
    ['2.3', 'Lshared/k\x01n\x01r\x010\x011\tü', { cmd: 'lookup', key: 'shared/k\n\r\x00\x01', user: 'ü' }],
  ];

  for (const [version, line, want] of CAPTURED) {
    it(`${version}: ${JSON.stringify(line)}`, () => {
      const bytes = Buffer.from(line, 'utf8');
      assert.deepEqual(parseCommand(bytes), want);
      assert.deepEqual(parseCommand(bytes.toString('utf8')), want);
    });
  }

  it('knows which commands get a reply', () => {
    const replied = CAPTURED.filter(([, , c]) => expectsReply(c)).map(([, , c]) => c.cmd);
    assert.deepEqual([...new Set(replied)].sort(), ['commit', 'commitAsync', 'iterate', 'lookup']);
  });
});

describe('parseCommand: invalid lines', () => {
  const INVALID: Array<[line: string | Buffer, code: DictErrorCode]> = [
    ['', 'empty_line'],
    ['X', 'unknown_command'],
    ['P1\tk\tv', 'unknown_command'], // APPEND: not part of the 2.3/2.4 protocol we accept
    ['\x00', 'unknown_command'],
    ['h3\t2\t0\t\tx', 'unknown_command'],
    ['H2\t2\t0\t\tauth', 'bad_version'],
    ['H5\t0\t0\t\tauth', 'bad_version'],
    ['H3\t2\t2\t\tauth', 'bad_version'],
    ['H3\t2\t0\t\tauth\textra', 'bad_arguments'],
    ['H3\t2', 'bad_arguments'],
    ['Hx\t2\t0\t\tauth', 'bad_number'],
    ['H3\t-1\t0\t\tauth', 'bad_number'],
    ['Lk\tu\textra', 'bad_arguments'],
    ['Lk\x01', 'bad_escape'],
    ['Lk\x01x\tu', 'bad_escape'],
    ['I0\t0', 'bad_arguments'],
    ['I0\t0\tp\tu\tx', 'bad_arguments'],
    ['Ix\t0\tp', 'bad_number'],
    ['I-1\t0\tp', 'bad_number'],
    ['I0\t18446744073709551616\tp', 'bad_number'],
    ['I4294967296\t0\tp', 'bad_number'],
    ['B', 'bad_number'],
    ['B1\tu\t0\tx', 'bad_arguments'],
    ['B1\tu\tsoon', 'bad_number'],
    ['B-1\tu', 'bad_number'],
    ['B+1\tu', 'bad_number'],
    ['B 1\tu', 'bad_number'],
    ['B4294967296\tu', 'bad_number'],
    ['S1\tk', 'bad_arguments'],
    ['S1\tk\tv\tw', 'bad_arguments'],
    ['Sx\tk\tv', 'bad_number'],
    ['U1', 'bad_arguments'],
    ['U1\tk\tv', 'bad_arguments'],
    ['A1\tk', 'bad_arguments'],
    ['A1\tk\t1.5', 'bad_number'],
    ['A1\tk\t+1', 'bad_number'],
    ['A1\tk\t', 'bad_number'],
    ['A1\tk\t-', 'bad_number'],
    ['A1\tk\t9223372036854775808', 'bad_number'],
    ['A1\tk\t-9223372036854775809', 'bad_number'],
    ['T1\t5\t1000000000', 'bad_number'],
    ['T1\tx\t0', 'bad_number'],
    ['T1\t99999999999999999\t0', 'bad_number'],
    ['T1\t5', 'bad_arguments'],
    ['V1\tmaybe', 'bad_arguments'],
    ['V1', 'bad_arguments'],
    ['R', 'bad_number'],
    ['R1\t2', 'bad_arguments'],
    ['C', 'bad_number'],
    ['C1\tx', 'bad_arguments'],
    ['C4294967296', 'bad_number'],
    ['D1 ', 'bad_number'],
    [Buffer.from([0x4c, 0xff, 0xfe, 0x09, 0x75]), 'bad_utf8'],
    [Buffer.from([0x4c, 0xc3]), 'bad_utf8'],
  ];

  for (const [line, code] of INVALID) {
    it(`${JSON.stringify(typeof line === 'string' ? line : `bytes:${line.toString('hex')}`)} → ${code}`, () => {
      const r = parseCommand(typeof line === 'string' ? Buffer.from(line, 'utf8') : line);
      assert.ok(r instanceof DictProtocolError, `parsed as ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`);
      assert.equal(r.code, code);
      assert.ok(r.message.length > 0);
    });
  }
});

// ---------------------------------------------------------------------------

/** The client side of a command, for round trips. */
function encodeCommand(c: DictCommand): string {
  const e = tabEscape;
  switch (c.cmd) {
    case 'hello':
      return `H${c.major}\t${c.minor}\t${c.valueType}\t${e(c.user)}\t${e(c.name)}`;
    case 'lookup':
      return `L${e(c.key)}\t${e(c.user)}`;
    case 'iterate':
      return `I${c.flags}\t${c.maxRows}\t${e(c.path)}\t${e(c.user)}`;
    case 'begin':
      return `B${c.id}\t${e(c.user)}${c.expireSecs === undefined ? '' : `\t${c.expireSecs}`}`;
    case 'set':
      return `S${c.id}\t${e(c.key)}\t${e(c.value)}`;
    case 'unset':
      return `U${c.id}\t${e(c.key)}`;
    case 'atomicInc':
      return `A${c.id}\t${e(c.key)}\t${c.diff}`;
    case 'timestamp':
      return `T${c.id}\t${c.secs}\t${c.nsecs}`;
    case 'hideLogValues':
      return `V${c.id}\t${c.hide ? 'yes' : 'no'}`;
    case 'rollback':
      return `R${c.id}`;
    case 'commit':
      return `C${c.id}`;
    case 'commitAsync':
      return `D${c.id}`;
  }
}

function randomCommand(rand: () => number): DictCommand {
  const id = Math.floor(rand() * 2 ** 32);
  const s = () => randomString(rand);
  switch (Math.floor(rand() * 12)) {
    case 0:
      return { cmd: 'hello', major: pick(rand, [3, 4]), minor: Math.floor(rand() * 5), valueType: pick(rand, [0, 1]), user: s(), name: s() };
    case 1:
      return { cmd: 'lookup', key: s(), user: s() };
    case 2:
      return { cmd: 'iterate', flags: Math.floor(rand() * 64), maxRows: Math.floor(rand() * 1000), path: s(), user: s() };
    case 3:
      return rand() < 0.5 ? { cmd: 'begin', id, user: s() } : { cmd: 'begin', id, user: s(), expireSecs: 1 + Math.floor(rand() * 1e6) };
    case 4:
      return { cmd: 'set', id, key: s(), value: s() };
    case 5:
      return { cmd: 'unset', id, key: s() };
    case 6:
      return { cmd: 'atomicInc', id, key: s(), diff: BigInt(Math.floor((rand() - 0.5) * 2 ** 53)) * BigInt(Math.floor(rand() * 1000)) };
    case 7:
      return { cmd: 'timestamp', id, secs: Math.floor((rand() - 0.2) * 2 ** 40), nsecs: Math.floor(rand() * 1e9) };
    case 8:
      return { cmd: 'hideLogValues', id, hide: rand() < 0.5 };
    case 9:
      return { cmd: 'rollback', id };
    case 10:
      return { cmd: 'commit', id };
    default:
      return { cmd: 'commitAsync', id };
  }
}

describe('parseCommand: round trips and fuzzing', () => {
  it('parses 20000 random well-formed commands back to themselves', () => {
    const rand = rng(2);
    for (let i = 0; i < 20_000; i++) {
      const c = randomCommand(rand);
      const line = encodeCommand(c);
      assert.doesNotMatch(line, /[\n\r\x00]/);
      assert.deepEqual(parseCommand(Buffer.from(line, 'utf8')), c, JSON.stringify(line));
    }
  });

  it('never throws on 20000 random lines: a command or a DictProtocolError', () => {
    const rand = rng(3);
    const letters = [...'HLIBSUATVRCDPXh\x00\x01\t'];
    const pieces = ['\t', '\x01', '\x01t', '\x011', '0', '1', '-', '4294967296', '18446744073709551616', '9223372036854775808', 'yes', 'no', 'shared/', 'é', '\uFFFD', ' '];
    let parsed = 0;
    const codes = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      let line: Buffer;
      const kind = rand();
      if (kind < 0.25) {
        line = Buffer.from(Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256)));
      } else if (kind < 0.6) {
        // A valid command with a few random byte edits: flips, insertions, deletions, truncation.
        const bytes = [...Buffer.from(encodeCommand(randomCommand(rand)), 'utf8')];
        const edits = Math.floor(rand() * 3);
        for (let e = 0; e < edits && bytes.length > 0; e++) {
          const at = Math.floor(rand() * bytes.length);
          const op = rand();
          if (op < 0.4) bytes[at] = pick(rand, [0x09, 0x01, 0x2d, 0x30, 0x39, 0x74, 0xff, 0xc3, Math.floor(rand() * 256)]);
          else if (op < 0.7) bytes.splice(at, 0, pick(rand, [0x09, 0x01, 0x31]));
          else if (op < 0.9) bytes.splice(at, 1);
          else bytes.length = at;
        }
        line = Buffer.from(bytes);
      } else {
        let text = pick(rand, letters);
        const n = Math.floor(rand() * 8);
        for (let j = 0; j < n; j++) text += pick(rand, pieces) + (rand() < 0.5 ? randomString(rand, 6) : '');
        line = Buffer.from(text, 'utf8');
      }
      let r: DictCommand | DictProtocolError;
      try {
        r = parseCommand(line);
      } catch (err) {
        assert.fail(`parseCommand threw on ${line.toString('hex')}: ${String(err)}`);
      }
      if (r instanceof DictProtocolError) codes.add(r.code);
      else parsed++;
    }
    assert.ok(parsed > 2000, `fuzzer too weak: only ${parsed} lines parsed`);
    assert.deepEqual([...codes].sort(), ['bad_arguments', 'bad_escape', 'bad_number', 'bad_utf8', 'bad_version', 'empty_line', 'unknown_command']);
  });
});

// ---------------------------------------------------------------------------

/** Splits `input` into the given chunks; returns the lines (utf8) and the error code, if any. */
function split(chunks: readonly Buffer[], max: number): { lines: string[]; error?: DictErrorCode } {
  const splitter = new DictLineSplitter(max);
  const lines: string[] = [];
  for (const chunk of chunks) {
    try {
      for (const l of splitter.push(chunk)) lines.push(l.toString('utf8'));
    } catch (err) {
      assert.ok(err instanceof DictProtocolError, `unexpected ${String(err)}`);
      for (const l of err.lines) lines.push(l.toString('utf8'));
      assert.throws(() => splitter.push(Buffer.from('C1\n')), DictProtocolError, 'stays failed');
      return { lines, error: err.code };
    }
  }
  return { lines };
}

/** Every way to cut `input` into two chunks, three chunks around a middle byte, and single bytes. */
function* chunkings(input: Buffer): Generator<Buffer[]> {
  yield [input];
  for (let i = 0; i <= input.length; i++) yield [input.subarray(0, i), input.subarray(i)];
  for (let i = 0; i < input.length; i++) yield [input.subarray(0, i), input.subarray(i, i + 1), input.subarray(i + 1)];
  yield Array.from(input, (b) => Buffer.from([b]));
}

describe('DictLineSplitter', () => {
  const MAX = 16;
  const CASES: Array<[input: string, lines: string[], error?: DictErrorCode]> = [
    ['', []],
    ['\n', ['']],
    ['C1\n', ['C1']],
    ['C1', []],
    ['C1\r\n', ['C1']],
    ['a\rb\n', ['a\rb']],
    ['\r\n\r\n', ['', '']],
    ['H3\t2\t0\t\tauth\nLk\tu\n', ['H3\t2\t0\t\tauth', 'Lk\tu']],
    ['é€😀\nx\n', ['é€😀', 'x']],
    [`${'x'.repeat(16)}\n`, ['x'.repeat(16)]],
    [`${'x'.repeat(15)}\r\n`, ['x'.repeat(15)]],
    [`${'x'.repeat(17)}\n`, [], 'line_too_long'],
    [`${'x'.repeat(17)}`, [], 'line_too_long'],
    [`ok\n${'x'.repeat(16)}\r\n`, ['ok'], 'line_too_long'],
    [`a\nb\n${'y'.repeat(40)}\nc\n`, ['a', 'b'], 'line_too_long'],
  ];

  for (const [input, lines, error] of CASES) {
    it(`${JSON.stringify(input)} split at every byte`, () => {
      const bytes = Buffer.from(input, 'utf8');
      for (const chunks of chunkings(bytes)) {
        const got = split(chunks, MAX);
        assert.deepEqual(got.lines, lines, `chunks ${JSON.stringify(chunks.map((c) => c.toString('latin1')))}`);
        assert.equal(got.error, error, `chunks ${JSON.stringify(chunks.map((c) => c.toString('latin1')))}`);
      }
    });
  }

  it('refuses an endless line as soon as it passes the limit, without buffering more', () => {
    const splitter = new DictLineSplitter(1000);
    assert.equal(splitter.pending, false);
    assert.deepEqual(splitter.push(Buffer.alloc(600, 0x61)), []);
    assert.equal(splitter.pending, true);
    assert.throws(() => splitter.push(Buffer.alloc(600, 0x61)), (err: unknown) => err instanceof DictProtocolError && err.code === 'line_too_long');
  });

  it('accepts a 64 KiB value line by default and refuses one past the margin', () => {
    assert.ok(DICT_MAX_LINE_BYTES > 64 * 1024);
    const splitter = new DictLineSplitter();
    const line = `S1\tshared/big\t${'v'.repeat(64 * 1024)}`;
    assert.deepEqual(splitter.push(Buffer.from(`${line}\n`)).map((l) => l.length), [line.length]);
    assert.throws(() => splitter.push(Buffer.alloc(DICT_MAX_LINE_BYTES + 1, 0x61)), DictProtocolError);
  });

  it('returns random streams cut into random chunks intact (5000 streams)', () => {
    const rand = rng(4);
    for (let n = 0; n < 5000; n++) {
      const want = Array.from({ length: Math.floor(rand() * 6) }, () => randomString(rand, 12).replace(/\n/g, '').replace(/\r+$/, ''));
      const bytes = Buffer.from(want.map((l) => `${l}${rand() < 0.3 ? '\r' : ''}\n`).join(''), 'utf8');
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; ) {
        const k = 1 + Math.floor(rand() * 9);
        chunks.push(bytes.subarray(i, i + k));
        i += k;
      }
      assert.deepEqual(split(chunks, 1000), { lines: want });
    }
  });

  it('never throws anything but DictProtocolError on random bytes', () => {
    const rand = rng(5);
    for (let n = 0; n < 2000; n++) {
      const splitter = new DictLineSplitter(1 + Math.floor(rand() * 40));
      for (let k = 0; k < 10; k++) {
        const chunk = Buffer.from(Array.from({ length: Math.floor(rand() * 30) }, () => (rand() < 0.1 ? 0x0a : Math.floor(rand() * 256))));
        try {
          for (const line of splitter.push(chunk)) {
            assert.ok(line.length <= splitter.maxLineBytes);
            assert.equal(line.includes(0x0a), false);
          }
        } catch (err) {
          assert.ok(err instanceof DictProtocolError, String(err));
          assert.equal(err.code, 'line_too_long');
        }
      }
    }
  });

  it('rejects a nonsensical limit', () => {
    assert.throws(() => new DictLineSplitter(0), RangeError);
    assert.throws(() => new DictLineSplitter(1.5), RangeError);
  });
});

// ---------------------------------------------------------------------------

describe('reply encoders', () => {
  it('match the replies Dovecot clients read (dovecot.md §2.4, §2.7)', () => {
    const json = '{"password":"{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$jeDu$SdEz","userdb_uid":5000}';
    assert.equal(lookupFound(json), `O${json}\n`);
    assert.equal(lookupFound('0'), 'O0\n');
    assert.equal(lookupFound(''), 'O\n');
    assert.equal(lookupFound('x\ty\nz'), 'Ox\x01ty\x01nz\n');
    assert.equal(lookupNotFound(), 'N\n');
    assert.equal(lookupFailed('db down'), 'Fdb down\n');
    assert.equal(lookupFailed('two\nlines\tand\x01'), 'Ftwo lines and\n');
    assert.equal(lookupFailed(''), 'Funspecified error\n');
    assert.equal(iterateRow('shared/userdb/alice@example.com', '{"uid":5000}'), 'Oshared/userdb/alice@example.com\t{"uid":5000}\n');
    assert.equal(iterateRow('shared/a\tb'), 'Oshared/a\x01tb\t\n');
    assert.equal(iterateRow('k', 'v\x01'), 'Ok\tv\x011\n');
    assert.equal(iterateEnd(), '\n');
    assert.equal(iterateFailed('iter broke'), 'Fiter broke\n');
    assert.equal(commitOk(1), 'O1\n');
    assert.equal(commitNotFound(1), 'N1\n');
    assert.equal(commitFailed(1, 'disk full'), 'F1\tdisk full\n');
    assert.equal(commitWriteUncertain(3, 'timeout'), 'W3\ttimeout\n');
    assert.equal(commitOk(4294967295, true), 'AO4294967295\n');
    assert.equal(commitNotFound(2, true), 'AN2\n');
    assert.equal(commitFailed(2, 'x', true), 'AF2\tx\n');
  });

  it('every reply is exactly one line, whatever the input', () => {
    const rand = rng(6);
    for (let i = 0; i < 5000; i++) {
      const s = randomString(rand, 40);
      for (const r of [lookupFound(s), lookupFailed(s), iterateFailed(s), commitFailed(i, s), iterateRow(s, s), iterateRow(s)]) {
        assert.equal(r.indexOf('\n'), r.length - 1);
        assert.doesNotMatch(r.slice(0, -1), /[\r\x00]/);
      }
      assert.equal(tabUnescape(lookupFound(s).slice(1, -1)), s);
    }
  });

  it('shortens long failure texts without splitting a character', () => {
    const long = '😀'.repeat(300);
    const clean = sanitizeError(long);
    assert.equal(Array.from(clean).length, 200);
    assert.ok(clean.isWellFormed());
  });
});
