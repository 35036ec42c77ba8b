// The policy servers bench/policy.ts measures: how each one is configured and
// started. Every target runs inside a private mount namespace where a temp
// resolv.conf (naming the benchmark's test DNS on port 53) is bind-mounted over
// /etc/resolv.conf, so whatever a peer resolves goes to the test DNS and
// nothing reaches the host's resolver; /dev/log, if the host has one, is
// covered with /dev/null there so peers that always syslog (policyd-spf-perl)
// do not flood the host's journal. All listen on 127.0.0.1 high ports and
// keep their state in the benchmark's temp dir.
import { chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive, onCleanup, sleep, startDaemon, type Daemon } from './proc.ts';
import { BL, DNSBL_SITES, DNSBL_THRESHOLD, MYHOSTNAME, ZEN } from './policy-data.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

export const TARGETS = ['trivial', 'mailwarden', 'policyd-spf-python', 'policyd-spf-perl', 'postfwd', 'postgrey'] as const;
export type TargetName = (typeof TARGETS)[number];
export const PEERS: readonly TargetName[] = ['policyd-spf-python', 'policyd-spf-perl', 'postfwd', 'postgrey'];

export interface TargetInfo {
  readonly label: string;
  /** What it does with a request, for the report. */
  readonly work: string;
  /** Debian package (peers), for the "missing" message. */
  readonly pkg?: string;
  /** A file that must exist for the target to run. */
  readonly needs?: string;
}

export const TARGET_INFO: Readonly<Record<TargetName, TargetInfo>> = {
  trivial: { label: 'trivial (always DUNNO)', work: 'nothing: the protocol ceiling for a Node server' },
  mailwarden: { label: 'mailwarden', work: 'recipient check, SPF (HELO + MAIL FROM, annotate every result), DNSBL (zen*3 + bl*2, threshold 3), FCrDNS/HELO (warn); DNS cache' },
  'policyd-spf-python': {
    label: 'policyd-spf (python, spawn)', pkg: 'postfix-policyd-spf-python', needs: '/usr/bin/policyd-spf',
    work: 'SPF HELO + MAIL FROM, header only (HELO_reject/Mail_From_reject = False); one process per connection; per-instance cache',
  },
  'policyd-spf-perl': {
    label: 'policyd-spf-perl (spawn)', pkg: 'postfix-policyd-spf-perl', needs: '/usr/sbin/postfix-policyd-spf-perl',
    work: 'SPF HELO + MAIL FROM (550 on fail: not configurable); one process per connection; per-instance cache',
  },
  postfwd: {
    label: 'postfwd2 (RBL rules)', pkg: 'postfwd', needs: '/usr/sbin/postfwd2',
    work: 'DNSBL only: zen score 3 + bl score 2, REJECT at 3 (same lists and weights as mailwarden); request and DNS caches',
  },
  postgrey: {
    label: 'postgrey (greylisting)', pkg: 'postgrey', needs: '/usr/sbin/postgrey',
    work: 'greylisting only (BerkeleyDB, --delay=1, auto-whitelist after 5), no DNS',
  },
};

/** A started target: where to connect and whose CPU to count. */
export interface RunningTarget {
  readonly host: string;
  readonly port: number;
  /** Root of the process tree whose CPU is the server's. */
  readonly cpuRoot: number;
  readonly log: string;
  readonly note?: string;
  stop(): Promise<void>;
  logTail(): string;
}

export interface TargetContext {
  readonly tmp: string;
  readonly port: number;
  /** host:53 of the test DNS every target resolves through. */
  readonly dnsServer: string;
  /** The resolv.conf bind-mounted over /etc/resolv.conf for the target. */
  readonly resolvConf: string;
  /** The mailwarden tree under test (src/, bin/, node_modules). */
  readonly mwRoot: string;
  readonly directoryFile: string;
  readonly logLevel: string;
  readonly env?: NodeJS.ProcessEnv;
}

/** `unshare -m`: a private mount namespace with our resolv.conf (and /dev/log silenced), then exec the command. */
function inNamespace(resolvConf: string, command: string, args: readonly string[]): [string, string[]] {
  const script = 'mount --bind "$0" /etc/resolv.conf || exit 70; if [ -e /dev/log ]; then mount --bind /dev/null /dev/log 2>/dev/null; fi; exec "$@"';
  return ['unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, resolvConf, command, ...args]];
}

async function daemonTarget(ctx: TargetContext, name: string, command: string, args: readonly string[], note?: string): Promise<RunningTarget> {
  const log = path.join(ctx.tmp, `${name}.log`);
  const [cmd, full] = inNamespace(ctx.resolvConf, command, args);
  const d: Daemon = await startDaemon(cmd, full, { log, name, ...(ctx.env ? { env: ctx.env } : {}) });
  return {
    host: '127.0.0.1',
    port: ctx.port,
    cpuRoot: d.pid,
    log,
    ...(note ? { note } : {}),
    stop: () => d.stop(),
    logTail: () => d.logTail(),
  };
}

export function writeResolvConf(file: string, server: string): void {
  const [host] = server.split(':');
  writeFileSync(file, `# bench/policy.ts: every lookup goes to the benchmark's test DNS (${server})\nnameserver ${host}\noptions timeout:5 attempts:2\n`);
}

export function mailwardenConfig(ctx: TargetContext): string {
  return [
    '# Generated by bench/policy.ts',
    'directory:',
    '  backend: yaml',
    `  path: ${ctx.directoryFile}`,
    'recipient_delimiter: "+"',
    'log:',
    `  level: ${ctx.logLevel}`,
    'dns:',
    `  servers: ["${ctx.dnsServer}"]`,
    '  timeout: 5s',
    'policy:',
    `  listen: inet:127.0.0.1:${ctx.port}`,
    `  myhostname: ${MYHOSTNAME}`,
    '  recipients:',
    '    reject_unknown: true',
    '  spf:',
    '    enabled: true',
    '    helo: true',
    '    on_fail: annotate',
    '    on_softfail: annotate',
    '    on_permerror: annotate',
    '    on_temperror: annotate',
    '  dnsbl:',
    `    sites: [${DNSBL_SITES.map((s) => JSON.stringify(s)).join(', ')}]`,
    `    threshold: ${DNSBL_THRESHOLD}`,
    '    action: reject',
    '  fcrdns:',
    '    action: warn',
    '  helo:',
    '    action: warn',
    '',
  ].join('\n');
}

export async function startTarget(name: TargetName, ctx: TargetContext): Promise<RunningTarget> {
  const node = process.execPath;
  switch (name) {
    case 'trivial':
      return daemonTarget(ctx, name, node, [path.join(HERE, 'policy-trivial.ts'), '127.0.0.1', String(ctx.port)]);

    case 'mailwarden': {
      const config = path.join(ctx.tmp, 'mailwarden.yaml');
      writeFileSync(config, mailwardenConfig(ctx));
      return daemonTarget(ctx, name, path.join(ctx.mwRoot, 'bin/mailwarden'), ['--config', config, 'serve']);
    }

    case 'policyd-spf-python': {
      // The shipped config with rejection turned off, so every result becomes a Received-SPF header as with mailwarden.
      const conf = path.join(ctx.tmp, 'policyd-spf.conf');
      writeFileSync(conf, [
        '# bench/policy.ts: Debian defaults, but never reject (header only), no debug logging',
        'debugLevel = 0',
        'TestOnly = 1',
        'HELO_reject = False',
        'Mail_From_reject = False',
        'PermError_reject = False',
        'TempError_Defer = False',
        'skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1',
        'Hide_Receiver = Yes',
        '',
      ].join('\n'));
      return daemonTarget(ctx, name, node, [path.join(HERE, 'policy-spawn.ts'), '127.0.0.1', String(ctx.port), '/usr/bin/policyd-spf', conf],
        'one process per connection (spawn(8) emulation); start-up is paid per connection, before the measured window');
    }

    case 'policyd-spf-perl':
      return daemonTarget(ctx, name, node, [path.join(HERE, 'policy-spawn.ts'), '127.0.0.1', String(ctx.port), '/usr/sbin/postfix-policyd-spf-perl'],
        'one process per connection (spawn(8) emulation); start-up is paid per connection, before the measured window');

    case 'postgrey': {
      const db = path.join(ctx.tmp, 'postgrey-db');
      mkdirSync(db, { recursive: true });
      const uid = Number(execFileSync('id', ['-u', 'postgrey']).toString().trim());
      const gid = Number(execFileSync('id', ['-g', 'postgrey']).toString().trim());
      chownSync(db, uid, gid);
      return daemonTarget(ctx, name, '/usr/sbin/postgrey', [
        `--inet=127.0.0.1:${ctx.port}`, `--dbdir=${db}`, '--delay=1', '--auto-whitelist-clients=5', `--hostname=${MYHOSTNAME}`, '--quiet',
      ]);
    }

    case 'postfwd': {
      // postfwd2 always daemonizes (Net::Server::Daemonize). A small shell sitter
      // stays in the foreground under our watchdog: it starts postfwd2, follows
      // the master's pid file, and TERMs the master (which TERMs its process
      // group) when asked to stop.
      const dir = path.join(ctx.tmp, 'postfwd');
      mkdirSync(dir, { recursive: true });
      const nobody = Number(execFileSync('id', ['-u', 'nobody']).toString().trim());
      const nogroup = Number(execFileSync('id', ['-g', 'nobody']).toString().trim());
      chownSync(dir, nobody, nogroup);
      const rules = path.join(dir, 'postfwd.cf');
      writeFileSync(rules, [
        '# bench/policy.ts: the DNSBL part of mailwarden\'s policy, postscreen-style weights',
        `id=BL ; rbl=${BL}/^127\\.0\\.0\\.2$/300 ; action=score(2)`,
        `id=ZEN ; rbl=${ZEN}/^127\\.0\\.0\\.(\\d|1[01])$/300 ; action=score(3)`,
        '',
      ].join('\n'));
      const pidFile = path.join(dir, 'master.pid');
      const sitter = [
        'pidfile=$1; shift',
        '"$@" || exit $?',
        'i=0; while [ ! -s "$pidfile" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done',
        'pid=$(cat "$pidfile" 2>/dev/null)',
        '[ -n "$pid" ] || { echo "postfwd2 wrote no pid file"; exit 1; }',
        'echo "postfwd2 master pid $pid"',
        "trap 'kill -TERM $pid 2>/dev/null; n=0; while kill -0 $pid 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; kill -KILL -$pid 2>/dev/null; exit 0' TERM INT",
        'while kill -0 "$pid" 2>/dev/null; do sleep 1 & wait $!; done',
        'echo "postfwd2 master $pid is gone"; exit 1',
      ].join('\n');
      const t = await daemonTarget(ctx, name, 'sh', ['-c', sitter, 'postfwd-sitter', pidFile, '/usr/sbin/postfwd2',
        // postscreen_dnsbl_threshold: REJECT once the score reaches it (and replace postfwd's default 5.0 entry).
        '--file', rules, '--scores', `${DNSBL_THRESHOLD}=REJECT listed on DNS block lists`, '--scores', '5.0=REJECT listed on DNS block lists', '--interface', '127.0.0.1', '--port', String(ctx.port), '--proto', 'tcp',
        '--cache_socket', `unix::${path.join(dir, 'cache.sock')}`, '--pidfile', pidFile,
        '--user', 'nobody', '--group', 'nogroup', '--perfmon', '--noidlestats', '--summary', '0',
        '--min_servers', '10', '--max_servers', '100', '--dns_timeout', '5'], 'preforking Net::Server; the CPU column includes the cache daemon and master');
      // The master's process tree is what serves; it is not a child of the sitter (it daemonized).
      let pid = 0;
      for (let i = 0; i < 100 && !pid; i++) {
        if (existsSync(pidFile)) pid = Number(readFileSync(pidFile, 'utf8').trim()) || 0;
        if (!pid) await sleep(100);
      }
      if (!pid || !isAlive(pid)) throw new Error(`postfwd2 did not start:\n${t.logTail()}`);
      onCleanup('stop postfwd2 master', () => {
        try { process.kill(-pid, 'SIGTERM'); } catch { /* gone */ }
      });
      return { ...t, cpuRoot: pid };
    }
  }
}
