import { assert, crc32c, isShaleError } from '@shale/common';
import type { BlockExtent } from './api-types.js';
import {
  BLOCK_STATUS_MAX_CLUSTERS,
  BLOCK_STATUS_MAX_EXTENTS,
  SCO_READ_MAX_CLUSTERS,
  SCO_READERS_OPEN_MAX,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { ScoReader } from './sco-reader.js';
import { type ClusterIndex, type ClusterLocation, scoNumber } from './types.js';
import type { VolumeContext } from './volume-context.js';
import { scoObjectName } from './volume-state.js';

/**
 * The read path of one vDisk: a cluster's location comes from the LBA map, its bytes
 * from the first place that has them:
 *
 *   LBA map ─> SCO memory (open SCO, sealed SCOs not uploaded yet) ─> cluster cache
 *           ─> SCO file in the write buffer (one pread per run) ─> backend (one ranged
 *              read per run, per layer: a clone reads its ancestors' namespaces)
 *
 * Every byte read from a file or the backend is checked against the CRC32C the map holds.
 * The write lane reads through here too (read-modify-write of partial clusters), and so
 * does scrubbing (the live clusters it copies). Also block status: which ranges are holes.
 */
export class ReadPath {
  constructor(private readonly v: VolumeContext) {}

  /** Holes and data in [offsetBytes, +lengthBytes) (the caller checked the range). */
  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]> {
    if (lengthBytes === 0) {
      throw vdError(VdErrorCode.InvalidArgument, 'block status of an empty range');
    }
    const cs = this.v.config.clusterSizeBytes;
    const endBytes = offsetBytes + lengthBytes;
    const first = Math.floor(offsetBytes / cs);
    // One scan covers at most BLOCK_STATUS_MAX_CLUSTERS clusters; the caller asks again.
    const endCluster = Math.min(Math.ceil(endBytes / cs), first + BLOCK_STATUS_MAX_CLUSTERS);
    const stopBytes = Math.min(endBytes, endCluster * cs);
    const extents: { lengthBytes: number; hole: boolean }[] = [];
    let cursorBytes = offsetBytes;
    // Appends [cursor, toBytes) as hole or data, merging with the previous run of its kind.
    const add = (toBytes: number, hole: boolean): boolean => {
      const to = Math.min(toBytes, stopBytes);
      if (to <= cursorBytes) return true;
      const last = extents[extents.length - 1];
      if (last !== undefined && last.hole === hole) last.lengthBytes += to - cursorBytes;
      else if (extents.length >= BLOCK_STATUS_MAX_EXTENTS) return false;
      else extents.push({ lengthBytes: to - cursorBytes, hole });
      cursorBytes = to;
      return true;
    };
    // The map in memory holds every acknowledged write.
    let full = false;
    for await (const [index] of this.v.lba.range(first as ClusterIndex, endCluster)) {
      if (!add(index * cs, true) || !add((index + 1) * cs, false)) {
        full = true;
        break;
      }
    }
    // Only when the scan saw every cluster up to stopBytes is the rest a hole.
    if (!full) add(stopBytes, true);
    return extents;
  }

  async readRange(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const out = Buffer.alloc(lengthBytes);
    if (lengthBytes === 0) return out;
    const cs = this.v.config.clusterSizeBytes;
    const first = Math.floor(offsetBytes / cs);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / cs);
    for (let from = first; from <= last; from += SCO_READ_MAX_CLUSTERS * 8) {
      const to = Math.min(last + 1, from + SCO_READ_MAX_CLUSTERS * 8);
      const indexes: ClusterIndex[] = [];
      for (let i = from; i < to; i += 1) indexes.push(i as ClusterIndex);
      try {
        await this.readInto(out, offsetBytes, from, indexes);
      } catch (err) {
        // The SCO moved under us (scrubbing or a rollback deleted it after the lookup):
        // look again once.
        if (!isShaleError(err, VdErrorCode.NotFound)) throw err;
        await this.readInto(out, offsetBytes, from, indexes);
      }
    }
    return out;
  }

  /**
   * Copies clusters `indexes` (consecutive from cluster `from`) into `out`, which holds the
   * bytes from `offsetBytes`: from the cluster cache where it has them (copied at once, in
   * the same turn as the lookup), the rest from the SCOs, which then go into the cache.
   */
  private async readInto(
    out: Buffer,
    offsetBytes: number,
    from: number,
    indexes: readonly ClusterIndex[],
  ): Promise<void> {
    const cs = this.v.config.clusterSizeBytes;
    const end = offsetBytes + out.length;
    const locations = await this.v.lba.getMany(indexes);
    const missed: number[] = [];
    for (let i = 0; i < indexes.length; i += 1) {
      const location = locations[i];
      if (location === undefined) continue; // a hole: zeros
      const clusterStart = (from + i) * cs;
      const copyFrom = Math.max(offsetBytes, clusterStart);
      const copyTo = Math.min(end, clusterStart + cs);
      const memory = (location.layer ?? 0) === 0 ? this.memoryOf(location.scoNumber) : undefined;
      if (memory !== undefined) {
        // Copied in the same turn as the lookup: the buffer cannot be recycled meanwhile.
        const at = location.clusterOffset * cs;
        memory.copy(
          out,
          copyFrom - offsetBytes,
          at + copyFrom - clusterStart,
          at + copyTo - clusterStart,
        );
        continue;
      }
      const hit = this.v.clusterCache.copyOut(
        location.layer ?? 0,
        location.scoNumber,
        location.clusterOffset,
        out,
        copyFrom - offsetBytes,
        copyFrom - clusterStart,
        copyTo - clusterStart,
      );
      if (!hit) missed.push(i);
    }
    if (missed.length === 0) return;
    const missedLocations = missed.map((i) => locations[i] as ClusterLocation);
    const clusters = await this.readLocations(missedLocations);
    for (let k = 0; k < missed.length; k += 1) {
      const i = missed[k] as number;
      const data = clusters[k] as Buffer;
      const location = missedLocations[k] as ClusterLocation;
      this.v.clusterCache.put(
        location.layer ?? 0,
        location.scoNumber,
        location.clusterOffset,
        data,
      );
      const clusterStart = (from + i) * cs;
      const copyFrom = Math.max(offsetBytes, clusterStart);
      const copyTo = Math.min(end, clusterStart + cs);
      data.copy(out, copyFrom - offsetBytes, copyFrom - clusterStart, copyTo - clusterStart);
    }
  }

  /**
   * The memory of SCO `n` of this vDisk while it has one (the open SCO, or a sealed one
   * not uploaded yet). Read it in the same turn: once uploaded, the buffer is recycled.
   */
  private memoryOf(n: number): Buffer | undefined {
    const sco = this.v.sco;
    if (sco !== undefined && sco.scoNumber === n) return sco.memory;
    return this.v.sealedMemory.get(n);
  }

  /** A whole cluster's current content (zeros if unmapped), for read-modify-write. */
  async readClusterUnlocked(index: number): Promise<Buffer> {
    const [data] = await this.readClusters([index as ClusterIndex]);
    return data ?? Buffer.alloc(this.v.config.clusterSizeBytes);
  }

  /** The clusters' contents, verified; undefined for unmapped clusters. */
  private async readClusters(indexes: readonly ClusterIndex[]): Promise<(Buffer | undefined)[]> {
    const locations = await this.v.lba.getMany(indexes);
    return this.readLocations(locations);
  }

  async readLocations(
    locations: readonly (ClusterLocation | undefined)[],
  ): Promise<(Buffer | undefined)[]> {
    const cs = this.v.config.clusterSizeBytes;
    const out: (Buffer | undefined)[] = new Array(locations.length);
    const remote = new Map<number, number[]>(); // layer -> positions
    // Clusters of SCOs still in memory first, copied now (before any await).
    for (let k = 0; k < locations.length; k += 1) {
      const location = locations[k];
      if (location === undefined || (location.layer ?? 0) !== 0) continue;
      const memory = this.memoryOf(location.scoNumber);
      if (memory === undefined) continue;
      const at = location.clusterOffset * cs;
      out[k] = Buffer.from(memory.subarray(at, at + cs));
    }
    let i = 0;
    while (i < locations.length) {
      const location = locations[i];
      if (location === undefined || out[i] !== undefined) {
        i += 1;
        continue;
      }
      const layer = location.layer ?? 0;
      // A run of clusters stored back to back in one SCO: one pread.
      let j = i + 1;
      while (
        j < locations.length &&
        j - i < SCO_READ_MAX_CLUSTERS &&
        locations[j]?.scoNumber === location.scoNumber &&
        (locations[j]?.layer ?? 0) === layer &&
        locations[j]?.clusterOffset === location.clusterOffset + (j - i)
      ) {
        j += 1;
      }
      const reader = layer === 0 ? await this.localReader(location.scoNumber) : undefined;
      if (reader !== undefined) {
        const crcs = new Uint32Array(j - i);
        for (let k = i; k < j; k += 1) crcs[k - i] = (locations[k] as ClusterLocation).crc32c;
        const data = await reader.readClusters(location.clusterOffset, crcs);
        for (let k = i; k < j; k += 1) out[k] = data.subarray((k - i) * cs, (k - i + 1) * cs);
      } else {
        let positions = remote.get(layer);
        if (positions === undefined) {
          positions = [];
          remote.set(layer, positions);
        }
        for (let k = i; k < j; k += 1) positions.push(k);
      }
      i = j;
    }
    for (const [layer, positions] of remote) {
      const ns =
        layer === 0 ? this.v.config.namespace : this.v.config.ancestors[layer - 1]?.namespace;
      assert(ns !== undefined, `location layer ${layer} beyond the vDisk's ancestors`);
      // Clusters back to back in one SCO become one slice: one ranged read.
      const runs: { first: number; count: number }[] = [];
      for (let k = 0; k < positions.length; k += 1) {
        const here = locations[positions[k] as number] as ClusterLocation;
        const run = runs[runs.length - 1];
        const prev =
          run === undefined ? undefined : locations[positions[run.first + run.count - 1] as number];
        if (
          run !== undefined &&
          prev !== undefined &&
          prev.scoNumber === here.scoNumber &&
          prev.clusterOffset + 1 === here.clusterOffset &&
          run.first + run.count === k
        ) {
          run.count += 1;
        } else {
          runs.push({ first: k, count: 1 });
        }
      }
      const slices = runs.map((run) => {
        const location = locations[positions[run.first] as number] as ClusterLocation;
        return {
          name: scoObjectName(location.scoNumber),
          offsetBytes: location.clusterOffset * cs,
          lengthBytes: run.count * cs,
        };
      });
      const data = await this.v.backend.readRanges(ns, slices);
      for (let r = 0; r < runs.length; r += 1) {
        const run = runs[r] as { first: number; count: number };
        const bytes = data[r];
        for (let k = run.first; k < run.first + run.count; k += 1) {
          const p = positions[k] as number;
          const location = locations[p] as ClusterLocation;
          const cluster = bytes?.subarray((k - run.first) * cs, (k - run.first + 1) * cs);
          if (
            cluster === undefined ||
            cluster.length !== cs ||
            crc32c(cluster) !== location.crc32c
          ) {
            throw vdError(
              VdErrorCode.Corrupt,
              `vDisk ${this.v.name}: cluster ${location.clusterOffset} of SCO ${location.scoNumber} (layer ${layer}) read from the backend fails its CRC32C`,
            );
          }
          out[p] = cluster;
        }
      }
    }
    return out;
  }

  /** A reader of a SCO file in the write buffer, or undefined when the file is gone. */
  private async localReader(number: number): Promise<ScoReader | undefined> {
    const cached = this.v.readers.get(number);
    if (cached !== undefined) {
      this.v.readers.delete(number);
      this.v.readers.set(number, cached);
      return cached;
    }
    const isCurrent = this.v.sco?.scoNumber === number;
    if (!isCurrent && !this.v.localScos.has(number)) return undefined;
    let reader: ScoReader;
    try {
      reader = await ScoReader.open({
        dir: this.v.scoDir,
        scoNumber: scoNumber(number),
        clusterSizeBytes: this.v.config.clusterSizeBytes,
      });
    } catch (err) {
      if (isShaleError(err, VdErrorCode.ScoNotFound)) return undefined;
      throw err;
    }
    const raced = this.v.readers.get(number);
    if (raced !== undefined) {
      await reader.close();
      return raced;
    }
    this.v.readers.set(number, reader);
    if (this.v.readers.size > SCO_READERS_OPEN_MAX) {
      const [oldest, old] = this.v.readers.entries().next().value as [number, ScoReader];
      this.v.readers.delete(oldest);
      // Reads in flight on it finish first: close after a tick of grace.
      setTimeout(() => void old.close().catch(() => undefined), 1000).unref();
    }
    return reader;
  }
}
