// A private MariaDB server for integration tests: temporary datadir, UNIX
// socket and a free TCP port on 127.0.0.1. Never touches port 3306 or the
// system datadir.
//
// Sharing one server across a test run: the runner calls startMariaDb() once
// and exports `instance.env` (MAILWARDEN_TEST_MYSQL_SOCKET and
// MAILWARDEN_TEST_MYSQL_PORT) to the test processes; testMariaDb() then reuses
// that server. It needs root over the socket with no password, which is what
// startMariaDb() sets up (MAILWARDEN_TEST_MYSQL_ROOT_PASSWORD if it differs).
// Without those variables testMariaDb() starts a server for the process.
//
// mariadbd runs under a tiny shell watchdog whose stdin is a pipe from this
// process: when the test process dies, even by SIGKILL, the pipe closes and
// the watchdog stops the server and removes its files. No orphaned servers.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import { freePort } from './ports.ts';

export const TEST_USER = 'mailwarden_test';
/** Deliberately full of URL-special characters: exercises percent-decoding in mysql-url.ts. */
export const TEST_PASSWORD = 'p@ss:w/rd%te st';

export const ENV_SOCKET = 'MAILWARDEN_TEST_MYSQL_SOCKET';
export const ENV_PORT = 'MAILWARDEN_TEST_MYSQL_PORT';
export const ENV_ROOT_PASSWORD = 'MAILWARDEN_TEST_MYSQL_ROOT_PASSWORD';

export interface MariaDb {
  readonly socket: string;
  readonly port: number;
  /** False for a server shared through the environment: it cannot be stopped or restarted from here. */
  readonly owned: boolean;
  /** Variables that let other processes reuse this server through testMariaDb(). */
  readonly env: Readonly<Record<string, string>>;
  /** `mysql://` URL over TCP for the test user. */
  url(database: string): string;
  /** `mysql://` URL over the UNIX socket for the test user. */
  socketUrl(database: string): string;
  /** (Re)creates an empty database and returns its TCP URL. */
  createDatabase(name: string): Promise<string>;
  /** Runs SQL as root (client-side escaped; test setup only). */
  admin(sql: string, params?: unknown[]): Promise<unknown>;
  /** Stops mariadbd but keeps its data (owned servers only). */
  stopServer(): Promise<void>;
  /** Starts it again on the same socket and port. */
  startServer(): Promise<void>;
  restart(): Promise<void>;
  /** Stops the server and removes its files (a no-op for a shared server). */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Seconds to wait for the server to answer. Default 30. */
  readonly startTimeoutS?: number;
}

const run = promisify(execFile);

// $1 = base dir, the rest = the mariadbd command line. See the header comment.
const WATCHDOG = `
base=$1; shift
exec 3<&0 0</dev/null   # background jobs get /dev/null as stdin: keep the pipe on fd 3
"$@" 3<&- &
pid=$!
( if ! read -r line <&3; then : > "$base/orphaned"; fi; kill -TERM $pid 2>/dev/null ) &
watcher=$!
exec 3<&-
wait $pid; status=$?
kill $watcher 2>/dev/null
if [ -e "$base/orphaned" ]; then rm -rf "$base"; fi
exit $status
`;

/** True when a MariaDB server can be used: shared through the environment or installed locally. */
export function mariaDbAvailable(): boolean {
  return Boolean(process.env[ENV_SOCKET] && process.env[ENV_PORT]) || findBinary(['mariadbd', 'mysqld'], ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']) !== undefined;
}

let shared: Promise<MariaDb> | undefined;

/** The server for this test process: the shared one from the environment, or one started (and stopped at exit) for us. */
export function testMariaDb(): Promise<MariaDb> {
  shared ??= (async () => {
    const socket = process.env[ENV_SOCKET];
    const port = Number(process.env[ENV_PORT]);
    if (socket && port) {
      const db = new Server('', socket, port, false, process.env[ENV_ROOT_PASSWORD] ?? '');
      await db.ensureTestUser();
      return db;
    }
    return startMariaDb();
  })();
  return shared;
}

/** Starts a new private server (about one second). The caller owns it and should stop() it. */
export async function startMariaDb(opts: StartOptions = {}): Promise<MariaDb> {
  const base = await mkdtemp(path.join(os.tmpdir(), 'mailwarden-mariadb-'));
  const socket = path.join(base, 'mysqld.sock');
  if (Buffer.byteLength(socket) > 100) throw new Error(`socket path too long for a UNIX socket: ${socket} (set TMPDIR to a shorter directory)`);
  try {
    await installDb(base);
    const server = new Server(base, socket, await freePort(), true, '', opts.startTimeoutS ?? 30);
    await server.startServer();
    await server.ensureTestUser();
    return server;
  } catch (err) {
    await rm(base, { recursive: true, force: true });
    throw err;
  }
}

class Server implements MariaDb {
  readonly base: string;
  readonly socket: string;
  port: number;
  readonly owned: boolean;
  readonly rootPassword: string;
  readonly startTimeoutS: number;
  #child: ChildProcess | undefined;
  #exited: Promise<number | null> | undefined;

  constructor(base: string, socket: string, port: number, owned: boolean, rootPassword: string, startTimeoutS = 30) {
    this.base = base;
    this.socket = socket;
    this.port = port;
    this.owned = owned;
    this.rootPassword = rootPassword;
    this.startTimeoutS = startTimeoutS;
  }

  get env(): Record<string, string> {
    return { [ENV_SOCKET]: this.socket, [ENV_PORT]: String(this.port) };
  }

  url(database: string): string {
    return `mysql://${TEST_USER}:${encodeURIComponent(TEST_PASSWORD)}@127.0.0.1:${this.port}/${database}`;
  }

  socketUrl(database: string): string {
    return `mysql://${TEST_USER}:${encodeURIComponent(TEST_PASSWORD)}@localhost/${database}?socket=${this.socket}`;
  }

  async admin(sql: string, params: unknown[] = []): Promise<unknown> {
    const conn = await mysql.createConnection({ socketPath: this.socket, user: 'root', password: this.rootPassword, connectTimeout: 2000 });
    try {
      return (await conn.query(sql, params))[0];
    } finally {
      await conn.end().catch(() => conn.destroy());
    }
  }

  async createDatabase(name: string): Promise<string> {
    if (!/^[A-Za-z0-9_]{1,64}$/.test(name)) throw new Error(`bad test database name ${name}`);
    await this.admin(`DROP DATABASE IF EXISTS \`${name}\``);
    await this.admin(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    return this.url(name);
  }

  async ensureTestUser(): Promise<void> {
    for (const host of ['%', 'localhost']) {
      await this.admin('CREATE USER IF NOT EXISTS ?@? IDENTIFIED BY ?', [TEST_USER, host, TEST_PASSWORD]);
      await this.admin('GRANT ALL PRIVILEGES ON *.* TO ?@?', [TEST_USER, host]);
    }
  }

  async startServer(): Promise<void> {
    this.#mustOwn('start');
    if (this.#child) return;
    stoppedAtExit.delete(this.base);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#spawn();
      } catch (err) {
        // freePort() can lose a race with another process: pick another port (only on first start).
        if (attempt < 3 && /Address already in use/.test((err as Error).message) && !existsSync(path.join(this.base, 'started-once'))) {
          this.port = await freePort();
          continue;
        }
        throw err;
      }
    }
  }

  async #spawn(): Promise<void> {
    const errorLog = path.join(this.base, 'error.log');
    const stderr = openSync(path.join(this.base, 'stderr.log'), 'a');
    const args = [
      '--no-defaults',
      ...(process.getuid?.() === 0 ? ['--user=root'] : []),
      `--datadir=${path.join(this.base, 'data')}`,
      `--socket=${this.socket}`,
      `--port=${this.port}`,
      '--bind-address=127.0.0.1',
      '--skip-name-resolve',
      `--pid-file=${path.join(this.base, 'mysqld.pid')}`,
      `--log-error=${errorLog}`,
      `--tmpdir=${this.base}`,
      '--skip-log-bin',
      '--innodb-buffer-pool-size=64M',
      '--innodb-log-file-size=8M',
      // Durability is irrelevant for throw-away test data; speed is not.
      '--innodb-flush-log-at-trx-commit=0',
      '--innodb-doublewrite=0',
      '--sync-frm=0',
      '--max-connections=500',
    ];
    const child = spawn('sh', ['-c', WATCHDOG, 'mariadbd-watchdog', this.base, mariadbdPath(), ...args], {
      stdio: ['pipe', 'ignore', stderr],
      // Own process group: a signal to the test's group (Ctrl-C, `timeout`, a runner killing
      // its children) must not kill the watchdog before it has stopped mariadbd and cleaned up.
      detached: true,
    });
    closeSync(stderr);
    child.unref();
    (child.stdin as unknown as Socket).unref(); // the pipe must not keep the test process alive
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    let exited: number | null | false = false;
    void this.#exited.then((code) => {
      exited = code;
      if (this.#child === child) this.#child = undefined;
    });

    const deadline = Date.now() + this.startTimeoutS * 1000;
    for (;;) {
      if (exited !== false) throw new Error(`mariadbd exited during startup (status ${exited}):\n${this.#logTail()}`);
      if (await this.#answers()) break;
      if (Date.now() > deadline) {
        await this.#terminate(child);
        throw new Error(`mariadbd did not answer within ${this.startTimeoutS} s:\n${this.#logTail()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await writeFile(path.join(this.base, 'started-once'), '');
  }

  async #answers(): Promise<boolean> {
    try {
      await this.admin('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  async stopServer(): Promise<void> {
    this.#mustOwn('stop');
    if (this.#child) await this.#terminate(this.#child);
    stoppedAtExit.add(this.base);
  }

  async restart(): Promise<void> {
    await this.stopServer();
    await this.startServer();
  }

  async stop(): Promise<void> {
    if (!this.owned) return;
    await this.stopServer();
    await rm(this.base, { recursive: true, force: true });
    stoppedAtExit.delete(this.base);
  }

  /** Asks the watchdog to stop mariadbd (SIGTERM, a clean shutdown) and waits for it. */
  async #terminate(child: ChildProcess): Promise<void> {
    const exited = this.#exited;
    child.stdin?.end('stop\n');
    const timer = setTimeout(() => this.#killServer(), 30_000);
    await exited;
    clearTimeout(timer);
    if (this.#child === child) this.#child = undefined;
  }

  #killServer(): void {
    try {
      const pid = Number(readFileSync(path.join(this.base, 'mysqld.pid'), 'utf8').trim());
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  #logTail(): string {
    const tail = (file: string) => {
      try {
        return readFileSync(path.join(this.base, file), 'utf8').trimEnd().split('\n').slice(-25).join('\n');
      } catch {
        return '';
      }
    };
    return [tail('stderr.log'), tail('error.log')].filter(Boolean).join('\n') || '(no log output)';
  }

  #mustOwn(what: string): void {
    if (!this.owned) throw new Error(`cannot ${what} the shared MariaDB server from ${ENV_SOCKET}; use startMariaDb() for a private one`);
  }
}

async function installDb(base: string): Promise<void> {
  const installer = findBinary(['mariadb-install-db', 'mysql_install_db'], ['/usr/bin', '/usr/local/bin', '/usr/sbin']);
  if (!installer) throw new Error('mariadb-install-db not found: install mariadb-server');
  const args = [
    '--no-defaults',
    `--datadir=${path.join(base, 'data')}`,
    '--auth-root-authentication-method=normal',
    '--skip-test-db',
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
    // Passed through to the bootstrap server: must match what mariadbd gets.
    '--innodb-log-file-size=8M',
  ];
  try {
    await run(installer, args, { timeout: 60_000 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${installer} failed: ${e.message}\n${[e.stdout, e.stderr].filter(Boolean).join('\n').split('\n').slice(-25).join('\n')}`);
  }
}

function mariadbdPath(): string {
  const found = findBinary(['mariadbd', 'mysqld'], ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']);
  if (!found) throw new Error('mariadbd not found: install mariadb-server');
  return found;
}

function findBinary(names: readonly string[], dirs: readonly string[]): string | undefined {
  const override = process.env['MAILWARDEN_TEST_MARIADBD'];
  if (override && names.includes('mariadbd')) return override;
  const search = [...dirs, ...(process.env['PATH'] ?? '').split(':').filter(Boolean)];
  for (const name of names) {
    for (const dir of search) {
      const candidate = path.join(dir, name);
      if (existsSync(candidate)) return candidate;
    }
  }
  return undefined;
}

// A server stopped with stopServer() has no watchdog left to clean up after it.
const stoppedAtExit = new Set<string>();
process.once('exit', () => {
  for (const base of stoppedAtExit) rmSync(base, { recursive: true, force: true });
});
