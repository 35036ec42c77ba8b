// End to end through a real Postfix on port-25 duty: postfix-conf/main.cf
// loaded verbatim (socketmap maps + check_policy_service), mailwarden serving
// both, a test DNS server on loopback for SPF, DNSBL and PTR, and swaks
// connecting from several 127.0.0.x source addresses. Every verdict is checked
// in the SMTP reply and in mailwarden's decision log line.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { startPostfix, sendMail, withPostfixLogs, type PostfixInstance, type SendMailResult } from '../support/postfix.ts';
import { startLmtpSink, type LmtpSink } from '../support/lmtp-sink.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
import { MAIN_CF, readMainCf } from '../support/postfix-conf.ts';


const ZONES = {
  // SPF: the whole of 127/8 may send for pass.test; fail.test allows only 192.0.2.1.
  'pass.test': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'] },
  'fail.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
  'soft.test': { TXT: ['v=spf1 ~all'] },
  'include.test': { TXT: ['v=spf1 include:_spf.pass.test -all'] },
  '_spf.pass.test': { TXT: ['v=spf1 ip4:127.0.0.0/24 -all'] },
  'slow.test': { TXT: ['v=spf1 -all'], TIMEOUT: true },
  // HELO names used by swaks.
  'client.mailwarden.test': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'], A: ['127.0.0.10'] },
  // DNSBL: 127.0.0.66 listed (two codes), 127.0.0.77 answered with Spamhaus's "error" code.
  '66.0.0.127.bl.mailwarden.test': { A: ['127.0.0.2', '127.0.0.4'], TXT: ['listed for testing'] },
  '77.0.0.127.bl.mailwarden.test': { A: ['127.255.255.254'] },
  // FCrDNS for 127.0.0.10.
  '10.0.0.127.in-addr.arpa': { PTR: ['client.mailwarden.test'] },
} as const;

describe('Postfix + mailwarden policy service (inbound, port 25)', () => {
  let tmp: TempDir;
  let dns: TestDnsServer;
  let postfix: PostfixInstance;
  let sink: LmtpSink;
  let daemon: Daemon;

  before(async () => {
    tmp = await tempDir('policy-e2e');
    dns = await startDnsServer(ZONES);
    const directoryPath = join(tmp.path, 'directory.yaml');
    const store = YamlDirectory.open(directoryPath);
    await seedFixture(new DirectoryAdmin(store));
    await store.close();
    sink = await startLmtpSink();
    const documented = readMainCf(MAIN_CF);
    postfix = await startPostfix({
      mainCf: {
        ...documented,
        virtual_transport: sink.transport,
        // 127.0.0.1 is an Internet client here; only .254 is "our network".
        mynetworks: '127.0.0.254/32',
        // Postfix would ask the host's resolver for PTRs of 127.0.0.x: keep every DNS query on the test server.
        smtpd_peername_lookup: 'no',
      },
    });
    assert.match(documented['smtpd_recipient_restrictions']!, /check_policy_service/);
    const queue = postfix.queueDir;
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'log:', '  level: debug',
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s',
      'socketmap:', `  listen: unix:${queue}/mailwarden/socketmap.sock`, '  mode: "0660"', '  group: postfix',
      'policy:', `  listen: unix:${queue}/mailwarden/policy.sock`, '  mode: "0660"', '  group: postfix',
      '  myhostname: mx.mailwarden.test',
      '  mynetworks: ["127.0.0.254/32"]',
      '  dnsbl:', '    sites: ["bl.mailwarden.test=127.0.0.[2..11]*2"]', '    threshold: 2',
      '  fcrdns:', '    action: warn',
      '  greylist:', '    delay: 2s',
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await postfix?.stop();
    await sink?.close();
    await dns?.stop();
    await tmp?.remove();
  });

  const send = (from: string, to: string[], opts: { source?: string; helo?: string; subject?: string } = {}): Promise<SendMailResult> =>
    sendMail({
      port: postfix.smtpPort,
      from,
      to,
      ...(opts.helo ? { ehlo: opts.helo } : {}),
      swaksArgs: [
        '--local-interface', opts.source ?? '127.0.0.10',
        ...(opts.subject ? ['--header', `Subject: ${opts.subject}`] : []),
      ],
    });
  const rcptReplies = (r: SendMailResult) => r.replies.filter((x) => /^RCPT TO/i.test(x.command));
  const decision = (pred: (l: Record<string, unknown>) => boolean) =>
    daemon.waitForLog((l) => l['msg'] === 'policy decision' && pred(l), 5000);

  it('accepts SPF-pass mail for two recipients and prepends Received-SPF exactly once', () =>
    withPostfixLogs(postfix, async () => {
      const subject = 'spf pass two rcpts';
      const r = await send('news@pass.test', ['alice@example.org', 'dave@other.test'], { subject });
      assert.equal(r.code, 250, r.transcript);
      const d = await sink.waitFor((x) => x.data.includes(`Subject: ${subject}`), 15_000);
      await sleep(300);
      const copies = sink.deliveries.filter((x) => x.data.includes(`Subject: ${subject}`));
      const headers = copies.map((c) => c.data.split('\r\n\r\n')[0]!);
      for (const h of headers) {
        const spf = h.match(/^Received-SPF:.*$/gim) ?? [];
        assert.equal(spf.length, 1, `one Received-SPF header per message copy:\n${h}`);
        assert.match(spf[0]!, /^Received-SPF: pass \(/i);
        assert.match(h, /client-ip=127\.0\.0\.10;/);
        assert.match(h, /envelope-from="?news@pass\.test"?;/);
      }
      assert.ok(d);
      const line = await decision((l) => l['sender'] === 'news@pass.test' && l['recipient'] === 'alice@example.org');
      assert.equal((line['checks'] as { spf: { result: string } }).spf.result, 'pass');
      assert.equal((line['checks'] as { fcrdns: { result: string } }).fcrdns.result, 'pass', 'PTR 127.0.0.10 -> client.mailwarden.test -> 127.0.0.10');
    }));

  it('rejects SPF fail 550 5.7.23 and defers an SPF temperror, with the reason in the log', () =>
    withPostfixLogs(postfix, async () => {
      const fail = await send('boss@fail.test', ['alice@example.org']);
      assert.match(rcptReplies(fail)[0]?.text ?? fail.transcript, /^550 5\.7\.23 .*SPF/i);
      const line = await decision((l) => l['sender'] === 'boss@fail.test');
      assert.equal(line['decided_by'], 'spf');
      assert.match(String(line['action']), /^550 5\.7\.23/);

      const slow = await send('x@slow.test', ['alice@example.org']);
      assert.match(rcptReplies(slow)[0]?.text ?? slow.transcript, /^450 4\.7\.24 /, 'DNS timeout: try again later, never a reject');
      const t = await decision((l) => l['sender'] === 'x@slow.test');
      assert.equal((t['checks'] as { spf: { result: string } }).spf.result, 'temperror');
    }));

  it('rejects unknown recipients 550 5.1.1 and every relay trick 554 5.7.1', () =>
    withPostfixLogs(postfix, async () => {
      const unknown = await send('news@pass.test', ['nobody@other.test']);
      assert.match(rcptReplies(unknown)[0]?.text ?? unknown.transcript, /^550 5\.1\.1 <nobody@other\.test>: Recipient address rejected: User unknown$/m);
      const line = await decision((l) => l['recipient'] === 'nobody@other.test');
      assert.equal(line['decided_by'], 'unknown_recipient');
      assert.match(JSON.stringify(line['checks']), /no such mailbox/);

      // Postfix's own reject_unauth_destination (the documented smtpd_relay_restrictions) stops a plain relay attempt first.
      const relay = await send('news@pass.test', ['victim@foreign.example']);
      assert.match(rcptReplies(relay)[0]?.text ?? relay.transcript, /^554 5\.7\.1 .*Relay access denied/);
    }));

  it('refuses relaying by itself when the policy is the only relay control (%-hack, quoted local part, foreign domain)', () =>
    withPostfixLogs(postfix, async () => {
      // defer_unauth_destination is only a backstop: if mailwarden let a relay attempt through, the reply would be 4xx.
      await postfix.setMainCf({
        smtpd_relay_restrictions: '',
        smtpd_recipient_restrictions: `${readMainCf(MAIN_CF)['smtpd_recipient_restrictions']}, permit_mynetworks, defer_unauth_destination`,
      });
      try {
        for (const rcpt of ['victim@foreign.example', 'victim%foreign.example@example.org', '"victim@foreign.example"@example.org', 'victim!foreign.example@example.org']) {
          const r = await send('news@pass.test', [rcpt]);
          assert.match(rcptReplies(r)[0]?.text ?? r.transcript, /^554 5\.7\.1 .*Relay access denied/, `${rcpt}: ${r.transcript}`);
        }
        const routed = await decision((l) => String(l['recipient']).includes('%foreign.example'));
        assert.equal(routed['decided_by'], 'relay');
        assert.match(String(routed['action']), /sender-specified routing/);
        // From mynetworks, mailwarden allows the relay (the test harness itself then refuses outbound delivery).
        await send('app@pass.test', ['someone@foreign.example'], { source: '127.0.0.254' });
        const trusted = await decision((l) => l['sender'] === 'app@pass.test');
        assert.equal(trusted['action'], 'DUNNO');
        assert.equal(trusted['decided_by'], 'mynetworks');
      } finally {
        const documented = readMainCf(MAIN_CF);
        await postfix.setMainCf({
          smtpd_relay_restrictions: documented['smtpd_relay_restrictions']!,
          smtpd_recipient_restrictions: documented['smtpd_recipient_restrictions']!,
        });
      }
    }));

  it('rejects a client listed on a DNSBL 554 and treats the list error code as an error, not a listing', () =>
    withPostfixLogs(postfix, async () => {
      const listed = await send('news@pass.test', ['alice@example.org'], { source: '127.0.0.66' });
      assert.match(rcptReplies(listed)[0]?.text ?? listed.transcript, /^554 5\.7\.1 <alice@example\.org>: Recipient address rejected: Service unavailable; Client host \[127\.0\.0\.66\] blocked using bl\.mailwarden\.test/);
      const line = await decision((l) => String(l['client']).includes('[127.0.0.66]'));
      assert.equal(line['decided_by'], 'dnsbl');
      assert.deepEqual((line['checks'] as { dnsbl: { listed: string[] } }).dnsbl.listed, ['bl.mailwarden.test=127.0.0.2/127.0.0.4*2']);

      const errorCode = await send('news@pass.test', ['alice@example.org'], { source: '127.0.0.77' });
      assert.equal(errorCode.code, 250, errorCode.transcript);
      const e = await decision((l) => String(l['client']).includes('[127.0.0.77]'));
      assert.match(JSON.stringify(e['checks']), /bl\.mailwarden\.test: ELISTERROR/);
    }));

  it('greylists mail without SPF pass, then accepts the retry after the delay', () =>
    withPostfixLogs(postfix, async () => {
      const first = await send('someone@soft.test', ['bob@example.org'], { source: '127.0.0.20' });
      assert.match(rcptReplies(first)[0]?.text ?? first.transcript, /^450 4\.7\.1 .*Greylisted/);
      const early = await send('someone@soft.test', ['bob@example.org'], { source: '127.0.0.20' });
      assert.match(rcptReplies(early)[0]?.text ?? early.transcript, /^450 4\.7\.1 .*Greylisted/, 'retry before the delay');
      await sleep(2200);
      const retry = await send('someone@soft.test', ['bob@example.org'], { source: '127.0.0.20' });
      assert.equal(retry.code, 250, retry.transcript);
      const line = await decision((l) => l['sender'] === 'someone@soft.test' && l['decided_by'] === 'pass');
      assert.equal((line['checks'] as { greylist: { result: string } }).greylist.result, 'pass');
      assert.equal((line['checks'] as { spf: { result: string } }).spf.result, 'softfail');
    }));

  it('defers (4xx, never 5xx) while DNS is down', () =>
    withPostfixLogs(postfix, async () => {
      await dns.stop();
      const r = await send('new@include.test', ['alice@example.org'], { source: '127.0.0.30' });
      const reply = rcptReplies(r)[0];
      assert.ok(reply, r.transcript);
      assert.equal(Math.floor(reply.code / 100), 4, `a DNS outage must not reject mail: ${r.transcript}`);
      const line = await decision((l) => l['sender'] === 'new@include.test');
      assert.equal((line['checks'] as { spf: { result: string } }).spf.result, 'temperror');
      assert.match(JSON.stringify((line['checks'] as { dnsbl: unknown }).dnsbl), /bl\.mailwarden\.test: (ETIMEOUT|ECONNREFUSED)/, 'the failing DNSBL zone is logged, not called clean');
    }));
});
