// Periodic deletion of expired policy state. Each run deletes at most `limit`
// entries per kind (short statements, small Galera write sets); when a run
// hits the limit the next one follows after a second, so a backlog drains
// without ever holding locks for long. Runs are jittered so instances started
// together do not sweep in lock-step; when they do overlap they only find less.
import type { Logger } from 'pino';
import type { PolicyStateStore } from './types.ts';

export interface SweepSchedule {
  /** Time between runs (jittered ±20 %). */
  readonly everyMs: number;
  /** Entries per kind per run. */
  readonly limit: number;
  readonly clock?: () => number;
  readonly log?: Logger | undefined;
}

export const DEFAULT_SWEEP: SweepSchedule = { everyMs: 60_000, limit: 1000 };
const BACKLOG_MS = 1000;
const WARN_EVERY_MS = 300_000;

export function startSweeper(store: Pick<PolicyStateStore, 'sweep'>, schedule: SweepSchedule): { stop(): void } {
  const clock = schedule.clock ?? Date.now;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let lastWarn = 0;
  const plan = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(run, ms);
    timer.unref();
  };
  const jittered = () => Math.round(schedule.everyMs * (0.8 + 0.4 * Math.random()));
  const run = async () => {
    let next = jittered();
    try {
      const r = await store.sweep(clock(), schedule.limit);
      if (r.deleted > 0) schedule.log?.debug({ deleted: r.deleted, more: r.more }, 'expired policy state swept');
      if (r.more) next = BACKLOG_MS;
    } catch (err) {
      // Expired entries are harmless (they read as absent); only their space is at stake.
      if (clock() - lastWarn >= WARN_EVERY_MS) {
        lastWarn = clock();
        schedule.log?.warn({ err: (err as Error).message }, 'cannot sweep expired policy state');
      }
    }
    plan(next);
  };
  plan(jittered());
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
