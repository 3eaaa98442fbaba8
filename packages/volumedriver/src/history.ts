import { crc32c } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';
import type { TLogEntry } from './tlog-format.js';
import type { ClusterIndex, ClusterLocation, ScoNumber } from './types.js';

/**
 * Folding a vDisk's history (its TLogs, in order) into the LBA map it implies. The same
 * fold serves a rebuild after a crash, a restart from the backend, a rollback (fold up
 * to a snapshot's marker), a clone (the parent's map as of the snapshot) and scrubbing.
 */

/** An in-memory map: cluster -> location; absent = unmapped (reads as zeros). */
export type FoldedMap = Map<number, ClusterLocation>;

/** Applies one WRITE or TRIM entry to `map`; other entries change nothing. */
export function foldEntry(map: FoldedMap, entry: TLogEntry, layer = 0): void {
  if (entry.type === 'write') {
    map.set(entry.clusterIndex, {
      scoNumber: entry.scoNumber,
      clusterOffset: entry.clusterOffset,
      crc32c: entry.crc32c,
      ...(layer === 0 ? {} : { layer }),
    });
  } else if (entry.type === 'trim') {
    deleteRange(map, entry.firstClusterIndex, entry.firstClusterIndex + entry.clusterCount);
  }
}

/** Removes every key in [from, to) from a map, by whichever is smaller to walk. */
export function deleteRange<V>(map: Map<number, V>, from: number, to: number): void {
  if (to - from <= map.size) {
    for (let index = from; index < to; index += 1) map.delete(index);
  } else {
    for (const index of map.keys()) if (index >= from && index < to) map.delete(index);
  }
}

/**
 * Folds TLogs in order into `map`; stops after the SNAPSHOT marker `stopAtSnapshotId`
 * (then returns true) or at the end (false). `layerShift` is added to every location's
 * layer (a parent's map seen from its clone is one layer further away).
 */
export async function foldTLogs(
  map: FoldedMap,
  tlogs: readonly number[],
  readTLog: (tlogNumber: number) => Promise<TLogEntry[]>,
  options: { stopAtSnapshotId?: number; layerShift?: number } = {},
): Promise<boolean> {
  const layerShift = options.layerShift ?? 0;
  for (const tlogNumber of tlogs) {
    for (const entry of await readTLog(tlogNumber)) {
      if (entry.type === 'snapshot' && entry.snapshotId === options.stopAtSnapshotId) return true;
      foldEntry(map, entry, layerShift);
    }
  }
  return false;
}

/** Shifts the layers of a folded map (a parent's view, seen from a clone). */
export function shiftLayers(map: FoldedMap, by: number): void {
  if (by === 0) return;
  for (const [index, location] of map) {
    map.set(index, { ...location, layer: (location.layer ?? 0) + by });
  }
}

// ------------------------------------------------------------------- checkpoints

const CHECKPOINT_MAGIC = 0x5348_434b; // "SHCK"
const CHECKPOINT_VERSION = 1;
const CHECKPOINT_HEADER_BYTES = 16;
/** u48 cluster, u32 SCO, u32 cluster offset, u32 CRC32C, u8 layer. */
export const CHECKPOINT_ENTRY_BYTES = 19;

/**
 * One checkpoint part: a 16-byte header (magic, version, entry count, CRC32C of the body)
 * and fixed 19-byte entries in cluster order. The checkpoint's position (which TLog
 * entry it is the map after) is in the root object that names it.
 */
export function encodeCheckpointPart(
  entries: readonly (readonly [number, ClusterLocation])[],
): Buffer {
  const buf = Buffer.allocUnsafe(CHECKPOINT_HEADER_BYTES + entries.length * CHECKPOINT_ENTRY_BYTES);
  let offset = CHECKPOINT_HEADER_BYTES;
  for (const [index, location] of entries) {
    buf.writeUIntBE(index, offset, 6);
    buf.writeUInt32BE(location.scoNumber, offset + 6);
    buf.writeUInt32BE(location.clusterOffset, offset + 10);
    buf.writeUInt32BE(location.crc32c >>> 0, offset + 14);
    buf.writeUInt8(location.layer ?? 0, offset + 18);
    offset += CHECKPOINT_ENTRY_BYTES;
  }
  buf.writeUInt32BE(CHECKPOINT_MAGIC, 0);
  buf.writeUInt8(CHECKPOINT_VERSION, 4);
  buf.fill(0, 5, 8);
  buf.writeUInt32BE(entries.length, 8);
  buf.writeUInt32BE(crc32c(buf.subarray(CHECKPOINT_HEADER_BYTES)), 12);
  return buf;
}

export function decodeCheckpointPart(buf: Buffer, what: string): [ClusterIndex, ClusterLocation][] {
  const bad = (why: string) => vdError(VdErrorCode.Corrupt, `checkpoint ${what}: ${why}`);
  if (buf.length < CHECKPOINT_HEADER_BYTES) throw bad('shorter than its header');
  if (buf.readUInt32BE(0) !== CHECKPOINT_MAGIC) throw bad('bad magic');
  if (buf.readUInt8(4) !== CHECKPOINT_VERSION) throw bad(`unknown version ${buf.readUInt8(4)}`);
  const count = buf.readUInt32BE(8);
  if (buf.length !== CHECKPOINT_HEADER_BYTES + count * CHECKPOINT_ENTRY_BYTES) {
    throw bad(`${buf.length} B for ${count} entries`);
  }
  if (crc32c(buf.subarray(CHECKPOINT_HEADER_BYTES)) !== buf.readUInt32BE(12)) {
    throw bad('CRC32C mismatch');
  }
  const out: [ClusterIndex, ClusterLocation][] = new Array(count);
  let offset = CHECKPOINT_HEADER_BYTES;
  for (let i = 0; i < count; i += 1) {
    const layer = buf.readUInt8(offset + 18);
    out[i] = [
      buf.readUIntBE(offset, 6) as ClusterIndex,
      {
        scoNumber: buf.readUInt32BE(offset + 6) as ScoNumber,
        clusterOffset: buf.readUInt32BE(offset + 10),
        crc32c: buf.readUInt32BE(offset + 14),
        ...(layer === 0 ? {} : { layer }),
      },
    ];
    offset += CHECKPOINT_ENTRY_BYTES;
  }
  return out;
}

/** The LBA map's position marker: the map holds the fold up to this TLog entry. */
export interface MapPosition {
  readonly generation: number;
  readonly tlogNumber: number;
  readonly entryCount: number;
}

export function encodeMapPosition(position: MapPosition): Buffer {
  const buf = Buffer.alloc(16);
  buf.writeUInt32BE(position.generation, 0);
  buf.writeUInt32BE(position.tlogNumber, 4);
  buf.writeUInt32BE(position.entryCount, 8);
  buf.writeUInt32BE(crc32c(buf.subarray(0, 12)), 12);
  return buf;
}

export function decodeMapPosition(buf: Buffer | undefined): MapPosition | undefined {
  if (buf === undefined || buf.length !== 16) return undefined;
  if (crc32c(buf.subarray(0, 12)) !== buf.readUInt32BE(12)) return undefined;
  return {
    generation: buf.readUInt32BE(0),
    tlogNumber: buf.readUInt32BE(4),
    entryCount: buf.readUInt32BE(8),
  };
}
