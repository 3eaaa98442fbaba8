import { createRequire } from 'node:module';
import { assert } from '@shale/common';
import { CODER_SHARD_ALIGN_BYTES } from './constants.js';

/**
 * The seam around @ronomon/reed-solomon (Cauchy Reed-Solomon as a bit matrix, native, runs
 * on libuv's thread pool). Its shards must be contiguous in one data buffer (k shards) and
 * one parity buffer (m shards), each a multiple of 8 bytes.
 *
 * Partial decoding. The coder is not position-wise byte by byte: a shard of S bytes is cut
 * into super-blocks of w * chunkSize bytes (w = its Galois field width, 2, 4 or 8), and in a
 * super-block packet j stands for bit j. chunkSize depends on S (the coder shrinks it to stay
 * in cache; binding.c dot_chunk_size, reproduced in coderChunkSizeBytes). So the same bytes
 * [a, b) of k shards rebuild [a, b) of the others only when [a, b) is made of whole
 * super-blocks of the full shard, and the coder is called with a shard size for which it
 * picks the same chunkSize (one super-block at a time always does; larger runs are checked).
 * Two cases are byte-wise and need only 8-byte alignment: k = 1 (replication) and a single
 * missing shard among the first k + 1 rebuilt from the others (plain XOR with parity 0).
 * Tests of partial decodes against full decodes guard this against a coder change; the
 * version is pinned exactly.
 */

interface ReedSolomonBinding {
  readonly MAX_K: number;
  readonly MAX_M: number;
  create(k: number, m: number): Buffer;
  encode(
    context: Buffer,
    sources: number,
    targets: number,
    buffer: Buffer,
    bufferOffset: number,
    bufferSize: number,
    parity: Buffer,
    parityOffset: number,
    paritySize: number,
    end: (error: Error | undefined | null) => void,
  ): void;
}

const require = createRequire(import.meta.url);
const binding = require('@ronomon/reed-solomon') as ReedSolomonBinding;

interface CoderContext {
  readonly context: Buffer;
  /** Galois field width in bits: the coder's super-block is w * chunkSize bytes. */
  readonly w: number;
}

const contexts = new Map<string, CoderContext>();

function coderContext(k: number, m: number): CoderContext {
  assert(m >= 1, 'the coder is only used when m >= 1');
  const key = `${k}/${m}`;
  let ctx = contexts.get(key);
  if (ctx === undefined) {
    const context = binding.create(k, m);
    ctx = { context, w: context[0] as number };
    contexts.set(key, ctx);
  }
  return ctx;
}

/** The coder's packet size for a shard of shardSizeBytes (binding.c dot_chunk_size). */
export function coderChunkSizeBytes(w: number, k: number, shardSizeBytes: number): number {
  assert(shardSizeBytes % w === 0, 'shard size must be a multiple of w');
  let chunkSize = shardSizeBytes / w;
  while (chunkSize > 64 && chunkSize % 2 === 0 && (1 + k * w) * chunkSize > 1_048_576) {
    chunkSize /= 2;
  }
  return chunkSize;
}

/**
 * The fragment size for at least minSizeBytes per fragment: a multiple of 8 (the coder's
 * rule) whose super-block (w * chunkSize) is a multiple of 8 too, so that a range made of
 * whole super-blocks is itself a valid shard for the coder. Odd packet sizes happen when
 * the coder's halving stops on an odd number (for (8,2), 8 MiB + 5 bytes gives 131073);
 * the search moves up by 8 bytes at a time and costs at most a few KiB of padding
 * (measured worst: 8 KiB on a 63 MiB fragment). A power-of-two-ish fragmentSizeMaxBytes
 * already qualifies, so full chunks keep F = fragmentSizeMaxBytes.
 */
export function coderFragmentSizeBytes(k: number, m: number, minSizeBytes: number): number {
  let size = Math.max(
    CODER_SHARD_ALIGN_BYTES,
    Math.ceil(minSizeBytes / CODER_SHARD_ALIGN_BYTES) * CODER_SHARD_ALIGN_BYTES,
  );
  if (m === 0 || k === 1) return size;
  const { w } = coderContext(k, m);
  while ((w * coderChunkSizeBytes(w, k, size)) % CODER_SHARD_ALIGN_BYTES !== 0) {
    size += CODER_SHARD_ALIGN_BYTES;
  }
  return size;
}

function mask(indices: readonly number[]): number {
  let bits = 0;
  for (const i of indices) bits |= 1 << i;
  return bits >>> 0;
}

/** True when the coder rebuilds `targets` from `sources` byte by byte (see above). */
function isBytewise(k: number, sources: readonly number[], targets: readonly number[]): boolean {
  if (k === 1) return true;
  if (targets.length !== 1) return false;
  const firstK1 = (1 << (k + 1)) - 1;
  return (
    (targets[0] as number) <= k && sources.filter((s) => ((1 << s) & firstK1) !== 0).length === k
  );
}

/**
 * The alignment, in shard bytes, of a range of a shard of fragmentSizeBytes that can be
 * rebuilt on its own from the same range of `sources`.
 */
export function decodeUnitBytes(
  k: number,
  m: number,
  fragmentSizeBytes: number,
  sources: readonly number[],
  targets: readonly number[],
): number {
  if (isBytewise(k, sources, targets)) return CODER_SHARD_ALIGN_BYTES;
  const { w } = coderContext(k, m);
  return w * coderChunkSizeBytes(w, k, fragmentSizeBytes);
}

function runCoder(
  ctx: CoderContext,
  sources: number,
  targets: number,
  data: Buffer,
  parity: Buffer,
): Promise<void> {
  return new Promise((resolve, reject) => {
    binding.encode(
      ctx.context,
      sources,
      targets,
      data,
      0,
      data.length,
      parity,
      0,
      parity.length,
      (error) => {
        if (error) reject(error);
        else resolve();
      },
    );
  });
}

/**
 * Computes the m parity shards of `data` (k shards of shardSizeBytes, back to back).
 * Returns one buffer of m * shardSizeBytes; parity shard j is its j-th slice.
 */
export async function encodeParity(
  k: number,
  m: number,
  data: Buffer,
  shardSizeBytes: number,
): Promise<Buffer> {
  assert(data.length === k * shardSizeBytes, 'data must be k shards');
  assert(shardSizeBytes > 0 && shardSizeBytes % CODER_SHARD_ALIGN_BYTES === 0, 'bad shard size');
  const parity = Buffer.allocUnsafe(m * shardSizeBytes);
  const targets: number[] = [];
  for (let j = 0; j < m; j++) targets.push(k + j);
  await runCoder(
    coderContext(k, m),
    mask(Array.from({ length: k }, (_, i) => i)),
    mask(targets),
    data,
    parity,
  );
  return parity;
}

/**
 * Rebuilds `targets` from `sources` (exactly k shard indices whose bytes are given in
 * `shards`, all the same length: a range [a, a + length) of the full shards, aligned to
 * decodeUnitBytes). `fullShardSizeBytes` is the size of the whole fragment, which fixes the
 * coder's super-block. Returns the rebuilt shards, in the order of `targets`.
 */
export async function reconstructShards(
  k: number,
  m: number,
  fullShardSizeBytes: number,
  shards: readonly (Buffer | undefined)[],
  sources: readonly number[],
  targets: readonly number[],
): Promise<Buffer[]> {
  assert(sources.length === k, `need exactly k=${k} sources, got ${sources.length}`);
  assert(targets.length >= 1 && targets.length <= m, 'need 1..m targets');
  const first = shards[sources[0] as number];
  assert(first !== undefined, 'source shard missing');
  const length = first.length;
  assert(length > 0 && length % CODER_SHARD_ALIGN_BYTES === 0, 'bad range length');
  const ctx = coderContext(k, m);
  const data = Buffer.alloc(k * length);
  const parity = Buffer.alloc(m * length);
  for (const s of sources) {
    const shard = shards[s];
    assert(
      shard !== undefined && shard.length === length,
      `source shard ${s} missing or of another size`,
    );
    shard.copy(s < k ? data : parity, (s < k ? s : s - k) * length);
  }
  const sourceMask = mask(sources);
  const targetMask = mask(targets);
  const bytewise = isBytewise(k, sources, targets);
  const unit = bytewise ? length : ctx.w * coderChunkSizeBytes(ctx.w, k, fullShardSizeBytes);
  assert(
    length % unit === 0,
    `range length ${length} is not a multiple of the decode unit ${unit}`,
  );
  const sameLayout = bytewise || coderChunkSizeBytes(ctx.w, k, length) * ctx.w === unit;
  if (sameLayout) {
    await runCoder(ctx, sourceMask, targetMask, data, parity);
  } else {
    // Super-block by super-block, each a coder call of its own: the coder would otherwise
    // pick a larger packet for this length than it used for the whole fragment.
    const pieceData = Buffer.alloc(k * unit);
    const pieceParity = Buffer.alloc(m * unit);
    for (let offset = 0; offset < length; offset += unit) {
      for (let i = 0; i < k; i++)
        data.copy(pieceData, i * unit, i * length + offset, i * length + offset + unit);
      for (let j = 0; j < m; j++)
        parity.copy(pieceParity, j * unit, j * length + offset, j * length + offset + unit);
      await runCoder(ctx, sourceMask, targetMask, pieceData, pieceParity);
      for (const t of targets) {
        const [from, to] = t < k ? [pieceData, data] : [pieceParity, parity];
        const index = t < k ? t : t - k;
        from.copy(to, index * length + offset, index * unit, index * unit + unit);
      }
    }
  }
  return targets.map((t) =>
    t < k
      ? data.subarray(t * length, (t + 1) * length)
      : parity.subarray((t - k) * length, (t - k + 1) * length),
  );
}
