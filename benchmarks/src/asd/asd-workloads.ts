import { randomFillSync } from 'node:crypto';
import type { AsdClient } from '@shale/asd';
import { type CaseMeasurement, LatencyRecorder } from './latency-recorder.js';

/**
 * The Shale side of each case: `depth` loops, each with one call in flight at a time,
 * against one ASD through one client (grpc-js multiplexes them on one HTTP/2 connection).
 * A case stops at its deadline, at its byte budget, or when its latency samples run out.
 */

export interface Bound {
  readonly durationMs: number;
  readonly maxBytes?: number | undefined;
}

/** Incompressible values cut as views from one random pool: no copy, no allocation per put. */
export class ValuePool {
  private readonly pool: Buffer;
  private cursor = 0;

  constructor(sizeBytes: number) {
    this.pool = randomFillSync(Buffer.allocUnsafe(sizeBytes));
  }

  next(sizeBytes: number): Buffer {
    if (this.cursor + sizeBytes > this.pool.length) this.cursor = 0;
    const value = this.pool.subarray(this.cursor, this.cursor + sizeBytes);
    // Step by an odd number of 4 KiB pages so consecutive values differ.
    this.cursor += sizeBytes + 12 * 1024;
    return value;
  }
}

/** Runs `op` from `depth` loops until the bound; `op` returns the bytes it moved. */
async function runLoops(
  depth: number,
  bound: Bound,
  op: (loop: number, seq: number) => Promise<number>,
): Promise<CaseMeasurement> {
  const recorder = new LatencyRecorder();
  const startNs = process.hrtime.bigint();
  const deadlineNs = startNs + BigInt(Math.round(bound.durationMs * 1e6));
  const maxBytes = bound.maxBytes ?? Number.POSITIVE_INFINITY;
  let seq = 0;
  const loop = async (index: number): Promise<void> => {
    while (process.hrtime.bigint() < deadlineNs && recorder.totalBytes < maxBytes) {
      if (recorder.full()) return;
      const mySeq = seq;
      seq += 1;
      const opStartNs = process.hrtime.bigint();
      const bytes = await op(index, mySeq);
      recorder.record(Number(process.hrtime.bigint() - opStartNs) / 1000, bytes);
    }
  };
  await Promise.all(Array.from({ length: depth }, (_, index) => loop(index)));
  const durationMs = Number(process.hrtime.bigint() - startNs) / 1e6;
  return recorder.summarize(durationMs);
}

export function objectKey(prefix: string, seq: number): Buffer {
  return Buffer.from(`${prefix}/${seq.toString().padStart(8, '0')}`);
}

/** Puts one object per call; returns the measurement and the keys written, in order. */
export async function measurePuts(
  client: AsdClient,
  options: {
    prefix: string;
    objectBytes: number;
    depth: number;
    bound: Bound;
    pool: ValuePool;
  },
): Promise<{ measurement: CaseMeasurement; objectCount: number }> {
  let written = 0;
  const measurement = await runLoops(options.depth, options.bound, async (_loop, seq) => {
    await client.put([
      { key: objectKey(options.prefix, seq), value: options.pool.next(options.objectBytes) },
    ]);
    written = Math.max(written, seq + 1);
    return options.objectBytes;
  });
  return { measurement, objectCount: written };
}

/** Writes `count` objects untimed (the read set), `depth` at a time. */
export async function writeObjects(
  client: AsdClient,
  options: { prefix: string; objectBytes: number; count: number; depth: number; pool: ValuePool },
): Promise<void> {
  let next = 0;
  const loop = async (): Promise<void> => {
    while (next < options.count) {
      const seq = next;
      next += 1;
      await client.put([
        { key: objectKey(options.prefix, seq), value: options.pool.next(options.objectBytes) },
      ]);
    }
  };
  await Promise.all(Array.from({ length: options.depth }, () => loop()));
}

/** Whole-object gets of random keys among `keys`, one key per call. */
export async function measureGets(
  client: AsdClient,
  options: { keys: readonly Buffer[]; depth: number; bound: Bound },
): Promise<CaseMeasurement> {
  const { keys } = options;
  return runLoops(options.depth, options.bound, async () => {
    const key = keys[Math.floor(Math.random() * keys.length)] as Buffer;
    const [result] = await client.get([key]);
    if (result === undefined || !result.ok) {
      throw result?.error ?? new Error(`get ${key.toString()}: empty answer`);
    }
    return result.value.value.length;
  });
}

/** One slice per call at a random `sliceBytes`-aligned offset of a random key among `keys`. */
export async function measureRangedGets(
  client: AsdClient,
  options: {
    keys: readonly Buffer[];
    objectBytes: number;
    sliceBytes: number;
    depth: number;
    bound: Bound;
  },
): Promise<CaseMeasurement> {
  const { keys, sliceBytes } = options;
  const slicesPerObject = Math.floor(options.objectBytes / sliceBytes);
  return runLoops(options.depth, options.bound, async () => {
    const key = keys[Math.floor(Math.random() * keys.length)] as Buffer;
    const offset = Math.floor(Math.random() * slicesPerObject) * sliceBytes;
    const [result] = await client.getRanges([{ key, offset, length: sliceBytes }]);
    if (result === undefined || !result.ok) {
      throw result?.error ?? new Error(`get range of ${key.toString()}: empty answer`);
    }
    return result.value.length;
  });
}
