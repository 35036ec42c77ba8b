// The IPC child process every benchmark runs its load generator and test DNS in.
import { fork, type ChildProcess } from 'node:child_process';
import { onCleanup } from './proc.ts';

export type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/**
 * A helper process of a benchmark (load generator, test DNS), forked in its
 * own process group, spoken to by request/reply over IPC: every message
 * carries the id of its request; an `error` reply rejects it; `phase`
 * messages go to the request's onOther listener (ignored without one); the
 * child is stopped at cleanup (it exits when the IPC channel closes).
 */
export class Child<In extends { id: number }, Out extends { id: number; type: string }> {
  readonly name: string;
  readonly #child: ChildProcess;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (m: Out) => void; reject: (e: Error) => void; onOther?: (m: Out) => void }>();

  constructor(script: string, name: string) {
    this.name = name;
    // Its own process group: Ctrl-C reaches only us; it exits when our IPC channel closes.
    this.#child = fork(script, [], { detached: true, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (m: Out) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      if (m.type === 'error') {
        this.#pending.delete(m.id);
        p.reject(new Error(`${name}: ${(m as unknown as { message: string }).message}`));
      } else if (m.type === 'phase') {
        p.onOther?.(m);
      } else {
        this.#pending.delete(m.id);
        p.resolve(m);
      }
    });
    this.#child.once('exit', (code) => {
      for (const p of this.#pending.values()) p.reject(new Error(`${name} exited (${code})`));
      this.#pending.clear();
    });
    onCleanup(`stop ${name}`, () => this.stop());
  }

  get pid(): number {
    return this.#child.pid!;
  }

  request(msg: WithoutId<In>, onOther?: (m: Out) => void): Promise<Out> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...(onOther ? { onOther } : {}) });
      this.#child.send({ ...msg, id });
    });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise((r) => this.#child.once('exit', r));
    this.#child.disconnect();
    const t = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}
