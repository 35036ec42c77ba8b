// Comparing a published DKIM record with a key, as a verifier would read it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { compareRecords, parseTagList } from '../../../src/dkim/check.ts';
import { dnsRecordStrings, dnsRecordText, publicKeyBase64, type DkimKey } from '../../../src/dkim/keys.ts';

function fakeKey(type: 'rsa' | 'ed25519', selector = 'sel'): DkimKey {
  const pair = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 1024 }) : generateKeyPairSync('ed25519');
  return {
    domain: 'example.org', selector, algorithm: type === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
    privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyBase64: publicKeyBase64(pair.publicKey), created: new Date(), active: true, signing: true,
    bits: type === 'rsa' ? 1024 : 256, file: '/dev/null', fileMode: 0o600,
  };
}
const rsa = fakeKey('rsa');
const ed = fakeKey('ed25519');

test('tag lists: whitespace around tags and values, trailing semicolon; duplicates invalidate', () => {
  const t = parseTagList(' v = DKIM1 ;k=rsa;\r\n\tp=AB CD; ');
  assert.ok(t instanceof Map);
  assert.deepEqual([...t], [['v', 'DKIM1'], ['k', 'rsa'], ['p', 'AB CD']]);
  assert.equal(parseTagList('p=a; p=b'), 'tag p= appears twice');
  assert.match(String(parseTagList('v=DKIM1; garbage')), /not tag=value/);
});

test('our own record matches, joined from strings, with or without whitespace in p=', () => {
  for (const key of [rsa, ed]) {
    assert.equal(compareRecords(key, [dnsRecordStrings(key).join('')]).status, 'match');
    const spaced = dnsRecordText(key).replace(/p=(.{20})/, 'p=$1 \t ');
    assert.equal(compareRecords(key, [spaced]).status, 'match');
  }
  assert.equal(compareRecords(rsa, [`p=${rsa.publicKeyBase64}`]).status, 'match', 'v= and k=rsa are optional');
});

test('RSA published as a bare PKCS#1 RSAPublicKey is the same key', () => {
  const pkcs1 = createPublicKey(rsa.privateKeyPem).export({ type: 'pkcs1', format: 'der' }).toString('base64');
  assert.equal(compareRecords(rsa, [`v=DKIM1; k=rsa; p=${pkcs1}`]).status, 'match');
});

test('mismatches say why', () => {
  const other = fakeKey('rsa');
  const cases: Array<[DkimKey, string, RegExp]> = [
    [rsa, dnsRecordText(other), /p= is a different key/],
    [rsa, 'v=DKIM1; k=rsa; p=', /revoked/],
    [rsa, 'v=DKIM1; k=rsa; p=not*base64', /not a valid rsa public key/],
    [ed, `v=DKIM1; p=${ed.publicKeyBase64}`, /k=rsa \(the default\) but the key is ed25519: add k=ed25519/],
    [rsa, `v=DKIM1; k=ed25519; p=${rsa.publicKeyBase64}`, /k=ed25519 but the key is rsa/],
    [rsa, `v=DKIM1; h=sha1; k=rsa; p=${rsa.publicKeyBase64}`, /h=sha1 does not allow sha256/],
    [rsa, `v=DKIM1; s=tlsrpt; p=${rsa.publicKeyBase64}`, /s=tlsrpt does not allow email/],
    [rsa, `k=rsa; v=DKIM1; p=${rsa.publicKeyBase64}`, /v=DKIM1 must be the first tag/],
    [ed, `v=DKIM1; k=ed25519; p=${createPublicKey(ed.privateKeyPem).export({ type: 'spki', format: 'der' }).toString('base64')}`, /not a valid ed25519 public key/],
  ];
  for (const [key, record, why] of cases) {
    const r = compareRecords(key, [record]);
    assert.equal(r.status, 'mismatch', record);
    assert.match(r.detail ?? '', why, record);
  }
});

test('h= with sha256 among others, s=email and t=s are fine; t=y is a warning', () => {
  const ok = compareRecords(rsa, [`v=DKIM1; h=sha1:sha256; s=email; t=s; k=rsa; p=${rsa.publicKeyBase64}`]);
  assert.equal(ok.status, 'match');
  assert.deepEqual(ok.warnings, []);
  const testing = compareRecords(rsa, [`v=DKIM1; t=y; k=rsa; p=${rsa.publicKeyBase64}`]);
  assert.equal(testing.status, 'match');
  assert.match(testing.warnings[0] ?? '', /^t=y/);
});

test('no DKIM record among the TXT records is missing; several differing records are a mismatch', () => {
  assert.equal(compareRecords(rsa, []).status, 'missing');
  const spf = compareRecords(rsa, ['v=spf1 -all']);
  assert.equal(spf.status, 'missing');
  assert.match(spf.detail ?? '', /holds no DKIM key record/);
  const two = compareRecords(rsa, [dnsRecordText(rsa), dnsRecordText(fakeKey('rsa'))]);
  assert.equal(two.status, 'mismatch');
  assert.match(two.detail ?? '', /^2 DKIM records at sel\._domainkey\.example\.org, verifiers pick any one/);
  const same = compareRecords(rsa, [dnsRecordText(rsa), dnsRecordText(rsa)]);
  assert.equal(same.status, 'match');
  assert.match(same.warnings.join(), /2 identical DKIM records/);
});
