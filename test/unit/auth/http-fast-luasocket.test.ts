// The shipped Lua script's own HTTP (its LuaSocket transport) must stay on
// the auth endpoint's fast path: minimal keep-alive GETs without Date or
// Connection, one after the other on one connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from '../../../src/auth/http-fast.ts';

// Captured from dovecot-conf/mailwarden.lua (lua5.4, LuaSocket 3.0) for a userdb lookup over TCP.
const USERDB = 'GET /dovecot/userdb?user=alice%40example.org&service=lmtp&version=2.3 HTTP/1.1\r\nHost: 127.0.0.1:18997\r\n'
  + 'X-Mailwarden-Secret: s3cret\r\n\r\n';
// A login over a unix: URL (Host: localhost), 2.4 field names, the password header.
const LOGIN = 'GET /dovecot/passdb?user=bob%40example.org&service=imap&remote_ip=192.0.2.7&version=2.4 HTTP/1.1\r\nHost: localhost\r\n'
  + 'X-Mailwarden-Secret: s3cret\r\nX-Mailwarden-Password: b%5Co%22b%20pw-%C3%BC\r\n\r\n';

test('the script\'s userdb GET and login GET take the fast path, back to back on one connection', () => {
  const first = parse(Buffer.from(USERDB + LOGIN, 'latin1'));
  assert.ok(typeof first === 'object', String(first));
  assert.deepEqual(first.request, { endpoint: 'userdb', query: 'user=alice%40example.org&service=lmtp&version=2.3', secret: 's3cret', password: undefined });
  assert.equal(first.close, false, 'kept alive: HTTP/1.1 without Connection: close');
  const second = parse(first.rest);
  assert.ok(typeof second === 'object', String(second));
  assert.deepEqual(second.request, {
    endpoint: 'passdb', query: 'user=bob%40example.org&service=imap&remote_ip=192.0.2.7&version=2.4', secret: 's3cret', password: 'b%5Co%22b%20pw-%C3%BC',
  });
  assert.equal(second.rest.length, 0);
});
