import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { LbaMap, LbaUpdate } from '../lba-map.js';
import { type ClusterLocation, clusterIndex, scoNumber } from '../types.js';

/** Helpers of the LBA map tests: locations, updates, the test seed, temporary directories (the seeded PRNG is `seededRandom` of `@shale/testing`). */

export function loc(sco: number, clusterOffset: number, crc: number, layer = 0): ClusterLocation {
  return layer === 0
    ? { scoNumber: scoNumber(sco), clusterOffset, crc32c: crc >>> 0 }
    : { scoNumber: scoNumber(sco), clusterOffset, crc32c: crc >>> 0, layer };
}

export const put = (index: number, location: ClusterLocation): LbaUpdate => ({
  clusterIndex: clusterIndex(index),
  location,
});

export const unmap = (index: number): LbaUpdate => ({
  clusterIndex: clusterIndex(index),
  location: undefined,
});

/** The seed of a randomized test: VD_TEST_SEED, else the clock. */
export function testSeed(): number {
  return Number(process.env.VD_TEST_SEED ?? Date.now() % 2 ** 31);
}

/** Temporary directories, removed by `removeAll` (call it from `after`). */
export class TempDirs {
  private readonly dirs: string[] = [];

  /** A fresh `<tmp>/vd-lba-…/lba` path (not created). */
  async make(): Promise<string> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-lba-test-'));
    this.dirs.push(dir);
    return path.join(dir, 'lba');
  }

  async removeAll(): Promise<void> {
    await Promise.all(this.dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
  }
}

export async function collect(
  map: LbaMap,
  from: number,
  to: number,
): Promise<[number, ClusterLocation][]> {
  const out: [number, ClusterLocation][] = [];
  for await (const entry of map.range(clusterIndex(from), to)) out.push(entry);
  return out;
}

/** Everything a snapshotEntries() yields: the entries, and the marker (last) if any. */
export async function collectSnapshot(
  entries: AsyncGenerator<[number, ClusterLocation] | Buffer>,
): Promise<{ entries: [number, ClusterLocation][]; meta: Buffer | undefined }> {
  const out: [number, ClusterLocation][] = [];
  let meta: Buffer | undefined;
  for await (const value of entries) {
    if (Buffer.isBuffer(value)) meta = value;
    else {
      if (meta !== undefined) throw new Error('an entry after the marker');
      out.push(value);
    }
  }
  return { entries: out, meta };
}
