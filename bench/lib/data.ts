// Synthetic directory and RCPT key mix for the socketmap benchmark.
// Everything is derived from one seed, so two runs with the same flags look
// up exactly the same keys in exactly the same order.
import { prng } from '../../test/support/prng.ts';

export { prng };

const FIRST = [
  'anna', 'ben', 'clara', 'david', 'emma', 'felix', 'greta', 'hugo', 'ida', 'jonas', 'karla', 'leon', 'mia', 'noah',
  'olga', 'paul', 'quinn', 'rosa', 'sam', 'tina', 'uwe', 'vera', 'walter', 'xenia', 'yusuf', 'zoe', 'amir', 'bea',
  'carlos', 'dana', 'erik', 'fatima', 'georg', 'hanna', 'ivan', 'julia', 'kemal', 'lena', 'marco', 'nina',
];
const LAST = [
  'schmidt', 'mueller', 'meyer', 'weber', 'wagner', 'becker', 'schulz', 'hoffmann', 'koch', 'richter', 'klein', 'wolf',
  'neumann', 'schwarz', 'braun', 'zimmermann', 'krueger', 'hartmann', 'lange', 'werner', 'krause', 'lehmann', 'koehler',
  'martin', 'garcia', 'rossi', 'silva', 'novak', 'kowalski', 'jensen', 'smith', 'jones', 'brown', 'taylor', 'wilson',
  'evans', 'thomas', 'roberts', 'walker', 'wright', 'dubois', 'moreau', 'laurent', 'bernard', 'petit', 'yilmaz',
  'kaya', 'demir', 'nguyen', 'tran',
];
const WORDS = [
  'acme', 'globex', 'initech', 'umbrella', 'hooli', 'vandelay', 'wonka', 'stark', 'wayne', 'tyrell', 'cyberdyne',
  'soylent', 'oscorp', 'aperture', 'massive', 'gringotts', 'monarch', 'nakatomi', 'pied-piper', 'dunder',
];
const TLDS = ['example', 'test', 'invalid'];
const EXTENSIONS = ['news', 'shop', 'lists', 'github', 'bank', 'travel', 'spam', 'work'];
const ROLE_ALIASES = ['postmaster', 'abuse', 'info', 'sales', 'support', 'hostmaster'];

export interface BenchMailbox {
  readonly local: string;
  readonly domain: string;
  readonly name: string;
  readonly enabled: boolean;
}

export interface BenchAlias {
  /** `local@domain`, or `@domain` for a catch-all. */
  readonly address: string;
  readonly domain: string;
  readonly targets: readonly string[];
  readonly enabled: boolean;
}

export interface BenchDomain {
  readonly name: string;
  readonly aliasFor?: string;
}

export type KeyKind =
  | 'mailbox' | 'mailbox+ext' | 'disabled-mailbox' | 'alias' | 'alias+ext' | 'alias-domain'
  | 'unknown-user' | 'unknown-domain';

/** Share of each kind of RCPT address in the key mix (sums to 1). */
export const KEY_MIX: ReadonlyArray<readonly [KeyKind, number]> = [
  ['mailbox', 0.55],
  ['mailbox+ext', 0.10],
  ['disabled-mailbox', 0.01],
  ['alias', 0.08],
  ['alias+ext', 0.02],
  ['alias-domain', 0.04],
  ['unknown-user', 0.12],
  ['unknown-domain', 0.08],
];

export interface Dataset {
  readonly domains: readonly BenchDomain[];
  readonly mailboxes: readonly BenchMailbox[];
  readonly aliases: readonly BenchAlias[];
  /** RCPT addresses in lookup order. */
  readonly rcpts: readonly string[];
  readonly rcptKinds: Readonly<Record<KeyKind, number>>;
  /** Socketmap request payloads (`map key`) in stream order: each RCPT asks virtual_alias_maps, hosted ones also virtual_mailbox_maps. */
  readonly requests: readonly string[];
  /** `requests` without repeats, first occurrence order: a pass over it never hits a per-key cache. */
  readonly distinctRequests: readonly string[];
  /** Keys Postfix would ask virtual_mailbox_maps (RCPTs in mailbox domains), for `postmap -q -`. */
  readonly mailboxMapKeys: readonly string[];
}

export interface DatasetOptions {
  readonly mailboxes: number;
  readonly domains: number;
  readonly seed: number;
  /** Number of RCPT addresses in the key stream. */
  readonly rcpts: number;
}

export function generateDataset(opts: DatasetOptions): Dataset {
  const rnd = prng(opts.seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;

  // --- domains: sizes follow a Zipf-like curve (a few large tenants, many small ones) ---
  const domainNames: string[] = [];
  for (let i = 0; i < opts.domains; i++) domainNames.push(`${WORDS[i % WORDS.length]}-${String(i).padStart(3, '0')}.${TLDS[i % 2]}`);
  const weights = domainNames.map((_, i) => 1 / (i + 1) ** 0.7);
  const wsum = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.max(1, Math.floor((w / wsum) * opts.mailboxes)));
  for (let i = 0, missing = opts.mailboxes - sizes.reduce((a, b) => a + b, 0); missing > 0; i = (i + 1) % sizes.length, missing--) sizes[i]!++;
  for (let i = 0, extra = sizes.reduce((a, b) => a + b, 0) - opts.mailboxes; extra > 0; i = (i + 1) % sizes.length) {
    if (sizes[i]! > 1) { sizes[i]!--; extra--; }
  }

  // --- mailboxes ---
  const mailboxes: BenchMailbox[] = [];
  const byDomain = new Map<string, BenchMailbox[]>();
  const taken = new Set<string>();
  domainNames.forEach((domain, di) => {
    const list: BenchMailbox[] = [];
    for (let n = 0; n < sizes[di]!; n++) {
      const first = pick(FIRST);
      const last = pick(LAST);
      const style = rnd();
      let base = style < 0.6 ? `${first}.${last}` : style < 0.8 ? `${first[0]}${last}` : style < 0.9 ? `${first}_${last}` : `${first}-${last}`;
      let local = base;
      for (let k = 2; taken.has(`${local}@${domain}`); k++) local = `${base}${k}`;
      taken.add(`${local}@${domain}`);
      const m: BenchMailbox = { local, domain, name: `${cap(first)} ${cap(last)}`, enabled: rnd() >= 0.01 };
      list.push(m);
      mailboxes.push(m);
    }
    byDomain.set(domain, list);
  });

  // --- aliases: role addresses per domain, team lists, some forwarding off-site, a few disabled ---
  const aliases: BenchAlias[] = [];
  const addr = (m: BenchMailbox) => `${m.local}@${m.domain}`;
  for (const domain of domainNames) {
    const list = byDomain.get(domain)!;
    for (const role of ROLE_ALIASES) {
      if (taken.has(`${role}@${domain}`)) continue;
      taken.add(`${role}@${domain}`);
      aliases.push({ address: `${role}@${domain}`, domain, targets: [addr(list[0]!)], enabled: true });
    }
  }
  const teamCount = Math.max(10, Math.floor(opts.mailboxes * 0.02));
  for (let i = 0; i < teamCount; i++) {
    const domain = domainNames[Math.floor(rnd() ** 2 * domainNames.length)]!;
    const list = byDomain.get(domain)!;
    const local = `${pick(['team', 'project', 'list', 'dept', 'group'])}-${pick(WORDS)}${i}`;
    if (taken.has(`${local}@${domain}`)) continue;
    taken.add(`${local}@${domain}`);
    const targets = new Set<string>();
    const n = 1 + Math.floor(rnd() * 5);
    for (let k = 0; k < n; k++) targets.add(rnd() < 0.1 ? `${pick(FIRST)}@forward.${pick(TLDS)}` : addr(pick(list)));
    aliases.push({ address: `${local}@${domain}`, domain, targets: [...targets], enabled: rnd() >= 0.02 });
  }
  // Catch-alls on every 10th domain.
  for (let i = 0; i < domainNames.length; i += 10) {
    const domain = domainNames[i]!;
    aliases.push({ address: `@${domain}`, domain, targets: [addr(byDomain.get(domain)![0]!)], enabled: true });
  }

  // --- alias domains: two domains that mirror the two largest tenants ---
  const domains: BenchDomain[] = domainNames.map((name) => ({ name }));
  const aliasDomains: Array<{ name: string; target: string }> = [];
  for (let i = 0; i < Math.min(2, domainNames.length); i++) {
    const name = `${domainNames[i]!.split('.')[0]}-mail.example`;
    domains.push({ name, aliasFor: domainNames[i]! });
    aliasDomains.push({ name, target: domainNames[i]! });
  }

  // --- RCPT key mix ---
  const enabledMailboxes = mailboxes.filter((m) => m.enabled);
  const disabledMailboxes = mailboxes.filter((m) => !m.enabled);
  const plainAliases = aliases.filter((a) => !a.address.startsWith('@'));
  const rcptKinds = Object.fromEntries(KEY_MIX.map(([k]) => [k, 0])) as Record<KeyKind, number>;
  const rcpts: string[] = [];
  const cumulative: Array<[KeyKind, number]> = [];
  let acc = 0;
  for (const [kind, share] of KEY_MIX) cumulative.push([kind, (acc += share)]);
  for (let i = 0; i < opts.rcpts; i++) {
    const r = rnd();
    let kind = cumulative.find(([, c]) => r < c)?.[0] ?? 'mailbox';
    if (kind === 'disabled-mailbox' && disabledMailboxes.length === 0) kind = 'mailbox';
    rcptKinds[kind]++;
    switch (kind) {
      case 'mailbox': rcpts.push(addr(pick(enabledMailboxes))); break;
      case 'mailbox+ext': { const m = pick(enabledMailboxes); rcpts.push(`${m.local}+${pick(EXTENSIONS)}@${m.domain}`); break; }
      case 'disabled-mailbox': rcpts.push(addr(pick(disabledMailboxes))); break;
      case 'alias': rcpts.push(pick(plainAliases).address); break;
      case 'alias+ext': { const a = pick(plainAliases); const [l, d] = a.address.split('@'); rcpts.push(`${l}+${pick(EXTENSIONS)}@${d}`); break; }
      case 'alias-domain': {
        const ad = pick(aliasDomains);
        const local = rnd() < 0.8 ? pick(byDomain.get(ad.target)!).local : randomLocal(rnd);
        rcpts.push(`${local}@${ad.name}`);
        break;
      }
      case 'unknown-user': {
        const domain = pick(domainNames);
        let local: string;
        do {
          local = rnd() < 0.5 ? `${pick(FIRST)}.${pick(LAST)}${100 + Math.floor(rnd() * 900)}` : randomLocal(rnd);
        } while (taken.has(`${local}@${domain}`));
        rcpts.push(`${local}@${domain}`);
        break;
      }
      case 'unknown-domain': rcpts.push(`${rnd() < 0.5 ? pick(FIRST) : randomLocal(rnd)}@${randomLocal(rnd)}.${pick(['com', 'net', 'org', 'ru', 'cn'])}`); break;
    }
  }

  const hosted = new Set(domainNames);
  const requests: string[] = [];
  const mailboxMapKeys: string[] = [];
  for (const rcpt of rcpts) {
    // cleanup(8) expands virtual aliases for every recipient; smtpd(8) asks
    // virtual_mailbox_maps only for recipients in virtual_mailbox_domains.
    requests.push(`virtual_alias_maps ${rcpt}`);
    const domain = rcpt.slice(rcpt.lastIndexOf('@') + 1);
    if (hosted.has(domain)) {
      requests.push(`virtual_mailbox_maps ${rcpt}`);
      mailboxMapKeys.push(rcpt);
    }
  }
  return { domains, mailboxes, aliases, rcpts, rcptKinds, requests, distinctRequests: [...new Set(requests)], mailboxMapKeys };
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function randomLocal(rnd: () => number): string {
  const n = 5 + Math.floor(rnd() * 5);
  let s = '';
  for (let i = 0; i < n; i++) s += 'abcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(rnd() * (i === 0 ? 26 : 36))];
  return s;
}

// --- output formats ---

/** The YAML directory file, written directly (the CLI would rewrite the whole file once per mailbox). */
export function directoryYaml(ds: Dataset): string {
  const out: string[] = ['# Generated by bench/socketmap.ts: synthetic data, do not edit.', 'domains:'];
  for (const d of ds.domains) out.push(d.aliasFor ? `  ${d.name}:\n    alias_for: ${d.aliasFor}` : `  ${d.name}: {}`);
  out.push('mailboxes:');
  for (const m of ds.mailboxes) {
    out.push(`  ${m.local}@${m.domain}:\n    name: ${m.name}\n    quota: 2G${m.enabled ? '' : '\n    enabled: false'}`);
  }
  out.push('aliases:');
  for (const a of ds.aliases) {
    const key = a.address.startsWith('@') ? `"${a.address}"` : a.address;
    out.push(a.enabled ? `  ${key}: [${a.targets.join(', ')}]` : `  ${key}:\n    targets: [${a.targets.join(', ')}]\n    enabled: false`);
  }
  return `${out.join('\n')}\n`;
}

/** postmap(1) source for an `lmdb:` virtual_mailbox_maps: enabled mailboxes only, value = Maildir path. */
export function vmailboxSource(ds: Dataset): string {
  const out: string[] = [];
  for (const m of ds.mailboxes) if (m.enabled) out.push(`${m.local}@${m.domain} ${m.domain}/${m.local}/`);
  return `${out.join('\n')}\n`;
}
