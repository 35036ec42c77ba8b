// Recipient classification, routing detection and sender ownership
// (src/checks/recipient.ts, src/checks/sender-login.ts) over the YAML
// directory with the shared fixture, through the same LookupService maps
// Postfix reads over the socketmap.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { classifyRecipient, hasSenderSpecifiedRouting, type RecipientVerdict } from '../../src/checks/recipient.ts';
import { senderLoginAllowed } from '../../src/checks/sender-login.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { createLogger } from '../../src/logging/logger.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { seedFixture } from '../support/directory-fixture.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

let tmp: TempDir;
let directory: YamlDirectory;
let lookups: LookupService;

before(async () => {
  tmp = await tempDir('checks-recipient');
  directory = YamlDirectory.open(join(tmp.path, 'directory.yaml'));
  await seedFixture(new DirectoryAdmin(directory));
  lookups = new LookupService(directory, { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
});

after(async () => {
  await directory?.close();
  await tmp?.remove();
});

/** The verdict without the rule text, which the second column checks separately. */
function shape(v: RecipientVerdict): string {
  switch (v.kind) {
    case 'local': return `local:${v.domain}:${v.exists ? 'exists' : 'unknown'}`;
    case 'remote': return `remote:${v.domain}`;
    case 'invalid': return `invalid:${v.reason}`;
  }
}

describe('classifyRecipient', () => {
  const CASES: Array<[string, string, RegExp?]> = [
    ['alice@example.org', 'local:example.org:exists', /^mailbox alice@example\.org$/],
    ['Alice@Example.ORG.', 'local:example.org:exists', /^mailbox alice@example\.org$/],
    ['alice+news@example.org', 'local:example.org:exists', /extension stripped/],
    ['"alice"@example.org', 'local:example.org:exists'],
    [' alice@example.org ', 'local:example.org:exists'],
    ['"john doe"@other.test', 'local:other.test:exists'],
    ['info@example.org', 'local:example.org:exists', /^alias info@example\.org$/],
    ['ext@example.org', 'local:example.org:exists', /^alias ext@example\.org$/],
    ['nobody@example.org', 'local:example.org:exists', /^catch-all @example\.org$/],
    ['bob@example.net', 'local:example.net:exists', /^alias domain example\.net -> example\.org$/],
    ['nobody@example.net', 'local:example.net:exists', /alias domain/],
    ['carol@example.org', 'local:example.org:unknown', /disabled/],
    ['carol@example.net', 'local:example.net:unknown', /not deliverable/],
    ['old@example.org', 'local:example.org:unknown', /alias old@example\.org disabled/],
    ['nobody@other.test', 'local:other.test:unknown', /no alias, mailbox or catch-all/],
    ['john doe@other.test', 'local:other.test:unknown', /^not a valid address$/],
    ['eve@off.test', 'remote:off.test'],
    ['alice@sub.example.org', 'remote:sub.example.org'],
    ['x@foreign.example', 'remote:foreign.example'],
    ['', 'invalid:empty recipient'],
    ['alice', 'invalid:no domain'],
    ['@relay.example:alice@example.org', 'invalid:source route'],
    ['x@[192.0.2.1]', 'invalid:domain is not a host name'],
    ['x@-bad-.example', 'invalid:domain is not a host name'],
  ];
  for (const [recipient, expected, rule] of CASES) {
    it(`${JSON.stringify(recipient)} -> ${expected}`, async () => {
      const v = await classifyRecipient(lookups, recipient);
      assert.equal(shape(v), expected);
      if (rule) {
        assert.ok(v.kind === 'local');
        assert.match(v.rule, rule);
      }
    });
  }
});

describe('hasSenderSpecifiedRouting', () => {
  it('finds %, ! and @ in the local part (quoted or not), nothing in plain addresses', () => {
    for (const r of ['a%b@example.org', 'a!b@example.org', 'b.example!a@example.org', '"a@b"@example.org', '"a%b"@example.org', '@relay:a@example.org']) {
      assert.equal(hasSenderSpecifiedRouting(r), true, r);
    }
    for (const r of ['a@example.org', 'a+b@example.org', '"john doe"@example.org', 'a.b-c_d@example.org', 'a@b%c.example']) {
      assert.equal(hasSenderSpecifiedRouting(r), false, r);
    }
  });
});

describe('senderLoginAllowed', () => {
  const ALLOWED: Array<[string, string, string]> = [
    ['alice@example.org', 'alice@example.org', 'alice@example.org'],
    ['ALICE@Example.org', 'alice@example.org', 'alice@example.org'],
    ['alice@example.org', 'ALICE@EXAMPLE.ORG', 'alice@example.org'],
    ['alice@example.org', 'alice+x@example.org', 'alice@example.org'],
    ['alice@example.org', '"alice"@example.org', 'alice@example.org'],
    ['alice@example.org', 'alice@example.net', 'alice@example.org'],
    ['bob@example.org', 'info@example.org', 'alice@example.org,bob@example.org'],
    ['dave@other.test', 'team@example.org', 'alice@example.org,bob@example.org,dave@other.test'],
    ['bob@example.org', 'postmaster@other.test', 'bob@example.org,alice@example.org'],
    ['alice@example.org', 'dave@other.test', 'alice@example.org,dave@other.test'],
    ['anyone@example.org', '', ''],
  ];
  for (const [login, sender, owners] of ALLOWED) {
    it(`${login} may send as <${sender}>`, async () => {
      const v = await senderLoginAllowed(lookups, login, sender);
      assert.equal(v.allowed, true, v.rule);
      assert.equal(v.owners, owners);
    });
  }

  const REFUSED: Array<[string, string]> = [
    ['bob@example.org', 'alice@example.org'],
    ['bob@example.org', 'dave@other.test'],
    ['alice@example.org', 'x@foreign.example'],
    ['alice@example.org', 'nobody@example.org'],
    ['carol@example.org', 'carol@example.org'],
    ['alice@example.org', 'alice'],
    ['alice@example.org', '<>'],
  ];
  for (const [login, sender] of REFUSED) {
    it(`${login} may not send as <${sender}>`, async () => {
      assert.equal((await senderLoginAllowed(lookups, login, sender)).allowed, false);
    });
  }
});
