// checkpassword for Dovecot 2.3 (the driver is gone in 2.4), as a thin client
// of the running `mailwarden serve`: read fd 3, ask the daemon's auth HTTP
// endpoint, write the reply to fd 4, exit with the code Dovecot expects.
//
// Plain JavaScript on purpose: Dovecot forks one process per login, so start-up
// is the cost. This file uses only node:fs and node:net (no TypeScript, pino,
// commander or yaml: loading src/config/load.ts alone costs ~0.2 s; not even
// node:http, ~55 ms), and reads the two config keys it needs with the tiny
// parser below.
// Types for the TypeScript tests: checkpassword.d.mts.
//
// Interface (Dovecot 2.3 db-checkpassword.c; /work/shared/reference/dovecot.md §1):
//   fd 3 in:  user NUL password NUL NUL  (at most 512 bytes; lookups: empty password)
//   env:      AUTHORIZED=1 = lookup mode; with CREDENTIALS_LOOKUP=1 a passdb
//             lookup, else a userdb lookup. SERVICE, TCPREMOTEIP.
//   fd 4 out: user=…\tkey=value\t… (tab-escaped), then exit; we write it
//             ourselves instead of exec'ing checkpassword-reply (argv[1]).
//   exit:     login 0 ok / 1 mismatch or unknown / 111 temporary failure;
//             lookup 2 found / 3 unknown / 111.
import { readFileSync, readSync, writeSync } from 'node:fs';
import { connect } from 'node:net';

export const MAX_INPUT = 512;
export const DEFAULT_CONFIG_FILE = '/etc/mailwarden/mailwarden.yaml';
export const DEFAULT_TIMEOUT_MS = 5000;
export const EXIT = Object.freeze({ OK: 0, FAIL: 1, LOOKUP_OK: 2, LOOKUP_UNKNOWN: 3, TEMPFAIL: 111 });

/** A failure that makes the program exit 111 with `message` as its log line. */
export class TempFail extends Error {}

// ---- fd 3 ----

/**
 * Parses what Dovecot writes to fd 3. Returns { user, password }, or
 * { error: 'too long' } (more than 512 bytes: a failed login, like djb's
 * checkpassword) or { error: 'malformed' } (not user NUL password NUL …).
 */
export function parseInput(buf) {
  if (buf.length > MAX_INPUT) return { error: 'too long' };
  const a = buf.indexOf(0);
  const b = a < 0 ? -1 : buf.indexOf(0, a + 1);
  if (b < 0) return { error: 'malformed' };
  return { user: buf.subarray(0, a).toString('utf8'), password: buf.subarray(a + 1, b).toString('utf8') };
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function pause(ms) {
  Atomics.wait(sleeper, 0, 0, ms);
}

/** Reads fd until EOF (at most MAX_INPUT + 1 bytes: enough to know it is too long). */
export function readInput(fd = 3, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const buf = Buffer.alloc(MAX_INPUT + 1);
  const deadline = Date.now() + timeoutMs;
  let len = 0;
  while (len < buf.length) {
    let n;
    try {
      n = readSync(fd, buf, len, buf.length - len, null);
    } catch (err) {
      // Node's child_process pipes (tests) arrive non-blocking; Dovecot's pipe is blocking.
      if (err.code === 'EAGAIN' && Date.now() < deadline) { pause(2); continue; }
      if (err.code === 'EINTR') continue;
      throw new TempFail(`cannot read fd ${fd}: ${err.code ?? err.message}`);
    }
    if (n === 0) break;
    len += n;
  }
  return buf.subarray(0, len);
}

/** Writes all of text to fd (retrying partial and would-block writes). */
export function writeAll(fd, text, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const buf = Buffer.from(text, 'utf8');
  const deadline = Date.now() + timeoutMs;
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code === 'EAGAIN' && Date.now() < deadline) { pause(2); continue; }
      if (err.code === 'EINTR') continue;
      throw new TempFail(`cannot write fd ${fd}: ${err.code ?? err.message}`);
    }
  }
}

// ---- fd 4 ----

/** Dovecot's str_append_tabescaped: \x01 → \x011, NUL → \x010, TAB → \x01t, CR → \x01r, LF → \x01n. */
export function tabEscape(value) {
  return String(value).replace(/[\x00\x01\t\r\n]/g, (c) => ({ '\0': '\x010', '\x01': '\x011', '\t': '\x01t', '\r': '\x01r', '\n': '\x01n' })[c]);
}

const KEY_RE = /^[A-Za-z0-9_.-]+$/;

/**
 * The fd 4 reply: `user=<user>\t<key>=<value>…`, without checkpassword-reply's
 * trailing TAB (Dovecot splits on TAB and shows that as an empty extra
 * field). `prefix` is prepended to every key that does not already have it
 * ('userdb_' for userdb lookups: the checkpassword userdb only imports
 * userdb_* fields). Values are tab-escaped,
 * so the reply never holds a NUL or LF; a key that is not a plain name is an
 * error (a TempFail), never passed on.
 */
export function formatReply(user, fields, prefix = '') {
  let out = `user=${tabEscape(user)}`;
  for (const [rawKey, value] of Object.entries(fields ?? {})) {
    if (!KEY_RE.test(rawKey)) throw new TempFail(`daemon answered an invalid field name ${JSON.stringify(rawKey)}`);
    if (value === null || value === undefined || rawKey === 'user') continue;
    if (typeof value === 'object') throw new TempFail(`daemon answered a non-scalar value for ${rawKey}`);
    const key = prefix && !rawKey.startsWith(prefix) ? prefix + rawKey : rawKey;
    out += `\t${key}=${tabEscape(value)}`;
  }
  return out;
}

/** Exit code for an outcome ('ok' | 'mismatch' | 'unknown' | 'tempfail') in a mode ('login' | 'passdb' | 'userdb'). */
export function exitCode(mode, outcome) {
  if (outcome === 'tempfail') return EXIT.TEMPFAIL;
  if (mode === 'login') return outcome === 'ok' ? EXIT.OK : EXIT.FAIL;
  return outcome === 'ok' ? EXIT.LOOKUP_OK : EXIT.LOOKUP_UNKNOWN;
}

/** What Dovecot asks, from the environment. */
export function requestMode(env) {
  if (env.AUTHORIZED === '1') return env.CREDENTIALS_LOOKUP === '1' ? 'passdb' : 'userdb';
  return 'login';
}

// ---- config ----

/** `--config FILE`, `--config=FILE`, $MAILWARDEN_CONFIG, the default. Other arguments (checkpassword-reply) are ignored. */
export function configFile(argv, env) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--config' || argv[i] === '-c') return argv[i + 1] ?? '';
    if (argv[i].startsWith('--config=')) return argv[i].slice(9);
  }
  return env.MAILWARDEN_CONFIG || DEFAULT_CONFIG_FILE;
}

function unquote(raw, where) {
  let v = raw.trim();
  if (v.startsWith('"')) {
    const m = /^"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$/.exec(v);
    if (!m) throw new TempFail(`${where}: unterminated double-quoted value`);
    return m[1].replace(/\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)/g, (_, e) => {
      if (e[0] === 'u' || e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
      return { n: '\n', t: '\t', r: '\r', 0: '\0', '"': '"', '\\': '\\', '/': '/', ' ': ' ' }[e] ?? `\\${e}`;
    });
  }
  if (v.startsWith("'")) {
    const m = /^'((?:[^']|'')*)'\s*(?:#.*)?$/.exec(v);
    if (!m) throw new TempFail(`${where}: unterminated single-quoted value`);
    return m[1].replace(/''/g, "'");
  }
  v = v.replace(/(^|\s+)#.*$/, '').trim();
  if (/^[|>&*!{[]/.test(v)) throw new TempFail(`${where}: write it as a plain "key: value" line (block, flow, anchor or tag syntax is not read here)`);
  return v;
}

/**
 * The `auth.listen`, `auth.secret` and `auth.secret_file` lines of a
 * mailwarden.yaml (block style, as in examples/mailwarden.yaml). Everything
 * else is skipped; `mailwarden config check` validates the whole file.
 */
export function parseAuthConfig(text, file = 'config') {
  const out = {};
  let inAuth = false;
  let authIndent = -1;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*(#|$)/.test(line) || line === '---' || line === '...') continue;
    const indent = /^ */.exec(line)[0].length;
    if (indent === 0) {
      const top = /^(auth|"auth"|'auth')\s*:(.*)$/.exec(line);
      inAuth = top !== null;
      authIndent = -1;
      if (inAuth && unquote(top[2], `${file}:${i + 1}`) !== '') throw new TempFail(`${file}:${i + 1}: auth must be a block mapping (one "key: value" per line)`);
      continue;
    }
    if (!inAuth) continue;
    if (authIndent < 0) authIndent = indent;
    if (indent !== authIndent) continue; // deeper lines belong to a key we do not read
    const m = /^\s*([A-Za-z_]+)\s*:(?:\s+(.*))?$/.exec(line);
    if (!m) continue;
    if (m[1] === 'listen' || m[1] === 'secret' || m[1] === 'secret_file') out[m[1]] = unquote(m[2] ?? '', `${file}:${i + 1}: auth.${m[1]}`);
  }
  return out;
}

/** unix:/path or inet:host:port (as src/config/listen.ts). */
export function parseListen(text) {
  if (text.startsWith('unix:/')) return { socketPath: text.slice(5) };
  const m = /^inet:(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (m && Number(m[3]) > 0 && Number(m[3]) <= 65535) return { host: m[1] ?? m[2], port: Number(m[3]) };
  throw new TempFail(`auth.listen: expected unix:/path or inet:host:port, got ${JSON.stringify(text)}`);
}

/** Endpoint and secret from the config file; TempFail when it cannot be used. */
export function loadEndpoint(file) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TempFail(`cannot read config ${file}: ${err.code ?? err.message}`);
  }
  const auth = parseAuthConfig(text, file);
  if (!auth.listen) throw new TempFail(`${file}: no auth.listen (the checkpassword program talks to the daemon's auth endpoint)`);
  let secret = auth.secret || undefined;
  if (auth.secret_file) {
    const dir = file.includes('/') ? file.slice(0, file.lastIndexOf('/') + 1) : './';
    const path = auth.secret_file.startsWith('/') ? auth.secret_file : dir + auth.secret_file;
    try {
      secret = readFileSync(path, 'utf8').trim();
    } catch (err) {
      throw new TempFail(`cannot read auth.secret_file ${path}: ${err.code ?? err.message}`);
    }
  }
  return { ...parseListen(auth.listen), secret };
}

// ---- the daemon ----

/**
 * POSTs body as JSON to the daemon; resolves with the outcome and, when ok,
 * { user, fields }. Anything unexpected rejects with a TempFail.
 *
 * HTTP/1.1 by hand over node:net: importing node:http costs ~55 ms of start-up
 * (measured, Node 24), more than the rest of the program. One request,
 * `Connection: close` (no half-close: node:http drops a request whose client
 * has ended before the answer), the answer is read to EOF; the daemon (node:http)
 * answers with a Content-Length.
 */
export function askDaemon(endpoint, path, body, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body), 'utf8');
    const target = endpoint.socketPath ? `unix:${endpoint.socketPath}` : `${endpoint.host}:${endpoint.port}`;
    const hostHeader = endpoint.socketPath ? 'localhost' : endpoint.host.includes(':') ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`;
    let head = `POST ${path} HTTP/1.1\r\nHost: ${hostHeader}\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n`;
    if (endpoint.secret) {
      if (/[\r\n]/.test(endpoint.secret)) return reject(new TempFail('auth.secret must be one line'));
      head += `X-Mailwarden-Secret: ${endpoint.secret}\r\n`;
    }
    let settled = false;
    const fail = (msg) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new TempFail(`daemon at ${target}: ${msg}`));
    };
    const socket = endpoint.socketPath ? connect({ path: endpoint.socketPath }) : connect({ host: endpoint.host, port: endpoint.port });
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    const chunks = [];
    socket.on('connect', () => socket.write(Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), payload])));
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', (err) => fail(err.code ?? err.message));
    socket.on('end', () => {
      if (settled) return;
      let answer;
      try {
        answer = parseResponse(Buffer.concat(chunks));
      } catch (err) {
        return fail(err.message);
      }
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    });
  });
}

/** Maps a complete HTTP response (bytes) to { outcome, user?, fields? }; throws Error for anything unexpected. */
export function parseResponse(raw) {
  const split = raw.indexOf('\r\n\r\n');
  if (split < 0) throw new Error(raw.length === 0 ? 'connection closed without an answer' : 'incomplete HTTP answer');
  const lines = raw.subarray(0, split).toString('latin1').split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1];
  if (!status) throw new Error(`not an HTTP answer: ${JSON.stringify(lines[0].slice(0, 60))}`);
  const headers = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = raw.subarray(split + 4);
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body);
  else if (headers['content-length'] !== undefined) {
    const len = Number(headers['content-length']);
    if (!Number.isInteger(len) || body.length < len) throw new Error('truncated HTTP answer');
    body = body.subarray(0, len);
  }
  if (status === '403') return { outcome: 'mismatch' };
  if (status === '404') return { outcome: 'unknown' };
  if (status !== '200') throw new Error(`HTTP ${status}${status === '401' ? " (auth.secret does not match the daemon's)" : ''}`);
  let answer;
  try {
    answer = JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error('answer is not JSON');
  }
  if (typeof answer?.user !== 'string' || answer.user === '') throw new Error('answer has no user');
  return { outcome: 'ok', user: answer.user, fields: answer.fields && typeof answer.fields === 'object' ? answer.fields : {} };
}

function dechunk(buf) {
  const parts = [];
  let pos = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) throw new Error('truncated chunked answer');
    const size = parseInt(buf.subarray(pos, eol).toString('latin1'), 16);
    if (!Number.isInteger(size) || size < 0) throw new Error('bad chunked answer');
    if (size === 0) return Buffer.concat(parts);
    if (eol + 2 + size > buf.length) throw new Error('truncated chunked answer');
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    pos = eol + 2 + size + 2;
  }
}

// ---- the program ----

/** Runs one request; returns the exit code. Logs (one line) via log(). */
export async function run({ argv, env, inFd = 3, outFd = 4, log }) {
  const timeoutMs = Number(env.MAILWARDEN_CHECKPASSWORD_TIMEOUT_MS) > 0 ? Number(env.MAILWARDEN_CHECKPASSWORD_TIMEOUT_MS) : DEFAULT_TIMEOUT_MS;
  const mode = requestMode(env);
  try {
    const input = parseInput(readInput(inFd, timeoutMs));
    if (input.error === 'malformed') throw new TempFail(`fd ${inFd}: expected user NUL password NUL, not a checkpassword request`);
    if (input.error === 'too long' || input.user === '') return exitCode(mode, 'unknown');
    const endpoint = loadEndpoint(configFile(argv, env));
    const remoteIp = env.TCPREMOTEIP || env.AUTH_REMOTE_IP || '';
    const service = env.SERVICE || env.AUTH_SERVICE || '';
    const body = { user: input.user, service, remote_ip: remoteIp, version: '2.3' };
    if (mode === 'login') body.password = input.password;
    const answer = await askDaemon(endpoint, mode === 'userdb' ? '/dovecot/userdb' : '/dovecot/passdb', body, timeoutMs);
    if (answer.outcome === 'ok') writeAll(outFd, formatReply(answer.user, answer.fields, mode === 'userdb' ? 'userdb_' : ''), timeoutMs);
    // A passdb lookup has no password to mismatch: anything but ok is "unknown".
    return exitCode(mode, answer.outcome);
  } catch (err) {
    log(err instanceof TempFail ? err.message : `internal error: ${err?.stack ?? err}`);
    return EXIT.TEMPFAIL;
  }
}
