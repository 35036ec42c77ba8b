// ARC sealing of forwarded mail (milter.arc), end to end through a real
// Postfix: mailwarden answers Postfix's virtual maps over the socketmap and
// runs the milter with `arc: { seal: true, domain: example.org }`. An alias
// of example.org points outside our domains; Postfix expands it (cleanup,
// out of the milter's sight), and delivers foreign mail to the same LMTP
// sink as local mail (default_transport), so the test sees what the next
// hop would receive. The ARC sets are checked by mailauth and, independently,
// by Mail::DKIM's ARC verifier against the test DNS server.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { authenticate, dkimSign } from 'mailauth';
import { DkimKeyStore, dnsRecordName, dnsRecordStrings, publicKeyBase64 } from '../../src/dkim/keys.ts';
import { createResolver, forMailauth } from '../../src/dns/resolver.ts';
import { startPostfix, sendMail, withPostfixLogs, type PostfixInstance, type SendMailResult } from '../support/postfix.ts';
import { startLmtpSink, type LmtpDelivery, type LmtpSink } from '../support/lmtp-sink.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
import { mailDkimArcVerify } from '../support/mail-dkim.ts';

const AUTHSERV = 'mx.example.org';

const DIRECTORY = `
domains:
  example.org: {}
mailboxes:
  alice@example.org: {}
aliases:
  # A member who forwards everything to a mailbox elsewhere.
  fwd@example.org: [friend@elsewhere.test]
  # A team with one local member and one outside.
  team@example.org: [alice@example.org, partner@elsewhere.test]
`;

interface TestKey {
  readonly domain: string;
  readonly selector: string;
  readonly privateKey: KeyObject;
}

function makeKey(domain: string, selector: string): TestKey {
  return { domain, selector, privateKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey };
}

const pem = (k: TestKey) => k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

function message(from: string, to: string, subject: string, body = 'Hello,\r\nthis is a test.\r\n'): string {
  return [
    `From: ${from}`,
    `To: <${to}>`,
    `Subject: ${subject}`,
    'Date: Mon, 23 Nov 2026 10:00:00 +0000',
    `Message-ID: <${subject}@mailwarden.test>`,
    '',
    body,
  ].join('\r\n');
}

async function sign(raw: string, k: TestKey): Promise<string> {
  const options = { signatureData: [{ signingDomain: k.domain, selector: k.selector, privateKey: pem(k) }] } as unknown as Parameters<typeof dkimSign>[1];
  const { signatures, errors } = await dkimSign(Buffer.from(raw), options);
  assert.deepEqual(errors, []);
  return signatures + raw;
}

/** Header fields of a delivered message, unfolded, in order. */
function headersOf(data: string): Array<{ name: string; value: string }> {
  const head = data.slice(0, data.indexOf('\r\n\r\n'));
  const out: Array<{ name: string; value: string }> = [];
  for (const line of head.split('\r\n')) {
    if (/^[ \t]/.test(line) && out.length) out[out.length - 1]!.value += ` ${line.trim()}`;
    else {
      const c = line.indexOf(':');
      out.push({ name: line.slice(0, c), value: line.slice(c + 1).trim() });
    }
  }
  return out;
}

const named = (d: LmtpDelivery, name: string) => headersOf(d.data).filter((h) => h.name.toLowerCase() === name.toLowerCase()).map((h) => h.value);

describe('Postfix + mailwarden: ARC-sealing mail an alias forwards', () => {
  let tmp: TempDir;
  let dns: TestDnsServer;
  let postfix: PostfixInstance;
  let sink: LmtpSink;
  let daemon: Daemon;
  let submissionPort: number;

  const sender = makeKey('sender.test', 'k1');
  // A mailing list that sealed the message before it reached us.
  const list = makeKey('lists.other.test', 'arc');

  before(async () => {
    tmp = await tempDir('milter-arc-seal');
    // Our key: the one DKIM signs example.org mail with, and ARC seals with (milter.arc.domain).
    const store = new DkimKeyStore(join(tmp.path, 'dkim'));
    const ours = await store.generate('example.org', { algorithm: 'rsa', selector: 's2026' });
    const record = (k: TestKey) => [dnsRecordName(k), { TXT: [dnsRecordStrings({ ...k, algorithm: 'rsa-sha256', publicKeyBase64: publicKeyBase64(k.privateKey) })] }] as const;
    dns = await startDnsServer({
      'esp.test': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'] },
      '_dmarc.sender.test': { TXT: ['v=DMARC1; p=reject'] },
      [dnsRecordName(ours)]: { TXT: [dnsRecordStrings(ours)] },
      ...Object.fromEntries([sender, list].map(record)),
    });
    sink = await startLmtpSink();
    submissionPort = await freePort();
    postfix = await startPostfix({
      mainCf: {
        // The documented socketmap tables (postfix-conf/main.cf), relative to the queue directory.
        mailwarden_socketmap: 'socketmap:unix:mailwarden/socketmap.sock',
        virtual_mailbox_domains: '${mailwarden_socketmap}:virtual_mailbox_domains',
        virtual_alias_domains: '${mailwarden_socketmap}:virtual_alias_domains',
        virtual_mailbox_maps: '${mailwarden_socketmap}:virtual_mailbox_maps',
        virtual_alias_maps: '${mailwarden_socketmap}:virtual_alias_maps',
        recipient_delimiter: '+',
        virtual_transport: sink.transport,
        // "The Internet": foreign recipients go to the same sink.
        default_transport: sink.transport,
        mynetworks: '127.0.0.254/32',
        smtpd_recipient_restrictions: 'reject_unauth_destination',
        smtpd_peername_lookup: 'no',
        smtpd_milters: 'unix:mailwarden/milter.sock',
        milter_default_action: 'tempfail',
      },
      masterCfExtra: `127.0.0.1:${submissionPort} inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n  -o milter_macro_daemon_name=ORIGINATING\n  -o smtpd_recipient_restrictions=permit\n`,
    });
    writeFileSync(join(tmp.path, 'directory.yaml'), DIRECTORY);
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${join(tmp.path, 'directory.yaml')}`,
      'log:', '  level: info',
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s',
      'socketmap:', `  listen: unix:${postfix.queueDir}/mailwarden/socketmap.sock`, '  mode: "0660"', '  group: postfix',
      'milter:',
      `  listen: unix:${postfix.queueDir}/mailwarden/milter.sock`, '  mode: "0660"', '  group: postfix',
      `  authserv_id: ${AUTHSERV}`,
      '  timeout: 30s',
      '  arc:', '    seal: true', '    domain: example.org',
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

  const send = (data: string, to: string[], opts: { from?: string; port?: number } = {}): Promise<SendMailResult> =>
    sendMail({ port: opts.port ?? postfix.smtpPort, from: opts.from ?? 'bounce@esp.test', to, data });
  const dataEnd = (r: SendMailResult) => r.replies.find((x) => x.command === 'DATA-END');
  const deliveredTo = (rcpt: string, subject: string) =>
    sink.waitFor((d) => d.recipients.some((x) => x.toLowerCase() === rcpt) && d.data.includes(`\r\nSubject: ${subject}\r\n`), 20_000);
  const resolver = () => forMailauth(createResolver({ servers: [dns.address], timeoutMs: 2000 })) as never;
  /** What the next hop's mailauth says about the chain. */
  const nextHop = async (data: string) => {
    const r = await authenticate(Buffer.from(data), { ip: '127.0.0.1', helo: 'mx.example.org', sender: 'bounce@esp.test', mta: 'next.test', resolver: resolver(), disableBimi: true } as never);
    return r.arc as unknown as { status: { result: string }; i: number };
  };

  it('a message to an alias that forwards abroad gets ARC set i=1 (cv=none) that mailauth and Mail::DKIM validate as arc=pass', () =>
    withPostfixLogs(postfix, async () => {
      const r = await send(await sign(message('News <news@sender.test>', 'fwd@example.org', 'forwarded'), sender), ['fwd@example.org'], { from: 'forwarded@esp.test' });
      assert.equal(dataEnd(r)?.code, 250, r.transcript);
      const d = await deliveredTo('friend@elsewhere.test', 'forwarded');
      const names = headersOf(d.data).map((h) => h.name);
      assert.deepEqual(names.slice(0, 4), ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results', 'Authentication-Results'], names.join(','));
      const [seal] = named(d, 'ARC-Seal');
      assert.match(seal!, /^i=1; a=rsa-sha256; t=\d+; cv=none; d=example\.org; s=s2026;/);
      const [aar] = named(d, 'ARC-Authentication-Results');
      // Our verdicts travel with the message: the next hop cannot redo SPF for the original sender.
      assert.match(aar!, new RegExp(`^i=1; ${AUTHSERV.replace(/\./g, '\\.')}; dkim=pass header\\.i=@sender\\.test`));
      assert.match(aar!, /spf=pass .*smtp\.mailfrom=forwarded@esp\.test/);
      assert.match(aar!, /dmarc=pass /);
      assert.match(aar!, /arc=none$/);

      const arc = await nextHop(d.data);
      assert.equal(arc.status.result, 'pass', JSON.stringify(arc));
      assert.equal(arc.i, 1);
      const perl = await mailDkimArcVerify(d.data, dns);
      assert.equal(perl.result, 'pass', JSON.stringify(perl));
      assert.deepEqual(perl.signatures.map((s) => [s.kind, s.instance, s.domain, s.result]), [['Seal', 1, 'example.org', 'pass'], ['MessageSignature', 1, 'example.org', 'pass']]);
      // The negative control: both notice a change.
      const changed = d.data.replace('this is a test.', 'this is a forgery.');
      assert.equal((await nextHop(changed)).status.result, 'fail');
      assert.equal((await mailDkimArcVerify(changed, dns)).result, 'fail');

      const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['sender'] === 'forwarded@esp.test');
      assert.deepEqual(line['arc_seal'], { sealed: true, i: 1, cv: 'none', d: 'example.org', s: 's2026', forwarded_to: ['friend@elsewhere.test'] });
      assert.equal(line['level'], 'info');
    }));

  it('a message to a local mailbox is not sealed, and the log says why', () =>
    withPostfixLogs(postfix, async () => {
      const r = await send(await sign(message('News <news@sender.test>', 'alice@example.org', 'local'), sender), ['alice@example.org'], { from: 'local@esp.test' });
      assert.equal(dataEnd(r)?.code, 250, r.transcript);
      const d = await deliveredTo('alice@example.org', 'local');
      assert.deepEqual(headersOf(d.data).filter((h) => h.name.startsWith('ARC-')), []);
      assert.equal(named(d, 'Authentication-Results').length, 1);
      const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['sender'] === 'local@esp.test');
      assert.deepEqual(line['arc_seal'], { sealed: false, reason: 'no recipient forwards outside our domains' });
    }));

  it('one recipient forwarded among local ones is enough: both copies carry the set', () =>
    withPostfixLogs(postfix, async () => {
      const r = await send(await sign(message('News <news@sender.test>', 'team@example.org', 'team'), sender), ['team@example.org'], { from: 'team@esp.test' });
      assert.equal(dataEnd(r)?.code, 250, r.transcript);
      const abroad = await deliveredTo('partner@elsewhere.test', 'team');
      const here = await deliveredTo('alice@example.org', 'team');
      for (const d of [abroad, here]) assert.equal(named(d, 'ARC-Seal').length, 1);
      assert.equal((await mailDkimArcVerify(abroad.data, dns)).result, 'pass');
      const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['sender'] === 'team@esp.test');
      assert.deepEqual((line['arc_seal'] as { forwarded_to: string[] }).forwarded_to, ['partner@elsewhere.test']);
    }));

  it('an incoming ARC chain (a list forwarding to us) is extended with i=2, cv=pass; mailauth and Mail::DKIM validate the whole chain', () =>
    withPostfixLogs(postfix, async () => {
      // From a domain without DMARC policy, so the list's footer does not get the message rejected.
      const original = await sign(message('Someone <someone@esp.test>', 'fwd@example.org', 'via-list'), sender);
      const modified = `${original}--\r\nList footer\r\n`;
      const sealed = await authenticate(Buffer.from(modified), {
        ip: '127.0.0.1', helo: list.domain, sender: 'list-bounces@esp.test', mta: list.domain, resolver: resolver(), disableBimi: true,
        seal: { signingDomain: list.domain, selector: list.selector, privateKey: pem(list) },
      } as never);
      const r = await send(sealed.headers + modified, ['fwd@example.org'], { from: 'list2@esp.test' });
      assert.equal(dataEnd(r)?.code, 250, r.transcript);
      const d = await deliveredTo('friend@elsewhere.test', 'via-list');
      const seals = named(d, 'ARC-Seal');
      assert.equal(seals.length, 2);
      assert.match(seals[0]!, /^i=2; a=rsa-sha256; t=\d+; cv=pass; d=example\.org; s=s2026;/);
      assert.match(seals[1]!, /^i=1; .*d=lists\.other\.test/);
      assert.match(named(d, 'ARC-Authentication-Results')[0]!, /^i=2; mx\.example\.org; .*arc=pass \(i=1 /);
      const arc = await nextHop(d.data);
      assert.equal(arc.status.result, 'pass', JSON.stringify(arc));
      assert.equal(arc.i, 2);
      const perl = await mailDkimArcVerify(d.data, dns);
      assert.equal(perl.result, 'pass', JSON.stringify(perl));
      assert.deepEqual(perl.signatures.filter((s) => s.kind === 'Seal').map((s) => [s.instance, s.domain, s.result]), [[2, 'example.org', 'pass'], [1, 'lists.other.test', 'pass']]);
      const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['sender'] === 'list2@esp.test');
      assert.deepEqual(line['arc_seal'], { sealed: true, i: 2, cv: 'pass', d: 'example.org', s: 's2026', forwarded_to: ['friend@elsewhere.test'] });
    }));

  it('a chain broken on the way is sealed once with cv=fail, and the log says why', () =>
    withPostfixLogs(postfix, async () => {
      const original = await sign(message('Someone <someone@esp.test>', 'fwd@example.org', 'broken-chain'), sender);
      const sealed = await authenticate(Buffer.from(original), {
        ip: '127.0.0.1', helo: list.domain, sender: 'list-bounces@esp.test', mta: list.domain, resolver: resolver(), disableBimi: true,
        seal: { signingDomain: list.domain, selector: list.selector, privateKey: pem(list) },
      } as never);
      // Changed after the list sealed it.
      const r = await send(sealed.headers + original.replace('this is a test.', 'this is changed.'), ['fwd@example.org'], { from: 'broken@esp.test' });
      assert.equal(dataEnd(r)?.code, 250, r.transcript);
      const d = await deliveredTo('friend@elsewhere.test', 'broken-chain');
      assert.match(named(d, 'ARC-Seal')[0]!, /^i=2; a=rsa-sha256; t=\d+; cv=fail; d=example\.org;/);
      assert.equal((await nextHop(d.data)).status.result, 'fail');
      assert.equal((await mailDkimArcVerify(d.data, dns)).result, 'fail');
      const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['sender'] === 'broken@esp.test');
      const seal = line['arc_seal'] as Record<string, unknown>;
      assert.equal(seal['cv'], 'fail');
      assert.match(String(seal['reason']), /^incoming ARC chain fails \(.+\): sealed with cv=fail/);
    }));

  it('outbound mail to the same alias is DKIM-signed, never sealed', () =>
    withPostfixLogs(postfix, async () => {
      const r = await send(message('Alice <alice@example.org>', 'fwd@example.org', 'outbound'), ['fwd@example.org'], { from: 'alice@example.org', port: submissionPort });
      assert.equal(dataEnd(r)?.code, 250, r.transcript);
      const d = await deliveredTo('friend@elsewhere.test', 'outbound');
      assert.deepEqual(headersOf(d.data).filter((h) => h.name.startsWith('ARC-')), []);
      assert.match(named(d, 'DKIM-Signature')[0]!, /d=example\.org; .*s=s2026;/);
      const line = await daemon.waitForLog((l) => l['msg'] === 'milter message' && l['sender'] === 'alice@example.org');
      assert.equal(line['direction'], 'outbound');
      assert.equal(line['arc_seal'], undefined);
    }));
});
