// ReplyCache: the policy server's encoded replies by action text.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodePolicyReply } from '../../../src/policy/codec.ts';
import { ReplyCache } from '../../../src/policy/server.ts';

describe('ReplyCache', () => {
  it('gives the bytes encodePolicyReply() gives, the same Buffer for a repeated action', () => {
    const c = new ReplyCache(10);
    for (const action of ['DUNNO', '550 5.1.1 User unknown', 'PREPEND Received-SPF: pass (x) client-ip=192.0.2.1;', 'REJECT Überprüfung fehlgeschlagen']) {
      assert.deepEqual(c.get(action), encodePolicyReply(action));
      assert.equal(c.get(action), c.get(action));
    }
    assert.equal(c.size, 4);
  });

  it('refuses what cannot be framed, like encodePolicyReply(), and keeps none of it', () => {
    const c = new ReplyCache(10);
    for (const bad of ['', 'REJECT bad\naction=OK', 'DUNNO\r', 'REJECT a\0b', undefined as unknown as string]) {
      assert.throws(() => c.get(bad), RangeError, JSON.stringify(bad));
    }
    assert.equal(c.size, 0);
  });

  it('stays within its bound', () => {
    const c = new ReplyCache(5);
    for (let i = 0; i < 23; i++) assert.equal(c.get(`REJECT ${i}`).toString(), `action=REJECT ${i}\n\n`);
    assert.ok(c.size <= 5);
  });
});
