import { randomBytes } from 'node:crypto';
import { assert, crc32c, isShaleError } from '@shale/common';
import {
  type BlockEntry,
  type BlockTransform,
  blockCount,
  blockEntryBytes,
  blockTableBytes,
  coveringBlocks,
  decodeBlocksInto,
  encodeBlocks,
  parseBlockEntries,
  payloadsSpan,
} from './block-table.js';
import {
  assemble,
  decodeStored,
  fragmentSizeFor,
  planRead,
  type ReadPlan,
  type StripeLayout,
  stripeChunk,
} from './chunk-format.js';
import { chunkSizeMaxBytes, chunkSpans } from './chunking.js';
import { mapWithConcurrency } from './concurrency.js';
import {
  CODEC_CHUNK_CONCURRENCY,
  FRAGMENT_SIZE_ALIGN_BYTES,
  FRAGMENT_SIZE_MAX_BYTES,
  FRAGMENT_SIZE_MIN_BYTES,
  MAX_DATA_FRAGMENTS,
  MAX_PARITY_FRAGMENTS,
  NONCE_PREFIX_BYTES,
  READ_MAX_ROUNDS,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { KeyProvider } from './key-provider.js';
import type { Compression, Encryption } from './preset.js';

/**
 * The object codec: an object's bytes <-> its chunks and fragments. No network, no
 * metadata store. The pipeline, in order (STYLE.md rule 5):
 *
 *   encodeObject:  CRC32C(object) -> chunk (k * fragmentSizeMax) -> per chunk:
 *                  [per 64 KiB block: compress -> encrypt -> block table] -> pad ->
 *                  cut into k data fragments -> m parity fragments -> CRC32C per fragment
 *   decodeChunk:   verify fragment CRCs -> rebuild missing data fragments -> S ->
 *                  [per block: check tag + decrypt -> decompress]
 *   readRange:     object range -> chunk ranges -> per chunk: fragment slices (+ table
 *                  entries first when compressed/encrypted) -> decode only what is missing
 */

/** How an object is coded: the policy's k and m and the preset's transforms. */
export interface CodecParams {
  readonly k: number;
  readonly m: number;
  readonly fragmentSizeMaxBytes: number;
  readonly compression: Compression;
  readonly encryption: Encryption;
}

export interface EncodeOptions extends CodecParams {
  /** Required when encryption is on: the object is encrypted with its current key. */
  readonly keyProvider?: KeyProvider;
  /**
   * The object's identity, bound into every block's GCM tag (the proxy passes namespace +
   * object name). The codec appends the chunk and block index itself. Ignored without
   * encryption; reads must pass the same bytes.
   */
  readonly aad: Buffer;
}

/** What the manifest keeps per chunk (see README "Manifest budget"). */
export interface ChunkInfo {
  readonly plainSizeBytes: number;
  /** len(S): the plaintext, or blockTable || payloads when compressed/encrypted. */
  readonly storedSizeBytes: number;
  /** Every fragment of the chunk has this size: fragmentSizeFor(storedSizeBytes, k, m). */
  readonly fragmentSizeBytes: number;
  /** 8 random bytes, the first part of every block's GCM nonce; only when encrypted. */
  readonly nonce?: Buffer;
  /** How many blocks were stored compressed; only when compression is on (statistics). */
  readonly compressedBlocks?: number;
  /** CRC32C of each of the k + m fragments. */
  readonly fragmentCrcs: readonly number[];
}

export interface EncodedChunk extends ChunkInfo {
  /** k data then m parity fragments; data fragments may be views of the caller's buffer. */
  readonly fragments: readonly Buffer[];
}

/** Everything decoding needs; what the proxy keeps in the manifest besides placement. */
export interface ObjectCodecInfo extends CodecParams {
  readonly sizeBytes: number;
  /** CRC32C of the whole plaintext object. */
  readonly objectCrc32c: number;
  /** The key the object was encrypted with; only when encrypted. */
  readonly keyId?: string;
  readonly chunks: readonly ChunkInfo[];
}

export interface EncodedObject extends ObjectCodecInfo {
  readonly chunks: readonly EncodedChunk[];
}

/** Context for reading: the same key provider and AAD the object was written with. */
export interface DecodeContext {
  readonly keyProvider?: KeyProvider;
  readonly aad: Buffer;
}

function badArgument(message: string): never {
  throw proxyError(ProxyErrorCode.BadArgument, message);
}

function checkParams(params: CodecParams): void {
  const { k, m, fragmentSizeMaxBytes: f } = params;
  if (!Number.isSafeInteger(k) || k < 1 || k > MAX_DATA_FRAGMENTS)
    badArgument(`k must be in 1..${MAX_DATA_FRAGMENTS}, got ${k}`);
  if (!Number.isSafeInteger(m) || m < 0 || m > MAX_PARITY_FRAGMENTS)
    badArgument(`m must be in 0..${MAX_PARITY_FRAGMENTS}, got ${m}`);
  if (
    !Number.isSafeInteger(f) ||
    f < FRAGMENT_SIZE_MIN_BYTES ||
    f > FRAGMENT_SIZE_MAX_BYTES ||
    f % FRAGMENT_SIZE_ALIGN_BYTES !== 0
  ) {
    badArgument(
      `fragmentSizeMaxBytes must be a multiple of ${FRAGMENT_SIZE_ALIGN_BYTES} in ${FRAGMENT_SIZE_MIN_BYTES}..${FRAGMENT_SIZE_MAX_BYTES}, got ${f}`,
    );
  }
}

function isTransformed(params: CodecParams): boolean {
  return params.compression !== 'none' || params.encryption !== 'none';
}

/** The stripe layout of chunk `chunkIndex` of an object. */
export function chunkLayout(info: ObjectCodecInfo, chunkIndex: number): StripeLayout {
  const chunk = info.chunks[chunkIndex];
  if (chunk === undefined)
    badArgument(`chunk ${chunkIndex} does not exist (${info.chunks.length} chunks)`);
  return {
    k: info.k,
    m: info.m,
    fragmentSizeBytes: chunk.fragmentSizeBytes,
    storedSizeBytes: chunk.storedSizeBytes,
  };
}

async function transformFor(
  params: CodecParams,
  keyProvider: KeyProvider | undefined,
  keyId: string | undefined,
  aad: Buffer,
  chunkIndex: number,
  nonce: Buffer | undefined,
): Promise<BlockTransform> {
  if (params.encryption === 'none') {
    return { compression: params.compression, encryption: 'none', cipher: undefined };
  }
  if (keyProvider === undefined) badArgument('encryption is on but no key provider was given');
  if (keyId === undefined)
    throw proxyError(ProxyErrorCode.Corrupt, 'encrypted object info has no keyId');
  if (nonce === undefined || nonce.length !== NONCE_PREFIX_BYTES) {
    throw proxyError(ProxyErrorCode.Corrupt, `chunk ${chunkIndex} has no valid nonce`);
  }
  const key = await keyProvider.getKey(keyId);
  return {
    compression: params.compression,
    encryption: params.encryption,
    cipher: { key, noncePrefix: nonce, aad, chunkIndex },
  };
}

/**
 * Encodes a whole object into chunks and fragments. The returned data fragments of an
 * uncompressed, unencrypted chunk that fills k * F exactly are views of `data`: keep
 * `data` unchanged until the fragments are stored.
 */
export async function encodeObject(data: Buffer, options: EncodeOptions): Promise<EncodedObject> {
  checkParams(options);
  if (options.encryption !== 'none' && options.keyProvider === undefined) {
    badArgument('encryption is on but no key provider was given');
  }
  const keyId = options.encryption === 'none' ? undefined : options.keyProvider?.currentKeyId();
  const spans = chunkSpans(data.length, options.k, options.fragmentSizeMaxBytes);
  const chunks = await mapWithConcurrency(spans, CODEC_CHUNK_CONCURRENCY, async (span) => {
    const plain = data.subarray(
      span.objectOffsetBytes,
      span.objectOffsetBytes + span.plainSizeBytes,
    );
    return encodeChunk(plain, span.chunkIndex, options, keyId);
  });
  const info: EncodedObject = {
    k: options.k,
    m: options.m,
    fragmentSizeMaxBytes: options.fragmentSizeMaxBytes,
    compression: options.compression,
    encryption: options.encryption,
    sizeBytes: data.length,
    objectCrc32c: crc32c(data),
    chunks,
    ...(keyId === undefined ? {} : { keyId }),
  };
  return info;
}

async function encodeChunk(
  plain: Buffer,
  chunkIndex: number,
  options: EncodeOptions,
  keyId: string | undefined,
): Promise<EncodedChunk> {
  const { k, m } = options;
  if (!isTransformed(options)) {
    const f = fragmentSizeFor(plain.length, k, m);
    let padded = plain;
    if (plain.length !== k * f) {
      padded = Buffer.alloc(k * f);
      plain.copy(padded);
    }
    const striped = await stripeChunk(
      { k, m, fragmentSizeBytes: f, storedSizeBytes: plain.length },
      padded,
    );
    return {
      plainSizeBytes: plain.length,
      storedSizeBytes: plain.length,
      fragmentSizeBytes: f,
      fragmentCrcs: striped.fragmentCrcs,
      fragments: striped.fragments,
    };
  }
  const nonce = options.encryption === 'none' ? undefined : randomBytes(NONCE_PREFIX_BYTES);
  const transform = await transformFor(
    options,
    options.keyProvider,
    keyId,
    options.aad,
    chunkIndex,
    nonce,
  );
  const blocks = await encodeBlocks(plain, transform);
  const storedSizeBytes = blocks.table.length + blocks.payloadsBytes;
  const f = fragmentSizeFor(storedSizeBytes, k, m);
  const padded = Buffer.allocUnsafe(k * f);
  let at = blocks.table.copy(padded, 0);
  for (const payload of blocks.payloads) at += payload.copy(padded, at);
  assert(at === storedSizeBytes, 'stored chunk size mismatch');
  padded.fill(0, at);
  const striped = await stripeChunk({ k, m, fragmentSizeBytes: f, storedSizeBytes }, padded);
  return {
    plainSizeBytes: plain.length,
    storedSizeBytes,
    fragmentSizeBytes: f,
    ...(nonce === undefined ? {} : { nonce }),
    ...(options.compression === 'none' ? {} : { compressedBlocks: blocks.compressedBlocks }),
    fragmentCrcs: striped.fragmentCrcs,
    fragments: striped.fragments,
  };
}

/** The object info without the fragment bytes: what goes into the manifest. */
export function objectInfoOf(encoded: EncodedObject): ObjectCodecInfo {
  return {
    ...encoded,
    chunks: encoded.chunks.map(({ fragments: _fragments, ...info }) => info),
  };
}

export interface ChunkDecode {
  readonly plaintext: Buffer;
  /** Fragments given whose size or CRC32C was wrong (treated as missing): repair them. */
  readonly badFragments: readonly number[];
}

/**
 * Decodes one whole chunk from its fragments (k + m entries, undefined where not
 * available). Every given fragment is verified against its CRC32C first; any k good ones
 * suffice. PROXY_NOT_ENOUGH_FRAGMENTS below k, PROXY_CORRUPT on a failed tag.
 */
export async function decodeChunk(
  info: ObjectCodecInfo,
  chunkIndex: number,
  fragments: readonly (Buffer | undefined)[],
  ctx: DecodeContext,
): Promise<ChunkDecode> {
  const layout = chunkLayout(info, chunkIndex);
  const chunk = info.chunks[chunkIndex] as ChunkInfo;
  const { stored, badFragments } = await decodeStored(layout, fragments, chunk.fragmentCrcs);
  if (!isTransformed(info)) return { plaintext: stored, badFragments };
  const transform = await transformFor(
    info,
    ctx.keyProvider,
    info.keyId,
    ctx.aad,
    chunkIndex,
    chunk.nonce,
  );
  const tableBytes = blockTableBytes(chunk.plainSizeBytes, info.encryption);
  const count = blockCount(chunk.plainSizeBytes);
  const where = `chunk ${chunkIndex}`;
  const entries = parseBlockEntries(
    stored.subarray(0, tableBytes),
    0,
    count,
    chunk.plainSizeBytes,
    chunk.storedSizeBytes - tableBytes,
    info.encryption,
    where,
  );
  const plaintext = Buffer.allocUnsafe(chunk.plainSizeBytes);
  await decodeBlocksInto(
    entries,
    0,
    stored.subarray(tableBytes),
    chunk.plainSizeBytes,
    transform,
    0,
    chunk.plainSizeBytes,
    plaintext,
    0,
    where,
  );
  return { plaintext, badFragments };
}

/**
 * Decodes a whole object (fragmentsPerChunk[chunk][fragment]) and checks the object's
 * CRC32C. Returns the bad fragments per chunk for repair.
 */
export async function decodeObject(
  info: ObjectCodecInfo,
  fragmentsPerChunk: readonly (readonly (Buffer | undefined)[])[],
  ctx: DecodeContext,
): Promise<{ data: Buffer; badFragments: readonly (readonly number[])[] }> {
  if (fragmentsPerChunk.length !== info.chunks.length) {
    badArgument(
      `expected fragments of ${info.chunks.length} chunks, got ${fragmentsPerChunk.length}`,
    );
  }
  const decoded = await mapWithConcurrency(
    fragmentsPerChunk,
    CODEC_CHUNK_CONCURRENCY,
    (fragments, i) => decodeChunk(info, i, fragments, ctx),
  );
  const data =
    decoded.length === 1
      ? (decoded[0] as ChunkDecode).plaintext
      : Buffer.concat(
          decoded.map((d) => d.plaintext),
          info.sizeBytes,
        );
  if (data.length !== info.sizeBytes || crc32c(data) !== info.objectCrc32c) {
    throw proxyError(ProxyErrorCode.Corrupt, 'decoded object does not match its size or CRC32C');
  }
  return { data, badFragments: decoded.map((d) => d.badFragments) };
}

/** One chunk's share of an object range. */
export interface RangePiece {
  readonly chunkIndex: number;
  readonly offsetInChunkBytes: number;
  readonly lengthBytes: number;
  /** Where these bytes go in the requested range. */
  readonly outputOffsetBytes: number;
}

/** Splits [offsetBytes, offsetBytes + lengthBytes) of the object at chunk boundaries. */
export function planRange(
  info: ObjectCodecInfo,
  offsetBytes: number,
  lengthBytes: number,
): RangePiece[] {
  if (
    !Number.isSafeInteger(offsetBytes) ||
    !Number.isSafeInteger(lengthBytes) ||
    offsetBytes < 0 ||
    lengthBytes < 0 ||
    offsetBytes + lengthBytes > info.sizeBytes
  ) {
    badArgument(
      `range ${offsetBytes}+${lengthBytes} is outside the object of ${info.sizeBytes} bytes`,
    );
  }
  const step = chunkSizeMaxBytes(info.k, info.fragmentSizeMaxBytes);
  const pieces: RangePiece[] = [];
  let at = offsetBytes;
  const end = offsetBytes + lengthBytes;
  while (at < end) {
    const chunkIndex = Math.floor(at / step);
    const offsetInChunkBytes = at - chunkIndex * step;
    const length = Math.min(end - at, step - offsetInChunkBytes);
    pieces.push({
      chunkIndex,
      offsetInChunkBytes,
      lengthBytes: length,
      outputOffsetBytes: at - offsetBytes,
    });
    at += length;
  }
  return pieces;
}

/** A byte range of one fragment that readRange wants; the proxy maps it to an ASD GetRanges item. */
export interface FragmentRead {
  readonly chunkIndex: number;
  readonly fragmentIndex: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/**
 * The I/O seam of readRange: fetch all reads of one round (batch them per ASD). Answer each
 * with its bytes (exactly lengthBytes), or undefined when that fragment cannot be read
 * (OSD down, not found, ASD_CORRUPT): readRange then plans around it.
 */
export type FetchFragments = (
  reads: readonly FragmentRead[],
) => Promise<readonly (Buffer | undefined)[]>;

export interface ReadRangeOptions extends DecodeContext {
  readonly fetch: FetchFragments;
  /** Whether a fragment is worth asking for (placed, OSD believed up). Default: all. */
  readonly isAvailable?: (chunkIndex: number, fragmentIndex: number) => boolean;
}

type Step = 'direct' | 'table' | 'payload';

interface ChunkRead {
  readonly piece: RangePiece;
  readonly layout: StripeLayout;
  readonly chunk: ChunkInfo;
  readonly available: boolean[];
  step: Step;
  storedOffsetBytes: number;
  storedLengthBytes: number;
  entries: BlockEntry[];
  /** Data fragments whose bytes were used as is (suspects when a tag fails). */
  readonly usedDirectly: Set<number>;
  /** After a failed tag: the fragments to try excluding, and how many were tried. */
  suspects: number[] | undefined;
  suspectTry: number;
  corruptError: Error | undefined;
  done: boolean;
}

function startStep(read: ChunkRead, transformed: boolean, encryption: Encryption): void {
  const { piece } = read;
  if (!transformed) {
    read.step = 'direct';
    read.storedOffsetBytes = piece.offsetInChunkBytes;
    read.storedLengthBytes = piece.lengthBytes;
    return;
  }
  const { firstBlock, lastBlock } = coveringBlocks(piece.offsetInChunkBytes, piece.lengthBytes);
  const entryBytes = blockEntryBytes(encryption);
  read.step = 'table';
  read.storedOffsetBytes = firstBlock * entryBytes;
  read.storedLengthBytes = (lastBlock - firstBlock + 1) * entryBytes;
}

/**
 * Reads [offsetBytes, offsetBytes + lengthBytes) of an object: one fetch round when
 * uncompressed and unencrypted, two otherwise (block table entries, then payloads), all
 * chunks of the range in the same rounds. Only covering data fragments are read; parity is
 * read and decoded only for a data fragment that is unavailable. A fetch answered with
 * undefined re-plans that chunk without the fragment. After a failed tag or an
 * inconsistent block table the chunk is re-read without each data fragment that was used
 * directly, one at a time (rebuilding it from parity); when none helps it is PROXY_CORRUPT:
 * wrong bytes are never returned.
 */
export async function readRange(
  info: ObjectCodecInfo,
  offsetBytes: number,
  lengthBytes: number,
  options: ReadRangeOptions,
): Promise<Buffer> {
  const pieces = planRange(info, offsetBytes, lengthBytes);
  if (pieces.length === 0) return Buffer.alloc(0);
  const transformed = isTransformed(info);
  const total = info.k + info.m;
  const reads: ChunkRead[] = pieces.map((piece) => {
    const read: ChunkRead = {
      piece,
      layout: chunkLayout(info, piece.chunkIndex),
      chunk: info.chunks[piece.chunkIndex] as ChunkInfo,
      available: Array.from(
        { length: total },
        (_, i) => options.isAvailable?.(piece.chunkIndex, i) ?? true,
      ),
      step: 'direct',
      storedOffsetBytes: 0,
      storedLengthBytes: 0,
      entries: [],
      usedDirectly: new Set(),
      suspects: undefined,
      suspectTry: 0,
      corruptError: undefined,
      done: false,
    };
    startStep(read, transformed, info.encryption);
    return read;
  });
  const single = reads.length === 1 && !transformed;
  let out: Buffer | undefined = single ? undefined : Buffer.allocUnsafe(lengthBytes);
  const transforms = new Map<number, BlockTransform>();
  for (const read of reads) {
    if (transformed) {
      const i = read.piece.chunkIndex;
      transforms.set(
        i,
        await transformFor(info, options.keyProvider, info.keyId, options.aad, i, read.chunk.nonce),
      );
    }
  }
  for (let round = 0; reads.some((r) => !r.done); round++) {
    assert(round < READ_MAX_ROUNDS, 'readRange must converge: every retry removes a fragment');
    const active = reads.filter((r) => !r.done);
    const plans: ReadPlan[] = active.map((r) => {
      try {
        return planRead(r.layout, r.storedOffsetBytes, r.storedLengthBytes, r.available);
      } catch (err) {
        // Out of fragments while working around a failed tag: the damage is the answer.
        if (r.corruptError !== undefined && isShaleError(err, ProxyErrorCode.NotEnoughFragments)) {
          throw r.corruptError;
        }
        throw err;
      }
    });
    const requests: FragmentRead[] = [];
    active.forEach((r, i) => {
      for (const slice of (plans[i] as ReadPlan).slices)
        requests.push({ chunkIndex: r.piece.chunkIndex, ...slice });
    });
    const answers = await options.fetch(requests);
    if (answers.length !== requests.length) {
      badArgument(`fetch answered ${answers.length} reads of ${requests.length}`);
    }
    let next = 0;
    await Promise.all(
      active.map(async (read, i) => {
        const plan = plans[i] as ReadPlan;
        const mine = answers.slice(next, next + plan.slices.length);
        next += plan.slices.length;
        const unavailable = plan.slices
          .filter((_, j) => mine[j] === undefined)
          .map((s) => s.fragmentIndex);
        if (unavailable.length > 0) {
          for (const f of unavailable) read.available[f] = false;
          return;
        }
        const bytes = await assemble(read.layout, plan, mine as Buffer[]);
        for (const slice of plan.slices)
          if (slice.fragmentIndex < info.k) read.usedDirectly.add(slice.fragmentIndex);
        try {
          out = await advance(info, read, bytes, transforms.get(read.piece.chunkIndex), out);
        } catch (err) {
          if (!isShaleError(err, ProxyErrorCode.Corrupt)) throw err;
          read.corruptError ??= err;
          // Which fragment lied is unknown: retry without each suspect in turn (the data
          // fragments whose bytes were used as they came), rebuilding it from the others.
          if (read.suspects === undefined)
            read.suspects = [...read.usedDirectly].sort((a, b) => a - b);
          const previous = read.suspects[read.suspectTry - 1];
          if (previous !== undefined) read.available[previous] = true;
          const next = read.suspects[read.suspectTry];
          read.suspectTry++;
          if (next === undefined || read.available.filter(Boolean).length - 1 < info.k) {
            throw read.corruptError;
          }
          read.available[next] = false;
          read.usedDirectly.clear();
          startStep(read, transformed, info.encryption);
        }
      }),
    );
  }
  assert(out !== undefined, 'readRange produced its output');
  return out;
}

/** Moves one chunk read past the step whose bytes just arrived; returns the output buffer. */
async function advance(
  info: ObjectCodecInfo,
  read: ChunkRead,
  bytes: Buffer,
  transform: BlockTransform | undefined,
  out: Buffer | undefined,
): Promise<Buffer> {
  const { piece, chunk } = read;
  const where = `chunk ${piece.chunkIndex}`;
  if (read.step === 'direct') {
    read.done = true;
    if (out === undefined) return bytes;
    bytes.copy(out, piece.outputOffsetBytes);
    return out;
  }
  assert(
    transform !== undefined && out !== undefined,
    'transformed reads have a transform and an output',
  );
  const tableBytes = blockTableBytes(chunk.plainSizeBytes, info.encryption);
  const { firstBlock, lastBlock } = coveringBlocks(piece.offsetInChunkBytes, piece.lengthBytes);
  if (read.step === 'table') {
    read.entries = parseBlockEntries(
      bytes,
      firstBlock,
      lastBlock - firstBlock + 1,
      chunk.plainSizeBytes,
      chunk.storedSizeBytes - tableBytes,
      info.encryption,
      where,
    );
    const span = payloadsSpan(read.entries);
    read.step = 'payload';
    read.storedOffsetBytes = tableBytes + span.offsetBytes;
    read.storedLengthBytes = span.lengthBytes;
    return out;
  }
  await decodeBlocksInto(
    read.entries,
    firstBlock,
    bytes,
    chunk.plainSizeBytes,
    transform,
    piece.offsetInChunkBytes,
    piece.lengthBytes,
    out,
    piece.outputOffsetBytes,
    where,
  );
  read.done = true;
  return out;
}
