// The greylisting state machine, as pure functions of (old record, now, rules).
// The file store applies them directly; the MariaDB store reads the row,
// applies them and writes the result back with a compare-and-set UPDATE, so
// both stores follow exactly this code.
import { createHash } from 'node:crypto';
import { DirectoryError } from '../directory/types.ts';
import type { ClientRecord, ClientUpdate, TripletRecord, TripletRules } from './types.ts';

const HOUR = 3_600_000;

/** A fixed-width id for a triplet: a short primary key, and no addresses at rest. */
export function tripletId(triplet: string): Buffer {
  return createHash('sha256').update(triplet).digest().subarray(0, 16);
}

export function isAlive(record: { readonly expiresAt: number }, now: number): boolean {
  return now <= record.expiresAt;
}

/**
 * A passed triplet seen again only needs its lastSeen moved when that changes
 * its expiry noticeably: at most once an hour (or maxAge/24), which spares a
 * write per message between regular correspondents.
 */
export function refreshEvery(maxAgeMs: number): number {
  return Math.min(HOUR, Math.floor(maxAgeMs / 24));
}

export interface TripletStep {
  readonly record: TripletRecord;
  readonly passedNow: boolean;
  /** False when the stored record can stay as it is. */
  readonly write: boolean;
}

export function nextTriplet(old: TripletRecord | undefined, now: number, rules: TripletRules): TripletStep {
  const fresh = old === undefined || !isAlive(old, now);
  if (!fresh && old.passedAt !== undefined && now - old.lastSeen < refreshEvery(rules.maxAgeMs)) {
    return { record: old, passedNow: false, write: false };
  }
  const firstSeen = fresh ? now : old.firstSeen;
  const lastSeen = fresh ? now : Math.max(old.lastSeen, now);
  const wasPassed = !fresh && old.passedAt !== undefined;
  const passedAt = wasPassed ? old.passedAt : now - firstSeen >= rules.delayMs ? now : undefined;
  const expiresAt = passedAt !== undefined
    ? lastSeen + rules.maxAgeMs
    : Math.min(firstSeen + rules.retryWindowMs, lastSeen + rules.maxAgeMs);
  return {
    record: { firstSeen, lastSeen, ...(passedAt !== undefined ? { passedAt } : {}), expiresAt },
    passedNow: passedAt !== undefined && !wasPassed,
    write: true,
  };
}

/** The client record after `update` (postgrey counts a pass at most once an hour, and so do we by default). */
export function nextClient(old: ClientRecord | undefined, now: number, update: ClientUpdate): ClientRecord {
  const base: ClientRecord = old !== undefined && isAlive(old, now)
    ? old
    : { passes: 0, firstSeen: now, lastSeen: now, lastPass: 0, expiresAt: now + update.maxAgeMs };
  // lastPass in the future: a clock went backwards; count rather than block for its skew.
  const counts = update.pass && (now >= base.lastPass + update.minPassIntervalMs || base.lastPass > now);
  return {
    passes: base.passes + (counts ? 1 : 0),
    firstSeen: base.firstSeen,
    lastSeen: Math.max(base.lastSeen, now),
    lastPass: counts ? now : base.lastPass,
    expiresAt: Math.max(base.expiresAt, now + update.maxAgeMs),
  };
}

export function checkRules(rules: TripletRules): void {
  for (const [name, value, min] of [
    ['delayMs', rules.delayMs, 0], ['retryWindowMs', rules.retryWindowMs, 0], ['maxAgeMs', rules.maxAgeMs, 1],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < min) throw new DirectoryError('invalid', `greylisting ${name} must be a whole number of ms >= ${min}, got ${value}`);
  }
}
