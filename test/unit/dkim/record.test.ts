// DNS record text for DKIM keys: the name, the 255-byte character-strings and
// the zone-file line operators paste into BIND, nsupdate or a DNS web UI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import {
  defaultSelector, dnsRecordName, dnsRecordStrings, dnsRecordText, normalizeSelector, parseAlgorithm, publicKeyBase64,
  splitCharacterStrings, zoneFileLine, type DkimAlgorithm,
} from '../../../src/dkim/keys.ts';

const rsaKey = (bits: number) => ({
  domain: 'example.org', selector: 's2026', algorithm: 'rsa-sha256' as DkimAlgorithm,
  publicKeyBase64: publicKeyBase64(generateKeyPairSync('rsa', { modulusLength: bits }).publicKey),
});
const edKey = () => ({
  domain: 'example.org', selector: 'e2026', algorithm: 'ed25519-sha256' as DkimAlgorithm,
  publicKeyBase64: publicKeyBase64(generateKeyPairSync('ed25519').privateKey),
});

test('splitCharacterStrings: pieces of at most 255 bytes that join back, UTF-8 never cut', () => {
  for (const len of [0, 1, 254, 255, 256, 510, 511, 1000]) {
    const text = 'x'.repeat(len);
    const parts = splitCharacterStrings(text);
    assert.equal(parts.join(''), text);
    assert.ok(parts.every((p) => Buffer.byteLength(p) <= 255), `len ${len}`);
    assert.equal(parts.length, Math.max(1, Math.ceil(len / 255)));
  }
  // 254 ASCII bytes then a 2-byte character: the character moves to the next piece whole.
  const text = `${'a'.repeat(254)}é${'€'.repeat(200)}`;
  const parts = splitCharacterStrings(text);
  assert.equal(parts.join(''), text);
  assert.equal(parts[0], 'a'.repeat(254));
  assert.ok(parts.every((p) => Buffer.byteLength(p) <= 255 && !p.includes('\ufffd')));
});

test('RSA records of every size split into <=255-byte strings that join to the record', () => {
  for (const bits of [1024, 2048, 3072, 4096]) {
    const key = rsaKey(bits);
    const strings = dnsRecordStrings(key);
    assert.equal(strings.join(''), dnsRecordText(key), `${bits}`);
    assert.ok(strings.every((s) => Buffer.byteLength(s) <= 255), `${bits}: ${strings.map((s) => s.length)}`);
    assert.match(dnsRecordText(key), /^v=DKIM1; k=rsa; p=MI[A-Za-z0-9+/]+=*$/);
    if (bits === 1024) assert.equal(strings.length, 1, 'a 1024-bit record fits in one string');
    else assert.equal(strings[0], 'v=DKIM1; k=rsa; ', 'split after the tags first');
  }
  // 2048 bits: 392 base64 characters, so "p=" + 392 = 394 bytes → 255 + 139.
  assert.deepEqual(dnsRecordStrings(rsaKey(2048)).map((s) => s.length), [16, 255, 139]);
});

test('Ed25519: raw 32-byte key (RFC 8463), one string', () => {
  const key = edKey();
  assert.equal(Buffer.from(key.publicKeyBase64, 'base64').length, 32);
  assert.deepEqual(dnsRecordStrings(key), [`v=DKIM1; k=ed25519; p=${key.publicKeyBase64}`]);
  assert.equal(zoneFileLine(key), `e2026._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; p=${key.publicKeyBase64}"`);
});

test('zone-file line: name with trailing dot, quoted strings in parentheses', () => {
  const p = `${'A'.repeat(300)}==`;
  const key = { domain: 'example.org', selector: 's2026', algorithm: 'rsa-sha256' as DkimAlgorithm, publicKeyBase64: p };
  assert.equal(dnsRecordName(key), 's2026._domainkey.example.org');
  assert.equal(zoneFileLine(key),
    `s2026._domainkey.example.org. IN TXT ( "v=DKIM1; k=rsa; " "p=${'A'.repeat(253)}" "${'A'.repeat(47)}==" )`);
});

test('selectors: DNS labels, lower-cased; everything else refused', () => {
  assert.equal(normalizeSelector('S2026'), 's2026');
  assert.equal(normalizeSelector('mail-2026'), 'mail-2026');
  assert.equal(normalizeSelector('a.b'), 'a.b');
  for (const bad of ['', ' ', '-a', 'a-', 'a..b', '.a', 'a.', 'a_b', 'a b', 'a/b', '../x', 'é', 'a'.repeat(64), 'x;y']) {
    assert.equal(normalizeSelector(bad), undefined, JSON.stringify(bad));
  }
});

test('algorithms by key type or DKIM name', () => {
  assert.equal(parseAlgorithm('rsa'), 'rsa-sha256');
  assert.equal(parseAlgorithm('RSA-SHA256'), 'rsa-sha256');
  assert.equal(parseAlgorithm('ed25519'), 'ed25519-sha256');
  assert.equal(parseAlgorithm('ed25519-sha256'), 'ed25519-sha256');
  for (const bad of ['rsa-sha1', 'dsa', '', 'ed448']) assert.equal(parseAlgorithm(bad), undefined, bad);
});

test('default selector: s/e + UTC yyyymm, numbered when taken', () => {
  const now = new Date('2026-11-30T23:30:00-05:00'); // already December in UTC
  assert.equal(defaultSelector('rsa', now, new Set()), 's202612');
  assert.equal(defaultSelector('ed25519', now, new Set()), 'e202612');
  assert.equal(defaultSelector('rsa', now, new Set(['s202612', 's202612-2'])), 's202612-3');
});
