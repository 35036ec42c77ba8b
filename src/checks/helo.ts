// HELO/EHLO sanity: syntax (RFC 5321 §4.1.1.1, §4.1.3), fully qualified, and
// not our own name. Pure syntax and comparison: no DNS.
//
// Mapping to Postfix restrictions (smtpd_check.c):
// - 'missing'    ~ smtpd_helo_required = yes (no HELO/EHLO before MAIL FROM).
// - 'invalid'    ~ reject_invalid_helo_hostname: same hostname rules as Postfix's
//                  valid_hostname() (letters, digits, '-', '_'; labels 1-63
//                  octets without a leading or trailing '-'; at most 255 octets;
//                  not all-numeric; one trailing dot ignored) and the same
//                  literal rules as valid_mailhost_addr() ([IPv4] or [IPv6:...]).
//                  Stricter than Postfix in one point: a bare IP address
//                  without brackets is 'invalid' here; Postfix still accepts it
//                  "for backwards compatibility", RFC 5321 does not.
//                  Non-ASCII names are 'invalid', as in Postfix (EAI is not
//                  allowed in reject_invalid_helo_hostname).
// - 'not_fqdn'   ~ reject_non_fqdn_helo_hostname: a syntactically valid name with no dot.
// - 'literal_mismatch': an address literal that is not the client address
//                  (Postfix has no restriction for this; RFC 5321 §4.1.4 allows
//                  a server to note the mismatch, and literals that lie are a spam sign).
// - 'forged'     : a non-trusted client claims to be us (one of our names, or a
//                  literal of one of our addresses); Postfix users do this with
//                  check_helo_access maps.
import net from 'node:net';
import { canonicalIp } from './fcrdns.ts';

export interface HeloVerdict {
  result: 'pass' | 'missing' | 'invalid' | 'not_fqdn' | 'literal_mismatch' | 'forged';
  /** Human explanation for logs. */
  detail: string;
}

export interface HeloInput {
  /** Postfix helo_name ('' before HELO/EHLO). */
  helo: string;
  clientIp: string;
  /** myhostname and our domains. */
  ourNames: readonly string[];
  /** Our own IP addresses (a literal of one of them from elsewhere is forged). */
  ourAddresses?: readonly string[];
  /** Our own networks / authenticated clients: claiming our name is not forgery then. */
  trusted?: boolean;
}

/** Longest host name Postfix accepts (VALID_HOSTNAME_LEN). */
const MAX_NAME = 255;
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/** Why `name` (no brackets, trailing dot already removed) is not a valid host name, or undefined when it is. */
export function hostnameProblem(name: string): string | undefined {
  if (name.length > MAX_NAME) return `longer than ${MAX_NAME} characters`;
  if (/[^\x21-\x7e]/.test(name)) return 'contains non-ASCII, space or control characters';
  const labels = name.split('.');
  for (const label of labels) {
    if (label === '') return 'empty label';
    if (label.length > 63) return 'label longer than 63 characters';
    if (!LABEL.test(label)) return /^[a-z0-9_-]+$/i.test(label) ? `label "${label}" starts or ends with "-"` : `invalid character in "${label}"`;
  }
  if (labels.every((l) => /^\d+$/.test(l))) return 'numeric name';
  return undefined;
}

const normName = (n: string): string => n.trim().toLowerCase().replace(/\.$/, '');

export function checkHelo(input: HeloInput): HeloVerdict {
  const raw = input.helo ?? '';
  const helo = raw.trim();
  if (helo === '') return { result: 'missing', detail: 'no HELO/EHLO name' };
  const shown = JSON.stringify(helo.length > 100 ? `${helo.slice(0, 100)}...` : helo);
  const client = canonicalIp(input.clientIp);
  const ourAddresses = new Set((input.ourAddresses ?? []).map((a) => canonicalIp(a)).filter((a) => a !== undefined));

  const literal = /^\[(.*)\]$/s.exec(helo);
  if (literal) {
    const inner = literal[1]!;
    const v6 = /^ipv6:(.*)$/is.exec(inner);
    // RFC 5321 §4.1.3: [IPv4] or [IPv6:...]; an untagged IPv6 address is not a valid literal.
    const ok = v6 ? net.isIPv6(v6[1]!) && !v6[1]!.includes('%') : net.isIPv4(inner);
    if (!ok) return { result: 'invalid', detail: `HELO ${shown} is not a valid address literal` };
    const addr = canonicalIp(v6 ? v6[1]! : inner)!;
    if (client !== undefined && addr === client) return { result: 'pass', detail: `HELO ${shown} is the client address` };
    if (ourAddresses.has(addr) && !input.trusted) return { result: 'forged', detail: `HELO ${shown} is one of our addresses` };
    return { result: 'literal_mismatch', detail: `HELO ${shown} is not the client address ${client ?? input.clientIp}` };
  }

  if (net.isIP(helo) !== 0) return { result: 'invalid', detail: `HELO ${shown} is an IP address without brackets` };
  // Postfix ignores one trailing dot (dup_if_truncate), not two.
  const name = helo.length > 1 && helo.endsWith('.') && !helo.endsWith('..') ? helo.slice(0, -1) : helo;
  const problem = hostnameProblem(name);
  if (problem !== undefined) return { result: 'invalid', detail: `HELO ${shown} is not a valid host name: ${problem}` };
  if (!name.includes('.')) return { result: 'not_fqdn', detail: `HELO ${shown} is not a fully qualified domain name` };

  const lower = name.toLowerCase();
  if (!input.trusted && input.ourNames.some((n) => normName(n) === lower)) {
    return { result: 'forged', detail: `HELO ${shown} is our own name` };
  }
  return { result: 'pass', detail: `HELO ${shown} is a valid host name` };
}
