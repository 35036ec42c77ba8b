// `mailwarden policy test` as an operator runs it: bin/mailwarden in a child
// process, a YAML directory with the shared fixture, and a test DNS server on
// loopback for SPF and PTR.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { policyStatePath } from '../../src/state/file-store.ts';
import { BIN } from '../support/daemon.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

interface Run { code: number | null; stdout: string; stderr: string }

function mailwarden(config: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const ZONES = {
  'pass.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
  'fail.test': { TXT: ['v=spf1 ip4:198.51.100.1 -all'] },
  'soft.test': { TXT: ['v=spf1 ~all'] },
  'mail.pass.test': { A: ['192.0.2.10'], TXT: ['v=spf1 a -all'] },
  '10.2.0.192.in-addr.arpa': { PTR: ['mail.pass.test'] },
} as const;

describe('mailwarden policy test', () => {
  let tmp: TempDir;
  let dns: TestDnsServer;
  let directoryPath: string;
  /** policy: section without greylisting or rate limits. */
  let plain: string;
  /** The same plus greylisting. */
  let greylisting: string;
  /** No policy: section at all. */
  let nopolicy: string;

  before(async () => {
    tmp = await tempDir('policy-cli');
    dns = await startDnsServer(ZONES);
    directoryPath = join(tmp.path, 'directory.yaml');
    const store = YamlDirectory.open(directoryPath);
    await seedFixture(new DirectoryAdmin(store));
    await store.close();
    const base = [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s',
    ];
    const policy = ['policy:', '  listen: inet:127.0.0.1:10040', '  myhostname: mx.mailwarden.test'];
    plain = join(tmp.path, 'plain.yaml');
    writeFileSync(plain, [...base, ...policy].join('\n'));
    greylisting = join(tmp.path, 'greylist.yaml');
    writeFileSync(greylisting, [...base, ...policy, '  greylist:', '    delay: 5m'].join('\n'));
    nopolicy = join(tmp.path, 'nopolicy.yaml');
    writeFileSync(nopolicy, base.join('\n'));
  });

  after(async () => {
    await dns?.stop();
    await tmp?.remove();
  });

  const inbound = (sender: string, recipient: string, extra: string[] = []) => [
    'policy', 'test', '--client-ip', '192.0.2.10', '--helo', 'mail.pass.test', '--sender', sender, '--recipient', recipient, ...extra,
  ];

  it('accepts SPF pass (exit 0) and shows the action, what decided and every check', async () => {
    const r = await mailwarden(plain, inbound('news@pass.test', 'alice@example.org'));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], 'recipient: alice@example.org');
    assert.match(lines[1]!, /^action: PREPEND Received-SPF: pass \(mx\.mailwarden\.test: domain of news@pass\.test designates 192\.0\.2\.10 as permitted sender\) .*identity=mailfrom;$/);
    assert.equal(lines[2], 'decided by: pass');
    const checks = new Map(lines.slice(3).map((l) => {
      const m = /^ {2}([a-z_]+): (.*)$/.exec(l);
      assert.ok(m, `check line: ${JSON.stringify(l)}`);
      return [m[1]!, m[2]!];
    }));
    assert.deepEqual([...checks.keys()].sort(), ['fcrdns', 'helo', 'recipient', 'spf', 'spf_helo']);
    assert.match(checks.get('recipient')!, /^kind=local exists=true rule=/);
    assert.match(checks.get('spf')!, /^result=pass identity=mailfrom domain=pass\.test /);
    assert.match(checks.get('spf_helo')!, /^result=pass identity=helo domain=mail\.pass\.test /);
    assert.match(checks.get('fcrdns')!, /^result=pass name=mail\.pass\.test /, 'PTR 192.0.2.10 -> mail.pass.test -> 192.0.2.10, asked of the test DNS server');
    assert.match(checks.get('helo')!, /^result=pass /);
  });

  it('--json prints the same verdict as JSON; several recipients get one Received-SPF', async () => {
    const one = await mailwarden(plain, inbound('news@pass.test', 'alice@example.org', ['--json']));
    assert.equal(one.code, 0, one.stderr);
    const v = JSON.parse(one.stdout) as { recipient: string; action: string; decided_by: string; checks: Record<string, { result?: string; kind?: string }> };
    assert.equal(v.recipient, 'alice@example.org');
    assert.match(v.action, /^PREPEND Received-SPF: pass /);
    assert.equal(v.decided_by, 'pass');
    assert.equal(v.checks['spf']?.result, 'pass');
    assert.equal(v.checks['recipient']?.kind, 'local');

    const two = await mailwarden(plain, inbound('news@pass.test', 'alice@example.org', ['--recipient', 'bob@example.org', '--json']));
    assert.equal(two.code, 0, two.stderr);
    const list = JSON.parse(two.stdout) as Array<{ recipient: string; action: string }>;
    assert.deepEqual(list.map((x) => x.recipient), ['alice@example.org', 'bob@example.org']);
    assert.match(list[0]!.action, /^PREPEND Received-SPF: pass /);
    assert.equal(list[1]!.action, 'DUNNO', 'the header goes out once per message');
  });

  it('exits 1 for an SPF fail (550 5.7.23) and for an unknown recipient (550 5.1.1)', async () => {
    const fail = await mailwarden(plain, inbound('boss@fail.test', 'alice@example.org'));
    assert.equal(fail.code, 1, fail.stdout + fail.stderr);
    assert.match(fail.stdout, /^action: 550 5\.7\.23 SPF fail: fail\.test does not designate 192\.0\.2\.10 as permitted sender$/m);
    assert.match(fail.stdout, /^decided by: spf$/m);
    assert.match(fail.stdout, /^ {2}spf: result=fail /m);

    const unknown = await mailwarden(plain, inbound('news@pass.test', 'nobody@other.test', ['--json']));
    assert.equal(unknown.code, 1, unknown.stdout + unknown.stderr);
    const v = JSON.parse(unknown.stdout) as { action: string; decided_by: string; checks: { recipient: { exists: boolean } } };
    assert.equal(v.action, '550 5.1.1 User unknown');
    assert.equal(v.decided_by, 'unknown_recipient');
    assert.equal(v.checks.recipient.exists, false);
  });

  it('a config without a policy: section exits 78 with one line on stderr', async () => {
    const r = await mailwarden(nopolicy, inbound('news@pass.test', 'alice@example.org'));
    assert.equal(r.code, 78);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `mailwarden: ${nopolicy} has no policy: section\n`);
  });

  it('--sasl-username: a sender the login does not own gets 553, its own address is accepted without DNS checks', async () => {
    const foreign = await mailwarden(plain, [...inbound('bob@example.org', 'dave@other.test'), '--sasl-username', 'alice@example.org']);
    assert.equal(foreign.code, 1, foreign.stdout + foreign.stderr);
    assert.match(foreign.stdout, /^action: 553 5\.7\.1 Sender address <bob@example\.org> not owned by user alice@example\.org$/m);
    assert.match(foreign.stdout, /^decided by: sender_login$/m);

    const own = await mailwarden(plain, [...inbound('alice@example.org', 'someone@foreign.example'), '--sasl-username', 'alice@example.org', '--json']);
    assert.equal(own.code, 0, own.stdout + own.stderr);
    const v = JSON.parse(own.stdout) as { action: string; decided_by: string; checks: Record<string, unknown> };
    assert.equal(v.action, 'DUNNO');
    assert.equal(v.decided_by, 'authenticated');
    assert.equal(v.checks['spf'], undefined, 'submission clients are not SPF-checked');
  });

  it('greylisting: not evaluated (and nothing written) without --record; with --record the first attempt is greylisted', async () => {
    const statePath = policyStatePath(directoryPath);
    const dry = await mailwarden(greylisting, inbound('someone@soft.test', 'bob@example.org'));
    assert.equal(dry.code, 0, dry.stdout + dry.stderr);
    assert.match(dry.stdout, /^action: PREPEND Received-SPF: softfail /m);
    assert.match(dry.stdout, /^ {2}\(greylisting and rate limits not evaluated: add --record\)$/m);
    assert.doesNotMatch(dry.stdout, /greylist:/);
    assert.equal(existsSync(statePath), false, 'a dry run writes no policy state');

    const first = await mailwarden(greylisting, inbound('someone@soft.test', 'bob@example.org', ['--record', '--json']));
    assert.equal(first.code, 1, first.stdout + first.stderr);
    const v = JSON.parse(first.stdout) as { action: string; decided_by: string; checks: { greylist: { result: string; triplet: string } } };
    assert.match(v.action, /^DEFER_IF_PERMIT 4\.7\.1 Greylisted, please try again in 300 seconds$/);
    assert.equal(v.decided_by, 'greylist');
    assert.equal(v.checks.greylist.triplet, '192.0.2.0/24/someone@soft.test/bob@example.org');
    assert.ok(existsSync(statePath), 'the greylisting triplet was recorded');

    const again = await mailwarden(greylisting, inbound('someone@soft.test', 'bob@example.org', ['--record']));
    assert.equal(again.code, 1);
    assert.match(again.stdout, /^action: DEFER_IF_PERMIT 4\.7\.1 Greylisted, please try again in (29\d|300) seconds$/m, 'the retry before the delay sees the recorded first attempt');
  });
});
