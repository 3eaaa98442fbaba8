import { assert, crc32c, crc32cCombine } from '@shale/common';

/**
 * What the index knows of one object, encoded compactly (a 4 MiB value with 64 KiB
 * checksum blocks costs 32 + 64 * 4 = 288 bytes of index):
 *
 *   u8  version (1)          u8  flags (bit 0: value inline)     u16 reserved
 *   u32 blockSizeBytes       u48 sizeBytes                       u48 fileId (0 when inline)
 *   u32 crc32c of the value  u32 block count n                   u32 x n block CRC32Cs
 *   [value bytes, when inline]
 *   u32 CRC32C of everything before it
 *
 * The trailing CRC protects the record itself: LevelDB does not verify checksums on
 * every read, and a damaged file id must never send a read to another object's file.
 */
export interface ObjectRecord {
  readonly sizeBytes: number;
  readonly blockSizeBytes: number;
  readonly crc32c: number;
  readonly blockCrcs: Uint32Array;
  /** The value when it is stored inline; undefined when it lives in file `fileId`. */
  readonly inline: Buffer | undefined;
  readonly fileId: number;
}

const VERSION = 1;
const FLAG_INLINE = 1;
const HEADER_BYTES = 28;

export function encodeRecord(record: ObjectRecord): Buffer {
  const inlineBytes = record.inline?.length ?? 0;
  const blocks = record.blockCrcs.length;
  const out = Buffer.allocUnsafe(HEADER_BYTES + 4 * blocks + inlineBytes + 4);
  out[0] = VERSION;
  out[1] = record.inline === undefined ? 0 : FLAG_INLINE;
  out.writeUInt16BE(0, 2);
  out.writeUInt32BE(record.blockSizeBytes, 4);
  out.writeUIntBE(record.sizeBytes, 8, 6);
  out.writeUIntBE(record.fileId, 14, 6);
  out.writeUInt32BE(record.crc32c, 20);
  out.writeUInt32BE(blocks, 24);
  let offset = HEADER_BYTES;
  for (const crc of record.blockCrcs) {
    out.writeUInt32BE(crc, offset);
    offset += 4;
  }
  if (record.inline !== undefined) {
    record.inline.copy(out, offset);
    offset += inlineBytes;
  }
  out.writeUInt32BE(crc32c(out.subarray(0, offset)), offset);
  return out;
}

/** Decodes a record; returns undefined when it fails its own checksum (the index is damaged). */
export function decodeRecord(buf: Buffer): ObjectRecord | undefined {
  if (buf.length < HEADER_BYTES + 4) return undefined;
  const body = buf.subarray(0, buf.length - 4);
  if (crc32c(body) !== buf.readUInt32BE(buf.length - 4)) return undefined;
  assert(buf[0] === VERSION, `index record version ${buf[0]} is not supported`);
  const inline = ((buf[1] as number) & FLAG_INLINE) !== 0;
  const blockSizeBytes = buf.readUInt32BE(4);
  const sizeBytes = buf.readUIntBE(8, 6);
  const fileId = buf.readUIntBE(14, 6);
  const crc = buf.readUInt32BE(20);
  const blocks = buf.readUInt32BE(24);
  const blockCrcs = new Uint32Array(blocks);
  let offset = HEADER_BYTES;
  for (let i = 0; i < blocks; i += 1) {
    blockCrcs[i] = buf.readUInt32BE(offset);
    offset += 4;
  }
  const value = inline ? buf.subarray(offset, offset + sizeBytes) : undefined;
  if (inline && value?.length !== sizeBytes) return undefined;
  return { sizeBytes, blockSizeBytes, crc32c: crc, blockCrcs, inline: value, fileId };
}

/**
 * Per-block CRC32Cs and the whole-value CRC32C, in one pass over the value: the whole is
 * combined from the blocks' checksums (crc32cCombine), not computed over the bytes again.
 */
export function checksumValue(
  value: Uint8Array,
  blockSizeBytes: number,
): { crc32c: number; blockCrcs: Uint32Array } {
  const blocks = Math.ceil(value.length / blockSizeBytes);
  const blockCrcs = new Uint32Array(blocks);
  let whole = 0;
  for (let i = 0; i < blocks; i += 1) {
    const block = value.subarray(
      i * blockSizeBytes,
      Math.min((i + 1) * blockSizeBytes, value.length),
    );
    const crc = crc32c(block);
    blockCrcs[i] = crc;
    whole = i === 0 ? crc : crc32cCombine(whole, crc, block.length);
  }
  return { crc32c: whole, blockCrcs };
}
