// The cross-message DKIM key record cache: one DNS query and one key parse for
// many messages, answers kept no longer than its TTL, failures never kept, and
// verification verdicts unchanged (the milter tests verify through it too).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { createResolver, forMailauth } from '../../src/dns/resolver.ts';
import { DkimKeyRecordCache } from '../../src/checks/dkim-key-records.ts';
import { verifyMessage } from '../../src/checks/message-auth.ts';
import { startDnsServer } from '../support/dns-server.ts';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaTxt = `v=DKIM1; k=rsa; p=${rsa.publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

test('key records are looked up once for many messages, kept at most ttl, failures not kept', async (t) => {
  const dns = await startDnsServer({ 's1._domainkey.signer.example': { TXT: [rsaTxt] } });
  t.after(() => dns.stop());
  const resolver = forMailauth(createResolver({ servers: [dns.address], timeoutMs: 2000 }));
  const cache = new DkimKeyRecordCache(300, 100);

  const first = await cache.forMessage(resolver).get('DKIM', 's1._domainkey.signer.example', 1024, { hashAlgo: 'sha256' });
  const again = await cache.forMessage(resolver).get('DKIM', 'S1._domainkey.Signer.example', 1024, { hashAlgo: 'sha256' });
  assert.equal(again, first, 'the same parsed record for the next message');
  assert.equal(dns.count('s1._domainkey.signer.example', 'TXT'), 1);
  assert.deepEqual([cache.hits, cache.misses], [1, 1]);
  await cache.forMessage(resolver).get('DKIM', 's1._domainkey.signer.example', 1024, { hashAlgo: 'sha256', strict: true });
  assert.equal(cache.misses, 2, 'strict mode is another question');

  // Revoked: seen once the entry has expired, even though nothing else changed.
  dns.setZones({ 's1._domainkey.signer.example': { TXT: ['v=DKIM1; k=rsa; p='] } });
  await sleep(350);
  await assert.rejects(cache.forMessage(resolver).get('DKIM', 's1._domainkey.signer.example', 1024, { hashAlgo: 'sha256' }));
  await sleep(10);
  assert.equal(cache.size, 1, 'the failure was dropped (only the strict-mode answer remains)');
  await assert.rejects(cache.forMessage(resolver).get('DKIM', 's1._domainkey.signer.example', 1024, { hashAlgo: 'sha256' }));
  assert.equal(dns.count('s1._domainkey.signer.example', 'TXT'), 4, 'a failure is asked again');
});

test('verification through the shared cache gives the same verdicts, message after message', async (t) => {
  const dns = await startDnsServer({ 's1._domainkey.signer.example': { TXT: [rsaTxt] }, 'signer.example': { TXT: ['v=spf1 -all'] } });
  t.after(() => dns.stop());
  const resolver = createResolver({ servers: [dns.address], timeoutMs: 2000 });
  const raw = Buffer.from('From: a@signer.example\r\nTo: b@rcpt.example\r\nSubject: hi\r\nMessage-ID: <1@signer.example>\r\n\r\nhello\r\n');
  const signed = await dkimSign(raw, { signatureData: [{ signingDomain: 'signer.example', selector: 's1', privateKey: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) }] } as never);
  const message = Buffer.concat([Buffer.from(signed.signatures), raw]);
  const tampered = Buffer.from(message.toString().replace('hello', 'HELLO'));
  const keyRecords = new DkimKeyRecordCache();
  // mailauth's own dkimVerify() (per-message key lookups) is the reference.
  const reference = async (m: Buffer) => ((await dkimVerify(m, { resolver: forMailauth(resolver) } as never)).results ?? []).map((r) => String((r as { status: { result: string } }).status.result));
  assert.deepEqual(await reference(message), ['pass']);
  assert.notDeepEqual(await reference(tampered), ['pass']);
  dns.clearLog();
  const input = { clientIp: '192.0.2.1', helo: 'mail.signer.example', sender: 'a@signer.example', authservId: 'mx.test' };
  for (let i = 0; i < 3; i++) {
    const good = await verifyMessage(message, input, resolver, { keyRecords });
    assert.deepEqual(good.dkim.map((d) => d.result), await reference(message), `message ${i}`);
    const bad = await verifyMessage(tampered, input, resolver, { keyRecords });
    assert.deepEqual(bad.dkim.map((d) => d.result), await reference(tampered), `tampered message ${i}`);
  }
  // The (uncached) reference asks for each good message; ours once. A tampered body is refused before any key lookup.
  assert.equal(dns.count('s1._domainkey.signer.example', 'TXT'), 3 + 1);
  assert.deepEqual([keyRecords.hits, keyRecords.misses], [2, 1]);
});
