// The policy benchmark's test DNS, in its own process (forked by
// bench/policy.ts) so its CPU is measured apart from the targets'.
//
// test/support/dns-server.ts answers on 127.0.0.1:<random port>. The peers
// (pyspf via pydns, Mail::SPF and postfwd via Net::DNS) only know
// /etc/resolv.conf, which cannot carry a port, so here the same server is
// bound to port 53 of a loopback address no resolver uses (default
// 127.53.0.1; all of 127.0.0.0/8 is on `lo` without configuration). The
// peers run in a private mount namespace where a temp resolv.conf naming that
// address is bind-mounted over /etc/resolv.conf; the host's resolver config
// is never touched. mailwarden is pointed at the same address (dns.servers),
// so every target's DNS takes the same path.
//
// startDnsServer has no host/port options, so while it starts, bind() and
// listen() of this process are redirected from 127.0.0.1:0 to HOST:53. (A
// relay from HOST:53 to the random port worked too, but doubled the DNS
// server's CPU per query, which the DNS-heavy peers pay for on a small host.)
import dgram from 'node:dgram';
import net from 'node:net';
import { startDnsServer, type TestDnsServer, type Zones } from '../../test/support/dns-server.ts';
import type { DnsStats, FromDns, ToDns } from './policy-types.ts';

let server: TestDnsServer | undefined;
let dnsblZones: string[] = [];
let problemsReported = 0;

/** startDnsServer, with its sockets on host:53 instead of 127.0.0.1:<random>. */
async function startOnPort53(zones: Zones, host: string, ttl: number): Promise<TestDnsServer> {
  const bind = dgram.Socket.prototype.bind;
  const listen = net.Server.prototype.listen;
  dgram.Socket.prototype.bind = function (this: dgram.Socket, ...args: unknown[]) {
    const o = args[0] as dgram.BindOptions | undefined;
    if (o && typeof o === 'object' && o.address === '127.0.0.1' && o.port === 0) args[0] = { ...o, address: host, port: 53 };
    return (bind as (...a: unknown[]) => dgram.Socket).apply(this, args);
  } as typeof bind;
  net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
    const o = args[0] as net.ListenOptions | undefined;
    if (o && typeof o === 'object' && o.host === '127.0.0.1' && o.port === 53) args[0] = { ...o, host };
    return (listen as (...a: unknown[]) => net.Server).apply(this, args);
  } as typeof listen;
  try {
    const server = await startDnsServer(zones, { defaultTtl: ttl });
    if (server.port !== 53) throw new Error(`test DNS came up on port ${server.port}, not 53`);
    return server;
  } finally {
    dgram.Socket.prototype.bind = bind;
    net.Server.prototype.listen = listen;
  }
}

/** Query counts since the last call (the log is cleared, so a long benchmark does not pile it up). */
function stats(): DnsStats {
  const byType: Record<string, number> = {};
  const byKind = { spf: 0, dnsbl: 0, ptr: 0, other: 0 };
  const outcomes: Record<string, number> = {};
  const log = server!.queries;
  for (const q of log) {
    byType[q.type] = (byType[q.type] ?? 0) + 1;
    outcomes[q.outcome] = (outcomes[q.outcome] ?? 0) + 1;
    const name = q.name.toLowerCase();
    if (dnsblZones.some((z) => name.endsWith(`.${z}`))) byKind.dnsbl++;
    else if (q.type === 'PTR') byKind.ptr++;
    else if (q.type === 'TXT' || q.type === 'SPF') byKind.spf++;
    else byKind.other++;
  }
  const total = log.length;
  const problems = server!.problems.slice(problemsReported);
  problemsReported = server!.problems.length;
  server!.clearLog();
  return { total, byType, byKind, outcomes, problems };
}

process.on('message', (msg: ToDns) => {
  const reply = (m: FromDns) => process.send!(m);
  void (async () => {
    try {
      if (msg.type === 'start') {
        dnsblZones = msg.dnsblZones.map((z) => z.toLowerCase());
        server = await startOnPort53(msg.zones as Zones, msg.host, msg.ttl);
        reply({ type: 'ready', id: msg.id, address: `${msg.host}:53` });
      } else if (msg.type === 'stats') {
        reply({ type: 'stats', id: msg.id, stats: stats() });
      }
    } catch (err) {
      reply({ type: 'error', id: msg.id, message: (err as Error).message });
    }
  })();
});
process.on('disconnect', () => process.exit(0));
