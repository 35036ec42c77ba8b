// `mailwarden [--config FILE] <command>`: postconf/doveadm-style CLI.
import { Command, CommanderError } from 'commander';
import { CliContext, CliError, EXIT, printRecord, reportError } from './context.ts';
import { registerDomain } from './commands/domain.ts';
import { registerUser } from './commands/user.ts';
import { registerAlias } from './commands/alias.ts';
import { registerLookup } from './commands/lookup.ts';
import { registerDb } from './commands/db.ts';
import { registerAuth } from './commands/auth.ts';
import { registerPolicy } from './commands/policy.ts';
import { registerDkim } from './commands/dkim.ts';

export async function main(argv: string[]): Promise<number> {
  let context: CliContext | undefined;
  const program = new Command('mailwarden')
    .description('directory and policy daemons for Postfix and Dovecot')
    .option('-c, --config <file>', 'config file (default: $MAILWARDEN_CONFIG, then /etc/mailwarden/mailwarden.yaml)')
    .showHelpAfterError('(run mailwarden --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `mailwarden: ${s.slice(7)}` : s) });
  const ctx = () => (context ??= new CliContext(program.opts<{ config?: string }>().config));

  program.command('serve').description('run the configured services (socketmap, auth, dict, policy) in the foreground')
    .action(async () => {
      // Loaded on demand: the daemon pulls in every protocol and mailauth, which other commands never need.
      const { serve } = await import('../daemon/serve.ts');
      await serve(ctx().configFile);
    });

  program.command('config').description('configuration')
    .command('check').description('validate the config file and open the directory, like postfix check')
    .action(async () => {
      const c = ctx();
      const config = c.config;
      const dir = await c.directory();
      const domains = await dir.listDomains();
      printRecord({
        config: config.file,
        backend: config.directory.backend,
        domains: domains.length,
        socketmap: config.socketmap ? 'on' : 'off',
        auth: config.auth ? 'on' : 'off',
        dict: config.dict ? 'on' : 'off',
        policy: config.policy ? 'on' : 'off',
      });
    });

  registerDomain(program, ctx);
  registerUser(program, ctx);
  registerAlias(program, ctx);
  registerLookup(program, ctx);
  registerDb(program, ctx);
  registerAuth(program, ctx);
  registerPolicy(program, ctx);
  registerDkim(program, ctx);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version are not errors
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? EXIT.ok : EXIT.usage;
    }
    return reportError(err);
  } finally {
    // Release the directory (pool, timers) so the process can exit; serve runs on its own daemon state.
    await context?.close().catch(() => {});
  }
}

export { CliError };
