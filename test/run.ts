// Test runner behind `npm test` (package.json: "pretest" installs system
// packages, then `node test/run.ts`):
//
//   1. type-checks the project (tsc -p tsconfig.json --noEmit), failing fast;
//   2. starts ONE private MariaDB for the whole run (in parallel with tsc) and
//      exports MAILWARDEN_TEST_MYSQL_SOCKET / _PORT so testMariaDb() reuses it;
//   3. runs `node --test` over test/unit/**/*.test.ts and
//      test/integration/**/*.test.ts;
//   4. always stops MariaDB (and any Postfix or Dovecot a crashed test left
//      behind) and exits with the test exit code.
//
// Usage:
//   npm test                                  everything
//   npm test -- test/integration/postfix-harness.test.ts
//   npm test -- socketmap                     files whose path contains "socketmap"
//   npm test -- 'test/unit/**/*.test.ts'      a glob
//   npm test -- --test-name-pattern=netstring other `node --test` options pass through
//
// Environment knobs (none needed in CI):
//   MAILWARDEN_TEST_CONCURRENCY     test files run in parallel (default: max(2, CPUs))
//   MAILWARDEN_TEST_TIMEOUT_MS      per-test timeout (default 60000)
//   MAILWARDEN_TEST_TOTAL_TIMEOUT_S whole `node --test` run (default 1080 = 18 min)
//   MAILWARDEN_TEST_SKIP_TYPECHECK=1  skip step 1 (local iteration only)
//   MAILWARDEN_TEST_MYSQL_SOCKET + MAILWARDEN_TEST_MYSQL_PORT already set:
//                                   use that server instead of starting one
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, globSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ENV_PORT, ENV_SOCKET, startMariaDb, type MariaDb } from "./support/mariadb.ts";
import { killStrayDovecot } from "./support/dovecot.ts";
import { killStrayPostfix } from "./support/postfix.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const DEFAULT_GLOBS = ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"];
// `node --test` options that take their value as the next argument.
const VALUE_OPTIONS = new Set([
  "--test-name-pattern",
  "--test-skip-pattern",
  "--test-reporter",
  "--test-reporter-destination",
  "--test-concurrency",
  "--test-timeout",
  "--test-shard",
  "--test-isolation",
  "--test-coverage-include",
  "--test-coverage-exclude",
  "--import",
  "--require",
  "--conditions",
  "-C",
  "-r",
]);

const started = performance.now();
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;
const log = (msg: string): void => console.error(`[test/run] ${msg}`);

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function splitArgs(argv: string[]): { options: string[]; filters: string[] } {
  const options: string[] = [];
  const filters: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      filters.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("-")) {
      options.push(arg);
      if (VALUE_OPTIONS.has(arg) && i + 1 < argv.length) options.push(argv[++i]!);
    } else {
      filters.push(arg);
    }
  }
  return { options, filters };
}

function listFiles(patterns: string[]): string[] {
  const files = new Set<string>();
  for (const pattern of patterns) for (const f of globSync(pattern, { cwd: ROOT })) files.add(f);
  return [...files].filter((f) => statSync(path.join(ROOT, f)).isFile()).sort();
}

function selectFiles(filters: string[]): string[] {
  const all = listFiles(DEFAULT_GLOBS);
  if (filters.length === 0) return all;
  const selected = new Set<string>();
  for (const filter of filters) {
    const rel = path.relative(ROOT, path.resolve(filter));
    let matched: string[];
    if (existsSync(path.join(ROOT, rel)) && statSync(path.join(ROOT, rel)).isDirectory()) {
      matched = listFiles([`${rel}/**/*.test.ts`]);
    } else if (existsSync(path.join(ROOT, rel))) {
      matched = [rel];
    } else if (/[*?[{]/.test(filter)) {
      matched = listFiles([filter]);
    } else {
      matched = all.filter((f) => f.includes(filter));
    }
    if (matched.length === 0) throw new Error(`no test file matches ${JSON.stringify(filter)}`);
    for (const f of matched) selected.add(f);
  }
  return [...selected].sort();
}

/** Runs a command, resolving with its exit code (stdio inherited). */
function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; detached?: boolean } = {}): {
  child: ChildProcess;
  done: Promise<number>;
} {
  const child = spawn(cmd, args, { cwd: ROOT, stdio: "inherit", env: opts.env ?? process.env, detached: opts.detached });
  const done = new Promise<number>((resolve) => {
    child.once("error", (err) => {
      log(`cannot run ${cmd}: ${err.message}`);
      resolve(127);
    });
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1)));
  });
  return { child, done };
}

async function main(): Promise<number> {
  const { options, filters } = splitArgs(process.argv.slice(2));
  let files: string[];
  try {
    files = selectFiles(filters);
  } catch (err) {
    log((err as Error).message);
    return 1;
  }
  if (files.length === 0) {
    log(`no test files under ${DEFAULT_GLOBS.join(", ")}`);
    return 1;
  }

  const runId = `${process.pid}-${Date.now().toString(36)}`;
  const concurrency = intEnv("MAILWARDEN_TEST_CONCURRENCY", Math.max(2, os.availableParallelism()));
  const testTimeoutMs = intEnv("MAILWARDEN_TEST_TIMEOUT_MS", 60_000);
  const totalTimeoutS = intEnv("MAILWARDEN_TEST_TOTAL_TIMEOUT_S", 1080);

  // 1 + 2: type-check and start MariaDB concurrently.
  let tscMs = 0;
  const typecheck = (async (): Promise<number> => {
    if (process.env.MAILWARDEN_TEST_SKIP_TYPECHECK === "1") {
      log("type-check skipped (MAILWARDEN_TEST_SKIP_TYPECHECK=1)");
      return 0;
    }
    const t = performance.now();
    const tsc = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const code = await run(process.execPath, [tsc, "-p", "tsconfig.json", "--noEmit"]).done;
    tscMs = performance.now() - t;
    return code;
  })();

  let db: MariaDb | undefined;
  let dbMs = 0;
  const dbStart = (async (): Promise<void> => {
    if (process.env[ENV_SOCKET] && process.env[ENV_PORT]) {
      log(`using the MariaDB server from the environment (${process.env[ENV_SOCKET]})`);
      return;
    }
    const t = performance.now();
    db = await startMariaDb();
    dbMs = performance.now() - t;
  })();

  let testChild: ChildProcess | undefined;
  let testsMs = 0;
  let stopping = false;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaning ??= doCleanup());
  const doCleanup = async (): Promise<void> => {
    const n = await killStrayPostfix(runId);
    if (n > 0) log(`killed ${n} Postfix instance(s) left running by crashed tests`);
    const nd = await killStrayDovecot(runId);
    if (nd > 0) log(`killed ${nd} Dovecot instance(s) left running by crashed tests`);
    if (db !== undefined) {
      const d = db;
      db = undefined;
      await d.stop().catch((err: Error) => log(`stopping MariaDB failed: ${err.message}`));
    }
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    if (testChild?.pid !== undefined) {
      try {
        process.kill(-testChild.pid, signal);
      } catch {}
    }
    void (async () => {
      await dbStart.catch(() => undefined);
      await cleanup();
      process.exit(130);
    })();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    const [tscCode, dbResult] = await Promise.all([typecheck, dbStart.then(() => undefined, (err: Error) => err)]);
    if (tscCode !== 0) {
      log(`type-check failed (tsc exit ${tscCode})`);
      return tscCode;
    }
    if (dbResult instanceof Error) {
      log(`cannot start MariaDB: ${dbResult.message}`);
      return 1;
    }
    if (stopping) return 130;
    if (tscMs > 0) log(`type-check ok in ${seconds(tscMs)}`);
    if (db !== undefined) log(`MariaDB on ${db.socket} / 127.0.0.1:${db.port} started in ${seconds(dbMs)}`);

    // 3: the tests.
    const env: NodeJS.ProcessEnv = { ...process.env, ...(db?.env ?? {}), MAILWARDEN_TEST_RUN_ID: runId };
    const args = [
      "--test",
      `--test-concurrency=${concurrency}`,
      `--test-timeout=${testTimeoutMs}`,
      ...(options.some((o) => o.startsWith("--test-reporter")) ? [] : ["--test-reporter=spec"]),
      ...options,
      ...files,
    ];
    log(`node --test: ${files.length} file(s), concurrency ${concurrency}, per-test timeout ${seconds(testTimeoutMs)}`);
    const t = performance.now();
    // Own process group, so a hung run can be killed with everything it started.
    const tests = run(process.execPath, args, { env, detached: true });
    testChild = tests.child;
    let timedOut = false;
    const watchdog = setTimeout(() => {
      timedOut = true;
      log(`tests still running after ${totalTimeoutS}s: killing them`);
      const pid = tests.child.pid;
      if (pid === undefined) return;
      try {
        process.kill(-pid, "SIGTERM");
      } catch {}
      setTimeout(() => {
        try {
          process.kill(-pid, "SIGKILL");
        } catch {}
      }, 10_000).unref();
    }, totalTimeoutS * 1000);
    const code = await tests.done;
    clearTimeout(watchdog);
    testsMs = performance.now() - t;
    return timedOut ? (code === 0 ? 1 : code) : code;
  } finally {
    await dbStart.catch(() => undefined);
    await cleanup();
    const parts = [
      tscMs > 0 ? `type-check ${seconds(tscMs)}` : undefined,
      dbMs > 0 ? `MariaDB start ${seconds(dbMs)}` : undefined,
      testsMs > 0 ? `tests ${seconds(testsMs)}` : undefined,
    ].filter(Boolean);
    log(`total wall time ${seconds(performance.now() - started)}${parts.length ? ` (${parts.join(", ")})` : ""}`);
  }
}

const code = await main();
log(code === 0 ? "PASS" : `FAIL (exit ${code})`);
// Exit explicitly: a stray handle (a child's pipe, a socket) must not keep the run alive.
process.exit(code);
