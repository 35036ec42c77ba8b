import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BLOCK_MESSAGE, BruteForcePolicy, DEFAULT_POLICY, subnetOf, type PolicySettings } from '../../../src/auth/policy.ts';
import { parseCidr } from '../../../src/core/network.ts';
import { parseConfig } from '../../../src/config/load.ts';

const MIN = 60_000;

function make(over: Partial<PolicySettings> = {}): { p: BruteForcePolicy; clock: { now: number } } {
  const clock = { now: 1_700_000_000_000 };
  const p = new BruteForcePolicy({ ...DEFAULT_POLICY, delayAfter: 3, blockAfter: 6, maxDelayMs: 5000, allow: [], ...over }, () => clock.now);
  return { p, clock };
}

const fail = (p: BruteForcePolicy, remote: string, login: string, pwhash: string) => p.report({ remote, login, pwhash, success: false });

describe('BruteForcePolicy', () => {
  it('counts distinct password hashes: the same stale password retried counts once', () => {
    const { p } = make();
    for (let i = 0; i < 20; i++) fail(p, '192.0.2.1', 'alice@example.org', '0edf');
    const d = p.check({ remote: '192.0.2.1', login: 'alice@example.org' });
    assert.equal(d.status, 0);
    assert.deepEqual(d.counts, { ip: 1, subnet: 1, login: 1 });
  });

  it('tarpits after delay_after distinct failures, doubling up to max_delay, then blocks', () => {
    const { p } = make();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      statuses.push(p.check({ remote: '192.0.2.1', login: 'alice@example.org' }).status);
      fail(p, '192.0.2.1', 'alice@example.org', `h${i}`);
    }
    assert.deepEqual(statuses, [0, 0, 0, 1, 2, 4]);
    const blocked = p.check({ remote: '192.0.2.1', login: 'alice@example.org' });
    assert.equal(blocked.status, -1);
    assert.equal(blocked.msg, BLOCK_MESSAGE);
    assert.equal(blocked.key, 'ip:192.0.2.1');

    const { p: capped } = make({ blockAfter: 50, maxDelayMs: 5000 });
    for (let i = 0; i < 20; i++) fail(capped, '192.0.2.1', `u${i}@example.org`, 'x');
    assert.equal(capped.check({ remote: '192.0.2.1' }).status, 5, 'capped at max_delay (seconds)');
  });

  it('reports the keys that become blocked, once', () => {
    const { p } = make();
    const blocked: string[][] = [];
    for (let i = 0; i < 8; i++) blocked.push(fail(p, '192.0.2.1', `u${i}@example.org`, 'x'));
    assert.deepEqual(blocked[5], ['ip:192.0.2.1']);
    assert.deepEqual(blocked.flat(), ['ip:192.0.2.1']);
  });

  it('a block expires after block_time; failures leave the window', () => {
    const { p, clock } = make({ blockTimeMs: 30 * MIN, windowMs: 10 * MIN });
    for (let i = 0; i < 6; i++) fail(p, '192.0.2.1', 'alice@example.org', `h${i}`);
    assert.equal(p.check({ remote: '192.0.2.1' }).status, -1);
    clock.now += 29 * MIN;
    assert.equal(p.check({ remote: '192.0.2.1' }).status, -1);
    assert.equal(p.blocked().length, 1);
    clock.now += 2 * MIN;
    assert.equal(p.check({ remote: '192.0.2.1' }).status, 0, 'block over, failures out of the window');
    assert.deepEqual(p.blocked(), []);
    // Sliding window: old failures stop counting.
    fail(p, '192.0.2.9', 'bob@example.org', 'a');
    fail(p, '192.0.2.9', 'bob@example.org', 'b');
    clock.now += 6 * MIN;
    fail(p, '192.0.2.9', 'bob@example.org', 'c');
    assert.equal(p.check({ remote: '192.0.2.9' }).status, 1);
    clock.now += 5 * MIN;
    assert.deepEqual(p.check({ remote: '192.0.2.9' }).counts.ip, 1);
  });

  it('counts IPv4 /24 and IPv6 /64 subnets (4x the per-IP thresholds)', () => {
    assert.equal(subnetOf('192.0.2.77'), '192.0.2.0/24');
    assert.equal(subnetOf('2001:db8:0:1:aa::5'), '2001:db8:0:1::/64');
    assert.equal(subnetOf('2001:db8::1'), '2001:db8:0:0::/64');
    const { p } = make({ delayAfter: 1, blockAfter: 2 });
    // 8 addresses of one /64, one guess each: no single IP reaches block_after, the subnet does (2 x 4).
    for (let i = 1; i <= 8; i++) fail(p, `2001:db8:0:1::${i}`, `u${i}@example.org`, 'x');
    const d = p.check({ remote: '2001:db8:0:1:ffff::1' });
    assert.equal(d.status, -1);
    assert.equal(d.key, 'subnet:2001:db8:0:1::/64');
    assert.equal(p.check({ remote: '2001:db8:0:2::1' }).status, 0, 'the next /64 is not affected');
    const { p: v4 } = make({ delayAfter: 1, blockAfter: 2 });
    for (let i = 1; i <= 4; i++) fail(v4, `198.51.100.${i}`, `u${i}@example.org`, 'x');
    assert.equal(v4.check({ remote: '198.51.100.200' }).status, 1, 'subnet delay at 4 distinct failures');
    assert.equal(v4.check({ remote: '198.51.101.1' }).status, 0);
    assert.equal(v4.check({ remote: '::ffff:198.51.100.9' }).status, 1, 'IPv4-mapped addresses count as IPv4');
  });

  it('counts per login across IPs (2x), but not against IPs that logged in successfully', () => {
    const { p } = make({ delayAfter: 1, blockAfter: 2 });
    p.report({ remote: '203.0.113.5', login: 'alice@example.org', pwhash: 'good', success: true });
    for (let i = 1; i <= 4; i++) fail(p, `10.${i}.0.1`, 'Alice@Example.org', `h${i}`);
    const d = p.check({ remote: '10.99.0.1', login: 'alice@example.org' });
    assert.equal(d.status, -1);
    assert.equal(d.key, 'login:alice@example.org');
    assert.equal(p.check({ remote: '203.0.113.5', login: 'alice@example.org' }).status, 0, "the owner's device still gets in");
    assert.equal(p.check({ remote: '10.99.0.1', login: 'bob@example.org' }).status, 0);
  });

  it("a success forgives that login's failures from that IP, not the IP's failures for other logins", () => {
    const { p } = make();
    fail(p, '192.0.2.1', 'alice@example.org', 'a');
    fail(p, '192.0.2.1', 'alice@example.org', 'b');
    fail(p, '192.0.2.1', 'bob@example.org', 'a');
    fail(p, '192.0.2.1', 'carol@example.org', 'a');
    assert.equal(p.check({ remote: '192.0.2.1' }).counts.ip, 4);
    p.report({ remote: '192.0.2.1', login: 'alice@example.org', pwhash: 'c', success: true });
    assert.equal(p.check({ remote: '192.0.2.1' }).counts.ip, 2);
    assert.equal(p.check({ remote: '192.0.2.1', login: 'alice@example.org' }).counts.login, 0);
  });

  it('policy rejects are not counted; a missing pwhash counts every failure', () => {
    const { p } = make();
    for (let i = 0; i < 10; i++) p.report({ remote: '192.0.2.1', login: 'a@example.org', pwhash: `h${i}`, success: false, policyReject: true });
    assert.equal(p.check({ remote: '192.0.2.1' }).status, 0);
    for (let i = 0; i < 3; i++) p.report({ remote: '192.0.2.2', login: 'a@example.org', success: false });
    assert.equal(p.check({ remote: '192.0.2.2' }).counts.ip, 3);
  });

  it('allow-listed networks are never delayed or blocked', () => {
    const { p } = make({ allow: ['192.0.2.0/24', '2001:db8::/32', '127.0.0.0/8', '::1'] });
    for (const ip of ['192.0.2.1', '2001:db8:1::1', '127.0.0.1', '::1', '::ffff:192.0.2.3']) {
      for (let i = 0; i < 10; i++) fail(p, ip, 'alice@example.org', `${ip}${i}`);
      assert.equal(p.check({ remote: ip }).status, 0, ip);
    }
    assert.equal(p.isAllowListed('192.0.3.1'), false);
    assert.equal(new BruteForcePolicy(DEFAULT_POLICY).isAllowListed('127.0.0.1'), true, 'loopback by default');
    assert.equal(new BruteForcePolicy(DEFAULT_POLICY).isAllowListed('::1'), true);
  });

  it('unblock an IP (with its subnet), a subnet or a login; blocked() lists them', () => {
    const { p } = make({ delayAfter: 1, blockAfter: 1 });
    fail(p, '192.0.2.1', 'alice@example.org', 'x');
    fail(p, '192.0.2.1', 'alice@example.org', 'y');
    const keys = p.blocked().map((b) => `${b.kind}:${b.key}`).sort();
    assert.deepEqual(keys, ['ip:192.0.2.1', 'login:alice@example.org']);
    assert.deepEqual(p.unblock('192.0.2.1').sort(), ['ip:192.0.2.1', 'subnet:192.0.2.0/24']);
    assert.equal(p.check({ remote: '192.0.2.1', login: 'bob@example.org' }).status, 0);
    assert.deepEqual(p.unblock('Alice@Example.org'), ['login:alice@example.org']);
    assert.deepEqual(p.blocked(), []);
    assert.deepEqual(p.unblock('198.51.100.1'), []);
  });

  it('memory is bounded: the least recently used keys are evicted', () => {
    const { p } = make({ maxEntries: 100 });
    for (let i = 0; i < 1000; i++) fail(p, `10.0.${i >> 8}.${i & 255}`, `u${i}@example.org`, 'x');
    assert.ok(p.size <= 100, String(p.size));
  });

  it('disabled: always continue', () => {
    const { p } = make({ enabled: false, blockAfter: 1, delayAfter: 1 });
    fail(p, '192.0.2.1', 'a@example.org', 'x');
    assert.equal(p.check({ remote: '192.0.2.1' }).status, 0);
  });

  it('parseCidr', () => {
    assert.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    assert.deepEqual(parseCidr('::1'), { address: '::1', prefix: 128, family: 'ipv6' });
    assert.match(parseCidr('10.0.0.0/33') as string, /at most 32/);
    assert.match(parseCidr('example.org') as string, /not an IP/);
  });
});

describe('auth.policy config', () => {
  const base = 'directory:\n  path: d.yaml\nauth:\n  listen: unix:/run/mw/auth.sock\n';
  it('defaults', () => {
    const c = parseConfig(base, '/etc/mw.yaml');
    assert.deepEqual(c.auth?.policy, DEFAULT_POLICY);
  });
  it('values and errors with file:line:col', () => {
    const c = parseConfig(`${base}  policy:\n    delay_after: 2\n    block_after: 4\n    window: 5m\n    block_time: 2h\n    max_delay: 3s\n    allow: []\n`, '/etc/mw.yaml');
    assert.deepEqual(c.auth?.policy, { ...DEFAULT_POLICY, delayAfter: 2, blockAfter: 4, windowMs: 5 * MIN, blockTimeMs: 120 * MIN, maxDelayMs: 3000, allow: [] });
    assert.throws(() => parseConfig(`${base}  policy:\n    allow: [10.0.0.0/8, nope]\n    block_after: 0\n    typo: 1\n`, '/etc/mw.yaml'), (err: Error) => {
      assert.match(err.message, /\/etc\/mw\.yaml:6:25: auth\.policy\.allow: not an IP address or CIDR network: "nope"/);
      assert.match(err.message, /\/etc\/mw\.yaml:7:18: auth\.policy\.block_after must be an integer/);
      assert.match(err.message, /\/etc\/mw\.yaml:8:5: unknown setting auth\.policy\.typo/);
      return true;
    });
  });
});
