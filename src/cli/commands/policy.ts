// `mailwarden policy test`: the policy service's verdict for one request,
// with every check's result, without Postfix — the operator's way to answer
// "why was this mail rejected?" before (or after) it happens.
import type { Command } from 'commander';
import { createLogger } from '../../logging/logger.ts';
import { policyRequest } from '../../policy/request.ts';
import { needsPolicyState } from '../../policy/config.ts';
import { CliError, EXIT, printJson, type CliContext } from '../context.ts';

interface TestOptions {
  clientIp: string;
  clientName?: string;
  reverseClientName?: string;
  helo?: string;
  sender?: string;
  recipient: string[];
  saslUsername?: string;
  state?: string;
  record?: boolean;
  json?: boolean;
}

export function registerPolicy(program: Command, ctx: () => CliContext): void {
  const policy = program.command('policy').description('the Postfix SMTPD access policy service');
  policy.command('test')
    .description('print the policy verdict for a request and every check behind it (DNS is queried; nothing is recorded unless --record)')
    .requiredOption('--client-ip <ip>', 'client_address')
    .option('--client-name <name>', 'client_name: the verified client host name (default unknown: FCrDNS is checked)')
    .option('--reverse-client-name <name>', 'reverse_client_name')
    .option('--helo <name>', 'helo_name', '')
    .option('--sender <address>', 'envelope sender; empty for the null sender', '')
    .option('--recipient <address>', 'envelope recipient (repeat for several RCPTs of one message)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--sasl-username <login>', 'test as an authenticated (submission) client')
    .option('--state <state>', 'protocol_state', 'RCPT')
    .option('--record', 'let greylisting and rate limits record this request like a real one')
    .option('--json', 'machine-readable output')
    .action(async (o: TestOptions) => {
      // The policy engine (mailauth, DNS, state stores) loads only for this command, keeping every other one quick.
      const [{ createResolver }, { cachedResolver }, { LookupService }, { newMessageState, PolicyEngine }, { openPolicyState }] = await Promise.all([
        import('../../dns/resolver.ts'), import('../../dns/cache.ts'), import('../../lookup/service.ts'),
        import('../../policy/engine.ts'), import('../../state/open.ts'),
      ]);
      const c = ctx();
      const config = c.config;
      if (!config.policy) throw new CliError(`${config.file} has no policy: section`, EXIT.config);
      const directory = await c.directory();
      const lookups = new LookupService(directory, { recipientDelimiter: config.recipientDelimiter, cacheTtlMs: 0, cacheSize: 0 }, createLogger('silent'));
      const resolver = cachedResolver(createResolver({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs }), { maxEntries: 10_000, minTtlS: 0, maxTtlS: 3600, negativeTtlS: 60 });
      const p = config.policy;
      const needsState = needsPolicyState(p);
      const state = needsState && o.record ? await openPolicyState(config.directory, directory, createLogger('silent')) : undefined;
      // Without --record, greylisting and rate limits are left out rather than faked.
      const engineConfig = state || !needsState ? p : { ...p, rateLimit: {}, greylist: undefined };
      const engine = new PolicyEngine({ config: engineConfig as typeof p, lookups, resolver, ...(state ? { state } : {}) });
      const recipients = o.recipient.length ? o.recipient : [''];
      const msg = newMessageState();
      const instance = `test.${Date.now().toString(16)}`;
      const results = [];
      try {
        for (const recipient of recipients) {
          const req = policyRequest({
            protocolState: o.state?.toUpperCase() ?? 'RCPT',
            clientAddress: o.clientIp,
            clientName: o.clientName ?? 'unknown',
            reverseClientName: o.reverseClientName ?? o.clientName ?? 'unknown',
            heloName: o.helo ?? '',
            sender: o.sender ?? '',
            recipient,
            instance,
            saslUsername: o.saslUsername ?? '',
            saslMethod: o.saslUsername ? 'PLAIN' : '',
          });
          const d = await engine.decide(req, msg);
          results.push({ recipient, action: d.action, decided_by: d.decidedBy, checks: d.checks });
        }
      } finally {
        await state?.close();
      }
      if (o.json) printJson(results.length === 1 ? results[0] : results);
      else {
        for (const r of results) {
          process.stdout.write(`${r.recipient ? `recipient: ${r.recipient}\n` : ''}action: ${r.action}\ndecided by: ${r.decided_by}\n`);
          for (const [name, facts] of Object.entries(r.checks)) process.stdout.write(`  ${name}: ${describe(facts)}\n`);
          if (!needsState || state) continue;
          process.stdout.write('  (greylisting and rate limits not evaluated: add --record)\n');
        }
      }
      // Like postmap -q's "not found": non-zero when any recipient would be refused.
      if (results.some((r) => /^(REJECT|DEFER|[45]\d\d)/i.test(r.action))) process.exitCode = EXIT.fail;
    });
}

function describe(facts: unknown): string {
  if (facts === null || typeof facts !== 'object') return String(facts);
  return Object.entries(facts as Record<string, unknown>)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
    .join(' ');
}
