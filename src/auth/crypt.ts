// crypt(3) password hashes in pure TypeScript over node:crypto, for verifying
// hashes imported from older mail systems (never for new ones):
//   $5$ / $6$  SHA256-CRYPT / SHA512-CRYPT, Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"
//   $1$        MD5-CRYPT, Poul-Henning Kamp's md5crypt
// Each function takes the password and a setting (`$6$salt`, `$6$rounds=N$salt`, or a whole
// stored hash, whose digest part is ignored) and returns the full crypt string, exactly as
// glibc crypt() would. Callers compare that string with the stored one.
//
// The work is written as generators that `yield` every couple of milliseconds: the sync
// functions ignore the yields (tests, tools); cryptAsync() gives the event loop a turn at
// each one, because a daemon must keep answering lookups while a hash with a large
// `rounds=` (passlib's default is 656000, about a second) or a long password is checked.
import { createHash, hash } from 'node:crypto';
import { setImmediate as nextLoopTurn } from 'node:timers/promises';

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export const SHA_ROUNDS_DEFAULT = 5000;
export const SHA_ROUNDS_MIN = 1000;
export const SHA_ROUNDS_MAX = 999_999_999;
const SHA_SALT_MAX = 16;
const MD5_SALT_MAX = 8;

/** Byte triples of the final digest, in the order the spec encodes them; -1 stands for a zero byte. */
type Groups = readonly (readonly [number, number, number])[];

const SHA256_GROUPS: Groups = [
  [0, 10, 20], [21, 1, 11], [12, 22, 2], [3, 13, 23], [24, 4, 14], [15, 25, 5],
  [6, 16, 26], [27, 7, 17], [18, 28, 8], [9, 19, 29], [-1, 31, 30],
];
const SHA512_GROUPS: Groups = [
  [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4], [47, 5, 26], [6, 27, 48],
  [28, 49, 7], [50, 8, 29], [9, 30, 51], [31, 52, 10], [53, 11, 32], [12, 33, 54], [34, 55, 13],
  [56, 14, 35], [15, 36, 57], [37, 58, 16], [59, 17, 38], [18, 39, 60], [40, 61, 19], [62, 20, 41],
  [-1, -1, 63],
];
const MD5_GROUPS: Groups = [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5], [-1, -1, 11]];

/** crypt's own base64: 24 bits at a time, least significant 6 bits first; a short last group gives fewer chars. */
function encode64(digest: Uint8Array, groups: Groups): string {
  let out = '';
  for (const [a, b, c] of groups) {
    let w = ((a < 0 ? 0 : digest[a]!) << 16) | ((b < 0 ? 0 : digest[b]!) << 8) | digest[c]!;
    const chars = a >= 0 ? 4 : b >= 0 ? 3 : 2;
    for (let i = 0; i < chars; i++, w >>>= 6) out += ITOA64[w & 0x3f];
  }
  return out;
}

function toBytes(password: string | Uint8Array): Buffer {
  return typeof password === 'string' ? Buffer.from(password, 'utf8') : Buffer.from(password);
}

/** `len` bytes of `block` repeated (the spec's "P sequence" / "S sequence" and the B-for-each-byte step). */
function repeatTo(block: Uint8Array, len: number): Buffer {
  const out = Buffer.alloc(len);
  if (block.length === 0) return out;
  for (let off = 0; off < len; off += block.length) out.set(block.subarray(0, Math.min(block.length, len - off)), off);
  return out;
}

/** Work between two yields of the generators below. */
const SLICE_MS = 2;

/** Tells a generator when its time slice is used up (checked every few hundred hashes). */
class Slice {
  #end = performance.now() + SLICE_MS;
  get over(): boolean {
    return performance.now() >= this.#end;
  }
  restart(): void {
    this.#end = performance.now() + SLICE_MS;
  }
}

type Steps<T> = Generator<void, T, void>;

function runSync<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

async function runAsync<T>(steps: Steps<T>): Promise<T> {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await nextLoopTurn();
  }
}

/** H(block repeated `times` times), streamed: |P|×|P| bytes for a long password is never materialised. */
function* repeatedDigest(algo: string, block: Uint8Array, times: number, slice: Slice): Steps<Buffer> {
  const h = createHash(algo);
  for (let i = 0; i < times; i++) {
    h.update(block);
    if ((i & 255) === 255 && slice.over) {
      yield;
      slice.restart();
    }
  }
  return h.digest();
}

/**
 * The stretching loop shared by both algorithms: round i hashes
 *   (odd ? P : C) + (i%3 ? S : "") + (i%7 ? P : "") + (odd ? C : P)
 * where C is the previous digest. The input is assembled in one reused scratch buffer
 * and hashed with the one-shot crypto.hash (no Hash object, no concatenation per round).
 */
function* stretch(algo: string, first: Buffer, p: Uint8Array, s: Uint8Array, rounds: number, slice: Slice): Steps<Buffer> {
  const scratch = Buffer.alloc(2 * p.length + s.length + first.length);
  const views = new Map<number, Buffer>(); // only 4 distinct input lengths: reuse their views too
  let c = first;
  for (let i = 0; i < rounds; i++) {
    const odd = (i & 1) !== 0;
    let len = 0;
    scratch.set(odd ? p : c, len);
    len += odd ? p.length : c.length;
    if (i % 3 !== 0) {
      scratch.set(s, len);
      len += s.length;
    }
    if (i % 7 !== 0) {
      scratch.set(p, len);
      len += p.length;
    }
    scratch.set(odd ? c : p, len);
    len += odd ? c.length : p.length;
    let view = views.get(len);
    if (!view) views.set(len, (view = scratch.subarray(0, len)));
    c = hash(algo, view, 'buffer');
    if ((i & 255) === 255 && slice.over) {
      yield;
      slice.restart();
    }
  }
  return c;
}

interface ShaSetting {
  readonly rounds: number;
  /** Whether `rounds=` was given: then it is echoed in the output, even when it equals the default. */
  readonly customRounds: boolean;
  readonly salt: string;
}

function parseShaSetting(setting: string, prefix: string): ShaSetting {
  if (!setting.startsWith(prefix)) throw new TypeError(`not a ${prefix} crypt setting`);
  let rest = setting.slice(prefix.length);
  let rounds = SHA_ROUNDS_DEFAULT;
  let customRounds = false;
  // As in the spec: `rounds=<digits>$` is taken and clamped to [1000, 999999999]; anything else is salt.
  const m = /^rounds=(\d*)\$/.exec(rest);
  if (m) {
    rounds = Math.min(SHA_ROUNDS_MAX, Math.max(SHA_ROUNDS_MIN, Number(m[1])));
    customRounds = true;
    rest = rest.slice(m[0].length);
  }
  const end = rest.indexOf('$');
  return { rounds, customRounds, salt: (end < 0 ? rest : rest.slice(0, end)).slice(0, SHA_SALT_MAX) };
}

function* shaCrypt(algo: 'sha256' | 'sha512', password: string | Uint8Array, setting: string): Steps<string> {
  const prefix = algo === 'sha256' ? '$5$' : '$6$';
  const { rounds, customRounds, salt } = parseShaSetting(setting, prefix);
  const slice = new Slice();
  const p = toBytes(password);
  const s = Buffer.from(salt, 'utf8');

  // Digest B = H(P S P); digest A = H(P S, B repeated over |P| bytes, then per bit of |P|: B if 1 else P).
  const b = hash(algo, Buffer.concat([p, s, p]), 'buffer');
  const aParts: Uint8Array[] = [p, s, repeatTo(b, p.length)];
  for (let n = p.length; n > 0; n >>>= 1) aParts.push(n & 1 ? b : p);
  const a = hash(algo, Buffer.concat(aParts), 'buffer');

  // P sequence: H(P repeated |P| times) stretched to |P|; S sequence: H(S repeated 16+A[0] times) stretched to |S|.
  const pSeq = repeatTo(yield* repeatedDigest(algo, p, p.length, slice), p.length);
  const sSeq = repeatTo(yield* repeatedDigest(algo, s, 16 + a[0]!, slice), s.length);

  const c = yield* stretch(algo, a, pSeq, sSeq, rounds, slice);
  return `${prefix}${customRounds ? `rounds=${rounds}$` : ''}${salt}$${encode64(c, algo === 'sha256' ? SHA256_GROUPS : SHA512_GROUPS)}`;
}

function* md5CryptSteps(password: string | Uint8Array, setting: string): Steps<string> {
  const magic = '$1$';
  if (!setting.startsWith(magic)) throw new TypeError('not a $1$ crypt setting');
  const rest = setting.slice(magic.length);
  const end = rest.indexOf('$');
  const salt = (end < 0 ? rest : rest.slice(0, end)).slice(0, MD5_SALT_MAX);
  const p = toBytes(password);
  const s = Buffer.from(salt, 'utf8');

  const alt = hash('md5', Buffer.concat([p, s, p]), 'buffer');
  const parts: Uint8Array[] = [p, Buffer.from(magic), s, repeatTo(alt, p.length)];
  // The famous quirk: per bit of |P|, a NUL byte for 1 and the first password byte (NUL if empty) for 0.
  const zero = Buffer.alloc(1);
  const first = p.length ? p.subarray(0, 1) : zero;
  for (let n = p.length; n > 0; n >>>= 1) parts.push(n & 1 ? zero : first);
  const start = hash('md5', Buffer.concat(parts), 'buffer');

  const c = yield* stretch('md5', start, p, s, 1000, new Slice());
  return `${magic}${salt}$${encode64(c, MD5_GROUPS)}`;
}

/** SHA256-CRYPT (`$5$`). */
export function sha256Crypt(password: string | Uint8Array, setting: string): string {
  return runSync(shaCrypt('sha256', password, setting));
}

/** SHA512-CRYPT (`$6$`). */
export function sha512Crypt(password: string | Uint8Array, setting: string): string {
  return runSync(shaCrypt('sha512', password, setting));
}

/** MD5-CRYPT (`$1$`): md5crypt with 1000 fixed rounds and a salt of at most 8 characters. */
export function md5Crypt(password: string | Uint8Array, setting: string): string {
  return runSync(md5CryptSteps(password, setting));
}

function steps(password: string | Uint8Array, setting: string): Steps<string> {
  if (setting.startsWith('$6$')) return shaCrypt('sha512', password, setting);
  if (setting.startsWith('$5$')) return shaCrypt('sha256', password, setting);
  if (setting.startsWith('$1$')) return md5CryptSteps(password, setting);
  throw new TypeError('unsupported crypt format (only $1$, $5$, $6$)');
}

/** crypt() for `$1$`, `$5$` and `$6$` settings; throws TypeError for any other format. */
export function crypt(password: string | Uint8Array, setting: string): string {
  return runSync(steps(password, setting));
}

/** crypt(), giving the event loop a turn about every 2 ms of hashing. */
export async function cryptAsync(password: string | Uint8Array, setting: string): Promise<string> {
  const work = steps(password, setting); // an unsupported format rejects before any waiting
  await nextLoopTurn(); // never start inside a chain of promise callbacks: queued I/O goes first
  return runAsync(work);
}
