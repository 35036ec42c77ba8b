import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../../src/config/load.ts';
import { ConfigError, parseDuration, parseSize } from '../../../src/config/reader.ts';
import { parseListen } from '../../../src/config/listen.ts';

function issues(text: string): string[] {
  try {
    parseConfig(text, '/etc/mailwarden/mailwarden.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return [...err.issues];
  }
  assert.fail('expected a ConfigError');
}

test('a minimal YAML config gets defaults, relative paths resolve against the config file', () => {
  const c = parseConfig('directory:\n  backend: yaml\n  path: dir.yaml\n', '/etc/mailwarden/mailwarden.yaml');
  assert.deepEqual(c.directory, { backend: 'yaml', path: '/etc/mailwarden/dir.yaml' });
  assert.equal(c.recipientDelimiter, '+');
  assert.equal(c.socketmap, undefined, 'a service without its section is off');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.directory));
});

test('mysql backend settings and service sections', () => {
  const c = parseConfig([
    'directory:', '  backend: mysql', '  url: mysql://u:p@127.0.0.1:3306/mw', '  cache_ttl: 5s', '  query_timeout: 500ms',
    'socketmap:', '  listen: unix:/run/mailwarden/socketmap.sock', '  mode: "0600"', '  group: postfix',
    'dns:', '  servers: ["127.0.0.1:5353"]',
  ].join('\n'), '/x/m.yaml');
  assert.equal(c.directory.backend, 'mysql');
  if (c.directory.backend === 'mysql') {
    assert.equal(c.directory.cacheTtlMs, 5000);
    assert.equal(c.directory.queryTimeoutMs, 500);
  }
  assert.deepEqual(c.socketmap, { listen: { kind: 'unix', path: '/run/mailwarden/socketmap.sock' }, unix: { mode: 0o600, group: 'postfix' } });
  assert.deepEqual(c.dns.servers, ['127.0.0.1:5353']);
});

test('every error names file:line:column', () => {
  const found = issues('directory:\n  backend: yaml\n  path: d.yaml\nsocketmap:\n  listen: tcp:1.2.3.4\n  mood: "0660"\nlog:\n  level: loud\n');
  assert.deepEqual(found, [
    '/etc/mailwarden/mailwarden.yaml:6:3: unknown setting socketmap.mood (known: listen, mode, user, group)',
    '/etc/mailwarden/mailwarden.yaml:8:10: log.level must be one of fatal, error, warn, info, debug, trace, silent',
    '/etc/mailwarden/mailwarden.yaml:5:11: socketmap.listen: expected unix:/path or inet:host:port, got "tcp:1.2.3.4"',
  ].sort((a, b) => found.indexOf(a) - found.indexOf(b)));
  for (const i of found) assert.match(i, /^\/etc\/mailwarden\/mailwarden\.yaml:\d+:\d+: /);
});

test('YAML syntax errors and duplicate keys carry positions', () => {
  const [dup] = issues('directory:\n  backend: yaml\n  backend: mysql\n');
  assert.match(dup!, /mailwarden\.yaml:3:3: /);
  const [bad] = issues('directory:\n  backend: yaml\n path: x\n');
  assert.match(bad!, /mailwarden\.yaml:\d+:\d+: /);
});

test('missing directory section, bad backend, bad url', () => {
  assert.match(issues('log:\n  level: info\n')[0]!, /missing required section: directory/);
  assert.match(issues('directory:\n  backend: ldap\n')[0]!, /:2:12: directory.backend must be yaml or mysql/);
  assert.match(issues('directory:\n  backend: mysql\n  url: postgres://x\n')[0]!, /:3:8: directory.url must look like/);
  assert.match(issues('directory:\n  backend: yaml\n')[0]!, /directory.path is required/);
  assert.match(issues('directory:\n  backend: yaml\n  path: x\nrecipient_delimiter: "@"\n')[0]!, /:4:22: recipient_delimiter/);
});

test('dns.servers entries are checked with their position', () => {
  const [issue] = issues('directory:\n  backend: yaml\n  path: d\ndns:\n  servers:\n    - 127.0.0.1:5353\n    - resolver.example\n');
  assert.match(issue!, /mailwarden\.yaml:7:7: dns\.servers: DNS server "resolver\.example": expected an IP address/);
});

test('listen, duration and size parsers', () => {
  assert.deepEqual(parseListen('inet:127.0.0.1:10051'), { kind: 'inet', host: '127.0.0.1', port: 10051 });
  assert.deepEqual(parseListen('inet:[::1]:10051'), { kind: 'inet', host: '::1', port: 10051 });
  assert.equal(typeof parseListen('unix:relative/path'), 'string');
  assert.equal(typeof parseListen('inet:127.0.0.1:70000'), 'string');
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('10'), 10_000);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('soon'), undefined);
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.equal(parseSize('500MB'), 500 * 1024 ** 2);
  assert.equal(parseSize('1.5k'), 1536);
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize('-1'), undefined);
});
