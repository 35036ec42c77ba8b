// `mailwarden auth unblock|blocked`: talk to the running daemon's auth
// endpoint (auth.listen from the config, with the shared secret), where the
// brute-force counters live.
import type { Command } from 'commander';
import { request } from 'node:http';
import { formatListen } from '../../config/listen.ts';
import type { AuthConfig } from '../../config/load.ts';
import { SECRET_HEADER } from '../../auth/http-server.ts';
import type { BlockedEntry } from '../../auth/policy.ts';
import { CliError, EXIT, printJson, printTable, type CliContext } from '../context.ts';

const TIMEOUT_MS = 5000;

export function registerAuth(program: Command, ctx: () => CliContext): void {
  const auth = program.command('auth').description('brute-force protection of the running daemon (auth.policy)');

  auth.command('unblock <ip-or-login>')
    .description('forget the failure counts and blocks of an IP (and its /24 or /64), a subnet (CIDR) or a login')
    .option('--json', 'machine-readable output')
    .action(async (key: string, o: { json?: boolean }) => {
      const r = await call(authConfig(ctx()), 'POST', '/admin/unblock', { key }) as { key: string; removed: string[] };
      if (o.json) printJson(r);
      else if (r.removed.length) process.stdout.write(`unblocked ${key} (${r.removed.join(', ')})\n`);
      else process.stdout.write(`nothing recorded for ${key}\n`);
    });

  auth.command('blocked')
    .description('IPs, subnets and logins blocked right now')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await call(authConfig(ctx()), 'GET', '/admin/blocked') as { blocked: BlockedEntry[] };
      if (o.json) printJson(r.blocked);
      else if (!r.blocked.length) process.stdout.write('nothing is blocked\n');
      else printTable(['KEY', 'KIND', 'FAILURES', 'UNTIL'], r.blocked.map((b) => [b.key, b.kind, String(b.failures), b.until]));
    });
}

function authConfig(c: CliContext): AuthConfig {
  const a = c.config.auth;
  if (!a) throw new CliError(`no auth section in ${c.config.file}: the daemon has no auth endpoint`, EXIT.config);
  return a;
}

function call(a: AuthConfig, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
  const where = formatListen(a.listen);
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({
      ...(a.listen.kind === 'unix' ? { socketPath: a.listen.path } : { host: a.listen.host, port: a.listen.port }),
      method,
      path,
      timeout: TIMEOUT_MS,
      headers: {
        ...(a.secret !== undefined ? { [SECRET_HEADER]: a.secret } : {}),
        ...(text !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {}),
      },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('error', reject);
      res.on('end', () => {
        let parsed: Record<string, unknown> | undefined;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        } catch { /* below */ }
        if (res.statusCode === 200 && parsed) return resolve(parsed);
        const why = typeof parsed?.['error'] === 'string' ? parsed['error'] : `HTTP ${res.statusCode}`;
        reject(new CliError(`the daemon at ${where} refused: ${why}`, res.statusCode === 409 ? EXIT.config : EXIT.fail));
      });
    });
    req.on('timeout', () => req.destroy(new Error('ETIMEDOUT')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof CliError) return reject(err);
      reject(new CliError(`cannot reach the mailwarden daemon at ${where} (is \`mailwarden serve\` running?): ${err.code ?? err.message}`, EXIT.tempFail));
    });
    req.end(text);
  });
}
