import { assert, crc32c } from '@shale/common';
import {
  LBA_MAP_CLUSTER_OFFSET_LIMIT,
  LBA_MAP_PAGE_CLUSTERS,
  SCO_NUMBER_MAX,
} from './constants.js';

/**
 * The records of the LBA map's log (lba-log-file.ts reads and writes them; lba-map.ts says
 * when). Every record is a 16 B header and a body:
 *
 *   0 u32 magic 'LBAM'   4 u8 type   5 u8[3] zero   8 u32 body length   12 u32 CRC32C
 *
 * The CRC32C covers header bytes 4..11 and the body, so a record that passes it has the
 * length, type and body that were written. Bodies (little-endian):
 *
 *   HEADER  u32 format version                          first record of every file
 *   PAGE    u32 page index low, u16 page index high, u8 format, u8 flags, then by format:
 *           EMPTY  (nothing: the page has no mapped cluster)
 *           RUNS   u16 run count, runs of {u16 first slot, u16 length, u32 SCO, u32 word1}:
 *                  slot first+k holds (SCO, word1 + k), i.e. consecutive cluster offsets
 *           PACKED u32 SCO base, u8 SCO bytes (1-4), u8 offset bytes (1-3), u8 layer
 *                  bytes (0-1), u8 the layer when every entry has the same one, then
 *                  [bitmap of mapped slots, 128 B, unless flag FULL], then per mapped slot
 *                  SCO - base, clusterOffset + 1 and [layer], little-endian, in those
 *                  widths: 3-7 B per cluster for SCOs within 2^24 of each other
 *           DELTA  u16 count, then {u16 slot, u32 word0, u32 word1} per slot changed since
 *                  the page's previous record (word1 0: unmapped); applies on top of it
 *   TABLE   u8 layer, u8 flags, u16 zero, u32 SCO, u32 first slot, u32 slot count,
 *           [bitmap of the slots present, unless flag FULL], u32 CRC32C per present slot
 *           (a patch: sets those slots of that SCO's CRC32C table)
 *   DROP    u8 layer, u8[3] zero, u32 SCO         (the table is gone: no entry uses it)
 *   MARKER  u8 has marker, u8[3] zero, u32 length, the marker bytes (closes a checkpoint)
 *
 * A page entry in memory is two u32 words: word0 the SCO number, word1 layer << 24 |
 * (clusterOffset + 1); word1 = 0 means unmapped.
 */
export const RECORD_MAGIC = 0x4d41424c; // 'LBAM' read as a little-endian u32
export const RECORD_HEADER_BYTES = 16;
export const LOG_FORMAT_VERSION = 1;

export const RecordType = {
  Header: 1,
  Page: 2,
  Table: 3,
  Drop: 4,
  Marker: 5,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];

const PageFormat = { Empty: 0, Runs: 1, Packed: 2, Delta: 3 } as const;
const DELTA_ENTRY_BYTES = 10;
/** u32 SCO base, u8 SCO bytes, u8 offset bytes, u8 layer bytes, u8 the one layer. */
const PACKED_HEAD_BYTES = 8;
const FLAG_FULL = 1;
const PAGE_BODY_HEAD_BYTES = 8;
const PAGE_BITMAP_BYTES = LBA_MAP_PAGE_CLUSTERS / 8;
const RUN_BYTES = 12;
const TABLE_BODY_HEAD_BYTES = 16;
/** word1's offset field: 24 bits. */
export const WORD1_OFFSET_MASK = 0xff_ffff;

// Limits that depend on each other, checked when the module loads.
assert(LBA_MAP_CLUSTER_OFFSET_LIMIT < WORD1_OFFSET_MASK, 'cluster offset + 1 must fit 24 bits');
assert(
  LBA_MAP_PAGE_CLUSTERS >= 32 &&
    LBA_MAP_PAGE_CLUSTERS <= 2 ** 16 &&
    (LBA_MAP_PAGE_CLUSTERS & (LBA_MAP_PAGE_CLUSTERS - 1)) === 0,
  'page clusters: a power of two that a u16 run field can count',
);

/** The table key of (layer, SCO): layer * 2^32 + SCO, an exact integer below 2^40. */
export function tableKey(layer: number, sco: number): number {
  return layer * 2 ** 32 + sco;
}

/** A whole record (header and body) of `bodyBytes`, with its CRC32C filled in. */
export function frameRecord(type: RecordType, body: Buffer): Buffer {
  const record = Buffer.allocUnsafe(RECORD_HEADER_BYTES + body.length);
  record.writeUInt32LE(RECORD_MAGIC, 0);
  record.writeUInt32LE(type, 4); // type and three zero bytes
  record.writeUInt32LE(body.length, 8);
  body.copy(record, RECORD_HEADER_BYTES);
  record.writeUInt32LE(recordCrc(record.subarray(4, 12), body), 12);
  return record;
}

export function recordCrc(headerMiddle: Buffer, body: Buffer): number {
  return crc32c(body, crc32c(headerMiddle));
}

export function encodeHeader(): Buffer {
  const body = Buffer.alloc(4);
  body.writeUInt32LE(LOG_FORMAT_VERSION, 0);
  return frameRecord(RecordType.Header, body);
}

export function encodeMarker(meta: Buffer | undefined): Buffer {
  const body = Buffer.alloc(8 + (meta?.length ?? 0));
  body.writeUInt8(meta === undefined ? 0 : 1, 0);
  if (meta !== undefined) {
    body.writeUInt32LE(meta.length, 4);
    meta.copy(body, 8);
  }
  return frameRecord(RecordType.Marker, body);
}

export function decodeMarker(body: Buffer): Buffer | undefined {
  if (body.readUInt8(0) === 0) return undefined;
  const length = body.readUInt32LE(4);
  if (8 + length !== body.length) throw new Error('marker record of the wrong length');
  return Buffer.from(body.subarray(8));
}

export function encodeDrop(key: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt8(Math.floor(key / 2 ** 32), 0);
  body.writeUInt32LE(key % 2 ** 32, 4);
  return frameRecord(RecordType.Drop, body);
}

export function decodeDrop(body: Buffer): number {
  if (body.length !== 8) throw new Error('drop record of the wrong length');
  return tableKey(body.readUInt8(0), body.readUInt32LE(4));
}

/** Bytes needed for an unsigned value (at least 1). */
function widthOf(value: number): number {
  return value < 2 ** 8 ? 1 : value < 2 ** 16 ? 2 : value < 2 ** 24 ? 3 : 4;
}

/** The PAGE record of `entries` (2 words per slot), in the smaller of its two encodings. */
export function encodePage(pageIndex: number, entries: Uint32Array | undefined): Buffer {
  let mapped = 0;
  let runs = 0;
  let scoMin = Number.POSITIVE_INFINITY;
  let scoMax = 0;
  let word1Max = 0;
  let firstLayer = -1;
  let oneLayer = true;
  if (entries !== undefined) {
    for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
      const word1 = entries[2 * slot + 1] as number;
      if (word1 === 0) continue;
      const sco = entries[2 * slot] as number;
      const prev = slot === 0 ? 0 : (entries[2 * slot - 1] as number);
      if (!(prev !== 0 && sco === entries[2 * slot - 2] && word1 === prev + 1)) runs += 1;
      mapped += 1;
      if (sco < scoMin) scoMin = sco;
      if (sco > scoMax) scoMax = sco;
      const offsetPlusOne = word1 & WORD1_OFFSET_MASK;
      if (offsetPlusOne > word1Max) word1Max = offsetPlusOne;
      const layer = word1 >>> 24;
      if (firstLayer === -1) firstLayer = layer;
      else if (layer !== firstLayer) oneLayer = false;
    }
  }
  const full = mapped === LBA_MAP_PAGE_CLUSTERS;
  const scoBytes = mapped === 0 ? 1 : widthOf(scoMax - scoMin);
  const offsetBytes = Math.min(3, widthOf(word1Max));
  const layerBytes = oneLayer ? 0 : 1;
  const entryBytes = scoBytes + offsetBytes + layerBytes;
  const packedBytes = PACKED_HEAD_BYTES + (full ? 0 : PAGE_BITMAP_BYTES) + mapped * entryBytes;
  const runsBytes = 2 + runs * RUN_BYTES;
  const format =
    mapped === 0
      ? PageFormat.Empty
      : runsBytes <= packedBytes
        ? PageFormat.Runs
        : PageFormat.Packed;
  const bodyBytes =
    PAGE_BODY_HEAD_BYTES +
    (format === PageFormat.Empty ? 0 : format === PageFormat.Runs ? runsBytes : packedBytes);
  const body = Buffer.alloc(bodyBytes);
  body.writeUInt32LE(pageIndex % 2 ** 32, 0);
  body.writeUInt16LE(Math.floor(pageIndex / 2 ** 32), 4);
  body.writeUInt8(format, 6);
  body.writeUInt8(full && format === PageFormat.Packed ? FLAG_FULL : 0, 7);
  if (entries === undefined || format === PageFormat.Empty) {
    return frameRecord(RecordType.Page, body);
  }
  let at = PAGE_BODY_HEAD_BYTES;
  if (format === PageFormat.Runs) {
    body.writeUInt16LE(runs, at);
    at += 2;
    let runAt = -1;
    let runLength = 0;
    for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
      const word1 = entries[2 * slot + 1] as number;
      if (word1 === 0) {
        runLength = 0;
        continue;
      }
      const sco = entries[2 * slot] as number;
      if (
        runLength > 0 &&
        sco === (entries[2 * (slot - 1)] as number) &&
        word1 === (entries[2 * (slot - 1) + 1] as number) + 1
      ) {
        runLength += 1;
        body.writeUInt16LE(runLength, runAt + 2);
        continue;
      }
      runAt = at;
      runLength = 1;
      body.writeUInt16LE(slot, at);
      body.writeUInt16LE(1, at + 2);
      body.writeUInt32LE(sco, at + 4);
      body.writeUInt32LE(word1, at + 8);
      at += RUN_BYTES;
    }
  } else {
    body.writeUInt32LE(scoMin, at);
    body.writeUInt8(scoBytes, at + 4);
    body.writeUInt8(offsetBytes, at + 5);
    body.writeUInt8(layerBytes, at + 6);
    body.writeUInt8(oneLayer ? firstLayer : 0, at + 7);
    at += PACKED_HEAD_BYTES;
    const bitmapAt = at;
    if (!full) at += PAGE_BITMAP_BYTES;
    for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
      const word1 = entries[2 * slot + 1] as number;
      if (word1 === 0) continue;
      if (!full) {
        body[bitmapAt + (slot >>> 3)] =
          (body[bitmapAt + (slot >>> 3)] as number) | (1 << (slot & 7));
      }
      body.writeUIntLE((entries[2 * slot] as number) - scoMin, at, scoBytes);
      body.writeUIntLE(word1 & WORD1_OFFSET_MASK, at + scoBytes, offsetBytes);
      if (layerBytes === 1) body.writeUInt8(word1 >>> 24, at + scoBytes + offsetBytes);
      at += entryBytes;
    }
  }
  assert(at === bodyBytes, 'page record size');
  return frameRecord(RecordType.Page, body);
}

/** Bytes of the DELTA record of `changedSlots` slots. */
export function pageDeltaRecordBytes(changedSlots: number): number {
  return RECORD_HEADER_BYTES + PAGE_BODY_HEAD_BYTES + 2 + changedSlots * DELTA_ENTRY_BYTES;
}

/** The DELTA record of the slots of `entries` set in `changed` (a bitmap by slot). */
export function encodePageDelta(
  pageIndex: number,
  entries: Uint32Array,
  changed: Uint32Array,
  changedSlots: number,
): Buffer {
  const body = Buffer.alloc(pageDeltaRecordBytes(changedSlots) - RECORD_HEADER_BYTES);
  body.writeUInt32LE(pageIndex % 2 ** 32, 0);
  body.writeUInt16LE(Math.floor(pageIndex / 2 ** 32), 4);
  body.writeUInt8(PageFormat.Delta, 6);
  body.writeUInt16LE(changedSlots, PAGE_BODY_HEAD_BYTES);
  let at = PAGE_BODY_HEAD_BYTES + 2;
  for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
    if (!isSet(changed, slot)) continue;
    body.writeUInt16LE(slot, at);
    body.writeUInt32LE(entries[2 * slot] as number, at + 2);
    body.writeUInt32LE(entries[2 * slot + 1] as number, at + 6);
    at += DELTA_ENTRY_BYTES;
  }
  assert(at === body.length, 'delta record size');
  return frameRecord(RecordType.Page, body);
}

/** Slots set in a bitmap. */
export function countBits(bits: Uint32Array): number {
  let count = 0;
  for (let w = 0; w < bits.length; w += 1) {
    let v = bits[w] as number;
    v -= (v >>> 1) & 0x55555555;
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    count += (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) as number;
  }
  return count;
}

export interface DecodedPage {
  readonly pageIndex: number;
  /** The whole page (undefined: empty, or a delta). */
  readonly entries: Uint32Array | undefined;
  /** A delta: slot, word0, word1 per changed slot. */
  readonly delta: Uint32Array | undefined;
}

/** A PAGE record's page index and entries (or changes). */
export function decodePage(body: Buffer): DecodedPage {
  if (body.length < PAGE_BODY_HEAD_BYTES) throw new Error('page record too short');
  const pageIndex = body.readUInt32LE(0) + body.readUInt16LE(4) * 2 ** 32;
  const format = body.readUInt8(6);
  const full = (body.readUInt8(7) & FLAG_FULL) !== 0;
  if (format === PageFormat.Empty) return { pageIndex, entries: undefined, delta: undefined };
  if (format === PageFormat.Delta) {
    const count = body.readUInt16LE(PAGE_BODY_HEAD_BYTES);
    if (pageDeltaRecordBytes(count) - RECORD_HEADER_BYTES !== body.length) {
      throw new Error('delta record of the wrong length');
    }
    const delta = new Uint32Array(3 * count);
    for (let k = 0, at = PAGE_BODY_HEAD_BYTES + 2; k < count; k += 1, at += DELTA_ENTRY_BYTES) {
      const slot = body.readUInt16LE(at);
      const word1 = body.readUInt32LE(at + 6);
      if (slot >= LBA_MAP_PAGE_CLUSTERS) throw new Error('delta slot out of range');
      if (word1 !== 0 && (word1 & WORD1_OFFSET_MASK) === 0) throw new Error('bad delta entry');
      delta[3 * k] = slot;
      delta[3 * k + 1] = body.readUInt32LE(at + 2);
      delta[3 * k + 2] = word1;
    }
    return { pageIndex, entries: undefined, delta };
  }
  const entries = new Uint32Array(2 * LBA_MAP_PAGE_CLUSTERS);
  let at = PAGE_BODY_HEAD_BYTES;
  if (format === PageFormat.Runs) {
    const runs = body.readUInt16LE(at);
    at += 2;
    if (at + runs * RUN_BYTES !== body.length) throw new Error('page record of the wrong length');
    for (let r = 0; r < runs; r += 1, at += RUN_BYTES) {
      const first = body.readUInt16LE(at);
      const length = body.readUInt16LE(at + 2);
      const sco = body.readUInt32LE(at + 4);
      const word1 = body.readUInt32LE(at + 8);
      if (first + length > LBA_MAP_PAGE_CLUSTERS || word1 === 0) throw new Error('bad run');
      for (let k = 0; k < length; k += 1) {
        entries[2 * (first + k)] = sco;
        entries[2 * (first + k) + 1] = word1 + k;
      }
    }
    return { pageIndex, entries, delta: undefined };
  }
  if (format !== PageFormat.Packed || body.length < at + PACKED_HEAD_BYTES) {
    throw new Error(`unknown page format ${format}`);
  }
  const scoBase = body.readUInt32LE(at);
  const scoBytes = body.readUInt8(at + 4);
  const offsetBytes = body.readUInt8(at + 5);
  const layerBytes = body.readUInt8(at + 6);
  const oneLayer = body.readUInt8(at + 7);
  if (scoBytes < 1 || scoBytes > 4 || offsetBytes < 1 || offsetBytes > 3 || layerBytes > 1) {
    throw new Error('bad packed page widths');
  }
  at += PACKED_HEAD_BYTES;
  const entryBytes = scoBytes + offsetBytes + layerBytes;
  const bitmapAt = at;
  if (!full) at += PAGE_BITMAP_BYTES;
  for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
    if (!full && ((body[bitmapAt + (slot >>> 3)] as number) & (1 << (slot & 7))) === 0) continue;
    if (at + entryBytes > body.length) throw new Error('page record too short');
    const offsetPlusOne = body.readUIntLE(at + scoBytes, offsetBytes);
    const layer = layerBytes === 1 ? body.readUInt8(at + scoBytes + offsetBytes) : oneLayer;
    if (offsetPlusOne === 0) throw new Error('mapped slot without an offset');
    entries[2 * slot] = scoBase + body.readUIntLE(at, scoBytes);
    entries[2 * slot + 1] = ((layer << 24) | offsetPlusOne) >>> 0;
    at += entryBytes;
  }
  if (at !== body.length) throw new Error('page record of the wrong length');
  return { pageIndex, entries, delta: undefined };
}

/** One patch of a CRC32C table: the present slots of [firstSlot, firstSlot + slotCount). */
export interface TablePatch {
  readonly key: number;
  readonly firstSlot: number;
  readonly slotCount: number;
  /** Bit s of word s >>> 5: slot firstSlot + s is present (indexes relative to 0 of the table). */
  readonly present: Uint32Array;
  /** Indexed by slot (absolute). */
  readonly crcs: Uint32Array;
}

/** The TABLE record of slots [firstSlot, firstSlot + slotCount) of a table (absolute indexes). */
export function encodeTable(patch: TablePatch): Buffer {
  const { key, firstSlot, slotCount, present, crcs } = patch;
  assert(firstSlot + slotCount <= LBA_MAP_CLUSTER_OFFSET_LIMIT, 'table patch past the limit');
  let count = 0;
  for (let s = firstSlot; s < firstSlot + slotCount; s += 1) if (isSet(present, s)) count += 1;
  const full = count === slotCount;
  const bitmapBytes = full ? 0 : Math.ceil(slotCount / 8);
  const body = Buffer.alloc(TABLE_BODY_HEAD_BYTES + bitmapBytes + 4 * count);
  body.writeUInt8(Math.floor(key / 2 ** 32), 0);
  body.writeUInt8(full ? FLAG_FULL : 0, 1);
  body.writeUInt32LE(key % 2 ** 32, 4);
  body.writeUInt32LE(firstSlot, 8);
  body.writeUInt32LE(slotCount, 12);
  let at = TABLE_BODY_HEAD_BYTES + bitmapBytes;
  for (let s = firstSlot; s < firstSlot + slotCount; s += 1) {
    if (!isSet(present, s)) continue;
    if (!full) {
      const bit = s - firstSlot;
      const byteAt = TABLE_BODY_HEAD_BYTES + (bit >>> 3);
      body[byteAt] = (body[byteAt] as number) | (1 << (bit & 7));
    }
    body.writeUInt32LE(crcs[s] as number, at);
    at += 4;
  }
  return frameRecord(RecordType.Table, body);
}

/** Calls `set(slot, crc)` for every slot a TABLE record holds; returns its key. */
export function decodeTable(body: Buffer, set?: (slot: number, crc: number) => void): number {
  if (body.length < TABLE_BODY_HEAD_BYTES) throw new Error('table record too short');
  const layer = body.readUInt8(0);
  const full = (body.readUInt8(1) & FLAG_FULL) !== 0;
  const sco = body.readUInt32LE(4);
  const firstSlot = body.readUInt32LE(8);
  const slotCount = body.readUInt32LE(12);
  if (sco > SCO_NUMBER_MAX || firstSlot + slotCount > LBA_MAP_CLUSTER_OFFSET_LIMIT) {
    throw new Error('table record out of range');
  }
  const bitmapBytes = full ? 0 : Math.ceil(slotCount / 8);
  let at = TABLE_BODY_HEAD_BYTES + bitmapBytes;
  if (at > body.length) throw new Error('table record too short');
  for (let bit = 0; bit < slotCount; bit += 1) {
    if (!full && ((body[TABLE_BODY_HEAD_BYTES + (bit >>> 3)] as number) & (1 << (bit & 7))) === 0) {
      continue;
    }
    if (at + 4 > body.length) throw new Error('table record too short');
    set?.(firstSlot + bit, body.readUInt32LE(at));
    at += 4;
  }
  if (at !== body.length) throw new Error('table record of the wrong length');
  return tableKey(layer, sco);
}

export function isSet(bits: Uint32Array, index: number): boolean {
  return (((bits[index >>> 5] as number) >>> (index & 31)) & 1) === 1;
}
