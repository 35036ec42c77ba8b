// Private Dovecot 2.4 instances for integration tests, run from the Debian 13
// "trixie" chroot that test/setup/ensure-dovecot24.sh builds (this host is
// Debian 12, whose Dovecot is 2.3; test/support/dovecot.ts runs that one).
//
// Same idea as dovecot.ts, adapted to a chroot:
// - The instance dir is created INSIDE the chroot, under its /tmp:
//   <root>/tmp/mailwarden-dovecot-<run id>-XXXXXX on the host, seen by
//   Dovecot as /tmp/mailwarden-dovecot-<run id>-XXXXXX. No bind mounts: a
//   host process (mailwarden) that puts a UNIX socket there (the dict socket)
//   is reachable by Dovecot under the chroot path, see hostPath()/dir.
//   The name matches dovecot.ts's, so killStrayDovecot(runId) (test/run.ts)
//   also kills 2.4 masters of crashed test processes: their cmdline holds
//   `-c /tmp/mailwarden-dovecot-<run id>-...` too (with the default TMPDIR).
// - The chroot shares the host's network: Dovecot listens on 127.0.0.1 high
//   ports, and the Lua script reaches mailwarden's auth endpoint on
//   127.0.0.1 as usual.
// - `chroot <root> /usr/sbin/dovecot -F -c <dir>/dovecot.conf`, detached in its
//   own process group (chroot execs dovecot: the child's pid is the master).
//   No /proc is mounted in the chroot; Dovecot 2.4.1 does not need it.
// - Mail uid: nobody (65534), which base-passwd gives the chroot too, so the
//   uid is the same number on both sides. mail_uid/mail_gid default to it.
// - IMAP and LMTP only (the 2.3 harness also runs POP3).
// - Fast failures and no anvil auth penalty, like dovecot.ts.
// - The base config uses 2.4 syntax (dovecot_config_version, mail_driver/
//   mail_path, auth_allow_cleartext, inet_listener { listen }).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { freePort } from "./ports.ts";
import type { CommandResult } from "./dovecot.ts";

const REPO = path.resolve(import.meta.dirname, "..", "..");
/** Where ensure-dovecot24.sh builds the chroot (same env knob). */
export const TRIXIE_ROOT = process.env.MAILWARDEN_TRIXIE_ROOT ?? "/var/cache/mailwarden-test/trixie";
export const ENSURE_SCRIPT = path.join(REPO, "test", "setup", "ensure-dovecot24.sh");
/** The shipped 2.4 conf snippets. */
export const AUTH_MAILWARDEN_CONF_24 = path.join(REPO, "dovecot-conf", "2.4", "auth-mailwarden.conf.ext");
export const MAILWARDEN_CONF_24 = path.join(REPO, "dovecot-conf", "2.4", "90-mailwarden.conf");

const STAMP = ".mailwarden-trixie";

export interface Dovecot24Options {
  /**
   * Appended verbatim to the harness base config: at least a passdb and a
   * userdb. A function gets the instance dir first (chroot and host path), to
   * put files there (a Lua script) and name them in the config.
   */
  conf: string | ((paths: { dir: string; hostDir: string }) => string | Promise<string>);
  /** auth_debug + mail_debug. */
  debug?: boolean;
  /** How long to wait for the IMAP/LMTP banners. Default 20 s. */
  startTimeoutMs?: number;
}

export interface Dovecot24Instance {
  /** The chroot (host path). */
  root: string;
  /** Instance dir as Dovecot sees it (inside the chroot): use it in Dovecot's config. */
  dir: string;
  /** The same dir on the host: <root><dir>. */
  hostDir: string;
  /** <root> + a chroot path: where a host process finds (or creates) it. */
  hostPath(chrootPath: string): string;
  /** Chroot path of dovecot.conf. */
  configFile: string;
  /** Dovecot's version string (`dovecot --version`), e.g. "2.4.1-4 (7d8c0e5759)". */
  version: string;
  imapPort: number;
  lmtpPort: number;
  /** Parent of the mail homes, chroot path; mail_home defaults to <homeDir>/<domain>/<local part>. */
  homeDir: string;
  mailUid: number;
  mailGid: number;
  /** Host path of the log file. */
  logFile: string;
  /** `chroot <root> doveadm -c <configFile> ...args` (never throws on a non-zero exit). */
  doveadm(args: string[], input?: string): Promise<CommandResult>;
  /** Any program of the chroot, e.g. ["doveadm", "pw", ...] (never throws on a non-zero exit). */
  exec(argv: string[], input?: string): Promise<CommandResult>;
  logs(): Promise<string>;
  /** Stops Dovecot and every process of its group (idempotent) and removes the instance dir. */
  stop(): Promise<void>;
}

const ENV: NodeJS.ProcessEnv = (() => {
  const env: NodeJS.ProcessEnv = { ...process.env, LANG: "C", LC_ALL: "C" };
  // Inside the chroot: Debian's paths (the host PATH may point at node_modules etc.).
  env.PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
  delete env.TMPDIR;
  return env;
})();

function run(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<CommandResult> {
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

/**
 * Why Dovecot 2.4 tests cannot run here, or undefined if they can. Only "not
 * root" is a reason to skip: a missing chroot is built by startDovecot24().
 */
export function dovecot24SkipReason(): string | undefined {
  if (process.getuid?.() !== 0) {
    return "Dovecot 2.4 runs in a Debian trixie chroot, which needs root (chroot, and Dovecot's master starts as root); run the tests as root";
  }
  return undefined;
}

/** True when ensure-dovecot24.sh has finished building the chroot. */
export function trixieChrootReady(root = TRIXIE_ROOT): boolean {
  try {
    // A chroot from before lua-socket joined the recipe is rebuilt: the Lua script's tests expect LuaSocket.
    const spec = readFileSync(path.join(root, STAMP), "utf8").split("\n")[0] ?? "";
    return spec.startsWith("suite=trixie ") && /[=,]lua-socket\b/.test(spec) && existsSync(path.join(root, "usr/sbin/dovecot"));
  } catch {
    return false;
  }
}

/**
 * Runs test/setup/ensure-dovecot24.sh (a no-op when the chroot is complete,
 * ~45 s from scratch). Give the calling hook a long timeout.
 */
export async function ensureTrixieChroot(): Promise<void> {
  const res = await run("bash", [ENSURE_SCRIPT], undefined, 15 * 60_000);
  if (res.code !== 0 || !trixieChrootReady()) {
    throw new Error(`ensure-dovecot24.sh failed (exit ${res.code}); the chroot ${TRIXIE_ROOT} is not ready:\n${res.stdout}${res.stderr}`);
  }
}

function runId(): string {
  return (process.env.MAILWARDEN_TEST_RUN_ID ?? "adhoc").replace(/[^A-Za-z0-9_.-]/g, "_");
}

export interface BaseConfig24Params {
  dir: string;
  imapPort: number;
  lmtpPort: number;
  uid: number;
  gid: number;
  debug: boolean;
}

/** The harness part of dovecot.conf, Dovecot 2.4 syntax; every path is a chroot path. */
export function baseConfig24(p: BaseConfig24Params): string {
  return `# generated by test/support/dovecot24.ts
dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.1
base_dir = ${p.dir}/run
state_dir = ${p.dir}/state
instance_name = ${path.basename(p.dir)}
log_path = ${p.dir}/dovecot.log
info_log_path = ${p.dir}/dovecot.log
debug_log_path = ${p.dir}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
hostname = mx.mailwarden.test
postmaster_address = postmaster@mailwarden.test

# Loopback tests only: no TLS, plaintext auth allowed (2.3: disable_plaintext_auth = no).
ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
auth_debug = ${p.debug ? "yes" : "no"}
mail_debug = ${p.debug ? "yes" : "no"}

mail_driver = maildir
mail_path = ~/Maildir
mail_home = ${p.dir}/home/%{user | domain}/%{user | username}
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
service lmtp {
  inet_listener lmtp {
    listen = 127.0.0.1
    port = ${p.lmtpPort}
  }
}
# No anvil auth penalty (see dovecot.ts).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener auth-userdb {
    mode = 0666
  }
}

# ---- test configuration (Dovecot24Options.conf) ----
`;
}

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

/**
 * Removes instance dirs in <root>/tmp that no Dovecot uses any more: left by
 * crashed test processes (killStrayDovecot kills their masters but only cleans
 * the host's /tmp). Only dirs older than 10 minutes, so a starting instance of
 * a concurrent run is never touched.
 */
function removeStaleDirs(root: string): void {
  const tmp = path.join(root, "tmp");
  const inUse = new Set<string>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "latin1").trim() !== "dovecot") continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, "latin1").split("\0");
      const c = argv.indexOf("-c");
      if (c >= 0) inUse.add(path.basename(path.dirname(argv[c + 1] ?? "")));
    } catch {}
  }
  let names: string[] = [];
  try {
    names = readdirSync(tmp);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith("mailwarden-dovecot-") || inUse.has(name)) continue;
    const full = path.join(tmp, name);
    try {
      if (Date.now() - statSync(full).mtimeMs > 10 * 60_000) rmSync(full, { recursive: true, force: true });
    } catch {}
  }
}

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

async function exitedWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts a private Dovecot 2.4 in the trixie chroot. Requires root; builds the
 * chroot first if it is missing (call from a hook with a long timeout).
 */
export async function startDovecot24(opts: Dovecot24Options): Promise<Dovecot24Instance> {
  const skip = dovecot24SkipReason();
  if (skip) throw new Error(`startDovecot24: ${skip}`);
  if (!trixieChrootReady()) await ensureTrixieChroot();
  removeStaleDirs(TRIXIE_ROOT);
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      lastError = err as Error;
      if (!/Address already in use/.test(lastError.message)) throw lastError;
    }
  }
  throw lastError!;
}

async function startOnce(opts: Dovecot24Options): Promise<Dovecot24Instance> {
  const root = TRIXIE_ROOT;
  const hostPath = (p: string): string => path.join(root, p);
  const version = (await run("chroot", [root, "/usr/sbin/dovecot", "--version"])).stdout.trim();
  if (!version.startsWith("2.4.")) throw new Error(`startDovecot24: ${root} has Dovecot ${JSON.stringify(version)}, not 2.4`);
  const uid = 65534;
  const gid = 65534;

  const hostDir = await mkdtemp(path.join(root, "tmp", `mailwarden-dovecot-${runId()}-`));
  const dir = "/" + path.relative(root, hostDir);
  await chmod(hostDir, 0o755);
  await mkdir(path.join(hostDir, "state"), { mode: 0o755 });
  await mkdir(path.join(hostDir, "home"), { mode: 0o750 });
  await chown(path.join(hostDir, "home"), uid, gid);
  const configFile = `${dir}/dovecot.conf`;
  const logFile = path.join(hostDir, "dovecot.log");

  const [imapPort, lmtpPort] = [await freePort(), await freePort()];
  try {
    const conf = typeof opts.conf === "string" ? opts.conf : await opts.conf({ dir, hostDir });
    const config = baseConfig24({ dir, imapPort, lmtpPort, uid, gid, debug: opts.debug ?? false }) + conf + "\n";
    await writeFile(hostPath(configFile), config, { mode: 0o644 });
  } catch (err) {
    await rm(hostDir, { recursive: true, force: true });
    throw err;
  }

  let output = "";
  const child = spawn("chroot", [root, "/usr/sbin/dovecot", "-F", "-c", configFile], {
    env: ENV,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  child.stdout?.setEncoding("utf8").on("data", (s: string) => (output += s));
  child.stderr?.setEncoding("utf8").on("data", (s: string) => (output += s));
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      resolve();
    });
    child.once("error", (err) => {
      output += `spawn chroot: ${err.message}\n`;
      exited = { code: 127, signal: null };
      resolve();
    });
  });
  child.unref();
  (child.stdout as net.Socket | null)?.unref();
  (child.stderr as net.Socket | null)?.unref();
  running.set(hostDir, child);
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
      child.kill("SIGTERM");
      if (!(await exitedWithin(exitPromise, 200))) {
        killGroup();
        await exitedWithin(exitPromise, 5000);
      }
    }
    killGroup();
    running.delete(hostDir);
    await rm(hostDir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
  };

  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  const probes: [string, number, (l: string) => boolean, string][] = [
    ["IMAP", imapPort, (l) => l.startsWith("* OK"), "a LOGOUT\r\n"],
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
    await new Promise((r) => setTimeout(r, 100));
    const text = await logs();
    await stop();
    const why =
      exited !== undefined ? `dovecot -F exited (code ${exited.code}, signal ${exited.signal})` : `no ${missing} greeting within ${timeoutMs} ms`;
    throw new Error(`startDovecot24: ${why}\n${text}`);
  }

  const exec = (argv: string[], input?: string): Promise<CommandResult> => run("chroot", [root, ...argv], input);
  return {
    root,
    dir,
    hostDir,
    hostPath,
    configFile,
    version,
    imapPort,
    lmtpPort,
    homeDir: `${dir}/home`,
    mailUid: uid,
    mailGid: gid,
    logFile,
    doveadm: (args, input) => exec(["doveadm", "-c", configFile, ...args], input),
    exec,
    logs,
    stop,
  };
}

/** Reads a shipped 2.4 snippet and applies literal replacements; each `from` must occur. */
export async function shippedConf24(file: string, replacements: Record<string, string> = {}): Promise<string> {
  let text = await readFile(file, "utf8");
  for (const [from, to] of Object.entries(replacements)) {
    if (!text.includes(from)) throw new Error(`${file}: no ${JSON.stringify(from)} to replace`);
    text = text.replaceAll(from, to);
  }
  return text;
}
