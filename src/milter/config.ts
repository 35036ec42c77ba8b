// The `milter:` section of mailwarden.yaml: the Sendmail-protocol milter that
// Postfix calls through smtpd_milters / non_smtpd_milters (postfix.md §3).
//
//   milter:
//     listen: unix:/var/spool/postfix/mailwarden/milter.sock   # or inet:127.0.0.1:8891
//     authserv_id: mx.example.org      # default: policy.myhostname, else the host name
//     timeout: 120s                    # longest end-of-message work (Postfix waits 300 s)
//     max_message_size: 64M            # larger messages pass unverified/unsigned, logged
//     on_error: accept                 # or tempfail: what an internal failure answers
//     workers: auto                    # threads that verify/sign/seal: auto = none below 4 cores, else half; 0 = main thread
//     dmarc:
//       reject: reject                 # p=reject failures: reject | quarantine | accept
//       quarantine: hold               # what quarantine means: hold | header | accept
//       trusted_arc_sealers: [google.com]   # ARC pass sealed by these overrides a DMARC fail
//       exempt_domains: [lists.example.net] # From domains whose DMARC policy is never enforced
//       exempt_networks: [192.0.2.0/24]     # SMTP clients whose mail is never DMARC-rejected
//     signing:
//       daemon_names: [ORIGINATING]    # {daemon_name} values (milter_macro_daemon_name) that sign
//       sign_authenticated: true       # SASL-authenticated clients ({auth_authen}) sign
//       local_submissions: true        # sendmail(1)/pickup through non_smtpd_milters sign
//     arc:
//       seal: false                    # ARC-seal inbound mail that an alias forwards outside our domains
//       domain: example.org            # d= of the seal: a domain with a key in the DKIM key store
//       selector: s2026                # default: the domain's RSA signing key
import { availableParallelism, hostname } from 'node:os';
import { isMap, isScalar, isSeq, type Node, type YAMLMap } from 'yaml';
import { normalizeDomain } from '../core/address.ts';
import { parseSize, type NodeReader } from '../config/reader.ts';
import { readService, type ServiceListen } from '../config/load.ts';
import { normalizeSelector } from '../dkim/keys.ts';

/** What a DMARC p=reject failure does here. */
export type DmarcRejectAction = 'reject' | 'quarantine' | 'accept';
/** What quarantine means: the Postfix hold queue, a header for Sieve to file into Junk, or nothing. */
export type DmarcQuarantineAction = 'hold' | 'header' | 'accept';

export interface MilterDmarcConfig {
  readonly reject: DmarcRejectAction;
  readonly quarantine: DmarcQuarantineAction;
  /** Lower-case domains; an ARC pass whose newest seal (d=) is one of these overrides a DMARC fail. */
  readonly trustedArcSealers: readonly string[];
  /** Lower-case author domains (and their subdomains) whose policy is reported but never enforced. */
  readonly exemptDomains: readonly string[];
  /** CIDRs of SMTP clients (forwarders, list servers) whose mail is never rejected or held for DMARC. */
  readonly exemptNetworks: readonly string[];
}

export interface MilterSigningConfig {
  /** `{daemon_name}` values that mean "our users' mail" (master.cf `-o milter_macro_daemon_name=ORIGINATING`). */
  readonly daemonNames: readonly string[];
  readonly signAuthenticated: boolean;
  /** Mail that Postfix's cleanup hands over from sendmail(1)/pickup (emulated localhost connection). */
  readonly localSubmissions: boolean;
}

/**
 * ARC sealing of mail we forward: inbound messages with a recipient that
 * virtual_alias_maps expands to an address outside our domains get an ARC set
 * (RFC 8617), so the next hop can trust our verdicts although forwarding
 * broke SPF (and a footer-free forward keeps DKIM, but not always).
 */
export interface MilterArcConfig {
  readonly seal: boolean;
  /** d= of the seals: the key comes from the DKIM key store (dkim.key_dir). Set when seal is true. */
  readonly domain?: string;
  /** s=; default: the domain's RSA signing key (the one DKIM signs with now). */
  readonly selector?: string;
}

export interface MilterConfig extends ServiceListen {
  /** RFC 8601 authserv-id in Authentication-Results; forged headers carrying it are removed. */
  readonly authservId: string;
  /** Deadline for the end-of-message work (verification or signing). */
  readonly timeoutMs: number;
  /** Messages larger than this are passed on untouched (0 = no limit). */
  readonly maxMessageSize: number;
  /** Answer on an internal failure or a missed deadline: accept (logged) or tempfail (451 4.7.1). */
  readonly onError: 'accept' | 'tempfail';
  /**
   * Worker threads that run mailauth (DKIM/ARC/DMARC verification, DKIM
   * signing, ARC sealing); 0 = in the main thread. `auto` in the file: one per
   * core when there is more than one.
   */
  readonly workers: number;
  readonly dmarc: MilterDmarcConfig;
  readonly signing: MilterSigningConfig;
  readonly arc: MilterArcConfig;
}

export const MILTER_DEFAULTS = {
  timeoutMs: 120_000,
  maxMessageSize: 64 * 1024 * 1024,
  onError: 'accept',
  daemonNames: ['ORIGINATING'],
} as const;

/** Most worker threads milter.workers takes (each holds a V8 heap and mailauth, ~20-30 MB). */
export const MAX_MILTER_WORKERS = 64;

const MILTER_KEYS = ['authserv_id', 'timeout', 'max_message_size', 'on_error', 'workers', 'dmarc', 'signing', 'arc'];
const DMARC_KEYS = ['reject', 'quarantine', 'trusted_arc_sealers', 'exempt_domains', 'exempt_networks'];
const SIGNING_KEYS = ['daemon_names', 'sign_authenticated', 'local_submissions'];
const ARC_KEYS = ['seal', 'domain', 'selector'];
/** RFC 8601 authserv-id: a value (token); we take a host name, the usual choice. */
const AUTHSERV_ID = /^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;

export function readMilterConfig(r: NodeReader, top: YAMLMap | undefined): MilterConfig | undefined {
  const service = readService(r, top, 'milter', MILTER_KEYS);
  if (!service) return undefined;
  // readService checked the mapping and its keys.
  const sec = r.node(top, 'milter') as YAMLMap;

  const authservId = r.string(sec, 'authserv_id', 'milter.authserv_id') ?? policyHostname(top) ?? hostname();
  if (!AUTHSERV_ID.test(authservId) && r.node(sec, 'authserv_id')) {
    r.fail(r.node(sec, 'authserv_id'), 'milter.authserv_id must be a host name like mx.example.org');
  }

  const timeoutMs = r.duration(sec, 'timeout', 'milter.timeout') ?? MILTER_DEFAULTS.timeoutMs;
  // Postfix's milter_content_timeout is 300 s per read; PROGRESS keeps it alive, but not forever.
  if (timeoutMs < 1000 || timeoutMs > 600_000) r.fail(r.node(sec, 'timeout'), 'milter.timeout must be between 1s and 10m');

  let maxMessageSize: number = MILTER_DEFAULTS.maxMessageSize;
  const sizeNode = r.node(sec, 'max_message_size');
  if (sizeNode !== undefined) {
    const size = isScalar(sizeNode) ? parseSize(String(sizeNode.value)) : undefined;
    if (size === undefined) r.fail(sizeNode, 'milter.max_message_size must be a size like 64M, 1G or 0 (no limit)');
    else maxMessageSize = size;
  }

  const onError = r.choice(sec, 'on_error', 'milter.on_error', ['accept', 'tempfail'] as const, MILTER_DEFAULTS.onError);
  const workers = readWorkers(r, sec);

  const d = r.section(sec, 'dmarc', 'milter.dmarc', DMARC_KEYS);
  const dmarc: MilterDmarcConfig = {
    reject: r.choice(d, 'reject', 'milter.dmarc.reject', ['reject', 'quarantine', 'accept'] as const, 'reject'),
    quarantine: r.choice(d, 'quarantine', 'milter.dmarc.quarantine', ['hold', 'header', 'accept'] as const, 'header'),
    trustedArcSealers: domainList(r, d, 'trusted_arc_sealers', 'milter.dmarc.trusted_arc_sealers'),
    exemptDomains: domainList(r, d, 'exempt_domains', 'milter.dmarc.exempt_domains'),
    exemptNetworks: r.cidrList(d, 'exempt_networks', 'milter.dmarc.exempt_networks') ?? [],
  };

  const s = r.section(sec, 'signing', 'milter.signing', SIGNING_KEYS);
  const daemonNames = r.stringList(s, 'daemon_names', 'milter.signing.daemon_names') ?? [...MILTER_DEFAULTS.daemonNames];
  const signing: MilterSigningConfig = {
    daemonNames: daemonNames.map((n) => n.trim()).filter((n) => n !== ''),
    signAuthenticated: r.boolean(s, 'sign_authenticated', 'milter.signing.sign_authenticated') ?? true,
    localSubmissions: r.boolean(s, 'local_submissions', 'milter.signing.local_submissions') ?? true,
  };

  const arc = readArc(r, r.section(sec, 'arc', 'milter.arc', ARC_KEYS));

  return { ...service, authservId, timeoutMs, maxMessageSize, onError, workers, dmarc, signing, arc };
}

/** milter.workers: auto (default), or 0..MAX_MILTER_WORKERS. */
function readWorkers(r: NodeReader, sec: YAMLMap): number {
  const node = r.node(sec, 'workers');
  if (node === undefined || (isScalar(node) && node.value === 'auto')) return autoWorkers();
  return r.integer(sec, 'workers', 'milter.workers (auto or a number)', 0, MAX_MILTER_WORKERS) ?? autoWorkers();
}

/**
 * None below 4 cores: on 2 cores, shared with Postfix (1.6-3 ms of CPU per
 * message itself), the hand-over to a thread costs more than it frees
 * (bench/README.md, milter, session 4: the main thread verified 913/1,228/1,335
 * msg/s at C=1/10/50, two threads 431/1,284/1,435, with twice the memory).
 * From 4 cores on, half of them, leaving the rest to Postfix and the main thread.
 */
export function autoWorkers(cores = availableParallelism()): number {
  return cores >= 4 ? Math.min(Math.floor(cores / 2), MAX_MILTER_WORKERS) : 0;
}

function readArc(r: NodeReader, a: YAMLMap | undefined): MilterArcConfig {
  const seal = r.boolean(a, 'seal', 'milter.arc.seal') ?? false;
  const domainText = r.string(a, 'domain', 'milter.arc.domain');
  const domain = domainText === undefined ? undefined : normalizeDomain(domainText);
  if (domainText !== undefined && !domain) r.fail(r.node(a, 'domain'), `milter.arc.domain: not a domain name: ${JSON.stringify(domainText)}`);
  const selectorText = r.string(a, 'selector', 'milter.arc.selector');
  const selector = selectorText === undefined ? undefined : normalizeSelector(selectorText);
  if (selectorText !== undefined && !selector) r.fail(r.node(a, 'selector'), `milter.arc.selector: not a selector (DNS labels): ${JSON.stringify(selectorText)}`);
  // Which key signs is only known at run time (keys come and go with `mailwarden dkim`); the domain must be named.
  if (seal && domainText === undefined) r.fail(r.node(a, 'seal'), 'milter.arc.seal: true needs milter.arc.domain (the domain whose DKIM key seals)');
  return { seal, ...(domain ? { domain } : {}), ...(selector ? { selector } : {}) };
}

/** policy.myhostname without reporting anything: the policy section reports its own errors. */
function policyHostname(top: YAMLMap | undefined): string | undefined {
  const policy = top?.get('policy', true);
  if (!isMap(policy)) return undefined;
  const node = policy.get('myhostname', true);
  return isScalar(node) && typeof node.value === 'string' && AUTHSERV_ID.test(node.value) ? node.value : undefined;
}

function domainList(r: NodeReader, map: YAMLMap | undefined, key: string, path: string): string[] {
  const node = r.node(map, key);
  const out: string[] = [];
  for (const [i, text] of (r.stringList(map, key, path) ?? []).entries()) {
    const domain = normalizeDomain(text);
    if (domain) out.push(domain);
    else r.fail(isSeq(node) ? (node.items[i] as Node) : node, `${path}: not a domain name: ${JSON.stringify(text)}`);
  }
  return out;
}
