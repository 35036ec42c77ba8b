// The policy: section of mailwarden.yaml (notes/policy-config.md): defaults,
// every key, and errors that point at file:line:column.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { parseConfig } from '../../../src/config/load.ts';
import { ConfigError } from '../../../src/config/reader.ts';

const FILE = '/etc/mailwarden/mailwarden.yaml';
const BASE = 'directory:\n  backend: yaml\n  path: d.yaml\n';
/** Lines 4 and 5 of every document below: the policy section starts on line 4. */
const HEAD = `${BASE}policy:\n  listen: inet:127.0.0.1:10040\n`;

const policyOf = (text: string) => parseConfig(text, FILE).policy;

function issues(text: string): string[] {
  try {
    parseConfig(text, FILE);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return [...err.issues];
  }
  assert.fail('expected a ConfigError');
}

test('no policy: section means no policy service', () => {
  assert.equal(parseConfig(BASE, FILE).policy, undefined);
});

test('defaults: SPF on (fail rejected), fail-safe default action, 10 s deadline, loopback mynetworks, optional checks off', () => {
  const p = policyOf(HEAD)!;
  assert.deepEqual(p.listen, { kind: 'inet', host: '127.0.0.1', port: 10040 });
  assert.equal(p.defaultAction, 'DEFER_IF_PERMIT 4.3.0 Policy check failed temporarily, try again later');
  assert.equal(p.timeoutMs, 10_000);
  assert.equal(p.myhostname, hostname());
  assert.deepEqual(p.mynetworks, ['127.0.0.0/8', '::1/128']);
  assert.equal(p.rejectUnknownRecipients, true);
  assert.deepEqual(p.spf, {
    enabled: true, helo: true, onFail: 'reject', onSoftfail: 'annotate', onPermerror: 'annotate', onTemperror: 'defer', skipNetworks: [],
  });
  assert.equal(p.dnsbl, undefined);
  assert.equal(p.rhsbl, undefined);
  assert.equal(p.fcrdns, 'warn');
  assert.equal(p.helo, 'warn');
  assert.equal(p.senderLogin, true);
  assert.deepEqual(p.rateLimit, {});
  assert.equal(p.greylist, undefined);
});

test('every key of the documented schema is read', () => {
  const p = policyOf([
    'directory:', '  backend: yaml', '  path: d.yaml',
    'dns:', '  servers: ["127.0.0.1:5353"]', '  timeout: 5s',
    'policy:',
    '  listen: unix:/run/mailwarden/policy.sock',
    '  mode: "0600"',
    '  group: postfix',
    '  default_action: 451 4.3.5 Try later',
    '  timeout: 2500ms',
    '  myhostname: mx.example.org',
    '  mynetworks: [192.0.2.0/24, "[2001:db8::]/32", 198.51.100.7]',
    '  recipients:', '    reject_unknown: false',
    '  spf:', '    enabled: true', '    helo: false', '    on_fail: annotate', '    on_softfail: reject', '    on_permerror: reject',
    '    on_temperror: annotate', '    skip_networks: ["203.0.113.0/24"]',
    '  dnsbl:', '    sites: ["zen.example.test=127.0.0.[2..11]*3", "bl.example.test*2"]', '    threshold: 3', '    action: defer', '    on_error: defer',
    '  rhsbl:', '    sites: ["dbl.example.test"]', '    action: warn',
    '  fcrdns:', '    action: reject',
    '  helo:', '    action: ignore',
    '  sender_login:', '    enabled: false',
    '  rate_limit:', '    messages: { count: 200, window: 1h }', '    recipients: { count: 1000, window: 1d }',
    '  greylist:', '    enabled: true', '    delay: 5m', '    max_age: 35d', '    retry_window: 2d', '    auto_allow_after: 0',
    '    ipv4_prefix: 32', '    ipv6_prefix: 48',
  ].join('\n'))!;
  assert.deepEqual(p.listen, { kind: 'unix', path: '/run/mailwarden/policy.sock' });
  assert.deepEqual(p.unix, { mode: 0o600, group: 'postfix' });
  assert.equal(p.defaultAction, '451 4.3.5 Try later');
  assert.equal(p.timeoutMs, 2500);
  assert.equal(p.myhostname, 'mx.example.org');
  assert.deepEqual(p.mynetworks, ['192.0.2.0/24', '2001:db8::/32', '198.51.100.7/32']);
  assert.equal(p.rejectUnknownRecipients, false);
  assert.deepEqual(p.spf, {
    enabled: true, helo: false, onFail: 'annotate', onSoftfail: 'reject', onPermerror: 'reject', onTemperror: 'annotate', skipNetworks: ['203.0.113.0/24'],
  });
  assert.equal(p.dnsbl?.threshold, 3);
  assert.equal(p.dnsbl?.action, 'defer');
  assert.equal(p.dnsbl?.onError, 'defer');
  assert.deepEqual(p.dnsbl?.sites.map((s) => [s.zone, s.weight, s.filter !== undefined]), [['zen.example.test', 3, true], ['bl.example.test', 2, false]]);
  assert.deepEqual(p.rhsbl && { zones: p.rhsbl.sites.map((s) => s.zone), threshold: p.rhsbl.threshold, action: p.rhsbl.action, onError: p.rhsbl.onError },
    { zones: ['dbl.example.test'], threshold: 1, action: 'warn', onError: 'ignore' });
  assert.equal(p.fcrdns, 'reject');
  assert.equal(p.helo, 'ignore');
  assert.equal(p.senderLogin, false);
  assert.deepEqual(p.rateLimit, { messages: { count: 200, windowMs: 3_600_000 }, recipients: { count: 1000, windowMs: 86_400_000 } });
  assert.deepEqual(p.greylist, {
    delayMs: 300_000, maxAgeMs: 35 * 86_400_000, retryWindowMs: 2 * 86_400_000, autoAllowAfter: 0, ipv4Prefix: 32, ipv6Prefix: 48,
  });
});

test('greylist: an empty section turns greylisting on with postgrey defaults; enabled: false turns it off', () => {
  assert.deepEqual(policyOf(`${HEAD}  greylist: {}\n`)!.greylist, {
    delayMs: 300_000, maxAgeMs: 35 * 86_400_000, retryWindowMs: 2 * 86_400_000, autoAllowAfter: 5, ipv4Prefix: 24, ipv6Prefix: 64,
  });
  assert.equal(policyOf(`${HEAD}  greylist:\n    enabled: false\n`)!.greylist, undefined);
  // A rate limit without window counts per hour.
  assert.deepEqual(policyOf(`${HEAD}  rate_limit:\n    messages: { count: 5 }\n`)!.rateLimit, { messages: { count: 5, windowMs: 3_600_000 } });
});

test('Postfix-style [::1]/128 is accepted in mynetworks and spf.skip_networks', () => {
  const p = policyOf(`${HEAD}  mynetworks: ["[::1]/128", "127.0.0.0/8"]\n  spf:\n    skip_networks: ["[2001:db8::1]"]\n`)!;
  assert.deepEqual(p.mynetworks, ['::1/128', '127.0.0.0/8']);
  assert.deepEqual(p.spf.skipNetworks, ['2001:db8::1/128']);
});

test('an unknown key is reported once, with its position and the known keys', () => {
  assert.deepEqual(issues(`${HEAD}  colour: blue\n`), [
    `${FILE}:6:3: unknown setting policy.colour (known: listen, mode, user, group, default_action, timeout, myhostname, mynetworks, recipients, spf, dnsbl, rhsbl, fcrdns, helo, sender_login, rate_limit, greylist)`,
  ]);
  assert.deepEqual(issues(`${HEAD}  spf:\n    on_fial: reject\n`), [
    `${FILE}:7:5: unknown setting policy.spf.on_fial (known: enabled, helo, on_fail, on_softfail, on_permerror, on_temperror, skip_networks)`,
  ]);
  assert.match(issues(`${HEAD}  greylist:\n    delay: 1m\n    max-age: 2d\n`)[0]!, /^\/etc\/mailwarden\/mailwarden\.yaml:8:5: unknown setting policy\.greylist\.max-age /);
});

test('bad CIDRs in mynetworks and skip_networks point at the entry', () => {
  assert.deepEqual(issues(`${HEAD}  mynetworks: ["10.0.0.0/33", "127.0.0.0/8", bogus]\n  spf:\n    skip_networks:\n      - 2001:db8::/129\n`), [
    `${FILE}:6:16: policy.mynetworks: prefix length must be at most 32: "10.0.0.0/33"`,
    `${FILE}:6:46: policy.mynetworks: not an IP address or CIDR network: "bogus"`,
    `${FILE}:9:9: policy.spf.skip_networks: prefix length must be at most 128: "2001:db8::/129"`,
  ]);
  assert.deepEqual(issues(`${HEAD}  mynetworks: 127.0.0.0/8\n`), [`${FILE}:6:15: policy.mynetworks must be a list`]);
});

test('bad DNS list sites point at the entry', () => {
  const found = issues(`${HEAD}  dnsbl:\n    sites:\n      - zen.example.test=127.0.0.[2..11]*3\n      - nodot\n      - bl.example.test=10.0.0.2\n  rhsbl:\n    sites: ["dbl.example.test*x"]\n`);
  assert.equal(found.length, 3, found.join('\n'));
  assert.match(found[0]!, /^\/etc\/mailwarden\/mailwarden\.yaml:9:9: policy\.dnsbl\.sites: DNS list "nodot": "nodot" is not a DNS zone name$/);
  assert.match(found[1]!, /^\/etc\/mailwarden\/mailwarden\.yaml:10:9: policy\.dnsbl\.sites: .*can never match/);
  assert.match(found[2]!, /^\/etc\/mailwarden\/mailwarden\.yaml:12:13: policy\.rhsbl\.sites: DNS list "dbl\.example\.test\*x": expected zone/);
});

test('default_action must be temporary: a 5xx or REJECT is refused (an internal error must never bounce mail)', () => {
  for (const action of ['REJECT 5.7.1 no', '550 5.7.1 no', 'OK', 'DISCARD', 'HOLD']) {
    assert.deepEqual(issues(`${HEAD}  default_action: ${action}\n`), [
      `${FILE}:6:19: policy.default_action must be a temporary action: DEFER_IF_PERMIT, DEFER_IF_REJECT, DEFER, 4NN text or DUNNO`,
    ], action);
  }
  for (const action of ['DUNNO', 'DEFER_IF_PERMIT', 'defer_if_reject try later', 'DEFER 4.3.0 later', '450 4.3.0 later']) {
    assert.equal(policyOf(`${HEAD}  default_action: ${action}\n`)!.defaultAction, action);
  }
});

test('enum values are checked with their position', () => {
  assert.deepEqual(issues([
    HEAD.trimEnd(),
    '  spf:', '    on_fail: drop', '    on_softfail: defer', '    on_permerror: ignore', '    on_temperror: reject',
    '  dnsbl:', '    sites: [bl.example.test]', '    action: quarantine', '    on_error: reject',
    '  fcrdns:', '    action: maybe',
    '  helo:', '    action: defer',
  ].join('\n')), [
    `${FILE}:7:14: policy.spf.on_fail must be one of reject, annotate`,
    `${FILE}:8:18: policy.spf.on_softfail must be one of reject, annotate`,
    `${FILE}:9:19: policy.spf.on_permerror must be one of reject, annotate`,
    `${FILE}:10:19: policy.spf.on_temperror must be one of defer, annotate`,
    `${FILE}:13:13: policy.dnsbl.action must be one of reject, defer, warn`,
    `${FILE}:14:15: policy.dnsbl.on_error must be one of ignore, defer`,
    `${FILE}:16:13: policy.fcrdns.action must be one of ignore, warn, defer, reject`,
    `${FILE}:18:13: policy.helo.action must be one of ignore, warn, reject`,
  ]);
  assert.deepEqual(issues(`${HEAD}  spf:\n    enabled: yes please\n`), [`${FILE}:7:14: policy.spf.enabled must be true or false`]);
});

test('rate limits need a count, within bounds, and a sane window', () => {
  assert.deepEqual(issues(`${HEAD}  rate_limit:\n    messages:\n      window: 1h\n`), [`${FILE}:8:7: policy.rate_limit.messages.count is required`]);
  assert.deepEqual(issues(`${HEAD}  rate_limit:\n    messages: { count: 0 }\n    recipients: { count: 5, window: 100d }\n`), [
    `${FILE}:7:24: policy.rate_limit.messages.count must be an integer from 1 to 100000000`,
    `${FILE}:8:37: policy.rate_limit.recipients.window must be between 1s and 31d`,
  ]);
});

test('greylist max_age must be longer than retry_window, pointing at whichever of them is set', () => {
  assert.deepEqual(issues(`${HEAD}  greylist:\n    max_age: 1d\n    retry_window: 2d\n`), [`${FILE}:7:14: policy.greylist.max_age must be longer than retry_window`]);
  // max_age at its default (35 d): the error points at retry_window.
  assert.deepEqual(issues(`${HEAD}  greylist:\n    retry_window: 40d\n`), [`${FILE}:7:19: policy.greylist.max_age must be longer than retry_window`]);
  assert.deepEqual(issues(`${HEAD}  greylist:\n    ipv4_prefix: 4\n`), [`${FILE}:7:18: policy.greylist.ipv4_prefix must be an integer from 8 to 32`]);
});

test('listen is required, timeout and myhostname are checked', () => {
  assert.deepEqual(issues(`${BASE}policy:\n  mynetworks: []\n`), [`${FILE}:5:3: policy.listen is required (unix:/path or inet:127.0.0.1:port)`]);
  assert.deepEqual(issues(`${HEAD}  timeout: 50ms\n`), [`${FILE}:6:12: policy.timeout must be between 100ms and 10m`]);
  assert.deepEqual(issues(`${HEAD}  timeout: soon\n`), [`${FILE}:6:12: policy.timeout must be a duration like 500ms, 10s, 5m, 1h`]);
  assert.deepEqual(issues(`${HEAD}  myhostname: "not a host"\n`), [`${FILE}:6:15: policy.myhostname must be a fully qualified host name`]);
  assert.deepEqual(policyOf(`${HEAD}  mynetworks: []\n`)!.mynetworks, [], 'an empty mynetworks trusts no client');
});
