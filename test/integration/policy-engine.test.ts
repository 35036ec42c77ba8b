// PolicyEngine over real parts: the YAML directory with the shared fixture,
// a test DNS server on loopback behind createResolver (c-ares), and the file
// policy state in a temp dir. Configs are parsed from YAML text, as the daemon
// reads them. The one fault injector is a directory wrapper that answers
// "unavailable" on demand.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ptrQueryName } from '../../src/checks/fcrdns.ts';
import { parseConfig } from '../../src/config/load.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { DirectoryError } from '../../src/directory/types.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { reverseIp } from '../../src/dns/dnsbl.ts';
import { createResolver, type NodeDnsResolver } from '../../src/dns/resolver.ts';
import { createLogger } from '../../src/logging/logger.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { encodePolicyRequest, PolicyReplyDecoder } from '../../src/policy/codec.ts';
import type { SmtpdPolicyConfig } from '../../src/policy/config.ts';
import { policyDecider } from '../../src/policy/decider.ts';
import { newMessageState, PolicyEngine, type MessageState, type PolicyDecision } from '../../src/policy/engine.ts';
import { policyRequest, type PolicyRequest } from '../../src/policy/request.ts';
import { startPolicyServer } from '../../src/policy/server.ts';
import { FilePolicyState } from '../../src/state/file-store.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { startDnsServer, type TestDnsServer, type Zones } from '../support/dns-server.ts';
import { asyncDirectory } from '../support/async-directory.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const MIN = 60_000;
const T0 = Date.UTC(2025, 4, 5, 6, 0, 0);

/** Client addresses (TEST-NET-1), each with its own DNS story. */
const IP = {
  /** PTR mail.pass.test -> 192.0.2.10; pass.test's SPF covers 192.0.2.0/24. */
  clean: '192.0.2.10',
  blOnly: '192.0.2.21',
  zen: '192.0.2.22',
  both: '192.0.2.23',
  zenOtherCode: '192.0.2.24',
  allowListed: '192.0.2.25',
  zenError: '192.0.2.26',
  noPtr: '192.0.2.30',
  badPtr: '192.0.2.31',
  ptrTimeout: '192.0.2.32',
  grey: '192.0.2.40',
  greyPass: '192.0.2.41',
  heloFail: '192.0.2.50',
} as const;

const bl = (ip: string, zone: string): string => `${reverseIp(ip)}.${zone}`;

const ZONES: Zones = {
  'pass.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
  'fail.test': { TXT: ['v=spf1 ip4:198.51.100.1 -all'] },
  'soft.test': { TXT: ['v=spf1 ~all'] },
  'slow.test': { TIMEOUT: true },
  'spam.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
  'mail.pass.test': { A: ['192.0.2.10'], TXT: ['v=spf1 a -all'] },
  'elsewhere.test': { A: ['198.51.100.99'] },
  [ptrQueryName(IP.clean)!]: { PTR: ['mail.pass.test'] },
  [ptrQueryName(IP.badPtr)!]: { PTR: ['elsewhere.test'] },
  [ptrQueryName(IP.ptrTimeout)!]: { TIMEOUT: true },
  // IP lists: zen.test scores 3 for 127.0.0.2-11, bl.test 2 for anything, wl.test -5.
  [bl(IP.blOnly, 'bl.test')]: { A: ['127.0.0.2'] },
  [bl(IP.zen, 'zen.test')]: { A: ['127.0.0.2', '127.0.0.4'] },
  [bl(IP.both, 'zen.test')]: { A: ['127.0.0.3'] },
  [bl(IP.both, 'bl.test')]: { A: ['127.0.0.2'] },
  [bl(IP.zenOtherCode, 'zen.test')]: { A: ['127.0.0.20'] },
  [bl(IP.allowListed, 'zen.test')]: { A: ['127.0.0.2'] },
  [bl(IP.allowListed, 'wl.test')]: { A: ['127.0.10.1'] },
  [bl(IP.zenError, 'zen.test')]: { A: ['127.255.255.254'] },
  [bl(IP.clean, 'slowbl.test')]: { TIMEOUT: true },
  [bl(IP.zen, 'slowbl.test')]: { TIMEOUT: true },
  // Domain list.
  'spam.example.dbl.test': { A: ['127.0.1.2'] },
};

const DNSBL = ['  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3", "bl.test*2", "wl.test*-5"]', '    threshold: 3'];

let tmp: TempDir;
let dns: TestDnsServer;
let resolver: NodeDnsResolver;
let yaml: YamlDirectory;
let lookups: LookupService;
let state: FilePolicyState;
let clock = T0;
/** Set to make every directory read fail as a database outage would. */
let directoryDown = false;

function policyConfig(lines: readonly string[]): SmtpdPolicyConfig {
  const text = [
    'directory:', '  backend: yaml', `  path: ${yaml.path}`,
    'policy:', '  listen: inet:127.0.0.1:10040', '  myhostname: mx.mailwarden.test',
    ...lines,
  ].join('\n');
  return parseConfig(text, join(tmp.path, 'mailwarden.yaml')).policy!;
}

function engine(lines: readonly string[] = []): PolicyEngine {
  return new PolicyEngine({ config: policyConfig(lines), lookups, resolver, state, now: () => clock });
}

let instanceCounter = 0;
const newInstance = (): string => `engine.${++instanceCounter}`;

/** An inbound RCPT from a clean Internet client, with the given fields changed. */
function rcpt(fields: Partial<Omit<PolicyRequest, 'attributes'>> = {}): PolicyRequest {
  return policyRequest({
    protocolState: 'RCPT',
    clientAddress: IP.clean,
    clientName: 'unknown',
    reverseClientName: 'unknown',
    heloName: 'mta.sender.test',
    sender: 'news@pass.test',
    recipient: 'alice@example.org',
    instance: newInstance(),
    ...fields,
  });
}

function decide(e: PolicyEngine, fields: Partial<Omit<PolicyRequest, 'attributes'>> = {}, msg: MessageState = newMessageState()): Promise<PolicyDecision> {
  return e.decide(rcpt(fields), msg);
}

const fact = (d: PolicyDecision, name: string): Record<string, unknown> => d.checks[name] as Record<string, unknown>;

before(async () => {
  tmp = await tempDir('policy-engine');
  dns = await startDnsServer(ZONES);
  resolver = createResolver({ servers: [dns.address], timeoutMs: 400 });
  yaml = YamlDirectory.open(join(tmp.path, 'directory.yaml'));
  await seedFixture(new DirectoryAdmin(yaml));
  lookups = new LookupService(asyncDirectory(yaml, () => directoryDown), { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
  state = FilePolicyState.open(join(tmp.path, 'directory.policy-state.json'), { sweep: false });
});

after(async () => {
  await state?.close();
  await yaml?.close();
  await dns?.stop();
  await tmp?.remove();
});

describe('recipients', () => {
  it('classifies mailbox, alias, catch-all and alias-domain recipients as ours, and disabled mailboxes as unknown', async () => {
    const e = engine(['  mynetworks: []']);
    const cases: Array<[string, string, RegExp]> = [
      ['alice@example.org', 'PREPEND', /^mailbox alice@example\.org$/],
      ['Alice+news@Example.ORG', 'PREPEND', /extension stripped/],
      ['info@example.org', 'PREPEND', /^alias info@example\.org$/],
      ['nobody@example.org', 'PREPEND', /^catch-all @example\.org$/],
      ['bob@example.net', 'PREPEND', /^alias domain example\.net -> example\.org$/],
      ['"john doe"@other.test', 'PREPEND', /^mailbox "john doe"@other\.test$/],
      ['carol@example.org', '550 5.1.1 User unknown', /disabled/],
      ['carol@example.net', '550 5.1.1 User unknown', /not deliverable/],
      ['old@example.org', '550 5.1.1 User unknown', /alias old@example\.org disabled/],
      ['nobody@other.test', '550 5.1.1 User unknown', /no alias, mailbox or catch-all/],
    ];
    for (const [recipient, action, rule] of cases) {
      const d = await decide(e, { recipient });
      assert.ok(d.action.startsWith(action), `${recipient}: ${d.action}`);
      const r = fact(d, 'recipient');
      assert.equal(r['kind'], 'local', recipient);
      assert.equal(r['exists'], action === 'PREPEND', recipient);
      assert.match(String(r['rule']), rule, recipient);
      assert.equal(d.decidedBy, action === 'PREPEND' ? 'pass' : 'unknown_recipient', recipient);
    }
  });

  it('a disabled domain is not ours: relaying for strangers, fine for mynetworks', async () => {
    const stranger = await decide(engine(), { recipient: 'eve@off.test' });
    assert.equal(stranger.action, '554 5.7.1 Relay access denied');
    assert.deepEqual(stranger.checks['recipient'], { kind: 'remote', domain: 'off.test' });
    const trusted = await decide(engine(), { clientAddress: '127.0.0.1', recipient: 'eve@off.test' });
    assert.equal(trusted.action, 'DUNNO');
    assert.equal(trusted.decidedBy, 'mynetworks');
  });

  it('recipients.reject_unknown: false lets unknown users through to Postfix', async () => {
    const d = await decide(engine(['  recipients:', '    reject_unknown: false']), { recipient: 'nobody@other.test' });
    assert.match(d.action, /^PREPEND Received-SPF: pass /);
  });
});

describe('relay tricks', () => {
  const TRICKS = [
    'victim%foreign.example@example.org',
    'victim!foreign.example@example.org',
    '"victim@foreign.example"@example.org',
    '@relay.example:victim@example.org',
  ];

  it('untrusted clients: routing in the local part and foreign domains are relaying (554), before any DNS', async () => {
    const e = engine();
    dns.clearLog();
    for (const recipient of TRICKS) {
      const d = await decide(e, { recipient });
      assert.equal(d.action, '554 5.7.1 Relay access denied (sender-specified routing)', recipient);
      assert.equal(d.decidedBy, 'relay', recipient);
    }
    const foreign = await decide(e, { recipient: 'victim@foreign.example' });
    assert.equal(foreign.action, '554 5.7.1 Relay access denied');
    const literal = await decide(e, { recipient: 'victim@[198.51.100.1]' });
    assert.equal(literal.action, '554 5.7.1 Relay access denied (domain is not a host name)');
    const empty = await decide(e, { recipient: '' });
    assert.equal(empty.action, '554 5.7.1 Relay access denied (empty recipient)');
    assert.equal(dns.queries.length, 0, 'relay attempts are refused without asking DNS');
  });

  it('mynetworks and SASL clients may relay and use routing (Postfix treats those itself)', async () => {
    const e = engine();
    for (const recipient of [...TRICKS, 'victim@foreign.example']) {
      const local = await decide(e, { clientAddress: '127.0.0.1', recipient });
      assert.equal(local.action, 'DUNNO', `mynetworks ${recipient}`);
      assert.equal(local.decidedBy, 'mynetworks');
      assert.equal(local.checks['mynetworks'], true);
      const sasl = await decide(e, { saslUsername: 'alice@example.org', saslMethod: 'PLAIN', sender: 'alice@example.org', recipient });
      assert.equal(sasl.action, 'DUNNO', `sasl ${recipient}`);
      assert.equal(sasl.decidedBy, 'authenticated');
    }
    // IPv6 loopback and the IPv4-mapped form are in the default mynetworks too.
    assert.equal((await decide(e, { clientAddress: '::1', recipient: 'victim@foreign.example' })).decidedBy, 'mynetworks');
    assert.equal((await decide(e, { clientAddress: '::ffff:127.0.0.5', recipient: 'victim@foreign.example' })).decidedBy, 'mynetworks');
    // Trusted, but still not a user of ours.
    assert.equal((await decide(e, { clientAddress: '127.0.0.1', recipient: 'nobody@other.test' })).action, '550 5.1.1 User unknown');
  });
});

describe('sender login (SASL)', () => {
  const e = () => engine();
  const submit = (login: string, sender: string) =>
    decide(e(), { saslUsername: login, saslMethod: 'PLAIN', sender, recipient: 'someone@foreign.example', clientAddress: '198.51.100.77' });

  it('a login may send as itself, its aliases, granted addresses, plus addresses and alias-domain forms', async () => {
    for (const [login, sender] of [
      ['alice@example.org', 'alice@example.org'],
      ['alice@example.org', 'ALICE@Example.org'],
      ['Alice@Example.ORG', 'alice@example.org'],
      ['alice@example.org', 'info@example.org'],
      ['bob@example.org', 'info@example.org'],
      ['alice@example.org', 'alice+lists@example.org'],
      ['alice@example.org', 'alice@example.net'],
      ['bob@example.org', 'postmaster@other.test'],
      ['alice@example.org', 'dave@other.test'],
      ['dave@other.test', 'dave@other.test'],
      ['alice@example.org', ''],
    ] as const) {
      const d = await submit(login, sender);
      assert.equal(d.action, 'DUNNO', `${login} as <${sender}>: ${d.action}`);
      assert.equal(fact(d, 'sender_login')['allowed'], true);
    }
  });

  it('anything else is 553 5.7.1 with the owners in the log facts', async () => {
    for (const [login, sender] of [
      ['bob@example.org', 'alice@example.org'],
      ['bob@example.org', 'dave@other.test'],
      ['alice@example.org', 'x@foreign.example'],
      ['alice@example.org', 'nobody@example.org'],
      ['carol@example.org', 'carol@example.org'],
    ] as const) {
      const d = await submit(login, sender);
      assert.equal(d.action, `553 5.7.1 Sender address <${sender}> not owned by user ${login}`);
      assert.equal(d.decidedBy, 'sender_login');
    }
    const d = await submit('bob@example.org', 'dave@other.test');
    assert.deepEqual(d.checks['sender_login'], { allowed: false, owners: 'alice@example.org,dave@other.test', rule: 'grant @other.test -> alice@example.org; mailbox dave@other.test' });
  });

  it('sender_login.enabled: false allows any sender', async () => {
    const d = await decide(engine(['  sender_login:', '    enabled: false']), { saslUsername: 'bob@example.org', sender: 'x@foreign.example', recipient: 'someone@foreign.example' });
    assert.equal(d.action, 'DUNNO');
    assert.equal(d.checks['sender_login'], undefined);
  });
});

describe('rate limits (per SASL login, counted at DATA)', () => {
  /** One message: its RCPTs, then DATA when at least one was accepted. Returns the RCPT actions. */
  async function message(e: PolicyEngine, login: string, recipients: readonly string[]): Promise<string[]> {
    const msg = newMessageState();
    const instance = newInstance();
    const base = { saslUsername: login, saslMethod: 'PLAIN', sender: login, clientAddress: '198.51.100.77', instance };
    const actions: string[] = [];
    for (const recipient of recipients) actions.push((await e.decide(rcpt({ ...base, recipient }), msg)).action);
    const accepted = actions.filter((a) => a === 'DUNNO').length;
    if (accepted > 0) {
      const data = await e.decide(rcpt({ ...base, protocolState: 'DATA', recipient: '', recipientCount: accepted }), msg);
      assert.equal(data.action, 'DUNNO');
      // A second DATA-stage request for the same message (END-OF-MESSAGE style retry) must not count it twice.
      assert.equal((await e.decide(rcpt({ ...base, protocolState: 'DATA', recipient: '', recipientCount: accepted }), msg)).decidedBy, 'not_rcpt');
    }
    return actions;
  }

  it('messages { count: 2 }: the third message is refused 450 4.7.1 at RCPT, until the window moves on', async () => {
    clock = T0;
    const e = engine(['  rate_limit:', '    messages: { count: 2, window: 1h }']);
    assert.deepEqual(await message(e, 'alice@example.org', ['a@foreign.example', 'b@foreign.example']), ['DUNNO', 'DUNNO']);
    clock += MIN;
    assert.deepEqual(await message(e, 'Alice@Example.org', ['c@foreign.example']), ['DUNNO'], 'the login is compared case-insensitively');
    clock += MIN;
    const [third] = await message(e, 'alice@example.org', ['d@foreign.example']);
    assert.match(third!, /^450 4\.7\.1 Sender rate limit exceeded for alice@example\.org \(2 messages per 1h\), try again in \d+ minutes$/);
    // Another login has its own counter; a mynetworks client is not rate limited at all.
    assert.deepEqual(await message(e, 'bob@example.org', ['e@foreign.example']), ['DUNNO']);
    assert.equal((await decide(e, { clientAddress: '127.0.0.1', recipient: 'f@foreign.example' })).action, 'DUNNO');
    // An hour and a bucket later the first messages no longer count.
    clock += 66 * MIN;
    assert.deepEqual(await message(e, 'alice@example.org', ['g@foreign.example']), ['DUNNO']);
  });

  it('recipients { count: 3 }: the fourth RCPT of one message is refused for good; after a full window the login may send again', async () => {
    clock = T0 + 10 * 24 * 60 * MIN;
    const e = engine(['  rate_limit:', '    recipients: { count: 3, window: 1h }']);
    const first = await message(e, 'dave@other.test', ['a@x.example', 'b@x.example', 'c@x.example', 'd@x.example']);
    assert.deepEqual(first.slice(0, 3), ['DUNNO', 'DUNNO', 'DUNNO']);
    // Four recipients never fit in a limit of three: no "try again" promise.
    assert.equal(first[3], '450 4.7.1 Sender rate limit exceeded for dave@other.test (3 recipients per 1h)');
    clock += MIN;
    const [next] = await message(e, 'dave@other.test', ['e@x.example']);
    assert.match(next!, /^450 4\.7\.1 Sender rate limit exceeded for dave@other\.test \(3 recipients per 1h\), try again in \d+ minutes$/);
    clock += 66 * MIN;
    assert.deepEqual(await message(e, 'dave@other.test', ['f@x.example', 'g@x.example', 'h@x.example']), ['DUNNO', 'DUNNO', 'DUNNO']);
  });

  it('a state store that fails makes decide() throw (the server answers its default action), never a reject', async () => {
    const broken = FilePolicyState.open(undefined, { sweep: false });
    await broken.close();
    const e = new PolicyEngine({ config: policyConfig(['  rate_limit:', '    messages: { count: 2 }']), lookups, resolver, state: broken, now: () => clock });
    await assert.rejects(decide(e, { saslUsername: 'alice@example.org', sender: 'alice@example.org', recipient: 'x@foreign.example' }), (err: unknown) => err instanceof DirectoryError && err.code === 'unavailable');
  });
});

describe('Received-SPF', () => {
  it('is prepended once per message across several RCPTs, and again for the next message; a refused first RCPT does not use it up', async () => {
    const e = engine();
    const msg = newMessageState();
    const instance = newInstance();
    dns.clearLog();
    const unknown = await decide(e, { instance, recipient: 'nobody@other.test' }, msg);
    assert.equal(unknown.action, '550 5.1.1 User unknown');
    const first = await decide(e, { instance, recipient: 'alice@example.org' }, msg);
    assert.match(first.action, /^PREPEND Received-SPF: pass \(mx\.mailwarden\.test: domain of news@pass\.test designates 192\.0\.2\.10 as permitted sender\) receiver=mx\.mailwarden\.test; client-ip=192\.0\.2\.10; envelope-from="news@pass\.test"; helo=mta\.sender\.test; identity=mailfrom;$/);
    const second = await decide(e, { instance, recipient: 'bob@example.org' }, msg);
    assert.equal(second.action, 'DUNNO');
    assert.equal(second.decidedBy, 'pass');
    assert.equal(fact(second, 'spf')['result'], 'pass', 'later recipients still carry the facts');
    assert.equal(dns.count('pass.test', 'TXT'), 1, 'SPF is evaluated once per message');

    const next = await decide(e, { recipient: 'bob@example.org' });
    assert.match(next.action, /^PREPEND Received-SPF: pass /);
    assert.equal(dns.count('pass.test', 'TXT'), 1, 'the same client and sender within a minute: the SPF verdict is reused');
    const otherClient = await decide(e, { recipient: 'bob@example.org', clientAddress: '192.0.2.11' });
    assert.match(otherClient.action, /^PREPEND Received-SPF: pass .*client-ip=192\.0\.2\.11;/);
    assert.equal(dns.count('pass.test', 'TXT'), 2, 'another client is evaluated afresh');
  });

  it('the null sender is checked by its HELO identity', async () => {
    const d = await decide(engine(), { sender: '', heloName: 'mail.pass.test' });
    assert.match(d.action, /^PREPEND Received-SPF: pass .* helo=mail\.pass\.test; identity=helo;$/);
    assert.equal(d.checks['spf_helo'], undefined, 'no separate HELO check: MAIL FROM already is the HELO identity');
  });
});

describe('SPF verdicts', () => {
  it('fail is rejected 550 5.7.23 by default, annotated with on_fail: annotate', async () => {
    const d = await decide(engine(), { sender: 'boss@fail.test' });
    assert.equal(d.action, '550 5.7.23 SPF fail: fail.test does not designate 192.0.2.10 as permitted sender');
    assert.equal(d.decidedBy, 'spf');
    const a = await decide(engine(['  spf:', '    on_fail: annotate']), { sender: 'boss@fail.test' });
    assert.match(a.action, /^PREPEND Received-SPF: fail /);
  });

  it('a HELO identity fail is final even when MAIL FROM passes; spf.helo: false skips it', async () => {
    const d = await decide(engine(), { clientAddress: IP.heloFail, heloName: 'mail.pass.test' });
    assert.equal(d.action, '550 5.7.23 SPF fail: mail.pass.test does not designate 192.0.2.50 as permitted sender');
    assert.equal(fact(d, 'spf_helo')['result'], 'fail');
    assert.equal(fact(d, 'spf')['result'], 'pass');
    const off = await decide(engine(['  spf:', '    helo: false']), { clientAddress: IP.heloFail, heloName: 'mail.pass.test' });
    assert.match(off.action, /^PREPEND Received-SPF: pass /);
  });

  it('temperror defers (never 5xx) unless on_temperror: annotate', async () => {
    const d = await decide(engine(), { sender: 'x@slow.test' });
    assert.match(d.action, /^DEFER_IF_PERMIT 4\.7\.24 SPF temporary error: slow\.test: DNS timeout; try again later$/);
    const a = await decide(engine(['  spf:', '    on_temperror: annotate']), { sender: 'x@slow.test' });
    assert.match(a.action, /^PREPEND Received-SPF: temperror /);
  });

  it('softfail is annotated by default and rejected with on_softfail: reject', async () => {
    assert.match((await decide(engine(), { sender: 'x@soft.test' })).action, /^PREPEND Received-SPF: softfail /);
    assert.equal((await decide(engine(['  spf:', '    on_softfail: reject']), { sender: 'x@soft.test' })).action,
      '550 5.7.23 SPF softfail: soft.test does not designate 192.0.2.10 as permitted sender');
  });

  it('skip_networks and enabled: false: no SPF, no header', async () => {
    const skip = await decide(engine(['  spf:', '    skip_networks: ["192.0.2.0/28"]']), { sender: 'boss@fail.test' });
    assert.equal(skip.action, 'DUNNO');
    assert.equal(skip.checks['spf'], undefined);
    const off = await decide(engine(['  spf:', '    enabled: false']), { sender: 'boss@fail.test' });
    assert.equal(off.action, 'DUNNO');
  });
});

describe('DNS lists', () => {
  it('scores like postscreen: filters, weights, threshold; allow lists subtract', async () => {
    const e = engine(DNSBL);
    const below = await decide(e, { clientAddress: IP.blOnly });
    assert.match(below.action, /^PREPEND Received-SPF: pass /, 'score 2 < threshold 3');
    assert.deepEqual(below.checks['dnsbl'], { score: 2, listed: ['bl.test=127.0.0.2*2'] });

    const zen = await decide(e, { clientAddress: IP.zen });
    assert.equal(zen.action, '554 5.7.1 Service unavailable; Client host [192.0.2.22] blocked using zen.test');
    assert.equal(zen.decidedBy, 'dnsbl');
    assert.deepEqual(zen.checks['dnsbl'], { score: 3, listed: ['zen.test=127.0.0.2/127.0.0.4*3'] });

    const both = await decide(e, { clientAddress: IP.both });
    assert.equal(both.action, '554 5.7.1 Service unavailable; Client host [192.0.2.23] blocked using zen.test, bl.test');
    assert.equal(fact(both, 'dnsbl')['score'], 5);

    const otherCode = await decide(e, { clientAddress: IP.zenOtherCode });
    assert.match(otherCode.action, /^PREPEND /, '127.0.0.20 is outside zen.test=127.0.0.[2..11]');
    assert.deepEqual(otherCode.checks['dnsbl'], { score: 0 });

    const allowed = await decide(e, { clientAddress: IP.allowListed });
    assert.match(allowed.action, /^PREPEND /, '3 - 5 < 3');
    assert.equal(fact(allowed, 'dnsbl')['score'], -2);

    const listError = await decide(e, { clientAddress: IP.zenError });
    assert.match(listError.action, /^PREPEND /, "Spamhaus's error code is not a listing");
    assert.deepEqual(fact(listError, 'dnsbl')['errors'], ['zen.test: ELISTERROR']);
  });

  it('action: defer answers 450, action: warn only logs', async () => {
    assert.equal((await decide(engine([...DNSBL, '    action: defer']), { clientAddress: IP.zen })).action,
      '450 4.7.1 Service unavailable; Client host [192.0.2.22] blocked using zen.test');
    const warn = await decide(engine([...DNSBL, '    action: warn']), { clientAddress: IP.zen });
    assert.match(warn.action, /^PREPEND /);
    assert.equal(fact(warn, 'dnsbl')['score'], 3);
  });

  it('a zone that cannot answer: skipped by default, deferred with on_error: defer, and a listing elsewhere still rejects', async () => {
    const sites = ['  dnsbl:', '    sites: ["zen.test=127.0.0.[2..11]*3", "slowbl.test"]', '    threshold: 3'];
    const ignore = await decide(engine(sites), { clientAddress: IP.clean });
    assert.match(ignore.action, /^PREPEND /);
    assert.deepEqual(fact(ignore, 'dnsbl')['errors'], ['slowbl.test: ETIMEOUT']);
    const defer = await decide(engine([...sites, '    on_error: defer']), { clientAddress: IP.clean });
    assert.equal(defer.action, 'DEFER_IF_PERMIT 4.7.1 Client host [192.0.2.10] could not be checked against slowbl.test, try again later');
    assert.equal(defer.decidedBy, 'dnsbl_error');
    const listed = await decide(engine([...sites, '    on_error: defer']), { clientAddress: IP.zen });
    assert.match(listed.action, /^554 5\.7\.1 Service unavailable; Client host \[192\.0\.2\.22\] blocked using zen\.test$/);
  });

  it('rhsbl looks up the sender domain', async () => {
    const e = engine(['  rhsbl:', '    sites: ["dbl.test"]']);
    const d = await decide(e, { sender: 'offers@spam.example' });
    assert.equal(d.action, '554 5.7.1 Service unavailable; Sender domain spam.example blocked using dbl.test');
    assert.equal(d.decidedBy, 'rhsbl');
    assert.deepEqual(d.checks['rhsbl'], { score: 1, listed: ['dbl.test=127.0.1.2*1'] });
    assert.match((await decide(e, { sender: 'news@pass.test' })).action, /^PREPEND /);
    // The null sender has no domain to look up.
    assert.equal((await decide(e, { sender: '', heloName: 'mail.pass.test' })).checks['rhsbl'], undefined);
  });
});

describe('client checks', () => {
  it('fcrdns: reject answers 550 5.7.25 for no PTR or a PTR that does not point back, 450 when DNS failed', async () => {
    const e = engine(['  fcrdns:', '    action: reject']);
    const none = await decide(e, { clientAddress: IP.noPtr });
    assert.equal(none.action, '550 5.7.25 Client host rejected: cannot find your hostname, [192.0.2.30]');
    assert.equal(none.decidedBy, 'fcrdns');
    assert.equal(fact(none, 'fcrdns')['result'], 'none');
    const fail = await decide(e, { clientAddress: IP.badPtr });
    assert.equal(fail.action, '550 5.7.25 Client host rejected: cannot find your hostname, [192.0.2.31]');
    assert.equal(fact(fail, 'fcrdns')['result'], 'fail');
    const temp = await decide(e, { clientAddress: IP.ptrTimeout });
    assert.equal(temp.action, '450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.32]');
    assert.equal(fact(temp, 'fcrdns')['result'], 'temperror');
    const ok = await decide(e, { clientAddress: IP.clean });
    assert.match(ok.action, /^PREPEND /);
    assert.deepEqual(ok.checks['fcrdns'], { result: 'pass', name: 'mail.pass.test', detail: '192.0.2.10 -> mail.pass.test -> 192.0.2.10' });
    // Postfix's verified client_name is trusted without asking DNS again.
    dns.clearLog();
    const verified = await decide(e, { clientAddress: IP.noPtr, clientName: 'mail.pass.test' });
    assert.match(verified.action, /^PREPEND /);
    assert.equal(dns.count(ptrQueryName(IP.noPtr)!), 0);
  });

  it('fcrdns: defer answers 450 4.7.25, warn and ignore let the mail through', async () => {
    assert.equal((await decide(engine(['  fcrdns:', '    action: defer']), { clientAddress: IP.noPtr })).action,
      '450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.30]');
    const warn = await decide(engine(), { clientAddress: IP.noPtr });
    assert.match(warn.action, /^PREPEND /);
    assert.equal(fact(warn, 'fcrdns')['result'], 'none');
    const ignore = await decide(engine(['  fcrdns:', '    action: ignore']), { clientAddress: IP.noPtr });
    assert.equal(ignore.checks['fcrdns'], undefined);
  });

  it('helo: reject refuses missing, non-FQDN, invalid and forged names; warn only logs', async () => {
    const e = engine(['  helo:', '    action: reject']);
    const cases: Array<[string, string]> = [
      ['', '503 5.5.1 Error: send HELO/EHLO first'],
      ['localhost', '504 5.5.2 Helo command rejected: <localhost> needs to be a fully-qualified hostname'],
      ['bad_name!.example', '501 5.5.2 Helo command rejected: <bad_name!.example> is not a valid host name'],
      ['192.0.2.10', '501 5.5.2 Helo command rejected: <192.0.2.10> is not a valid host name'],
      ['mx.mailwarden.test', '550 5.7.1 Helo command rejected: <mx.mailwarden.test>: you are not me'],
      ['Example.ORG', '550 5.7.1 Helo command rejected: <Example.ORG>: you are not me'],
      ['example.net', '550 5.7.1 Helo command rejected: <example.net>: you are not me'],
    ];
    for (const [helo, action] of cases) {
      const d = await decide(e, { heloName: helo });
      assert.equal(d.action, action, `HELO ${JSON.stringify(helo)}`);
      assert.equal(d.decidedBy, 'helo');
    }
    assert.match((await decide(e, { heloName: '[192.0.2.10]' })).action, /^PREPEND /, 'the client address as a literal');
    const warn = await decide(engine(), { heloName: 'localhost' });
    assert.match(warn.action, /^PREPEND /);
    assert.equal(fact(warn, 'helo')['result'], 'not_fqdn');
  });

  it('helo: reject does not refuse an address literal that is not the client address (RFC 5321 §4.1.4)', async () => {
    const d = await decide(engine(['  helo:', '    action: reject']), { heloName: '[10.1.2.3]' });
    assert.match(d.action, /^PREPEND Received-SPF: pass /);
    assert.equal(fact(d, 'helo')['result'], 'literal_mismatch');
  });
});

describe('greylisting', () => {
  it('defers a new triplet, passes the retry after the delay, and skips SPF-pass mail', async () => {
    clock = T0 + 20 * 24 * 60 * MIN;
    const e = engine(['  greylist:', '    delay: 5m']);
    const first = await decide(e, { clientAddress: IP.grey, sender: 'x@soft.test', recipient: 'bob@example.org' });
    assert.equal(first.action, 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds');
    assert.equal(first.decidedBy, 'greylist');
    clock += 2 * MIN;
    assert.equal((await decide(e, { clientAddress: IP.grey, sender: 'x@soft.test', recipient: 'bob@example.org' })).action,
      'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 180 seconds');
    clock += 4 * MIN;
    const retry = await decide(e, { clientAddress: IP.grey, sender: 'x@soft.test', recipient: 'bob@example.org' });
    assert.match(retry.action, /^PREPEND Received-SPF: softfail /);
    assert.equal(fact(retry, 'greylist')['result'], 'pass');
    const spfPass = await decide(e, { clientAddress: IP.greyPass, sender: 'news@pass.test', recipient: 'bob@example.org' });
    assert.match(spfPass.action, /^PREPEND Received-SPF: pass /);
    assert.equal(spfPass.checks['greylist'], 'skipped: spf pass');
  });
});

describe('directory unavailable', () => {
  it('decide() throws DirectoryError(unavailable) for every kind of client, and the policy server answers the default action', async () => {
    const e = engine(['  default_action: DEFER_IF_PERMIT 4.3.0 Directory unavailable, try again later']);
    directoryDown = true;
    try {
      for (const fields of [{}, { clientAddress: '127.0.0.1' }, { saslUsername: 'alice@example.org', sender: 'alice@example.org' }]) {
        await assert.rejects(decide(e, fields), (err: unknown) => err instanceof DirectoryError && err.code === 'unavailable', JSON.stringify(fields));
      }
      const listen = { listen: { kind: 'unix' as const, path: join(tmp.path, 'policy.sock') }, unix: { mode: 0o600 } };
      const server = await startPolicyServer({
        listen,
        decide: policyDecider(() => e, createLogger('silent')),
        log: createLogger('silent'),
        defaultAction: e.config.defaultAction,
        deadlineMs: e.config.timeoutMs,
      });
      try {
        const ask = async (): Promise<string> => {
          const socket = connect(listen.listen.path);
          const decoder = new PolicyReplyDecoder();
          const reply = new Promise<string>((resolve, reject) => {
            socket.on('data', (chunk: Buffer) => {
              const [action] = decoder.push(chunk);
              if (action !== undefined) resolve(action);
            });
            socket.on('error', reject);
          });
          socket.write(encodePolicyRequest({ request: 'smtpd_access_policy', protocol_state: 'RCPT', client_address: IP.clean, sender: 'news@pass.test', recipient: 'alice@example.org', instance: 'down.1' }));
          try {
            return await reply;
          } finally {
            socket.destroy();
          }
        };
        assert.equal(await ask(), 'DEFER_IF_PERMIT 4.3.0 Directory unavailable, try again later');
        directoryDown = false;
        assert.match(await ask(), /^PREPEND Received-SPF: pass /, 'back to normal once the directory answers');
      } finally {
        await server.close(100);
      }
    } finally {
      directoryDown = false;
    }
  });
});
