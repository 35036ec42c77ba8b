// The HTTP endpoint Dovecot's Lua passdb/userdb (dovecot-conf/mailwarden.lua)
// calls: JSON in, JSON out, status codes the script maps to Dovecot results
// (200 OK, 404 USER_UNKNOWN, 403 PASSWORD_MISMATCH, anything else
// INTERNAL_FAILURE, i.e. a temporary failure for the client).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuthConfig } from '../config/load.ts';
import { listen, type Listener } from '../net/listener.ts';
import type { DovecotAuth, DovecotVersion, LoginContext } from './dovecot-auth.ts';
import type { BruteForcePolicy } from './policy.ts';

const MAX_BODY = 64 * 1024;
export const SECRET_HEADER = 'x-mailwarden-secret';

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

export async function startAuthHttpServer(opts: AuthHttpOptions): Promise<Listener> {
  const { config, log } = opts;
  const secretDigest = config.secret !== undefined ? sha256(config.secret) : undefined;
  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 60_000 }, (req, res) => {
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

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (secretDigest) {
      const given = req.headers[SECRET_HEADER];
      if (typeof given !== 'string' || !timingSafeEqual(sha256(given), secretDigest)) throw new HttpError(401, 'missing or wrong X-Mailwarden-Secret');
    }
    const url = new URL(req.url ?? '/', 'http://mailwarden');
    const auth = opts.auth();
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

  return listen(config.listen, config.unix, (socket) => void server.emit('connection', socket), log);
}

function reply(res: ServerResponse, r: { result: string; user?: string; fields?: unknown; reason?: string }): void {
  switch (r.result) {
    case 'ok': return send(res, 200, { user: r.user, fields: r.fields });
    case 'unknown': return send(res, 404, { result: 'unknown' });
    case 'mismatch': return send(res, 403, { result: 'mismatch' });
    default: return send(res, 503, { result: 'tempfail' });
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
