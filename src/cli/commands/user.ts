import type { Command } from 'commander';
import { parseSize } from '../../config/reader.ts';
import { requireAddress } from '../../core/address.ts';
import { formatSize } from '../../core/size.ts';
import { hashPassword, hashScheme, normalizeImportedHash } from '../../directory/passwords.ts';
import type { Mailbox, MailboxActivity } from '../../directory/types.ts';
import { CliError, EXIT, printJson, printRecord, printTable, yesNo, type CliContext } from '../context.ts';
import { passwordFromStdin, promptNewPassword } from '../password-input.ts';

interface PasswordOptions {
  passwordStdin?: boolean;
  passwordHash?: string;
  /** commander sets password=false for --no-password */
  password?: boolean;
}

export function mailboxJson(m: Mailbox) {
  return {
    address: m.address,
    domain: m.domain,
    ...(m.name !== undefined ? { name: m.name } : {}),
    enabled: m.enabled,
    quota_bytes: m.quotaBytes,
    // The scheme tells an operator whether a rehash is pending; the hash itself is never printed.
    password_scheme: hashScheme(m.passwordHash) ?? null,
    created: m.created.toISOString(),
    updated: m.updated.toISOString(),
  };
}

function activityJson(a: MailboxActivity | undefined) {
  return {
    last_login: a?.lastLogin?.toISOString() ?? null,
    last_login_ip: a?.lastLoginIp ?? null,
    quota_used_bytes: a?.quotaBytes ?? null,
    quota_used_messages: a?.quotaMessages ?? null,
  };
}

function quota(text: string): number {
  const bytes = parseSize(text);
  if (bytes === undefined) throw new CliError(`invalid quota ${JSON.stringify(text)}: use a size like 500M or 2G (0 = unlimited)`, EXIT.usage);
  return bytes;
}

/** The new password hash from --password-stdin, --password-hash, a prompt, or none (--no-password). */
async function newPasswordHash(ctx: CliContext, o: PasswordOptions): Promise<string | undefined> {
  const ways = [o.passwordStdin, o.passwordHash !== undefined, o.password === false].filter(Boolean).length;
  if (ways > 1) throw new CliError('use only one of --password-stdin, --password-hash, --no-password', EXIT.usage);
  if (o.password === false) return undefined;
  if (o.passwordHash !== undefined) {
    const hash = normalizeImportedHash(o.passwordHash);
    if (!hash) throw new CliError('unsupported password hash: expected {ARGON2ID}, {ARGON2I}, {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT} or {MD5-CRYPT}', EXIT.dataErr);
    return hash;
  }
  const password = o.passwordStdin ? await passwordFromStdin() : await promptNewPassword();
  return hashPassword(password, ctx.config.passwords.argon2);
}

function passwordOptions(cmd: Command): Command {
  return cmd
    .option('--password-stdin', 'read the password from the first line of stdin')
    .option('--password-hash <hash>', 'store an existing {SCHEME}hash (imports from PostfixAdmin and the like)');
}

export function registerUser(program: Command, ctx: () => CliContext): void {
  const user = program.command('user').description('mailboxes (login accounts)');

  passwordOptions(user.command('add <address>').description('add a mailbox; asks for a password unless told otherwise'))
    .option('--no-password', 'create without a password (no login until `user passwd`)')
    .option('--quota <size>', 'storage quota, e.g. 2G (0 = unlimited)', '0')
    .option('--name <name>', 'display name')
    .option('--disabled', 'create it disabled')
    .action(async (address: string, o: PasswordOptions & { quota: string; name?: string; disabled?: boolean }) => {
      const admin = await ctx().admin();
      const quotaBytes = quota(o.quota);
      await admin.mailboxDomain(requireAddress(address).domain); // fail before asking for a password
      const passwordHash = await newPasswordHash(ctx(), o);
      const m = await admin.addMailbox(address, {
        ...(passwordHash ? { passwordHash } : {}), quotaBytes, enabled: !o.disabled, ...(o.name !== undefined ? { name: o.name } : {}),
      });
      process.stdout.write(`mailbox ${m.address} added${passwordHash ? '' : ' (no password set)'}\n`);
    });

  passwordOptions(user.command('passwd <address>').description('set a new password'))
    .action(async (address: string, o: PasswordOptions) => {
      const admin = await ctx().admin();
      const m = await admin.getMailbox(address);
      const passwordHash = await newPasswordHash(ctx(), o);
      await admin.updateMailbox(m.address, { passwordHash: passwordHash ?? null });
      process.stdout.write(`password of ${m.address} changed\n`);
    });

  user.command('quota <address> <size>').description('set the storage quota, e.g. 2G (0 = unlimited)')
    .action(async (address: string, size: string) => {
      const m = await (await ctx().admin()).updateMailbox(address, { quotaBytes: quota(size) });
      process.stdout.write(`quota of ${m.address} is ${m.quotaBytes ? formatSize(m.quotaBytes) : 'unlimited'}\n`);
    });

  user.command('list [domain]').description('list mailboxes, optionally of one domain').option('--json', 'machine-readable output')
    .action(async (domain: string | undefined, o: { json?: boolean }) => {
      const list = await (await ctx().admin()).listMailboxes(domain);
      if (o.json) return printJson(list.map(mailboxJson));
      printTable(['address', 'enabled', 'quota', 'name'], list.map((m) => [
        m.address, yesNo(m.enabled), m.quotaBytes ? formatSize(m.quotaBytes) : '-', m.name ?? '',
      ]));
    });

  user.command('show <address>').description('show one mailbox').option('--json', 'machine-readable output')
    .action(async (address: string, o: { json?: boolean }) => {
      const admin = await ctx().admin();
      const m = await admin.getMailbox(address);
      const activity = await admin.dir.getActivity(m.address);
      if (o.json) return printJson({ ...mailboxJson(m), ...activityJson(activity) });
      printRecord({
        address: m.address,
        name: m.name,
        enabled: yesNo(m.enabled),
        quota: m.quotaBytes ? formatSize(m.quotaBytes) : 'unlimited',
        password: hashScheme(m.passwordHash) ?? 'none (cannot log in)',
        'last login': activity?.lastLogin ? `${activity.lastLogin.toISOString()}${activity.lastLoginIp ? ` from ${activity.lastLoginIp}` : ''}` : 'never',
        'quota used': activity?.quotaBytes !== undefined
          ? `${formatSize(activity.quotaBytes)}${m.quotaBytes ? ` of ${formatSize(m.quotaBytes)}` : ''}, ${activity.quotaMessages ?? 0} messages`
          : undefined,
        created: m.created.toISOString(),
        updated: m.updated.toISOString(),
      });
    });

  user.command('remove <address>').description('remove a mailbox (its stored mail is not touched)')
    .action(async (address: string) => {
      const admin = await ctx().admin();
      const m = await admin.getMailbox(address);
      await admin.removeMailbox(m.address);
      process.stdout.write(`mailbox ${m.address} removed\n`);
    });

  for (const [verb, enabled] of [['enable', true], ['disable', false]] as const) {
    user.command(`${verb} <address>`).description(`${verb} a mailbox (disabled: no login, no mail accepted)`)
      .action(async (address: string) => {
        const m = await (await ctx().admin()).updateMailbox(address, { enabled });
        process.stdout.write(`mailbox ${m.address} ${verb}d\n`);
      });
  }
}
