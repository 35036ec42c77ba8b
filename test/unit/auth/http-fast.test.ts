// The Lua bridge fast path's request parser: exactly Dovecot's GET shape is
// taken, everything else goes to node:http ('other'), and a request split over
// several reads waits for its end ('incomplete').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from '../../../src/auth/http-fast.ts';

// What Dovecot 2.3's lib-http sends for the shipped script (captured).
const DOVECOT = 'GET /dovecot/passdb?user=alice%40example.org&service=imap&version=2.3 HTTP/1.1\r\nHost: 127.0.0.1:43677\r\n'
  + 'Date: Mon, 23 Nov 2026 16:17:11 GMT\r\nConnection: Keep-Alive\r\nX-Mailwarden-Secret: sekrit\r\nX-Mailwarden-Password: pw%20%C3%A9\r\n\r\n';

const req = (head: string) => Buffer.from(head, 'latin1');

test("Dovecot's request: endpoint, query, secret and password; the bytes after it are left", () => {
  const r = parse(req(`${DOVECOT}GET /dov`));
  assert.ok(typeof r === 'object');
  assert.deepEqual(r.request, { endpoint: 'passdb', query: 'user=alice%40example.org&service=imap&version=2.3', secret: 'sekrit', password: 'pw%20%C3%A9' });
  assert.equal(r.close, false);
  assert.equal(r.rest.toString(), 'GET /dov');
  const u = parse(req('GET /dovecot/userdb?user=a%40b.org HTTP/1.1\r\nhost: x\r\nx-mailwarden-secret:  s  \r\nconnection: close\r\n\r\n'));
  assert.ok(typeof u === 'object');
  assert.deepEqual(u.request, { endpoint: 'userdb', query: 'user=a%40b.org', secret: 's', password: undefined });
  assert.equal(u.close, true);
});

test('a request cut anywhere waits for the rest', () => {
  for (let i = 1; i < DOVECOT.length; i++) assert.equal(parse(req(DOVECOT.slice(0, i))), 'incomplete', `cut at ${i}`);
});

test('anything else is handed to node:http', () => {
  const other = [
    'POST /dovecot/passdb HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}',
    'POST /dov', // decided as soon as the method differs
    'GET /dovecot/users?version=2.3 HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /admin/blocked HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.0\r\nHost: x\r\n\r\n',
    'GET /dovecot/userdb?user=a b HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /dovecot/userdbx?user=a HTTP/1.1\r\nHost: x\r\n\r\n',
    'get /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\n\r\n', // no Host
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n',
    'GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nX-Mailwarden-Secret: a\r\nx-mailwarden-secret: b\r\n\r\n',
    'GET /dovecot/passdb?user=a HTTP/1.1\r\nHost: x\r\nX-Mailwarden-Password: a\r\nX-Mailwarden-Password: b\r\n\r\n',
    `GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nX-Big: ${'x'.repeat(17 * 1024)}\r\n\r\n`,
    `GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nX-Big: ${'x'.repeat(17 * 1024)}`, // too long to wait for
    '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', // a TLS ClientHello
  ];
  for (const text of other) assert.equal(parse(req(text)), 'other', JSON.stringify(text.slice(0, 80)));
  assert.equal(parse(req('GET /dovecot/userdb?user=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n')) !== 'other', true, 'an empty body is no body');
});

test("percentDecode: the script's encoding of any password bytes", async () => {
  const { percentDecode } = await import('../../../src/auth/http-server.ts');
  assert.equal(percentDecode('plain-pw_1.~'), 'plain-pw_1.~');
  assert.equal(percentDecode('b%5Co%22b%20pw-%C3%BC'), 'b\\o"b pw-ü');
  assert.equal(percentDecode('a+b%2B'), 'a+b+', '+ is not a space here');
  assert.equal(percentDecode('%25%00%0A'), '%\0\n');
  // Bytes that are not UTF-8 (a Latin-1 client): U+FFFD, as the JSON form gave.
  assert.equal(percentDecode('caf%E9!'), 'caf\uFFFD!');
  assert.equal(percentDecode('%E9%zz%'), '\uFFFD%zz%');
});
