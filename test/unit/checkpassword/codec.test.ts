// checkpassword pieces without processes: fd-3 parsing, fd-4 reply escaping,
// exit codes, request modes, and the tiny config reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  configFile, exitCode, formatReply, loadEndpoint, MAX_INPUT, parseAuthConfig, parseInput, parseListen, parseResponse, requestMode, tabEscape, TempFail,
} from '../../../src/checkpassword/checkpassword.mjs';

const input = (s: string): Buffer => Buffer.from(s, 'utf8');

test('fd 3: user NUL password NUL NUL', () => {
  assert.deepEqual(parseInput(input('alice@example.org\0secret\0\0')), { user: 'alice@example.org', password: 'secret' });
  assert.deepEqual(parseInput(input('alice@example.org\0\0\0')), { user: 'alice@example.org', password: '' }, 'lookups send no password');
  assert.deepEqual(parseInput(input('bob\0pässwörd ✓ with spaces\0\0')), { user: 'bob', password: 'pässwörd ✓ with spaces' });
  assert.deepEqual(parseInput(input('bob\0pw\0')), { user: 'bob', password: 'pw' }, 'the timestamp field is not needed');
  assert.deepEqual(parseInput(input('')), { error: 'malformed' });
  assert.deepEqual(parseInput(input('alice')), { error: 'malformed' });
  assert.deepEqual(parseInput(input('alice\0password without end')), { error: 'malformed' });
});

test('fd 3: 512 bytes is the limit, more is "too long"', () => {
  const user = 'u@example.org';
  const exact = input(`${user}\0${'p'.repeat(MAX_INPUT - user.length - 3)}\0\0`);
  assert.equal(exact.length, 512);
  assert.equal(parseInput(exact).error, undefined);
  const over = input(`${user}\0${'p'.repeat(MAX_INPUT - user.length - 2)}\0\0`);
  assert.equal(over.length, 513);
  assert.deepEqual(parseInput(over), { error: 'too long' });
  assert.deepEqual(parseInput(Buffer.alloc(4096, 0x61)), { error: 'too long' });
});

test('fd 4: tab escaping leaves no NUL, LF, CR or TAB in values', () => {
  assert.equal(tabEscape('plain'), 'plain');
  assert.equal(tabEscape('a\tb\nc\rd\0e\x01f'), 'a\x01tb\x01nc\x01rd\x010e\x011f');
  assert.equal(tabEscape(5000), '5000');
  const reply = formatReply('alice@example.org', { userdb_home: '/var/vmail/x\ny', userdb_uid: 5000, userdb_quota_rule: '*:bytes=1048576', nothing: undefined });
  assert.equal(reply, 'user=alice@example.org\tuserdb_home=/var/vmail/x\x01ny\tuserdb_uid=5000\tuserdb_quota_rule=*:bytes=1048576');
  assert.doesNotMatch(reply, /[\0\n]/);
});

test('fd 4: userdb replies get the userdb_ prefix; user= comes first and once', () => {
  assert.equal(formatReply('a@b', { home: '/h', uid: 1, userdb_gid: 2, user: 'evil' }, 'userdb_'), 'user=a@b\tuserdb_home=/h\tuserdb_uid=1\tuserdb_gid=2');
  assert.equal(formatReply('a\tb', {}), 'user=a\x01tb');
});

test('fd 4: field names that are not plain names, and nested values, are refused', () => {
  assert.throws(() => formatReply('a@b', { 'x\ty': '1' }), TempFail);
  assert.throws(() => formatReply('a@b', { 'x=y': '1' }), TempFail);
  assert.throws(() => formatReply('a@b', { '': '1' }), TempFail);
  assert.throws(() => formatReply('a@b', { x: { y: 1 } }), TempFail);
});

test('exit codes: login 0/1/111, lookups 2/3/111', () => {
  assert.equal(exitCode('login', 'ok'), 0);
  assert.equal(exitCode('login', 'mismatch'), 1);
  assert.equal(exitCode('login', 'unknown'), 1);
  assert.equal(exitCode('login', 'tempfail'), 111);
  for (const mode of ['passdb', 'userdb'] as const) {
    assert.equal(exitCode(mode, 'ok'), 2);
    assert.equal(exitCode(mode, 'unknown'), 3);
    assert.equal(exitCode(mode, 'mismatch'), 3);
    assert.equal(exitCode(mode, 'tempfail'), 111);
  }
});

test('request mode from the environment', () => {
  assert.equal(requestMode({}), 'login');
  assert.equal(requestMode({ AUTHORIZED: '' }), 'login');
  assert.equal(requestMode({ AUTHORIZED: '1' }), 'userdb');
  assert.equal(requestMode({ AUTHORIZED: '1', CREDENTIALS_LOOKUP: '1', SCHEME: '' }), 'passdb');
});

test('config file: --config, --config=, $MAILWARDEN_CONFIG, default; checkpassword-reply ignored', () => {
  assert.equal(configFile(['--config', '/x.yaml', '/usr/lib/dovecot/checkpassword-reply'], {}), '/x.yaml');
  assert.equal(configFile(['--config=/y.yaml'], { MAILWARDEN_CONFIG: '/z' }), '/y.yaml');
  assert.equal(configFile(['/usr/lib/dovecot/checkpassword-reply'], { MAILWARDEN_CONFIG: '/z' }), '/z');
  assert.equal(configFile([], {}), '/etc/mailwarden/mailwarden.yaml');
});

test('config: auth.listen/secret/secret_file from block YAML, the rest skipped', () => {
  const text = [
    '# comment', 'directory:', '  backend: yaml', '  path: directory.yaml', 'socketmap:', '  listen: inet:127.0.0.1:10051',
    'auth:', '    # indented comment', '    listen: inet:127.0.0.1:10052   # trailing comment',
    '    secret: "s3cret \\"quoted\\" #not-a-comment"', '    verify_cache_ttl: 5m', 'dict:', '  listen: unix:/run/d.sock', '',
  ].join('\n');
  assert.deepEqual(parseAuthConfig(text), { listen: 'inet:127.0.0.1:10052', secret: 's3cret "quoted" #not-a-comment' });
  assert.deepEqual(parseAuthConfig("auth:\n  listen: 'unix:/run/a b.sock'\n  secret_file: auth.secret\n"), { listen: 'unix:/run/a b.sock', secret_file: 'auth.secret' });
  assert.deepEqual(parseAuthConfig("auth:\r\n  secret: 'it''s'\r\n"), { secret: "it's" });
  assert.deepEqual(parseAuthConfig('#auth:\n#  listen: inet:127.0.0.1:1\n'), {});
  assert.throws(() => parseAuthConfig('auth: { listen: "inet:127.0.0.1:1" }\n'), TempFail);
  assert.throws(() => parseAuthConfig('auth:\n  secret: |\n    abc\n'), TempFail);
  assert.throws(() => parseAuthConfig('auth:\n  secret: "open\n'), TempFail);
});

test('config: listen addresses', () => {
  assert.deepEqual(parseListen('unix:/run/mailwarden/auth.sock'), { socketPath: '/run/mailwarden/auth.sock' });
  assert.deepEqual(parseListen('inet:127.0.0.1:10052'), { host: '127.0.0.1', port: 10052 });
  assert.deepEqual(parseListen('inet:[::1]:10052'), { host: '::1', port: 10052 });
  for (const bad of ['unix:relative', 'inet:127.0.0.1', 'inet:127.0.0.1:0', 'inet:127.0.0.1:70000', 'tcp:1.2.3.4:5', '']) {
    assert.throws(() => parseListen(bad), TempFail, bad);
  }
});

test('config: loadEndpoint reads secret_file relative to the config; problems are TempFail', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailwarden-cpw-'));
  try {
    writeFileSync(join(dir, 'auth.secret'), 'from-the-file-0123456789\n');
    writeFileSync(join(dir, 'a.yaml'), 'auth:\n  listen: inet:127.0.0.1:10052\n  secret_file: auth.secret\n');
    assert.deepEqual(loadEndpoint(join(dir, 'a.yaml')), { host: '127.0.0.1', port: 10052, secret: 'from-the-file-0123456789' });
    writeFileSync(join(dir, 'b.yaml'), 'auth:\n  listen: unix:/run/x.sock\n');
    assert.deepEqual(loadEndpoint(join(dir, 'b.yaml')), { socketPath: '/run/x.sock', secret: undefined });
    writeFileSync(join(dir, 'c.yaml'), 'directory:\n  backend: yaml\n');
    assert.throws(() => loadEndpoint(join(dir, 'c.yaml')), /no auth\.listen/);
    writeFileSync(join(dir, 'd.yaml'), 'auth:\n  listen: inet:127.0.0.1:1\n  secret_file: missing\n');
    assert.throws(() => loadEndpoint(join(dir, 'd.yaml')), /cannot read auth\.secret_file .*ENOENT/);
    assert.throws(() => loadEndpoint(join(dir, 'nope.yaml')), /cannot read config .*ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('HTTP answers: status mapping, Content-Length, chunked, truncated', () => {
  const r = (s: string): Buffer => Buffer.from(s, 'utf8');
  const body = '{"user":"a@b","fields":{"userdb_uid":"5000"}}';
  assert.deepEqual(parseResponse(r(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`)), { outcome: 'ok', user: 'a@b', fields: { userdb_uid: '5000' } });
  assert.deepEqual(parseResponse(r(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n${body.slice(0, 5)}\r\n${(body.length - 5).toString(16)}\r\n${body.slice(5)}\r\n0\r\n\r\n`)).outcome, 'ok');
  assert.deepEqual(parseResponse(r('HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}')), { outcome: 'mismatch' });
  assert.deepEqual(parseResponse(r('HTTP/1.1 404 Not Found\r\n\r\n')), { outcome: 'unknown' });
  assert.throws(() => parseResponse(r('HTTP/1.1 503 x\r\n\r\n')), /HTTP 503/);
  assert.throws(() => parseResponse(r('HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n{}')), /truncated/);
  assert.throws(() => parseResponse(r('')), /without an answer/);
  assert.throws(() => parseResponse(r('SSH-2.0-x\r\n\r\n')), /not an HTTP answer/);
});
