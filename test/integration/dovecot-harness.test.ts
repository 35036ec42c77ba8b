// Proves the Dovecot harness (test/support/dovecot.ts), the mail clients
// (test/support/mail-clients.ts) and the shipped Lua bridge
// (dovecot-conf/mailwarden.lua + dovecot-conf/2.3/auth-mailwarden.conf.ext)
// against a private Dovecot 2.3, with a small in-test HTTP server standing in
// for mailwarden's auth endpoint (two fixed users; the real end-to-end tests
// run mailwarden itself). The script runs as installed (TRANSPORT = "auto":
// LuaSocket, which ensure-deps installs), except where a test forces the
// dovecot.http fallback. The stand-in answers chunked (node:http without a
// Content-Length), mailwarden with a Content-Length: the script reads both.
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import { unlinkSync } from "node:fs";
import type { AddressInfo, Socket } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  MAILWARDEN_LUA,
  mailwardenAuthConf23,
  startDovecot,
  waitForDovecotLog,
  withDovecotLogs,
  writeMailwardenLua,
  type DovecotInstance,
} from "../support/dovecot.ts";
import { imapLogin, lmtpDeliver, openImap, pop3Login } from "../support/mail-clients.ts";
import { sendMail, startPostfix, withPostfixLogs } from "../support/postfix.ts";
import { tempDir, type TempDir } from "../support/tmp.ts";

const SECRET = "s3cret-for-the-harness";
// Quotes, a backslash, a space and non-ASCII: exercises IMAP quoting/literals and the JSON path.
const BOB_PW = 'b\\o"b pw-ü';

interface Seen {
  method: string;
  url: string;
  secret: string | undefined;
  /** The query parameters, plus the password from X-Mailwarden-Password (percent-decoded) when sent. */
  params: Record<string, unknown>;
}

/** Stand-in for mailwarden's /dovecot/* API (see dovecot-conf/mailwarden.lua). */
function standIn(home: () => string, uid: () => number) {
  const passwords: Record<string, string> = { "alice@example.org": "alice-pw", "bob@example.org": BOB_PW };
  const seen: Seen[] = [];
  const userdb = (user: string): Record<string, unknown> => ({
    home: path.join(home(), ...user.split("@").reverse()),
    uid: uid(),
    gid: uid(),
    quota_rule: "*:storage=1M",
  });
  const server = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (s: string) => (raw += s));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://x");
      const body: Record<string, unknown> = Object.fromEntries(url.searchParams);
      const password = req.headers["x-mailwarden-password"];
      if (typeof password === "string") body.password = decodeURIComponent(password);
      const secret = req.headers["x-mailwarden-secret"];
      seen.push({ method: req.method ?? "", url: req.url ?? "", secret: typeof secret === "string" ? secret : undefined, params: body });
      const send = (status: number, payload: unknown): void => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(payload));
      };
      if (secret !== SECRET) return send(401, { error: "bad secret" });
      // The script sends everything as a GET: a body would cost Dovecot an Expect: 100-continue round trip.
      if (raw !== "" || req.headers.expect !== undefined) return send(400, { error: "unexpected request body" });
      // alice@alias.example logs in as alice@example.org (canonical name).
      const user = String(body?.user ?? "").replace(/@alias\.example$/, "@example.org");
      if (String(body?.user).startsWith("broken@")) return send(500, { error: "boom" });
      if (String(body?.user).startsWith("slow@")) return; // never answers: the script's timeout must fire
      if (req.method === "GET" && url.pathname === "/dovecot/passdb") {
        const pw = passwords[user];
        if (pw === undefined) return send(404, { result: "unknown" });
        if (typeof body?.password === "string" && body.password !== pw) return send(403, { result: "mismatch" });
        const fields: Record<string, unknown> = {
          // A false boolean must be dropped by the script: "nologin=no" would still deny the login.
          nologin: false,
          ...Object.fromEntries(Object.entries(userdb(user)).map(([k, v]) => [`userdb_${k}`, v])),
        };
        if (body?.password === undefined) fields.password = `{PLAIN}${pw}`;
        return send(200, { user, fields });
      }
      if (req.method === "GET" && url.pathname === "/dovecot/userdb") {
        if (passwords[user] === undefined) return send(404, { result: "unknown" });
        return send(200, { user, fields: userdb(user) });
      }
      if (req.method === "GET" && url.pathname === "/dovecot/users") {
        return send(200, { users: Object.keys(passwords) });
      }
      send(404, { error: "no such endpoint" });
    });
  });
  return { server, seen };
}

describe("dovecot harness + mailwarden.lua (Dovecot 2.3)", () => {
  let dovecot: DovecotInstance;
  let dir: TempDir;
  let api: ReturnType<typeof standIn>;
  let startMs = 0;

  before(async () => {
    api = standIn(
      () => dovecot.homeDir,
      () => dovecot.mailUid,
    );
    api.server.listen(0, "127.0.0.1");
    await once(api.server, "listening");
    const port = (api.server.address() as AddressInfo).port;
    dir = await tempDir("dovecot-lua");
    const luaFile = path.join(dir.path, "mailwarden.lua");
    await writeMailwardenLua(luaFile, { url: `http://127.0.0.1:${port}`, secret: SECRET, timeoutMs: 1500 });
    const t = performance.now();
    dovecot = await startDovecot({
      conf: `${await mailwardenAuthConf23(luaFile)}
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = maildir:User quota
}
`,
    });
    startMs = performance.now() - t;
  });

  after(async () => {
    await dovecot?.stop();
    api?.server.closeAllConnections();
    api?.server.close();
    await dir?.remove();
  });

  const withLogs = <T>(fn: () => Promise<T>): Promise<T> => withDovecotLogs(dovecot, fn);
  const lastBody = (pathname: string): Record<string, unknown> => {
    const hit = api.seen.findLast((s) => s.url.split("?")[0] === pathname);
    assert.ok(hit, `no request to ${pathname}: ${JSON.stringify(api.seen)}`);
    return hit.params;
  };

  it("starts quickly on loopback ports and private sockets", () =>
    withLogs(async () => {
      assert.ok(startMs < 5000, `start took ${startMs} ms`);
      for (const port of [dovecot.imapPort, dovecot.pop3Port, dovecot.lmtpPort]) assert.ok(port > 1024);
      const conf = await readFile(dovecot.configFile, "utf8");
      assert.match(conf, /^listen = 127\.0\.0\.1$/m);
      assert.ok(dovecot.authClientSocket.startsWith(dovecot.dir));
      const doveconf = await dovecot.doveadm(["config", "-h", "base_dir"]);
      assert.equal(doveconf.stdout.trim(), dovecot.baseDir, doveconf.stderr);
    }));

  it("doveadm auth test: OK via auth_password_verify, with the secret header and the 2.3 request fields", () =>
    withLogs(async () => {
      const res = await dovecot.doveadm(["auth", "test", "-x", "service=imap", "alice@example.org", "alice-pw"]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /passdb: alice@example\.org auth succeeded/);
      const req = api.seen.findLast((s) => s.url.startsWith("/dovecot/passdb?"))!;
      assert.equal(req.secret, SECRET);
      assert.equal(req.method, "GET");
      assert.equal(req.url, "/dovecot/passdb?user=alice%40example.org&service=imap&version=2.3");
      assert.deepEqual(req.params, { user: "alice@example.org", password: "alice-pw", service: "imap", version: "2.3" });
      // nologin:false from the API was dropped, not turned into nologin=no.
      assert.doesNotMatch(res.stdout, /nologin/);
    }));

  it("doveadm auth login: the passdb's userdb_* fields reach userdb prefetch", () =>
    withLogs(async () => {
      const before = api.seen.length;
      const res = await dovecot.doveadm(["auth", "login", "alice@example.org", "alice-pw"]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /quota_rule=\*:storage=1M/);
      assert.match(res.stdout, new RegExp(`uid=${dovecot.mailUid}\\b`));
      // One HTTP call: prefetch answered the userdb part.
      assert.deepEqual(
        api.seen.slice(before).map((s) => s.url.split("?")[0]),
        ["/dovecot/passdb"],
      );
    }));

  it("doveadm auth test: wrong password (403) and unknown user (404) fail", () =>
    withLogs(async () => {
      const bad = await dovecot.doveadm(["auth", "test", "alice@example.org", "nope"]);
      assert.equal(bad.code, 77, bad.stdout + bad.stderr);
      assert.match(bad.stdout, /auth failed/);
      assert.doesNotMatch(bad.stdout, /temp_fail/);
      const unknown = await dovecot.doveadm(["auth", "test", "nobody@example.org", "x"]);
      assert.equal(unknown.code, 77, unknown.stdout + unknown.stderr);
      assert.doesNotMatch(unknown.stdout, /temp_fail/);
      assert.match(await dovecot.logs(), /lua\(alice@example\.org[^)]*\): Password mismatch/);
    }));

  it("doveadm auth test: HTTP 500 and a timeout are temporary failures, not 'unknown user'", () =>
    withLogs(async () => {
      for (const user of ["broken@example.org", "slow@example.org"]) {
        const t = performance.now();
        const res = await dovecot.doveadm(["auth", "test", user, "x"]);
        assert.equal(res.code, 77, res.stdout + res.stderr);
        assert.match(res.stdout, /code=temp_fail/); // doveadm's rendering of a temporary failure
        if (user.startsWith("slow")) assert.ok(performance.now() - t < 10_000, "the 1.5 s request timeout applies");
      }
      // LuaSocket's settimeout over the whole request (the dovecot.http fallback: see below).
      const slowLine = /lua\(slow@example\.org[^)]*\): passdb-lua: mailwarden passdb: timeout \(http:\/\/127\.0\.0\.1:\d+\)/;
      const log = await waitForDovecotLog(dovecot, slowLine);
      assert.match(log, /lua\(broken@example\.org[^)]*\): passdb-lua: mailwarden passdb: HTTP 500/);
      assert.match(log, slowLine);
      // The timed-out connection must not hold up later requests (passdb and userdb alike).
      const t = performance.now();
      assert.equal((await dovecot.doveadm(["auth", "test", "alice@example.org", "alice-pw"])).code, 0);
      assert.equal((await dovecot.doveadm(["user", "alice@example.org"])).code, 0);
      assert.ok(performance.now() - t < 1000, `requests after a timeout took ${performance.now() - t} ms`);
      // userdb too: a temporary failure (EX_TEMPFAIL), not "user doesn't exist".
      const user = await dovecot.doveadm(["user", "broken@example.org"]);
      assert.equal(user.code, 75, user.stdout + user.stderr);
      assert.match(await dovecot.logs(), /mailwarden userdb: HTTP 500/);
    }));

  it("doveadm auth lookup: auth_passdb_lookup (no password sent)", () =>
    withLogs(async () => {
      const res = await dovecot.doveadm(["auth", "lookup", "bob@example.org"]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /passdb: bob@example\.org\n\s+user\s+: bob@example\.org/);
      // No X-Mailwarden-Password header: a lookup, not a verification.
      assert.deepEqual(lastBody("/dovecot/passdb"), { user: "bob@example.org", service: "doveadm", version: "2.3" });
      const unknown = await dovecot.doveadm(["auth", "lookup", "nobody@example.org"]);
      assert.notEqual(unknown.code, 0, unknown.stdout + unknown.stderr);
    }));

  it("the passdb may canonicalise the login name (user field)", () =>
    withLogs(async () => {
      const res = await dovecot.doveadm(["auth", "test", "alice@alias.example", "alice-pw"]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /user=alice@example\.org/);
    }));

  it("doveadm user: userdb fields from the API (integers stay integers)", () =>
    withLogs(async () => {
      const res = await dovecot.doveadm(["user", "alice@example.org"]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      const fields = Object.fromEntries(
        res.stdout
          .trim()
          .split("\n")
          .map((l) => l.split("\t") as [string, string]),
      );
      assert.equal(fields.home, path.join(dovecot.homeDir, "example.org", "alice"));
      assert.equal(fields.uid, String(dovecot.mailUid));
      assert.equal(fields.gid, String(dovecot.mailUid));
      assert.equal(fields.quota_rule, "*:storage=1M");
      assert.deepEqual(lastBody("/dovecot/userdb"), { user: "alice@example.org", service: "doveadm", version: "2.3" });
      const unknown = await dovecot.doveadm(["user", "nobody@example.org"]);
      assert.equal(unknown.code, 67, unknown.stdout + unknown.stderr); // EX_NOUSER
    }));

  it("doveadm user '*' lists both users through auth_userdb_iterate", () =>
    withLogs(async () => {
      const res = await dovecot.doveadm(["user", "*"]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.deepEqual(res.stdout.trim().split("\n").sort(), ["alice@example.org", "bob@example.org"]);
      const req = api.seen.findLast((s) => s.url.startsWith("/dovecot/users"))!;
      assert.equal(req.url, "/dovecot/users?version=2.3");
      assert.equal(req.method, "GET");
      assert.equal(req.secret, SECRET);
    }));

  it("detects the 2.3 API (HTTP client option names) and LuaSocket, and logs both once per Lua state", () =>
    withLogs(async () => {
      const log = await dovecot.logs();
      assert.match(log, /mailwarden\.lua: using the Dovecot 2\.3 API and LuaSocket [\d.]+, endpoint http:\/\/127\.0\.0\.1:\d+/);
      assert.doesNotMatch(log, /Dovecot 2\.4 API/);
      assert.doesNotMatch(log, /API and dovecot\.http/);
      // The one script also carries the 2.4 spellings.
      const script = await readFile(MAILWARDEN_LUA, "utf8");
      assert.match(script, /request_absolute_timeout = /);
      assert.match(script, /if v24 then service = req\.protocol else service = req\.service end/);
    }));

  it("IMAP LOGIN: OK, NO for a wrong password, NO [UNAVAILABLE] for a backend failure", () =>
    withLogs(async () => {
      const ok = await imapLogin(dovecot.imapPort, "alice@example.org", "alice-pw");
      assert.ok(ok.ok, ok.reply);
      const body = lastBody("/dovecot/passdb");
      assert.equal(body.service, "imap");
      assert.equal(body.remote_ip, "127.0.0.1");
      const bad = await imapLogin(dovecot.imapPort, "alice@example.org", "wrong");
      assert.equal(bad.ok, false);
      assert.match(bad.reply, /^a\d+ NO \[AUTHENTICATIONFAILED\]/);
      const bob = await imapLogin(dovecot.imapPort, "bob@example.org", BOB_PW);
      assert.ok(bob.ok, bob.reply);
      // Quotes, backslash, space and UTF-8 survive the percent-encoded header; the password is never in the URL.
      assert.equal(lastBody("/dovecot/passdb").password, BOB_PW);
      assert.ok(api.seen.every((s) => !decodeURIComponent(s.url).includes(BOB_PW)));
      const broken = await imapLogin(dovecot.imapPort, "broken@example.org", "x");
      assert.equal(broken.ok, false);
      assert.match(broken.reply, /^a\d+ NO \[UNAVAILABLE\] Temporary authentication failure/);
    }));

  it("POP3 USER/PASS", () =>
    withLogs(async () => {
      const ok = await pop3Login(dovecot.pop3Port, "bob@example.org", BOB_PW);
      assert.ok(ok.ok, ok.reply);
      assert.deepEqual(ok.stat, { messages: 0, octets: 0 });
      assert.equal(lastBody("/dovecot/passdb").service, "pop3");
      const bad = await pop3Login(dovecot.pop3Port, "bob@example.org", "nope");
      assert.equal(bad.ok, false);
      assert.match(bad.reply, /^-ERR/);
    }));

  it("LMTP delivers to alice (userdb lookup), rejects an unknown user, and IMAP shows the message and the quota", () =>
    withLogs(async () => {
      const message = "From: sender@client.test\r\nTo: alice@example.org\r\nSubject: harness\r\n\r\nhello alice\r\n.dot line\r\n";
      const res = await lmtpDeliver(dovecot.lmtpPort, "sender@client.test", ["alice@example.org", "nobody@example.org"], message);
      assert.equal(res.mailFrom.code, 250, JSON.stringify(res));
      const [alice, nobody] = res.recipients;
      assert.ok(alice?.delivered, JSON.stringify(alice));
      assert.equal(nobody?.rcptReply.code, 550, JSON.stringify(nobody));
      assert.match(nobody.rcptReply.text, /5\.1\.1/);
      assert.equal(lastBody("/dovecot/userdb").service, "lmtp");

      const imap = await openImap(dovecot.imapPort);
      try {
        assert.equal((await imap.login("alice@example.org", "alice-pw")).status, "OK");
        const sel = await imap.select("INBOX");
        assert.equal(sel.status, "OK", sel.line);
        assert.equal(sel.exists, 1);
        const body = await imap.fetchBody(1);
        assert.match(body, /^Subject: harness\r$/m);
        assert.match(body, /^hello alice\r$/m);
        assert.match(body, /^\.dot line\r$/m);
        const quota = await imap.getQuotaRoot("INBOX");
        assert.equal(quota.response.status, "OK", quota.response.line);
        assert.deepEqual(quota.roots, ["User quota"]);
        const storage = quota.quotas["User quota"]?.find((r) => r.name === "STORAGE");
        assert.equal(storage?.limit, 1024); // quota_rule *:storage=1M, in KiB
        assert.ok(storage.usage >= 0);
      } finally {
        await imap.logout();
      }
      // The mail is stored under the instance's home dir, owned by the mail user.
      const maildir = path.join(dovecot.homeDir, "example.org", "alice", "Maildir");
      assert.ok((await readFile(path.join(maildir, "dovecot-uidlist"), "utf8")).length > 0);
    }));

  it("2.4 branch, simulated on 2.3: the 2.3 option names rejected, 2.4 request field names", async () => {
    // A test-only shim makes Dovecot 2.3 look like 2.4 to the unmodified script:
    // dovecot.http.client rejects the 2.3 option names the way 2.4 does (and
    // translates the 2.4 ones), and requests expose only 2.4 field names.
    const luaFile = path.join(dir.path, "mailwarden-24.lua");
    const shimFile = path.join(dir.path, "shim-24.lua");
    const port = (api.server.address() as AddressInfo).port;
    await writeMailwardenLua(luaFile, { url: `http://127.0.0.1:${port}`, secret: SECRET, timeoutMs: 1500 });
    await writeFile(
      shimFile,
      `local real = dovecot.http.client
local names = { request_absolute_timeout = "request_absolute_timeout_msecs", request_timeout = "request_timeout_msecs" }
dovecot.http.client = function(set)
  local t = {}
  for k, v in pairs(set) do
    if not names[k] then error("Invalid HTTP client setting: " .. k .. " is unknown setting") end
    t[names[k]] = tonumber((tostring(v):gsub("ms$", "")))
  end
  return real(t)
end
local map = { protocol = "service", remote_ip = "rip", local_ip = "lip", service = false, rip = false, lip = false }
local function as24(req)
  return setmetatable({}, { __index = function(_, k)
    local m = map[k]
    if m == false then return nil end
    return req[m or k]
  end })
end
dofile(${JSON.stringify(luaFile)})
local pv, pl, ul = auth_password_verify, auth_passdb_lookup, auth_userdb_lookup
function auth_password_verify(req, pw) return pv(as24(req), pw) end
function auth_passdb_lookup(req) return pl(as24(req)) end
function auth_userdb_lookup(req) return ul(as24(req)) end
`,
      { mode: 0o644 },
    );
    const d24 = await startDovecot({ conf: await mailwardenAuthConf23(shimFile) });
    await withDovecotLogs(d24, async () => {
      try {
        const ok = await imapLogin(d24.imapPort, "alice@example.org", "alice-pw");
        assert.ok(ok.ok, ok.reply);
        const body = lastBody("/dovecot/passdb");
        assert.equal(body.version, "2.4");
        assert.equal(body.service, "imap");
        assert.equal(body.remote_ip, "127.0.0.1");
        const user = await d24.doveadm(["user", "bob@example.org"]);
        assert.equal(user.code, 0, user.stdout + user.stderr);
        assert.deepEqual(lastBody("/dovecot/userdb"), { user: "bob@example.org", service: "doveadm", version: "2.4" });
        const list = await d24.doveadm(["user", "*"]);
        assert.equal(list.code, 0, list.stdout + list.stderr);
        assert.equal(api.seen.findLast((s) => s.url.startsWith("/dovecot/users"))?.url, "/dovecot/users?version=2.4");
        assert.match(await d24.logs(), /mailwarden\.lua: using the Dovecot 2\.4 API/);
      } finally {
        await d24.stop();
      }
    });
  });

  it("a wrong endpoint URL (404 without result=unknown) is a temporary failure: LMTP 451, not 550", async () => {
    const luaFile = path.join(dir.path, "mailwarden-wrong-url.lua");
    const port = (api.server.address() as AddressInfo).port;
    await writeMailwardenLua(luaFile, { url: `http://127.0.0.1:${port}/not-mailwarden`, secret: SECRET, timeoutMs: 1500 });
    const d = await startDovecot({ conf: await mailwardenAuthConf23(luaFile) });
    try {
      await withDovecotLogs(d, async () => {
        const res = await lmtpDeliver(d.lmtpPort, "sender@client.test", ["alice@example.org"], "Subject: x\r\n\r\nx\r\n");
        assert.equal(res.recipients[0]?.rcptReply.code, 451, JSON.stringify(res));
        const login = await imapLogin(d.imapPort, "alice@example.org", "alice-pw");
        assert.match(login.reply, /NO \[UNAVAILABLE\]/);
        assert.match(await d.logs(), /mailwarden userdb: HTTP 404 unexpected answer from http:\/\/127\.0\.0\.1:\d+\/not-mailwarden\/dovecot\/userdb/);
      });
    } finally {
      await d.stop();
    }
  });

  it("Postfix SMTP AUTH through the auth-client socket (smtpd runs as postfix)", () =>
    withLogs(async () => {
      const postfix = await startPostfix({
        mainCf: {
          smtpd_sasl_auth_enable: "yes",
          smtpd_sasl_type: "dovecot",
          smtpd_sasl_path: dovecot.authClientSocket,
        },
      });
      try {
        await withPostfixLogs(postfix, async () => {
          const auth = (user: string, password: string) =>
            sendMail({
              port: postfix.smtpPort,
              from: user,
              to: ["someone@example.org"],
              swaksArgs: ["--auth", "PLAIN", "--auth-user", user, "--auth-password", password, "--quit-after", "AUTH"],
            });
          const ok = await auth("alice@example.org", "alice-pw");
          assert.ok(ok.replies.some((r) => r.code === 235), ok.transcript);
          assert.equal(lastBody("/dovecot/passdb").service, "smtp");
          const bad = await auth("alice@example.org", "nope");
          assert.ok(bad.replies.some((r) => r.code === 535), bad.transcript);
        });
      } finally {
        await postfix.stop();
      }
    }));

  /** A Dovecot of its own whose script has these settings, stopped afterwards. */
  const withOwnDovecot = async (
    name: string,
    settings: Parameters<typeof writeMailwardenLua>[1],
    fn: (d: DovecotInstance) => Promise<void>,
  ): Promise<void> => {
    const luaFile = path.join(dir.path, `mailwarden-${name}.lua`);
    await writeMailwardenLua(luaFile, settings);
    const d = await startDovecot({ conf: await mailwardenAuthConf23(luaFile) });
    try {
      await withDovecotLogs(d, () => fn(d));
    } finally {
      await d.stop();
    }
  };

  it('TRANSPORT = "dovecot.http" (the fallback without lua-socket): logins, lookups, iteration, a 500 and a timeout', () => {
    const port = (api.server.address() as AddressInfo).port;
    return withOwnDovecot("libhttp", { url: `http://127.0.0.1:${port}`, secret: SECRET, timeoutMs: 1500, transport: "dovecot.http" }, async (d) => {
      const ok = await d.doveadm(["auth", "test", "-x", "service=imap", "alice@example.org", "alice-pw"]);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      const req = api.seen.findLast((s) => s.url.startsWith("/dovecot/passdb?"))!;
      assert.equal(req.url, "/dovecot/passdb?user=alice%40example.org&service=imap&version=2.3");
      assert.equal(req.secret, SECRET);
      assert.equal(req.params.password, "alice-pw");
      for (const [user, pw] of [["alice@example.org", "nope"], ["nobody@example.org", "x"]]) {
        const r = await d.doveadm(["auth", "test", user!, pw!]);
        assert.equal(r.code, 77, r.stdout + r.stderr);
        assert.doesNotMatch(r.stdout, /temp_fail/);
      }
      const user = await d.doveadm(["user", "alice@example.org"]);
      assert.equal(user.code, 0, user.stdout + user.stderr);
      assert.match(user.stdout, /quota_rule\s+\*:storage=1M/);
      assert.equal((await d.doveadm(["user", "nobody@example.org"])).code, 67);
      const all = await d.doveadm(["user", "*"]);
      assert.deepEqual(all.stdout.trim().split("\n").sort(), ["alice@example.org", "bob@example.org"]);
      assert.ok((await imapLogin(d.imapPort, "bob@example.org", BOB_PW)).ok);
      for (const u of ["broken@example.org", "slow@example.org"]) {
        const r = await d.doveadm(["auth", "test", u, "x"]);
        assert.match(r.stdout, /code=temp_fail/, `${u}: ${r.stdout}`);
      }
      const t = performance.now();
      assert.equal((await d.doveadm(["auth", "test", "alice@example.org", "alice-pw"])).code, 0);
      assert.ok(performance.now() - t < 1000, "the timed-out request holds up nothing");
      // Dovecot's own client errors are >= 9000 (9007 = timed out).
      const slowLine = /lua\(slow@example\.org[^)]*\): passdb-lua: mailwarden passdb: HTTP 9\d\d\d/;
      const log = await waitForDovecotLog(d, slowLine);
      assert.match(log, /mailwarden\.lua: using the Dovecot 2\.3 API and dovecot\.http, endpoint http:\/\/127\.0\.0\.1:\d+/);
      assert.match(log, /mailwarden passdb: HTTP 500/);
      assert.match(log, slowLine);
      assert.doesNotMatch(log, /LuaSocket/);
    });
  });

  it("LuaSocket keeps its connection, reopens one mailwarden closed (idle close, restart), and mailwarden down is a temporary failure", async () => {
    const own = standIn(
      () => dovecot.homeDir,
      () => dovecot.mailUid,
    );
    const sockets: Socket[] = [];
    own.server.on("connection", (s: Socket) => sockets.push(s));
    own.server.listen(0, "127.0.0.1");
    await once(own.server, "listening");
    const port = (own.server.address() as AddressInfo).port;
    const up = async (): Promise<void> => {
      own.server.listen(port, "127.0.0.1");
      await once(own.server, "listening");
    };
    const down = async (): Promise<void> => {
      const closed = once(own.server, "close");
      own.server.close();
      own.server.closeAllConnections();
      await closed;
    };
    try {
      await withOwnDovecot("conn", { url: `http://127.0.0.1:${port}`, secret: SECRET, timeoutMs: 1500, transport: "luasocket" }, async (d) => {
        const lookup = async (what: string): Promise<void> => {
          const r = await d.doveadm(["user", "alice@example.org"]);
          assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
        };
        for (let i = 0; i < 5; i++) await lookup(`lookup ${i}`);
        assert.ok(sockets.length <= 2, `5 lookups opened ${sockets.length} connections (one per Lua state expected)`);
        // What mailwarden does to a connection idle for 60 s: the script finds it closed and sends again on a new one.
        own.server.closeAllConnections();
        const opened = sockets.length;
        await lookup("after the server closed the connection");
        assert.equal(sockets.length, opened + 1, "one new connection");
        await down();
        await up();
        await lookup("after a restart");
        // Down: temporary failures, never "unknown user".
        await down();
        const user = await d.doveadm(["user", "alice@example.org"]);
        assert.equal(user.code, 75, user.stdout + user.stderr); // EX_TEMPFAIL
        const login = await d.doveadm(["auth", "test", "alice@example.org", "alice-pw"]);
        assert.match(login.stdout, /code=temp_fail/, login.stdout);
        const lmtp = await lmtpDeliver(d.lmtpPort, "sender@client.test", ["alice@example.org"], "Subject: x\r\n\r\nx\r\n");
        assert.equal(lmtp.recipients[0]?.rcptReply.code, 451, JSON.stringify(lmtp));
        const refused = /mailwarden userdb: connect to http:\/\/127\.0\.0\.1:\d+: connection refused/;
        assert.match(await waitForDovecotLog(d, refused), refused);
        await up();
        await lookup("back up");
      });
    } finally {
      own.server.closeAllConnections();
      own.server.close();
    }
  });

  it("a unix: URL: lookups and logins over a UNIX socket with LuaSocket; with dovecot.http a temporary failure that says why", async () => {
    const own = standIn(
      () => dovecot.homeDir,
      () => dovecot.mailUid,
    );
    const sock = path.join(dir.path, "auth.sock");
    own.server.listen(sock);
    await once(own.server, "listening");
    try {
      await withOwnDovecot("unix", { url: `unix:${sock}`, secret: SECRET, timeoutMs: 1500 }, async (d) => {
        const user = await d.doveadm(["user", "alice@example.org"]);
        assert.equal(user.code, 0, user.stdout + user.stderr);
        assert.match(user.stdout, /quota_rule\s+\*:storage=1M/);
        const login = await d.doveadm(["auth", "test", "bob@example.org", BOB_PW]);
        assert.equal(login.code, 0, login.stdout + login.stderr);
        const req = own.seen.findLast((s) => s.url.startsWith("/dovecot/passdb?"))!;
        assert.equal(req.secret, SECRET);
        assert.equal(req.params.password, BOB_PW);
        assert.deepEqual((await d.doveadm(["user", "*"])).stdout.trim().split("\n").sort(), ["alice@example.org", "bob@example.org"]);
        const using = /using the Dovecot 2\.3 API and LuaSocket [\d.]+, endpoint unix:\//;
        assert.match(await waitForDovecotLog(d, using), using);
      });
      await withOwnDovecot("unix-libhttp", { url: `unix:${sock}`, secret: SECRET, timeoutMs: 1500, transport: "dovecot.http" }, async (d) => {
        const user = await d.doveadm(["user", "alice@example.org"]);
        assert.equal(user.code, 75, user.stdout + user.stderr);
        const why = /mailwarden userdb: a unix: URL needs LuaSocket \(package lua-socket\)/;
        assert.match(await waitForDovecotLog(d, why), why);
      });
    } finally {
      own.server.close();
      try {
        unlinkSync(sock);
      } catch {
        // already gone
      }
    }
  });

  it("the auth-client and auth-userdb sockets live in base_dir", () =>
    withLogs(async () => {
      const { statSync } = await import("node:fs");
      assert.ok(statSync(dovecot.authClientSocket).isSocket());
      assert.ok(statSync(dovecot.authUserdbSocket).isSocket());
      assert.ok(statSync(dovecot.lmtpSocket).isSocket());
    }));
});
