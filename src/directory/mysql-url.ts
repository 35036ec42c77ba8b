// directory.url → mysql2 connection options.
//   mysql://user:password@host:port/database                        (TCP, port 3306 by default)
//   mysql://user:password@localhost/database?socket=/run/mysqld/mysqld.sock   (UNIX socket)
// User and password are percent-decoded, so any character can be used.
// The password never appears in errors, toString() or JSON: config URLs end
// up in logs and stack traces far more often than anyone intends.
import type { PoolOptions } from 'mysql2/promise';
import { DirectoryError } from './types.ts';

export const DEFAULT_MYSQL_PORT = 3306;

/** mysql2 options parsed from a URL; `password` is non-enumerable, toString()/toJSON() are redacted. */
export type MysqlUrlOptions = PoolOptions & {
  readonly user: string;
  readonly database: string;
  /** `mysql://user@host:port/database` (or `…?socket=path`), without the password. */
  readonly display: string;
};

/**
 * Parses `directory.url`. `extra` (pool size, timeouts...) is merged in so the
 * result can be passed to `mysql.createPool()` as is: spreading it would drop
 * the non-enumerable password. Throws DirectoryError 'invalid'.
 */
export function parseMysqlUrl(url: string, extra: PoolOptions = {}): MysqlUrlOptions {
  const fail = (why: string): never => {
    throw new DirectoryError('invalid', `directory.url ${redactMysqlUrl(url)}: ${why}`);
  };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // URL's own error carries the input (and so the password) in err.input: do not chain it.
    return fail('not a valid URL (expected mysql://user:password@host:port/database)');
  }
  if (u.protocol !== 'mysql:') fail('the scheme must be mysql://');
  if (u.hash) fail('must not contain a #fragment');

  const user = decode(u.username, 'user', fail);
  const password = decode(u.password, 'password', fail);
  if (!user) fail('a user name is required');

  const path = u.pathname.replace(/^\//, '');
  if (!path || path.includes('/')) fail('the path must be exactly one database name');
  const database = decode(path, 'database', fail);
  if (Buffer.byteLength(database) > 64) fail('the database name is longer than 64 bytes');

  let socketPath: string | undefined;
  for (const [key, value] of u.searchParams) {
    if (key !== 'socket') fail(`unknown parameter ${JSON.stringify(key)} (only socket= is supported)`);
    if (!value.startsWith('/')) fail('socket= must be an absolute path');
    socketPath = value;
  }

  const host = u.hostname.replace(/^\[(.*)\]$/, '$1'); // IPv6 literal without brackets
  if (!host) fail('a host is required');
  if (socketPath && host.toLowerCase() !== 'localhost') fail('use localhost as the host with ?socket=');
  if (socketPath && u.port) fail('a port makes no sense with ?socket=');
  const port = u.port ? Number(u.port) : DEFAULT_MYSQL_PORT;

  const display = socketPath
    ? `mysql://${u.username}@localhost/${path}?socket=${socketPath}`
    : `mysql://${u.username}@${u.port ? u.host : `${u.host}:${port}`}/${path}`;

  const options: PoolOptions = {
    ...extra,
    user,
    database,
    ...(socketPath ? { socketPath } : { host, port }),
  };
  hide(options, 'password', password);
  hide(options, 'display', display);
  hide(options, 'toString', () => display);
  hide(options, 'toJSON', () => display);
  return options as MysqlUrlOptions;
}

/** A URL safe for logs: the password (if any) is replaced by `***`. Never throws. */
export function redactMysqlUrl(url: string): string {
  // Works on the raw text, so it also redacts URLs that URL() rejects. Credentials
  // run up to the LAST '@': people do paste passwords with a raw '@' or '/'.
  const start = url.indexOf('://');
  const at = url.lastIndexOf('@');
  if (start < 0 || at < start) return url;
  const credentials = url.slice(start + 3, at);
  const colon = credentials.indexOf(':');
  if (colon < 0) return url;
  return `${url.slice(0, start + 3)}${credentials.slice(0, colon)}:***${url.slice(at)}`;
}

function decode(part: string, what: string, fail: (why: string) => never): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return fail(`the ${what} is not valid percent-encoding`);
  }
}

// Non-enumerable: mysql2 warns about unknown enumerable keys, and JSON/inspect skip these.
function hide(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: false, writable: false, configurable: false });
}
