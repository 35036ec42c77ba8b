// `mailwarden dkim` as an operator runs it: bin/mailwarden in a child process,
// a YAML directory, and a test DNS server on loopback that publishes (or
// withholds, or garbles) the records. The keys it writes are then used the way
// the milter will: signingKeys() → mailauth dkimSign, verified by mailauth
// against the records the CLI told us to publish.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dkimSign, dkimVerify } from 'mailauth';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DkimKeyStore, dnsRecordName, dnsRecordStrings, type DkimKey } from '../../src/dkim/keys.ts';
import { createResolver, forMailauth } from '../../src/dns/resolver.ts';
import { BIN } from '../support/daemon.ts';
import { startDnsServer, type TestDnsServer, type Zones } from '../support/dns-server.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

interface Run { code: number | null; stdout: string; stderr: string }

function mailwarden(config: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const mode = (path: string) => statSync(path).mode & 0o777;
const month = () => { const d = new Date(); return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`; };

/** Zones publishing these keys' records exactly as `dkim show --json` gives the strings. */
function publish(keys: readonly DkimKey[]): Zones {
  return Object.fromEntries(keys.map((k) => [dnsRecordName(k), { TXT: [dnsRecordStrings(k)] }]));
}

const MESSAGE = Buffer.from('From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: DKIM round trip\r\n'
  + 'Date: Thu, 05 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dkim-cli@example.org>\r\n\r\nHello from example.org.\r\n');

describe('mailwarden dkim', () => {
  let tmp: TempDir;
  let dns: TestDnsServer;
  let config: string;
  let keyDir: string;

  const ok = async (args: string[]) => {
    const r = await mailwarden(config, args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, '', args.join(' '));
    return r.stdout;
  };
  const fails = async (args: string[], code: number, stderr: RegExp) => {
    const r = await mailwarden(config, args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr, args.join(' '));
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, `one line: ${r.stderr}`);
    return r;
  };
  const store = () => new DkimKeyStore(keyDir);

  before(async () => {
    tmp = await tempDir('dkim-cli');
    dns = await startDnsServer({});
    const directoryPath = join(tmp.path, 'directory.yaml');
    const dir = YamlDirectory.open(directoryPath);
    const admin = new DirectoryAdmin(dir);
    await admin.addDomain('example.org');
    await admin.addDomain('other.test');
    await admin.addAliasDomain('example.net', 'example.org');
    await dir.close();
    config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, ['directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s', ''].join('\n'));
    keyDir = join(tmp.path, 'dkim');
  });
  after(async () => {
    await dns?.stop();
    await tmp?.remove();
  });

  it('generate: RSA-2048 and Ed25519 keys, 0600 files in 0700 directories, the record to publish', async () => {
    const text = await ok(['dkim', 'generate', 'Example.ORG', '--selector', 's2026']);
    const rsa = store().get('example.org', 's2026');
    assert.equal(rsa.bits, 2048);
    assert.equal(rsa.file, join(keyDir, 'example.org', 's2026.rsa.key'));
    assert.match(text, /^generated rsa-sha256 key \(2048 bits\) for example\.org, selector s2026\n/);
    assert.ok(text.includes(`key file: ${rsa.file}\n`));
    // The zone line exactly: quoted 255-byte strings in parentheses.
    const strings = dnsRecordStrings(rsa);
    assert.ok(text.includes(`\ns2026._domainkey.example.org. IN TXT ( ${strings.map((s) => `"${s}"`).join(' ')} )\n`), text);
    assert.match(text, /next: publish the record, then run: mailwarden dkim check example\.org\n$/);

    const ed = JSON.parse(await ok(['dkim', 'generate', 'example.org', '--algorithm', 'ed25519', '--json']));
    assert.equal(ed.selector, `e${month()}`);
    assert.equal(ed.algorithm, 'ed25519-sha256');
    assert.equal(ed.state, 'signing');
    assert.equal(ed.record.name, `e${month()}._domainkey.example.org`);
    assert.match(ed.record.value, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    assert.deepEqual(ed.record.strings, [ed.record.value]);

    assert.equal(mode(keyDir), 0o700);
    assert.equal(mode(join(keyDir, 'example.org')), 0o700);
    for (const f of readdirSync(join(keyDir, 'example.org'))) assert.equal(mode(join(keyDir, 'example.org', f)), 0o600, f);
    assert.deepEqual(readdirSync(join(keyDir, 'example.org')).sort(), [`e${month()}.ed25519.key`, 's2026.rsa.key']);
  });

  it('generate refuses: a used selector, unknown domains (unless --force), bad input', async () => {
    await fails(['dkim', 'generate', 'example.org', '--selector', 'S2026', '--algorithm', 'ed25519'], 1,
      /^mailwarden: selector s2026 of example\.org already exists \(rsa\); choose another\n$/);
    await fails(['dkim', 'generate', 'elsewhere.example'], 1, /^mailwarden: domain elsewhere\.example does not exist in the directory \(use --force/);
    await fails(['dkim', 'generate', 'not a domain'], 65, /^mailwarden: invalid domain name: "not a domain"\n$/);
    await fails(['dkim', 'generate', 'example.org', '--selector', 'bad_selector'], 65, /^mailwarden: invalid selector "bad_selector"/);
    await fails(['dkim', 'generate', 'example.org', '--algorithm', 'dsa'], 64, /^mailwarden: unknown --algorithm "dsa": use rsa or ed25519\n$/);
    await fails(['dkim', 'generate', 'example.org', '--bits', '512'], 64, /^mailwarden: --bits must be 2048, 3072 or 4096/);
    await fails(['dkim', 'generate', 'example.org', '--algorithm', 'ed25519', '--bits', '2048'], 64, /--bits is for RSA keys only/);
    assert.equal(store().list('elsewhere.example').length, 0);
    const forced = JSON.parse(await ok(['dkim', 'generate', 'elsewhere.example', '--force', '--algorithm', 'ed25519', '--selector', 'x1', '--json']));
    assert.equal(forced.domain, 'elsewhere.example');
    // An alias domain is hosted too: mail from it is ours to sign.
    await ok(['dkim', 'generate', 'example.net', '--algorithm', 'ed25519', '--selector', 'a1']);
  });

  it('list and show, text and --json; record strings <= 255 bytes joining to the record', async () => {
    const table = await ok(['dkim', 'list', 'example.org']);
    assert.match(table, /^domain +selector +algorithm +bits +state +created$/m);
    assert.match(table, /^example\.org +s2026 +rsa-sha256 +2048 +signing +\d{4}-\d\d-\d\dT/m);
    const all = JSON.parse(await ok(['dkim', 'list', '--json']));
    assert.deepEqual(all.map((k: { domain: string; selector: string }) => `${k.domain}/${k.selector}`),
      ['elsewhere.example/x1', 'example.net/a1', `example.org/e${month()}`, 'example.org/s2026']);

    const shown = JSON.parse(await ok(['dkim', 'show', 'example.org', 's2026', '--json']));
    assert.equal(shown.name, 's2026._domainkey.example.org');
    assert.equal(shown.type, 'TXT');
    assert.match(shown.value, /^v=DKIM1; k=rsa; p=MIIBIjAN[A-Za-z0-9+/]+=*$/);
    assert.ok(shown.strings.length >= 2 && shown.strings.every((s: string) => Buffer.byteLength(s) <= 255), JSON.stringify(shown.strings));
    assert.equal(shown.strings.join(''), shown.value);
    assert.equal(shown.zone_line, `s2026._domainkey.example.org. IN TXT ( ${shown.strings.map((s: string) => `"${s}"`).join(' ')} )`);
    assert.equal(shown.private_key, undefined);
    assert.ok(!JSON.stringify(all).includes('PRIVATE KEY'), 'private keys are never printed');

    const text = await ok(['dkim', 'show', 'example.org']);
    assert.equal(text.split('\n\n').length, 2, 'both active keys');
    assert.match(text, /^name: {6}s2026\._domainkey\.example\.org\ntype: {6}TXT\nvalue: {5}v=DKIM1; k=rsa; p=/m);
    assert.equal(JSON.parse(await ok(['dkim', 'show', 'example.org', '--json'])).length, 2);
    await fails(['dkim', 'show', 'other.test'], 1, /^mailwarden: other\.test has no active DKIM key \(mail from it is sent unsigned\)\n$/);
    await fails(['dkim', 'show', 'example.org', 'nope'], 1, /^mailwarden: example\.org has no DKIM key with selector nope\n$/);
  });

  it('check: match, missing, mismatch and temperror against DNS, with exit codes 0, 1, 1, 75', async () => {
    const keys = store().signingKeys('example.org');
    assert.equal(keys.length, 2);
    const [rsa, ed] = [keys.find((k) => k.algorithm === 'rsa-sha256')!, keys.find((k) => k.algorithm === 'ed25519-sha256')!];

    dns.setZones(publish(keys));
    const good = await mailwarden(config, ['dkim', 'check', 'example.org']);
    assert.equal(good.code, 0, good.stderr);
    // Signing keys first, newest first.
    assert.equal(good.stdout, `e${month()} ed25519-sha256 (signing): match\ns2026 rsa-sha256 (signing): match\n`);

    // Missing: the Ed25519 record not published.
    dns.setZones(publish([rsa]));
    const missing = await mailwarden(config, ['dkim', 'check', 'example.org', '--json']);
    assert.equal(missing.code, 1);
    const mj = JSON.parse(missing.stdout);
    assert.equal(mj.ok, false);
    assert.deepEqual(mj.keys.map((k: { selector: string; status: string }) => `${k.selector}:${k.status}`), [`e${month()}:missing`, 's2026:match']);
    assert.equal(mj.keys[0].detail, `no TXT record at e${month()}._domainkey.example.org`);

    // Mismatch: someone else's key under our selector, and t=y on the Ed25519 record.
    const stranger = (await new DkimKeyStore(join(tmp.path, 'stranger')).generate('example.org', { selector: 's2026' }));
    dns.setZones({
      [dnsRecordName(rsa)]: { TXT: [dnsRecordStrings(stranger)] },
      [dnsRecordName(ed)]: { TXT: [`v=DKIM1; k=ed25519; t=y; p=${ed.publicKeyBase64}`] },
    });
    const wrong = await mailwarden(config, ['dkim', 'check', 'example.org']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stdout, /^s2026 rsa-sha256 \(signing\): mismatch \(p= is a different key\)$/m);
    assert.match(wrong.stdout, /ed25519-sha256 \(signing\): match\n {2}warning: t=y: the domain is testing DKIM/);

    // Temperror: the name server does not answer. DNS trouble alone is 75 (EX_TEMPFAIL), not "wrong".
    dns.setZones({ ...publish([rsa]), [dnsRecordName(ed)]: { TIMEOUT: true } });
    const slow = await mailwarden(config, ['dkim', 'check', 'example.org', '--json']);
    assert.equal(slow.code, 75, slow.stderr);
    const sj = JSON.parse(slow.stdout);
    assert.deepEqual(sj.keys.map((k: { status: string }) => k.status), ['temperror', 'match']);
    assert.match(sj.keys[0].detail, /^DNS lookup failed: ETIMEOUT$/);

    await fails(['dkim', 'check', 'other.test'], 1, /has no active DKIM key/);
  });

  it('the published records verify what the signer signs with signingKeys(), RSA and Ed25519 (mailauth)', async () => {
    const keys = store().signingKeys('example.org');
    const resolver = forMailauth(createResolver({ servers: [dns.address], timeoutMs: 1000 }));
    const sign = async () => {
      // mailauth's types still demand the single-key options that silently sign nothing (libraries.md §0.6).
      const { signatures, errors } = await dkimSign(MESSAGE, {
        signatureData: keys.map((k) => ({ signingDomain: k.domain, selector: k.selector, privateKey: k.privateKeyPem, algorithm: k.algorithm })),
      } as never);
      assert.deepEqual(errors, []);
      return Buffer.concat([Buffer.from(signatures), MESSAGE]);
    };
    const verify = async () => (await dkimVerify(await sign(), { resolver: resolver as never })).results
      .map((r) => `${r.selector}/${r.algo}:${r.status.result}`).sort();

    dns.setZones(publish(keys));
    assert.deepEqual(await verify(), [`e${month()}/ed25519-sha256:pass`, 's2026/rsa-sha256:pass']);
    // The same signatures against a stranger's record fail: the pass above is the records' doing.
    const stranger = await new DkimKeyStore(join(tmp.path, 'stranger2')).generate('example.org', { selector: 's2026' });
    dns.setZones({ ...publish(keys.filter((k) => k.algorithm !== 'rsa-sha256')), [dnsRecordName(stranger)]: { TXT: [dnsRecordStrings(stranger)] } });
    assert.deepEqual(await verify(), [`e${month()}/ed25519-sha256:pass`, 's2026/rsa-sha256:fail']);
  });

  it('rotate: the new key waits on standby; retire refuses until it is published; then it signs', async () => {
    const out = await ok(['dkim', 'rotate', 'example.org', '--algorithm', 'rsa', '--selector', 's2027']);
    assert.match(out, /^example\.org rsa-sha256: s2026 keeps signing, s2027 is new \(standby\)\n/);
    assert.match(out, /publish the new record now:\ns2027\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=rsa; " "p=/);
    assert.match(out, /keep the old record until a week after retiring s2026:\ns2026\._domainkey\.example\.org\. IN TXT \(/);
    assert.ok(out.endsWith(['next:',
      '  1. publish the new record in DNS',
      "  2. wait for the zone's TTL, then check: mailwarden dkim check example.org",
      '  3. retire the old key (the new one signs from then on):',
      '       mailwarden dkim retire example.org s2026',
      '  4. a week later, delete the old record from DNS, then:',
      '       mailwarden dkim remove example.org s2026', ''].join('\n')), out);

    const states = async () => JSON.parse(await ok(['dkim', 'list', 'example.org', '--json']))
      .filter((k: { algorithm: string }) => k.algorithm === 'rsa-sha256').map((k: { selector: string; state: string }) => `${k.selector}:${k.state}`);
    assert.deepEqual(await states(), ['s2027:standby', 's2026:signing'], 'two active keys');
    assert.deepEqual(store().signingKeys('example.org').map((k) => k.selector).sort(), [`e${month()}`, 's2026']);

    // Old published, new not yet: check says so, retire refuses.
    const old = store().get('example.org', 's2026');
    const fresh = store().get('example.org', 's2027');
    const ed = store().signingKeys('example.org').find((k) => k.algorithm === 'ed25519-sha256')!;
    dns.setZones(publish([old, ed]));
    const pending = await mailwarden(config, ['dkim', 'check', 'example.org']);
    assert.equal(pending.code, 1);
    assert.match(pending.stdout, /^s2027 rsa-sha256 \(standby\): missing/m);
    await fails(['dkim', 'retire', 'example.org', 's2026'], 1,
      /^mailwarden: not retiring s2026: s2027, which would sign instead, is not published correctly \(missing: no TXT record at s2027\._domainkey\.example\.org\); publish it or use --force\n$/);

    dns.setZones(publish([old, fresh, ed]));
    assert.equal((await mailwarden(config, ['dkim', 'check', 'example.org'])).code, 0);
    const retired = await ok(['dkim', 'retire', 'example.org', 's2026']);
    assert.match(retired, /^key s2026 \(rsa-sha256\) of example\.org retired; s2027 signs from now on\nkeep s2026\._domainkey\.example\.org in DNS until \d{4}-\d\d-\d\d, then delete it and run: mailwarden dkim remove example\.org s2026\n$/);
    assert.deepEqual(await states(), ['s2027:signing', 's2026:retired']);
    assert.deepEqual(store().signingKeys('example.org').map((k) => k.selector).sort(), [`e${month()}`, 's2027']);
    assert.equal(mode(join(keyDir, 'example.org', 's2026.rsa.key.retired')), 0o600);

    await fails(['dkim', 'retire', 'example.org', 's2026'], 1, /^mailwarden: key s2026 of example\.org is already retired\n$/);
    await fails(['dkim', 'remove', 'example.org', 's2027'], 1, /is active: retire it first/);
    assert.match(await ok(['dkim', 'remove', 'example.org', 's2026']), /^key s2026 of example\.org removed; delete s2026\._domainkey\.example\.org from DNS/);
    await fails(['dkim', 'generate', 'example.org', '--selector', 's2027', '--algorithm', 'ed25519'], 1, /already exists/);

    // Rotating without --algorithm renews every key type the domain signs with.
    const both = JSON.parse(await ok(['dkim', 'rotate', 'example.org', '--json']));
    assert.deepEqual(both.map((r: { old: { selector: string }; new: { state: string; algorithm: string } }) => `${r.old.selector}->${r.new.algorithm}:${r.new.state}`).sort(),
      [`e${month()}->ed25519-sha256:standby`, 's2027->rsa-sha256:standby']);
    await fails(['dkim', 'rotate', 'other.test'], 1, /^mailwarden: other\.test has no active DKIM key to rotate: use mailwarden dkim generate other\.test\n$/);
    // Retiring a key nobody replaces needs no DNS check and says what it means.
    assert.match(await ok(['dkim', 'retire', 'example.net', 'a1']), /^key a1 \(ed25519-sha256\) of example\.net retired; mail from example\.net is no longer signed with ed25519\n/);
  });

  it('dkim.key_dir in the config moves the store', async () => {
    const moved = join(tmp.path, 'moved.yaml');
    writeFileSync(moved, ['directory:', '  backend: yaml', `  path: ${join(tmp.path, 'directory.yaml')}`, 'dkim:', '  key_dir: keys/dkim', ''].join('\n'));
    const r = await mailwarden(moved, ['dkim', 'generate', 'other.test', '--algorithm', 'ed25519', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).file, join(tmp.path, 'keys', 'dkim', 'other.test', `e${month()}.ed25519.key`));
    const bad = join(tmp.path, 'bad.yaml');
    writeFileSync(bad, ['directory:', '  backend: yaml', '  path: d.yaml', 'dkim:', '  keydir: x', ''].join('\n'));
    const b = await mailwarden(bad, ['dkim', 'list']);
    assert.equal(b.code, 78);
    assert.match(b.stderr, /bad\.yaml:5:3: unknown setting dkim\.keydir \(known: key_dir\)/);
  });
});
