// The dkim: section: key_dir relative to the config file, errors with file:line:col.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineCounter, parseDocument, type YAMLMap } from 'yaml';
import { NodeReader } from '../../../src/config/reader.ts';
import { dkimConfigOf, readDkimConfig } from '../../../src/dkim/config.ts';

const FILE = '/etc/mailwarden/mailwarden.yaml';

function read(text: string) {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const r = new NodeReader(FILE, doc, lines);
  const config = readDkimConfig(r, (doc.contents ?? undefined) as YAMLMap | undefined);
  return { config, issues: r.issues };
}

test('default: dkim/ next to the config file', () => {
  assert.deepEqual(read('directory: {}\n'), { config: { keyDir: '/etc/mailwarden/dkim' }, issues: [] });
  assert.deepEqual(read('dkim: {}\n'), { config: { keyDir: '/etc/mailwarden/dkim' }, issues: [] });
  assert.deepEqual(dkimConfigOf({ file: FILE }), { keyDir: '/etc/mailwarden/dkim' });
  assert.deepEqual(dkimConfigOf({ file: FILE, dkim: { keyDir: '/k' } }), { keyDir: '/k' });
});

test('key_dir: relative to the config file, or absolute', () => {
  assert.deepEqual(read('dkim:\n  key_dir: keys/dkim\n').config, { keyDir: '/etc/mailwarden/keys/dkim' });
  assert.deepEqual(read('dkim:\n  key_dir: /var/lib/mailwarden/dkim\n').config, { keyDir: '/var/lib/mailwarden/dkim' });
});

test('errors point at the line', () => {
  assert.deepEqual(read('dkim:\n  keydir: x\n').issues, [`${FILE}:2:3: unknown setting dkim.keydir (known: key_dir)`]);
  assert.deepEqual(read('dkim:\n  key_dir: [a]\n').issues, [`${FILE}:2:12: dkim.key_dir must be a string`]);
  assert.deepEqual(read('dkim:\n  key_dir: ""\n').issues, [`${FILE}:2:12: dkim.key_dir must be a directory path`]);
  assert.deepEqual(read('dkim: yes\n').issues, [`${FILE}:1:7: dkim must be a mapping`]);
});
