import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  commandExpectsReply,
  encodeCommand,
  encodeReply,
  MILTER_MAX_FRAME_BYTES,
  MilterCodecError,
  MilterDecoder,
  MilterReplyDecoder,
  negotiate,
  replyCode,
  type MilterCodecErrorCode,
  type MilterCommand,
  type MilterReply,
  type MilterSimpleReplyType,
} from '../../../src/milter/codec.ts';
import {
  MILTER_CHUNK_SIZE,
  POSTFIX_OPTNEG,
  SMFI_CURR_ACTS,
  SMFI_CURR_PROT,
  SMFI_PROT_VERSION,
  SMFIA,
  SMFIC,
  SMFIF,
  SMFIM,
  SMFIP,
  SMFIR,
} from '../../../src/milter/constants.ts';
import { prng as rng } from '../../support/prng.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const latin1 = (s: string) => Buffer.from(s, 'latin1');
const b = (s: string) => Buffer.from(s, 'utf8');

/**
 * A packet built by hand, independent of encodeCommand/encodeReply: big-endian
 * length (data + 1), the command letter, the data. Strings are written as
 * latin1 bytes verbatim, so NULs appear exactly where the test puts them.
 */
function frame(letter: string, ...parts: Array<string | Buffer>): Buffer {
  const data = Buffer.concat(parts.map((p) => (typeof p === 'string' ? latin1(p) : p)));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length + 1, 0);
  head[4] = letter.charCodeAt(0);
  return Buffer.concat([head, data]);
}

const u32 = (n: number) => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n, 0);
  return out;
};
const u16 = (n: number) => {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(n, 0);
  return out;
};


type Decoded<T> = { items: T[]; error?: MilterCodecErrorCode };

function decodeCommands(chunks: readonly Buffer[], maxFrameBytes?: number): Decoded<MilterCommand> {
  const decoder = new MilterDecoder(maxFrameBytes === undefined ? undefined : { maxFrameBytes });
  const items: MilterCommand[] = [];
  for (const chunk of chunks) {
    try {
      items.push(...decoder.push(chunk));
    } catch (err) {
      assert.ok(err instanceof MilterCodecError, `unexpected ${String(err)}`);
      items.push(...err.commands);
      return { items, error: err.code };
    }
  }
  assert.equal(decoder.pending, false, 'stream ended inside a packet');
  return { items };
}

function decodeReplies(chunks: readonly Buffer[]): Decoded<MilterReply> {
  const decoder = new MilterReplyDecoder();
  const items: MilterReply[] = [];
  for (const chunk of chunks) {
    try {
      items.push(...decoder.push(chunk));
    } catch (err) {
      assert.ok(err instanceof MilterCodecError, `unexpected ${String(err)}`);
      items.push(...err.replies);
      return { items, error: err.code };
    }
  }
  assert.equal(decoder.pending, false, 'stream ended inside a packet');
  return { items };
}

/** Splits `input` into chunks of random sizes; `big` allows chunks up to 100 KB, else up to 16 bytes. */
function randomChunks(input: Buffer, rand: () => number, big: boolean): Buffer[] {
  const chunks: Buffer[] = [];
  let i = 0;
  while (i < input.length) {
    const limit = big && rand() < 0.5 ? 100_000 : 16;
    const n = 1 + Math.floor(rand() * Math.min(limit, input.length - i));
    chunks.push(input.subarray(i, i + n));
    i += n;
  }
  return chunks;
}

const macros = (...pairs: string[]) => {
  const m = new Map<string, string>();
  for (let k = 0; k < pairs.length; k += 2) m.set(pairs[k]!, pairs[k + 1]!);
  return m;
};

// One SMTP session as Postfix 3.7.11 sends it with the default macro lists
// (postfix.md §3.6): OPTNEG, then every event preceded by its `D` packet.
const SESSION: Array<[Buffer, MilterCommand]> = [
  [hex('0000000d 4f 00000006 000001ff 001fffff'), { type: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff }],
  [
    frame('D', 'C', 'j\0mx.example.org\0{daemon_name}\0mx.example.org\0{daemon_addr}\x00192.0.2.25\0v\0Postfix 3.7.11\0_\0mail.example.net [198.51.100.7]\0'),
    {
      type: 'macro',
      forCommand: 'C',
      macros: macros('j', 'mx.example.org', '{daemon_name}', 'mx.example.org', '{daemon_addr}', '192.0.2.25', 'v', 'Postfix 3.7.11', '_', 'mail.example.net [198.51.100.7]'),
    },
  ],
  [
    frame('C', 'mail.example.net\0', '4', u16(51234), '198.51.100.7\0'),
    { type: 'connect', hostname: 'mail.example.net', family: '4', port: 51234, address: '198.51.100.7' },
  ],
  [
    frame('D', 'H', '{tls_version}\0TLSv1.3\0{cipher}\0TLS_AES_256_GCM_SHA384\0{cipher_bits}\x00256\0'),
    { type: 'macro', forCommand: 'H', macros: macros('{tls_version}', 'TLSv1.3', '{cipher}', 'TLS_AES_256_GCM_SHA384', '{cipher_bits}', '256') },
  ],
  [frame('H', 'mail.example.net\0'), { type: 'helo', name: 'mail.example.net' }],
  // Before the first RCPT there is no queue ID, and the client did not authenticate: only {mail_addr}.
  [frame('D', 'M', '{mail_addr}\0alice@example.net\0'), { type: 'macro', forCommand: 'M', macros: macros('{mail_addr}', 'alice@example.net') }],
  [frame('M', '<alice@example.net>\0SIZE=2048\0BODY=8BITMIME\0'), { type: 'mail', args: ['<alice@example.net>', 'SIZE=2048', 'BODY=8BITMIME'] }],
  [
    frame('D', 'R', 'i\x004XyZ1b2C3dz9K\0{rcpt_addr}\0bob@example.org\0{rcpt_host}\0example.org\0{rcpt_mailer}\0smtp\0'),
    { type: 'macro', forCommand: 'R', macros: macros('i', '4XyZ1b2C3dz9K', '{rcpt_addr}', 'bob@example.org', '{rcpt_host}', 'example.org', '{rcpt_mailer}', 'smtp') },
  ],
  [frame('R', '<bob@example.org>\0'), { type: 'rcpt', args: ['<bob@example.org>'] }],
  [frame('D', 'T', 'i\x004XyZ1b2C3dz9K\0'), { type: 'macro', forCommand: 'T', macros: macros('i', '4XyZ1b2C3dz9K') }],
  [hex('00000001 54'), { type: 'data' }],
  [frame('D', 'L', 'i\x004XyZ1b2C3dz9K\0'), { type: 'macro', forCommand: 'L', macros: macros('i', '4XyZ1b2C3dz9K') }],
  [frame('L', 'From\0Alice <alice@example.net>\0'), { type: 'header', name: 'From', value: b('Alice <alice@example.net>') }],
  // A folded header: Postfix joins the lines with a bare LF.
  [frame('L', 'Subject\0=?UTF-8?Q?caf=C3=A9?=\n\tand more\0'), { type: 'header', name: 'Subject', value: b('=?UTF-8?Q?caf=C3=A9?=\n\tand more') }],
  // With SMFIP_HDR_LEADSPC the value keeps everything after the colon; 8-bit bytes stay as they are.
  [frame('L', 'X-Raw\0  caf', hex('e9'), '\0'), { type: 'header', name: 'X-Raw', value: Buffer.concat([b('  caf'), hex('e9')]) }],
  [frame('D', 'N', 'i\x004XyZ1b2C3dz9K\0'), { type: 'macro', forCommand: 'N', macros: macros('i', '4XyZ1b2C3dz9K') }],
  [hex('00000001 4e'), { type: 'eoh' }],
  [frame('D', 'B', 'i\x004XyZ1b2C3dz9K\0'), { type: 'macro', forCommand: 'B', macros: macros('i', '4XyZ1b2C3dz9K') }],
  [frame('B', 'Hello Bob,\r\n.leading dot, unstuffed\r\n\0binary\xff\r\n'), { type: 'body', chunk: latin1('Hello Bob,\r\n.leading dot, unstuffed\r\n\0binary\xff\r\n') }],
  // Postfix sends the end-of-data macros with `E` too, and an empty macro list is legal.
  [frame('D', 'E'), { type: 'macro', forCommand: 'E', macros: new Map() }],
  [hex('00000001 45'), { type: 'bodyEob' }],
  [hex('00000001 41'), { type: 'abort' }],
  [hex('00000001 41'), { type: 'abort' }],
  [frame('D', 'U'), { type: 'macro', forCommand: 'U', macros: new Map() }],
  [frame('U', 'XCLIENT NAME=spike.porcupine.org\0'), { type: 'unknown', command: 'XCLIENT NAME=spike.porcupine.org' }],
  [hex('00000001 51'), { type: 'quit' }],
];

const SESSION_STREAM = Buffer.concat(SESSION.map(([wire]) => wire));
const SESSION_COMMANDS = SESSION.map(([, cmd]) => cmd);

describe('milter constants', () => {
  it('match libmilter 8.17.1.9 mfdef.h / mfapi.h', () => {
    assert.equal(SMFI_PROT_VERSION, 6);
    assert.equal(MILTER_CHUNK_SIZE, 65535);
    const letters = (o: Record<string, string>) => Object.values(o).map((c) => c.charCodeAt(0).toString(16)).join(' ');
    // SMFIC_ABORT 'A' … SMFIC_UNKNOWN 'U', in mfdef.h order.
    assert.equal(letters(SMFIC), '41 42 43 44 45 48 4b 4c 4d 4e 4f 51 52 54 55');
    // SMFIR_ADDRCPT '+' … SMFIR_REPLYCODE 'y', in mfdef.h order.
    assert.equal(letters(SMFIR), '2b 2d 32 34 61 62 63 64 65 66 68 69 6c 6d 70 71 72 73 74 79');
    assert.deepEqual(SMFIA, { UNKNOWN: 'U', UNIX: 'L', INET: '4', INET6: '6' });
    assert.deepEqual(Object.values(SMFIF), [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100]);
    assert.deepEqual(SMFIM, { CONNECT: 0, HELO: 1, ENVFROM: 2, ENVRCPT: 3, DATA: 4, EOM: 5, EOH: 6 });
    assert.deepEqual(
      { ...SMFIP },
      {
        NOCONNECT: 0x1, NOHELO: 0x2, NOMAIL: 0x4, NORCPT: 0x8, NOBODY: 0x10, NOHDRS: 0x20, NOEOH: 0x40, NR_HDR: 0x80,
        NOUNKNOWN: 0x100, NODATA: 0x200, SKIP: 0x400, RCPT_REJ: 0x800, NR_CONN: 0x1000, NR_HELO: 0x2000, NR_MAIL: 0x4000,
        NR_RCPT: 0x8000, NR_DATA: 0x10000, NR_UNKN: 0x20000, NR_EOH: 0x40000, NR_BODY: 0x80000, HDR_LEADSPC: 0x100000,
        MDS_256K: 0x10000000, MDS_1M: 0x20000000,
      },
    );
    // SMFI_CURR_ACTS / SMFI_CURR_PROT are exactly the defined bits (MDS_* are internal).
    assert.equal(SMFI_CURR_ACTS, Object.values(SMFIF).reduce((a, f) => a | f, 0));
    assert.equal(SMFI_CURR_PROT, Object.entries(SMFIP).filter(([k]) => !k.startsWith('MDS_')).reduce((a, [, f]) => a | f, 0));
    assert.deepEqual({ ...POSTFIX_OPTNEG }, { version: 6, actions: 0x1ff, protocol: 0x1fffff });
  });
});

describe('MilterDecoder', () => {
  it('decodes every command of a Postfix 3.7 session from hand-built packets', () => {
    const { items, error } = decodeCommands([SESSION_STREAM]);
    assert.equal(error, undefined);
    assert.deepEqual(items, SESSION_COMMANDS);
  });

  it('decodes each packet on its own as well', () => {
    for (const [wire, cmd] of SESSION) assert.deepEqual(decodeCommands([wire]).items, [cmd], wire.toString('latin1'));
  });

  it('decodes CONNECT for IPv6, UNIX and unknown families and an unverified client name', () => {
    const cases: Array<[Buffer, MilterCommand]> = [
      [
        frame('C', '[2001:db8::25]\0', '6', u16(40001), '2001:db8::25\0'),
        { type: 'connect', hostname: '[2001:db8::25]', family: '6', port: 40001, address: '2001:db8::25' },
      ],
      [frame('C', 'localhost\0', 'L', u16(0), '/var/run/smtp.sock\0'), { type: 'connect', hostname: 'localhost', family: 'L', port: 0, address: '/var/run/smtp.sock' }],
      [frame('C', 'unknown\0', 'U'), { type: 'connect', hostname: 'unknown', family: 'U', port: 0, address: '' }],
    ];
    for (const [wire, cmd] of cases) assert.deepEqual(decodeCommands([wire]).items, [cmd]);
  });

  it('decodes BODYEOB with attached data (Sendmail), OPTNEG with trailing data, QUIT_NC and UTF-8 arguments', () => {
    assert.deepEqual(decodeCommands([frame('E', 'last line\r\n')]).items, [{ type: 'bodyEob', chunk: b('last line\r\n') }]);
    assert.deepEqual(decodeCommands([frame('O', u32(6), u32(0x1ff), u32(0x1fffff), hex('deadbeef'))]).items, [
      { type: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff, extra: hex('deadbeef') },
    ]);
    assert.deepEqual(decodeCommands([hex('00000001 4b')]).items, [{ type: 'quitNc' }]);
    assert.deepEqual(decodeCommands([frame('M', b('<jörg@bücher.example>\0SMTPUTF8\0'))]).items, [{ type: 'mail', args: ['<jörg@bücher.example>', 'SMTPUTF8'] }]);
    assert.deepEqual(decodeCommands([frame('M', '<>\0')]).items, [{ type: 'mail', args: ['<>'] }]);
    // Header names are latin1: one char per byte, so the wire bytes come back exactly.
    const [header] = decodeCommands([frame('L', 'X-\xe9\0v\0')]).items;
    assert.ok(header?.type === 'header');
    assert.deepEqual(latin1(header.name), hex('582de9'));
  });

  it('gives identical results for the session split at every byte position, and byte by byte', () => {
    for (let at = 0; at <= SESSION_STREAM.length; at++) {
      const { items, error } = decodeCommands([SESSION_STREAM.subarray(0, at), SESSION_STREAM.subarray(at)]);
      assert.equal(error, undefined, `split at ${at}`);
      assert.deepEqual(items, SESSION_COMMANDS, `split at ${at}`);
    }
    const bytes = [...SESSION_STREAM].map((byte) => Buffer.from([byte]));
    assert.deepEqual(decodeCommands(bytes).items, SESSION_COMMANDS);
  });

  it('returns body and header data without copying when the packet is inside one chunk, copied when it spans chunks', () => {
    const body = Buffer.alloc(MILTER_CHUNK_SIZE, 0x61);
    const wire = encodeCommand({ type: 'body', chunk: body });
    const chunk = Buffer.concat([wire, frame('L', 'Subject\0hi\0')]);
    const [whole, header] = new MilterDecoder().push(chunk);
    assert.ok(whole?.type === 'body' && header?.type === 'header');
    assert.equal(whole.chunk.buffer, chunk.buffer);
    assert.equal(whole.chunk.byteOffset, chunk.byteOffset + 5);
    assert.equal(header.value.buffer, chunk.buffer);

    const decoder = new MilterDecoder();
    const first = Buffer.from(wire.subarray(0, 1000));
    const second = Buffer.from(wire.subarray(1000));
    assert.deepEqual(decoder.push(first), []);
    assert.equal(decoder.pending, true);
    const [spanning] = decoder.push(second);
    assert.ok(spanning?.type === 'body');
    assert.notEqual(spanning.chunk.buffer, first.buffer);
    assert.notEqual(spanning.chunk.buffer, second.buffer);
    // The decoder keeps nothing of the pushed chunks: reusing them afterwards does not touch the result.
    first.fill(0);
    second.fill(0);
    assert.deepEqual(spanning.chunk, body);
  });

  it('round-trips random sessions through encodeCommand and random chunking (seeded)', () => {
    for (const seed of [1, 2, 3, 42, 2024]) {
      const rand = rng(seed);
      const commands = Array.from({ length: 300 }, () => randomCommand(rand));
      const stream = Buffer.concat(commands.map((c) => encodeCommand(c)));
      for (const big of [false, true]) {
        const { items, error } = decodeCommands(randomChunks(stream, rand, big));
        assert.equal(error, undefined, `seed ${seed}`);
        assert.equal(items.length, commands.length);
        items.forEach((item, k) => assert.deepEqual(item, commands[k], `seed ${seed}, command ${k}`));
      }
    }
  });

  const MALFORMED: Array<[string, Buffer, MilterCodecErrorCode]> = [
    ['length 0', hex('00000000'), 'empty_frame'],
    ['length beyond the default limit', u32(MILTER_MAX_FRAME_BYTES + 1), 'frame_too_large'],
    ['length 0xffffffff', hex('ffffffff'), 'frame_too_large'],
    ['unknown command letter', frame('Z'), 'unknown_command'],
    ['command byte NUL', hex('00000001 00'), 'unknown_command'],
    ['reply letter sent as a command', frame('c'), 'unknown_command'],
    ['HELO without NUL', frame('H', 'mail.example.net'), 'bad_payload'],
    ['HELO with two strings', frame('H', 'a\0b\0'), 'bad_payload'],
    ['HELO with no data', frame('H'), 'bad_payload'],
    ['HEADER value without NUL', frame('L', 'From\0a@b'), 'bad_payload'],
    ['HEADER name only', frame('L', 'From\0'), 'bad_payload'],
    ['HEADER with bytes after the value', frame('L', 'From\0a\0x'), 'bad_payload'],
    ['MAIL with no data', frame('M'), 'bad_payload'],
    ['MAIL whose last argument lacks its NUL', frame('M', '<a@b>\0SIZE=1'), 'bad_payload'],
    ['RCPT without NUL', frame('R', '<a@b>'), 'bad_payload'],
    ['MACRO without a command letter', frame('D'), 'bad_payload'],
    ['MACRO name without value', frame('D', 'C', 'j\0mx\0v\0'), 'bad_payload'],
    ['MACRO value without NUL', frame('D', 'C', 'j\0mx'), 'bad_payload'],
    ['CONNECT hostname without NUL', frame('C', 'mail.example.net'), 'bad_payload'],
    ['CONNECT without family', frame('C', 'host\0'), 'bad_payload'],
    ['CONNECT with family X', frame('C', 'host\0', 'X', u16(25), '192.0.2.1\0'), 'bad_payload'],
    ['CONNECT with half a port', frame('C', 'host\0', '4', hex('00')), 'bad_payload'],
    ['CONNECT address without NUL', frame('C', 'host\0', '4', u16(25), '192.0.2.1'), 'bad_payload'],
    ['CONNECT family U with trailing data', frame('C', 'host\0', 'U', u16(0)), 'bad_payload'],
    ['OPTNEG with 11 bytes', frame('O', hex('0000000600000001ff0000')), 'bad_payload'],
    ['DATA with data', frame('T', 'x'), 'bad_payload'],
    ['EOH with data', frame('N', '\0'), 'bad_payload'],
    ['ABORT with data', frame('A', '\0'), 'bad_payload'],
    ['QUIT with data', frame('Q', 'x'), 'bad_payload'],
    ['UNKNOWN without NUL', frame('U', 'XFOO'), 'bad_payload'],
  ];

  for (const [name, wire, code] of MALFORMED) {
    it(`refuses ${name} with ${code}, after handing back the commands before it`, () => {
      const before = hex('00000001 41');
      const { items, error } = decodeCommands([Buffer.concat([before, wire, before])]);
      assert.equal(error, code);
      assert.deepEqual(items, [{ type: 'abort' }]);
    });
  }

  it('refuses an oversized length as soon as the 4 length bytes arrive, and honours maxFrameBytes', () => {
    const decoder = new MilterDecoder({ maxFrameBytes: 100 });
    assert.deepEqual(decoder.push(hex('000000')), []);
    assert.throws(() => decoder.push(hex('65')), (err) => err instanceof MilterCodecError && err.code === 'frame_too_large');
    // A 100-byte packet is fine, 101 is not.
    const ok = frame('B', Buffer.alloc(99));
    assert.deepEqual(decodeCommands([ok], 100).items, [{ type: 'body', chunk: Buffer.alloc(99) }]);
    assert.equal(decodeCommands([frame('B', Buffer.alloc(100))], 100).error, 'frame_too_large');
    assert.throws(() => new MilterDecoder({ maxFrameBytes: 12 }), RangeError);
    assert.throws(() => new MilterDecoder({ maxFrameBytes: 2 ** 31 }), RangeError);
  });

  it('stays failed after an error: the stream position is lost', () => {
    const decoder = new MilterDecoder();
    assert.throws(() => decoder.push(frame('Z')), (err) => err instanceof MilterCodecError && err.code === 'unknown_command');
    assert.throws(() => decoder.push(hex('00000001 41')), (err) => err instanceof MilterCodecError && err.code === 'unknown_command' && err.commands.length === 0);
  });

  it('reports a packet in progress through pending', () => {
    const decoder = new MilterDecoder();
    assert.equal(decoder.pending, false);
    decoder.push(hex('00'));
    assert.equal(decoder.pending, true);
    decoder.push(hex('000002 48'));
    assert.equal(decoder.pending, true);
    assert.deepEqual(decoder.push(hex('00')), [{ type: 'helo', name: '' }]);
    assert.equal(decoder.pending, false);
  });
});

describe('encodeCommand', () => {
  it('produces the bytes Postfix sends', () => {
    for (const [wire, cmd] of SESSION) assert.deepEqual(encodeCommand(cmd), wire, JSON.stringify(cmd.type));
    assert.deepEqual(
      encodeCommand({ type: 'connect', hostname: 'mail.example.net', family: '4', port: 25, address: '192.0.2.1' }),
      hex('0000001f 43 6d61696c2e6578616d706c652e6e657400 34 0019 3139322e302e322e3100'),
    );
    assert.deepEqual(encodeCommand({ type: 'connect', hostname: 'unknown', family: 'U', port: 0, address: '' }), frame('C', 'unknown\0U'));
    assert.deepEqual(encodeCommand({ type: 'header', name: 'Subject', value: 'héllo' }), frame('L', 'Subject\0', b('héllo'), '\0'));
    assert.deepEqual(encodeCommand({ type: 'bodyEob', chunk: 'tail' }), frame('E', 'tail'));
  });

  it('refuses what cannot be framed', () => {
    assert.throws(() => encodeCommand({ type: 'helo', name: 'a\0b' }), RangeError);
    assert.throws(() => encodeCommand({ type: 'mail', args: [] }), RangeError);
    assert.throws(() => encodeCommand({ type: 'rcpt', args: ['<a@b>', 'X=\0'] }), RangeError);
    assert.throws(() => encodeCommand({ type: 'connect', hostname: 'h', family: '4', port: 70000, address: '192.0.2.1' }), RangeError);
    assert.throws(() => encodeCommand({ type: 'connect', hostname: 'h', family: 'X' as '4', port: 25, address: '192.0.2.1' }), RangeError);
    assert.throws(() => encodeCommand({ type: 'macro', forCommand: 'CC', macros: new Map() }), RangeError);
    assert.throws(() => encodeCommand({ type: 'macro', forCommand: 'C', macros: macros('j', 'a\0') }), RangeError);
    assert.throws(() => encodeCommand({ type: 'header', name: 'X-\u0100', value: 'v' }), RangeError);
    assert.throws(() => encodeCommand({ type: 'header', name: 'X', value: b('a\0b') }), RangeError);
    assert.throws(() => encodeCommand({ type: 'optneg', version: -1, actions: 0, protocol: 0 }), RangeError);
  });
});

describe('encodeReply', () => {
  const SIMPLE: Array<[MilterSimpleReplyType, string]> = [
    ['continue', '00000001 63'],
    ['accept', '00000001 61'],
    ['reject', '00000001 72'],
    ['tempfail', '00000001 74'],
    ['discard', '00000001 64'],
    ['progress', '00000001 70'],
    ['skip', '00000001 73'],
    ['shutdown', '00000001 34'],
    ['connFail', '00000001 66'],
  ];
  for (const [type, bytes] of SIMPLE) {
    it(`encodes ${type} as ${bytes}`, () => assert.deepEqual(encodeReply({ type }), hex(bytes)));
  }

  it('encodes the OPTNEG reply, with macro lists per stage in SMFIM order', () => {
    assert.deepEqual(
      encodeReply({ type: 'optneg', version: 6, actions: SMFIF.ADDHDRS | SMFIF.CHGHDRS, protocol: SMFIP.NR_HDR | SMFIP.HDR_LEADSPC }),
      hex('0000000d 4f 00000006 00000011 00100080'),
    );
    assert.deepEqual(
      encodeReply({
        type: 'optneg',
        version: 6,
        actions: SMFIF.ADDHDRS | SMFIF.SETSYMLIST,
        protocol: SMFIP.NR_HDR | SMFIP.HDR_LEADSPC,
        // Given out of order: eoh (6) comes after eom (5) on the wire.
        symbolLists: { eoh: ['i'], eom: ['i', '{auth_authen}'], connect: ['{client_addr}', 'j'] },
      }),
      Buffer.concat([
        hex('0000003b 4f 00000006 00000101 00100080'),
        hex('00000000'), latin1('{client_addr} j\0'),
        hex('00000005'), latin1('i {auth_authen}\0'),
        hex('00000006'), latin1('i\0'),
      ]),
    );
  });

  it('refuses macro lists Postfix would misread', () => {
    const reply = (symbolLists: object) => ({ type: 'optneg' as const, version: 6, actions: 0x101, protocol: 0, symbolLists });
    assert.throws(() => encodeReply(reply({ eom: [] })), /empty macro list for stage eom: Postfix would fall back to its milter_end_of_data_macros/);
    assert.throws(() => encodeReply(reply({ eom: ['{a} {b}'] })), RangeError);
    assert.throws(() => encodeReply(reply({ eom: ['a,b'] })), RangeError);
    assert.throws(() => encodeReply(reply({ envelope: ['i'] })), /unknown macro stage/);
    assert.throws(() => encodeReply({ type: 'optneg', version: 6, actions: 2 ** 32, protocol: 0 }), RangeError);
  });

  it('encodes REPLYCODE with a NUL and doubled %', () => {
    assert.deepEqual(encodeReply(replyCode(550, '5.7.1', 'Rejected')), Buffer.concat([hex('00000014 79'), latin1('550 5.7.1 Rejected\0')]));
    assert.deepEqual(encodeReply(replyCode('451', '4.7.1', '100% busy')), Buffer.concat([hex('00000016 79'), latin1('451 4.7.1 100%% busy\0')]));
    assert.deepEqual(
      encodeReply(replyCode(550, '5.7.23', ['SPF fail', 'see https://example.org/spf'])),
      Buffer.concat([hex('0000003d 79'), latin1('550-5.7.23 SPF fail\r\n550 5.7.23 see https://example.org/spf\0')]),
    );
  });

  it('refuses REPLYCODE that is not 4xx/5xx with a matching enhanced code, or has CR, LF or NUL in its text', () => {
    assert.throws(() => replyCode(250, '2.0.0', 'OK'), RangeError);
    assert.throws(() => replyCode(550, '4.7.1', 'mismatch'), /class 4/);
    assert.throws(() => replyCode(450, '5.7.1', 'mismatch'), /class 5/);
    assert.throws(() => replyCode(550, '5.7', 'short'), RangeError);
    assert.throws(() => replyCode(550, '5.7.1234', 'long detail'), RangeError);
    assert.throws(() => replyCode(55, '5.7.1', 'two digits'), RangeError);
    assert.throws(() => replyCode(550, '5.7.1', 'a\r\n550 5.7.1 injected'), /CR, LF or NUL/);
    assert.throws(() => replyCode(550, '5.7.1', 'a\nb'), RangeError);
    assert.throws(() => replyCode(550, '5.7.1', 'a\0b'), RangeError);
    assert.throws(() => replyCode(550, '5.7.1\r\n250 2.0.0', 'x'), RangeError);
    assert.throws(() => replyCode(550, '5.7.1', []), RangeError);
    assert.throws(() => replyCode(550, '5.7.1', Array(33).fill('x')), /33 lines/);
    assert.throws(() => replyCode(550, '5.7.1', 'x'.repeat(981)), /980/);
    assert.doesNotThrow(() => replyCode(550, '5.7.1', 'x'.repeat(980)));
    // Raw replies get the same checks.
    assert.throws(() => encodeReply({ type: 'replyCode', reply: '550 Rejected' }), RangeError);
    assert.throws(() => encodeReply({ type: 'replyCode', reply: '550 5.7.1 a\r\n550 5.7.1 b' }), /must use "-"/);
    assert.throws(() => encodeReply({ type: 'replyCode', reply: '550-5.7.1 a\r\n451 4.7.1 b' }), /different codes/);
    assert.throws(() => encodeReply({ type: 'replyCode', reply: '550-5.7.1 a\r\n550-5.7.1 b' }), /must use " "/);
    assert.throws(() => encodeReply({ type: 'replyCode', reply: '550 5.7.1 bell\x07' }), RangeError);
    assert.doesNotThrow(() => encodeReply({ type: 'replyCode', reply: '550-5.7.1 a\r\n550 5.7.1 b' }));
  });

  it('encodes the modification replies', () => {
    assert.deepEqual(encodeReply({ type: 'addHeader', name: 'X-Spam', value: 'yes' }), Buffer.concat([hex('0000000c 68'), latin1('X-Spam\0yes\0')]));
    assert.deepEqual(
      encodeReply({ type: 'insHeader', index: 0, name: 'Authentication-Results', value: ' mx.example.org;\n\tspf=pass' }),
      Buffer.concat([hex('00000037 69 00000000'), latin1('Authentication-Results\0 mx.example.org;\n\tspf=pass\0')]),
    );
    // An empty value deletes the header.
    assert.deepEqual(encodeReply({ type: 'chgHeader', index: 2, name: 'X-Foo', value: '' }), Buffer.concat([hex('0000000c 6d 00000002'), latin1('X-Foo\0\0')]));
    assert.deepEqual(encodeReply({ type: 'addRcpt', rcpt: '<carol@example.org>' }), Buffer.concat([hex('00000015 2b'), latin1('<carol@example.org>\0')]));
    assert.deepEqual(encodeReply({ type: 'delRcpt', rcpt: '<bob@example.org>' }), Buffer.concat([hex('00000013 2d'), latin1('<bob@example.org>\0')]));
    assert.deepEqual(
      encodeReply({ type: 'addRcptPar', rcpt: '<c@x.org>', args: 'NOTIFY=NEVER' }),
      Buffer.concat([hex('00000018 32'), latin1('<c@x.org>\0NOTIFY=NEVER\0')]),
    );
    assert.deepEqual(encodeReply({ type: 'chgFrom', sender: '<>' }), Buffer.concat([hex('00000004 65'), latin1('<>\0')]));
    assert.deepEqual(encodeReply({ type: 'quarantine', reason: 'spam' }), Buffer.concat([hex('00000006 71'), latin1('spam\0')]));
    assert.deepEqual(encodeReply({ type: 'replBody', chunk: 'new\r\n' }), Buffer.concat([hex('00000006 62'), latin1('new\r\n')]));
  });

  it('splits a replacement body into MILTER_CHUNK_SIZE packets', () => {
    const body = Buffer.alloc(MILTER_CHUNK_SIZE + 10, 0x78);
    const wire = encodeReply({ type: 'replBody', chunk: body });
    assert.equal(wire.length, 2 * 5 + body.length);
    assert.deepEqual(wire.subarray(0, 5), hex('00010000 62'));
    assert.deepEqual(wire.subarray(5 + MILTER_CHUNK_SIZE, 10 + MILTER_CHUNK_SIZE), hex('0000000b 62'));
    const { items } = decodeReplies([wire]);
    assert.deepEqual(Buffer.concat(items.map((r) => (r.type === 'replBody' ? r.chunk : Buffer.alloc(0)))), body);
  });

  it('refuses header names and values Postfix would store wrongly', () => {
    const add = (name: string, value: string | Buffer) => () => encodeReply({ type: 'addHeader', name, value });
    assert.throws(add('X-A', 'one\r\n two'), /CRLF/);
    assert.throws(add('X-A', 'one\ntwo'), /not followed by a space or tab/);
    assert.throws(add('X-A', 'one\n'), /not followed by a space or tab/);
    assert.throws(add('X-A', b('a\0b')), /NUL/);
    assert.throws(add('X A', 'v'), /invalid header name/);
    assert.throws(add('X:A', 'v'), /invalid header name/);
    assert.throws(add('', 'v'), /invalid header name/);
    assert.throws(add('X-é', 'v'), /invalid header name/);
    assert.doesNotThrow(add('X-A', 'one\n two\n\tthree'));
    assert.throws(() => encodeReply({ type: 'chgHeader', index: -1, name: 'X', value: '' }), RangeError);
    assert.throws(() => encodeReply({ type: 'addRcpt', rcpt: '<a@b>\r\nRCPT TO:<c@d>' }), /CR or LF/);
    assert.throws(() => encodeReply({ type: 'chgFrom', sender: '<a@b>', args: 'X\n' }), /CR or LF/);
    assert.throws(() => encodeReply({ type: 'quarantine', reason: 'a\0' }), /NUL/);
  });
});

describe('MilterReplyDecoder', () => {
  it('round-trips every reply type through encodeReply and random chunking (seeded)', () => {
    for (const seed of [7, 8, 9]) {
      const rand = rng(seed);
      const replies = Array.from({ length: 300 }, () => randomReply(rand));
      const stream = Buffer.concat(replies.map((r) => encodeReply(r)));
      for (const big of [false, true]) {
        const { items, error } = decodeReplies(randomChunks(stream, rand, big));
        assert.equal(error, undefined, `seed ${seed}`);
        assert.deepEqual(items, replies, `seed ${seed}`);
      }
    }
  });

  it('checks REPLYCODE the way Postfix does and undoes the % doubling', () => {
    const decode = (text: string) => decodeReplies([frame('y', b(text))]);
    assert.deepEqual(decode('550 5.7.1 100%% sure\0').items, [{ type: 'replyCode', reply: '550 5.7.1 100% sure' }]);
    // A lone % is dropped; without an enhanced code Postfix still accepts; data after the NUL is ignored.
    assert.deepEqual(decode('451 4.7.1 50% off\0').items, [{ type: 'replyCode', reply: '451 4.7.1 50 off' }]);
    assert.deepEqual(decode('550 Rejected\0').items, [{ type: 'replyCode', reply: '550 Rejected' }]);
    assert.deepEqual(decode('550 5.7.1 x\0junk').items, [{ type: 'replyCode', reply: '550 5.7.1 x' }]);
    assert.equal(decode('250 2.0.0 Ok\0').error, 'bad_payload');
    assert.equal(decode('550 4.7.1 mismatch\0').error, 'bad_payload');
    assert.equal(decode('55\0').error, 'bad_payload');
    assert.equal(decode('550x5.7.1\0').error, 'bad_payload');
  });

  it('decodes the OPTNEG reply macro lists like Postfix: commas and spaces separate, unknown stages are ignored', () => {
    const wire = frame('O', u32(6), u32(0x101), u32(0x80), u32(0), '{client_addr},j  {daemon_name}\0', u32(9), 'x\0', u32(5), '\0');
    assert.deepEqual(decodeReplies([wire]).items, [
      { type: 'optneg', version: 6, actions: 0x101, protocol: 0x80, symbolLists: { connect: ['{client_addr}', 'j', '{daemon_name}'], eom: [] } },
    ]);
    assert.equal(decodeReplies([frame('O', u32(6), u32(0), u32(0), hex('000000'))]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('O', u32(6), u32(0), u32(0), u32(1), 'i')]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('O', u32(6), u32(0))]).error, 'bad_payload');
  });

  it('refuses data after a data-less reply, unknown reply bytes and broken strings', () => {
    assert.equal(decodeReplies([frame('c', 'x')]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('a', '\0')]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('z')]).error, 'unknown_command');
    assert.equal(decodeReplies([frame('l', u32(0), 'i\0')]).error, 'unknown_command');
    assert.equal(decodeReplies([frame('C', 'host\0')]).error, 'unknown_command');
    assert.equal(decodeReplies([frame('h', 'X-A\0v')]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('m', hex('000001'))]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('+', '<a@b>')]).error, 'bad_payload');
    assert.equal(decodeReplies([frame('e', '<a@b>\0x\0y\0')]).error, 'bad_payload');
    assert.equal(decodeReplies([hex('00000000')]).error, 'empty_frame');
    const { items, error } = decodeReplies([Buffer.concat([hex('00000001 63 00000001 70'), frame('z')])]);
    assert.equal(error, 'unknown_command');
    assert.deepEqual(items, [{ type: 'continue' }, { type: 'progress' }]);
  });
});

describe('negotiate', () => {
  const WANT = { actions: SMFIF.ADDHDRS | SMFIF.CHGHDRS, protocol: SMFIP.NR_HDR | SMFIP.HDR_LEADSPC | SMFIP.SKIP | SMFIP.NOUNKNOWN };

  it('gives Postfix 3.7 exactly what we want, in a reply Postfix accepts', () => {
    const { reply, missingActions, missingProtocol } = negotiate(POSTFIX_OPTNEG, WANT);
    assert.deepEqual(reply, { type: 'optneg', version: 6, actions: 0x11, protocol: 0x100580 });
    assert.equal(missingActions, 0);
    assert.equal(missingProtocol, 0);
    assert.deepEqual(encodeReply(reply), hex('0000000d 4f 00000006 00000011 00100580'));
  });

  it('keeps only what an MTA offers and reports what it does not', () => {
    // A version-6 MTA that offers only the v2 actions and v4 steps (no NR_*, no HDR_LEADSPC, no SKIP).
    const offer = { version: 6, actions: 0x3f, protocol: 0x3ff & ~SMFIP.NR_HDR };
    const { reply, missingActions, missingProtocol } = negotiate(offer, {
      actions: SMFIF.ADDHDRS | SMFIF.CHGFROM,
      protocol: SMFIP.NR_HDR | SMFIP.HDR_LEADSPC | SMFIP.NOHELO,
      symbolLists: { connect: ['{client_addr}'] },
    });
    assert.deepEqual(reply, { type: 'optneg', version: 6, actions: SMFIF.ADDHDRS, protocol: SMFIP.NOHELO });
    assert.equal(missingActions, SMFIF.CHGFROM | SMFIF.SETSYMLIST);
    assert.equal(missingProtocol, SMFIP.NR_HDR | SMFIP.HDR_LEADSPC);
  });

  it('sends macro lists, with SETSYMLIST, when the MTA offers it', () => {
    const { reply, missingActions } = negotiate(POSTFIX_OPTNEG, { ...WANT, symbolLists: { connect: ['{client_addr}', '{client_name}'], eom: ['i'] } });
    assert.equal(reply.actions, 0x111);
    assert.deepEqual(reply.symbolLists, { connect: ['{client_addr}', '{client_name}'], eom: ['i'] });
    assert.equal(missingActions, 0);
    assert.deepEqual(decodeReplies([encodeReply(reply)]).items, [reply]);
    // An empty lists object is the same as none.
    assert.deepEqual(negotiate(POSTFIX_OPTNEG, { ...WANT, symbolLists: {} }).reply, negotiate(POSTFIX_OPTNEG, WANT).reply);
    assert.throws(() => negotiate(POSTFIX_OPTNEG, { ...WANT, symbolLists: { eom: [] } }), /empty macro list/);
  });

  it('answers version 6 to a newer MTA and refuses one below 6', () => {
    assert.equal(negotiate({ ...POSTFIX_OPTNEG, version: 7 }, WANT).reply.version, 6);
    for (const version of [0, 2, 3, 4, 5]) {
      assert.throws(
        () => negotiate({ ...POSTFIX_OPTNEG, version }, WANT),
        (err) => err instanceof MilterCodecError && err.code === 'unsupported_version' && err.message.includes(`version ${version}`) && err.message.includes('milter_protocol'),
      );
    }
  });

  it('refuses wants outside protocol 6', () => {
    assert.throws(() => negotiate(POSTFIX_OPTNEG, { actions: 0x200, protocol: 0 }), RangeError);
    assert.throws(() => negotiate(POSTFIX_OPTNEG, { actions: 0, protocol: SMFIP.MDS_1M }), RangeError);
    assert.throws(() => negotiate(POSTFIX_OPTNEG, { actions: -1, protocol: 0 }), RangeError);
  });

  it('always produces a reply that passes Postfix\'s own checks (seeded random offers and wants)', () => {
    const rand = rng(99);
    const bits = (mask: number) => Math.floor(rand() * 0x7fffffff) & mask;
    for (let k = 0; k < 2000; k++) {
      const offer = { version: 6 + Math.floor(rand() * 2), actions: bits(0x7fffffff), protocol: bits(0x7fffffff) };
      const want = { actions: bits(SMFI_CURR_ACTS), protocol: bits(SMFI_CURR_PROT) };
      const { reply, missingActions, missingProtocol } = negotiate(offer, want);
      // milter8_connect(): version not above ours, actions a subset of ours.
      assert.ok(reply.version <= offer.version);
      assert.equal((reply.actions & offer.actions) >>> 0, reply.actions);
      assert.equal((reply.protocol & offer.protocol) >>> 0, reply.protocol);
      assert.equal((reply.actions | missingActions) >>> 0, want.actions);
      assert.equal((reply.protocol | missingProtocol) >>> 0, want.protocol);
      assert.equal(reply.actions & missingActions, 0);
    }
  });
});

describe('commandExpectsReply', () => {
  it('follows the negotiated no-reply flags; macro, abort and quit never get one, bodyEob always', () => {
    const all = SESSION_COMMANDS;
    const withReply = (protocol: number) => all.filter((c) => commandExpectsReply(c, protocol)).map((c) => c.type);
    assert.deepEqual(withReply(0), ['optneg', 'connect', 'helo', 'mail', 'rcpt', 'data', 'header', 'header', 'header', 'eoh', 'body', 'bodyEob', 'unknown']);
    const noReplies =
      SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL | SMFIP.NR_RCPT | SMFIP.NR_DATA | SMFIP.NR_HDR | SMFIP.NR_EOH | SMFIP.NR_BODY | SMFIP.NR_UNKN;
    assert.deepEqual(withReply(noReplies), ['optneg', 'bodyEob']);
    assert.deepEqual(withReply(SMFIP.NR_HDR), ['optneg', 'connect', 'helo', 'mail', 'rcpt', 'data', 'eoh', 'body', 'bodyEob', 'unknown']);
    assert.equal(commandExpectsReply('quitNc', 0), false);
    assert.equal(commandExpectsReply('rcpt', SMFIP.NR_MAIL), true);
  });
});

// ---------------------------------------------------------------------------
// Random material for the round trips

const TEXT_CHARS = ['a', 'Z', '0', ' ', '<', '>', '@', '.', '{', '}', '=', 'é', 'ß', '日', '本', '😀', '\t', '-'];

function randomText(rand: () => number, max: number): string {
  let s = '';
  const n = Math.floor(rand() * max);
  for (let k = 0; k < n; k++) s += TEXT_CHARS[Math.floor(rand() * TEXT_CHARS.length)]!;
  return s;
}

function randomBytes(rand: () => number, n: number, noNul: boolean): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let k = 0; k < n; k++) {
    let byte = Math.floor(rand() * 256);
    if (noNul && byte === 0) byte = 1;
    out[k] = byte;
  }
  return out;
}

/** Body chunk sizes: mostly small, sometimes exactly 64 KiB - 1 (Postfix's full chunk), sometimes 0. */
function randomBodySize(rand: () => number): number {
  const r = rand();
  if (r < 0.15) return MILTER_CHUNK_SIZE;
  if (r < 0.2) return 0;
  if (r < 0.3) return Math.floor(rand() * MILTER_CHUNK_SIZE);
  return Math.floor(rand() * 300);
}

function randomHeaderName(rand: () => number): string {
  // latin1, no NUL, no ':' needed by the decoder: any byte 1..255 round-trips.
  const n = 1 + Math.floor(rand() * 20);
  let s = '';
  for (let k = 0; k < n; k++) s += String.fromCharCode(1 + Math.floor(rand() * 255));
  return s;
}

function randomCommand(rand: () => number): MilterCommand {
  const pick = Math.floor(rand() * 15);
  switch (pick) {
    case 0:
      return rand() < 0.5
        ? { type: 'optneg', version: 6, actions: Math.floor(rand() * 0x1ff), protocol: Math.floor(rand() * 0x1fffff) }
        : { type: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff, extra: randomBytes(rand, 1 + Math.floor(rand() * 8), false) };
    case 1: {
      const m = new Map<string, string>();
      const count = Math.floor(rand() * 6);
      for (let k = 0; k < count; k++) m.set(`{${randomText(rand, 12)}}`, randomText(rand, 40));
      return { type: 'macro', forCommand: 'CHMRTLNBEU'[Math.floor(rand() * 10)]!, macros: m };
    }
    case 2: {
      const family = (['4', '6', 'L', 'U'] as const)[Math.floor(rand() * 4)]!;
      return family === 'U'
        ? { type: 'connect', hostname: randomText(rand, 30), family, port: 0, address: '' }
        : { type: 'connect', hostname: randomText(rand, 30), family, port: Math.floor(rand() * 65536), address: randomText(rand, 40) };
    }
    case 3:
      return { type: 'helo', name: randomText(rand, 60) };
    case 4:
    case 5:
      return {
        type: pick === 4 ? 'mail' : 'rcpt',
        args: Array.from({ length: 1 + Math.floor(rand() * 4) }, () => randomText(rand, 30)),
      };
    case 6:
      return { type: 'data' };
    case 7:
      return { type: 'header', name: randomHeaderName(rand), value: randomBytes(rand, Math.floor(rand() * (rand() < 0.05 ? 60000 : 200)), true) };
    case 8:
      return { type: 'eoh' };
    case 9:
    case 10:
      return { type: 'body', chunk: randomBytes(rand, randomBodySize(rand), false) };
    case 11:
      return rand() < 0.7 ? { type: 'bodyEob' } : { type: 'bodyEob', chunk: randomBytes(rand, 1 + Math.floor(rand() * 100), false) };
    case 12:
      return { type: 'unknown', command: randomText(rand, 50) };
    case 13:
      return { type: 'abort' };
    default:
      return rand() < 0.5 ? { type: 'quit' } : { type: 'quitNc' };
  }
}

const ASCII_NAME = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_';

function randomAsciiName(rand: () => number): string {
  const n = 1 + Math.floor(rand() * 24);
  let s = '';
  for (let k = 0; k < n; k++) s += ASCII_NAME[Math.floor(rand() * ASCII_NAME.length)]!;
  return s;
}

/** A header value Postfix accepts: no NUL or CR, each LF followed by a tab or space, 8-bit bytes allowed. */
function randomHeaderValue(rand: () => number): Buffer {
  const bytes = randomBytes(rand, Math.floor(rand() * 300), true);
  for (let k = 0; k < bytes.length; k++) {
    if (bytes[k] === 0x0d) bytes[k] = 0x20;
    if (bytes[k] === 0x0a) {
      if (k === bytes.length - 1) bytes[k] = 0x20;
      else bytes[k + 1] = rand() < 0.5 ? 0x09 : 0x20;
    }
  }
  return bytes;
}

function randomReply(rand: () => number): MilterReply {
  const simple: MilterSimpleReplyType[] = ['continue', 'accept', 'reject', 'tempfail', 'discard', 'progress', 'skip', 'shutdown', 'connFail'];
  const line = () => randomText(rand, 60).replaceAll('\t', ' ');
  switch (Math.floor(rand() * 14)) {
    case 0:
      return rand() < 0.5
        ? { type: 'optneg', version: 6, actions: Math.floor(rand() * 0x1ff), protocol: Math.floor(rand() * 0x1fffff) }
        : { type: 'optneg', version: 6, actions: 0x1ff, protocol: 0, symbolLists: { connect: ['{client_addr}', 'j'], envrcpt: ['i', '{rcpt_addr}'], eoh: ['{x}'] } };
    case 1: {
      const lines = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => `${line()}%${line()}`);
      const cls = rand() < 0.5 ? '4' : '5';
      return replyCode(`${cls}${Math.floor(rand() * 10)}${Math.floor(rand() * 10)}`, `${cls}.${Math.floor(rand() * 8)}.${Math.floor(rand() * 30)}`, lines);
    }
    case 2:
      return { type: 'quarantine', reason: line() };
    case 3:
      return { type: 'addHeader', name: randomAsciiName(rand), value: randomHeaderValue(rand) };
    case 4:
      return { type: 'insHeader', index: Math.floor(rand() * 10), name: randomAsciiName(rand), value: randomHeaderValue(rand) };
    case 5:
      return { type: 'chgHeader', index: Math.floor(rand() * 10), name: randomAsciiName(rand), value: rand() < 0.3 ? Buffer.alloc(0) : randomHeaderValue(rand) };
    case 6:
      return { type: 'addRcpt', rcpt: `<${line()}>` };
    case 7:
      return rand() < 0.5 ? { type: 'addRcptPar', rcpt: `<${line()}>` } : { type: 'addRcptPar', rcpt: `<${line()}>`, args: line() };
    case 8:
      return { type: 'delRcpt', rcpt: `<${line()}>` };
    case 9:
      return rand() < 0.5 ? { type: 'chgFrom', sender: `<${line()}>` } : { type: 'chgFrom', sender: `<${line()}>`, args: line() };
    case 10:
      return { type: 'replBody', chunk: randomBytes(rand, randomBodySize(rand), false) };
    default:
      return { type: simple[Math.floor(rand() * simple.length)]! };
  }
}
