// Synthetic mail traffic for the policy benchmark: the DNS zones (SPF records,
// DNS block lists, PTR), the mailwarden directory the recipients live in, and
// a stream of RCPT-stage policy requests exactly as Postfix 3.7 sends them.
// Everything derives from one seed.
//
// Who sends (clients are the SMTP peers of our MX):
// - own:  a sender domain's own MTAs (ip4 / a+mx / mixed ip4+ip6+include SPF),
//         forward-confirmed PTR, HELO = their name (a third publish HELO SPF);
// - esp:  outbound IPs of three bulk-mail providers, reached through include
//         chains three levels deep (domain -> _spf.espN -> _netblocksK.espN);
// - fwd:  forwarders / mailing lists relaying other domains' mail (SPF fail
//         or softfail for strict domains, the classic forwarding breakage);
// - bot:  dynamic IPs sending spoofed or made-up senders, many of them on the
//         DNS block lists, half without a PTR, HELO literals and junk, more
//         unknown recipients (dictionary attacks).
import { prng } from './data.ts';
import type { StreamRequest } from './policy-types.ts';

export const ZEN = 'zen.example.test';
export const BL = 'bl.example.test';
/** mailwarden's DNSBL setting (postscreen_dnsbl_sites syntax) and its postfwd equivalent. */
export const DNSBL_SITES = [`${ZEN}=127.0.0.[2..11]*3`, `${BL}=127.0.0.2*2`] as const;
export const DNSBL_THRESHOLD = 3;
/** Our MX, as smtpd reports it in server_address. */
export const SERVER_ADDRESS = '192.0.2.25';
export const MYHOSTNAME = 'mx.bench.example';

const FIRST = ['anna', 'ben', 'clara', 'david', 'emma', 'felix', 'greta', 'hugo', 'ida', 'jonas', 'karla', 'leon', 'mia', 'noah',
  'olga', 'paul', 'rosa', 'sam', 'tina', 'vera', 'amir', 'bea', 'carlos', 'dana', 'erik', 'fatima', 'ivan', 'julia', 'lena', 'marco'];
const LAST = ['schmidt', 'mueller', 'meyer', 'weber', 'wagner', 'becker', 'koch', 'richter', 'klein', 'wolf', 'neumann', 'braun',
  'garcia', 'rossi', 'silva', 'novak', 'jensen', 'smith', 'jones', 'brown', 'taylor', 'dubois', 'moreau', 'yilmaz', 'nguyen'];
const WORDS = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'vandelay', 'wonka', 'stark', 'wayne', 'tyrell', 'cyberdyne',
  'soylent', 'oscorp', 'aperture', 'massive', 'gringotts', 'monarch', 'nakatomi', 'piedpiper', 'dunder', 'bluth', 'prestige',
  'sterling', 'krusty', 'duff'];
const SENDER_LOCALS = ['info', 'news', 'noreply', 'billing', 'support', 'team', 'hello', 'orders', 'alerts', 'jobs'];
const HOSTED = ['acme-corp.example', 'globex-mail.example', 'initech.example', 'hooli-mx.example'];

/** Zone data in test/support/dns-server.ts's shape (plain, so it can cross IPC). */
export type ZoneData = Record<string, Record<string, unknown>>;

type SpfKind = 'ip4' | 'ip4-soft' | 'a-mx' | 'esp' | 'mixed' | 'none' | 'parked' | 'permerror' | 'permerror-include' | 'temperror';

interface SenderDomain {
  readonly name: string;
  readonly spf: SpfKind;
  readonly esp?: number;
  readonly mtas: Client[];
}

type ClientKind = 'own' | 'esp' | 'fwd' | 'bot';

interface Client {
  readonly ip: string;
  readonly kind: ClientKind;
  /** PTR name, if the address has one. */
  readonly ptr?: string;
  /** The PTR name resolves back to the address (Postfix then reports it as client_name). */
  readonly fcrdns: boolean;
  readonly helo: string;
  readonly tls: boolean;
  zen?: string[];
  bl?: string[];
}

export interface PolicyDataset {
  readonly zones: ZoneData;
  readonly dnsblZones: readonly string[];
  readonly requests: readonly StreamRequest[];
  readonly messages: number;
  readonly hostedDomains: readonly string[];
  readonly mailboxes: readonly string[];
  readonly clients: number;
  readonly senderDomains: number;
  /** What the stream holds, for the report. */
  readonly mix: Readonly<Record<string, number>>;
  /** A few requests with known answers for the start-up probes. */
  readonly probes: {
    readonly unknownRecipient: string;
    readonly zenListed: string;
    readonly spfPass: string;
  };
}

export interface PolicyDataOptions {
  readonly seed: number;
  readonly messages: number;
}

/** Reverse-DNS owner name of an address (in-addr.arpa / nibble ip6.arpa). */
export function reverseName(ip: string, suffix?: string): string {
  if (ip.includes(':')) {
    const [head = '', tail = ''] = ip.split('::');
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    const nibbles = groups.map((g) => g.padStart(4, '0')).join('').split('').reverse().join('.');
    return `${nibbles}.${suffix ?? 'ip6.arpa'}`;
  }
  return `${ip.split('.').reverse().join('.')}.${suffix ?? 'in-addr.arpa'}`;
}

export function generatePolicyDataset(opts: PolicyDataOptions): PolicyDataset {
  const rnd = prng(opts.seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const zones: ZoneData = {};
  const add = (name: string, type: string, ...values: unknown[]) => {
    const entry = (zones[name.toLowerCase()] ??= {});
    entry[type] = [...((entry[type] as unknown[] | undefined) ?? []), ...values];
  };
  const clients: Client[] = [];
  const addClient = (c: Client) => {
    clients.push(c);
    if (c.ptr) {
      add(reverseName(c.ip), 'PTR', c.ptr);
      if (c.fcrdns) add(c.ptr, c.ip.includes(':') ? 'AAAA' : 'A', c.ip);
    }
    return c;
  };

  // --- recipients: the mailwarden directory ---
  const mailboxes: string[] = [];
  for (const domain of HOSTED) {
    const taken = new Set<string>();
    while (taken.size < 250) taken.add(`${pick(FIRST)}.${pick(LAST)}`);
    for (const local of taken) mailboxes.push(`${local}@${domain}`);
    add(domain, 'MX', [10, MYHOSTNAME]);
  }

  // --- three bulk-mail providers with include chains ---
  const espClients: Client[][] = [];
  for (let e = 1; e <= 3; e++) {
    const zone = `esp${e}.test`;
    add(`_spf.${zone}`, 'TXT', `v=spf1 include:_netblocks1.${zone} include:_netblocks2.${zone} include:_netblocks3.${zone} ~all`);
    add(`_netblocks1.${zone}`, 'TXT', `v=spf1 ${Array.from({ length: 8 }, (_, k) => `ip4:100.${64 + e}.${k * 16}.0/20`).join(' ')} ~all`);
    add(`_netblocks2.${zone}`, 'TXT', `v=spf1 ip4:198.19.${e}.0/25 ip6:2001:db8:e${e}::/48 ~all`);
    add(`_netblocks3.${zone}`, 'TXT', `v=spf1 ip4:198.19.${e}.128/25 ~all`);
    const list: Client[] = [];
    for (let k = 0; k < 12; k++) {
      const ip = `198.19.${e}.${k < 6 ? 10 + k : 140 + k}`;
      const ptr = `o${k + 1}.mailout.${zone}`;
      list.push(addClient({ ip, kind: 'esp', ptr, fcrdns: true, helo: ptr, tls: true }));
      add(ptr, 'TXT', `v=spf1 ip4:198.19.${e}.0/24 -all`);
    }
    espClients.push(list);
  }

  // --- 50 sender domains ---
  const kinds: SpfKind[] = [
    ...Array<SpfKind>(12).fill('ip4'), ...Array<SpfKind>(4).fill('ip4-soft'), ...Array<SpfKind>(6).fill('a-mx'),
    ...Array<SpfKind>(16).fill('esp'), ...Array<SpfKind>(4).fill('mixed'), ...Array<SpfKind>(5).fill('none'),
    'parked', 'permerror', 'permerror-include', 'temperror',
  ];
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  const senders: SenderDomain[] = kinds.map((spf, d) => {
    const name = `${WORDS[d % WORDS.length]}${d >= WORDS.length ? '-mail' : ''}.test`;
    const net = d + 1;
    const mtas: Client[] = [];
    const ownMta = (k: number, v6 = false): Client => {
      const ip = v6 ? `2001:db8:${net.toString(16)}::${(10 + k).toString(16)}` : `198.18.${net}.${10 + k}`;
      const ptr = `mta${k + 1}${v6 ? '-v6' : ''}.${name}`;
      const c = addClient({ ip, kind: 'own', ptr, fcrdns: true, helo: ptr, tls: rnd() < 0.9 });
      if (rnd() < 0.33) add(ptr, 'TXT', 'v=spf1 a -all');
      mtas.push(c);
      return c;
    };
    const esp = int(1, 3);
    switch (spf) {
      case 'ip4':
      case 'ip4-soft':
        ownMta(0);
        if (rnd() < 0.5) ownMta(1);
        add(name, 'TXT', `v=spf1 ip4:198.18.${net}.0/24 ${spf === 'ip4' ? '-all' : '~all'}`);
        add(name, 'MX', [10, `mta1.${name}`]);
        break;
      case 'a-mx': {
        const a = ownMta(0);
        const b = ownMta(1);
        add(name, 'MX', [10, `mx.${name}`]);
        add(`mx.${name}`, 'A', a.ip);
        add(`mail.${name}`, 'A', b.ip);
        add(name, 'TXT', `v=spf1 mx a:mail.${name} -all`);
        break;
      }
      case 'esp':
        if (rnd() < 0.4) {
          ownMta(0);
          add(name, 'TXT', `v=spf1 ip4:198.18.${net}.0/24 include:_spf.esp${esp}.test -all`);
        } else {
          add(name, 'TXT', `v=spf1 include:_spf.esp${esp}.test ~all`);
        }
        add(name, 'TXT', `google-site-verification=${d}x${opts.seed}`);
        break;
      case 'mixed':
        ownMta(0);
        ownMta(0, true);
        add(name, 'TXT', `v=spf1 ip4:198.18.${net}.0/24 ip6:2001:db8:${net.toString(16)}::/48 include:_spf.esp${esp}.test ~all`);
        break;
      case 'none':
        ownMta(0);
        if (rnd() < 0.5) add(name, 'TXT', `MS=ms${d}${opts.seed}`);
        else add(name, 'MX', [10, `mta1.${name}`]);
        break;
      case 'parked':
        add(name, 'TXT', 'v=spf1 -all');
        break;
      case 'permerror':
        ownMta(0);
        add(name, 'TXT', `v=spf1 ip4:198.18.${net}.0/24 -all`, 'v=spf1 a mx ~all');
        break;
      case 'permerror-include':
        ownMta(0);
        add(name, 'TXT', `v=spf1 ip4:198.18.${net}.0/24 include:_spf.gone-${d}.test -all`);
        break;
      case 'temperror':
        ownMta(0);
        zones[name] = { ...(zones[name] ?? {}), SERVFAIL: ['TXT'] };
        break;
    }
    return { name, spf, ...(spf === 'esp' || spf === 'mixed' ? { esp } : {}), mtas };
  });

  // --- forwarders and bots ---
  const fwd: Client[] = [];
  for (let k = 0; k < 10; k++) {
    const ptr = `relay${k + 1}.lists-${k % 3}.test`;
    fwd.push(addClient({ ip: `198.18.150.${10 + k}`, kind: 'fwd', ptr, fcrdns: true, helo: ptr, tls: rnd() < 0.7 }));
  }
  const bots: Client[] = [];
  const target = 200;
  for (let k = 0; clients.length < target; k++) {
    const ip = `198.18.${200 + (k % 40)}.${int(2, 254)}`;
    if (clients.some((c) => c.ip === ip)) continue;
    const r = rnd();
    const ptr = r < 0.5 ? `${ip.replaceAll('.', '-')}.dyn.isp${k % 4}.test` : undefined;
    const h = rnd();
    const helo = h < 0.4 ? `[${ip}]` : h < 0.7 ? `${pick(WORDS)}${int(1, 99)}` : `mail.${pick(senders).name}`;
    const bot = addClient({ ip, kind: 'bot', ...(ptr ? { ptr } : {}), fcrdns: false, helo, tls: rnd() < 0.2 });
    const z = rnd();
    if (z < 0.3) bot.zen = ['127.0.0.4'];
    else if (z < 0.45) bot.zen = ['127.0.0.11'];
    else if (z < 0.55) bot.zen = ['127.0.0.4', '127.0.0.10'];
    else if (z < 0.58) bot.zen = ['127.0.0.3'];
    if (rnd() < 0.4) bot.bl = ['127.0.0.2'];
    bots.push(bot);
  }
  // One ESP address on the SBL, one forwarder on bl only (score 2: below the threshold).
  espClients[1]![3]!.zen = ['127.0.0.2'];
  fwd[2]!.bl = ['127.0.0.2'];
  for (const c of clients) {
    if (c.zen) add(reverseName(c.ip, ZEN), 'A', ...c.zen);
    if (c.zen) add(reverseName(c.ip, ZEN), 'TXT', `https://www.example.test/query/ip/${c.ip}`);
    if (c.bl) add(reverseName(c.ip, BL), 'A', ...c.bl);
  }

  // --- the request stream ---
  const requests: StreamRequest[] = [];
  const mix: Record<string, number> = {};
  const count = (k: string) => (mix[k] = (mix[k] ?? 0) + 1);
  const withMtas = senders.filter((s) => s.mtas.length > 0);
  const espCustomers = [1, 2, 3].map((e) => senders.filter((s) => s.esp === e));
  let probeUnknown = '';
  let probeZen = '';
  let probePass = '';
  for (let m = 0; m < opts.messages; m++) {
    const r = rnd();
    let client: Client;
    let sender: string;
    let unknownShare = 0.08;
    if (r < 0.3) {
      const dom = pick(withMtas);
      client = pick(dom.mtas);
      sender = rnd() < 0.03 ? '' : `${pick(SENDER_LOCALS)}@${dom.name}`;
    } else if (r < 0.6) {
      const e = int(1, 3);
      client = pick(espClients[e - 1]!);
      const customers = espCustomers[e - 1]!;
      const dom = customers.length ? pick(customers) : pick(senders);
      sender = rnd() < 0.03 ? '' : `bounce-${int(1000, 9999)}@${dom.name}`;
    } else if (r < 0.65) {
      client = pick(fwd);
      sender = `${pick(FIRST)}@${pick(senders).name}`;
    } else {
      client = pick(bots);
      sender = rnd() < 0.75 ? `${pick(FIRST)}${int(1, 999)}@${pick(senders).name}` : `${pick(FIRST)}@${pick(WORDS)}${int(100, 999)}.test`;
      unknownShare = 0.3;
    }
    count(`client:${client.kind}`);
    if (client.zen) count('client:zen-listed');
    if (client.bl) count('client:bl-listed');
    if (client.ip.includes(':')) count('client:ipv6');
    if (sender === '') count('sender:null');
    const rn = rnd();
    const rcpts = rn < 0.7 ? 1 : rn < 0.9 ? 2 : 3;
    const port = int(1024, 65535);
    const size = client.kind === 'bot' && rnd() < 0.5 ? 0 : int(2_000, 250_000);
    const queueId = `${(0x4a000 + m).toString(16).toUpperCase()}${int(0x100, 0xfff).toString(16).toUpperCase()}`;
    for (let i = 0; i < rcpts; i++) {
      let recipient: string;
      const known = rnd() >= unknownShare;
      if (known) {
        recipient = pick(mailboxes);
        count('rcpt:known');
      } else {
        recipient = `${pick(FIRST)}${int(1, 99)}@${pick(HOSTED)}`;
        count('rcpt:unknown');
      }
      const attrs: Array<[string, string]> = [
        ['request', 'smtpd_access_policy'],
        ['protocol_state', 'RCPT'],
        ['protocol_name', 'ESMTP'],
        ['client_address', client.ip],
        ['client_name', client.fcrdns && client.ptr ? client.ptr : 'unknown'],
        ['client_port', String(port)],
        ['reverse_client_name', client.ptr ?? 'unknown'],
        ['server_address', SERVER_ADDRESS],
        ['server_port', '25'],
        ['helo_name', client.helo],
        ['sender', sender],
        ['recipient', recipient],
        ['recipient_count', '0'],
        // Postfix opens the queue file when the first recipient is accepted.
        ['queue_id', i === 0 ? '' : queueId],
        ['instance', ''],
        ['size', String(size)],
        ['etrn_domain', ''],
        ['stress', ''],
        ['sasl_method', ''],
        ['sasl_username', ''],
        ['sasl_sender', ''],
        ['ccert_subject', ''],
        ['ccert_issuer', ''],
        ['ccert_fingerprint', ''],
        ['ccert_pubkey_fingerprint', ''],
        ['encryption_protocol', client.tls ? 'TLSv1.3' : ''],
        ['encryption_cipher', client.tls ? 'TLS_AES_256_GCM_SHA384' : ''],
        ['encryption_keysize', client.tls ? '256' : '0'],
        ['policy_context', ''],
      ];
      const text = attrs.map(([k, v]) => `${k}=${v}\n`).join('');
      const cut = text.indexOf('instance=') + 'instance='.length;
      requests.push({ m, head: text.slice(0, cut), tail: `${text.slice(cut)}\n` });
      count('requests');
      const whole = `${text.slice(0, cut)}@@INSTANCE@@${text.slice(cut)}\n`;
      if (!probeUnknown && !known && !client.zen) probeUnknown = whole;
      if (!probeZen && client.zen) probeZen = whole;
      if (!probePass && i === 0 && known && client.kind === 'own' && sender !== '' && !client.zen && !client.ip.includes(':')) {
        const dom = senders.find((s) => sender.endsWith(`@${s.name}`));
        if (dom && (dom.spf === 'ip4' || dom.spf === 'a-mx')) probePass = whole;
      }
    }
  }
  for (const s of senders) mix[`spf-domains:${s.spf}`] = (mix[`spf-domains:${s.spf}`] ?? 0) + 1;
  return {
    zones,
    dnsblZones: [ZEN, BL],
    requests,
    messages: opts.messages,
    hostedDomains: HOSTED,
    mailboxes,
    clients: clients.length,
    senderDomains: senders.length,
    mix,
    probes: { unknownRecipient: probeUnknown, zenListed: probeZen, spfPass: probePass },
  };
}

/** The mailwarden directory (directory.backend: yaml), written in its file format. */
export function policyDirectoryYaml(ds: PolicyDataset): string {
  const out = ['# Generated by bench/policy.ts: synthetic data, do not edit.', 'domains:'];
  for (const d of ds.hostedDomains) out.push(`  ${d}: {}`);
  out.push('mailboxes:');
  for (const m of ds.mailboxes) out.push(`  ${m}: {}`);
  out.push('aliases:');
  for (const d of ds.hostedDomains) {
    const first = ds.mailboxes.find((m) => m.endsWith(`@${d}`))!;
    out.push(`  postmaster@${d}: [${first}]`, `  abuse@${d}: [${first}]`);
  }
  return `${out.join('\n')}\n`;
}
