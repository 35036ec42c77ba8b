// Data for the milter benchmark: sender domains with RSA-2048 (and for some
// also Ed25519) DKIM keys, SPF and DMARC records on the test DNS; inbound
// messages of 5-20 KB signed by them; outbound messages from a domain whose
// key is in mailwarden's key store (and, as PEM, in OpenDKIM's KeyTable);
// and large messages of each kind (10 and 30 MB) for the memory check.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { dkimSign } from 'mailauth';
import { DkimKeyStore, dnsRecordName, dnsRecordStrings, publicKeyBase64, type DkimKey } from '../../src/dkim/keys.ts';
import type { BenchMessage } from './milter-types.ts';
import { prng } from '../../test/support/prng.ts';

// Every name that is looked up in DNS ends in .example, not .test: OpenDKIM's
// libunbound answers test. (RFC 6761) itself with NXDOMAIN and never asks
// the test DNS (milter-peers.ts).

/** Our domain: mailwarden signs for it from its key store, OpenDKIM from its KeyTable. */
export const OUR_DOMAIN = 'ours.bench.example';
export const OUR_SELECTOR = 's2026';
/** Inbound clients: every sender domain's SPF authorises this /24. */
export const INBOUND_NET = '198.51.100';
/** Submission clients (OpenDKIM's InternalHosts). */
export const SUBMISSION_NET = '192.0.2';
export const AUTHSERV_ID = 'mx.bench.test';

interface SenderKey {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: 'rsa-sha256' | 'ed25519-sha256';
  readonly privateKey: KeyObject;
}

export interface MilterDataset {
  /** Inbound, DKIM-signed messages (verify phase). */
  readonly inbound: BenchMessage[];
  /** Outbound, unsigned messages from OUR_DOMAIN (sign phase). */
  readonly outbound: BenchMessage[];
  /** One large message of each kind per size asked for (memory check). */
  readonly big: ReadonlyArray<{ readonly bytes: number; readonly inbound: BenchMessage; readonly outbound: BenchMessage }>;
  readonly zones: Record<string, unknown>;
  /** The RSA key mailwarden signs with (in its key store). */
  readonly ourKey: DkimKey;
  /** PKCS#8 PEM of ourKey, for OpenDKIM's KeyTable. */
  readonly ourKeyPemFile: string;
  readonly mix: Record<string, number>;
  readonly senderDomains: number;
}


const WORDS = ('the of and to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when '
  + 'your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has '
  + 'look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part '
  + 'invoice shipment newsletter meeting quarterly report account password delivery').split(' ');

function body(rand: () => number, size: number, html: boolean): string {
  const lines: string[] = [];
  let total = 0;
  while (total < size) {
    const words: string[] = [];
    let len = 0;
    while (len < 66) {
      const w = WORDS[Math.floor(rand() * WORDS.length)]!;
      words.push(w);
      len += w.length + 1;
    }
    let line = words.join(' ');
    if (html) line = `<p>${line}</p>`;
    if (rand() < 0.05) line = '';
    lines.push(line);
    total += line.length + 2;
  }
  return `${lines.join('\r\n')}\r\n`;
}

function headerBlock(h: Array<[string, string]>): string {
  return h.map(([k, v]) => `${k}: ${v}`).join('\r\n');
}

async function sign(raw: string, keys: readonly SenderKey[]): Promise<string> {
  const options = {
    canonicalization: 'relaxed/relaxed',
    signatureData: keys.map((k) => ({
      signingDomain: k.domain, selector: k.selector, algorithm: k.algorithm,
      privateKey: k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    })),
  } as unknown as Parameters<typeof dkimSign>[1];
  const { signatures, errors } = await dkimSign(Buffer.from(raw), options);
  if ((errors as unknown[]).length) throw new Error(`dkimSign: ${JSON.stringify(errors)}`);
  return signatures + raw;
}

const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');

export async function generateMilterDataset(opts: { seed: number; messages: number; tmp: string; keyDir: string; bigSizes: readonly number[] }): Promise<MilterDataset> {
  const rand = prng(opts.seed);
  const zones: Record<string, unknown> = {};
  const mix: Record<string, number> = {};
  const count = (k: string) => { mix[k] = (mix[k] ?? 0) + 1; };

  // Sender domains: all RSA-2048, every fourth also Ed25519 (signs with both, as RFC 8463 suggests).
  const policies = ['none', 'quarantine', 'reject'] as const;
  const senders: Array<{ domain: string; keys: SenderKey[]; policy: string }> = [];
  for (let i = 0; i < 12; i++) {
    const domain = `s${String(i + 1).padStart(2, '0')}.sender.example`;
    const keys: SenderKey[] = [{ domain, selector: 'rsa1', algorithm: 'rsa-sha256', privateKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey }];
    if (i % 4 === 3) keys.push({ domain, selector: 'ed1', algorithm: 'ed25519-sha256', privateKey: generateKeyPairSync('ed25519').privateKey });
    const policy = policies[i % 3]!;
    senders.push({ domain, keys, policy });
    zones[domain] = { TXT: [`v=spf1 ip4:${INBOUND_NET}.0/24 -all`], MX: [[10, `mx.${domain}`]], A: [`${INBOUND_NET}.${10 + i}`] };
    zones[`_dmarc.${domain}`] = { TXT: [`v=DMARC1; p=${policy}; rua=mailto:dmarc@${domain}`] };
    for (const k of keys) zones[dnsRecordName(k)] = { TXT: [dnsRecordStrings({ ...k, publicKeyBase64: publicKeyBase64(k.privateKey) })] };
  }

  // Our outbound domain: one RSA-2048 key in mailwarden's store; OpenDKIM gets the same key as PEM.
  const store = new DkimKeyStore(opts.keyDir);
  const ourKey = await store.generate(OUR_DOMAIN, { algorithm: 'rsa', selector: OUR_SELECTOR });
  const ourKeyPemFile = path.join(opts.tmp, 'opendkim-key.pem');
  writeFileSync(ourKeyPemFile, ourKey.privateKeyPem, { mode: 0o600 });
  zones[dnsRecordName(ourKey)] = { TXT: [dnsRecordStrings(ourKey)] };
  zones[OUR_DOMAIN] = { TXT: [`v=spf1 ip4:${SUBMISSION_NET}.0/24 -all`] };
  zones[`_dmarc.${OUR_DOMAIN}`] = { TXT: ['v=DMARC1; p=reject'] };

  const inboundMessage = async (i: number, size: number): Promise<BenchMessage> => {
    const s = senders[Math.floor(rand() * senders.length)]!;
    const html = rand() < 0.3;
    const from = `news${i % 7}@${s.domain}`;
    const head: Array<[string, string]> = [
      ['Received', `from mta${i % 5}.${s.domain} (mta${i % 5}.${s.domain} [${INBOUND_NET}.${10 + (i % 50)}])\r\n\tby relay.${s.domain} (Postfix) with ESMTPS id 4X${i}\r\n\tfor <user${i % 40}@example.org>; Mon, 23 Nov 2026 10:00:00 +0000`],
      ['From', `"Sender ${i}" <${from}>`],
      ['To', `<user${i % 40}@example.org>`],
      ['Subject', `Benchmark message ${i}: ${WORDS[i % WORDS.length]} ${WORDS[(i * 7) % WORDS.length]}`],
      ['Date', 'Mon, 23 Nov 2026 10:00:00 +0000'],
      ['Message-ID', `<bench-${i}-${opts.seed}@${s.domain}>`],
      ['MIME-Version', '1.0'],
      ['Content-Type', html ? 'text/html; charset=utf-8' : 'text/plain; charset=utf-8'],
      ['List-Unsubscribe', `<mailto:unsubscribe@${s.domain}?subject=${i}>`],
    ];
    const raw = await sign(`${headerBlock(head)}\r\n\r\n${body(rand, size, html)}`, s.keys);
    const kind = s.keys.length > 1 ? 'rsa+ed25519' : 'rsa';
    count(`inbound:${kind}`);
    count(`inbound:p=${s.policy}`);
    return {
      sender: `bounce-${i}@${s.domain}`, rcpt: `user${i % 40}@example.org`, clientIp: `${INBOUND_NET}.${10 + (i % 50)}`,
      helo: `mta${i % 5}.${s.domain}`, raw: b64(raw), kind,
    };
  };
  const outboundMessage = (i: number, size: number): BenchMessage => {
    const from = `user${i % 20}@${OUR_DOMAIN}`;
    const head: Array<[string, string]> = [
      ['From', `"User ${i % 20}" <${from}>`],
      ['To', `<friend${i}@elsewhere.test>`],
      ['Subject', `Outbound ${i}: ${WORDS[i % WORDS.length]}`],
      ['Date', 'Mon, 23 Nov 2026 10:00:00 +0000'],
      ['Message-ID', `<out-${i}-${opts.seed}@${OUR_DOMAIN}>`],
      ['MIME-Version', '1.0'],
      ['Content-Type', 'text/plain; charset=utf-8'],
    ];
    count('outbound');
    return {
      sender: from, rcpt: `friend${i}@elsewhere.test`, clientIp: `${SUBMISSION_NET}.${10 + (i % 50)}`, helo: `laptop${i % 9}.${OUR_DOMAIN}`,
      raw: b64(`${headerBlock(head)}\r\n\r\n${body(rand, size, false)}`), kind: 'unsigned',
    };
  };

  const inbound: BenchMessage[] = [];
  const outbound: BenchMessage[] = [];
  for (let i = 0; i < opts.messages; i++) {
    const size = 5 * 1024 + Math.floor(rand() * 15 * 1024);
    inbound.push(await inboundMessage(i, size));
    outbound.push(outboundMessage(i, size));
  }
  const big: Array<MilterDataset['big'][number]> = [];
  for (const [k, bytes] of opts.bigSizes.entries()) big.push({ bytes, inbound: await inboundMessage(1_000_000 + k, bytes), outbound: outboundMessage(1_000_000 + k, bytes) });
  return { inbound, outbound, big, zones, ourKey, ourKeyPemFile, mix, senderDomains: senders.length };
}
