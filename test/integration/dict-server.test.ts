// The dict server on a real UNIX socket: raw protocol sessions (Dovecot 2.3 and
// 2.4 lines from dovecot.md §2.7) and Dovecot's own client, `doveadm dict`.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import type { ServiceListen } from '../../src/config/load.ts';
import { DICT_ITERATE_FLAGS } from '../../src/dict/codec.ts';
import {
  DictFailure,
  startDictServer,
  type DictContext,
  type DictHandler,
  type DictIterateContext,
  type DictRow,
  type DictServerOptions,
  type DictTransaction,
} from '../../src/dict/server.ts';
import type { Listener } from '../../src/net/listener.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

/** Collects pino JSON lines so tests can assert on what was logged. */
function capturingLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

/** Polls until check() is true (5 s at most), so timing on a loaded machine cannot fail a test. */
async function eventually(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * An in-memory dict with Dovecot's semantics: `priv/` keys are per user, inc of
 * a missing key is "notfound". Keys containing `fail` make the operation fail
 * with a DictFailure, `boom` with an internal error, `delayN` sleep N ms.
 */
class MemoryDict implements DictHandler {
  readonly data = new Map<string, string>();
  readonly commits: DictTransaction[] = [];
  readonly contexts: DictContext[] = [];
  iterationsStopped = 0;

  static #slot(key: string, user: string): string {
    return key.startsWith('priv/') ? `${user}\0${key}` : key;
  }

  async lookup(key: string, user: string, ctx: DictContext): Promise<string | undefined> {
    this.contexts.push(ctx);
    await MemoryDict.#behave(key);
    return this.data.get(MemoryDict.#slot(key, user));
  }

  async *iterate(path: string, flags: number, user: string, ctx: DictIterateContext): AsyncGenerator<DictRow> {
    this.contexts.push(ctx);
    const rows = [...this.data]
      .filter(([slot]) => !slot.includes('\0') || slot.startsWith(`${user}\0`))
      .map(([slot, value]) => [slot.slice(slot.indexOf('\0') + 1), value] as const)
      .filter(([key]) => {
        if (flags & DICT_ITERATE_FLAGS.EXACT_KEY) return key === path;
        if (!key.startsWith(path)) return false;
        return (flags & DICT_ITERATE_FLAGS.RECURSE) !== 0 || !key.slice(path.length).includes('/');
      })
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    try {
      for (const row of rows) {
        if (path.includes('slow')) await sleep(5);
        yield row;
        if (path.includes('fail')) throw new DictFailure('iterator broke');
      }
      await MemoryDict.#behave(path);
    } finally {
      this.iterationsStopped++;
    }
  }

  async commit(tx: DictTransaction): Promise<'ok' | 'notfound'> {
    this.commits.push(tx);
    for (const op of tx.ops) await MemoryDict.#behave(op.key);
    const next = new Map(this.data);
    for (const op of tx.ops) {
      const slot = MemoryDict.#slot(op.key, tx.user);
      if (op.op === 'set') next.set(slot, op.value);
      else if (op.op === 'unset') next.delete(slot);
      else {
        const old = next.get(slot);
        if (old === undefined) return 'notfound';
        next.set(slot, String(BigInt(old) + op.diff));
      }
    }
    this.data.clear();
    for (const [k, v] of next) this.data.set(k, v);
    return 'ok';
  }

  static async #behave(key: string): Promise<void> {
    const delay = /delay(\d+)/.exec(key);
    if (delay) await sleep(Number(delay[1]));
    if (key.includes('fail')) throw new DictFailure(`backend refused ${key}`);
    if (key.includes('boom')) throw new Error('connect ECONNREFUSED 10.0.0.5:3306 (internal detail)');
  }
}

/** A raw dict client: writes lines, reads reply lines in order. */
class Client {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  #buffer = '';
  #lines: string[] = [];
  #waiters: Array<(line: string | undefined) => void> = [];
  #ended = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.#buffer += text;
      let i: number;
      while ((i = this.#buffer.indexOf('\n')) >= 0) {
        this.#deliver(this.#buffer.slice(0, i));
        this.#buffer = this.#buffer.slice(i + 1);
      }
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#ended = true;
        for (const w of this.#waiters.splice(0)) w(undefined);
        resolve();
      }),
    );
  }

  static connect(path: string, hello = 'H3\t2\t0\t\ttest'): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        const c = new Client(socket);
        if (hello !== '') c.send(`${hello}\n`);
        resolve(c);
      });
    });
  }

  #deliver(line: string): void {
    const w = this.#waiters.shift();
    if (w) w(line);
    else this.#lines.push(line);
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** The next reply line (without LF), or undefined once the server closed. */
  next(): Promise<string | undefined> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async ask(line: string): Promise<string | undefined> {
    this.send(`${line}\n`);
    return this.next();
  }

  /** Reads iterate rows up to and including the empty line or an F line. */
  async rows(): Promise<string[]> {
    const out: string[] = [];
    for (;;) {
      const line = await this.next();
      if (line === undefined) throw new Error(`connection closed during iteration after ${JSON.stringify(out)}`);
      out.push(line);
      if (line === '' || line.startsWith('F')) return out;
    }
  }
}

let dir: TempDir;
before(async () => {
  dir = await tempDir('dict');
});
after(() => dir.remove());

let socketCounter = 0;
function unixListen(): ServiceListen {
  return { listen: { kind: 'unix', path: join(dir.path, `dict-${++socketCounter}.sock`) }, unix: { mode: 0o660 } };
}

function pathOf(l: Listener): string {
  assert.equal(l.address.kind, 'unix');
  return l.address.kind === 'unix' ? l.address.path : '';
}

async function start(overrides: Partial<DictServerOptions> = {}): Promise<{ server: Listener; dict: MemoryDict; path: string }> {
  const dict = new MemoryDict();
  const server = await startDictServer({ listen: unixListen(), handler: dict, log: pino({ level: 'silent' }), ...overrides });
  return { server, dict, path: pathOf(server) };
}

describe('dict server: protocol sessions on a unix socket', () => {
  let server: Listener;
  let dict: MemoryDict;
  let path: string;
  before(async () => {
    ({ server, dict, path } = await start());
    dict.data.set('shared/passdb/alice@example.com', '{"password":"{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$jeDu$SdEz","userdb_uid":5000}');
    dict.data.set('shared/userdb/alice@example.com', '{"home":"/srv/vmail/example.com/alice","uid":5000}');
    dict.data.set('shared/userdb/bob@example.com', '{"home":"/srv/vmail/example.com/bob","uid":5000}');
    dict.data.set('shared/userdb/sub/carol@example.com', '{}');
    dict.data.set('shared/tricky', 'tab\there\nnewline\x01soh\r');
    dict.data.set('alice@example.com\0priv/quota/messages', '0');
  });
  after(() => server.close(100));

  it('2.3: passdb lookup found and not found, with no reply to H (§2.7)', async () => {
    const c = await Client.connect(path, 'H3\t2\t0\t\tauth');
    assert.equal(
      await c.ask('Lshared/passdb/alice@example.com\talice@example.com'),
      'O{"password":"{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$jeDu$SdEz","userdb_uid":5000}',
    );
    assert.equal(await c.ask('Lshared/passdb/nobody@example.com\tnobody@example.com'), 'N');
    assert.equal(await c.ask('Lpriv/quota/messages\talice@example.com'), 'O0');
    assert.equal(await c.ask('Lpriv/quota/messages\tbob@example.com'), 'N');
    assert.deepEqual(dict.contexts.at(-1), { dictName: 'auth', protocolMajor: 3, peer: 'unix' });
    c.socket.end();
    await c.closed;
  });

  it('2.4: handshake 4.0, transaction with expire_secs, V and T', async () => {
    const c = await Client.connect(path, 'H4\t0\t0\t\tlastlogin');
    c.send('B1\talice@example.com\t0\nS1\tshared/last-login/alice@example.com\t1795424261\nC1\n');
    assert.equal(await c.next(), 'O1');
    c.send('B2\talice@example.com\t3600\nV2\tyes\nT2\t1795424261\t5\nS2\tpriv/quota/storage\t5\nS2\tpriv/quota/messages\t1\nC2\n');
    assert.equal(await c.next(), 'O2');
    const [first, second] = dict.commits.slice(-2);
    assert.deepEqual(first, {
      id: 1,
      user: 'alice@example.com',
      ops: [{ op: 'set', key: 'shared/last-login/alice@example.com', value: '1795424261' }],
      hideLogValues: false,
      ctx: { dictName: 'lastlogin', protocolMajor: 4, peer: 'unix' },
    });
    assert.equal(second?.expireSecs, 3600);
    assert.equal(second?.hideLogValues, true);
    assert.deepEqual(second?.timestamp, { secs: 1795424261, nsecs: 5 });
    assert.equal(second?.ops.length, 2);
    assert.equal(dict.data.get('alice@example.com\0priv/quota/storage'), '5');
    assert.equal(dict.data.get('shared/last-login/alice@example.com'), '1795424261');
    c.socket.destroy();
  });

  it('escapes values and unescapes keys', async () => {
    const c = await Client.connect(path);
    assert.equal(await c.ask('Lshared/tricky\t'), 'Otab\x01there\x01nnewline\x011soh\x01r');
    c.send('B1\t\nS1\tshared/k\x01tey\tv\x01na\x010l\x011\nC1\n');
    assert.equal(await c.next(), 'O1');
    assert.equal(dict.data.get('shared/k\tey'), 'v\na\0l\x01');
    c.socket.destroy();
  });

  it('lookup failures answer F and keep the connection; internal details stay in the log', async () => {
    const { log, lines } = capturingLogger();
    const s = await start({ log });
    const c = await Client.connect(s.path);
    assert.equal(await c.ask('Lshared/fail\t'), 'Fbackend refused shared/fail');
    assert.equal(await c.ask('Lshared/boom\t'), 'Flookup failed');
    assert.equal(await c.ask('Lshared/none\t'), 'N');
    const errors = lines.filter((l) => l['level'] === 50);
    assert.equal(errors.length, 2);
    assert.match(JSON.stringify(errors[1]), /ECONNREFUSED 10\.0\.0\.5/);
    c.socket.destroy();
    await s.server.close(100);
  });

  it('iterates several rows, non-recursive, recursive, NO_VALUE, EXACT_KEY, max_rows', async () => {
    const c = await Client.connect(path);
    c.send('I0\t0\tshared/userdb/\t*\n');
    assert.deepEqual(await c.rows(), [
      'Oshared/userdb/alice@example.com\t{"home":"/srv/vmail/example.com/alice","uid":5000}',
      'Oshared/userdb/bob@example.com\t{"home":"/srv/vmail/example.com/bob","uid":5000}',
      '',
    ]);
    c.send(`I${DICT_ITERATE_FLAGS.RECURSE | DICT_ITERATE_FLAGS.NO_VALUE}\t0\tshared/userdb/\t*\n`);
    assert.deepEqual(await c.rows(), ['Oshared/userdb/alice@example.com\t', 'Oshared/userdb/bob@example.com\t', 'Oshared/userdb/sub/carol@example.com\t', '']);
    c.send(`I${DICT_ITERATE_FLAGS.RECURSE | DICT_ITERATE_FLAGS.NO_VALUE}\t2\tshared/userdb/\t*\n`);
    assert.deepEqual(await c.rows(), ['Oshared/userdb/alice@example.com\t', 'Oshared/userdb/bob@example.com\t', '']);
    assert.equal((dict.contexts.at(-1) as DictIterateContext).maxRows, 2);
    c.send(`I${DICT_ITERATE_FLAGS.EXACT_KEY}\t0\tshared/userdb/bob@example.com\t\n`);
    assert.deepEqual(await c.rows(), ['Oshared/userdb/bob@example.com\t{"home":"/srv/vmail/example.com/bob","uid":5000}', '']);
    c.send(`I${DICT_ITERATE_FLAGS.EXACT_KEY}\t0\tshared/tricky\t\n`);
    assert.deepEqual(await c.rows(), ['Oshared/tricky\ttab\x01there\x01nnewline\x011soh\x01r', '']);
    c.send('I0\t0\tshared/nothing/\t\n');
    assert.deepEqual(await c.rows(), ['']);
    assert.equal((dict.contexts.at(-1) as DictIterateContext).maxRows, 0);
    c.socket.destroy();
  });

  it('an iteration that fails midway ends with F after the rows already sent', async () => {
    const s = await start();
    s.dict.data.set('shared/fail/a', '1');
    s.dict.data.set('shared/fail/b', '2');
    s.dict.data.set('shared/boom/a', '1');
    const c = await Client.connect(s.path);
    c.send('I0\t0\tshared/fail/\t\n');
    assert.deepEqual(await c.rows(), ['Oshared/fail/a\t1', 'Fiterator broke']);
    c.send('I0\t0\tshared/boom/\t\n');
    assert.deepEqual(await c.rows(), ['Oshared/boom/a\t1', 'Fiterate failed']);
    assert.equal(await c.ask('Lshared/fail/a\t'), 'Fbackend refused shared/fail/a', 'connection still usable');
    assert.equal(s.dict.iterationsStopped, 2);
    c.socket.destroy();
    await s.server.close(100);
  });

  it('commits set/unset/inc; inc of a missing key is N; failures are F; rollback discards', async () => {
    const s = await start();
    const c = await Client.connect(s.path, 'H3\t2\t0\t\tquota');
    c.send('B1\talice@example.com\nU1\tpriv/quota/storage\nU1\tpriv/quota/messages\nS1\tpriv/quota/storage\t0\nS1\tpriv/quota/messages\t0\nC1\n');
    assert.equal(await c.next(), 'O1');
    c.send('B2\talice@example.com\nA2\tpriv/quota/storage\t1024\nA2\tpriv/quota/messages\t1\nC2\n');
    assert.equal(await c.next(), 'O2');
    c.send('B3\talice@example.com\nA3\tpriv/quota/storage\t-24\nC3\n');
    assert.equal(await c.next(), 'O3');
    assert.equal(await c.ask('Lpriv/quota/storage\talice@example.com'), 'O1000');
    assert.equal(await c.ask('Lpriv/quota/messages\talice@example.com'), 'O1');
    c.send('B4\tbob@example.com\nA4\tpriv/quota/storage\t5\nC4\n');
    assert.equal(await c.next(), 'N4');
    c.send('B5\t\nS5\tshared/fail\tv\nC5\n');
    assert.equal(await c.next(), 'F5\tbackend refused shared/fail');
    c.send('B6\t\nS6\tshared/boom\tv\nC6\n');
    assert.equal(await c.next(), 'F6\tcommit failed');
    c.send('B7\t\nS7\tshared/rolled-back\tv\nR7\nLshared/rolled-back\t\n');
    assert.equal(await c.next(), 'N');
    // Interleaved transactions; ids are reusable once finished.
    c.send('B8\t\nB9\t\nS9\tshared/nine\t9\nS8\tshared/eight\t8\nC9\nC8\nB8\t\nU8\tshared/nine\nD8\n');
    assert.deepEqual([await c.next(), await c.next(), await c.next()], ['O9', 'O8', 'AO8']);
    assert.equal(s.dict.data.get('shared/eight'), '8');
    assert.equal(s.dict.data.has('shared/nine'), false);
    assert.equal(s.dict.commits.length, 9, 'rollback never reaches the handler');
    assert.equal(s.dict.commits[2]?.ops[0]?.op === 'inc' && s.dict.commits[2].ops[0].diff, -24n);
    c.socket.destroy();
    await s.server.close(100);
  });

  it('answers pipelined commands strictly in order, however long each takes', async () => {
    const c = await Client.connect(path);
    const batch: string[] = [];
    const want: string[] = [];
    for (let i = 0; i < 12; i++) {
      // Earlier commands take longer, so any concurrency would reorder the replies.
      batch.push(`Lshared/delay${(12 - i) * 3}/k${i}\t`);
      want.push('N');
      batch.push(`B${i + 1}\t`, `S${i + 1}\tshared/delay${i % 3}/p${i}\tv${i}`, `C${i + 1}`);
      want.push(`O${i + 1}`);
      if (i % 4 === 0) {
        batch.push('I0\t0\tshared/slow/\t');
        want.push('');
      }
    }
    c.send(`${batch.join('\n')}\n`);
    const got: string[] = [];
    for (let i = 0; i < want.length; i++) got.push((await c.next())!);
    assert.deepEqual(got, want);
    c.socket.destroy();
  });

  it('serves 60 concurrent connections and churn of one connection per lookup', async () => {
    const conns = await Promise.all(Array.from({ length: 60 }, () => Client.connect(path, 'H3\t2\t0\t\tauth')));
    const answers = await Promise.all(conns.map((c, i) => c.ask(`Lshared/delay${i % 7}/none${i}\tu${i}`)));
    assert.deepEqual(answers, conns.map(() => 'N'));
    for (const c of conns) c.socket.destroy();
    for (let round = 0; round < 5; round++) {
      const results = await Promise.all(
        Array.from({ length: 40 }, async () => {
          const c = await Client.connect(path, 'H3\t2\t0\t\tauth');
          const r = await c.ask('Lshared/userdb/alice@example.com\talice@example.com');
          c.socket.end();
          await c.closed;
          return r;
        }),
      );
      assert.ok(results.every((r) => r === 'O{"home":"/srv/vmail/example.com/alice","uid":5000}'));
    }
    await eventually('all connections closed', () => server.connections === 0);
  });
});

describe('dict server: bad clients are logged once and disconnected; others keep working', () => {
  const BAD: Array<[name: string, hello: string, payload: string | Buffer, code: string, repliesBefore: string[]]> = [
    ['a handshake that is not H', '', 'Lshared/x\t\n', 'handshake', []],
    ['protocol major 2', 'H2\t2\t0\t\ttest', 'Lshared/x\t\n', 'bad_version', []],
    ['protocol major 5', 'H5\t0\t0\t\ttest', 'Lshared/x\t\n', 'bad_version', []],
    ['plain garbage first', '', 'GET / HTTP/1.1\r\n\r\n', 'unknown_command', []],
    ['garbage after a good command', 'H3\t2\t0\t\ttest', 'Lshared/x\t\nhello there\nLshared/y\t\n', 'unknown_command', ['N']],
    ['a second handshake', 'H3\t2\t0\t\ttest', 'H4\t0\t0\t\ttest\n', 'handshake', []],
    ['an op on an unknown transaction', 'H3\t2\t0\t\ttest', 'S9\tshared/k\tv\n', 'unknown_transaction', []],
    ['a commit of an unknown transaction', 'H3\t2\t0\t\ttest', 'B1\t\nC1\nC1\n', 'unknown_transaction', ['O1']],
    ['a duplicate transaction id', 'H3\t2\t0\t\ttest', 'B1\t\nB1\t\n', 'duplicate_transaction', []],
    ['a bad escape', 'H3\t2\t0\t\ttest', 'Lshared/x\x01q\t\n', 'bad_escape', []],
    ['invalid UTF-8', 'H3\t2\t0\t\ttest', Buffer.from([0x4c, 0xff, 0x0a]), 'bad_utf8', []],
    ['an empty line', 'H3\t2\t0\t\ttest', '\n', 'empty_line', []],
    ['a line over 64 KiB', 'H3\t2\t0\t\ttest', `Lshared/x\t\nS1\tshared/big\t${'x'.repeat(66 * 1024)}\n`, 'line_too_long', ['N']],
    ['an endless line without LF', 'H3\t2\t0\t\ttest', 'L'.repeat(200 * 1024), 'line_too_long', []],
  ];

  for (const [name, hello, payload, code, repliesBefore] of BAD) {
    it(name, async () => {
      const { log, lines } = capturingLogger();
      const s = await start({ log });
      const good = await Client.connect(s.path);
      assert.equal(await good.ask('Lshared/a\t'), 'N');
      const bad = await Client.connect(s.path, hello);
      bad.send(payload);
      for (const r of repliesBefore) assert.equal(await bad.next(), r);
      assert.equal(await bad.next(), undefined, 'closed without a further reply');
      await bad.closed;
      assert.equal(await good.ask('Lshared/b\t'), 'N');
      const warns = lines.filter((l) => l['level'] === 40);
      assert.equal(warns.length, 1, JSON.stringify(warns));
      assert.equal(warns[0]?.['code'], code);
      assert.equal(warns[0]?.['peer'], 'unix');
      assert.equal(typeof warns[0]?.['reason'], 'string');
      assert.ok(lines.every((l) => (l['level'] as number) < 50), 'nothing at error level');
      good.socket.destroy();
      await s.server.close(100);
    });
  }

  it('limits open transactions and operations per transaction', async () => {
    const { log, lines } = capturingLogger();
    const s = await start({ log, maxTransactions: 2, maxOpsPerTransaction: 3 });
    const a = await Client.connect(s.path);
    a.send('B1\t\nB2\t\nR1\nB3\t\nC2\nC3\n');
    assert.equal(await a.next(), 'O2');
    assert.equal(await a.next(), 'O3');
    a.send('B4\t\nB5\t\nB6\t\n');
    assert.equal(await a.next(), undefined);
    const b = await Client.connect(s.path);
    b.send('B1\t\nS1\tk1\tv\nU1\tk2\nA1\tk3\t1\nS1\tk4\tv\nC1\n');
    assert.equal(await b.next(), undefined);
    assert.deepEqual(
      lines.filter((l) => l['level'] === 40).map((l) => l['code']),
      ['transaction_limit', 'transaction_limit'],
    );
    await s.server.close(100);
  });
});

describe('dict server: logging, timeouts and shutdown', () => {
  it('logs one debug line per command, with key names but never values', async () => {
    const { log, lines } = capturingLogger();
    const s = await start({ log });
    s.dict.data.set('shared/passdb/alice@example.com', '{"password":"{PLAIN}hunter2"}');
    const c = await Client.connect(s.path, 'H3\t2\t0\t\tauth');
    assert.equal(await c.ask('Lshared/passdb/alice@example.com\talice@example.com'), 'O{"password":"{PLAIN}hunter2"}');
    c.send('B1\talice@example.com\nS1\tshared/passdb/bob@example.com\t{"password":"{PLAIN}swordfish"}\nC1\n');
    assert.equal(await c.next(), 'O1');
    c.send('I0\t0\tshared/passdb/\t*\n');
    assert.equal((await c.rows()).length, 3);
    c.socket.end();
    await c.closed;
    await s.server.close(100);
    const text = JSON.stringify(lines);
    assert.doesNotMatch(text, /hunter2|swordfish/);
    const commands = lines.filter((l) => l['cmd'] !== undefined);
    assert.deepEqual(commands.map((l) => l['cmd']), ['hello', 'lookup', 'commit', 'iterate']);
    assert.ok(commands.every((l) => l['level'] === 20));
    assert.deepEqual(commands[2]?.['keys'], ['shared/passdb/bob@example.com']);
    assert.equal(commands[1]?.['result'], 'found');
    assert.equal(commands[3]?.['rows'], 2);
  });

  it('closes idle connections, but not while a slow handler works', async () => {
    const s = await start({ idleTimeoutMs: 100 });
    const c = await Client.connect(s.path);
    assert.equal(await c.ask('Lshared/delay250/x\t'), 'N');
    assert.equal(await c.next(), undefined);
    await c.closed;
    await s.server.close(100);
  });

  it('runs a commit the client sent before hanging up', async () => {
    const s = await start();
    const c = await Client.connect(s.path);
    c.send('Lshared/delay50/a\t\nB1\t\nS1\tshared/after-hangup\tyes\nC1\n');
    await sleep(10);
    c.socket.destroy();
    await eventually('the commit', () => s.dict.data.get('shared/after-hangup') === 'yes');
    await s.server.close(100);
  });

  it('finishes in-flight commands on close, then closes every connection and removes the socket', async () => {
    const s = await start();
    const busy = await Client.connect(s.path);
    const idle = await Client.connect(s.path);
    assert.equal(await idle.ask('Lshared/a\t'), 'N');
    busy.send('Lshared/delay100/slow\t\n');
    await sleep(20);
    const closing = s.server.close(5_000);
    assert.equal(await busy.next(), 'N');
    await Promise.all([busy.closed, idle.closed, closing]);
    assert.equal(s.server.connections, 0);
    await assert.rejects(Client.connect(s.path));
  });
});

// ---------------------------------------------------------------------------

const haveDoveadm = spawnSync('doveadm', ['help'], { stdio: 'ignore' }).error === undefined;

interface Doveadm {
  code: number;
  stdout: string;
  stderr: string;
}

describe('dict server: Dovecot 2.3 doveadm dict as the client', { skip: !haveDoveadm && 'doveadm not installed' }, () => {
  let s: Awaited<ReturnType<typeof start>>;
  let conf: string;
  let uri: string;

  before(async () => {
    s = await start();
    // A private, empty config: doveadm then needs nothing from /etc/dovecot and
    // no running Dovecot; base_dir points into the temp dir so nothing is written elsewhere.
    conf = join(dir.path, 'dovecot.conf');
    writeFileSync(conf, `# mailwarden test\nbase_dir = ${dir.path}/dovecot-base\nlog_path = /dev/stderr\n`);
    // The proxy URI is `proxy:<absolute socket path>:<dict name>`; the path must not contain ':'.
    assert.doesNotMatch(s.path, /:/);
    uri = `proxy:${s.path}:mailwarden`;
  });
  after(() => s.server.close(100));

  function doveadm(...args: string[]): Promise<Doveadm> {
    return new Promise((resolve) => {
      execFile('doveadm', ['-c', conf, '-f', 'tab', 'dict', ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** `-f tab` prints a header line, then one line per value/row. */
  const body = (r: Doveadm): string[] => r.stdout.split('\n').slice(1, -1);

  it('set, get, unset', async () => {
    const set = await doveadm('set', '-u', 'alice@example.com', uri, 'shared/last-login/alice@example.com', '1795424008');
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stderr, '');
    assert.equal(s.dict.data.get('shared/last-login/alice@example.com'), '1795424008');
    assert.deepEqual(s.dict.commits.at(-1)?.ctx, { dictName: 'mailwarden', protocolMajor: 3, peer: 'unix' });
    assert.equal(s.dict.commits.at(-1)?.user, 'alice@example.com');
    const got = await doveadm('get', '-u', 'alice@example.com', uri, 'shared/last-login/alice@example.com');
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(body(got), ['1795424008']);
    assert.equal((await doveadm('unset', uri, 'shared/last-login/alice@example.com')).code, 0);
    assert.equal(s.dict.data.has('shared/last-login/alice@example.com'), false);
    const missing = await doveadm('get', uri, 'shared/last-login/alice@example.com');
    assert.equal(missing.code, 68, 'EX_NOUSER: not found');
    assert.match(missing.stderr, /doesn't exist/);
  });

  it('values with tabs and newlines survive the escaping both ways', async () => {
    assert.equal((await doveadm('set', uri, 'shared/escaped', 'x\ty\nz\x01')).code, 0);
    assert.equal(s.dict.data.get('shared/escaped'), 'x\ty\nz\x01');
    const got = await doveadm('get', uri, 'shared/escaped');
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout.split('\n').slice(1).join('\n').trimEnd(), 'x\ty\nz\x01');
  });

  it('inc of an existing key, a negative diff, and a missing key (notfound)', async () => {
    assert.equal((await doveadm('set', '-u', 'alice@example.com', uri, 'priv/quota/storage', '100')).code, 0);
    assert.equal((await doveadm('inc', '-u', 'alice@example.com', uri, 'priv/quota/storage', '5')).code, 0);
    assert.equal((await doveadm('inc', '-u', 'alice@example.com', uri, '--', 'priv/quota/storage', '-25')).code, 0);
    assert.equal(s.dict.data.get('alice@example.com\0priv/quota/storage'), '80');
    assert.deepEqual(body(await doveadm('get', '-u', 'alice@example.com', uri, 'priv/quota/storage')), ['80']);
    const missing = await doveadm('inc', '-u', 'bob@example.com', uri, 'priv/quota/storage', '1');
    assert.equal(missing.code, 68);
    assert.match(missing.stderr, /doesn't exist/);
  });

  it('iter lists rows, recursively, and without values', async () => {
    for (const u of ['alice', 'bob', 'carol']) {
      assert.equal((await doveadm('set', uri, `shared/userdb/${u}@example.com`, `{"uid":5000,"name":"${u}"}`)).code, 0);
    }
    assert.equal((await doveadm('set', uri, 'shared/userdb/deep/dave@example.com', '{}')).code, 0);
    const flat = await doveadm('iter', uri, 'shared/userdb/');
    assert.equal(flat.code, 0, flat.stderr);
    assert.deepEqual(body(flat), [
      'shared/userdb/alice@example.com\t{"uid":5000,"name":"alice"}',
      'shared/userdb/bob@example.com\t{"uid":5000,"name":"bob"}',
      'shared/userdb/carol@example.com\t{"uid":5000,"name":"carol"}',
    ]);
    const deep = await doveadm('iter', '-R', '-V', uri, 'shared/userdb/');
    assert.equal(deep.code, 0, deep.stderr);
    assert.deepEqual(body(deep), ['shared/userdb/alice@example.com', 'shared/userdb/bob@example.com', 'shared/userdb/carol@example.com', 'shared/userdb/deep/dave@example.com']);
  });

  it('failures reach doveadm as errors with our message', async () => {
    const get = await doveadm('get', uri, 'shared/fail');
    assert.equal(get.code, 75, 'EX_TEMPFAIL');
    assert.match(get.stderr, /dict-server returned failure: backend refused shared\/fail/);
    const set = await doveadm('set', uri, 'shared/fail', 'v');
    assert.equal(set.code, 75);
    assert.match(set.stderr, /dict-server returned failure: backend refused shared\/fail/);
    s.dict.data.set('shared/fail/x', '1');
    const iter = await doveadm('iter', uri, 'shared/fail/');
    assert.equal(iter.code, 75);
    assert.match(iter.stderr, /dict-server returned failure: iterator broke/);
  });

  it('many doveadm clients at once', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => doveadm('set', uri, `shared/parallel/${i}`, String(i))));
    assert.ok(results.every((r) => r.code === 0));
    const all = await doveadm('iter', uri, 'shared/parallel/');
    assert.equal(body(all).length, 12);
    await eventually('doveadm to disconnect after each command', () => s.server.connections === 0);
  });
});
