// The shipped example configs must load as they are: a user starts from them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../../src/config/load.ts';

const EXAMPLES = new URL('../../../examples/', import.meta.url).pathname;

test('every examples/*.yaml mailwarden config loads without an error', () => {
  const files = readdirSync(EXAMPLES).filter((f) => /^mailwarden.*\.ya?ml$/.test(f));
  assert.ok(files.length >= 2, `found ${files.join(', ')}`);
  for (const f of files) {
    const config = loadConfig(join(EXAMPLES, f));
    assert.ok(config.directory.backend, f);
  }
});
