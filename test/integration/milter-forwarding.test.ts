// Where an alias sends mail (src/checks/forwarding.ts), the question the
// milter asks at RCPT before ARC-sealing: the recipient expanded through the
// lookup service the socketmap answers from (YAML directory), the way
// Postfix's cleanup expands virtual_alias_maps.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { forwardingOf } from '../../src/checks/forwarding.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { createLogger } from '../../src/logging/logger.ts';
import { LookupService } from '../../src/lookup/service.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const DIRECTORY = `
domains:
  example.org: {}
  example.net:
    alias_for: example.org
  catch.test: {}
mailboxes:
  alice@example.org: {}
  bob@example.org: {}
  keep@example.org: {}
aliases:
  ext@example.org: [someone@foreign.test]
  chain@example.org: [hop@example.org]
  hop@example.org: [far@foreign.test]
  mixed@example.org: [alice@example.org, bob@else.test, Carol@Else.Test]
  keep@example.org: [keep@example.org, keep@foreign.test]
  loop1@example.org: [loop2@example.org]
  loop2@example.org: [loop1@example.org, out@foreign.test]
  team@example.org: [alice@example.org, bob@example.org]
  "@catch.test": [boss@foreign.test]
`;

describe('forwarding: virtual alias expansion for ARC sealing', () => {
  let tmp: TempDir;
  let directory: YamlDirectory;
  let lookups: LookupService;

  before(async () => {
    tmp = await tempDir('milter-forwarding');
    const file = join(tmp.path, 'directory.yaml');
    writeFileSync(file, DIRECTORY);
    directory = YamlDirectory.open(file);
    lookups = new LookupService(directory, { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
  });

  after(async () => {
    await directory?.close();
    await tmp?.remove();
  });

  const cases: Array<[string, string[], number]> = [
    // recipient, foreign targets, local deliveries
    ['alice@example.org', [], 1],
    ['team@example.org', [], 2],
    ['ext@example.org', ['someone@foreign.test'], 0],
    ['EXT@Example.ORG', ['someone@foreign.test'], 0],
    ['ext+news@example.org', ['someone+news@foreign.test'], 0],
    ['ext@example.net', ['someone@foreign.test'], 0],
    ['chain@example.org', ['far@foreign.test'], 0],
    ['mixed@example.org', ['bob@else.test', 'carol@else.test'], 1],
    // An alias that names itself keeps a local copy (Postfix delivers the self-reference as is).
    ['keep@example.org', ['keep@foreign.test'], 1],
    // A loop ends where it started; what it reached on the way counts.
    ['loop1@example.org', ['out@foreign.test'], 0],
    ['anyone@catch.test', ['boss@foreign.test'], 0],
    // Relayed to a foreign domain (a client in mynetworks): leaves as it came.
    ['x@foreign.test', ['x@foreign.test'], 0],
    // Unknown here: bounced by Postfix, nothing forwarded.
    ['nobody@example.org', [], 0],
    ['not an address', [], 0],
  ];
  for (const [recipient, foreign, local] of cases) {
    it(`${recipient} -> ${foreign.length ? foreign.join(', ') : 'nothing abroad'}${local ? `, ${local} here` : ''}`, async () => {
      const v = await forwardingOf(lookups, recipient);
      assert.deepEqual({ foreign: v.foreign, local: v.local, truncated: v.truncated }, { foreign, local, truncated: false });
      assert.equal(v.recipient, recipient);
    });
  }

  it('stops at the expansion and recursion limits, reporting what it saw', async () => {
    const wide = await forwardingOf(lookups, 'mixed@example.org', { maxDepth: 10, maxAddresses: 3 });
    assert.equal(wide.truncated, true);
    assert.deepEqual(wide.foreign, ['bob@else.test']);
    const deep = await forwardingOf(lookups, 'chain@example.org', { maxDepth: 1, maxAddresses: 100 });
    assert.deepEqual({ foreign: deep.foreign, truncated: deep.truncated }, { foreign: [], truncated: true });
  });

  it('a directory that cannot answer makes it throw (the milter then applies on_error)', async () => {
    const down = async () => {
      throw Object.assign(new Error('directory down'), { code: 'unavailable' });
    };
    const unreachable = { remote: true, onChange: () => () => undefined, findDomain: down, findMailbox: down, findAlias: down, findSenderGrants: down };
    const broken = new LookupService(unreachable as never, { recipientDelimiter: '+', cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
    await assert.rejects(forwardingOf(broken, 'ext@example.org'), /directory down/);
  });
});
