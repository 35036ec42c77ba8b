// What each target of bench/dovecot.ts is: the Dovecot 2.3 passdb/userdb
// configuration (appended to test/support/dovecot.ts's base config) and the
// server behind it. Auth cache off everywhere (auth_cache_size = 0, also
// Dovecot's default); everything else at Dovecot's defaults
// (auth_worker_max_count = 30, one auth process).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const TARGETS = ['trivial-dict', 'trivial-http', 'trivial-http-libhttp', 'sql', 'dict', 'lua', 'lua-libhttp', 'checkpassword'] as const;
export type TargetName = (typeof TARGETS)[number];

export interface TargetInfo {
  readonly label: string;
  /** Measured for userdb lookups / for logins. */
  readonly lookups: boolean;
  readonly logins: boolean;
  /** Runs `mailwarden serve` behind Dovecot. */
  readonly mailwarden: boolean;
  /** Who verifies the password hash on a login. */
  readonly verifier?: 'mailwarden' | 'dovecot';
  /** The Lua script's TRANSPORT setting (Lua targets only). */
  readonly transport?: LuaTransport;
}

/** How the shipped Lua script talks HTTP: LuaSocket (package lua-socket) or Dovecot's lib-http. */
export type LuaTransport = 'luasocket' | 'dovecot.http';

export const TARGET_INFO: Record<TargetName, TargetInfo> = {
  'trivial-dict': { label: 'trivial dict (fixed answer)', lookups: true, logins: false, mailwarden: false },
  'trivial-http': { label: 'Lua (LuaSocket) -> trivial HTTP', lookups: true, logins: false, mailwarden: false, transport: 'luasocket' },
  'trivial-http-libhttp': { label: 'Lua (dovecot.http) -> trivial HTTP', lookups: true, logins: false, mailwarden: false, transport: 'dovecot.http' },
  sql: { label: 'Dovecot sql (MariaDB)', lookups: true, logins: true, mailwarden: false, verifier: 'dovecot' },
  dict: { label: 'mailwarden dict', lookups: true, logins: true, mailwarden: true, verifier: 'dovecot' },
  lua: { label: 'mailwarden Lua (LuaSocket)', lookups: true, logins: true, mailwarden: true, verifier: 'mailwarden', transport: 'luasocket' },
  'lua-libhttp': { label: 'mailwarden Lua (dovecot.http)', lookups: true, logins: true, mailwarden: true, verifier: 'mailwarden', transport: 'dovecot.http' },
  checkpassword: { label: 'mailwarden checkpassword', lookups: false, logins: true, mailwarden: true, verifier: 'mailwarden' },
};

/** Every target's Dovecot config ends with this. */
const COMMON = `
# ---- bench/dovecot.ts ----
auth_cache_size = 0
`;

export interface SqlSettings {
  readonly socket: string;
  readonly database: string;
  readonly user: string;
  readonly password: string;
  /** Parent of the homes, as in mailwarden's userdb.home (<vmail>/%d/%n). */
  readonly vmail: string;
  readonly uid: number;
  readonly gid: number;
}

/**
 * Dovecot's own sql passdb/userdb written against mailwarden's schema, the way
 * a PostfixAdmin-style setup does it (passdb with userdb_* for prefetch, a
 * user_query for LMTP/doveadm), answering exactly what mailwarden answers.
 */
export function sqlQueries(s: SqlSettings): { password: string; user: string; iterate: string } {
  if (/['\\%]/.test(s.vmail)) throw new Error(`vmail path unusable in SQL: ${s.vmail}`);
  const home = `CONCAT('${s.vmail}/', domain, '/', SUBSTRING_INDEX(address, '@', 1))`;
  return {
    password: `SELECT address AS user, password_hash AS password, ${home} AS userdb_home, '${s.uid}' AS userdb_uid, '${s.gid}' AS userdb_gid, `
      + `CONCAT('*:bytes=', quota_bytes) AS userdb_quota_rule FROM mailbox WHERE address = '%u' AND enabled = 1`,
    user: `SELECT ${home} AS home, '${s.uid}' AS uid, '${s.gid}' AS gid, CONCAT('*:bytes=', quota_bytes) AS quota_rule `
      + `FROM mailbox WHERE address = '%u' AND enabled = 1`,
    iterate: 'SELECT address AS user FROM mailbox WHERE enabled = 1',
  };
}

export async function sqlConf(dir: string, s: SqlSettings): Promise<string> {
  const q = sqlQueries(s);
  const file = path.join(dir, 'dovecot-sql.conf.ext');
  await writeFile(file, [
    '# bench/dovecot.ts: Dovecot\'s sql driver against mailwarden\'s tables',
    'driver = mysql',
    `connect = host=${s.socket} dbname=${s.database} user=${s.user} password=${s.password}`,
    'default_pass_scheme = ARGON2ID',
    `password_query = ${q.password}`,
    `user_query = ${q.user}`,
    `iterate_query = ${q.iterate}`,
    '',
  ].join('\n'), { mode: 0o644 });
  return `passdb {\n  driver = sql\n  args = ${file}\n}\nuserdb {\n  driver = prefetch\n}\nuserdb {\n  driver = sql\n  args = ${file}\n}\n${COMMON}`;
}

/** dovecot-conf/2.3/auth-dict.conf.ext + dovecot-dict-auth.conf.ext, pointed at `socket`. */
export async function dictConf(dir: string, name: string, socket: string): Promise<string> {
  const file = path.join(dir, `${name}-dict-auth.conf.ext`);
  await writeFile(file, [
    `uri = proxy:idle_msecs=60000:${socket}:auth`,
    'default_pass_scheme = ARGON2ID',
    'iterate_prefix = userdb/',
    'key passdb {', '  key = passdb/%u', '  format = json', '}',
    'key userdb {', '  key = userdb/%u', '  format = json', '}',
    'passdb_objects = passdb', 'userdb_objects = userdb', '',
  ].join('\n'), { mode: 0o644 });
  return `passdb {\n  driver = dict\n  args = ${file}\n}\nuserdb {\n  driver = prefetch\n}\nuserdb {\n  driver = dict\n  args = ${file}\n}\n${COMMON}`;
}

/**
 * The Lua bridge and 2.3 snippet shipped by the mailwarden under test
 * (`root`/dovecot-conf/mailwarden.lua, 2.3/auth-mailwarden.conf.ext), unchanged
 * but for the script's settings lines and path (as test/support/dovecot.ts
 * does for the tests), so `--rev` measures that revision's script too. The
 * transport is forced, so a host without LuaSocket fails the LuaSocket
 * targets instead of measuring the fallback; a script from before the
 * TRANSPORT setting (dovecot.http only) runs unchanged for `dovecot.http`.
 */
export async function luaConf(root: string, dir: string, url: string, secret: string, transport: LuaTransport, blocking = true): Promise<string> {
  const file = path.join(dir, 'mailwarden.lua');
  let script = await readFile(path.join(root, 'dovecot-conf', 'mailwarden.lua'), 'utf8');
  const settings: Record<string, string> = { URL: JSON.stringify(url), SECRET: JSON.stringify(secret), SECRET_FILE: '""', TIMEOUT_MS: '5000' };
  if (/^local TRANSPORT = /m.test(script)) settings['TRANSPORT'] = JSON.stringify(transport);
  else if (transport !== 'dovecot.http') throw new Error(`${root}/dovecot-conf/mailwarden.lua has no TRANSPORT setting: it only speaks dovecot.http (use the lua-libhttp targets)`);
  for (const [name, value] of Object.entries(settings)) {
    const re = new RegExp(`^local ${name} = [^\\n]*?(\\s*--[^\\n]*)?$`, 'm');
    if (!re.test(script)) throw new Error(`${root}/dovecot-conf/mailwarden.lua: no "local ${name} = ..." settings line`);
    script = script.replace(re, (_m, comment: string | undefined) => `local ${name} = ${value}${comment ?? ''}`);
  }
  await writeFile(file, script, { mode: 0o644 });
  const snippet = path.join(root, 'dovecot-conf', '2.3', 'auth-mailwarden.conf.ext');
  const text = await readFile(snippet, 'utf8');
  if (!text.includes('/etc/dovecot/mailwarden.lua')) throw new Error(`${snippet}: no /etc/dovecot/mailwarden.lua to replace`);
  if (!blocking && !text.includes('blocking=yes')) throw new Error(`${snippet}: no blocking=yes to turn off`);
  const conf = text.replaceAll('/etc/dovecot/mailwarden.lua', file);
  return `${blocking ? conf : conf.replaceAll('blocking=yes', 'blocking=no')}\n${COMMON}`;
}

/** The shipped 2.3/auth-checkpassword.conf.ext with this run's program and config; the auth process as root if the program is out of the dovecot user's reach. */
export async function checkpasswordConf(root: string, program: string, config: string, authAsRoot: boolean): Promise<string> {
  const snippet = path.join(root, 'dovecot-conf', '2.3', 'auth-checkpassword.conf.ext');
  const text = await readFile(snippet, 'utf8');
  for (const needle of ['/opt/mailwarden/bin/mailwarden-checkpassword', '/etc/mailwarden/mailwarden.yaml', 'vsz_limit = 0']) {
    if (!text.includes(needle)) throw new Error(`${snippet}: no ${needle}`);
  }
  return text.replaceAll('/opt/mailwarden/bin/mailwarden-checkpassword', program).replaceAll('/etc/mailwarden/mailwarden.yaml', config)
    + (authAsRoot ? '\nservice auth {\n  user = root\n}\n' : '') + COMMON;
}

export interface MailwardenSettings {
  readonly mysqlUrl: string;
  readonly vmail: string;
  readonly uid: number;
  readonly gid: number;
  readonly authPort: number;
  readonly secret: string;
  readonly dictSocket: string;
  readonly argon2: { readonly memoryCost: number; readonly timeCost: number; readonly parallelism: number };
  readonly poolSize: number;
  /** directory.preload; absent = the default (on, for a mailwarden that has it). */
  readonly preload?: boolean;
}

/** mailwarden.yaml: MariaDB directory, auth (HTTP on loopback) and dict, settings at their defaults otherwise. */
export function mailwardenConfig(s: MailwardenSettings): string {
  return [
    '# Generated by bench/dovecot.ts',
    'directory:',
    '  backend: mysql',
    `  url: ${JSON.stringify(s.mysqlUrl)}`,
    `  pool_size: ${s.poolSize}`,
    '  query_timeout: 2s',
    ...(s.preload === undefined ? [] : [`  preload: ${s.preload}`]),
    'log:',
    '  level: warn',
    'passwords:',
    '  argon2:',
    `    memory_cost: ${s.argon2.memoryCost}`,
    `    time_cost: ${s.argon2.timeCost}`,
    `    parallelism: ${s.argon2.parallelism}`,
    'userdb:',
    `  home: ${s.vmail}/%d/%n`,
    `  uid: "${s.uid}"`,
    `  gid: "${s.gid}"`,
    'auth:',
    `  listen: inet:127.0.0.1:${s.authPort}`,
    `  secret: "${s.secret}"`,
    'dict:',
    `  listen: unix:${s.dictSocket}`,
    '  mode: "0666"',
    '',
  ].join('\n');
}
