// Private Postfix instances for integration tests, plus an SMTP client (swaks).
//
// Each instance lives in its own temp dir (config, queue, data, log), runs the
// stock Debian binaries as root via `postfix -c <dir>/etc start-fg`, listens
// only on 127.0.0.1:<free high port>, and never touches /etc/postfix or the
// system queue. All master.cf services run with chroot=n so UNIX socket paths
// outside the queue directory (e.g. a test's temp dir) work everywhere.
//
// What Postfix 3.7 needs for a second instance from a temp config dir, as root:
// - nothing in /etc/postfix/main.cf: `postfix -c`, postmap/postconf -c,
//   postqueue -c and sendmail -C work for root without alternate_config_directories
//   (that check only bites unprivileged users of the set-gid postdrop/postqueue);
// - queue_directory owned by root (postfix-script creates the subdirectories);
// - data_directory owned by the `postfix` user (master.lock lives there);
// - every directory on the way must be traversable by `postfix` (0755 temp dir);
// - main.cf must be at least 2 s old: Postfix's dict_load_file() dozes in
//   300 ms steps until a freshly written file's mtime is in the past (to avoid
//   reading half-edited files), which cost every command ~2 s. So the harness
//   backdates main.cf/master.cf after writing them (also after setMainCf).
// - maillog_file needs the postlog unix-dgram service in master.cf and its path
//   must start with one of maillog_file_prefixes (default "/var, /dev/stdout").
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort } from "./ports.ts";
import { killStrayMasters } from "./strays.ts";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface PostfixOptions {
  /** main.cf settings; they override the harness defaults (see DEFAULT_MAIN_CF). */
  mainCf: Record<string, string>;
  /** Appended verbatim to master.cf (services must use chroot "n"). */
  masterCfExtra?: string;
  /** How long to wait for the SMTP banner. Default 20 s. */
  startTimeoutMs?: number;
}

export interface PostfixInstance {
  /** Temp dir holding everything below. */
  dir: string;
  smtpPort: number;
  configDir: string;
  queueDir: string;
  dataDir: string;
  logFile: string;
  /** `postmap -c <configDir> ...args` */
  postmap(args: string[]): Promise<CommandResult>;
  /** `postconf -c <configDir> ...args` */
  postconf(args: string[]): Promise<CommandResult>;
  /** `postqueue -c <configDir> ...args` (e.g. ["-p"]) */
  postqueue(args: string[]): Promise<CommandResult>;
  /** Sets main.cf parameters (postconf -e) and reloads the running instance. */
  setMainCf(settings: Record<string, string>): Promise<void>;
  /** `postfix -c <configDir> reload` */
  reload(): Promise<void>;
  /** Asks the queue manager to retry deferred mail now (postqueue -f). */
  flush(): Promise<void>;
  /** Contents of the instance's maillog plus the start-fg process output. */
  logs(): Promise<string>;
  /** Stops Postfix (idempotent) and removes the temp dir. */
  stop(): Promise<void>;
}

/** Harness defaults; PostfixOptions.mainCf overrides any of them. */
export const DEFAULT_MAIN_CF: Readonly<Record<string, string>> = {
  compatibility_level: "3.6",
  myhostname: "mx.mailwarden.test",
  mydomain: "mailwarden.test",
  myorigin: "$myhostname",
  mydestination: "",
  inet_interfaces: "127.0.0.1",
  inet_protocols: "ipv4",
  mynetworks: "127.0.0.0/8",
  smtpd_banner: "$myhostname ESMTP mailwarden-test",
  // No local delivery, so no aliases; avoids warnings about /etc/aliases.db.
  alias_maps: "",
  alias_database: "",
  biff: "no",
  append_dot_mydomain: "no",
  // No DNS: MX/A lookups are disabled for smtp and lmtp.
  smtp_dns_support_level: "disabled",
  lmtp_dns_support_level: "disabled",
  smtp_host_lookup: "native",
  lmtp_host_lookup: "native",
  // Nothing leaves the test instance unless a test routes it somewhere
  // (transport_maps, virtual_transport, relay_transport, or override this).
  default_transport: "error:5.3.0 mailwarden test instance: no outbound delivery",
  // Fast retries for deferred mail.
  queue_run_delay: "1s",
  minimal_backoff_time: "1s",
  maximal_backoff_time: "2s",
  delay_warning_time: "0",
  in_flow_delay: "0",
  smtpd_error_sleep_time: "0",
  // Avoid 1 s "lost connection" throttling of a restarted test daemon.
  lmtp_connection_cache_on_demand: "no",
};

const POSTFIX_ENV: NodeJS.ProcessEnv = (() => {
  const env: NodeJS.ProcessEnv = { ...process.env, LANG: "C", LC_ALL: "C" };
  delete env.MAIL_CONFIG;
  const p = env.PATH ?? "/usr/bin:/bin";
  env.PATH = `${p}:/usr/sbin:/sbin:/usr/bin:/bin`;
  return env;
})();

function runCommand(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<CommandResult> {
  return new Promise<CommandResult>((resolve, reject) => {
    const child = spawn(cmd, args, { env: POSTFIX_ENV, stdio: ["pipe", "pipe", "pipe"] });
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

function formatMainCfValue(value: string): string {
  // Continuation lines must start with whitespace.
  return value.replace(/\r?\n/g, "\n    ");
}

function masterCf(smtpPort: number, extra: string | undefined): string {
  // Columns: service type private unpriv chroot wakeup maxproc command.
  // Based on Debian's 3.7 master.cf with chroot forced to "n" everywhere.
  return `# generated by test/support/postfix.ts
127.0.0.1:${smtpPort} inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
  -o syslog_name=postfix/$service_name
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
virtual    unix  - n n -     - virtual
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
${extra ?? ""}
`;
}

// Instances still running in this process: killed on exit if a test forgot stop().
const running = new Map<string, { masterPid: () => number | undefined; child: ChildProcess }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const [dir, inst] of running) {
      // master runs in its own process group (it calls setsid()): kill it and
      // all its children at once, so nothing writes into dir while we remove it.
      const pid = inst.masterPid();
      try {
        if (pid !== undefined) process.kill(-pid, "SIGKILL");
      } catch {}
      try {
        inst.child.kill("SIGKILL");
      } catch {}
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
      } catch {}
    }
  });
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, "utf8").trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Reads the first (possibly multi-line) SMTP reply from 127.0.0.1:port; undefined if nothing answers. */
function readBanner(port: number, timeoutMs = 2000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (v: string | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("data", (s: string) => {
      buf += s;
      const m = /^(\d{3}) [^\n]*\n/m.exec(buf);
      if (m) {
        socket.write("QUIT\r\n");
        done(buf);
      }
    });
    socket.on("error", () => done(undefined));
    socket.on("close", () => done(buf === "" ? undefined : buf));
  });
}

/** See the header comment: keeps Postfix from waiting for main.cf to "settle". */
async function backdateConfig(configDir: string): Promise<void> {
  const past = new Date(Date.now() - 60_000);
  for (const f of ["main.cf", "master.cf"]) await utimes(path.join(configDir, f), past, past);
}

function postfixRunId(): string {
  return (process.env.MAILWARDEN_TEST_RUN_ID ?? "adhoc").replace(/[^A-Za-z0-9_.-]/g, "_");
}

/** Starts a private Postfix instance. Requires root and the Debian postfix package. */
export async function startPostfix(opts: PostfixOptions): Promise<PostfixInstance> {
  if (process.getuid?.() !== 0) {
    throw new Error("startPostfix: must run as root (Postfix's master daemon starts as root)");
  }
  if (!existsSync("/usr/sbin/postfix")) {
    throw new Error("startPostfix: /usr/sbin/postfix missing; run `bash test/setup/ensure-deps.sh` as root");
  }
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      lastError = err as Error;
      // Retry only when the probed port was taken in the meantime.
      if (!/Address already in use/.test(lastError.message)) throw lastError;
    }
  }
  throw lastError!;
}

async function startOnce(opts: PostfixOptions): Promise<PostfixInstance> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `mailwarden-postfix-${postfixRunId()}-`));
  await chmod(dir, 0o755);
  const configDir = path.join(dir, "etc");
  const queueDir = path.join(dir, "spool");
  const dataDir = path.join(dir, "data");
  const logFile = path.join(dir, "maillog");
  await mkdir(configDir, { mode: 0o755 });
  await mkdir(queueDir, { mode: 0o755 });
  await mkdir(dataDir, { mode: 0o700 });
  const chownRes = await runCommand("chown", ["postfix:postfix", dataDir]);
  if (chownRes.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`startPostfix: chown postfix ${dataDir} failed: ${chownRes.stderr.trim()}`);
  }

  const smtpPort = await freePort();
  const settings: Record<string, string> = {
    ...DEFAULT_MAIN_CF,
    ...opts.mainCf,
    // Instance layout: not overridable.
    config_directory: configDir,
    queue_directory: queueDir,
    data_directory: dataDir,
    maillog_file: logFile,
    maillog_file_prefixes: dir,
  };
  const mainCfText =
    "# generated by test/support/postfix.ts\n" +
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${formatMainCfValue(v)}`)
      .join("\n") +
    "\n";
  await writeFile(path.join(configDir, "main.cf"), mainCfText);
  await writeFile(path.join(configDir, "master.cf"), masterCf(smtpPort, opts.masterCfExtra));
  await backdateConfig(configDir);

  // Surface configuration mistakes (unknown parameters, bad syntax) early.
  const check = await runCommand("postconf", ["-c", configDir, "-n"]);
  const configWarnings = check.stderr.trim();
  // e.g. "unused parameter: virtual_mailbox_map=..." for a typo in mainCf.
  if (configWarnings) console.error(`startPostfix: postconf warnings:\n${configWarnings}`);

  let output = "";
  const child = spawn("postfix", ["-c", configDir, "start-fg"], {
    env: POSTFIX_ENV,
    stdio: ["ignore", "pipe", "pipe"],
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
      output += `spawn postfix: ${err.message}\n`;
      exited = { code: 127, signal: null };
      resolve();
    });
  });

  const pidFile = path.join(queueDir, "pid", "master.pid");
  const masterPid = (): number | undefined => readPid(pidFile);
  running.set(dir, { masterPid, child });
  installExitHook();

  const logs = async (): Promise<string> => {
    let log = "";
    try {
      log = await readFile(logFile, "utf8");
    } catch {}
    const parts = [];
    if (configWarnings) parts.push(`--- postconf warnings ---\n${configWarnings}\n`);
    if (output) parts.push(`--- postfix start-fg output ---\n${output}`);
    parts.push(`--- ${logFile} ---\n${log}`);
    return parts.join("\n");
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (exited === undefined) {
      await runCommand("postfix", ["-c", configDir, "stop"], undefined, 15_000).catch(() => undefined);
      const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 10_000).unref());
      if ((await Promise.race([exitPromise, timeout])) === "timeout") {
        const pid = masterPid();
        try {
          if (pid !== undefined) process.kill(-pid, "SIGKILL");
        } catch {}
        child.kill("SIGKILL");
        await Promise.race([exitPromise, new Promise((r) => setTimeout(r, 2000).unref())]);
      }
    }
    running.delete(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
  };

  // Wait for the 220 banner (or for start-fg to die).
  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let banner: string | undefined;
  while (Date.now() < deadline && exited === undefined) {
    banner = await readBanner(smtpPort);
    if (banner !== undefined) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (banner === undefined || !banner.startsWith("220")) {
    const text = await logs();
    await stop();
    const why =
      exited !== undefined
        ? `postfix start-fg exited (code ${exited.code}, signal ${exited.signal})`
        : banner === undefined
          ? `no SMTP banner on 127.0.0.1:${smtpPort} within ${timeoutMs} ms`
          : `unexpected banner ${JSON.stringify(banner)}`;
    throw new Error(`startPostfix: ${why}\n${text}`);
  }

  const setMainCf = async (s: Record<string, string>): Promise<void> => {
    const args = ["-c", configDir, "-e", ...Object.entries(s).map(([k, v]) => `${k}=${v}`)];
    const res = await runCommand("postconf", args);
    if (res.code !== 0) throw new Error(`postconf -e failed: ${res.stderr}`);
    await backdateConfig(configDir);
    await reload();
  };
  const reload = async (): Promise<void> => {
    await backdateConfig(configDir);
    const res = await runCommand("postfix", ["-c", configDir, "reload"]);
    if (res.code !== 0) throw new Error(`postfix reload failed (${res.code}): ${res.stderr}${res.stdout}`);
  };

  return {
    dir,
    smtpPort,
    configDir,
    queueDir,
    dataDir,
    logFile,
    postmap: (args) => runCommand("postmap", ["-c", configDir, ...args]),
    postconf: (args) => runCommand("postconf", ["-c", configDir, ...args]),
    postqueue: (args) => runCommand("postqueue", ["-c", configDir, ...args]),
    setMainCf,
    reload,
    flush: async () => {
      const res = await runCommand("postqueue", ["-c", configDir, "-f"]);
      if (res.code !== 0) throw new Error(`postqueue -f failed (${res.code}): ${res.stderr}`);
    },
    logs,
    stop,
  };
}

/**
 * Runs fn; if it throws, rethrows an error whose message ends with the
 * instance's logs (the original error is kept as `cause`, so assertion diffs
 * still show up in the test report).
 */
export async function withPostfixLogs<T>(postfix: Pick<PostfixInstance, "logs">, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`${message}\n${await postfix.logs()}`, { cause: err });
  }
}

/**
 * Kills Postfix master processes left behind by crashed test processes of the
 * given run (their MAIL_CONFIG points at a mailwarden-postfix-<runId>- temp dir),
 * waits for them to go away and removes every mailwarden-postfix-<runId>- temp
 * dir. Call it only once that run's tests are finished. Returns how many
 * masters were killed.
 */
export function killStrayPostfix(runId: string): Promise<number> {
  const prefix = `mailwarden-postfix-${runId}-`;
  const marker = `MAIL_CONFIG=${path.join(os.tmpdir(), prefix)}`;
  return killStrayMasters({
    comm: "master",
    tmpPrefix: prefix,
    belongsToRun: (pid) => readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").some((e) => e.startsWith(marker)),
  });
}

export interface SendMailOptions {
  port: number;
  from: string;
  to: string[];
  /** Whole message (headers + body); default: swaks' generated test message. */
  data?: string;
  /** EHLO name; default "client.mailwarden.test". */
  ehlo?: string;
  /** Server address; default 127.0.0.1. */
  server?: string;
  /** Extra swaks arguments, e.g. ["--header", "Subject: hi"] or ["--auth", ...]. */
  swaksArgs?: string[];
  timeoutMs?: number;
}

export interface SmtpReply {
  /** The client command this replies to ("" for the banner, "DATA-END" after the message). */
  command: string;
  code: number;
  /** All reply lines joined with "\n", e.g. "550 5.1.1 <x@y>: Recipient address rejected: ..." */
  text: string;
}

export interface SendMailResult {
  /** Code of the last reply before QUIT (0 if the server never answered). */
  code: number;
  /** swaks' full transcript (stdout + stderr). */
  transcript: string;
  /** swaks exit code (0 ok, 23 MAIL failed, 24 no RCPT accepted, 25 DATA failed, 26 message rejected...). */
  exitCode: number;
  /** Every server reply, in order. */
  replies: SmtpReply[];
}

/** Parses swaks' transcript into replies (exported for tests of the harness). */
export function parseSwaksTranscript(transcript: string): SmtpReply[] {
  const replies: SmtpReply[] = [];
  let command = "";
  let inData = false;
  let pending: string[] = [];
  for (const raw of transcript.split("\n")) {
    const line = raw.replace(/\r$/, "");
    const sent = /^ (?:->|~>) (.*)$/.exec(line);
    if (sent) {
      const text = sent[1] ?? "";
      if (inData) {
        if (text === ".") {
          inData = false;
          command = "DATA-END";
        }
      } else {
        command = text;
      }
      continue;
    }
    const recv = /^<(?:-|~|\*\*|~\*)\s*(\d{3})([- ])(.*)$/.exec(line);
    if (recv) {
      pending.push(`${recv[1]}${recv[2]}${recv[3]}`);
      if (recv[2] === " ") {
        const code = Number(recv[1]);
        replies.push({ command, code, text: pending.join("\n") });
        pending = [];
        if (/^DATA$/i.test(command) && code === 354) inData = true;
      }
    }
  }
  return replies;
}

/** Sends one message with swaks; never throws on SMTP errors (inspect code/replies). */
export async function sendMail(opts: SendMailOptions): Promise<SendMailResult> {
  const args = [
    "--server",
    opts.server ?? "127.0.0.1",
    "--port",
    String(opts.port),
    "--from",
    opts.from === "" ? "<>" : opts.from,
    "--to",
    opts.to.join(","),
    "--helo",
    opts.ehlo ?? "client.mailwarden.test",
    "--timeout",
    `${Math.ceil((opts.timeoutMs ?? 30_000) / 1000)}s`,
  ];
  if (opts.data !== undefined) args.push("--data", "-");
  args.push(...(opts.swaksArgs ?? []));
  const res = await runCommand("swaks", args, opts.data, (opts.timeoutMs ?? 30_000) + 10_000);
  const transcript = res.stdout + (res.stderr ? `\n${res.stderr}` : "");
  const replies = parseSwaksTranscript(res.stdout);
  const beforeQuit = replies.filter((r) => !/^QUIT$/i.test(r.command));
  const last = beforeQuit[beforeQuit.length - 1];
  return { code: last?.code ?? 0, transcript, exitCode: res.code, replies };
}
