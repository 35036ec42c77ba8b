// The raw-query fallback against real DNS servers on loopback: names c-ares
// refuses (EBADNAME for "+", "=", ":", space, ...) asked through createResolver
// give the same answers, codes and deadlines as the c-ares path; a scripted
// server checks the anti-spoofing rules and the TCP framing.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { evaluateSpf } from '../../src/checks/spf.ts';
import { cachedResolver } from '../../src/dns/cache.ts';
import { parseServerAddress, rawQuery } from '../../src/dns/raw-query.ts';
import { createResolver, DnsError, DNS_RR_TYPES, type DnsRrType, type NodeDnsResolver } from '../../src/dns/resolver.ts';
import { decodeMessage, QTYPE, takeTcpFrame, tcpFrame } from '../../src/dns/wire.ts';
import { startDnsServer, type TestDnsServer, type ZoneName, type Zones } from '../support/dns-server.ts';

/** The same data under a name c-ares asks and under one it refuses. */
const SAME: ZoneName = {
  A: ['192.0.2.1', { data: '192.0.2.2', ttl: 42 }],
  AAAA: ['2001:db8::1', '::ffff:192.0.2.9', '::192.0.2.10', '2001:db8:0:1:0:0:0:0', '1:0:0:1:0:0:1:1', 'fe80::1:0:0:0'],
  MX: [
    [20, 'mx2.same.test'],
    [10, 'mx1.same.test'],
  ],
  TXT: ['v=spf1 -all', ['chunk1', 'chunk2', ''], 'caf\xe9 na\xefve', 'x'.repeat(600)],
  PTR: ['host.same.test'],
  NS: ['ns1.same.test', 'ns2.same.test'],
  ttl: { TXT: 60 },
};

const ZONES: Zones = {
  'same.test': SAME,
  'sa+me.test': SAME,
  'alias.test': { CNAME: 'same.test' },
  'ali=as.test': { CNAME: 'sa+me.test' },
  'loop+1.test': { CNAME: 'loop+2.test' },
  'loop+2.test': { CNAME: 'loop+1.test' },
  'John+Tag._spf.test': { A: ['127.0.0.2'], TXT: ['plus'] },
  'a=b.test': { A: ['192.0.2.20'] },
  'foo:bar/baz.example.com': { A: ['192.0.2.21'], MX: [[5, 'mx:1.example.com']] },
  'mx:1.example.com': { A: ['192.0.2.22'] },
  'sp ace.test': { TXT: ['space'], AAAA: ['2001:db8::20'] },
  'nodata+.test': { A: ['192.0.2.30'] },
  'servfail+.test': { SERVFAIL: true },
  'refused+.test': { REFUSED: true },
  'timeout+.test': { TIMEOUT: true },
  'slow+.test': { A: ['192.0.2.31'], delayMs: 150 },
  'tc+.test': { A: ['192.0.2.32'], truncate: true },
  'big+.test': { TXT: Array.from({ length: 20 }, (_, i) => `record-${i}-${'y'.repeat(80)}`) },
  // SPF: exists: with the sender's local part (RFC 7208 §5.7, §7).
  'sender.test': { TXT: ['v=spf1 exists:%{l}._spf.test -all'] },
  'macro.test': { TXT: ['v=spf1 a:%{l}.%{d2} -all'] },
  'x%y z.macro.test': { A: ['192.0.2.1'] },
};

const isError = (code: string, temporary?: boolean) => (err: unknown) =>
  err instanceof DnsError && err.code === code && (temporary === undefined || err.temporary === temporary);

async function timed<T>(p: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const start = performance.now();
  try {
    const value = await p;
    return { ms: performance.now() - start, value };
  } catch (error) {
    return { ms: performance.now() - start, error };
  }
}

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

let server: TestDnsServer;
let r: NodeDnsResolver;

before(async () => {
  server = await startDnsServer(ZONES);
  r = createResolver({ servers: [server.address], timeoutMs: 300 });
});
after(async () => {
  await server.stop();
});

describe('names c-ares refuses, asked raw', () => {
  it('c-ares still refuses them (otherwise this file tests nothing)', async () => {
    const { Resolver } = await import('node:dns/promises');
    const plain = new Resolver();
    plain.setServers([server.address]);
    for (const name of ['John+Tag._spf.test', 'a=b.test', 'foo:bar/baz.example.com', 'sp ace.test']) {
      await assert.rejects(plain.resolve4(name), { code: 'EBADNAME' }, name);
    }
  });

  it('TXT, A, AAAA and MX for names with + = : / and a space; the server sees the name byte for byte', async () => {
    server.clearLog();
    assert.deepEqual(await r('John+Tag._spf.test', 'TXT'), [['plus']]);
    assert.deepEqual(await r('john+tag._spf.test', 'A'), ['127.0.0.2']);
    assert.deepEqual(await r('a=b.test.', 'A'), ['192.0.2.20']);
    assert.deepEqual(await r('foo:bar/baz.example.com', 'A'), ['192.0.2.21']);
    assert.deepEqual(await r('foo:bar/baz.example.com', 'MX'), [{ exchange: 'mx:1.example.com', priority: 5 }]);
    assert.deepEqual(await r('mx:1.example.com', 'A'), ['192.0.2.22'], 'an MX target from the raw path can be asked again');
    assert.deepEqual(await r('sp ace.test', 'TXT'), [['space']]);
    assert.deepEqual(await r('sp ace.test', 'AAAA'), ['2001:db8::20']);
    assert.deepEqual(
      server.queries.map((q) => `${q.type} ${q.name} ${q.transport}`),
      [
        'TXT John+Tag._spf.test udp',
        'A john+tag._spf.test udp',
        'A a=b.test udp',
        'A foo:bar/baz.example.com udp',
        'MX foo:bar/baz.example.com udp',
        'A mx:1.example.com udp',
        'TXT sp ace.test udp',
        'AAAA sp ace.test udp',
      ],
    );
  });

  it('the same answers (and A/AAAA TTLs) as c-ares gives for the same data, for every record type', async () => {
    for (const type of DNS_RR_TYPES.filter((t): t is Exclude<DnsRrType, 'SPF' | 'CNAME'> => t !== 'SPF' && t !== 'CNAME')) {
      const viaCares = await r.query('same.test', type);
      const viaRaw = await r.query('sa+me.test', type);
      assert.deepEqual(viaRaw.value, viaCares.value, type);
      if (type === 'A' || type === 'AAAA') assert.equal(viaRaw.ttlS, viaCares.ttlS, `${type} TTL`);
    }
    assert.equal((await r.query('sa+me.test', 'A')).ttlS, 42);
    // TXT kept as the record's strings: the 600-octet one arrives in 255-octet chunks, Latin-1 as node:dns decodes it.
    const txt = (await r('sa+me.test', 'TXT')) as string[][];
    assert.deepEqual(txt[1], ['chunk1', 'chunk2', '']);
    assert.deepEqual(txt[2], ['caf\xe9 na\xefve']);
    assert.deepEqual(txt[3]!.map((s) => s.length), [255, 255, 90]);
    // Through a CNAME: the server puts the chain in the answer; both paths give the target's records.
    assert.deepEqual(await r('ali=as.test', 'A'), await r('alias.test', 'A'));
    assert.deepEqual(await r('ali=as.test', 'CNAME'), ['sa+me.test']);
    assert.deepEqual(await r('alias.test', 'CNAME'), ['same.test']);
  });

  it('a CNAME loop is NODATA', async () => {
    await assert.rejects(r('loop+1.test', 'A'), isError('ENODATA', false));
  });

  it('NXDOMAIN -> ENOTFOUND, NODATA -> ENODATA, SERVFAIL -> ESERVFAIL, REFUSED -> EREFUSED, with the temporary flag', async () => {
    await assert.rejects(r('nope+.test', 'A'), isError('ENOTFOUND', false));
    await assert.rejects(r('nodata+.test', 'TXT'), isError('ENODATA', false));
    await assert.rejects(r('servfail+.test', 'TXT'), isError('ESERVFAIL', true));
    await assert.rejects(r('refused+.test', 'MX'), isError('EREFUSED', true));
    await assert.rejects(r('sa+me.test', 'SPF'), isError('ENOTIMP', false));
    const err = await r('nope+.test', 'TXT').catch((e: unknown) => e);
    assert.ok(err instanceof DnsError && err.hostname === 'nope+.test' && err.rrtype === 'TXT', String(err));
  });

  it('names DNS cannot carry stay EBADNAME, and nothing is sent', async () => {
    const l63 = 'l'.repeat(63);
    const names = ['a..b+.test', 'x+..', '.+x.test', `${'x'.repeat(64)}+.test`, `${l63}.${l63}.${l63}.${'z'.repeat(61)}+`];
    const before = server.queries.length;
    for (const name of names) await assert.rejects(r(name, 'A'), isError('EBADNAME', false), name);
    // (A late query of an earlier test may still arrive: look for these names only.)
    assert.deepEqual(server.queries.slice(before).filter((q) => q.name.includes('+')), []);
  });

  it('fails with ETIMEOUT at timeoutMs, asking again within the budget', async () => {
    for (const [timeoutMs, tries] of [
      [300, 1],
      [400, 2],
    ] as const) {
      const res = createResolver({ servers: [server.address], timeoutMs, tries });
      server.clearLog();
      const t = await timed(res('timeout+.test', 'TXT'));
      assert.ok(isError('ETIMEOUT', true)(t.error), String(t.error));
      assert.ok(t.ms >= timeoutMs - 30 && t.ms <= timeoutMs + 100, `${timeoutMs} ms: took ${t.ms.toFixed(0)} ms`);
      const sent = server.count('timeout+.test');
      assert.ok(sent >= 2 && sent <= 2 * tries + 1, `${sent} queries`);
    }
  });

  it('an answer later than one try still counts (earlier tries keep listening)', async () => {
    const t = await timed(r('slow+.test', 'A'));
    assert.deepEqual(t.value, ['192.0.2.31'], String(t.error));
    assert.ok(t.ms >= 140 && t.ms < 300, `${t.ms.toFixed(0)} ms`);
  });

  it('a truncated UDP answer is asked again over TCP (forced TC, and an answer over 1232 octets)', async () => {
    // The previous test's last try may still arrive after it ended: look at this test's names only.
    const log = (name: string): string[] => server.queries.filter((q) => q.name === name).map((q) => `${q.transport} ${q.outcome}`);
    assert.deepEqual(await r('tc+.test', 'A'), ['192.0.2.32']);
    assert.deepEqual(log('tc+.test'), ['udp truncated', 'tcp answer']);
    const big = (await r('big+.test', 'TXT')) as string[][];
    assert.equal(big.length, 20);
    assert.deepEqual(log('big+.test'), ['udp truncated', 'tcp answer']);
  });

  it('fails over to the next server: at once on SERVFAIL, after one try on silence', async () => {
    await using bad = await startDnsServer({ 'sa+me.test': { SERVFAIL: true }, 'to+.test': { TIMEOUT: true } });
    await using good = await startDnsServer({ 'sa+me.test': { A: ['192.0.2.77'] }, 'to+.test': { A: ['192.0.2.78'] } });
    const res = createResolver({ servers: [bad.address, good.address], timeoutMs: 400 });
    const s = await timed(res('sa+me.test', 'A'));
    assert.deepEqual(s.value, ['192.0.2.77'], String(s.error));
    assert.ok(s.ms < 50, `${s.ms.toFixed(0)} ms`);
    const t = await timed(res('to+.test', 'A'));
    assert.deepEqual(t.value, ['192.0.2.78'], String(t.error));
    assert.ok(t.ms >= 90 && t.ms < 200, `${t.ms.toFixed(0)} ms (one try is 100 ms)`);
    assert.equal(bad.count('to+.test'), 1);
  });

  it('a closed port: ECONNREFUSED, as c-ares says for the same server', async () => {
    const res = createResolver({ servers: [`127.0.0.1:${await freePort()}`], timeoutMs: 300 });
    const raw = await timed(res('a=b.test', 'A'));
    assert.ok(isError('ECONNREFUSED', true)(raw.error), String(raw.error));
    assert.ok(raw.ms < 100, `${raw.ms.toFixed(0)} ms`);
    await assert.rejects(res('plain.test', 'A'), isError('ECONNREFUSED', true));
  });

  it('cancel() ends raw lookups in flight with ECANCELLED', async () => {
    const res = createResolver({ servers: [server.address], timeoutMs: 2000 });
    const p = timed(res('timeout+.test', 'A'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    res.cancel();
    const t = await p;
    assert.ok(isError('ECANCELLED')(t.error), String(t.error));
    assert.ok(t.ms < 200, `${t.ms.toFixed(0)} ms`);
    assert.deepEqual(await res('a=b.test', 'A'), ['192.0.2.20'], 'the resolver still works after cancel()');
  });
});

describe('SPF with a sender local part c-ares refuses', () => {
  it('exists:%{l}._spf.test passes for john+tag@sender.test (was permerror), fails for another local part', async () => {
    const cached = cachedResolver(r, { maxEntries: 100, minTtlS: 0, maxTtlS: 3600, negativeTtlS: 60 });
    const input = (sender: string) => ({ sender, clientIp: '192.0.2.1', helo: 'mail.sender.test', receiver: 'mx.test.example' });
    const pass = await evaluateSpf(input('John+Tag@sender.test'), cached);
    assert.equal(pass.result, 'pass', `${pass.comment} ${pass.problem ?? ''}`);
    assert.equal(pass.lookups, 1);
    const fail = await evaluateSpf(input('john+other@sender.test'), cached);
    assert.equal(fail.result, 'fail', `${fail.comment} ${fail.problem ?? ''}`);
    assert.equal(fail.voidLookups, 1);
    // A space and a percent sign in the expanded name.
    const macro = await evaluateSpf(input('x%y z@macro.test'), cached);
    assert.equal(macro.result, 'pass', `${macro.comment} ${macro.problem ?? ''}`);
  });
});

// ---------------------------------------------------------------------------
// A scripted server: answers each UDP query with whatever the test says, from
// its own socket or another one; over TCP it writes the answer in pieces.

type Script = (query: Buffer, send: (msg: Buffer, from?: dgram.Socket) => void, others: dgram.Socket[]) => void;

interface Scripted {
  address: string;
  /** Source port and ID of every UDP query received. */
  seen: Array<{ port: number; id: number }>;
  stop(): Promise<void>;
}

async function startScripted(host: '127.0.0.1' | '::1', script: Script, tcpAnswer?: (query: Buffer) => Buffer[]): Promise<Scripted> {
  const type = host === '::1' ? 'udp6' : 'udp4';
  const bind = (s: dgram.Socket): Promise<void> => new Promise((resolve) => s.bind(0, host, () => resolve()));
  const udp = dgram.createSocket(type);
  const other = dgram.createSocket(type);
  await Promise.all([bind(udp), bind(other)]);
  const port = udp.address().port;
  const seen: Scripted['seen'] = [];
  let stopped = false;
  udp.on('message', (q, rinfo) => {
    seen.push({ port: rinfo.port, id: q.readUInt16BE(0) });
    script(q, (m, from = udp) => !stopped && from.send(m, rinfo.port, rinfo.address), [other]);
  });
  const tcp = net.createServer((sock) => {
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', async (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const frame = takeTcpFrame(buf);
      if (!frame || !tcpAnswer) return;
      for (const piece of tcpAnswer(frame.message)) {
        sock.write(piece);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    });
  });
  await new Promise<void>((resolve) => tcp.listen(port, host, () => resolve()));
  return {
    address: host === '::1' ? `[::1]:${port}` : `${host}:${port}`,
    seen,
    stop: async () => {
      stopped = true;
      await Promise.all([new Promise<void>((resolve) => udp.close(() => resolve())), new Promise<void>((resolve) => other.close(() => resolve()))]);
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    },
  };
}

/** A response to `query`: its question echoed, A records for it, optional tweaks. */
function respond(query: Buffer, ips: string[], opts: { id?: number; flags?: number; qname?: string } = {}): Buffer {
  const q = decodeMessage(query);
  const qname = q.questions[0]!.name;
  const qEnd = 12 + qname.length + 4;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(opts.id ?? q.id, 0);
  header.writeUInt16BE(opts.flags ?? 0x8180, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(ips.length, 6);
  let question = query.subarray(12, qEnd);
  if (opts.qname !== undefined) {
    const labels = opts.qname.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
    question = Buffer.concat([...labels, Buffer.from([0]), query.subarray(qEnd - 4, qEnd)]);
  }
  const answers = ips.map((ip) => Buffer.concat([Buffer.from([0xc0, 12, 0, QTYPE.A, 0, 1, 0, 0, 0, 60, 0, 4]), Buffer.from(ip.split('.').map(Number))]));
  return Buffer.concat([header, question, ...answers]);
}

describe('anti-spoofing and transport details (scripted server)', () => {
  it('ignores answers from another port, with another ID, for another question, and garbage; takes the real one', async () => {
    const s = await startScripted('127.0.0.1', (q, send, [other]) => {
      send(respond(q, ['192.0.2.66']), other); // right ID and question, wrong source port
      send(respond(q, ['192.0.2.67'], { id: q.readUInt16BE(0) ^ 1 }));
      send(respond(q, ['192.0.2.68'], { qname: 'other+.test' }));
      send(respond(q, ['192.0.2.69'], { flags: 0x0100 })); // not a response
      send(Buffer.from('garbage'));
      setTimeout(() => send(respond(q, ['192.0.2.1'])), 20);
    });
    try {
      const res = createResolver({ servers: [s.address], timeoutMs: 500 });
      assert.deepEqual(await res('spoof+.test', 'A'), ['192.0.2.1']);
    } finally {
      await s.stop();
    }
  });

  it('spoofed answers alone: ETIMEOUT, never their data', async () => {
    const s = await startScripted('127.0.0.1', (q, send, [other]) => {
      send(respond(q, ['192.0.2.66']), other);
      send(respond(q, ['192.0.2.67'], { id: q.readUInt16BE(0) ^ 0x8000 }));
    });
    try {
      await assert.rejects(rawQuery('spoof+.test', 'A', { servers: [s.address], timeoutMs: 200 }), isError('ETIMEOUT', true));
    } finally {
      await s.stop();
    }
  });

  it('a random ID and a fresh source port for every query', async () => {
    const s = await startScripted('127.0.0.1', (q, send) => send(respond(q, ['192.0.2.1'])));
    try {
      for (let i = 0; i < 20; i++) await rawQuery('id+.test', 'A', { servers: [s.address], timeoutMs: 300 });
      assert.equal(s.seen.length, 20);
      assert.ok(new Set(s.seen.map((x) => x.id)).size >= 18, JSON.stringify(s.seen));
      assert.ok(new Set(s.seen.map((x) => x.port)).size >= 18, JSON.stringify(s.seen));
    } finally {
      await s.stop();
    }
  });

  it('a server that answers FORMERR to EDNS0 is asked again without it', async () => {
    const s = await startScripted('127.0.0.1', (q, send) => send(q.readUInt16BE(10) > 0 ? respond(q, [], { flags: 0x8181 }) : respond(q, ['192.0.2.9'])));
    try {
      assert.deepEqual((await rawQuery('old+.test', 'A', { servers: [s.address], timeoutMs: 300 })).value, ['192.0.2.9']);
      assert.equal(s.seen.length, 2);
    } finally {
      await s.stop();
    }
  });

  it('server addresses in the forms getServers() gives', () => {
    assert.deepEqual(parseServerAddress('192.0.2.53'), { host: '192.0.2.53', port: 53 });
    assert.deepEqual(parseServerAddress('192.0.2.53:5353'), { host: '192.0.2.53', port: 5353 });
    assert.deepEqual(parseServerAddress('2001:db8::53'), { host: '2001:db8::53', port: 53 });
    assert.deepEqual(parseServerAddress('[2001:db8::53]:5353'), { host: '2001:db8::53', port: 5353 });
    for (const bad of ['ns.example', '192.0.2.53:0', '[192.0.2.53]:53', '']) assert.throws(() => parseServerAddress(bad), /DNS server/, bad);
  });

  it('over TCP: an answer arriving in pieces; a TCP answer to another question is EBADRESP', async () => {
    let mismatch = false;
    const s = await startScripted(
      '::1',
      (q, send) => send(respond(q, [], { flags: 0x8380 })), // TC
      (q) => {
        const framed = tcpFrame(respond(q, ['192.0.2.5', '192.0.2.6'], mismatch ? { id: q.readUInt16BE(0) ^ 1 } : {}));
        return [framed.subarray(0, 1), framed.subarray(1, 15), framed.subarray(15)];
      },
    );
    try {
      assert.deepEqual((await rawQuery('tcp+.test', 'A', { servers: [s.address], timeoutMs: 500 })).value, ['192.0.2.5', '192.0.2.6']);
      mismatch = true;
      await assert.rejects(rawQuery('tcp+.test', 'A', { servers: [s.address], timeoutMs: 500, tries: 1 }), isError('EBADRESP', true));
    } finally {
      await s.stop();
    }
  });
});
