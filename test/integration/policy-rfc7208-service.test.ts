// The RFC 7208 suite (203 cases) through the policy service as Postfix uses
// it: `bin/mailwarden serve` with a policy: section, a policy request per case
// over persistent connections, and the SPF result read back from the
// `PREPEND Received-SPF: <result> ...` action. The zone data is served by the
// test DNS server the daemon is configured with (dns.servers).
//
// The daemon caches DNS answers for at least 5 s and the scenarios reuse names
// (example.com, mail.example.com...) with different data, so the daemon is
// restarted for every scenario: a fresh process, a fresh cache. The exp= text
// is not part of Received-SPF, so only results are compared; SKIPPED entries
// that differ in the explanation alone must therefore pass here.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { encodePolicyRequest, PolicyReplyDecoder } from '../../src/policy/codec.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { loadRfc7208Suite, runRfc7208Suite, type Rfc7208Case, type Rfc7208Run } from '../support/rfc7208.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
// Importing the test file also registers its evaluateSpf run in this process (about 1 s).
import { SKIPPED } from '../support/rfc7208.ts';

const RECIPIENT = 'postmaster@rcpt.mailwarden.test';
/** Cases whose only difference is the exp= text: invisible in Received-SPF, so they must pass here. */
const EXPLANATION_ONLY = new Set(Object.entries(SKIPPED).filter(([, why]) => why.startsWith('explanation text only')).map(([name]) => name));
const EXPECTED_MISMATCHES = Object.keys(SKIPPED).filter((name) => !EXPLANATION_ONLY.has(name)).sort();

/** One policy connection, as one smtpd process holds it: requests one at a time, replies in order. */
class PolicyConnection {
  readonly socket: Socket;
  #decoder = new PolicyReplyDecoder();
  #replies: string[] = [];
  #waiter: (() => void) | undefined;
  #closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#replies.push(...this.#decoder.push(chunk));
      this.#wake();
    });
    socket.on('error', () => {});
    socket.once('close', () => {
      this.#closed = true;
      this.#wake();
    });
  }

  static open(path: string): Promise<PolicyConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('connect', () => resolve(new PolicyConnection(socket)));
      socket.once('error', reject);
    });
  }

  async ask(attrs: Record<string, string>): Promise<string> {
    this.socket.write(encodePolicyRequest(attrs));
    for (;;) {
      const reply = this.#replies.shift();
      if (reply !== undefined) return reply;
      if (this.#closed) throw new Error('policy service closed the connection without a reply');
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  close(): void {
    this.socket.destroy();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}

let tmp: TempDir;
let dns: TestDnsServer;
let daemon: Daemon | undefined;
let configPath: string;
let socketPath: string;
let restarts = 0;
let restartMs = 0;
/** Idle connections to the current daemon, and every connection opened to it. */
let idle: PolicyConnection[] = [];
let opened: PolicyConnection[] = [];
let instanceCounter = 0;
const actions = new Map<string, string>();

async function restartDaemon(): Promise<void> {
  for (const c of opened) c.close();
  idle = [];
  opened = [];
  await daemon?.stop();
  const t = performance.now();
  daemon = await startDaemon(configPath);
  restartMs += performance.now() - t;
  restarts++;
}

/** One RCPT request on a persistent connection (a new instance per case); returns the action. */
async function askPolicy(c: Rfc7208Case): Promise<string> {
  const conn = idle.pop() ?? (await PolicyConnection.open(socketPath));
  if (!opened.includes(conn)) opened.push(conn);
  const instance = `rfc7208.${++instanceCounter}`;
  const action = await conn.ask({
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    protocol_name: 'ESMTP',
    client_address: c.host,
    client_name: 'unknown',
    reverse_client_name: 'unknown',
    helo_name: c.helo,
    sender: c.mailfrom,
    recipient: RECIPIENT,
    recipient_count: '0',
    queue_id: '',
    instance,
    size: '0',
  });
  idle.push(conn);
  return action;
}

const suite = loadRfc7208Suite();
let run: Rfc7208Run;

before(async () => {
  tmp = await tempDir('policy-rfc7208');
  dns = await startDnsServer({});
  const directoryPath = join(tmp.path, 'directory.yaml');
  const store = YamlDirectory.open(directoryPath);
  const admin = new DirectoryAdmin(store);
  await admin.addDomain('rcpt.mailwarden.test');
  await admin.addMailbox(RECIPIENT);
  await store.close();
  socketPath = join(tmp.path, 'policy.sock');
  configPath = join(tmp.path, 'mailwarden.yaml');
  writeFileSync(configPath, [
    'directory:', '  backend: yaml', `  path: ${directoryPath}`,
    'log:', '  level: info',
    'dns:', `  servers: ["${dns.address}"]`, '  timeout: 500ms',
    'policy:', `  listen: unix:${socketPath}`,
    '  myhostname: mx.mailwarden.test',
    // No suite client is in TEST-NET-3: every case takes the untrusted (SPF-checked) path.
    '  mynetworks: ["203.0.113.0/24"]',
    '  spf:', '    helo: false', '    on_fail: annotate', '    on_softfail: annotate', '    on_permerror: annotate', '    on_temperror: annotate',
    '  fcrdns:', '    action: ignore',
    '  helo:', '    action: ignore',
  ].join('\n'));

  run = await runRfc7208Suite({
    server: dns,
    compareExplanation: false,
    evaluator: async () => {
      await restartDaemon();
      return async (c) => {
        const action = await askPolicy(c);
        actions.set(c.name, action);
        const m = /^PREPEND Received-SPF: ([a-z]+) /.exec(action);
        if (!m) return { result: `action: ${action}` };
        // The identity checked is the MAIL FROM, or the HELO name for the null sender.
        assert.match(action, new RegExp(`identity=${c.mailfrom === '' ? 'helo' : 'mailfrom'};$`), action);
        assert.ok(Buffer.byteLength(action) - 'PREPEND '.length <= 998, action);
        return { result: m[1]! };
      };
    },
  });
  console.log(
    `RFC 7208 suite through the policy service: ${run.passed}/${run.total} pass, ${run.mismatches.size} mismatches ` +
      `(${EXPECTED_MISMATCHES.length} expected), ${Math.round(run.ms)} ms, ${restarts} daemon starts (${Math.round(restartMs / restarts)} ms each)`,
  );
});

after(async () => {
  for (const [name, why] of run?.mismatches ?? []) {
    if (!EXPECTED_MISMATCHES.includes(name)) console.log(`  unexpected mismatch ${name}: ${why} (${actions.get(name)})`);
  }
  for (const c of opened) c.close();
  await daemon?.stop();
  await dns?.stop();
  await tmp?.remove();
});

describe('RFC 7208 suite through the policy service', () => {
  it('ran all 203 cases, one daemon per scenario, and the DNS server could serve all zone data', () => {
    assert.equal(run.total, 203);
    assert.equal(restarts, suite.length);
    assert.deepEqual(run.dnsProblems, []);
  });

  it('every request got a Received-SPF PREPEND (annotate everywhere: no reject, no default action)', () => {
    const other = [...actions].filter(([, a]) => !a.startsWith('PREPEND Received-SPF: '));
    assert.deepEqual(other, []);
  });

  it('mismatches are exactly the SKIPPED cases, except those that differ in the explanation only', () => {
    assert.ok(EXPLANATION_ONLY.size > 0 || Object.keys(SKIPPED).length === 0);
    for (const name of EXPLANATION_ONLY) assert.ok(suite.some((s) => s.cases.some((c) => c.name === name)), name);
    assert.deepEqual([...run.mismatches.keys()].sort(), EXPECTED_MISMATCHES);
  });

  it('each decision was logged with its SPF facts', async () => {
    // The last daemon's log: its scenario's cases all have a decision line with the same result as the header.
    // Log lines arrive through the child's stdout pipe after the replies: wait for them under load.
    await daemon!.waitForLog((l) => l['msg'] === 'policy decision', 10_000);
    await new Promise((r) => setTimeout(r, 500));
    const lines = daemon!.lines.filter((l) => l['msg'] === 'policy decision');
    assert.ok(lines.length > 0);
    for (const l of lines) {
      const spf = (l['checks'] as { spf?: { result: string } }).spf;
      assert.ok(spf, JSON.stringify(l));
      assert.equal(l['decided_by'], 'pass');
      assert.equal(l['recipient'], RECIPIENT);
      assert.match(String(l['action']), new RegExp(`^PREPEND Received-SPF: ${spf.result} `));
    }
  });
});
