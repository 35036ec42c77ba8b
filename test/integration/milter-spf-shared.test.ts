// The policy service and the milter in one `mailwarden serve` share one SPF
// verdict memory: a message whose SPF the policy service decided at RCPT is
// not evaluated again by the milter at end of message. Driven over the real
// sockets of the daemon: the policy protocol as Postfix's smtpd speaks it,
// then the milter protocol (our codec's MTA side) for the same transaction.
// Twice: with two worker threads (milter.workers: 2; they verify, SPF stays
// in the main thread with the memory) and with workers: 0.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { encodeCommand, MilterReplyDecoder, type MilterCommandInput, type MilterReply } from '../../src/milter/codec.ts';
import { POSTFIX_OPTNEG } from '../../src/milter/constants.ts';
import { encodePolicyRequest, PolicyReplyDecoder } from '../../src/policy/codec.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const AUTHSERV = 'mx.mailwarden.test';
const CLIENT = { ip: '192.0.2.10', name: 'mail.spf.test', helo: 'mail.spf.test' };

async function exchange(port: number, payload: Buffer, done: (data: Buffer) => boolean): Promise<Buffer> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer within 10 s')), 10_000);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (done(Buffer.concat(chunks))) {
        clearTimeout(timer);
        socket.end();
        resolve(Buffer.concat(chunks));
      }
    });
    socket.on('error', reject);
    socket.write(payload);
  });
}

async function policyRcpt(port: number, sender: string): Promise<string> {
  const req = encodePolicyRequest({
    request: 'smtpd_access_policy', protocol_state: 'RCPT', protocol_name: 'ESMTP',
    client_address: CLIENT.ip, client_name: CLIENT.name, reverse_client_name: CLIENT.name, client_port: 40001,
    helo_name: CLIENT.helo, sender, recipient: 'alice@example.org', recipient_count: 0, queue_id: '',
    instance: `i.${sender}`, size: 500, sasl_method: '', sasl_username: '', sasl_sender: '',
  });
  let actions: string[] = [];
  await exchange(port, req, (data) => (actions = new PolicyReplyDecoder().push(data)).length > 0);
  return actions[0]!;
}

/** One message through the milter as Postfix's smtpd sends it; the replies to end of message. */
async function milterMessage(port: number, sender: string, from: string, subject: string): Promise<MilterReply[]> {
  const headers: Array<[string, string]> = [['From', ` ${from}`], ['To', ' alice@example.org'], ['Subject', ` ${subject}`], ['Date', ' Mon, 23 Nov 2026 10:00:00 +0000']];
  const cmds: MilterCommandInput[] = [
    { type: 'optneg', ...POSTFIX_OPTNEG },
    { type: 'macro', forCommand: 'C', macros: new Map([['{daemon_name}', 'smtpd']]) },
    // Postfix gives the milter the same address it gives the policy service.
    { type: 'connect', hostname: CLIENT.name, family: '4', port: 40001, address: CLIENT.ip },
    { type: 'helo', name: CLIENT.helo },
    { type: 'macro', forCommand: 'M', macros: new Map([['i', subject]]) },
    { type: 'mail', args: [`<${sender}>`] },
    ...headers.map(([name, value]): MilterCommandInput => ({ type: 'header', name, value: Buffer.from(value) })),
    { type: 'eoh' },
    { type: 'body', chunk: Buffer.from('Hello.\r\n') },
    { type: 'bodyEob' },
  ];
  const payload = Buffer.concat(cmds.map((c) => encodeCommand(c)));
  let replies: MilterReply[] = [];
  await exchange(port, payload, (data) => {
    replies = new MilterReplyDecoder().push(data);
    return replies.some((r) => r.type === 'continue' || r.type === 'replyCode' || r.type === 'tempfail' || r.type === 'reject' || r.type === 'accept');
  });
  return replies;
}

const arOf = (replies: MilterReply[]): string => {
  const r = replies.find((x) => x.type === 'insHeader' && x.name === 'Authentication-Results') as { value: Buffer | string } | undefined;
  assert.ok(r, JSON.stringify(replies.map((x) => x.type)));
  return String(r.value).replace(/\s+/g, ' ').trim();
};

for (const workers of [2, 0] as const) describe(`SPF verdict shared by the policy service and the milter (milter.workers: ${workers})`, () => {
  let tmp: TempDir;
  let dns: TestDnsServer;
  let daemon: Daemon;
  let policyPort: number;
  let milterPort: number;

  before(async () => {
    tmp = await tempDir('milter-spf');
    dns = await startDnsServer({
      'spf.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
      '_dmarc.spf.test': { TXT: ['v=DMARC1; p=reject'] },
      'other.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
      '_dmarc.other.test': { TXT: ['v=DMARC1; p=reject'] },
      'mail.spf.test': { A: [CLIENT.ip] },
    });
    const directoryPath = join(tmp.path, 'directory.yaml');
    const store = YamlDirectory.open(directoryPath);
    await seedFixture(new DirectoryAdmin(store));
    await store.close();
    policyPort = await freePort();
    milterPort = await freePort();
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'log:', '  level: info',
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s',
      'policy:', `  listen: inet:127.0.0.1:${policyPort}`, `  myhostname: ${AUTHSERV}`,
      'milter:', `  listen: inet:127.0.0.1:${milterPort}`, `  authserv_id: ${AUTHSERV}`,
      `  workers: ${workers}`,
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await dns?.stop();
    await tmp?.remove();
  });

  it('SPF decided at RCPT is reused at end of message: no second evaluation, the same result, DMARC aligned through SPF', async () => {
    const action = await policyRcpt(policyPort, 'news@spf.test');
    assert.match(action, /^PREPEND Received-SPF: pass /);
    dns.clearLog();
    const replies = await milterMessage(milterPort, 'news@spf.test', 'News <news@spf.test>', 'shared-spf');
    const ar = arOf(replies);
    assert.match(ar, new RegExp(`^${AUTHSERV.replace(/\./g, '\\.')}; `));
    // The A-R's spf= is the policy service's Received-SPF result.
    assert.equal(/spf=(\w+)/.exec(ar)?.[1], /^PREPEND Received-SPF: (\w+)/.exec(action)?.[1]);
    assert.match(ar, /spf=pass \(mx\.mailwarden\.test: domain of news@spf\.test designates 192\.0\.2\.10 as permitted sender\) smtp\.mailfrom=news@spf\.test smtp\.helo=mail\.spf\.test/);
    // No DKIM signature: DMARC passes through the aligned SPF identity alone.
    assert.match(ar, /dkim=none/);
    assert.match(ar, /dmarc=pass .*header\.from=spf\.test/);
    assert.equal(dns.count('spf.test', 'TXT'), 0, 'no SPF record lookup by the milter');
    const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['queue_id'] === 'shared-spf');
    assert.equal(line['spf'], 'pass');
    assert.equal(line['spf_source'], 'policy');
    assert.equal(line['action'], 'accept');
  });

  it('without a policy verdict the milter computes SPF (queries DNS), and remembers it for the next message', async () => {
    // other.test never went through the policy service.
    const first = await milterMessage(milterPort, 'x@other.test', 'x@other.test', 'computed-spf');
    assert.match(arOf(first), /spf=pass .*smtp\.mailfrom=x@other\.test/);
    assert.match(arOf(first), /dmarc=pass /);
    assert.ok(dns.count('other.test', 'TXT') >= 1, 'the milter looked the SPF record up');
    const one = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['queue_id'] === 'computed-spf');
    assert.equal(one['spf_source'], 'computed');
    await milterMessage(milterPort, 'x@other.test', 'x@other.test', 'remembered-spf');
    const two = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['queue_id'] === 'remembered-spf');
    assert.equal(two['spf_source'], 'milter');
    assert.equal(two['spf'], 'pass');
  });

  it('a different sender is a different transaction: the policy verdict for another sender is not used', async () => {
    await policyRcpt(policyPort, 'a@spf.test');
    await milterMessage(milterPort, 'b@spf.test', 'b@spf.test', 'other-sender');
    const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['queue_id'] === 'other-sender');
    assert.equal(line['spf_source'], 'computed');
  });
});
