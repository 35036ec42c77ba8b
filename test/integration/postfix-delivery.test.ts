// End to end through a real Postfix: postfix-conf/main.cf loaded verbatim,
// mailwarden serving its socketmap from Postfix's queue directory (the
// documented chroot-safe relative path), mail sent with swaks and delivered
// over LMTP to a sink. Once per backend: YAML and MariaDB.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { MysqlDirectory } from '../../src/directory/mysql-backend.ts';
import { migrateDatabase } from '../../src/directory/mysql-admin.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import type { DirectoryBackend } from '../../src/directory/types.ts';
import { EXPECTED, seedFixture } from '../support/directory-fixture.ts';
import { startPostfix, sendMail, type PostfixInstance } from '../support/postfix.ts';
import { startLmtpSink, type LmtpSink } from '../support/lmtp-sink.ts';
import { startDaemon, type Daemon } from '../support/daemon.ts';
import { testMariaDb } from '../support/mariadb.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

import { MAIN_CF, readMainCf } from '../support/postfix-conf.ts';

type Backend = 'yaml' | 'mysql';

for (const backend of ['yaml', 'mysql'] as const satisfies readonly Backend[]) {
  describe(`Postfix + mailwarden socketmap (${backend} directory)`, () => {
    let tmp: TempDir;
    let postfix: PostfixInstance;
    let sink: LmtpSink;
    let daemon: Daemon;
    let socket: string;

    before(async () => {
      tmp = await tempDir(`e2e-${backend}`);
      const directoryConfig = await seedDirectory(backend, tmp.path);
      sink = await startLmtpSink();
      const documented = readMainCf(MAIN_CF);
      postfix = await startPostfix({
        mainCf: {
          ...documented,
          // The test's own plumbing: deliver to the sink, and 127.0.0.1 is an
          // untrusted Internet client (not in mynetworks), like port 25 traffic.
          virtual_transport: sink.transport,
          mynetworks: '127.0.0.254/32',
          // The policy service has its own end-to-end test (policy-postfix.test.ts); here only the maps decide.
          smtpd_recipient_restrictions: '',
          smtpd_data_restrictions: '',
        },
      });
      // The documented relative socket path resolves inside the queue directory.
      assert.match(documented['mailwarden_socketmap']!, /^socketmap:unix:mailwarden\/socketmap\.sock$/);
      socket = join(postfix.queueDir, 'mailwarden/socketmap.sock');
      const config = join(tmp.path, 'mailwarden.yaml');
      writeFileSync(config, [
        directoryConfig,
        'log:', '  level: debug',
        'socketmap:', `  listen: unix:${socket}`, '  mode: "0660"', '  group: postfix',
      ].join('\n'));
      daemon = await startDaemon(config);
    });

    after(async () => {
      await daemon?.stop();
      await postfix?.stop();
      await sink?.close();
      await tmp?.remove();
    });

    it('postmap -q answers every map like the directory does', async () => {
      for (const [map, key, expected] of EXPECTED) {
        if (key === '') continue; // postmap cannot send an empty key
        const r = await postfix.postmap(['-q', key, `socketmap:unix:${socket}:${map}`]);
        if (expected === null) {
          assert.equal(r.code, 1, `${map} ${key}: expected not found, got ${r.stdout} ${r.stderr}`);
          assert.equal(r.stdout, '');
          assert.equal(r.stderr, '', `${map} ${key}: no warning (NOTFOUND, not an error)`);
        } else {
          assert.equal(r.code, 0, `${map} ${key}: ${r.stderr}`);
          assert.equal(r.stdout.trim(), expected, `${map} ${key}`);
        }
      }
      // An unknown map name is a configuration error, not "not found".
      const bad = await postfix.postmap(['-q', 'x@example.org', `socketmap:unix:${socket}:virtual_mailbox_map`]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /permanent error: unknown map virtual_mailbox_map/);
    });

    it('delivers to a mailbox, an alias, a catch-all, an alias domain and a plus address', async () => {
      const cases: Array<[string, string[]]> = [
        ['alice@example.org', ['alice@example.org']],
        ['info@example.org', ['alice@example.org', 'bob@example.org']],
        ['nobody@example.org', ['alice@example.org']],
        ['bob@example.net', ['bob@example.org']],
        ['alice+news@example.org', ['alice+news@example.org']],
        ['info+x@example.org', ['alice+x@example.org', 'bob+x@example.org']],
        ['Dave@Other.Test', ['dave@other.test']],
      ];
      for (const [rcpt, delivered] of cases) {
        const subject = `e2e ${backend} ${rcpt}`;
        const r = await sendMail({ port: postfix.smtpPort, from: 'sender@client.example', to: [rcpt], swaksArgs: ['--header', `Subject: ${subject}`] });
        assert.equal(r.code, 250, `${rcpt}: ${r.transcript}`);
        const got = await sink.waitFor((d) => d.data.includes(`Subject: ${subject}`), 15_000).catch(async (err: Error) => {
          throw new Error(`${err.message}\n${await postfix.logs()}`);
        });
        // Postfix may split one message into several LMTP transactions; collect them all.
        await new Promise((r) => setTimeout(r, 200));
        const recipients = sink.deliveries.filter((d) => d.data.includes(`Subject: ${subject}`)).flatMap((d) => d.recipients);
        assert.deepEqual(recipients.map((x) => x.toLowerCase()).sort(), delivered, `${rcpt} delivered to`);
        assert.ok(got.data.includes(`Subject: ${subject}`));
      }
    });

    it('rejects unknown and disabled recipients 550 5.1.1 at RCPT, and relaying for strangers', async () => {
      for (const rcpt of ['nobody@other.test', 'carol@example.org', 'carol@example.net', 'eve@off.test']) {
        const r = await sendMail({ port: postfix.smtpPort, from: 'sender@client.example', to: [rcpt] });
        const reply = r.replies.find((x) => /^RCPT TO/i.test(x.command));
        assert.ok(reply, r.transcript);
        if (rcpt === 'eve@off.test') {
          // A disabled domain is not ours any more: the relay rule refuses it.
          assert.match(reply.text, /^554 5\.7\.1 .*Relay access denied/, r.transcript);
        } else {
          assert.match(reply.text, /^550 5\.1\.1 /, `${rcpt}: ${r.transcript}`);
        }
      }
      const relay = await sendMail({ port: postfix.smtpPort, from: 'sender@client.example', to: ['victim@foreign.example'] });
      assert.match(relay.replies.find((x) => /^RCPT TO/i.test(x.command))?.text ?? '', /^554 5\.7\.1 .*Relay access denied/);
      const decision = await daemon.waitForLog((l) => l['map'] === 'virtual_mailbox_maps' && l['key'] === 'carol@example.org');
      assert.match(String(decision['rule']), /disabled/, 'the log says why');
    });
  });
}

/** Seeds the shared fixture into the backend and returns the `directory:` section for mailwarden.yaml. */
async function seedDirectory(backend: Backend, dir: string): Promise<string> {
  let store: DirectoryBackend;
  let section: string;
  if (backend === 'yaml') {
    const path = join(dir, 'directory.yaml');
    store = YamlDirectory.open(path);
    section = `directory:\n  backend: yaml\n  path: ${path}`;
  } else {
    const db = await testMariaDb();
    const url = await db.createDatabase('mw_e2e');
    const config = { backend: 'mysql' as const, url, poolSize: 4, queryTimeoutMs: 2000, cacheTtlMs: 60_000, cacheSize: 10_000 };
    await migrateDatabase(config);
    store = await MysqlDirectory.open(config, pino({ level: 'silent' }));
    section = `directory:\n  backend: mysql\n  url: ${JSON.stringify(url)}`;
  }
  await seedFixture(new DirectoryAdmin(store));
  await store.close();
  return section;
}
