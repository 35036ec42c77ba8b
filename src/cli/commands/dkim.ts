// `mailwarden dkim ...`: DKIM signing keys (src/dkim/keys.ts) and their DNS
// records. generate → publish → check; rotate → publish → check → retire old →
// remove old a week later.
import type { Command } from 'commander';
import { createResolver } from '../../dns/resolver.ts';
import { checkPublished, type DkimCheckResult } from '../../dkim/check.ts';
import { dkimConfigOf } from '../../dkim/config.ts';
import {
  DkimKeyError, DkimKeyStore, dnsRecordName, dnsRecordStrings, dnsRecordText, keyType, parseAlgorithm, RSA_BITS, zoneFileLine,
  type DkimAlgorithm, type DkimKey,
} from '../../dkim/keys.ts';
import { DirectoryError } from '../../directory/types.ts';
import { normalizeDomain } from '../../core/address.ts';
import { CliError, EXIT, printJson, printRecord, printTable, type CliContext } from '../context.ts';

/** How long to keep a retired key's record: mail signed just before may sit in queues for days. */
const KEEP_RETIRED_RECORD_DAYS = 7;

interface KeyOptions {
  selector?: string;
  algorithm?: string;
  bits?: string;
  force?: boolean;
  json?: boolean;
}

function keyState(k: DkimKey): 'signing' | 'standby' | 'retired' {
  return k.signing ? 'signing' : k.active ? 'standby' : 'retired';
}

function recordJson(k: DkimKey) {
  return { name: dnsRecordName(k), type: 'TXT', value: dnsRecordText(k), strings: dnsRecordStrings(k), zone_line: zoneFileLine(k) };
}

export function keyJson(k: DkimKey) {
  return {
    domain: k.domain,
    selector: k.selector,
    algorithm: k.algorithm,
    bits: k.bits,
    state: keyState(k),
    created: k.created.toISOString(),
    file: k.file,
    record: recordJson(k),
  };
}

/** `dkim show --json`: the key without its file details, and its record. */
function showJson(k: DkimKey) {
  return { domain: k.domain, selector: k.selector, algorithm: k.algorithm, state: keyState(k), ...recordJson(k) };
}

function checkJson(r: DkimCheckResult, k: DkimKey) {
  return {
    selector: r.selector, algorithm: r.algorithm, state: keyState(k), name: r.name, status: r.status,
    ...(r.detail ? { detail: r.detail } : {}), warnings: r.warnings, published: r.published,
  };
}

/** Store errors as CLI errors: bad input 65 (EX_DATAERR), everything else 1. */
function cliError(err: unknown): unknown {
  if (!(err instanceof DkimKeyError)) return err;
  return new CliError(err.message, err.code === 'invalid' ? EXIT.dataErr : EXIT.fail);
}

function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      throw cliError(err);
    }
  };
}

function algorithmOption(text: string | undefined): DkimAlgorithm | undefined {
  if (text === undefined) return undefined;
  const a = parseAlgorithm(text);
  if (!a) throw new CliError(`unknown --algorithm ${JSON.stringify(text)}: use rsa or ed25519`, EXIT.usage);
  return a;
}

function bitsOption(text: string | undefined, algorithm: DkimAlgorithm): number | undefined {
  if (text === undefined) return undefined;
  if (algorithm !== 'rsa-sha256') throw new CliError('--bits is for RSA keys only (Ed25519 keys have a fixed size)', EXIT.usage);
  const bits = Number(text);
  if (!/^\d+$/.test(text) || !RSA_BITS.includes(bits)) {
    throw new CliError(`--bits must be 2048, 3072 or 4096 (1024 is the RFC 8301 minimum), got ${JSON.stringify(text)}`, EXIT.usage);
  }
  if (bits === 1024) process.stderr.write('mailwarden: warning: 1024-bit RSA is the minimum receivers accept; 2048 is recommended\n');
  return bits;
}

/** generate/rotate act on hosted domains only, unless --force. */
async function requireHostedDomain(c: CliContext, domain: string, force: boolean | undefined): Promise<void> {
  if (force) return;
  try {
    await (await c.admin()).getDomain(domain);
  } catch (err) {
    if (err instanceof DirectoryError && err.code === 'not_found') {
      throw new CliError(`${err.message} in the directory (use --force for a domain mailwarden does not host)`, EXIT.fail);
    }
    throw err;
  }
}

function store(c: CliContext): DkimKeyStore {
  return new DkimKeyStore(dkimConfigOf(c.config).keyDir);
}

function resolverFor(c: CliContext) {
  return createResolver({ servers: c.config.dns.servers, timeoutMs: c.config.dns.timeoutMs });
}

const out = (s: string) => process.stdout.write(s);

function printKeyRecord(k: DkimKey): void {
  printRecord({ name: dnsRecordName(k), type: 'TXT', value: dnsRecordText(k), 'zone file': zoneFileLine(k) });
}

function warnLooseMode(keys: readonly DkimKey[]): void {
  for (const k of keys) {
    if (k.fileMode & 0o077) {
      process.stderr.write(`mailwarden: warning: ${k.file} is readable by others (mode ${k.fileMode.toString(8).padStart(4, '0')}): chmod 600 it\n`);
    }
  }
}

function daysLater(days: number): string {
  return new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 10);
}

export function registerDkim(program: Command, ctx: () => CliContext): void {
  const dkim = program.command('dkim').description('DKIM signing keys and their DNS records');

  dkim.command('generate <domain>').description('create a signing key for a domain and print the DNS record to publish')
    .option('--selector <name>', 'selector (default: s + yyyymm for RSA, e + yyyymm for Ed25519)')
    .option('--algorithm <rsa|ed25519>', 'key type', 'rsa')
    .option('--bits <n>', 'RSA key size: 2048 (default), 3072 or 4096')
    .option('--force', 'also for a domain that is not in the directory')
    .option('--json', 'machine-readable output')
    .action(action(async (domainInput: string, o: KeyOptions) => {
      const c = ctx();
      const algorithm = algorithmOption(o.algorithm) ?? 'rsa-sha256';
      const bits = bitsOption(o.bits, algorithm);
      const s = store(c);
      const domain = canonicalDomain(domainInput);
      await requireHostedDomain(c, domain, o.force);
      const key = await s.generate(domain, { algorithm, ...(o.selector !== undefined ? { selector: o.selector } : {}), ...(bits ? { bits } : {}) });
      if (o.json) return printJson(keyJson(key));
      out(`generated ${key.algorithm} key${key.algorithm === 'rsa-sha256' ? ` (${key.bits} bits)` : ''} for ${key.domain}, selector ${key.selector}\n`);
      out(`key file: ${key.file}\n\npublish this TXT record in the ${key.domain} zone:\n\n${zoneFileLine(key)}\n\n`);
      if (key.signing) {
        out(`mail from ${key.domain} is signed with it from now on; until the record is in DNS, receivers treat the mail as unsigned.\n`);
      } else {
        const signer = s.signingKeys(key.domain).find((k) => k.algorithm === key.algorithm);
        out(`standby: ${signer?.selector ?? 'the older key'} keeps signing until you run: mailwarden dkim retire ${key.domain} ${signer?.selector ?? 'SELECTOR'}\n`);
      }
      out(`next: publish the record, then run: mailwarden dkim check ${key.domain}\n`);
    }));

  dkim.command('rotate <domain>')
    .description('create new keys next to the signing ones; the old ones keep signing until retired')
    .option('--selector <name>', 'selector of the new key (needs --algorithm when the domain has both key types)')
    .option('--algorithm <rsa|ed25519>', 'rotate only this key type (default: every type the domain signs with)')
    .option('--bits <n>', 'RSA key size of the new key (default: that of the old key)')
    .option('--force', 'also for a domain that is not in the directory')
    .option('--json', 'machine-readable output')
    .action(action(async (domainInput: string, o: KeyOptions) => {
      const c = ctx();
      const only = algorithmOption(o.algorithm);
      const s = store(c);
      const domain = canonicalDomain(domainInput);
      // RSA first: the order the records are printed in.
      const signing = s.signingKeys(domain).filter((k) => !only || k.algorithm === only).sort((a, b) => b.algorithm.localeCompare(a.algorithm));
      if (signing.length === 0) {
        throw new CliError(`${domain} has no active ${only ? `${keyType(only)} ` : ''}DKIM key to rotate: use mailwarden dkim generate ${domain}`, EXIT.fail);
      }
      if (o.selector !== undefined && signing.length > 1) throw new CliError(`${domain} signs with ${signing.length} keys: give --algorithm with --selector`, EXIT.usage);
      await requireHostedDomain(c, domain, o.force);
      const rotated: Array<{ old: DkimKey; key: DkimKey }> = [];
      for (const old of signing) {
        const bits = old.algorithm === 'rsa-sha256' ? (bitsOption(o.bits, old.algorithm) ?? Math.max(old.bits, 2048)) : undefined;
        const key = await s.generate(domain, { algorithm: old.algorithm, ...(o.selector !== undefined ? { selector: o.selector } : {}), ...(bits ? { bits } : {}) });
        rotated.push({ old, key });
      }
      if (o.json) return printJson(rotated.map((r) => ({ old: keyJson(r.old), new: keyJson(r.key) })));
      for (const { old, key } of rotated) {
        out(`${domain} ${key.algorithm}: ${old.selector} keeps signing, ${key.selector} is new (standby)\n\n`);
        out(`publish the new record now:\n${zoneFileLine(key)}\n\n`);
        out(`keep the old record until a week after retiring ${old.selector}:\n${zoneFileLine(old)}\n\n`);
      }
      const olds = rotated.map((r) => r.old.selector);
      const several = olds.length > 1;
      out('next:\n');
      out(`  1. publish the new record${several ? 's' : ''} in DNS\n`);
      out(`  2. wait for the zone's TTL, then check: mailwarden dkim check ${domain}\n`);
      out(`  3. retire the old key${several ? 's (the new ones sign' : ' (the new one signs'} from then on):\n`);
      for (const sel of olds) out(`       mailwarden dkim retire ${domain} ${sel}\n`);
      out(`  4. a week later, delete the old record${several ? 's' : ''} from DNS, then:\n`);
      for (const sel of olds) out(`       mailwarden dkim remove ${domain} ${sel}\n`);
    }));

  dkim.command('retire <domain> <selector>')
    .description('stop signing with a key; the newer key of its type takes over once its record is published')
    .option('--force', 'retire even when the key taking over is not (yet) published correctly')
    .action(action(async (domainInput: string, selector: string, o: { force?: boolean }) => {
      const c = ctx();
      const s = store(c);
      const key = s.get(domainInput, selector);
      if (!key.active) throw new CliError(`key ${key.selector} of ${key.domain} is already retired`, EXIT.fail);
      const next = key.signing ? successor(s.list(key.domain), key) : undefined;
      if (next && !o.force) {
        // The successor signs right after this: make sure verifiers can already find its key.
        const r = await checkPublished(next, resolverFor(c));
        if (r.status !== 'match') {
          throw new CliError(`not retiring ${key.selector}: ${next.selector}, which would sign instead, is not published correctly `
            + `(${r.status}${r.detail ? `: ${r.detail}` : ''}); publish it or use --force`, r.status === 'temperror' ? EXIT.tempFail : EXIT.fail);
        }
      }
      s.retire(key.domain, key.selector);
      out(`key ${key.selector} (${key.algorithm}) of ${key.domain} retired; `);
      if (!key.signing) out('it was on standby and never signed\n');
      else if (next) out(`${next.selector} signs from now on\n`);
      else out(`mail from ${key.domain} is no longer signed with ${keyType(key.algorithm)}\n`);
      out(`keep ${dnsRecordName(key)} in DNS until ${daysLater(KEEP_RETIRED_RECORD_DAYS)}, then delete it and run: mailwarden dkim remove ${key.domain} ${key.selector}\n`);
    }));

  dkim.command('remove <domain> <selector>').description('delete a retired key for good')
    .action(action(async (domainInput: string, selector: string) => {
      const key = store(ctx()).remove(domainInput, selector);
      out(`key ${key.selector} of ${key.domain} removed; delete ${dnsRecordName(key)} from DNS if it is still there\n`);
    }));

  dkim.command('list [domain]').description('list keys: signing, standby (waits for the older key to retire) or retired')
    .option('--json', 'machine-readable output')
    .action(action(async (domainInput: string | undefined, o: { json?: boolean }) => {
      const keys = store(ctx()).list(domainInput);
      warnLooseMode(keys);
      if (o.json) return printJson(keys.map(keyJson));
      printTable(['domain', 'selector', 'algorithm', 'bits', 'state', 'created'], keys.map((k) => [
        k.domain, k.selector, k.algorithm, String(k.bits), keyState(k), k.created.toISOString(),
      ]));
    }));

  dkim.command('show <domain> [selector]').description('print the DNS record of a key (default: of every active key)')
    .option('--json', 'machine-readable output')
    .action(action(async (domainInput: string, selector: string | undefined, o: { json?: boolean }) => {
      const s = store(ctx());
      if (selector !== undefined) {
        const k = s.get(domainInput, selector);
        if (o.json) return printJson(showJson(k));
        return printKeyRecord(k);
      }
      const keys = activeKeys(s, domainInput);
      if (o.json) return printJson(keys.map(showJson));
      keys.forEach((k, i) => {
        if (i) out('\n');
        printKeyRecord(k);
      });
    }));

  dkim.command('check <domain>').description('compare the DNS records of the active keys with the keys (exit 1 when any is wrong)')
    .option('--json', 'machine-readable output')
    .action(action(async (domainInput: string, o: { json?: boolean }) => {
      const c = ctx();
      const keys = activeKeys(store(c), domainInput);
      const resolver = resolverFor(c);
      const results = await Promise.all(keys.map((k) => checkPublished(k, resolver)));
      const ok = results.every((r) => r.status === 'match');
      if (o.json) printJson({ domain: keys[0]!.domain, ok, keys: results.map((r, i) => checkJson(r, keys[i]!)) });
      else {
        results.forEach((r, i) => {
          out(`${r.selector} ${r.algorithm} (${keyState(keys[i]!)}): ${r.status}${r.detail ? ` (${r.detail})` : ''}\n`);
          for (const w of r.warnings) out(`  warning: ${w}\n`);
        });
      }
      // Wrong or missing records are the operator's to fix (1); a DNS failure alone may pass (75, like a deferral).
      if (results.some((r) => r.status === 'mismatch' || r.status === 'missing')) process.exitCode = EXIT.fail;
      else if (!ok) process.exitCode = EXIT.tempFail;
    }));
}

function canonicalDomain(input: string): string {
  const d = normalizeDomain(input);
  if (!d) throw new CliError(`invalid domain name: ${JSON.stringify(input)}`, EXIT.dataErr);
  return d;
}

/** Active keys of a domain, signing ones first; an error when there are none. */
function activeKeys(s: DkimKeyStore, domainInput: string): DkimKey[] {
  const keys = s.list(domainInput).filter((k) => k.active).sort((a, b) => Number(b.signing) - Number(a.signing));
  if (keys.length === 0) throw new CliError(`${canonicalDomain(domainInput)} has no active DKIM key (mail from it is sent unsigned)`, EXIT.fail);
  return keys;
}

/** The key that signs for `key`'s algorithm once `key` is retired. */
function successor(keys: readonly DkimKey[], key: DkimKey): DkimKey | undefined {
  return keys
    .filter((k) => k.active && k.algorithm === key.algorithm && k.selector !== key.selector)
    .sort((a, b) => +a.created - +b.created || a.selector.localeCompare(b.selector))[0];
}
