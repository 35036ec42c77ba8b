// OpenDMARC for bench/milter-postfix.ts. Through Postfix the SMTP client is
// smtp-source on 127.0.0.1, and OpenDMARC's IgnoreHosts defaults to
// "127.0.0.1": it would accept every message untouched (no A-R, no DNS
// query), i.e. do nothing at all (seen: the probe found OpenDKIM's A-R only).
// milter-peers.ts's OpenDMARC has no way to change that, so this is the same
// configuration (keep the two in step) plus an IgnoreHosts file that lists
// no loopback address. Everything else comes from milter-peers.ts.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { OPENDKIM_AUTHSERV, OPENDMARC, OPENDMARC_AUTHSERV, startMilter, type MilterContext, type MilterKind, type RunningMilter } from './milter-peers.ts';
import { startDaemon } from './proc.ts';

/** startMilter, except that OpenDMARC also handles mail from 127.0.0.1. */
export async function startMilterForPostfix(kind: MilterKind, ctx: MilterContext): Promise<RunningMilter> {
  if (kind !== 'opendmarc') return startMilter(kind, ctx);
  if (!('path' in ctx.endpoint)) throw new Error('milter-postfix: OpenDMARC on a UNIX socket only');
  const ignore = path.join(ctx.tmp, 'opendmarc-ignorehosts');
  // Not empty: one TEST-NET-1 address nobody uses, so that the file is read as a list.
  writeFileSync(ignore, '192.0.2.254\n');
  const conf = path.join(ctx.tmp, 'opendmarc-postfix.conf');
  writeFileSync(conf, [
    '# bench/milter-postfix.ts: DMARC after OpenDKIM (its A-R trusted), SPF checked here, nothing rejected, no reports;',
    '# the settings of bench/lib/milter-peers.ts plus IgnoreHosts (default 127.0.0.1, the benchmark\'s client)',
    `Socket local:${ctx.endpoint.path}`,
    `PidFile ${path.join(ctx.tmp, 'opendmarc.pid')}`,
    'Syslog false',
    `AuthservID ${OPENDMARC_AUTHSERV}`,
    `TrustedAuthservIDs ${OPENDKIM_AUTHSERV}`,
    'PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat',
    'SPFSelfValidate true',
    'SPFIgnoreResults true',
    'RejectFailures false',
    'FailureReports false',
    'IgnoreAuthenticatedClients true',
    `IgnoreHosts ${ignore}`,
    '',
  ].join('\n'));
  // As milter-peers.ts runs it: a private mount namespace with the test DNS in /etc/resolv.conf, /dev/log covered.
  const script = 'mount --bind "$0" /etc/resolv.conf || exit 70; if [ -e /dev/log ]; then mount --bind /dev/null /dev/log 2>/dev/null; fi; exec "$@"';
  const d = await startDaemon('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, ctx.resolvConf, OPENDMARC, '-f', '-c', conf],
    { log: path.join(ctx.tmp, 'opendmarc.log'), name: 'opendmarc', ...(ctx.env ? { env: ctx.env } : {}) });
  return { endpoint: ctx.endpoint, pid: d.pid, stop: () => d.stop(), logTail: () => d.logTail() };
}
