import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { assert } from '@shale/common';
import { compressBlock, decompressBlock } from './block-compression.js';
import { type BlockCipherContext, decryptBlock, encryptBlock } from './block-encryption.js';
import { mapWithConcurrency } from './concurrency.js';
import {
  BLOCK_COMPRESSED_FLAG,
  BLOCK_ENTRY_ENCRYPTED_BYTES,
  BLOCK_ENTRY_PLAIN_BYTES,
  CODEC_BLOCK_SIZE_BYTES,
  CODEC_MAX_CONCURRENCY,
  GCM_TAG_BYTES,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { Compression, Encryption } from './preset.js';

/**
 * The stored form of a compressed and/or encrypted chunk:
 *
 *   S = blockTable || payloads
 *   blockTable = one entry per 64 KiB plaintext block, fixed size:
 *     u32 BE offsetInPayloads | u32 BE storedLength (bit 31 = compressed) | [16-byte GCM tag]
 *   payloads = block payloads back to back, in block order
 *
 * The table's size depends only on the plaintext size and on encryption, so a reader knows
 * where the entries of the blocks it wants are before it has read anything (round trip 1),
 * and where their payloads are once it has those entries (round trip 2).
 */

export interface BlockEntry {
  readonly offsetInPayloadsBytes: number;
  /** Bytes of the payload as stored (compressed size when compressed). */
  readonly storedLengthBytes: number;
  readonly compressed: boolean;
  /** GCM tag when encrypted. */
  readonly tag: Buffer | undefined;
}

export interface BlockTransform {
  readonly compression: Compression;
  readonly encryption: Encryption;
  /** Present iff encryption is on. */
  readonly cipher: BlockCipherContext | undefined;
}

export function blockCount(plainSizeBytes: number): number {
  return Math.ceil(plainSizeBytes / CODEC_BLOCK_SIZE_BYTES);
}

export function blockPlainSizeBytes(plainSizeBytes: number, blockIndex: number): number {
  return Math.min(CODEC_BLOCK_SIZE_BYTES, plainSizeBytes - blockIndex * CODEC_BLOCK_SIZE_BYTES);
}

export function blockEntryBytes(encryption: Encryption): number {
  return encryption === 'none' ? BLOCK_ENTRY_PLAIN_BYTES : BLOCK_ENTRY_ENCRYPTED_BYTES;
}

export function blockTableBytes(plainSizeBytes: number, encryption: Encryption): number {
  return blockCount(plainSizeBytes) * blockEntryBytes(encryption);
}

/** The blocks covering [offsetBytes, offsetBytes + lengthBytes) of the chunk's plaintext. */
export function coveringBlocks(
  offsetBytes: number,
  lengthBytes: number,
): { firstBlock: number; lastBlock: number } {
  assert(lengthBytes > 0, 'an empty range covers no block');
  return {
    firstBlock: Math.floor(offsetBytes / CODEC_BLOCK_SIZE_BYTES),
    lastBlock: Math.floor((offsetBytes + lengthBytes - 1) / CODEC_BLOCK_SIZE_BYTES),
  };
}

export interface EncodedBlocks {
  readonly table: Buffer;
  readonly payloads: Buffer[];
  readonly payloadsBytes: number;
  readonly compressedBlocks: number;
}

/**
 * Compresses (keeping a block compressed only if it saves 1/8) then encrypts every block
 * of `plain`, with at most CODEC_MAX_CONCURRENCY compressions in flight.
 */
export async function encodeBlocks(
  plain: Buffer,
  transform: BlockTransform,
): Promise<EncodedBlocks> {
  const count = blockCount(plain.length);
  const entryBytes = blockEntryBytes(transform.encryption);
  assert(
    (transform.encryption === 'none') === (transform.cipher === undefined),
    'cipher iff encryption',
  );
  const compressed = await mapWithConcurrency(
    Array.from({ length: count }, (_, i) => i),
    CODEC_MAX_CONCURRENCY,
    async (blockIndex) => {
      const start = blockIndex * CODEC_BLOCK_SIZE_BYTES;
      const block = plain.subarray(start, start + CODEC_BLOCK_SIZE_BYTES);
      return compressBlock(transform.compression, block);
    },
  );
  const table = Buffer.alloc(count * entryBytes);
  const payloads: Buffer[] = [];
  let offset = 0;
  let compressedBlocks = 0;
  for (let blockIndex = 0; blockIndex < count; blockIndex++) {
    const start = blockIndex * CODEC_BLOCK_SIZE_BYTES;
    const packed = compressed[blockIndex];
    let payload = packed ?? plain.subarray(start, start + CODEC_BLOCK_SIZE_BYTES);
    if (packed !== undefined) compressedBlocks++;
    const lengthField = (payload.length | (packed !== undefined ? BLOCK_COMPRESSED_FLAG : 0)) >>> 0;
    const entry = blockIndex * entryBytes;
    table.writeUInt32BE(offset, entry);
    table.writeUInt32BE(lengthField, entry + 4);
    if (transform.cipher !== undefined) {
      const { ciphertext, tag } = encryptBlock(transform.cipher, blockIndex, lengthField, payload);
      tag.copy(table, entry + BLOCK_ENTRY_PLAIN_BYTES);
      payload = ciphertext;
      // AES-GCM runs on this thread: let other requests in every 4 MiB.
      if (blockIndex % 64 === 63) await yieldToEventLoop();
    }
    payloads.push(payload);
    offset += payload.length;
  }
  return { table, payloads, payloadsBytes: offset, compressedBlocks };
}

/** Parses `count` table entries starting at block `firstBlock`, from their bytes. */
export function parseBlockEntries(
  bytes: Buffer,
  firstBlock: number,
  count: number,
  plainSizeBytes: number,
  payloadsBytes: number,
  encryption: Encryption,
  where: string,
): BlockEntry[] {
  const entryBytes = blockEntryBytes(encryption);
  assert(bytes.length === count * entryBytes, 'table bytes must cover the entries exactly');
  const entries: BlockEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * entryBytes;
    const offsetInPayloadsBytes = bytes.readUInt32BE(at);
    const field = bytes.readUInt32BE(at + 4);
    const compressed = (field & BLOCK_COMPRESSED_FLAG) !== 0;
    const storedLengthBytes = (field & ~BLOCK_COMPRESSED_FLAG) >>> 0;
    const plain = blockPlainSizeBytes(plainSizeBytes, firstBlock + i);
    const previous = entries[i - 1];
    const sane =
      storedLengthBytes > 0 &&
      (compressed ? storedLengthBytes < plain : storedLengthBytes === plain) &&
      offsetInPayloadsBytes + storedLengthBytes <= payloadsBytes &&
      (previous === undefined ||
        previous.offsetInPayloadsBytes + previous.storedLengthBytes === offsetInPayloadsBytes);
    if (!sane) {
      throw proxyError(
        ProxyErrorCode.Corrupt,
        `${where}: block table entry ${firstBlock + i} is inconsistent (offset ${offsetInPayloadsBytes}, length ${storedLengthBytes}, compressed ${compressed})`,
      );
    }
    const tag =
      encryption === 'none'
        ? undefined
        : bytes.subarray(
            at + BLOCK_ENTRY_PLAIN_BYTES,
            at + BLOCK_ENTRY_PLAIN_BYTES + GCM_TAG_BYTES,
          );
    entries.push({ offsetInPayloadsBytes, storedLengthBytes, compressed, tag });
  }
  return entries;
}

/** Byte range of the payloads (relative to the start of payloads) of consecutive entries. */
export function payloadsSpan(entries: readonly BlockEntry[]): {
  offsetBytes: number;
  lengthBytes: number;
} {
  const first = entries[0];
  const last = entries[entries.length - 1];
  assert(first !== undefined && last !== undefined, 'payloadsSpan needs entries');
  return {
    offsetBytes: first.offsetInPayloadsBytes,
    lengthBytes: last.offsetInPayloadsBytes + last.storedLengthBytes - first.offsetInPayloadsBytes,
  };
}

/**
 * Decodes blocks firstBlock.. (their entries and the payload bytes that span them) and
 * copies plaintext [offsetBytes, offsetBytes + lengthBytes) of the chunk into `out` at
 * outOffsetBytes. Every tag is checked before any byte of its block is used.
 */
export async function decodeBlocksInto(
  entries: readonly BlockEntry[],
  firstBlock: number,
  payloads: Buffer,
  plainSizeBytes: number,
  transform: BlockTransform,
  offsetBytes: number,
  lengthBytes: number,
  out: Buffer,
  outOffsetBytes: number,
  where: string,
): Promise<void> {
  const base = entries[0]?.offsetInPayloadsBytes ?? 0;
  await mapWithConcurrency(entries, CODEC_MAX_CONCURRENCY, async (entry, i) => {
    const blockIndex = firstBlock + i;
    const blockWhere = `${where} block ${blockIndex}`;
    const start = entry.offsetInPayloadsBytes - base;
    let payload = payloads.subarray(start, start + entry.storedLengthBytes);
    const field = (entry.storedLengthBytes | (entry.compressed ? BLOCK_COMPRESSED_FLAG : 0)) >>> 0;
    if (transform.cipher !== undefined) {
      assert(entry.tag !== undefined, 'encrypted entries carry a tag');
      payload = decryptBlock(transform.cipher, blockIndex, field, payload, entry.tag, blockWhere);
    }
    const blockPlain = blockPlainSizeBytes(plainSizeBytes, blockIndex);
    const plain = entry.compressed
      ? await decompressBlock(transform.compression, payload, blockPlain, blockWhere)
      : payload;
    const blockStart = blockIndex * CODEC_BLOCK_SIZE_BYTES;
    const from = Math.max(offsetBytes, blockStart);
    const to = Math.min(offsetBytes + lengthBytes, blockStart + blockPlain);
    if (to > from)
      plain.copy(out, outOffsetBytes + (from - offsetBytes), from - blockStart, to - blockStart);
  });
}
