// Shared plumbing for CLI commands: config + directory on demand, output in
// text or JSON, one-line errors with meaningful exit codes.
import { configPath, loadConfig, type Config } from '../config/load.ts';
import { ConfigError } from '../config/reader.ts';
import { AddressError } from '../core/address.ts';
import { DirectoryAdmin } from '../directory/admin.ts';
import { openDirectory, type OpenedDirectory } from '../directory/open.ts';
import { DirectoryError } from '../directory/types.ts';

/** sysexits.h codes, as Postfix and Dovecot tools use them. */
export const EXIT = { ok: 0, fail: 1, usage: 64, dataErr: 65, tempFail: 75, config: 78 } as const;

export class CliError extends Error {
  override readonly name = 'CliError';
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.fail) {
    super(message);
    this.exitCode = exitCode;
  }
}

export class CliContext {
  readonly configFile: string;
  #config: Config | undefined;
  #directory: OpenedDirectory | undefined;

  constructor(configFile: string | undefined) {
    this.configFile = configPath(configFile);
  }

  get config(): Config {
    this.#config ??= loadConfig(this.configFile);
    return this.#config;
  }

  async directory(): Promise<OpenedDirectory> {
    this.#directory ??= await openDirectory(this.config.directory);
    return this.#directory;
  }

  async admin(): Promise<DirectoryAdmin> {
    return new DirectoryAdmin(await this.directory());
  }

  async close(): Promise<void> {
    await this.#directory?.close();
  }
}

/** Turns any error into `mailwarden: <one line>` and an exit code. */
export function reportError(err: unknown): number {
  let code: number = EXIT.fail;
  let message: string;
  if (err instanceof CliError) {
    code = err.exitCode;
    message = err.message;
  } else if (err instanceof ConfigError) {
    code = EXIT.config;
    message = err.issues.length > 1 ? `${err.issues[0]} (and ${err.issues.length - 1} more: run mailwarden config check)` : err.message;
  } else if (err instanceof DirectoryError) {
    code = err.code === 'unavailable' ? EXIT.tempFail : err.code === 'invalid' && err.message.includes('\n') ? EXIT.dataErr : EXIT.fail;
    message = err.message.split('\n')[0]!;
  } else if (err instanceof AddressError) {
    code = EXIT.dataErr;
    message = err.message;
  } else {
    message = err instanceof Error ? `internal error: ${err.message}` : String(err);
  }
  process.stderr.write(`mailwarden: ${message}\n`);
  return code;
}

// --- output helpers ---

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Left-aligned columns separated by two spaces, like `doveadm` tables. */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  process.stdout.write(`${[line(headers), ...rows.map(line)].join('\n')}\n`);
}

/** `key: value` lines for a single record. */
export function printRecord(record: Record<string, string | number | undefined>): void {
  const entries = Object.entries(record).filter(([, v]) => v !== undefined && v !== '');
  const width = Math.max(...entries.map(([k]) => k.length));
  process.stdout.write(`${entries.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`).join('\n')}\n`);
}

export const yesNo = (b: boolean) => (b ? 'yes' : 'no');
