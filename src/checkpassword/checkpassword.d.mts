// Types of checkpassword.mjs (plain JavaScript for start-up speed) for the TypeScript tests.
export declare const MAX_INPUT: 512;
export declare const DEFAULT_CONFIG_FILE: string;
export declare const DEFAULT_TIMEOUT_MS: number;
export declare const EXIT: Readonly<{ OK: 0; FAIL: 1; LOOKUP_OK: 2; LOOKUP_UNKNOWN: 3; TEMPFAIL: 111 }>;
export declare class TempFail extends Error {}

export type Mode = 'login' | 'passdb' | 'userdb';
export type Outcome = 'ok' | 'mismatch' | 'unknown' | 'tempfail';
export type Env = Record<string, string | undefined>;

export declare function parseInput(buf: Buffer): { user: string; password: string; error?: undefined } | { error: 'too long' | 'malformed' };
export declare function readInput(fd?: number, timeoutMs?: number): Buffer;
export declare function writeAll(fd: number, text: string, timeoutMs?: number): void;
export declare function tabEscape(value: string | number): string;
export declare function formatReply(user: string, fields: Record<string, unknown> | undefined, prefix?: string): string;
export declare function exitCode(mode: Mode, outcome: Outcome): number;
export declare function requestMode(env: Env): Mode;
export declare function configFile(argv: string[], env: Env): string;
export declare function parseAuthConfig(text: string, file?: string): { listen?: string; secret?: string; secret_file?: string };
export declare function parseListen(text: string): { socketPath: string } | { host: string; port: number };
export interface Endpoint {
  socketPath?: string;
  host?: string;
  port?: number;
  secret?: string;
}
export declare function loadEndpoint(file: string): Endpoint;
export declare function askDaemon(
  endpoint: Endpoint,
  path: string,
  body: Record<string, unknown>,
  timeoutMs?: number,
): Promise<{ outcome: 'ok'; user: string; fields: Record<string, unknown> } | { outcome: 'mismatch' | 'unknown' }>;
export declare function run(opts: { argv: string[]; env: Env; inFd?: number; outFd?: number; log: (msg: string) => void }): Promise<number>;
export declare function parseResponse(raw: Buffer): { outcome: 'ok'; user: string; fields: Record<string, unknown> } | { outcome: 'mismatch' | 'unknown' };
