/**
 * Helpers shared by the codec's tests (not exported from the package): test data with
 * both compressible and incompressible blocks and an in-memory fragment store for readRange
 * (the error-code assertions are `rejectsWith`/`throwsWith` of `@shale/testing`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { FetchFragments, FragmentRead } from './object-codec.js';
import type { RandomSource } from './random-source.js';

/** Alternates incompressible (random) and very compressible (text) runs of 48 KiB. */
export function mixedData(sizeBytes: number, random?: RandomSource): Buffer {
  const data = Buffer.allocUnsafe(sizeBytes);
  const run = 48 * 1024;
  for (let at = 0; at < sizeBytes; at += run) {
    const end = Math.min(at + run, sizeBytes);
    if ((at / run) % 2 === 0) {
      if (random === undefined) randomBytes(end - at).copy(data, at);
      else {
        let i = at;
        for (; i + 4 <= end; i += 4) data.writeUInt32LE(Math.floor(random() * 4294967296), i);
        for (; i < end; i++) data[i] = Math.floor(random() * 256);
      }
    } else {
      data.fill(`shale block ${at} `, at, end);
    }
  }
  return data;
}

export interface FetchLog {
  rounds: number;
  reads: FragmentRead[];
}

/**
 * A fetch over fragments held in memory. `missing(chunk, fragment)` makes a fragment answer
 * undefined (an unreachable OSD); `log` records what was asked.
 */
export function memoryFetch(
  fragmentsPerChunk: readonly (readonly Buffer[])[],
  missing: (chunkIndex: number, fragmentIndex: number) => boolean = () => false,
  log?: FetchLog,
): FetchFragments {
  return async (reads) => {
    if (log !== undefined) {
      log.rounds++;
      log.reads.push(...reads);
    }
    return reads.map((read) => {
      if (missing(read.chunkIndex, read.fragmentIndex)) return undefined;
      const fragment = fragmentsPerChunk[read.chunkIndex]?.[read.fragmentIndex];
      assert.ok(fragment !== undefined, `no fragment ${read.chunkIndex}/${read.fragmentIndex}`);
      assert.ok(read.offsetBytes + read.lengthBytes <= fragment.length, 'read past a fragment');
      return fragment.subarray(read.offsetBytes, read.offsetBytes + read.lengthBytes);
    });
  };
}
