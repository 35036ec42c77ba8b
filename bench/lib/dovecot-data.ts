// Mailboxes for the Dovecot benchmark: bench/lib/data.ts's synthetic
// directory (same names, domains and 1 % disabled mailboxes as the socketmap
// benchmark), loaded into mailwarden's own MariaDB schema. A few hundred
// "login users" get a real argon2id hash of a known password; every other
// mailbox gets one fixed placeholder hash of the same shape (hashing 100,000
// passwords would take ~40 CPU minutes and changes nothing for lookups).
import { randomBytes } from 'node:crypto';
import type { Pool } from 'mysql2/promise';
import type { Argon2Params } from '../../src/config/load.ts';
import { hashPassword } from '../../src/directory/passwords.ts';
import { generateDataset, prng, type BenchMailbox } from './data.ts';

const BATCH = 5000;

export interface LoginUser {
  readonly address: string;
  readonly password: string;
}

export interface DovecotDataset {
  readonly domains: readonly string[];
  readonly mailboxes: readonly BenchMailbox[];
  /** Every mailbox address (enabled or not) in a seeded random order: the userdb lookup stream. */
  readonly lookupOrder: readonly string[];
  readonly loginUsers: readonly LoginUser[];
  /** The placeholder `{ARGON2ID}` hash of everyone else (no password matches it). */
  readonly placeholderHash: string;
}

export const address = (m: BenchMailbox) => `${m.local}@${m.domain}`;

export function generateDovecotDataset(opts: { mailboxes: number; domains: number; seed: number; loginUsers: number; argon2: Argon2Params }): DovecotDataset {
  const ds = generateDataset({ mailboxes: opts.mailboxes, domains: opts.domains, seed: opts.seed, rcpts: 100 });
  const rnd = prng(opts.seed ^ 0x5eed);
  const order = ds.mailboxes.map(address);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const enabled = ds.mailboxes.filter((m) => m.enabled);
  if (enabled.length < opts.loginUsers) throw new Error(`only ${enabled.length} enabled mailboxes for ${opts.loginUsers} login users`);
  const picked = new Set<number>();
  const loginUsers: LoginUser[] = [];
  while (loginUsers.length < opts.loginUsers) {
    const i = Math.floor(rnd() * enabled.length);
    if (picked.has(i)) continue;
    picked.add(i);
    loginUsers.push({ address: address(enabled[i]!), password: `bench ${loginUsers.length} ${Math.floor(rnd() * 1e9).toString(36)}` });
  }
  const { memoryCost: m, timeCost: t, parallelism: p } = opts.argon2;
  const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
  return {
    domains: [...new Set(ds.mailboxes.map((mb) => mb.domain))],
    mailboxes: ds.mailboxes,
    lookupOrder: order,
    loginUsers,
    placeholderHash: `{ARGON2ID}$argon2id$v=19$m=${m},t=${t},p=${p}$${b64(16)}$${b64(32)}`,
  };
}

/**
 * Hashes the login users' passwords (a few at a time: argon2 runs on libuv's
 * thread pool) and loads domains and mailboxes with batched multi-row INSERTs
 * into the already migrated schema. Returns the seconds spent hashing.
 */
export async function loadDovecotDataset(pool: Pool, ds: DovecotDataset, argon2: Argon2Params): Promise<{ hashSeconds: number }> {
  const started = Date.now();
  const hashes = new Map<string, string>();
  const queue = [...ds.loginUsers];
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let u = queue.shift(); u; u = queue.shift()) hashes.set(u.address, await hashPassword(u.password, argon2));
  }));
  const hashSeconds = (Date.now() - started) / 1000;
  const now = new Date();
  for (let i = 0; i < ds.domains.length; i += BATCH) {
    await pool.query('INSERT INTO domain (name, alias_for, enabled, description, created_at, updated_at) VALUES ?',
      [ds.domains.slice(i, i + BATCH).map((d) => [d, null, 1, null, now, now])]);
  }
  for (let i = 0; i < ds.mailboxes.length; i += BATCH) {
    await pool.query('INSERT INTO mailbox (address, domain, name, password_hash, quota_bytes, enabled, created_at, updated_at) VALUES ?',
      [ds.mailboxes.slice(i, i + BATCH).map((m) => {
        const a = address(m);
        return [a, m.domain, m.name, hashes.get(a) ?? ds.placeholderHash, 2 * 1024 ** 3, m.enabled ? 1 : 0, now, now];
      })]);
  }
  await pool.query('ANALYZE TABLE domain, mailbox');
  return { hashSeconds };
}
