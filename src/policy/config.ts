// The `policy:` section of mailwarden.yaml: the SMTPD access policy service
// (check_policy_service). Key names follow Postfix where Postfix has one
// (mynetworks, myhostname, postscreen_dnsbl_sites/threshold).
import { hostname } from 'node:os';
import { isSeq, type Node, type YAMLMap } from 'yaml';
import { parseZoneSpec, type ZoneSpec } from '../dns/dnsbl.ts';
import { normalizeDomain } from '../core/address.ts';
import type { NodeReader } from '../config/reader.ts';
import { readService, type ServiceListen } from '../config/load.ts';

export type SpfRejectable = 'reject' | 'annotate';
export type DnsblAction = 'reject' | 'defer' | 'warn';
export type ClientCheckAction = 'ignore' | 'warn' | 'defer' | 'reject';

export interface SpfPolicy {
  readonly enabled: boolean;
  /** Also evaluate the HELO identity (RFC 7208 §2.3) and reject on its fail like on MAIL FROM's. */
  readonly helo: boolean;
  readonly onFail: SpfRejectable;
  readonly onSoftfail: SpfRejectable;
  readonly onPermerror: SpfRejectable;
  readonly onTemperror: 'defer' | 'annotate';
  /** Clients never SPF-checked (backup MX, known forwarders): CIDRs. */
  readonly skipNetworks: readonly string[];
}

export interface DnsListPolicy {
  readonly sites: readonly ZoneSpec[];
  readonly threshold: number;
  readonly action: DnsblAction;
  /** What a zone that cannot answer does: skipped with a log line, or the mail is deferred. */
  readonly onError: 'ignore' | 'defer';
}

export interface RateLimitConfig {
  readonly count: number;
  readonly windowMs: number;
}

export interface GreylistConfig {
  readonly delayMs: number;
  readonly maxAgeMs: number;
  readonly retryWindowMs: number;
  readonly autoAllowAfter: number;
  readonly ipv4Prefix: number;
  readonly ipv6Prefix: number;
}

export interface SmtpdPolicyConfig extends ServiceListen {
  /** Answer when a check fails internally or misses the deadline (Postfix access(5) syntax). */
  readonly defaultAction: string;
  /** Deadline for one decision. */
  readonly timeoutMs: number;
  /** Our name in Received-SPF and in HELO forgery checks. */
  readonly myhostname: string;
  /** Clients trusted to relay (Postfix mynetworks), CIDRs. */
  readonly mynetworks: readonly string[];
  readonly rejectUnknownRecipients: boolean;
  readonly spf: SpfPolicy;
  readonly dnsbl?: DnsListPolicy;
  readonly rhsbl?: DnsListPolicy;
  readonly fcrdns: ClientCheckAction;
  readonly helo: 'ignore' | 'warn' | 'reject';
  readonly senderLogin: boolean;
  readonly rateLimit: { readonly messages?: RateLimitConfig; readonly recipients?: RateLimitConfig };
  readonly greylist?: GreylistConfig;
}

export const POLICY_DEFAULTS = {
  defaultAction: 'DEFER_IF_PERMIT 4.3.0 Policy check failed temporarily, try again later',
  timeoutMs: 10_000,
  mynetworks: ['127.0.0.0/8', '::1/128'],
} as const;

export const GREYLIST_CONFIG_DEFAULTS: GreylistConfig = {
  delayMs: 300_000,
  maxAgeMs: 35 * 86_400_000,
  retryWindowMs: 2 * 86_400_000,
  autoAllowAfter: 5,
  ipv4Prefix: 24,
  ipv6Prefix: 64,
};

/** Rate limits and greylisting keep shared state (src/state); the other checks need none. */
export function needsPolicyState(p: SmtpdPolicyConfig): boolean {
  return Boolean(p.rateLimit.messages || p.rateLimit.recipients || p.greylist);
}

const POLICY_KEYS = [
  'default_action', 'timeout', 'myhostname', 'mynetworks', 'recipients', 'spf', 'dnsbl', 'rhsbl', 'fcrdns', 'helo',
  'sender_login', 'rate_limit', 'greylist',
];

/** Actions Postfix accepts from a policy server that make sense as a fail-safe default. */
const DEFAULT_ACTION = /^(DUNNO|DEFER_IF_PERMIT|DEFER_IF_REJECT|DEFER|4\d\d)(\s|$)/i;

export function readSmtpdPolicy(r: NodeReader, top: YAMLMap | undefined): SmtpdPolicyConfig | undefined {
  const service = readService(r, top, 'policy', POLICY_KEYS);
  if (!service) return undefined;
  // readService checked that it is a mapping and reported unknown keys; checking again would report them twice.
  const sec = r.node(top, 'policy') as YAMLMap;

  const defaultAction = r.string(sec, 'default_action', 'policy.default_action') ?? POLICY_DEFAULTS.defaultAction;
  if (!DEFAULT_ACTION.test(defaultAction) || /[\r\n\0]/.test(defaultAction)) {
    // Fail-safe means never a 5xx: an internal error must not bounce mail.
    r.fail(r.node(sec, 'default_action'), 'policy.default_action must be a temporary action: DEFER_IF_PERMIT, DEFER_IF_REJECT, DEFER, 4NN text or DUNNO');
  }
  const timeoutMs = r.duration(sec, 'timeout', 'policy.timeout') ?? POLICY_DEFAULTS.timeoutMs;
  if (timeoutMs < 100 || timeoutMs > 600_000) r.fail(r.node(sec, 'timeout'), 'policy.timeout must be between 100ms and 10m');

  const myhostname = r.string(sec, 'myhostname', 'policy.myhostname') ?? hostname();
  if (!normalizeDomain(myhostname) && r.node(sec, 'myhostname')) r.fail(r.node(sec, 'myhostname'), 'policy.myhostname must be a fully qualified host name');

  const mynetworks = r.cidrList(sec, 'mynetworks', 'policy.mynetworks') ?? [...POLICY_DEFAULTS.mynetworks];

  const rcpt = r.section(sec, 'recipients', 'policy.recipients', ['reject_unknown']);
  const rejectUnknownRecipients = r.boolean(rcpt, 'reject_unknown', 'policy.recipients.reject_unknown') ?? true;

  const spfSec = r.section(sec, 'spf', 'policy.spf', ['enabled', 'helo', 'on_fail', 'on_softfail', 'on_permerror', 'on_temperror', 'skip_networks']);
  const spf: SpfPolicy = {
    enabled: r.boolean(spfSec, 'enabled', 'policy.spf.enabled') ?? true,
    helo: r.boolean(spfSec, 'helo', 'policy.spf.helo') ?? true,
    onFail: r.choice(spfSec, 'on_fail', 'policy.spf.on_fail', ['reject', 'annotate'], 'reject'),
    onSoftfail: r.choice(spfSec, 'on_softfail', 'policy.spf.on_softfail', ['reject', 'annotate'], 'annotate'),
    onPermerror: r.choice(spfSec, 'on_permerror', 'policy.spf.on_permerror', ['reject', 'annotate'], 'annotate'),
    onTemperror: r.choice(spfSec, 'on_temperror', 'policy.spf.on_temperror', ['defer', 'annotate'], 'defer'),
    skipNetworks: r.cidrList(spfSec, 'skip_networks', 'policy.spf.skip_networks') ?? [],
  };

  const dnsList = (key: 'dnsbl' | 'rhsbl'): DnsListPolicy | undefined => {
    const s = r.section(sec, key, `policy.${key}`, ['sites', 'threshold', 'action', 'on_error']);
    if (!s) return undefined;
    const sitesNode = r.node(s, 'sites');
    const sites: ZoneSpec[] = [];
    for (const [i, text] of (r.stringList(s, 'sites', `policy.${key}.sites`) ?? []).entries()) {
      try {
        sites.push(parseZoneSpec(text));
      } catch (err) {
        r.fail(isSeq(sitesNode) ? (sitesNode.items[i] as Node) : sitesNode, `policy.${key}.sites: ${(err as Error).message}`);
      }
    }
    if (sites.length === 0) return undefined;
    return {
      sites,
      threshold: r.integer(s, 'threshold', `policy.${key}.threshold`, 1, 1000) ?? 1,
      action: r.choice(s, 'action', `policy.${key}.action`, ['reject', 'defer', 'warn'], 'reject'),
      onError: r.choice(s, 'on_error', `policy.${key}.on_error`, ['ignore', 'defer'], 'ignore'),
    };
  };
  const dnsbl = dnsList('dnsbl');
  const rhsbl = dnsList('rhsbl');

  const fcSec = r.section(sec, 'fcrdns', 'policy.fcrdns', ['action']);
  const fcrdns = r.choice(fcSec, 'action', 'policy.fcrdns.action', ['ignore', 'warn', 'defer', 'reject'], 'warn');
  const heloSec = r.section(sec, 'helo', 'policy.helo', ['action']);
  const helo = r.choice(heloSec, 'action', 'policy.helo.action', ['ignore', 'warn', 'reject'], 'warn');
  const slSec = r.section(sec, 'sender_login', 'policy.sender_login', ['enabled']);
  const senderLogin = r.boolean(slSec, 'enabled', 'policy.sender_login.enabled') ?? true;

  const rlSec = r.section(sec, 'rate_limit', 'policy.rate_limit', ['messages', 'recipients']);
  const limit = (key: 'messages' | 'recipients'): RateLimitConfig | undefined => {
    const s = r.section(rlSec, key, `policy.rate_limit.${key}`, ['count', 'window']);
    if (!s) return undefined;
    const count = r.integer(s, 'count', `policy.rate_limit.${key}.count`, 1, 100_000_000);
    if (count === undefined) {
      if (!r.node(s, 'count')) r.fail(s, `policy.rate_limit.${key}.count is required`);
      return undefined;
    }
    const windowMs = r.duration(s, 'window', `policy.rate_limit.${key}.window`) ?? 3_600_000;
    if (windowMs < 1000 || windowMs > 31 * 86_400_000) r.fail(r.node(s, 'window'), `policy.rate_limit.${key}.window must be between 1s and 31d`);
    return { count, windowMs };
  };
  const messages = limit('messages');
  const recipients = limit('recipients');

  const glSec = r.section(sec, 'greylist', 'policy.greylist', ['enabled', 'delay', 'max_age', 'retry_window', 'auto_allow_after', 'ipv4_prefix', 'ipv6_prefix']);
  let greylist: GreylistConfig | undefined;
  if (glSec && (r.boolean(glSec, 'enabled', 'policy.greylist.enabled') ?? true)) {
    const d = GREYLIST_CONFIG_DEFAULTS;
    greylist = {
      delayMs: r.duration(glSec, 'delay', 'policy.greylist.delay') ?? d.delayMs,
      maxAgeMs: r.duration(glSec, 'max_age', 'policy.greylist.max_age') ?? d.maxAgeMs,
      retryWindowMs: r.duration(glSec, 'retry_window', 'policy.greylist.retry_window') ?? d.retryWindowMs,
      autoAllowAfter: r.integer(glSec, 'auto_allow_after', 'policy.greylist.auto_allow_after', 0, 1_000_000) ?? d.autoAllowAfter,
      ipv4Prefix: r.integer(glSec, 'ipv4_prefix', 'policy.greylist.ipv4_prefix', 8, 32) ?? d.ipv4Prefix,
      ipv6Prefix: r.integer(glSec, 'ipv6_prefix', 'policy.greylist.ipv6_prefix', 16, 128) ?? d.ipv6Prefix,
    };
    if (greylist.maxAgeMs <= greylist.retryWindowMs) {
      r.fail(r.node(glSec, 'max_age') ?? r.node(glSec, 'retry_window'), 'policy.greylist.max_age must be longer than retry_window');
    }
  }

  return {
    ...service,
    defaultAction,
    timeoutMs,
    myhostname,
    mynetworks,
    rejectUnknownRecipients,
    spf,
    ...(dnsbl ? { dnsbl } : {}),
    ...(rhsbl ? { rhsbl } : {}),
    fcrdns,
    helo,
    senderLogin,
    rateLimit: { ...(messages ? { messages } : {}), ...(recipients ? { recipients } : {}) },
    ...(greylist ? { greylist } : {}),
  };
}
