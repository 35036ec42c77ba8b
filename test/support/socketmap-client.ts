// A Postfix-like socketmap client for tests: netstrings out, netstring replies in, EOF noticed.
import { connect, type Socket } from 'node:net';
import type { ListenAddress } from '../../src/config/listen.ts';
import { encodeNetstring, NetstringDecoder } from '../../src/socketmap/netstring.ts';

/** A Postfix-like client: sends netstrings, collects netstring replies, notices EOF. */
export class SocketmapClient {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  #decoder = new NetstringDecoder(200_000);
  #replies: string[] = [];
  #waiters: Array<() => void> = [];
  #eof = false;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.#decoder.push(chunk)) this.#replies.push(f.toString('utf8'));
      this.#wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('end', () => {
      this.#eof = true;
      this.#wake();
    });
  }

  static connect(address: ListenAddress): Promise<SocketmapClient> {
    return new Promise((resolve, reject) => {
      const socket = address.kind === 'unix' ? connect(address.path) : connect(address.port, address.host);
      socket.once('connect', () => resolve(new SocketmapClient(socket)));
      socket.once('error', reject);
    });
  }

  send(raw: string | Buffer): void {
    this.socket.write(raw);
  }

  request(map: string, key: string): void {
    this.send(encodeNetstring(`${map} ${key}`));
  }

  /** The next reply, or undefined once the server closed without sending one. */
  async next(): Promise<string | undefined> {
    for (;;) {
      const r = this.#replies.shift();
      if (r !== undefined) return r;
      if (this.#eof) return undefined;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  async ask(map: string, key: string): Promise<string | undefined> {
    this.request(map, key);
    return this.next();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

