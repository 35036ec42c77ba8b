import type { Command } from 'commander';
import type { Domain } from '../../directory/types.ts';
import { printJson, printRecord, printTable, yesNo, type CliContext } from '../context.ts';

export function domainJson(d: Domain) {
  return {
    name: d.name,
    type: d.aliasFor ? 'alias' : 'mailbox',
    ...(d.aliasFor ? { alias_for: d.aliasFor } : {}),
    enabled: d.enabled,
    ...(d.description !== undefined ? { description: d.description } : {}),
    created: d.created.toISOString(),
    updated: d.updated.toISOString(),
  };
}

export function registerDomain(program: Command, ctx: () => CliContext): void {
  const domain = program.command('domain').description('mail domains and alias domains');

  domain.command('add <domain>').description('add a mailbox domain')
    .option('--description <text>', 'free text shown in listings')
    .option('--disabled', 'create it disabled')
    .action(async (name: string, o: { description?: string; disabled?: boolean }) => {
      const d = await (await ctx().admin()).addDomain(name, {
        ...(o.description !== undefined ? { description: o.description } : {}), enabled: !o.disabled,
      });
      process.stdout.write(`domain ${d.name} added\n`);
    });

  domain.command('alias <alias-domain> <target-domain>')
    .description('make every address at <alias-domain> deliver to the same local part at <target-domain>')
    .action(async (alias: string, target: string) => {
      const d = await (await ctx().admin()).addAliasDomain(alias, target);
      process.stdout.write(`alias domain ${d.name} -> ${d.aliasFor} added\n`);
    });

  domain.command('list').description('list domains').option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const domains = await (await ctx().admin()).listDomains();
      if (o.json) return printJson(domains.map(domainJson));
      printTable(['domain', 'type', 'enabled', 'description'], domains.map((d) => [
        d.name, d.aliasFor ? `alias for ${d.aliasFor}` : 'mailbox', yesNo(d.enabled), d.description ?? '',
      ]));
    });

  domain.command('show <domain>').description('show one domain and what it holds').option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const { domain: d, usage } = await (await ctx().admin()).showDomain(name);
      if (o.json) return printJson({ ...domainJson(d), mailboxes: usage.mailboxes, aliases: usage.aliases, alias_domains: usage.aliasDomains });
      printRecord({
        domain: d.name,
        type: d.aliasFor ? `alias domain for ${d.aliasFor}` : 'mailbox domain',
        enabled: yesNo(d.enabled),
        description: d.description,
        mailboxes: d.aliasFor ? undefined : usage.mailboxes,
        aliases: d.aliasFor ? undefined : usage.aliases,
        'alias domains': d.aliasFor ? undefined : usage.aliasDomains,
        created: d.created.toISOString(),
        updated: d.updated.toISOString(),
      });
    });

  domain.command('remove <domain>').description('remove a domain (refused while it holds mailboxes or aliases)')
    .option('--force', 'also delete its mailboxes, aliases, grants and alias domains')
    .action(async (name: string, o: { force?: boolean }) => {
      await (await ctx().admin()).removeDomain(name, o.force ?? false);
      process.stdout.write(`domain ${name.toLowerCase()} removed\n`);
    });

  for (const [verb, enabled] of [['enable', true], ['disable', false]] as const) {
    domain.command(`${verb} <domain>`).description(`${verb} a domain (a disabled domain is answered as absent)`)
      .action(async (name: string) => {
        await (await ctx().admin()).setDomainEnabled(name, enabled);
        process.stdout.write(`domain ${name.toLowerCase()} ${verb}d\n`);
      });
  }
}
