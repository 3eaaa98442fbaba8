import { MAX_LATENCY_SAMPLES } from './constants.js';

/** Summary of one measured case, with units in every key. */
export interface CaseMeasurement {
  readonly ops: number;
  readonly bytes: number;
  readonly durationMs: number;
  readonly opsPerSec: number;
  readonly throughputMiBps: number;
  readonly latencyUsMean: number | null;
  readonly latencyUsP50: number | null;
  readonly latencyUsP99: number | null;
}

/**
 * Per-operation latencies of one case, in a preallocated array: recording costs no
 * allocation, and the number of samples has a ceiling (full() tells the driver to stop).
 */
export class LatencyRecorder {
  private readonly samplesUs: Float64Array;
  private count = 0;
  private bytes = 0;

  constructor(capacity = MAX_LATENCY_SAMPLES) {
    this.samplesUs = new Float64Array(capacity);
  }

  record(latencyUs: number, bytes: number): void {
    if (this.count < this.samplesUs.length) {
      this.samplesUs[this.count] = latencyUs;
      this.count += 1;
    }
    this.bytes += bytes;
  }

  full(): boolean {
    return this.count >= this.samplesUs.length;
  }

  get totalBytes(): number {
    return this.bytes;
  }

  summarize(durationMs: number): CaseMeasurement {
    const sorted = this.samplesUs.slice(0, this.count).sort();
    let sumUs = 0;
    for (const sample of sorted) sumUs += sample;
    const seconds = durationMs / 1000;
    return {
      ops: this.count,
      bytes: this.bytes,
      durationMs: round(durationMs, 1),
      opsPerSec: round(this.count / seconds, 1),
      throughputMiBps: round(this.bytes / (1024 * 1024) / seconds, 1),
      latencyUsMean: this.count === 0 ? null : round(sumUs / this.count, 1),
      latencyUsP50: percentile(sorted, 0.5),
      latencyUsP99: percentile(sorted, 0.99),
    };
  }
}

/** Nearest-rank percentile of sorted samples. */
function percentile(sorted: Float64Array, fraction: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1));
  return round(sorted[rank] ?? 0, 1);
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
