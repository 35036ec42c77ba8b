import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decodePolicyAttributes,
  encodePolicyReply,
  encodePolicyRequest,
  POLICY_CODEC_DEFAULTS,
  PolicyCodecError,
  PolicyReplyDecoder,
  PolicyRequestDecoder,
  type PolicyCodecErrorCode,
  type PolicyCodecLimits,
} from '../../../src/policy/codec.ts';
import { prng as rng } from '../../support/prng.ts';
import type { PolicyRequest } from '../../../src/policy/request.ts';

const b = (s: string) => Buffer.from(s, 'utf8');

/** A RCPT request exactly as Postfix 3.7.11 writes it (postfix.md §1.2 order), from an authenticated TLS client. */
const POSTFIX_37_RCPT = [
  'request=smtpd_access_policy',
  'protocol_state=RCPT',
  'protocol_name=ESMTP',
  'client_address=2001:db8::25',
  'client_name=mail.example.net',
  'client_port=51234',
  'reverse_client_name=mail.example.net',
  'server_address=192.0.2.10',
  'server_port=587',
  'helo_name=mail.example.net',
  'sender=alice+news@example.net',
  'recipient=bob@example.org',
  'recipient_count=0',
  'queue_id=4XyZ1b2C3dz9K',
  'instance=1b2f.6650a1c2.3e8f1.0',
  'size=48213',
  'etrn_domain=',
  'stress=',
  'sasl_method=PLAIN',
  'sasl_username=alice@example.net',
  'sasl_sender=',
  'ccert_subject=mail.example.net',
  'ccert_issuer=R3+20Let\'s+20Encrypt',
  'ccert_fingerprint=9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08',
  'ccert_pubkey_fingerprint=60:30:3A:E2:2B:99:08:8D:A5:FD:31:82:8E:BA:0A:5F:A1:7C:6B:F1:21:9C:38:1E:8C:9D:67:0B:DE:2E:C5:3D',
  'encryption_protocol=TLSv1.3',
  'encryption_cipher=TLS_AES_256_GCM_SHA384',
  'encryption_keysize=256',
  'policy_context=submission',
];

const EXPECTED_FIELDS: Omit<PolicyRequest, 'attributes'> = {
  request: 'smtpd_access_policy',
  protocolState: 'RCPT',
  protocolName: 'ESMTP',
  clientAddress: '2001:db8::25',
  clientName: 'mail.example.net',
  clientPort: '51234',
  reverseClientName: 'mail.example.net',
  serverAddress: '192.0.2.10',
  serverPort: '587',
  heloName: 'mail.example.net',
  sender: 'alice+news@example.net',
  recipient: 'bob@example.org',
  recipientCount: 0,
  queueId: '4XyZ1b2C3dz9K',
  instance: '1b2f.6650a1c2.3e8f1.0',
  size: 48213,
  etrnDomain: '',
  stress: false,
  saslMethod: 'PLAIN',
  saslUsername: 'alice@example.net',
  saslSender: '',
  ccertSubject: 'mail.example.net',
  ccertIssuer: "R3+20Let's+20Encrypt",
  ccertFingerprint: '9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08',
  ccertPubkeyFingerprint: '60:30:3A:E2:2B:99:08:8D:A5:FD:31:82:8E:BA:0A:5F:A1:7C:6B:F1:21:9C:38:1E:8C:9D:67:0B:DE:2E:C5:3D',
  encryptionProtocol: 'TLSv1.3',
  encryptionCipher: 'TLS_AES_256_GCM_SHA384',
  encryptionKeysize: 256,
  policyContext: 'submission',
};

/** An END-OF-MESSAGE request from an unauthenticated plain-SMTP client under stress. */
const POSTFIX_37_EOM = [
  'request=smtpd_access_policy',
  'protocol_state=END-OF-MESSAGE',
  'protocol_name=SMTP',
  'client_address=198.51.100.7',
  'client_name=unknown',
  'client_port=40001',
  'reverse_client_name=unknown',
  'server_address=192.0.2.10',
  'server_port=25',
  'helo_name=[198.51.100.7]',
  'sender=',
  'recipient=',
  'recipient_count=3',
  'queue_id=4XyZ2Q0xYkz9L',
  'instance=1b2f.6650a1c9.5a1.1',
  'size=1048576',
  'etrn_domain=',
  'stress=yes',
  'sasl_method=',
  'sasl_username=',
  'sasl_sender=',
  'ccert_subject=',
  'ccert_issuer=',
  'ccert_fingerprint=',
  'ccert_pubkey_fingerprint=',
  'encryption_protocol=',
  'encryption_cipher=',
  'encryption_keysize=0',
  'policy_context=',
];

const wire = (lines: readonly string[], eol = '\n') => b(lines.map((l) => l + eol).join('') + eol);

function fields(r: PolicyRequest): Omit<PolicyRequest, 'attributes'> {
  const { attributes: _, ...rest } = r;
  return rest;
}

/** Comparable form of a request: fields plus the attribute map as entries. */
function snapshot(r: PolicyRequest): unknown {
  return { ...fields(r), attributes: [...r.attributes] };
}

/** Decodes chunks; returns requests and the error code, if any. */
function decode(chunks: readonly Buffer[], limits?: Partial<PolicyCodecLimits>): { requests: PolicyRequest[]; error?: PolicyCodecErrorCode } {
  const decoder = new PolicyRequestDecoder(limits);
  const requests: PolicyRequest[] = [];
  for (const chunk of chunks) {
    try {
      requests.push(...decoder.push(chunk));
    } catch (err) {
      assert.ok(err instanceof PolicyCodecError, `unexpected ${String(err)}`);
      requests.push(...err.requests);
      return { requests, error: err.code };
    }
  }
  return { requests };
}


describe('PolicyRequestDecoder', () => {
  it('decodes every attribute Postfix 3.7 sends to its field', () => {
    assert.equal(POSTFIX_37_RCPT.length, 29); // §1.2 lists 29 lines: `request` plus 28 facts
    const { requests, error } = decode([wire(POSTFIX_37_RCPT)]);
    assert.equal(error, undefined);
    assert.equal(requests.length, 1);
    const r = requests[0]!;
    assert.deepEqual(fields(r), EXPECTED_FIELDS);
    assert.equal(r.attributes.size, 29);
    for (const line of POSTFIX_37_RCPT) {
      const eq = line.indexOf('=');
      assert.equal(r.attributes.get(line.slice(0, eq)), line.slice(eq + 1), line);
    }
  });

  it('decodes an END-OF-MESSAGE request: numbers, stress=yes, null sender, empty recipient', () => {
    const r = decode([wire(POSTFIX_37_EOM)]).requests[0]!;
    assert.equal(r.protocolState, 'END-OF-MESSAGE');
    assert.equal(r.protocolName, 'SMTP');
    assert.equal(r.sender, '');
    assert.equal(r.recipient, '');
    assert.equal(r.recipientCount, 3);
    assert.equal(r.size, 1048576);
    assert.equal(r.stress, true);
    assert.equal(r.encryptionKeysize, 0);
    assert.equal(r.clientName, 'unknown');
    assert.equal(r.heloName, '[198.51.100.7]');
  });

  it('reads absent attributes as empty and keeps unknown ones (3.8 compatibility_level, 3.12 tls_sni)', () => {
    const r = decode([b('request=smtpd_access_policy\ncompatibility_level=3.6\ntls_sni=mx.example.org\nmail_version=3.12.0\n\n')]).requests[0]!;
    assert.equal(r.protocolState, '');
    assert.equal(r.clientAddress, '');
    assert.equal(r.clientName, '');
    assert.equal(r.size, 0);
    assert.equal(r.stress, false);
    assert.equal(r.attributes.get('tls_sni'), 'mx.example.org');
    assert.equal(r.attributes.get('compatibility_level'), '3.6');
    assert.equal(r.attributes.size, 4);
  });

  it('gives identical results for a two-request stream split at every byte position, and byte by byte', () => {
    const stream = Buffer.concat([wire(POSTFIX_37_RCPT), wire(POSTFIX_37_EOM)]);
    const whole = decode([stream]).requests.map(snapshot);
    assert.equal(whole.length, 2);
    for (let i = 0; i <= stream.length; i++) {
      const split = decode([stream.subarray(0, i), stream.subarray(i)]);
      assert.equal(split.error, undefined, `split at ${i}`);
      assert.deepEqual(split.requests.map(snapshot), whole, `split at ${i}`);
    }
    const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepEqual(decode(bytes).requests.map(snapshot), whole);
  });

  it('returns several requests from one chunk, one request per empty line', () => {
    const stream = b('request=smtpd_access_policy\ninstance=a\n\nrequest=smtpd_access_policy\ninstance=b\n\n\n');
    const { requests } = decode([stream]);
    assert.deepEqual(requests.map((r) => r.instance), ['a', 'b', '']);
    assert.equal(requests[2]!.attributes.size, 0); // an empty request is still a request: it gets its reply
  });

  it('round-trips random requests through encodePolicyRequest and random chunking', () => {
    const rand = rng(20250817);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const nameChars = [...'abcdefghijklmnopqrstuvwxyz_-.0123456789', 'é', 'ß', '名', '🙂', ' ', '\r', '\t'];
    const valueChars = [...nameChars, '=', '=', '@', '+', ':', '[', ']', 'Ω', '\u{1F4E7}', '\uFFFD'];
    const text = (chars: readonly string[], min: number, max: number) =>
      Array.from({ length: min + Math.floor(rand() * (max - min + 1)) }, () => pick(chars)).join('');
    for (let iteration = 0; iteration < 3000; iteration++) {
      const sent: Array<Map<string, string>> = [];
      for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) {
        const attrs = new Map<string, string>();
        for (let n = Math.floor(rand() * 12); n > 0; n--) {
          let value = text(valueChars, 0, 40);
          while (value.endsWith('\r')) value = value.slice(0, -1);
          attrs.set(text(nameChars, 1, 12), value);
        }
        if (rand() < 0.5) attrs.set('request', 'smtpd_access_policy');
        sent.push(attrs);
      }
      const stream = Buffer.concat(sent.map((a) => encodePolicyRequest(a)));
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; ) {
        const n = 1 + Math.floor(rand() * (rand() < 0.2 ? stream.length : 24));
        chunks.push(stream.subarray(i, i + n));
        i += n;
      }
      const { requests, error } = decode(chunks);
      assert.equal(error, undefined, `iteration ${iteration}`);
      assert.deepEqual(requests.map((r) => [...r.attributes]), sent.map((a) => [...a]), `iteration ${iteration}`);
    }
  });

  it('gives the fields decodePolicyAttributes() gives for its attributes, in any order, with repeats, unknown names and odd numbers', () => {
    const rand = rng(4242);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const names = [...POSTFIX_37_RCPT.map((l) => l.slice(0, l.indexOf('='))), 'tls_sni', 'compatibility_level', 'x', 'sender_', 'sende'];
    const values = ['', 'yes', 'no', '0', '12', '007', '-1', '1e3', ' 7', 'RCPT', 'a@b.example', 'ü@ä.example', '2001:db8::1', 'v=1=2'];
    for (let iteration = 0; iteration < 2000; iteration++) {
      const attrs = new Map<string, string>();
      const lines: string[] = [];
      for (let n = Math.floor(rand() * 40); n > 0; n--) {
        const name = pick(names);
        const value = pick(values);
        lines.push(`${name}=${value}`);
        attrs.set(name, value);
      }
      const { requests, error } = decode([wire(lines, rand() < 0.2 ? '\r\n' : '\n')]);
      assert.equal(error, undefined);
      assert.equal(requests.length, 1);
      const r = requests[0]!;
      assert.deepEqual(fields(r), fields(decodePolicyAttributes(attrs)), lines.join('|'));
      assert.deepEqual([...r.attributes], [...attrs], lines.join('|'));
    }
  });

  it('tolerates CRLF line ends, including a CR and LF in different chunks', () => {
    const crlf = wire(POSTFIX_37_RCPT, '\r\n');
    const expected = decode([wire(POSTFIX_37_RCPT)]).requests.map(snapshot);
    assert.deepEqual(decode([crlf]).requests.map(snapshot), expected);
    for (let i = 0; i <= crlf.length; i++) {
      assert.deepEqual(decode([crlf.subarray(0, i), crlf.subarray(i)]).requests.map(snapshot), expected, `split at ${i}`);
    }
    // Only one CR before the LF is a line end; others stay in the value.
    assert.equal(decode([b('helo_name=a\rb\r\r\n\n')]).requests[0]!.heloName, 'a\rb\r');
  });

  it('keeps "=" inside values: the name ends at the first one', () => {
    const r = decode([b('sender=a==b@example.com\nccert_subject=CN=mx.example.org,O=Example\n\n')]).requests[0]!;
    assert.equal(r.sender, 'a==b@example.com');
    assert.equal(r.ccertSubject, 'CN=mx.example.org,O=Example');
  });

  it('keeps the last value of a repeated attribute', () => {
    const r = decode([b('recipient=first@example.org\nrecipient=second@example.org\nsize=1\nsize=2\n\n')]).requests[0]!;
    assert.equal(r.recipient, 'second@example.org');
    assert.equal(r.size, 2);
    assert.equal(r.attributes.get('recipient'), 'second@example.org');
  });

  it('decodes values as UTF-8, invalid bytes as U+FFFD, even when a character spans chunks', () => {
    const s = b('sender=jörg@bücher.example\nhelo_name=');
    const stream = Buffer.concat([s, Buffer.from([0xff, 0xc3]), b('\n\n')]);
    for (let i = 0; i <= stream.length; i++) {
      const r = decode([stream.subarray(0, i), stream.subarray(i)]).requests[0]!;
      assert.equal(r.sender, 'jörg@bücher.example', `split at ${i}`);
      assert.equal(r.heloName, '\uFFFD\uFFFD', `split at ${i}`);
    }
  });

  it('counts buffered bytes of the unfinished request only', () => {
    const d = new PolicyRequestDecoder();
    assert.equal(d.buffered, 0);
    d.push(b('request=smtpd_access_policy\nsend'));
    assert.equal(d.buffered, 'request=smtpd_access_policy\nsend'.length);
    assert.equal(d.push(b('er=\n\nsize=')).length, 1);
    assert.equal(d.buffered, 'size='.length);
  });

  describe('limits: each error exactly past its limit, not at it', () => {
    const line = (bytes: number) => `n=${'v'.repeat(bytes - 2)}`;

    it('maxLineBytes, with LF, CRLF and an unterminated tail', () => {
      const limits = { maxLineBytes: 100 };
      assert.equal(decode([b(`${line(100)}\n\n`)], limits).error, undefined);
      assert.equal(decode([b(`${line(100)}\r\n\r\n`)], limits).error, undefined);
      assert.equal(decode([b(`${line(101)}\n\n`)], limits).error, 'line_too_long');
      assert.equal(decode([b(`${line(101)}\r\n\r\n`)], limits).error, 'line_too_long');
      // Without its LF yet: 100 bytes plus a CR may still be a good line, 101 other bytes are not.
      const d = new PolicyRequestDecoder(limits);
      assert.deepEqual(d.push(b(`${line(100)}\r`)), []);
      assert.equal(d.push(b('\n\n')).length, 1);
      assert.equal(decode([b(line(101))], limits).error, 'line_too_long');
      assert.equal(decode([b(line(60)), b('v'.repeat(41))], limits).error, 'line_too_long');
      assert.equal(decode([b(line(60)), b('v'.repeat(40))], limits).error, undefined);
      // The default allows Postfix's own 8192-byte string plus the name.
      assert.equal(decode([b(`ccert_subject=${'x'.repeat(8192)}\n\n`)]).error, undefined);
      assert.equal(decode([b(`n=${'x'.repeat(POLICY_CODEC_DEFAULTS.maxLineBytes - 1)}\n\n`)]).error, 'line_too_long');
    });

    it('maxAttributes, repeats included', () => {
      const attrs = (n: number) => b(`${Array.from({ length: n }, (_, i) => `a${i % 3}=x\n`).join('')}\n`);
      assert.equal(decode([attrs(5)], { maxAttributes: 5 }).error, undefined);
      assert.equal(decode([attrs(6)], { maxAttributes: 5 }).error, 'too_many_attributes');
      // The count is per request.
      assert.equal(decode([attrs(5), attrs(5), attrs(5)], { maxAttributes: 5 }).requests.length, 3);
      assert.equal(decode([attrs(128)]).error, undefined);
      assert.equal(decode([attrs(129)]).error, 'too_many_attributes');
    });

    it('maxRequestBytes, counted through the LF of the empty line, in one chunk or byte by byte', () => {
      const limits = { maxRequestBytes: 1000 };
      const request = (bytes: number) => b(`${line(bytes - 2)}\n\n`); // the line, its LF, the empty line
      assert.equal(request(1000).length, 1000);
      for (const [bytes, error] of [[1000, undefined], [1001, 'request_too_large']] as const) {
        const r = request(bytes);
        assert.equal(decode([r], limits).error, error);
        assert.equal(decode([r.subarray(0, 500), r.subarray(500)], limits).error, error);
        assert.equal(decode(Array.from({ length: r.length }, (_, i) => r.subarray(i, i + 1)), limits).error, error);
        // Per request, not per connection.
        assert.equal(decode([request(1000), r], limits).requests.length, error ? 1 : 2);
      }
      // Several lines add up.
      const many = b(`${Array.from({ length: 10 }, () => `${line(99)}\n`).join('')}\n`);
      assert.equal(many.length, 1001);
      assert.equal(decode([many], limits).error, 'request_too_large');
      assert.equal(decode([many.subarray(0, 990)], limits).error, undefined);
      assert.equal(decode([many.subarray(0, 1001 - 1)], limits).error, undefined);
      assert.equal(decode([many.subarray(0, 1001 - 1), b('x')], limits).error, 'request_too_large');
    });

    it('refuses nonsense limits', () => {
      assert.throws(() => new PolicyRequestDecoder({ maxLineBytes: 0 }), RangeError);
      assert.throws(() => new PolicyRequestDecoder({ maxAttributes: 1.5 }), RangeError);
      assert.throws(() => new PolicyRequestDecoder({ maxRequestBytes: Number.NaN }), RangeError);
    });
  });

  it('refuses bad lines: no "=", empty name, NUL in name or value', () => {
    for (const bad of ['request\n\n', 'request=x\nsender\n\n', '=value\n\n', 'na\0me=x\n\n', 'sender=a\0b\n\n', 'sender=ab\0\n\n']) {
      assert.equal(decode([b(bad)]).error, 'bad_attribute', JSON.stringify(bad));
      // Also when the line spans chunks (then it is assembled from parts).
      const mid = Math.floor(bad.length / 2);
      assert.equal(decode([b(bad.slice(0, mid)), b(bad.slice(mid))]).error, 'bad_attribute', `split ${JSON.stringify(bad)}`);
    }
    // A NUL in a later line of the same chunk does not taint the lines before it.
    const { requests, error } = decode([b('sender=ok\n\nsender=still=ok\n\nsender=b\0d\n\n')]);
    assert.equal(error, 'bad_attribute');
    assert.deepEqual(requests.map((r) => r.sender), ['ok', 'still=ok']);
  });

  it('hands back the requests completed before the error, and stays failed', () => {
    const d = new PolicyRequestDecoder();
    let caught: unknown;
    try {
      d.push(b('instance=a\n\ninstance=b\n\nno equals sign\n'));
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof PolicyCodecError);
    assert.equal(caught.code, 'bad_attribute');
    assert.deepEqual(caught.requests.map((r) => r.instance), ['a', 'b']);
    assert.equal(d.buffered, 'no equals sign\n'.length);
    assert.throws(() => d.push(b('instance=c\n\n')), (err: unknown) => err instanceof PolicyCodecError && err.code === 'bad_attribute' && err.requests.length === 0);
  });
});

describe('decodePolicyAttributes', () => {
  it('reads non-numbers as 0 and only stress=yes as stress', () => {
    for (const [text, n] of [['12', 12], ['', 0], ['-1', 0], ['1e3', 0], [' 7', 0], ['0x10', 0], ['abc', 0], ['007', 7]] as const) {
      const r = decodePolicyAttributes(new Map([['size', text], ['recipient_count', text], ['encryption_keysize', text]]));
      assert.deepEqual([r.size, r.recipientCount, r.encryptionKeysize], [n, n, n], JSON.stringify(text));
    }
    for (const [text, stress] of [['yes', true], ['', false], ['no', false], ['YES', false], ['1', false]] as const) {
      assert.equal(decodePolicyAttributes(new Map([['stress', text]])).stress, stress, text);
    }
  });

  it('keeps the given map as attributes', () => {
    const attrs = new Map([['client_address', '192.0.2.1'], ['x_custom', 'y']]);
    const r = decodePolicyAttributes(attrs);
    assert.equal(r.attributes, attrs);
    assert.equal(r.clientAddress, '192.0.2.1');
  });
});

describe('encodePolicyReply', () => {
  it('frames an action', () => {
    assert.equal(encodePolicyReply('DUNNO').toString(), 'action=DUNNO\n\n');
    assert.equal(
      encodePolicyReply('PREPEND Received-SPF: pass (mx.example.org: domain of a@example.net designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1;').toString(),
      'action=PREPEND Received-SPF: pass (mx.example.org: domain of a@example.net designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1;\n\n',
    );
    assert.deepEqual(encodePolicyReply('REJECT Überprüfung fehlgeschlagen'), b('action=REJECT Überprüfung fehlgeschlagen\n\n'));
  });

  it('refuses empty actions and CR, LF or NUL anywhere (text from DNS TXT records must not inject a reply)', () => {
    for (const bad of ['', 'REJECT bad\naction=OK', 'REJECT bad\r\n', 'DUNNO\n', '\nOK', 'REJECT a\rb', 'REJECT a\0b']) {
      assert.throws(() => encodePolicyReply(bad), RangeError, JSON.stringify(bad));
    }
    assert.throws(() => encodePolicyReply(undefined as unknown as string), RangeError);
  });
});

describe('encodePolicyRequest', () => {
  it('writes name=value lines and the empty line, from an object or a Map', () => {
    assert.equal(encodePolicyRequest({ request: 'smtpd_access_policy', size: 1024, sender: '' }).toString(), 'request=smtpd_access_policy\nsize=1024\nsender=\n\n');
    assert.equal(encodePolicyRequest(new Map([['a', 'b=c']])).toString(), 'a=b=c\n\n');
    assert.equal(encodePolicyRequest({}).toString(), '\n');
  });

  it('refuses what cannot be framed', () => {
    const bads: Array<Record<string, string | number>> = [{ '': 'x' }, { 'a=b': 'x' }, { 'a\nb': 'x' }, { 'a\0': 'x' }, { a: 'x\ny' }, { a: 'x\0' }, { a: 'x\r' }, { a: Number.NaN }];
    for (const bad of bads) {
      assert.throws(() => encodePolicyRequest(bad), RangeError, JSON.stringify(bad));
    }
  });
});

describe('PolicyReplyDecoder', () => {
  it('returns one action per reply block, however the bytes are split', () => {
    const stream = b('action=DUNNO\n\naction=REJECT 5.7.1 no=way\r\n\r\naction=PREPEND X-Ü: ä\n\n');
    for (let i = 0; i <= stream.length; i++) {
      const d = new PolicyReplyDecoder();
      assert.deepEqual([...d.push(stream.subarray(0, i)), ...d.push(stream.subarray(i))], ['DUNNO', 'REJECT 5.7.1 no=way', 'PREPEND X-Ü: ä'], `split at ${i}`);
    }
  });

  it('skips other attributes, keeps the first action and yields "" when none came, like Postfix', () => {
    const d = new PolicyReplyDecoder();
    assert.deepEqual(d.push(b('foo=bar\naction=OK\naction=REJECT\n\n')), ['OK']);
    assert.deepEqual(d.push(b('foo=bar\n\n')), ['']);
    assert.deepEqual(d.push(b('\n')), ['']);
    assert.deepEqual(d.push(b('actions=x\nAction=y\n\n')), ['']);
  });

  it('refuses an endless line', () => {
    const d = new PolicyReplyDecoder(10);
    assert.throws(() => d.push(b('action=0123456789')), (err: unknown) => err instanceof PolicyCodecError && err.code === 'line_too_long');
  });
});
