// Rolling windows approximated by fixed buckets.
//
// A counter with window W is kept in buckets of width w = ceil(W / 12),
// aligned to multiples of w since the epoch, so every instance and host writes
// an event into the same bucket. The total at `now` sums every bucket that
// overlaps (now - W, now]: from the bucket holding now - W up to the newest.
//
// Error bound: the oldest bucket may begin up to w before now - W, so the
// total covers between W and W + w of history (w = W/12, about 8.3 %). It
// never misses an event inside the window: a limit of N per W is never
// exceeded in any real W-long interval, and a sender that hit it may have to
// wait up to w longer than an exact sliding window would demand.
import { DirectoryError } from '../directory/types.ts';
import type { CounterRef, WindowCount } from './types.ts';

export const BUCKETS_PER_WINDOW = 12;

export function bucketWidth(windowMs: number): number {
  return Math.max(1, Math.ceil(windowMs / BUCKETS_PER_WINDOW));
}

/** Start of the bucket of width `width` that holds time `t`. */
export function bucketStart(t: number, width: number): number {
  return Math.floor(t / width) * width;
}

/** The oldest bucket start that still counts at `now`. */
export function firstCountedBucket(now: number, windowMs: number, width = bucketWidth(windowMs)): number {
  return bucketStart(now - windowMs, width);
}

/** From this time on, the bucket no longer overlaps the window (and may be deleted). */
export function bucketExpiry(start: number, windowMs: number, width = bucketWidth(windowMs)): number {
  return start + width + windowMs;
}

/** Sums the buckets of one counter that count at `now`; `buckets` may hold older ones, they are skipped. */
export function windowCount(buckets: Iterable<{ readonly start: number; readonly count: number }>, now: number, windowMs: number): WindowCount {
  const width = bucketWidth(windowMs);
  const first = firstCountedBucket(now, windowMs, width);
  const byExpiry = new Map<number, number>();
  let total = 0;
  for (const b of buckets) {
    if (b.start < first || b.count <= 0) continue;
    total += b.count;
    const at = bucketExpiry(b.start, windowMs, width);
    byExpiry.set(at, (byExpiry.get(at) ?? 0) + b.count);
  }
  const expiring = [...byExpiry].sort((a, b) => a[0] - b[0]).map(([at, count]) => ({ at, count }));
  return { total, expiring };
}

/**
 * How long until `total + add <= limit` given when parts of the total expire;
 * 0 when it already holds, undefined when it never will (add > limit).
 */
export function waitUntilBelow(count: WindowCount, add: number, limit: number, now: number): number | undefined {
  if (add > limit) return undefined;
  let excess = count.total + add - limit;
  if (excess <= 0) return 0;
  for (const part of count.expiring) {
    excess -= part.count;
    if (excess <= 0) return Math.max(0, part.at - now);
  }
  return undefined; // cannot happen: everything expires eventually
}

/** Rejects counters and times the stores cannot represent (a programming or configuration error). */
export function checkCounter(ref: CounterRef, amount = 0): void {
  if (!Number.isSafeInteger(ref.windowMs) || ref.windowMs <= 0) {
    throw new DirectoryError('invalid', `counter ${ref.key}: window must be a positive whole number of ms, got ${ref.windowMs}`);
  }
  if (!Number.isSafeInteger(amount) || amount < 0) {
    throw new DirectoryError('invalid', `counter ${ref.key}: amount must be a non-negative integer, got ${amount}`);
  }
}

export function checkTime(now: number): void {
  if (!Number.isSafeInteger(now) || now < 0) throw new DirectoryError('invalid', `time must be whole ms since the epoch, got ${now}`);
}
