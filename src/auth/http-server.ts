// The HTTP endpoint Dovecot's Lua passdb/userdb (dovecot-conf/mailwarden.lua)
// calls: the request in the query string, JSON out, status codes the script
// maps to Dovecot results (200 OK, 404 USER_UNKNOWN, 403 PASSWORD_MISMATCH,
// anything else INTERNAL_FAILURE, i.e. a temporary failure for the client).
//
//   GET /dovecot/userdb?user=U&service=S&version=2.3|2.4
//   GET /dovecot/passdb?user=U&service=S&remote_ip=IP&version=...
//       with X-Mailwarden-Password: <percent-encoded password>: verify a login;
//       without it: a passdb lookup (stored hash and userdb_* fields)
//   GET /dovecot/users?version=...
//
// GET because Dovecot's HTTP client sends every request body with
// "Expect: 100-continue" and waits for the interim answer: a round trip more.
// Those GETs are answered by http-fast.ts without node:http; everything else
// goes to node:http. The JSON POST form (POST /dovecot/passdb, /dovecot/userdb
// with {user, password?, service, remote_ip, version}) is still accepted:
// mailwarden-checkpassword sends it, and so do scripts installed before.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuthConfig } from '../config/load.ts';
import { listen, type Listener } from '../net/listener.ts';
import type { DovecotAuth, DovecotVersion, LoginContext } from './dovecot-auth.ts';
import { serveFastConnection, type FastReply, type FastRequest } from './http-fast.ts';
import type { BruteForcePolicy } from './policy.ts';

const MAX_BODY = 64 * 1024;
export const SECRET_HEADER = 'x-mailwarden-secret';
export const PASSWORD_HEADER = 'x-mailwarden-password';

export interface AuthHttpOptions {
  readonly config: AuthConfig;
  /** Read per request, so a reload can swap the directory underneath. */
  readonly auth: () => DovecotAuth;
  readonly log: Logger;
  /** Brute-force policy (auth.policy); read per request, it survives reloads. */
  readonly policy?: () => BruteForcePolicy | undefined;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const KEEP_ALIVE_MS = 60_000;

export async function startAuthHttpServer(opts: AuthHttpOptions): Promise<Listener> {
  const { config, log } = opts;
  const secretDigest = config.secret !== undefined ? sha256(config.secret) : undefined;
  const secretOk = (given: unknown): boolean => !secretDigest || (typeof given === 'string' && timingSafeEqual(sha256(given), secretDigest));
  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: KEEP_ALIVE_MS }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status >= 500) log.error({ err: (err as Error).message, path: req.url }, 'auth request failed');
      else log.warn({ status, err: (err as Error).message, path: req.url, peer: req.socket.remoteAddress }, 'bad auth request');
      send(res, status, { error: (err as Error).message });
    });
  });
  server.on('clientError', (err, socket) => {
    log.warn({ err: err.message }, 'malformed HTTP request');
    socket.destroy();
  });

  /**
   * The Lua bridge's GET requests, from the fast path (http-fast.ts) or from
   * node:http alike. A cached answer is returned at once, already encoded.
   * Never rejects: failures are encoded replies too (and logged).
   */
  function answerGet(req: FastRequest, peer: string | undefined): EncodedReply | Promise<EncodedReply> {
    try {
      if (!secretOk(req.secret)) throw new HttpError(401, 'missing or wrong X-Mailwarden-Secret');
      const params = new URLSearchParams(req.query);
      const user = params.get('user');
      if (!user) throw new HttpError(400, 'user is required');
      const ctx = queryContext(params);
      const auth = opts.auth();
      if (req.endpoint === 'userdb') {
        const hit = auth.peekUserdb(user, ctx.version);
        return hit ? encode(hit) : auth.userdbLookup(user, ctx).then(encode, (err: unknown) => failed(err, req, peer));
      }
      if (req.password !== undefined) {
        return auth.verifyLogin(user, percentDecode(req.password), ctx).then(encode, (err: unknown) => failed(err, req, peer));
      }
      const hit = auth.peekPassdb(user, ctx.version);
      return hit ? encode(hit) : auth.passdbLookup(user, ctx).then(encode, (err: unknown) => failed(err, req, peer));
    } catch (err) {
      return failed(err, req, peer);
    }
  }

  function failed(err: unknown, req: FastRequest, peer: string | undefined): EncodedReply {
    const status = err instanceof HttpError ? err.status : 500;
    const path = `/dovecot/${req.endpoint}`;
    if (status >= 500) log.error({ err: (err as Error).message, path }, 'auth request failed');
    else log.warn({ status, err: (err as Error).message, path, peer }, 'bad auth request');
    return encodeBody(status, { error: (err as Error).message });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const pathname = q < 0 ? target : target.slice(0, q);
    if (req.method === 'GET' && (pathname === '/dovecot/userdb' || pathname === '/dovecot/passdb')) {
      const secret = req.headers[SECRET_HEADER];
      const password = req.headers[PASSWORD_HEADER];
      return write(res, await answerGet({
        endpoint: pathname === '/dovecot/userdb' ? 'userdb' : 'passdb',
        query: q < 0 ? '' : target.slice(q + 1),
        secret: typeof secret === 'string' ? secret : undefined,
        password: typeof password === 'string' ? password : undefined,
      }, req.socket.remoteAddress));
    }
    if (!secretOk(req.headers[SECRET_HEADER])) throw new HttpError(401, 'missing or wrong X-Mailwarden-Secret');
    const auth = opts.auth();
    const url = new URL(target, 'http://mailwarden');
    if (req.method === 'POST' && url.pathname === '/dovecot/passdb') {
      const body = await readJson(req);
      const user = requiredString(body, 'user');
      const ctx = loginContext(body);
      const password = body['password'];
      const r = typeof password === 'string' ? await auth.verifyLogin(user, password, ctx) : await auth.passdbLookup(user, ctx);
      return reply(res, r);
    }
    if (req.method === 'POST' && url.pathname === '/dovecot/userdb') {
      const body = await readJson(req);
      return reply(res, await auth.userdbLookup(requiredString(body, 'user'), loginContext(body)));
    }
    if (req.method === 'GET' && url.pathname === '/dovecot/users') {
      return send(res, 200, { users: await auth.listUsers() });
    }
    if (url.pathname === '/dovecot/policy' || url.pathname.startsWith('/admin/')) return handlePolicy(req, res, url);
    throw new HttpError(404, `no such endpoint: ${req.method} ${url.pathname}`);
  }

  // Dovecot's auth policy interface (weakforced JSON) and the admin routes of `mailwarden auth unblock|blocked`.
  async function handlePolicy(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const policy = opts.policy?.();
    const enabled = policy !== undefined && policy.settings.enabled;
    if (req.method === 'POST' && url.pathname === '/dovecot/policy') {
      // `...policy?` as the configured URL gives `??command=allow`: accept both.
      const command = new URLSearchParams(url.search.replace(/^\?+/, '')).get('command');
      const body = await readJson(req);
      const attempt = {
        ...(typeof body['login'] === 'string' ? { login: body['login'] } : {}),
        ...(typeof body['remote'] === 'string' ? { remote: body['remote'] } : {}),
        ...(typeof body['pwhash'] === 'string' ? { pwhash: body['pwhash'] } : {}),
      };
      if (command === 'allow') {
        if (!enabled) return send(res, 200, { status: 0, msg: '' });
        const d = policy.check(attempt);
        if (d.action !== 'allow') {
          log.info({ remote_ip: attempt.remote, login: attempt.login, protocol: body['protocol'], action: d.action, status: d.status, key: d.key, counts: d.counts }, `auth policy: ${d.action}`);
        }
        return send(res, 200, { status: d.status, msg: d.msg ?? '' });
      }
      if (command === 'report') {
        if (!enabled) return send(res, 200, { status: 0, msg: '' });
        // Dovecot 2.4 says why a login failed: a temporary failure or the policy itself is not a guess.
        const failType = typeof body['fail_type'] === 'string' ? body['fail_type'] : '';
        const blocked = policy.report({
          ...attempt,
          success: body['success'] === true,
          policyReject: body['policy_reject'] === true || failType === 'internal' || failType === 'policy',
        });
        for (const key of blocked) {
          const s = policy.settings;
          log.info({ remote_ip: attempt.remote, login: attempt.login, protocol: body['protocol'], action: 'block', key, block_time_s: Math.round(s.blockTimeMs / 1000) }, 'auth policy: blocking');
        }
        return send(res, 200, { status: 0, msg: '' });
      }
      throw new HttpError(400, 'command must be allow or report');
    }
    if (!enabled) throw new HttpError(409, 'brute-force protection is off (auth.policy.enabled: false)');
    if (req.method === 'POST' && url.pathname === '/admin/unblock') {
      const key = requiredString(await readJson(req), 'key');
      const removed = policy.unblock(key);
      log.info({ key, removed, peer: req.socket.remoteAddress ?? 'unix' }, 'auth policy: unblock');
      return send(res, 200, { key, removed });
    }
    if (req.method === 'GET' && url.pathname === '/admin/blocked') {
      return send(res, 200, { blocked: policy.blocked() });
    }
    throw new HttpError(404, `no such endpoint: ${req.method} ${url.pathname}`);
  }

  return listen(config.listen, config.unix, (socket) => serveFastConnection(socket, {
    answer: (req) => answerGet(req, socket.remoteAddress),
    handOver: (s) => server.emit('connection', s),
    log,
    idleTimeoutMs: KEEP_ALIVE_MS,
  }), log);
}

/** A reply with its node:http header list. */
interface EncodedReply extends FastReply {
  readonly headers: readonly string[];
}

/** DovecotAuth returns the same answer object on every cache hit: its HTTP reply is encoded once. */
const encodedReplies = new WeakMap<object, EncodedReply>();

function encode(r: { result: string; user?: string; fields?: unknown }): EncodedReply {
  let encoded = encodedReplies.get(r);
  if (encoded === undefined) {
    encoded = r.result === 'ok' ? encodeBody(200, { user: r.user, fields: r.fields })
      : r.result === 'unknown' ? encodeBody(404, { result: 'unknown' })
      : r.result === 'mismatch' ? encodeBody(403, { result: 'mismatch' })
      : encodeBody(503, { result: 'tempfail' });
    encodedReplies.set(r, encoded);
  }
  return encoded;
}

function encodeBody(status: number, body: unknown): EncodedReply {
  const json = JSON.stringify(body);
  const length = Buffer.byteLength(json);
  return { status, json, length, headers: ['content-type', 'application/json', 'content-length', String(length)] };
}

function reply(res: ServerResponse, r: { result: string; user?: string; fields?: unknown; reason?: string }): void {
  write(res, encode(r));
}

function write(res: ServerResponse, r: EncodedReply): void {
  if (res.headersSent) return;
  res.writeHead(r.status, r.headers as string[]);
  res.end(r.json);
}

/** The GET form: version, service and remote_ip from the query string. */
function queryContext(params: URLSearchParams): LoginContext {
  const version: DovecotVersion = params.get('version') === '2.4' ? '2.4' : '2.3';
  const service = params.get('service');
  const remoteIp = params.get('remote_ip');
  return { version, ...(service ? { service } : {}), ...(remoteIp ? { remoteIp } : {}) };
}

/** The script percent-encodes every byte but A-Z a-z 0-9 - . _ ~; bytes that are not UTF-8 decode as U+FFFD (as in the JSON form). */
export function percentDecode(text: string): string {
  if (!text.includes('%')) return text;
  try {
    return decodeURIComponent(text);
  } catch {
    const bytes: number[] = [];
    for (let i = 0; i < text.length; i++) {
      const hex = text.charAt(i) === '%' ? text.slice(i + 1, i + 3) : '';
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else {
        bytes.push(...Buffer.from(text.charAt(i), 'utf8'));
      }
    }
    return Buffer.from(bytes).toString('utf8');
  }
}

function loginContext(body: Record<string, unknown>): LoginContext {
  const version: DovecotVersion = body['version'] === '2.4' ? '2.4' : '2.3';
  const service = typeof body['service'] === 'string' ? body['service'] : undefined;
  const remoteIp = typeof body['remote_ip'] === 'string' && body['remote_ip'] !== '' ? body['remote_ip'] : undefined;
  return { version, ...(service ? { service } : {}), ...(remoteIp ? { remoteIp } : {}) };
}

function requiredString(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v === '') throw new HttpError(400, `${key} is required`);
  return v;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch { /* fall through */ }
  throw new HttpError(400, 'body must be a JSON object');
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
