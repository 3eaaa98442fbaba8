import { chunkCount } from './chunking.js';
import { NONCE_PREFIX_BYTES } from './constants.js';
import type { CodecParams } from './object-codec.js';

/**
 * The byte budget of an object's manifest, for a compact binary encoding (the proxy owns
 * the real encoding; this is the yardstick it should meet). Per object: size (varint, <= 9),
 * object CRC32C (4), k, m, compression + encryption (3), fragmentSizeMax in 64 KiB units
 * (varint, <= 2), key id when encrypted (1 + its length; ours are 18 characters), a write
 * epoch/version (varint, <= 9), and a table of the distinct OSDs used (<= k + m entries,
 * each 1 + osdIdBytes). Per chunk: plainSize and storedSize (varints, <= 5 each), the nonce
 * when encrypted (8), compressedBlocks when compressed (varint, <= 3), and per fragment its
 * CRC32C (4) and an index into the OSD table (1). fragmentSizeBytes is not stored: it is
 * align8(ceil(storedSize / k)). Fragment keys are not stored either: they are derived from
 * (namespace, object, version, chunk, fragment).
 */
export interface ManifestBudgetInput extends CodecParams {
  readonly sizeBytes: number;
  /** Bytes of one OSD id in the manifest's OSD table (16 for a binary uuid). */
  readonly osdIdBytes?: number;
  readonly keyIdBytes?: number;
}

export interface ManifestBudget {
  readonly chunks: number;
  readonly objectBytes: number;
  readonly perChunkBytes: number;
  readonly totalBytes: number;
}

export function estimateManifestInfoBytes(input: ManifestBudgetInput): ManifestBudget {
  const fragments = input.k + input.m;
  const osdIdBytes = input.osdIdBytes ?? 16;
  const keyIdBytes = input.encryption === 'none' ? 0 : 1 + (input.keyIdBytes ?? 18);
  const chunks = chunkCount(input.sizeBytes, input.k, input.fragmentSizeMaxBytes);
  const objectBytes = 9 + 4 + 3 + 2 + keyIdBytes + 9 + fragments * (1 + osdIdBytes);
  const perChunkBytes =
    5 +
    5 +
    (input.encryption === 'none' ? 0 : NONCE_PREFIX_BYTES) +
    (input.compression === 'none' ? 0 : 3) +
    fragments * (4 + 1);
  return { chunks, objectBytes, perChunkBytes, totalBytes: objectBytes + chunks * perChunkBytes };
}
