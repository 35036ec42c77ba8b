// Mail::DKIM (Debian libmail-dkim-perl) as an independent verifier: its ARC
// verifier checks the ARC sets mailwarden seals, its DKIM verifier the
// signatures mailwarden makes. Net::DNS is pointed at the test DNS server
// (host and port), so nothing outside 127/8 is ever asked.
import { spawn } from 'node:child_process';

export interface MailDkimSignature {
  /** ARC-Seal, ARC-Message-Signature or DKIM-Signature (Mail::DKIM's class, shortened). */
  readonly kind: string;
  readonly instance?: number;
  readonly domain: string;
  readonly selector: string;
  readonly result: string;
  readonly detail: string;
}

export interface MailDkimResult {
  /** pass, fail, none, invalid, temperror, ... (Mail::DKIM's result for the whole message). */
  readonly result: string;
  readonly detail: string;
  readonly signatures: readonly MailDkimSignature[];
}

// Reads the message from stdin (line ends made CRLF, as Mail::DKIM wants), prints one JSON object.
const SCRIPT = String.raw`
use strict; use warnings;
use JSON::PP; use Net::DNS::Resolver; use Mail::DKIM::DNS; use Mail::DKIM::Verifier; use Mail::DKIM::ARC::Verifier;
my ($mode, $host, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => [$host], port => $port, recurse => 1, udp_timeout => 5, tcp_timeout => 5, retry => 1));
my $v = $mode eq 'arc' ? Mail::DKIM::ARC::Verifier->new() : Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\r?\n\z/\r\n/; $v->PRINT($line); }
$v->CLOSE;
my @sigs = map {
  my $kind = ref($_); $kind =~ s/^Mail::DKIM::(ARC::)?//;
  { kind => $kind, instance => ($_->can('instance') ? ($_->instance // 0) + 0 : undef), domain => $_->domain // '',
    selector => $_->selector // '', result => $_->result // '', detail => $_->result_detail // '' }
} $v->signatures;
print JSON::PP->new->canonical->encode({ result => $v->result // '', detail => $v->result_detail // '', signatures => \@sigs });
`;

function run(mode: 'arc' | 'dkim', message: string | Buffer, dns: { host: string; port: number }): Promise<MailDkimResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('perl', ['-e', SCRIPT, mode, dns.host, String(dns.port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`Mail::DKIM ${mode} verifier exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out) as MailDkimResult);
      } catch {
        reject(new Error(`Mail::DKIM ${mode} verifier printed ${JSON.stringify(out)} ${err}`));
      }
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(message);
  });
}

/** Mail::DKIM::ARC::Verifier: the chain's verdict (pass/fail/none) and every ARC signature's. */
export function mailDkimArcVerify(message: string | Buffer, dns: { host: string; port: number }): Promise<MailDkimResult> {
  return run('arc', message, dns);
}

/** Mail::DKIM::Verifier: DKIM-Signature results (rsa-sha1/rsa-sha256; this Mail::DKIM has no Ed25519). */
export function mailDkimVerify(message: string | Buffer, dns: { host: string; port: number }): Promise<MailDkimResult> {
  return run('dkim', message, dns);
}
