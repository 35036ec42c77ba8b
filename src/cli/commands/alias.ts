import type { Command } from 'commander';
import type { Alias, SenderGrant } from '../../directory/types.ts';
import { printJson, printRecord, printTable, yesNo, type CliContext } from '../context.ts';

export function aliasJson(a: Alias) {
  return {
    address: a.address,
    catch_all: a.address.startsWith('@'),
    targets: [...a.targets],
    enabled: a.enabled,
    created: a.created.toISOString(),
    updated: a.updated.toISOString(),
  };
}

const grantJson = (g: SenderGrant) => ({ address: g.address, login: g.login, created: g.created.toISOString() });

export function registerAlias(program: Command, ctx: () => CliContext): void {
  const alias = program.command('alias').description('aliases and catch-alls (@domain)');

  alias.command('add <address> <targets...>')
    .description('add an alias: targets as a comma list or several arguments; @domain makes a catch-all')
    .action(async (address: string, targets: string[]) => {
      const a = await (await ctx().admin()).addAlias(address, targets);
      process.stdout.write(`alias ${a.address} -> ${a.targets.join(',')} added\n`);
    });

  alias.command('add-target <address> <targets...>').description('add targets to an existing alias')
    .action(async (address: string, targets: string[]) => {
      const a = await (await ctx().admin()).addAliasTargets(address, targets);
      process.stdout.write(`alias ${a.address} -> ${a.targets.join(',')}\n`);
    });

  alias.command('remove <address> [targets...]').description('remove an alias, or only some of its targets')
    .action(async (address: string, targets: string[]) => {
      const a = await (await ctx().admin()).removeAlias(address, targets);
      process.stdout.write(a ? `alias ${a.address} -> ${a.targets.join(',')}\n` : `alias ${address.toLowerCase()} removed\n`);
    });

  alias.command('list [domain]').description('list aliases, optionally of one domain').option('--json', 'machine-readable output')
    .action(async (domain: string | undefined, o: { json?: boolean }) => {
      const list = await (await ctx().admin()).listAliases(domain);
      if (o.json) return printJson(list.map(aliasJson));
      printTable(['alias', 'enabled', 'targets'], list.map((a) => [a.address, yesNo(a.enabled), a.targets.join(',')]));
    });

  alias.command('show <address>').description('show one alias').option('--json', 'machine-readable output')
    .action(async (address: string, o: { json?: boolean }) => {
      const a = await (await ctx().admin()).getAlias(address);
      if (o.json) return printJson(aliasJson(a));
      printRecord({
        alias: a.address,
        type: a.address.startsWith('@') ? 'catch-all' : 'alias',
        enabled: yesNo(a.enabled),
        targets: a.targets.join(', '),
        created: a.created.toISOString(),
        updated: a.updated.toISOString(),
      });
    });

  for (const [verb, enabled] of [['enable', true], ['disable', false]] as const) {
    alias.command(`${verb} <address>`).description(`${verb} an alias`)
      .action(async (address: string) => {
        await (await ctx().admin()).setAliasEnabled(address, enabled);
        process.stdout.write(`alias ${address.toLowerCase()} ${verb}d\n`);
      });
  }

  const sender = program.command('sender').description('who may use which envelope sender (smtpd_sender_login_maps)');
  sender.command('grant <address> <login>')
    .description('let mailbox <login> also send as <address> (or any address of @domain)')
    .action(async (address: string, login: string) => {
      const g = await (await ctx().admin()).grantSender(address, login);
      process.stdout.write(`${g.login} may send as ${g.address}\n`);
    });
  sender.command('revoke <address> <login>').description('remove a grant')
    .action(async (address: string, login: string) => {
      await (await ctx().admin()).revokeSender(address, login);
      process.stdout.write(`grant removed\n`);
    });
  sender.command('list').description('list explicit grants (owners of their own addresses and aliases need none)')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const list = await (await ctx().admin()).listSenderGrants();
      if (o.json) return printJson(list.map(grantJson));
      printTable(['address', 'login'], list.map((g) => [g.address, g.login]));
    });
}
