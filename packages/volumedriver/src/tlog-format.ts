import { assert, crc32c, unreachable } from '@shale/common';
import {
  CLUSTER_INDEX_MAX,
  SCO_NUMBER_MAX,
  SNAPSHOT_ID_MAX,
  TLOG_ENTRY_SIZE_BYTES,
  TLOG_FORMAT_VERSION,
  TRIM_CLUSTER_COUNT_MAX,
} from './constants.js';
import type { ClusterIndex, ScoNumber } from './types.js';

/**
 * The TLog: the metadata journal of a vDisk. A TLog file is a sequence of fixed-size
 * 32-byte entries, each protected by its own CRC32C and numbered by its position, so a
 * crash leaves at worst a torn or damaged tail that the reader finds by position:
 * everything before it is trusted, nothing after it is. Byte layout (big-endian):
 *
 *   off size field
 *     0  u8  type: 1 WRITE, 2 TRIM, 3 SCO_SEALED, 4 SNAPSHOT, 5 SYNC
 *     1  u8  format version (1)
 *     2  u16 reserved, 0
 *     4  u32 sequence: the entry's position in its TLog (0, 1, 2, ...)
 *     8  20  payload, by type (unused bytes are 0):
 *            WRITE       8 u48 clusterIndex  14 u16 0  16 u32 scoNumber  20 u32 clusterOffset  24 u32 payload CRC32C
 *            TRIM        8 u48 firstClusterIndex  14 u16 0  16 u48 clusterCount
 *            SCO_SEALED  16 u32 scoNumber  20 u32 sizeBytes  24 u32 SCO CRC32C
 *            SNAPSHOT    8 u48 snapshotId
 *            SYNC        (none)
 *    28  u32 CRC32C of bytes 0..27
 *
 * The sequence number makes a stale entry (left by a reused or preallocated file) fail
 * even when its own CRC is intact. The README states the cost per cluster.
 */
export const TLogEntryType = {
  Write: 1,
  Trim: 2,
  ScoSealed: 3,
  Snapshot: 4,
  Sync: 5,
} as const;

export type TLogEntry =
  | {
      readonly type: 'write';
      readonly clusterIndex: ClusterIndex;
      readonly scoNumber: ScoNumber;
      /** Cluster position inside the SCO (byte offset = clusterOffset * clusterSizeBytes). */
      readonly clusterOffset: number;
      /** CRC32C of the cluster's payload. */
      readonly crc32c: number;
    }
  | {
      readonly type: 'trim';
      readonly firstClusterIndex: ClusterIndex;
      readonly clusterCount: number;
    }
  | {
      readonly type: 'scoSealed';
      readonly scoNumber: ScoNumber;
      readonly sizeBytes: number;
      /** CRC32C of the whole SCO file. */
      readonly crc32c: number;
    }
  | { readonly type: 'snapshot'; readonly snapshotId: number }
  | { readonly type: 'sync' };

const OFFSET_SEQUENCE = 4;
const OFFSET_PAYLOAD = 8;
const OFFSET_CRC = 28;

function isU32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff;
}

function checkU(value: number, max: number, what: string): void {
  assert(Number.isInteger(value) && value >= 0 && value <= max, `TLog ${what} ${value} > ${max}`);
}

/**
 * Encodes `entry` with position `sequence` into `target[offset, offset + 32)`. No
 * allocation: a TLog writer encodes a whole batch into one buffer. Out-of-range fields
 * are programmer errors (the volume validated its input).
 */
export function encodeTLogEntryInto(
  entry: TLogEntry,
  sequence: number,
  target: Buffer,
  offset: number,
): void {
  assert(isU32(sequence), `TLog sequence ${sequence} is not a u32`);
  assert(offset >= 0 && offset + TLOG_ENTRY_SIZE_BYTES <= target.length, 'TLog entry does not fit');
  const out = target.subarray(offset, offset + TLOG_ENTRY_SIZE_BYTES);
  out.fill(0);
  out[1] = TLOG_FORMAT_VERSION;
  out.writeUInt32BE(sequence, OFFSET_SEQUENCE);
  switch (entry.type) {
    case 'write':
      checkU(entry.clusterIndex, CLUSTER_INDEX_MAX, 'cluster index');
      checkU(entry.scoNumber, SCO_NUMBER_MAX, 'SCO number');
      assert(isU32(entry.clusterOffset), 'TLog cluster offset is not a u32');
      assert(isU32(entry.crc32c), 'TLog payload CRC32C is not a u32');
      out[0] = TLogEntryType.Write;
      out.writeUIntBE(entry.clusterIndex, 8, 6);
      out.writeUInt32BE(entry.scoNumber, 16);
      out.writeUInt32BE(entry.clusterOffset, 20);
      out.writeUInt32BE(entry.crc32c, 24);
      break;
    case 'trim':
      checkU(entry.firstClusterIndex, CLUSTER_INDEX_MAX, 'trim start');
      checkU(entry.clusterCount, TRIM_CLUSTER_COUNT_MAX, 'trim cluster count');
      assert(entry.clusterCount > 0, 'a TLog trim covers at least one cluster');
      assert(
        entry.firstClusterIndex + entry.clusterCount - 1 <= CLUSTER_INDEX_MAX,
        'TLog trim runs past the last cluster index',
      );
      out[0] = TLogEntryType.Trim;
      out.writeUIntBE(entry.firstClusterIndex, 8, 6);
      out.writeUIntBE(entry.clusterCount, 16, 6);
      break;
    case 'scoSealed':
      checkU(entry.scoNumber, SCO_NUMBER_MAX, 'SCO number');
      assert(isU32(entry.sizeBytes), 'TLog SCO size is not a u32');
      assert(isU32(entry.crc32c), 'TLog SCO CRC32C is not a u32');
      out[0] = TLogEntryType.ScoSealed;
      out.writeUInt32BE(entry.scoNumber, 16);
      out.writeUInt32BE(entry.sizeBytes, 20);
      out.writeUInt32BE(entry.crc32c, 24);
      break;
    case 'snapshot':
      checkU(entry.snapshotId, SNAPSHOT_ID_MAX, 'snapshot id');
      out[0] = TLogEntryType.Snapshot;
      out.writeUIntBE(entry.snapshotId, 8, 6);
      break;
    case 'sync':
      out[0] = TLogEntryType.Sync;
      break;
    default:
      unreachable(entry, 'TLog entry type');
  }
  out.writeUInt32BE(crc32c(out.subarray(0, OFFSET_CRC)), OFFSET_CRC);
}

/** Encodes one entry into a fresh 32-byte buffer. */
export function encodeTLogEntry(entry: TLogEntry, sequence: number): Buffer {
  const out = Buffer.allocUnsafe(TLOG_ENTRY_SIZE_BYTES);
  encodeTLogEntryInto(entry, sequence, out, 0);
  return out;
}

export type TLogDecodeResult =
  | { readonly ok: true; readonly entry: TLogEntry; readonly sequence: number }
  | { readonly ok: false; readonly reason: string };

/** True when `buf[from, to)` is all zero. */
function zero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i += 1) if (buf[i] !== 0) return false;
  return true;
}

/**
 * Decodes the 32-byte entry at `buf[offset, offset + 32)`. Damage (a bad CRC, an unknown
 * type or version, non-zero reserved bytes) is an answer, not an exception: the reader
 * decides what a damaged entry means.
 */
export function decodeTLogEntry(buf: Buffer, offset = 0): TLogDecodeResult {
  if (offset < 0 || offset + TLOG_ENTRY_SIZE_BYTES > buf.length) {
    return { ok: false, reason: 'torn: fewer than 32 bytes' };
  }
  const e = buf.subarray(offset, offset + TLOG_ENTRY_SIZE_BYTES);
  if (crc32c(e.subarray(0, OFFSET_CRC)) !== e.readUInt32BE(OFFSET_CRC)) {
    return { ok: false, reason: 'entry CRC32C mismatch' };
  }
  if (e[1] !== TLOG_FORMAT_VERSION) return { ok: false, reason: `unknown version ${e[1]}` };
  if (!zero(e, 2, 4)) return { ok: false, reason: 'reserved header bytes are not zero' };
  const sequence = e.readUInt32BE(OFFSET_SEQUENCE);
  let entry: TLogEntry;
  let usedFrom: number;
  let usedTo: number;
  switch (e[0]) {
    case TLogEntryType.Write:
      if (!zero(e, 14, 16)) return { ok: false, reason: 'WRITE padding is not zero' };
      entry = {
        type: 'write',
        clusterIndex: e.readUIntBE(8, 6) as ClusterIndex,
        scoNumber: e.readUInt32BE(16) as ScoNumber,
        clusterOffset: e.readUInt32BE(20),
        crc32c: e.readUInt32BE(24),
      };
      usedFrom = OFFSET_PAYLOAD;
      usedTo = OFFSET_CRC;
      break;
    case TLogEntryType.Trim: {
      if (!zero(e, 14, 16)) return { ok: false, reason: 'TRIM padding is not zero' };
      const first = e.readUIntBE(8, 6);
      const count = e.readUIntBE(16, 6);
      if (count === 0 || first + count - 1 > CLUSTER_INDEX_MAX) {
        return { ok: false, reason: `TRIM range ${first}+${count} is invalid` };
      }
      entry = { type: 'trim', firstClusterIndex: first as ClusterIndex, clusterCount: count };
      usedFrom = OFFSET_PAYLOAD;
      usedTo = 22;
      break;
    }
    case TLogEntryType.ScoSealed:
      entry = {
        type: 'scoSealed',
        scoNumber: e.readUInt32BE(16) as ScoNumber,
        sizeBytes: e.readUInt32BE(20),
        crc32c: e.readUInt32BE(24),
      };
      usedFrom = 16;
      usedTo = OFFSET_CRC;
      break;
    case TLogEntryType.Snapshot:
      entry = { type: 'snapshot', snapshotId: e.readUIntBE(8, 6) };
      usedFrom = OFFSET_PAYLOAD;
      usedTo = 14;
      break;
    case TLogEntryType.Sync:
      entry = { type: 'sync' };
      usedFrom = OFFSET_PAYLOAD;
      usedTo = OFFSET_PAYLOAD;
      break;
    default:
      return { ok: false, reason: `unknown entry type ${e[0]}` };
  }
  if (!zero(e, OFFSET_PAYLOAD, usedFrom) || !zero(e, usedTo, OFFSET_CRC)) {
    return { ok: false, reason: 'unused payload bytes are not zero' };
  }
  return { ok: true, entry, sequence };
}

/** What a TLog buffer holds: its trusted prefix and why reading stopped. */
export interface TLogReadResult {
  /** The entries of the valid prefix, in order (entry i has sequence i). */
  readonly entries: TLogEntry[];
  /** Length of the valid prefix: entries.length * 32. Truncate the file here to repair it. */
  readonly validBytes: number;
  /**
   * 'end': the buffer ends exactly after the last entry. 'torn': fewer than 32 bytes
   * follow the prefix (an interrupted append). 'damaged': a whole entry follows that
   * fails its checks (a torn sector, a flipped bit, a stale entry).
   */
  readonly stop: 'end' | 'torn' | 'damaged';
  /** Why reading stopped, for logs; undefined at 'end'. */
  readonly reason: string | undefined;
}

/**
 * Reads a whole TLog buffer: the entries up to the first torn or damaged one. Nothing
 * after the first bad entry is trusted, even if it decodes: after a crash the tail's
 * order on disk is not the order the entries were written in.
 */
export function readTLog(buf: Buffer): TLogReadResult {
  const entries: TLogEntry[] = [];
  let offset = 0;
  while (offset < buf.length) {
    if (buf.length - offset < TLOG_ENTRY_SIZE_BYTES) {
      return {
        entries,
        validBytes: offset,
        stop: 'torn',
        reason: `torn entry: ${buf.length - offset} of 32 bytes at offset ${offset}`,
      };
    }
    const result = decodeTLogEntry(buf, offset);
    const sequence = entries.length;
    if (!result.ok || result.sequence !== sequence) {
      const why = result.ok ? `sequence ${result.sequence}, expected ${sequence}` : result.reason;
      return {
        entries,
        validBytes: offset,
        stop: 'damaged',
        reason: `entry ${sequence} at offset ${offset}: ${why}`,
      };
    }
    entries.push(result.entry);
    offset += TLOG_ENTRY_SIZE_BYTES;
  }
  return { entries, validBytes: offset, stop: 'end', reason: undefined };
}
