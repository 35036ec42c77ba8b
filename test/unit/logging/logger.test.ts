import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger, redactSecrets } from '../../../src/logging/logger.ts';

test('secrets are redacted at the top level and one level down, without touching the caller\'s objects', () => {
  const user = { login: 'alice@example.org', password: 'hunter2', passwordHash: '{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$x$y' };
  const logged = { user, attrs: { sasl_password: 's', sasl_username: 'alice' }, url: 'mysql://u:p@h/db', n: 1 };
  const out = redactSecrets(logged);
  assert.deepEqual(out, {
    user: { login: 'alice@example.org', password: '[redacted]', passwordHash: '[redacted]' },
    attrs: { sasl_password: '[redacted]', sasl_username: 'alice' },
    url: '[redacted]',
    n: 1,
  });
  assert.equal(user.password, 'hunter2', 'the original is unchanged');
  const clean = { action: 'DUNNO', checks: { spf: 'pass' } };
  assert.equal(redactSecrets(clean), clean, 'no copy when there is nothing to hide');
});

test('a logger line never carries a password', async () => {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(chunk.toString()); cb(); } });
  const log = createLogger('info', sink).child({ service: 'test' });
  log.info({ password: 'hunter2', user: { password_hash: '$2y$10$abc' }, recipient: 'bob@example.org' }, 'decision');
  await new Promise((r) => setImmediate(r));
  assert.equal(lines.length, 1);
  assert.doesNotMatch(lines[0]!, /hunter2|\$2y\$/);
  const line = JSON.parse(lines[0]!);
  assert.equal(line.password, '[redacted]');
  assert.equal(line.user.password_hash, '[redacted]');
  assert.equal(line.recipient, 'bob@example.org');
  assert.equal(line.service, 'test');
});
