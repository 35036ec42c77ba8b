import assert from 'node:assert/strict';
import { availableParallelism, hostname } from 'node:os';
import { describe, it } from 'node:test';
import { ConfigError } from '../../../src/config/reader.ts';
import { parseConfig } from '../../../src/config/load.ts';
import { autoWorkers, MILTER_DEFAULTS } from '../../../src/milter/config.ts';

const BASE = 'directory:\n  backend: yaml\n  path: /tmp/x.yaml\n';
const parse = (text: string) => parseConfig(BASE + text, '/etc/mailwarden/mailwarden.yaml');
const errors = (text: string): string[] => {
  try {
    parse(text);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  return [];
};

describe('milter config', () => {
  it('is off without a milter section', () => {
    assert.equal(parse('').milter, undefined);
  });

  it('defaults: authserv-id from policy.myhostname, 64M, accept on error, quarantine as a header, ORIGINATING signs', () => {
    const m = parse('policy:\n  listen: inet:127.0.0.1:10040\n  myhostname: mx.example.org\nmilter:\n  listen: unix:/var/spool/postfix/mailwarden/milter.sock\n').milter!;
    assert.deepEqual(m.listen, { kind: 'unix', path: '/var/spool/postfix/mailwarden/milter.sock' });
    assert.equal(m.authservId, 'mx.example.org');
    assert.equal(m.maxMessageSize, 64 * 1024 * 1024);
    assert.equal(m.timeoutMs, MILTER_DEFAULTS.timeoutMs);
    assert.equal(m.onError, 'accept');
    assert.deepEqual(m.dmarc, { reject: 'reject', quarantine: 'header', trustedArcSealers: [], exemptDomains: [], exemptNetworks: [] });
    assert.deepEqual(m.signing, { daemonNames: ['ORIGINATING'], signAuthenticated: true, localSubmissions: true });
    assert.equal(parse('milter:\n  listen: inet:127.0.0.1:8891\n').milter!.authservId, hostname());
  });

  it('reads every setting', () => {
    const m = parse([
      'milter:',
      '  listen: inet:127.0.0.1:8891',
      '  authserv_id: mx2.example.org',
      '  timeout: 45s',
      '  max_message_size: 10M',
      '  on_error: tempfail',
      '  dmarc:',
      '    reject: quarantine',
      '    quarantine: hold',
      '    trusted_arc_sealers: [Google.com, fastmail.com]',
      '    exempt_domains: [lists.example.net]',
      '    exempt_networks: ["192.0.2.0/24", "[2001:db8::]/32"]',
      '  signing:',
      '    daemon_names: [ORIGINATING, submission]',
      '    sign_authenticated: false',
      '    local_submissions: false',
    ].join('\n')).milter!;
    assert.equal(m.authservId, 'mx2.example.org');
    assert.equal(m.timeoutMs, 45_000);
    assert.equal(m.maxMessageSize, 10 * 1024 * 1024);
    assert.equal(m.onError, 'tempfail');
    assert.deepEqual(m.dmarc, {
      reject: 'quarantine', quarantine: 'hold', trustedArcSealers: ['google.com', 'fastmail.com'],
      exemptDomains: ['lists.example.net'], exemptNetworks: ['192.0.2.0/24', '2001:db8::/32'],
    });
    assert.deepEqual(m.signing, { daemonNames: ['ORIGINATING', 'submission'], signAuthenticated: false, localSubmissions: false });
  });

  it('reports mistakes with their position', () => {
    const issues = errors([
      'milter:',
      '  listen: inet:127.0.0.1:8891',
      '  on_error: reject',
      '  max_message_size: lots',
      '  timeout: 1h',
      '  dmarc:',
      '    quarantine: junk',
      '    exempt_networks: [not-a-net]',
      '    trusted_arc_sealer: [x]',
    ].join('\n'));
    assert.equal(issues.length, 6, issues.join('\n'));
    assert.match(issues.join('\n'), /:6:13: milter\.on_error must be one of accept, tempfail/);
    assert.match(issues.join('\n'), /milter\.max_message_size must be a size/);
    assert.match(issues.join('\n'), /milter\.timeout must be between 1s and 10m/);
    assert.match(issues.join('\n'), /milter\.dmarc\.quarantine must be one of hold, header, accept/);
    assert.match(issues.join('\n'), /milter\.dmarc\.exempt_networks: not an IP address/);
    assert.match(issues.join('\n'), /unknown setting milter\.dmarc\.trusted_arc_sealer/);
    assert.match(errors('milter:\n  mode: "0660"\n').join('\n'), /milter\.listen is required/);
  });

  describe('workers', () => {
    const LISTEN = 'milter:\n  listen: inet:127.0.0.1:8891\n';
    it('auto (the default): none below 4 cores, half the cores from 4 on', () => {
      const auto = autoWorkers(availableParallelism());
      assert.equal(parse(LISTEN).milter!.workers, auto);
      assert.equal(parse(`${LISTEN}  workers: auto\n`).milter!.workers, auto);
      assert.deepEqual([1, 2, 3, 4, 8, 200].map((cores) => autoWorkers(cores)), [0, 0, 0, 2, 4, 64]);
    });

    it('takes 0 (main thread) or a number, and reports anything else', () => {
      assert.equal(parse(`${LISTEN}  workers: 0\n`).milter!.workers, 0);
      assert.equal(parse(`${LISTEN}  workers: 3\n`).milter!.workers, 3);
      for (const bad of ['-1', '65', '1.5', 'many', 'true']) {
        assert.match(errors(`${LISTEN}  workers: ${bad}\n`).join('\n'), /:6:12: milter\.workers \(auto or a number\) must be an integer from 0 to 64/, bad);
      }
    });
  });

  describe('arc', () => {
    const LISTEN = 'milter:\n  listen: inet:127.0.0.1:8891\n';
    it('is off by default', () => {
      assert.deepEqual(parse(LISTEN).milter!.arc, { seal: false });
    });

    it('reads seal, domain (an A-label, lower case) and selector', () => {
      const m = parse(`${LISTEN}  arc:\n    seal: true\n    domain: Forward.Example.ORG\n    selector: ARC2026\n`).milter!;
      assert.deepEqual(m.arc, { seal: true, domain: 'forward.example.org', selector: 'arc2026' });
      assert.deepEqual(parse(`${LISTEN}  arc:\n    seal: true\n    domain: bücher.example\n`).milter!.arc, { seal: true, domain: 'xn--bcher-kva.example' });
    });

    it('needs a domain to seal, and reports bad values with their position', () => {
      assert.match(errors(`${LISTEN}  arc:\n    seal: true\n`).join('\n'), /:7:11: milter\.arc\.seal: true needs milter\.arc\.domain/);
      const issues = errors(`${LISTEN}  arc:\n    seal: yes please\n    domain: "not a domain"\n    selector: "-bad-"\n    sealer: x\n`);
      assert.equal(issues.length, 4, issues.join('\n'));
      assert.match(issues.join('\n'), /milter\.arc\.seal must be true or false/);
      assert.match(issues.join('\n'), /milter\.arc\.domain: not a domain name/);
      assert.match(issues.join('\n'), /milter\.arc\.selector: not a selector/);
      assert.match(issues.join('\n'), /unknown setting milter\.arc\.sealer/);
      // Off needs nothing; a domain without seal is kept for when it is turned on.
      assert.deepEqual(errors(`${LISTEN}  arc:\n    domain: example.org\n`), []);
    });
  });
});
