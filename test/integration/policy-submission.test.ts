// Submission through a real Postfix with SMTP AUTH via Dovecot SASL (which
// asks mailwarden's auth endpoint), and mailwarden's policy service deciding
// who may use which envelope sender and how many messages a login may send —
// no reject_sender_login_mismatch, no hand-written map: only the documented
// check_policy_service lines. Then a MariaDB outage under the policy service:
// mail is deferred (4xx), never rejected.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { DEFAULT_ARGON2 } from '../../src/config/load.ts';
import { mailwardenAuthConf23, startDovecot, withDovecotLogs, writeMailwardenLua, type DovecotInstance } from '../support/dovecot.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { sendMail, startPostfix, withPostfixLogs, type PostfixInstance, type SendMailResult } from '../support/postfix.ts';
import { startLmtpSink, type LmtpSink } from '../support/lmtp-sink.ts';
import { startDnsServer, type TestDnsServer } from '../support/dns-server.ts';
import { startMariaDb, type MariaDb } from '../support/mariadb.ts';
import { freePort } from '../support/ports.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
import { MAIN_CF, readMainCf } from '../support/postfix-conf.ts';

const SECRET = 'submission-secret-0123456789';
const rcptReply = (r: SendMailResult) => r.replies.find((x) => /^RCPT TO/i.test(x.command));

describe('submission: SASL via Dovecot, sender ownership and send rate from the policy service', () => {
  let tmp: TempDir;
  let dovecot: DovecotInstance;
  let daemon: Daemon;
  let postfix: PostfixInstance;
  let sink: LmtpSink;

  before(async () => {
    tmp = await tempDir('policy-submission');
    const directoryPath = join(tmp.path, 'directory.yaml');
    const a = new DirectoryAdmin(YamlDirectory.open(directoryPath));
    await a.addDomain('example.org');
    await a.addMailbox('alice@example.org', { passwordHash: await hashPassword('alice pw', DEFAULT_ARGON2) });
    await a.addMailbox('bob@example.org', { passwordHash: await hashPassword('bob pw', DEFAULT_ARGON2) });
    await a.addAlias('info@example.org', ['alice@example.org']);

    const port = await freePort();
    const luaFile = join(tmp.path, 'mailwarden.lua');
    await writeMailwardenLua(luaFile, { url: `http://127.0.0.1:${port}`, secret: SECRET, timeoutMs: 3000 });
    dovecot = await startDovecot({ conf: await mailwardenAuthConf23(luaFile) });
    sink = await startLmtpSink();
    const documented = readMainCf(MAIN_CF);
    postfix = await startPostfix({
      mainCf: {
        ...documented,
        virtual_transport: sink.transport,
        mynetworks: '127.0.0.254/32',
        smtpd_peername_lookup: 'no',
        // The submission entry of postfix-conf/master.cf, as main.cf settings of a test instance,
        // minus reject_sender_login_mismatch: here mailwarden's policy alone decides.
        smtpd_sasl_auth_enable: 'yes',
        smtpd_sasl_type: 'dovecot',
        smtpd_sasl_path: dovecot.authClientSocket,
        smtpd_relay_restrictions: 'permit_sasl_authenticated, reject',
      },
    });
    const queue = postfix.queueDir;
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      'directory:', '  backend: yaml', `  path: ${directoryPath}`,
      'log:', '  level: debug',
      // Nothing here may need DNS: an unused loopback port makes any lookup fail fast.
      'dns:', '  servers: ["127.0.0.1:9"]', '  timeout: 500ms',
      'auth:', `  listen: inet:127.0.0.1:${port}`, `  secret: ${SECRET}`,
      'socketmap:', `  listen: unix:${queue}/mailwarden/socketmap.sock`, '  mode: "0666"',
      'policy:', `  listen: unix:${queue}/mailwarden/policy.sock`, '  mode: "0666"',
      '  myhostname: mx.mailwarden.test',
      '  rate_limit:', '    messages: { count: 3, window: 1h }',
    ].join('\n'));
    daemon = await startDaemon(config);
  });

  after(async () => {
    await daemon?.stop();
    await postfix?.stop();
    await dovecot?.stop();
    await sink?.close();
    await tmp?.remove();
  });

  const submit = (user: string, password: string, from: string, to = ['bob@example.org']) => sendMail({
    port: postfix.smtpPort, from, to, swaksArgs: ['--auth', 'PLAIN', '--auth-user', user, '--auth-password', password],
  });
  const decision = (pred: (l: Record<string, unknown>) => boolean) =>
    daemon.waitForLog((l) => l['msg'] === 'policy decision' && pred(l), 5000);

  it('a login may use its own address, plus address and aliases, not another user\'s address', () =>
    withDovecotLogs(dovecot, () => withPostfixLogs(postfix, async () => {
      const own = await submit('bob@example.org', 'bob pw', 'bob+lists@example.org', ['alice@example.org']);
      assert.equal(own.code, 250, own.transcript);
      const forged = await submit('bob@example.org', 'bob pw', 'alice@example.org', ['alice@example.org']);
      assert.match(rcptReply(forged)?.text ?? forged.transcript, /^553 5\.7\.1 .*Sender address <alice@example\.org> not owned by user bob@example\.org/);
      const line = await decision((l) => l['sender'] === 'alice@example.org' && l['decided_by'] === 'sender_login');
      assert.deepEqual((line['checks'] as { sender_login: { owners: string } }).sender_login.owners, 'alice@example.org', 'the log names the real owner');
      const viaAlias = await submit('alice@example.org', 'alice pw', 'info@example.org', ['bob@example.org']);
      assert.equal(viaAlias.code, 250, viaAlias.transcript);
    })));

  it('a login is rate-limited per message, counted once at DATA whatever the number of recipients', () =>
    withPostfixLogs(postfix, async () => {
      // bob already sent one message above; the limit is 3 messages per hour.
      const second = await submit('bob@example.org', 'bob pw', 'bob@example.org', ['alice@example.org', 'info@example.org']);
      assert.equal(second.code, 250, second.transcript);
      const third = await submit('bob@example.org', 'bob pw', 'bob@example.org', ['alice@example.org']);
      assert.equal(third.code, 250, third.transcript);
      const fourth = await submit('bob@example.org', 'bob pw', 'bob@example.org', ['alice@example.org']);
      assert.match(rcptReply(fourth)?.text ?? fourth.transcript, /^450 4\.7\.1 .*Sender rate limit exceeded for bob@example\.org \(3 messages per 1h\)/);
      const line = await decision((l) => l['decided_by'] === 'rate_limit');
      assert.equal((line['checks'] as { rate: { messages: number } }).rate.messages, 3);
      // Another login has its own budget.
      const alice = await submit('alice@example.org', 'alice pw', 'alice@example.org', ['bob@example.org']);
      assert.equal(alice.code, 250, alice.transcript);
    }));
});

describe('policy service during a MariaDB outage', () => {
  let db: MariaDb;
  let tmp: TempDir;
  let dns: TestDnsServer;
  let postfix: PostfixInstance;
  let daemon: Daemon;

  before(async () => {
    db = await startMariaDb();
    const url = await db.createDatabase('mw_policy_outage');
    const dirConfig = { backend: 'mysql' as const, url, poolSize: 2, queryTimeoutMs: 500, cacheTtlMs: 60_000, cacheSize: 1000 };
    await migrateDatabase(dirConfig);
    const seed = await MysqlDirectory.open(dirConfig, pino({ level: 'silent' }));
    const admin = new DirectoryAdmin(seed);
    await admin.addDomain('example.org');
    await admin.addMailbox('alice@example.org');
    await admin.addMailbox('bob@example.org');
    await seed.close();
    tmp = await tempDir('policy-outage');
    dns = await startDnsServer({ 'pass.test': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'] } });
    const sink = await startLmtpSink();
    postfix = await startPostfix({
      mainCf: { ...readMainCf(MAIN_CF), virtual_transport: sink.transport, mynetworks: '127.0.0.254/32', smtpd_peername_lookup: 'no' },
    });
    const queue = postfix.queueDir;
    const config = join(tmp.path, 'mailwarden.yaml');
    writeFileSync(config, [
      // Without preload: bob@'s row must come from the database (the outage path under test).
      'directory:', '  backend: mysql', `  url: ${JSON.stringify(url)}`, '  query_timeout: 500ms', '  pool_size: 2', '  preload: false',
      'log:', '  level: debug',
      'dns:', `  servers: ["${dns.address}"]`, '  timeout: 1s',
      'socketmap:', `  listen: unix:${queue}/mailwarden/socketmap.sock`, '  mode: "0666"',
      'policy:', `  listen: unix:${queue}/mailwarden/policy.sock`, '  mode: "0666"',
      '  myhostname: mx.mailwarden.test', '  fcrdns:', '    action: ignore',
      '  greylist:', '    delay: 1s',
    ].join('\n'));
    daemon = await startDaemon(config);
    (postfix as { sinkClose?: () => Promise<void> }).sinkClose = () => sink.close();
  });

  after(async () => {
    await daemon?.stop('SIGKILL');
    await (postfix as { sinkClose?: () => Promise<void> } | undefined)?.sinkClose?.();
    await postfix?.stop();
    await dns?.stop();
    await tmp?.remove();
    await db?.stop();
  });

  it('defers (4xx) while the database is down, and accepts again after it is back', () =>
    withPostfixLogs(postfix, async () => {
      const before = await sendMail({ port: postfix.smtpPort, from: 'a@pass.test', to: ['alice@example.org'], swaksArgs: ['--local-interface', '127.0.0.40'] });
      assert.equal(before.code, 250, before.transcript);

      await db.stopServer();
      // bob@ was never looked up: nothing is cached, so the policy's directory lookup fails.
      const down = await sendMail({ port: postfix.smtpPort, from: 'b@pass.test', to: ['bob@example.org'], swaksArgs: ['--local-interface', '127.0.0.41'] });
      const reply = rcptReply(down);
      assert.ok(reply, down.transcript);
      assert.equal(Math.floor(reply.code / 100), 4, `a database outage must never reject mail: ${down.transcript}`);
      assert.doesNotMatch(down.transcript, /^<\*\* 5\d\d/m);

      await db.startServer();
      let again: SendMailResult | undefined;
      for (let i = 0; i < 20; i++) {
        again = await sendMail({ port: postfix.smtpPort, from: 'b@pass.test', to: ['bob@example.org'], swaksArgs: ['--local-interface', '127.0.0.41'] });
        if (again.code === 250) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.equal(again?.code, 250, again?.transcript);
    }));
});
