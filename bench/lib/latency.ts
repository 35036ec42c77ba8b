// Latency percentiles of a run, the same way for every load generator.

/** Latencies of a run in µs (p999 only means something for runs of many thousands). */
export interface LatencyStats {
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** Summary of the first `count` samples of `lat` (µs); sorts them in place. All 0 when there are none. */
export function latencySummary(lat: Float64Array, count: number): LatencyStats {
  const sorted = lat.subarray(0, count).sort();
  const q = (f: number) => (count ? sorted[Math.min(count - 1, Math.floor(f * count))]! : 0);
  let sum = 0;
  for (let i = 0; i < count; i++) sum += sorted[i]!;
  return { mean: count ? sum / count : 0, p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: count ? sorted[count - 1]! : 0 };
}
