/** Every limit and default of the ALBA proxy's object codec, with its unit. */

/** Largest k the erasure coder (@ronomon/reed-solomon 6.0.0, MAX_K) supports. */
export const MAX_DATA_FRAGMENTS = 24;
/** Largest m the erasure coder (MAX_M) supports. So k + m <= 30 (the spec allowed up to 32). */
export const MAX_PARITY_FRAGMENTS = 6;
/** Most fragments a chunk can have: MAX_DATA_FRAGMENTS + MAX_PARITY_FRAGMENTS. */
export const MAX_FRAGMENTS = MAX_DATA_FRAGMENTS + MAX_PARITY_FRAGMENTS;

/** fragmentSizeMaxBytes of a preset is a multiple of this, within [min, max] below. */
export const FRAGMENT_SIZE_ALIGN_BYTES = 64 * 1024;
export const FRAGMENT_SIZE_MIN_BYTES = 64 * 1024;
export const FRAGMENT_SIZE_MAX_BYTES = 64 * 1024 * 1024;
/**
 * Largest fragment an ASD stores (@shale/asd MAX_VALUE_BYTES). A compressed or encrypted
 * chunk carries a block table, so its fragments may exceed fragmentSizeMaxBytes by
 * tableBytes / k; a preset whose worst case would pass this is refused.
 */
export const STORED_FRAGMENT_MAX_BYTES = 64 * 1024 * 1024;
/** The default fragmentSizeMaxBytes (DESIGN.md: 4 MiB). */
export const DEFAULT_FRAGMENT_SIZE_MAX_BYTES = 4 * 1024 * 1024;

/** The coder needs every shard to be a multiple of this many bytes. */
export const CODER_SHARD_ALIGN_BYTES = 8;
/** Block jobs (compress/decompress) in flight per chunk, and coder calls per object. */
export const CODEC_MAX_CONCURRENCY = 8;

/** A compressed or encrypted chunk is cut into blocks of this many plaintext bytes. */
export const CODEC_BLOCK_SIZE_BYTES = 64 * 1024;
/** A compressed block is kept only if it saves at least 1/COMPRESSION_MIN_SAVING_DIVISOR. */
export const COMPRESSION_MIN_SAVING_DIVISOR = 8;
/** zstd level: 3 is zstd's own default, the usual speed/ratio point for block storage. */
export const ZSTD_LEVEL = 3;
/** Bit 31 of a block's storedLength says the payload is compressed. */
export const BLOCK_COMPRESSED_FLAG = 0x8000_0000;

/** AES-256-GCM: key, nonce and tag sizes. */
export const KEY_BYTES = 32;
export const GCM_NONCE_BYTES = 12;
export const GCM_TAG_BYTES = 16;
/** Random part of the nonce, one per chunk (stored in the chunk info); the rest is the block index. */
export const NONCE_PREFIX_BYTES = 8;

/** Block table entry: u32 offsetInPayloads, u32 storedLength|flag, then the GCM tag when encrypted. */
export const BLOCK_ENTRY_PLAIN_BYTES = 8;
export const BLOCK_ENTRY_ENCRYPTED_BYTES = BLOCK_ENTRY_PLAIN_BYTES + GCM_TAG_BYTES;

/** Manifest budget (estimateManifestInfoBytes): a 64 MiB SCO's manifest should stay below this. */
export const MANIFEST_TARGET_BYTES = 2048;
/** Chunks of one object encoded at once (each holds k * F + m * F bytes while in flight). */
export const CODEC_CHUNK_CONCURRENCY = 4;
/**
 * Fetch rounds of one ranged read, at most: 2 per attempt, a new attempt per fragment found
 * unavailable (<= k + m) and per suspect retried after a failed tag (<= k). An assertion.
 */
export const READ_MAX_ROUNDS = 2 * (2 * MAX_FRAGMENTS + 1);
