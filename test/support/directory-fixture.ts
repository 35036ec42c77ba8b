// One directory scenario shared by the map tests of both backends, the
// socketmap/Postfix integration tests and the CLI tests, with the answers a
// Postfix table must give for it.
import type { DirectoryAdmin } from '../../src/directory/admin.ts';
import type { MapName } from '../../src/lookup/maps.ts';

export async function seedFixture(admin: DirectoryAdmin): Promise<void> {
  await admin.addDomain('example.org');
  await admin.addDomain('other.test');
  await admin.addDomain('off.test', { enabled: false });
  await admin.addAliasDomain('example.net', 'example.org');
  await admin.addMailbox('alice@example.org', { quotaBytes: 2 * 1024 ** 3, name: 'Alice' });
  await admin.addMailbox('bob@example.org');
  await admin.addMailbox('carol@example.org', { enabled: false });
  await admin.addMailbox('dave@other.test');
  await admin.addMailbox('eve@off.test');
  await admin.addMailbox('john doe@other.test'.replace('john doe', '"john doe"'));
  await admin.addAlias('info@example.org', ['alice@example.org,bob@example.org']);
  await admin.addAlias('team@example.org', ['info@example.org', 'dave@other.test']);
  await admin.addAlias('ext@example.org', ['someone@foreign.example']);
  await admin.addAlias('old@example.org', ['alice@example.org']);
  await admin.setAliasEnabled('old@example.org', false);
  await admin.addAlias('@example.org', ['alice@example.org']);
  await admin.grantSender('postmaster@other.test', 'bob@example.org');
  await admin.grantSender('@other.test', 'alice@example.org');
}

/** [map, key, expected value or null for NOTFOUND] */
export const EXPECTED: ReadonlyArray<readonly [MapName, string, string | null]> = [
  ['virtual_mailbox_domains', 'example.org', 'example.org'],
  ['virtual_mailbox_domains', 'EXAMPLE.ORG', 'example.org'],
  ['virtual_mailbox_domains', 'example.net', null],
  ['virtual_mailbox_domains', 'off.test', null],
  ['virtual_mailbox_domains', 'sub.example.org', null],
  ['virtual_mailbox_domains', '.example.org', null],
  ['virtual_mailbox_domains', '*', null],
  ['virtual_mailbox_domains', '', null],
  ['virtual_alias_domains', 'example.net', 'example.org'],
  ['virtual_alias_domains', 'example.org', null],

  ['virtual_mailbox_maps', 'alice@example.org', 'example.org/alice/'],
  ['virtual_mailbox_maps', 'Alice@Example.ORG', 'example.org/alice/'],
  ['virtual_mailbox_maps', 'alice+news@example.org', 'example.org/alice/'],
  ['virtual_mailbox_maps', '"alice"@example.org', 'example.org/alice/'],
  ['virtual_mailbox_maps', 'carol@example.org', null],
  ['virtual_mailbox_maps', 'info@example.org', null],
  ['virtual_mailbox_maps', 'nobody@example.org', null],
  ['virtual_mailbox_maps', 'alice@example.net', null],
  ['virtual_mailbox_maps', 'eve@off.test', null],
  ['virtual_mailbox_maps', '"john doe"@other.test', 'other.test/john doe/'],
  ['virtual_mailbox_maps', '', null],
  ['virtual_mailbox_maps', '*', null],
  ['virtual_mailbox_maps', '@example.org', null],

  ['virtual_alias_maps', 'alice@example.org', null],
  ['virtual_alias_maps', 'alice+news@example.org', null],
  ['virtual_alias_maps', 'info@example.org', 'alice@example.org,bob@example.org'],
  ['virtual_alias_maps', 'INFO@example.org', 'alice@example.org,bob@example.org'],
  ['virtual_alias_maps', 'info+x@example.org', 'alice+x@example.org,bob+x@example.org'],
  ['virtual_alias_maps', 'team@example.org', 'info@example.org,dave@other.test'],
  ['virtual_alias_maps', 'ext@example.org', 'someone@foreign.example'],
  ['virtual_alias_maps', 'nobody@example.org', 'alice@example.org'],
  ['virtual_alias_maps', 'nobody+x@example.org', 'alice@example.org'],
  ['virtual_alias_maps', 'carol@example.org', null],
  ['virtual_alias_maps', 'old@example.org', null],
  ['virtual_alias_maps', 'bob@example.net', 'bob@example.org'],
  ['virtual_alias_maps', 'bob+x@example.net', 'bob+x@example.org'],
  ['virtual_alias_maps', 'info@example.net', 'info@example.org'],
  ['virtual_alias_maps', 'nobody@example.net', 'nobody@example.org'],
  ['virtual_alias_maps', 'carol@example.net', null],
  ['virtual_alias_maps', 'nobody@other.test', null],
  ['virtual_alias_maps', 'eve@off.test', null],
  ['virtual_alias_maps', 'x@foreign.example', null],
  ['virtual_alias_maps', '', null],
  ['virtual_alias_maps', '<>', null],

  ['smtpd_sender_login_maps', 'alice@example.org', 'alice@example.org'],
  ['smtpd_sender_login_maps', 'alice+x@example.org', 'alice@example.org'],
  ['smtpd_sender_login_maps', 'alice@example.net', 'alice@example.org'],
  ['smtpd_sender_login_maps', 'info@example.org', 'alice@example.org,bob@example.org'],
  ['smtpd_sender_login_maps', 'team@example.org', 'alice@example.org,bob@example.org,dave@other.test'],
  ['smtpd_sender_login_maps', 'carol@example.org', null],
  ['smtpd_sender_login_maps', 'nobody@example.org', null],
  ['smtpd_sender_login_maps', 'postmaster@other.test', 'bob@example.org,alice@example.org'],
  ['smtpd_sender_login_maps', 'dave@other.test', 'alice@example.org,dave@other.test'],
  ['smtpd_sender_login_maps', 'x@foreign.example', null],
  ['smtpd_sender_login_maps', '', null],
];
