// Runs `bin/mailwarden serve` as a child process, the way systemd would, and
// collects its JSON log lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

export const BIN = new URL('../../bin/mailwarden', import.meta.url).pathname;

export interface Daemon {
  readonly child: ChildProcess;
  readonly lines: Array<Record<string, unknown>>;
  waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startDaemon(config: string, env: Record<string, string> = {}): Promise<Daemon> {
  const child = spawn(BIN, ['--config', config, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const lines: Array<Record<string, unknown>> = [];
  let buffer = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffer += d.toString('utf8');
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try { lines.push(JSON.parse(line) as Record<string, unknown>); } catch { lines.push({ msg: line, unparsed: true }); }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = once(child, 'exit');
  const daemon: Daemon = {
    child,
    lines,
    async waitForLog(predicate, timeoutMs = 10_000) {
      const start = Date.now();
      for (;;) {
        const hit = lines.find(predicate);
        if (hit) return hit;
        if (child.exitCode !== null) throw new Error(`mailwarden exited ${child.exitCode}: ${stderr}${JSON.stringify(lines)}`);
        if (Date.now() - start > timeoutMs) throw new Error(`log line not seen within ${timeoutMs} ms; have: ${JSON.stringify(lines)} ${stderr}`);
        await sleep(20);
      }
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null) child.kill(signal);
      const [code] = await exited;
      return code as number | null;
    },
  };
  await daemon.waitForLog((l) => l['msg'] === 'mailwarden started');
  return daemon;
}
