import { assert } from '@shale/common';

/**
 * Chunking, as in ALBA: chunks = ceil(objectSize / min(k * fragmentSizeMax, objectSize)).
 * Every chunk but the last holds exactly k * fragmentSizeMaxBytes plaintext bytes, so chunk
 * i starts at i * k * fragmentSizeMaxBytes and an object offset maps to a chunk by division.
 * An empty object has 0 chunks (the formula is 0/0 there): its manifest holds only the size
 * (0) and the checksum (CRC32C of nothing = 0), and nothing is stored on any OSD.
 */
export function chunkSizeMaxBytes(k: number, fragmentSizeMaxBytes: number): number {
  assert(k >= 1 && fragmentSizeMaxBytes >= 1, 'chunking needs k >= 1 and a positive fragment size');
  return k * fragmentSizeMaxBytes;
}

export function chunkCount(sizeBytes: number, k: number, fragmentSizeMaxBytes: number): number {
  assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, `bad object size ${sizeBytes}`);
  if (sizeBytes === 0) return 0;
  return Math.ceil(sizeBytes / Math.min(chunkSizeMaxBytes(k, fragmentSizeMaxBytes), sizeBytes));
}

export interface ChunkSpan {
  readonly chunkIndex: number;
  /** Where the chunk starts in the object. */
  readonly objectOffsetBytes: number;
  readonly plainSizeBytes: number;
}

/** The byte span of every chunk of an object of sizeBytes. */
export function chunkSpans(
  sizeBytes: number,
  k: number,
  fragmentSizeMaxBytes: number,
): ChunkSpan[] {
  const count = chunkCount(sizeBytes, k, fragmentSizeMaxBytes);
  const step = chunkSizeMaxBytes(k, fragmentSizeMaxBytes);
  const spans: ChunkSpan[] = [];
  for (let chunkIndex = 0; chunkIndex < count; chunkIndex++) {
    const objectOffsetBytes = chunkIndex * step;
    spans.push({
      chunkIndex,
      objectOffsetBytes,
      plainSizeBytes: Math.min(step, sizeBytes - objectOffsetBytes),
    });
  }
  return spans;
}
