// Private Dovecot 2.3 instances for integration tests.
//
// Each instance lives in its own temp dir (config, base_dir, state_dir, log,
// mail homes), runs the stock Debian binaries as root via
// `dovecot -F -c <dir>/dovecot.conf`, listens only on 127.0.0.1:<free high
// ports> (IMAP, POP3, LMTP; imaps/pop3s disabled) and on UNIX sockets in its
// base_dir, and never reads or writes /etc/dovecot, /run/dovecot or
// /var/lib/dovecot. Starting one takes ~0.1 s on the test VM (Dovecot itself
// ~30 ms, then the IMAP, POP3 and LMTP greetings); stop() ~0.2 s.
//
// Layout of <dir> (mailwarden-dovecot-<run id>-XXXXXX under os.tmpdir(), 0755):
//   dovecot.conf   harness base config + opts.conf appended verbatim
//   run/           base_dir: auth-client, auth-userdb, lmtp, master.pid, ...
//   state/         state_dir
//   home/          mail homes (mail_home default <dir>/home/<domain>/<user>),
//                  owned by the mail user
//   dovecot.log    log_path = info_log_path = debug_log_path
//
// Choices worth knowing:
// - Mail uid: `nobody:nogroup` (65534) by default (opts.mailUser). It exists
//   on every Debian system, so nothing is added to /etc/passwd; the mail lives
//   only in the temp dir. mail_uid/mail_gid default to it (a userdb need not
//   return uid/gid) and first_valid_uid/gid are set to it, so a userdb that
//   answers a system uid (dovecot, root) is refused like on a real host.
// - The master runs in its own process group (spawned detached), so stop()
//   and the crash clean-up can kill the master and every child at once.
//   killStrayDovecot() (called by test/run.ts) finds masters of crashed test
//   processes by the `-c <tmp>/mailwarden-dovecot-<run id>-` in their cmdline.
// - auth-client (Postfix SASL) is mode 0660 group postfix when that group
//   exists (Postfix's smtpd runs as postfix), else 0600; auth-userdb keeps
//   Dovecot's 0666; doveadm runs as root anyway.
// - Failed logins are fast: auth_failure_delay = 0 (Dovecot still batches
//   failure replies every 500 ms, so a failed login takes ~0.5 s instead of
//   2 s) and the anvil auth penalty (2, 4, 8... s extra per IP after failures)
//   is off, by not creating its socket. To test them, override in opts.conf:
//   `auth_failure_delay = 2s` and
//   `service anvil { unix_listener anvil-auth-penalty { mode = 0600 } }`.
// - vsz_limit is left at Dovecot's default (256M), as on a real host.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort } from "./ports.ts";
import { killStrayMasters } from "./strays.ts";

const ROOT = path.resolve(import.meta.dirname, "..", "..");
/** The shipped Lua bridge and 2.3 passdb/userdb snippet. */
export const MAILWARDEN_LUA = path.join(ROOT, "dovecot-conf", "mailwarden.lua");
export const AUTH_MAILWARDEN_CONF_23 = path.join(ROOT, "dovecot-conf", "2.3", "auth-mailwarden.conf.ext");

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface DovecotOptions {
  /**
   * Appended verbatim to the harness base config (see baseConfig()): at least
   * a passdb and a userdb. Later settings override earlier ones.
   */
  conf: string;
  /** System account owning the mail (default "nobody"); never root. */
  mailUser?: string;
  /** auth_debug + mail_debug (noisy). */
  debug?: boolean;
  /** How long to wait for the IMAP/POP3/LMTP banners. Default 20 s. */
  startTimeoutMs?: number;
}

export interface DovecotInstance {
  /** Temp dir holding everything below. */
  dir: string;
  configFile: string;
  imapPort: number;
  pop3Port: number;
  lmtpPort: number;
  /** base_dir (UNIX sockets). */
  baseDir: string;
  /** Dovecot's auth-client socket: `doveadm auth test`, Postfix smtpd_sasl_path. */
  authClientSocket: string;
  /** auth-userdb socket: doveadm user, LMTP. */
  authUserdbSocket: string;
  /** The LMTP UNIX socket (mode 0666), an alternative to lmtpPort. */
  lmtpSocket: string;
  /** Parent of the mail homes (owned by the mail user); mail_home defaults to <homeDir>/%d/%n. */
  homeDir: string;
  logFile: string;
  mailUser: string;
  mailUid: number;
  mailGid: number;
  /** `doveadm -c <configFile> ...args` (never throws on a non-zero exit). */
  doveadm(args: string[], input?: string): Promise<CommandResult>;
  /** `dovecot -c <configFile> reload` (re-reads the config file). */
  reload(): Promise<void>;
  /** The instance's log file plus the `dovecot -F` output. */
  logs(): Promise<string>;
  /** Stops Dovecot and all its processes (idempotent) and removes the temp dir. */
  stop(): Promise<void>;
}

const ENV: NodeJS.ProcessEnv = (() => {
  const env: NodeJS.ProcessEnv = { ...process.env, LANG: "C", LC_ALL: "C" };
  env.PATH = `${env.PATH ?? "/usr/bin:/bin"}:/usr/sbin:/sbin:/usr/bin:/bin`;
  return env;
})();

function runCommand(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<CommandResult> {
  return new Promise<CommandResult>((resolve, reject) => {
    const child = spawn(cmd, args, { env: ENV, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(input ?? "");
  });
}

async function lookupAccount(name: string): Promise<{ uid: number; gid: number }> {
  const res = await runCommand("getent", ["passwd", name]);
  const parts = res.stdout.trim().split(":");
  const uid = Number(parts[2]);
  const gid = Number(parts[3]);
  if (res.code !== 0 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new Error(`startDovecot: no system account ${JSON.stringify(name)} (getent passwd: exit ${res.code})`);
  }
  return { uid, gid };
}

async function groupExists(name: string): Promise<boolean> {
  return (await runCommand("getent", ["group", name])).code === 0;
}

function runId(): string {
  return (process.env.MAILWARDEN_TEST_RUN_ID ?? "adhoc").replace(/[^A-Za-z0-9_.-]/g, "_");
}

export interface BaseConfigParams {
  dir: string;
  baseDir: string;
  stateDir: string;
  homeDir: string;
  logFile: string;
  imapPort: number;
  pop3Port: number;
  lmtpPort: number;
  uid: number;
  gid: number;
  authClientGroup: string | undefined;
  debug: boolean;
}

/** The harness part of dovecot.conf (exported for the harness test). */
export function baseConfig(p: BaseConfigParams): string {
  return `# generated by test/support/dovecot.ts
base_dir = ${p.baseDir}
state_dir = ${p.stateDir}
instance_name = ${path.basename(p.dir)}
log_path = ${p.logFile}
info_log_path = ${p.logFile}
debug_log_path = ${p.logFile}
protocols = imap pop3 lmtp
listen = 127.0.0.1
hostname = mx.mailwarden.test
postmaster_address = postmaster@mailwarden.test

# Loopback tests only: no TLS, plaintext auth allowed.
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
auth_debug = ${p.debug ? "yes" : "no"}
mail_debug = ${p.debug ? "yes" : "no"}

mail_location = maildir:~/Maildir
mail_home = ${p.homeDir}/%d/%n
mail_uid = ${p.uid}
mail_gid = ${p.gid}
first_valid_uid = ${p.uid}
first_valid_gid = ${p.gid}

service imap-login {
  inet_listener imap {
    port = ${p.imapPort}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = ${p.pop3Port}
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${p.lmtpPort}
  }
}
# No anvil auth penalty: after failed logins from one IP (or from doveadm,
# which has none) Dovecot otherwise delays the next ones by 2, 4, 8... s.
# mode = 0 leaves the socket uncreated, and the auth process then silently
# runs without penalty tracking.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener auth-client {
${p.authClientGroup ? `    mode = 0660\n    group = ${p.authClientGroup}` : "    mode = 0600"}
  }
  unix_listener auth-userdb {
    mode = 0666
  }
}

# ---- test configuration (DovecotOptions.conf) ----
`;
}

// Instances still running in this process: killed on exit if a test forgot stop().
const running = new Map<string, ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const [dir, child] of running) {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {}
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
      } catch {}
    }
  });
}

/** Reads the greeting on 127.0.0.1:port; undefined if nothing answers in time. */
function readGreeting(port: number, done: (line: string) => boolean, quit: string, timeoutMs = 2000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    let settled = false;
    const finish = (v: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("data", (s: string) => {
      buf += s;
      const line = buf.split("\r\n").find((l) => done(l));
      if (line !== undefined) {
        socket.write(quit);
        finish(line);
      }
    });
    socket.on("error", () => finish(undefined));
    socket.on("close", () => finish(undefined));
  });
}

/** Resolves true if p settles within ms (with a referenced timer, cleared afterwards). */
async function exitedWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts a private Dovecot instance. Requires root and the Debian dovecot packages. */
export async function startDovecot(opts: DovecotOptions): Promise<DovecotInstance> {
  if (process.getuid?.() !== 0) throw new Error("startDovecot: must run as root (Dovecot's master starts as root)");
  if (!existsSync("/usr/sbin/dovecot")) {
    throw new Error("startDovecot: /usr/sbin/dovecot missing; run `bash test/setup/ensure-deps.sh` as root");
  }
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      lastError = err as Error;
      // Retry only when a probed port was taken in the meantime.
      if (!/Address already in use/.test(lastError.message)) throw lastError;
    }
  }
  throw lastError!;
}

async function startOnce(opts: DovecotOptions): Promise<DovecotInstance> {
  const mailUser = opts.mailUser ?? "nobody";
  const { uid, gid } = await lookupAccount(mailUser);
  if (uid === 0 || gid === 0) throw new Error(`startDovecot: mail user ${mailUser} is root; pick an unprivileged account`);
  const authClientGroup = (await groupExists("postfix")) ? "postfix" : undefined;

  const dir = await mkdtemp(path.join(os.tmpdir(), `mailwarden-dovecot-${runId()}-`));
  await chmod(dir, 0o755);
  const configFile = path.join(dir, "dovecot.conf");
  const baseDir = path.join(dir, "run");
  const stateDir = path.join(dir, "state");
  const homeDir = path.join(dir, "home");
  const logFile = path.join(dir, "dovecot.log");
  await mkdir(stateDir, { mode: 0o755 });
  await mkdir(homeDir, { mode: 0o750 });
  await chown(homeDir, uid, gid);

  const [imapPort, pop3Port, lmtpPort] = [await freePort(), await freePort(), await freePort()];
  const config =
    baseConfig({ dir, baseDir, stateDir, homeDir, logFile, imapPort, pop3Port, lmtpPort, uid, gid, authClientGroup, debug: opts.debug ?? false }) +
    opts.conf +
    "\n";
  await writeFile(configFile, config, { mode: 0o644 });

  let output = "";
  const child = spawn("dovecot", ["-F", "-c", configFile], { env: ENV, stdio: ["ignore", "pipe", "pipe"], detached: true });
  child.stdout?.setEncoding("utf8").on("data", (s: string) => (output += s));
  child.stderr?.setEncoding("utf8").on("data", (s: string) => (output += s));
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      resolve();
    });
    child.once("error", (err) => {
      output += `spawn dovecot: ${err.message}\n`;
      exited = { code: 127, signal: null };
      resolve();
    });
  });
  // A forgotten instance must not keep the test process alive: the exit hook
  // kills it when the process ends.
  child.unref();
  (child.stdout as net.Socket | null)?.unref();
  (child.stderr as net.Socket | null)?.unref();
  running.set(dir, child);
  installExitHook();

  const logs = async (): Promise<string> => {
    let log = "";
    try {
      log = await readFile(logFile, "utf8");
    } catch {}
    const parts = [];
    if (output) parts.push(`--- dovecot -F output ---\n${output}`);
    parts.push(`--- ${logFile} ---\n${log}`);
    return parts.join("\n");
  };

  const killGroup = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    } catch {}
  };
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (exited === undefined) {
      // SIGTERM: the master stops its services and terminates the mail
      // processes (shutdown_clients = yes) at once, then idles ~1 s for its log
      // process to drain. Nothing in the temp dir is worth that second: after
      // 200 ms the whole process group is killed.
      // (The timers stay referenced: the child is unref'ed, see below.)
      child.kill("SIGTERM");
      if (!(await exitedWithin(exitPromise, 200))) {
        killGroup();
        await exitedWithin(exitPromise, 5000);
      }
    }
    // Whatever of the group outlived the master (nothing, normally).
    killGroup();
    running.delete(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
  };

  // Ready when all three protocols greet (imap-login waits for auth before its banner).
  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  const probes: [string, number, (l: string) => boolean, string][] = [
    ["IMAP", imapPort, (l) => l.startsWith("* OK"), "a LOGOUT\r\n"],
    ["POP3", pop3Port, (l) => l.startsWith("+OK"), "QUIT\r\n"],
    ["LMTP", lmtpPort, (l) => l.startsWith("220 "), "QUIT\r\n"],
  ];
  let missing: string | undefined;
  for (const [name, port, done, quit] of probes) {
    missing = name;
    while (Date.now() < deadline && exited === undefined) {
      if ((await readGreeting(port, done, quit)) !== undefined) {
        missing = undefined;
        break;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    if (missing !== undefined) break;
  }
  if (missing !== undefined) {
    // Give the log process a moment to write the fatal error.
    await new Promise((r) => setTimeout(r, 100));
    const text = await logs();
    await stop();
    const why =
      exited !== undefined
        ? `dovecot -F exited (code ${exited.code}, signal ${exited.signal})`
        : `no ${missing} greeting within ${timeoutMs} ms`;
    throw new Error(`startDovecot: ${why}\n${text}`);
  }

  const doveadm = (args: string[], input?: string): Promise<CommandResult> => runCommand("doveadm", ["-c", configFile, ...args], input);
  const reload = async (): Promise<void> => {
    const res = await runCommand("dovecot", ["-c", configFile, "reload"]);
    if (res.code !== 0) throw new Error(`dovecot reload failed (${res.code}): ${res.stderr}${res.stdout}`);
  };

  return {
    dir,
    configFile,
    imapPort,
    pop3Port,
    lmtpPort,
    baseDir,
    authClientSocket: path.join(baseDir, "auth-client"),
    authUserdbSocket: path.join(baseDir, "auth-userdb"),
    lmtpSocket: path.join(baseDir, "lmtp"),
    homeDir,
    logFile,
    mailUser,
    mailUid: uid,
    mailGid: gid,
    doveadm,
    reload,
    logs,
    stop,
  };
}

/**
 * Runs fn; if it throws, rethrows an error whose message ends with the
 * instance's logs (the original error is kept as `cause`).
 */
export async function withDovecotLogs<T>(dovecot: Pick<DovecotInstance, "logs">, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`${message}\n${await dovecot.logs()}`, { cause: err });
  }
}

/**
 * Kills Dovecot masters (and their process groups) left behind by crashed
 * test processes of the given run (their cmdline has `-c <tmp>/mailwarden-dovecot-<runId>-...`),
 * and removes every mailwarden-dovecot-<runId>- temp dir. Call it only once
 * that run's tests are finished. Returns how many masters were killed.
 */
export function killStrayDovecot(runId: string): Promise<number> {
  const prefix = `mailwarden-dovecot-${runId}-`;
  const marker = path.join(os.tmpdir(), prefix);
  return killStrayMasters({
    comm: "dovecot",
    tmpPrefix: prefix,
    belongsToRun: (pid) => {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0");
      const c = argv.indexOf("-c");
      return c >= 0 && (argv[c + 1] ?? "").startsWith(marker);
    },
  });
}

/**
 * Dovecot's log once it matches `re` (or, after `timeoutMs`, as it is, for the
 * assertion to show): processes log through Dovecot's log process, so a line
 * can land in the file just after the client got its answer.
 */
export async function waitForDovecotLog(d: { logs(): Promise<string> }, re: RegExp, timeoutMs = 3000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await d.logs();
    if (re.test(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- the shipped Lua bridge, configured for a test ----

export interface MailwardenLuaSettings {
  /** mailwarden's auth endpoint, e.g. http://127.0.0.1:PORT (no trailing slash). */
  url: string;
  secret?: string;
  secretFile?: string;
  timeoutMs?: number;
  /** The script's TRANSPORT; left at "auto" (LuaSocket when installed) unless given. */
  transport?: "auto" | "luasocket" | "dovecot.http";
}

function luaString(value: string): string {
  if (!/^[\x20-\x7e]*$/.test(value)) throw new Error(`Lua setting must be printable ASCII: ${JSON.stringify(value)}`);
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * dovecot-conf/mailwarden.lua with its settings lines replaced (nothing else
 * changes, so tests run the script users install).
 */
export async function mailwardenLuaScript(settings: MailwardenLuaSettings): Promise<string> {
  let text = await readFile(MAILWARDEN_LUA, "utf8");
  const set = (name: string, value: string): void => {
    const re = new RegExp(`^local ${name} = [^\\n]*?(\\s*--[^\\n]*)?$`, "m");
    if (!re.test(text)) throw new Error(`${MAILWARDEN_LUA}: no "local ${name} = ..." settings line`);
    text = text.replace(re, (_m, comment: string | undefined) => `local ${name} = ${value}${comment ?? ""}`);
  };
  set("URL", luaString(settings.url));
  set("SECRET", luaString(settings.secret ?? ""));
  set("SECRET_FILE", luaString(settings.secretFile ?? ""));
  set("TIMEOUT_MS", String(Math.trunc(settings.timeoutMs ?? 5000)));
  if (settings.transport !== undefined) set("TRANSPORT", luaString(settings.transport));
  return text;
}

/** Writes the configured script to file (0644, so Dovecot's auth-worker can read it). */
export async function writeMailwardenLua(file: string, settings: MailwardenLuaSettings): Promise<void> {
  await writeFile(file, await mailwardenLuaScript(settings), { mode: 0o644 });
}

/** dovecot-conf/2.3/auth-mailwarden.conf.ext with the script path pointing at luaFile. */
export async function mailwardenAuthConf23(luaFile: string): Promise<string> {
  const text = await readFile(AUTH_MAILWARDEN_CONF_23, "utf8");
  if (!text.includes("/etc/dovecot/mailwarden.lua")) throw new Error(`${AUTH_MAILWARDEN_CONF_23}: no /etc/dovecot/mailwarden.lua to replace`);
  return text.replaceAll("/etc/dovecot/mailwarden.lua", luaFile);
}
