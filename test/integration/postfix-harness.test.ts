// Proves the Postfix test harness: a private Postfix instance delivering over
// LMTP to the in-process sink, with SMTP driven by swaks.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startLmtpSink, type LmtpSink } from "../support/lmtp-sink.ts";
import { tempDir } from "../support/tmp.ts";
import { parseSwaksTranscript, sendMail, startPostfix, withPostfixLogs, type PostfixInstance } from "../support/postfix.ts";

const MAILBOXES = "inline:{ alice@example.test=ok }";

describe("postfix harness", () => {
  let sink: LmtpSink;
  let postfix: PostfixInstance;

  before(async () => {
    sink = await startLmtpSink();
    postfix = await startPostfix({
      mainCf: {
        virtual_mailbox_domains: "example.test",
        virtual_mailbox_maps: MAILBOXES,
        virtual_transport: sink.transport,
        smtpd_recipient_restrictions: "reject_unauth_destination",
        smtpd_reject_unlisted_recipient: "yes",
      },
    });
  });

  after(async () => {
    await postfix?.stop();
    await sink?.close();
  });

  // Attach the Postfix log to failures, which is what one needs to debug them.
  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withPostfixLogs(postfix, fn);

  it("delivers mail for a listed mailbox to the LMTP sink", () =>
    withLogs(async () => {
      const res = await sendMail({
        port: postfix.smtpPort,
        from: "sender@client.test",
        to: ["alice@example.test"],
        data: "From: sender@client.test\r\nTo: alice@example.test\r\nSubject: harness\r\n\r\nhello alice\r\n.dot line\r\n",
      });
      assert.equal(res.code, 250, res.transcript);
      assert.equal(res.exitCode, 0, res.transcript);
      const delivery = await sink.waitForRecipient("alice@example.test", 15_000);
      assert.equal(delivery.from, "sender@client.test");
      assert.deepEqual(delivery.recipients, ["alice@example.test"]);
      assert.match(delivery.data, /^Subject: harness\r$/m);
      assert.match(delivery.data, /^hello alice\r$/m);
      // swaks dot-stuffs, Postfix and the sink unstuff.
      assert.match(delivery.data, /^\.dot line\r$/m);
      assert.equal(delivery.lhlo, "mx.mailwarden.test");
      // The sink has the message before Postfix logs the delivery: wait for the log line.
      const sent = /to=<alice@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent/;
      const deadline = Date.now() + 5000;
      let log = await postfix.logs();
      while (!sent.test(log) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        log = await postfix.logs();
      }
      assert.match(log, sent);
    }));

  it("rejects an unlisted recipient in a virtual mailbox domain with 550 5.1.1 at RCPT", () =>
    withLogs(async () => {
      const res = await sendMail({ port: postfix.smtpPort, from: "sender@client.test", to: ["nobody@example.test"] });
      assert.equal(res.code, 550, res.transcript);
      const rcpt = res.replies.find((r) => r.command.startsWith("RCPT TO:"));
      assert.ok(rcpt, res.transcript);
      assert.equal(rcpt.code, 550);
      assert.match(rcpt.text, /^550 5\.1\.1 <nobody@example\.test>: Recipient address rejected/);
      assert.equal(res.exitCode, 24, "swaks: no RCPT accepted");
    }));

  it("refuses to relay to a foreign domain with 554 5.7.1", () =>
    withLogs(async () => {
      const res = await sendMail({ port: postfix.smtpPort, from: "sender@client.test", to: ["someone@foreign.test"] });
      assert.equal(res.code, 554, res.transcript);
      assert.match(res.replies.at(-2)?.text ?? res.transcript, /554 5\.7\.1 <someone@foreign\.test>: Relay access denied/);
    }));

  it("accepts the good recipient and rejects the bad one in one transaction", () =>
    withLogs(async () => {
      const res = await sendMail({
        port: postfix.smtpPort,
        from: "",
        to: ["nobody@example.test", "Alice@Example.test"],
      });
      assert.equal(res.code, 250, res.transcript);
      const rcpts = res.replies.filter((r) => r.command.startsWith("RCPT TO:")).map((r) => r.code);
      assert.deepEqual(rcpts, [550, 250]);
      const d = await sink.waitFor((x) => x.from === "" && x.recipients.includes("Alice@Example.test"));
      assert.equal(d.recipients.length, 1);
    }));

  it("runs postmap and postconf against the instance's config", async () => {
    const q = await postfix.postmap(["-q", "alice@example.test", MAILBOXES]);
    assert.deepEqual(q, { code: 0, stdout: "ok\n", stderr: "" });
    const miss = await postfix.postmap(["-q", "nobody@example.test", MAILBOXES]);
    assert.equal(miss.code, 1);
    const conf = await postfix.postconf(["-h", "virtual_transport", "queue_directory"]);
    assert.equal(conf.stdout, `${sink.transport}\n${postfix.queueDir}\n`);
  });

  it("logs smtpd, cleanup and lmtp activity to the instance's maillog", async () => {
    const log = await postfix.logs();
    assert.match(log, /postfix\/smtpd\[\d+\]: NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1/);
    assert.match(log, /postfix\/cleanup\[\d+\]: [0-9A-F]+: message-id=/);
    assert.match(log, /postfix\/lmtp\[\d+\]: /);
  });
});

describe("postfix harness extras", () => {
  it("delivers over a UNIX-socket LMTP sink in a temp dir and applies setMainCf", async () => {
    await using dir = await tempDir("lmtp");
    const sink = await startLmtpSink({ socketPath: path.join(dir.path, "lmtp.sock") });
    const postfix = await startPostfix({
      mainCf: {
        virtual_mailbox_domains: "example.test",
        virtual_mailbox_maps: "inline:{ bob@example.test=ok }",
        virtual_transport: sink.transport,
      },
    });
    try {
      await withPostfixLogs(postfix, async () => {
        assert.equal(sink.transport, `lmtp:unix:${dir.path}/lmtp.sock`);
        const res = await sendMail({ port: postfix.smtpPort, from: "a@client.test", to: ["bob@example.test"] });
        assert.equal(res.code, 250, res.transcript);
        await sink.waitForRecipient("bob@example.test");

        await postfix.setMainCf({ smtpd_banner: "$myhostname ESMTP reloaded-banner" });
        // smtpd processes started after the reload see the new banner.
        const deadline = Date.now() + 10_000;
        let banner = "";
        while (Date.now() < deadline) {
          const r = await sendMail({ port: postfix.smtpPort, from: "a@client.test", to: ["bob@example.test"] });
          banner = r.replies[0]?.text ?? "";
          if (banner.includes("reloaded-banner")) break;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        assert.match(banner, /^220 mx\.mailwarden\.test ESMTP reloaded-banner/);
      });
    } finally {
      await postfix.stop();
      await sink.close();
    }
  });

  it("retries a tempfailed recipient and bounces a rejected one", async () => {
    const sink = await startLmtpSink({ tempfail: ["later@example.test"], reject: ["never@example.test"] });
    const postfix = await startPostfix({
      mainCf: {
        virtual_mailbox_domains: "example.test",
        virtual_mailbox_maps: "inline:{ later@example.test=ok, never@example.test=ok }",
        virtual_transport: sink.transport,
      },
    });
    try {
      const res = await sendMail({
        port: postfix.smtpPort,
        from: "sender@example.test",
        to: ["later@example.test", "never@example.test"],
      });
      assert.equal(res.code, 250, res.transcript);
      // Wait for the first (tempfail) attempt, then let the retry succeed.
      const deadline = Date.now() + 10_000;
      while (!sink.events.some((e) => e.recipient === "later@example.test") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(sink.events.some((e) => e.recipient === "later@example.test" && e.reply.startsWith("451")));
      sink.tempfail.clear();
      const d = await sink.waitForRecipient("later@example.test", 20_000);
      assert.equal(d.from, "sender@example.test");
      // The rejected recipient produces a bounce back to sender@example.test (a
      // mailbox with no entry, so it ends in the sink only if listed: it isn't).
      const log = await postfix.logs();
      assert.match(log, /to=<never@example\.test>.*status=bounced/);
      assert.match(log, /to=<later@example\.test>.*status=deferred/);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await postfix.logs()}`, { cause: err });
    } finally {
      await postfix.stop();
      await sink.close();
    }
  });

  it("parses multi-line replies from a swaks transcript", () => {
    const replies = parseSwaksTranscript(
      [
        "=== Connected to 127.0.0.1.",
        "<-  220 mx ESMTP",
        " -> EHLO c",
        "<-  250-mx",
        "<-  250 PIPELINING",
        " -> RCPT TO:<x@y>",
        "<** 550 5.1.1 <x@y>: nope",
        " -> QUIT",
        "<-  221 2.0.0 Bye",
      ].join("\n"),
    );
    assert.deepEqual(replies, [
      { command: "", code: 220, text: "220 mx ESMTP" },
      { command: "EHLO c", code: 250, text: "250-mx\n250 PIPELINING" },
      { command: "RCPT TO:<x@y>", code: 550, text: "550 5.1.1 <x@y>: nope" },
      { command: "QUIT", code: 221, text: "221 2.0.0 Bye" },
    ]);
  });
});
