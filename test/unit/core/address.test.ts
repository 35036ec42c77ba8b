import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatAddress, normalizeDomain, parseAddress, splitExtension, grantAddress } from '../../../src/core/address.ts';

test('domains are canonicalised to lower-case A-labels', () => {
  assert.equal(normalizeDomain('Example.ORG'), 'example.org');
  assert.equal(normalizeDomain('example.org.'), 'example.org');
  assert.equal(normalizeDomain('bücher.example'), 'xn--bcher-kva.example');
  assert.equal(normalizeDomain('BÜCHER.example'), 'xn--bcher-kva.example');
});

test('non-domains are refused', () => {
  for (const bad of ['', '*', '.example.org', 'example', '-a.example', 'a-.example', 'a..example', '[127.0.0.1]', '1.2.3.4', 'a b.example', `${'a'.repeat(64)}.example`]) {
    assert.equal(normalizeDomain(bad), undefined, bad);
  }
});

test('addresses: case folding, quoting, brackets, UTF-8', () => {
  assert.deepEqual(parseAddress('Alice@Example.org'), { local: 'alice', domain: 'example.org' });
  assert.deepEqual(parseAddress('<alice@example.org>'), { local: 'alice', domain: 'example.org' });
  assert.deepEqual(parseAddress('"alice"@example.org'), { local: 'alice', domain: 'example.org' });
  assert.deepEqual(parseAddress('"john doe"@example.org'), { local: 'john doe', domain: 'example.org' });
  assert.deepEqual(parseAddress('"a\\"b"@example.org'), { local: 'a"b', domain: 'example.org' });
  assert.deepEqual(parseAddress('Jörg@Bücher.example'), { local: 'jörg', domain: 'xn--bcher-kva.example' });
  assert.deepEqual(parseAddress('"a@b"@example.org'), { local: 'a@b', domain: 'example.org' });
});

test('non-addresses are refused', () => {
  for (const bad of ['', '""', '<>', '*', '@example.org', 'alice@', 'alice', '.alice@example.org', 'al..ice@example.org',
    'alice.@example.org', 'a b@example.org', `${'a'.repeat(65)}@example.org`, 'alice@example', '""@example.org', '"a\nb"@example.org']) {
    assert.equal(parseAddress(bad), undefined, JSON.stringify(bad));
  }
});

test('formatAddress quotes only when the local part is not a dot-atom', () => {
  assert.equal(formatAddress({ local: 'alice', domain: 'example.org' }), 'alice@example.org');
  assert.equal(formatAddress({ local: 'john doe', domain: 'example.org' }), '"john doe"@example.org');
  assert.equal(formatAddress({ local: 'a"b', domain: 'example.org' }), '"a\\"b"@example.org');
  assert.equal(formatAddress({ local: 'a.b+c', domain: 'example.org' }), 'a.b+c@example.org');
  for (const text of ['"john doe"@example.org', '"a\\"b"@example.org', 'a.b@example.org']) {
    assert.equal(formatAddress(parseAddress(text)!), text, 'round trip');
  }
});

test('splitExtension follows Postfix split_addr()', () => {
  assert.deepEqual(splitExtension('alice+tag', '+'), { base: 'alice', delimiter: '+', extension: 'tag' });
  assert.deepEqual(splitExtension('alice+a+b', '+'), { base: 'alice', delimiter: '+', extension: 'a+b' });
  assert.deepEqual(splitExtension('alice-x', '+-'), { base: 'alice', delimiter: '-', extension: 'x' });
  assert.deepEqual(splitExtension('alice+', '+'), { base: 'alice', delimiter: '+', extension: '' });
  assert.equal(splitExtension('+tag', '+'), undefined, 'null base is not split');
  assert.equal(splitExtension('alice', '+'), undefined);
  assert.equal(splitExtension('alice+tag', ''), undefined, 'delimiter off');
  assert.equal(splitExtension('postmaster', 'a'), undefined, 'reserved');
  assert.equal(splitExtension('owner-list', '-'), undefined, 'owner- kept');
  assert.equal(splitExtension('list-request', '-'), undefined, '-request kept');
});

test('grant addresses accept @domain', () => {
  assert.equal(grantAddress('@Example.org'), '@example.org');
  assert.equal(grantAddress('Bob@example.org'), 'bob@example.org');
  assert.equal(grantAddress('@'), undefined);
});
