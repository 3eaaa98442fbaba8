/** Every limit and default of the ASD, with its unit. */

/** Longest key accepted. ALBA fragment keys are namespace/object/chunk/fragment ids: ~100 bytes. */
export const MAX_KEY_BYTES = 1024;
/** Largest single value. Fragments are at most fragmentSizeMaxBytes (4 MiB default, 64 MiB max). */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024;
/** Most items (objects, keys or slices) in one call. */
export const MAX_ITEMS_PER_CALL = 1024;
/** Largest Put call (sum of values) and largest answer we build for Get/GetRanges. */
export const MAX_CALL_BYTES = 128 * 1024 * 1024;
/** gRPC message ceiling: a full call plus room for keys and framing. */
export const MAX_GRPC_MESSAGE_BYTES = MAX_CALL_BYTES + 4 * 1024 * 1024;
/** Put bytes being written at once; past this a Put is refused with ASD_BUSY (retryable). */
export const MAX_INFLIGHT_PUT_BYTES = 1024 * 1024 * 1024;
/** Checksum block: every value carries one CRC32C per block, so ranged gets verify only what they read. */
export const BLOCK_SIZE_BYTES = 64 * 1024;
/** Values up to this size live inside the LevelDB index; larger ones are files. See README. */
export const INLINE_MAX_BYTES = 64 * 1024;
/** Value files are spread over this many sub-directories of objects/. */
export const FAN_OUT_DIRS = 256;
/** File ids jump by this much at every start, past any id an interrupted run may have used. */
export const FILE_ID_RESTART_GAP = 2 ** 20;
/** Default and ceiling of List's page size. */
export const LIST_DEFAULT_LIMIT = 1000;
export const LIST_MAX_LIMIT = 10_000;
/** Reserve kept free on the file system by default: 1% of it, within these bounds. */
export const RESERVE_FRACTION = 0.01;
export const RESERVE_MIN_BYTES = 32 * 1024 * 1024;
export const RESERVE_MAX_BYTES = 4 * 1024 * 1024 * 1024;
/**
 * A put's space check reuses a statfs at most this old (less the bytes admitted since)...
 */
export const STATFS_REUSE_MS = 250;
/**
 * ...when at least this much would stay free above the reserve after it: room for what
 * other writers on the same file system (the other ASDs) write within STATFS_REUSE_MS.
 * Closer to full, every put does its own statfs.
 */
export const STATFS_REUSE_MARGIN_BYTES = 1024 * 1024 * 1024;
/** Jobs (Put or Delete calls) folded into one LevelDB fsync at most. */
export const MAX_JOBS_PER_COMMIT = 256;
/** Decoded index records kept in memory (~300 B each for a 4 MiB value): spares LevelDB lookups. */
export const RECORD_CACHE_ENTRIES = 65_536;
/** Value files kept open for reads. */
export const OPEN_FILES_MAX = 512;
/** Reusable read buffers for small slices (each two checksum blocks). */
export const SCRATCH_BUFFERS_MAX = 64;
/** Client: deadline of every call unless the caller gives one. */
export const CLIENT_DEFAULT_DEADLINE_MS = 10_000;
/** Client: tries of an idempotent call on a transport failure (first try included). */
export const CLIENT_MAX_ATTEMPTS = 3;
export const CLIENT_RETRY_BACKOFF_MS = 50;
/** On-disk format version written into the identity file. */
export const FORMAT_VERSION = 1;
export const ASD_VERSION = '0.1.0';
/**
 * Value files at least this large are written with O_DIRECT (from an aligned staging
 * buffer, then fdatasync): on this VM a buffered write + fdatasync costs ~3 ms of CPU per
 * MiB (page-cache copy and writeback in the caller), O_DIRECT ~0.3 ms with the copy into
 * the staging buffer. Smaller files are cheaper buffered.
 */
export const DIRECT_WRITE_MIN_BYTES = 256 * 1024;
/** O_DIRECT offsets, lengths and buffer addresses are multiples of this (any 512 B or 4 KiB disk). */
export const DIRECT_WRITE_ALIGN_BYTES = 4096;
/** One staging buffer; a larger value is written through it in pieces of this size. */
export const DIRECT_WRITE_BUFFER_BYTES = 4 * 1024 * 1024;
/** Staging buffers at most (memory: this x DIRECT_WRITE_BUFFER_BYTES); past it writes are buffered. */
export const DIRECT_WRITE_BUFFERS_MAX = 16;
/**
 * Data protocol (data-server.ts): the largest frame payload, a whole call plus room for the
 * index and keys (1,024 x (12 B + 1 KiB) ~ 1 MiB), as on gRPC.
 */
export const DATA_MAX_PAYLOAD_BYTES = MAX_CALL_BYTES + 4 * 1024 * 1024;
/** Bytes one data connection may hold (requests being served, replies unsent) before it is not read. */
export const DATA_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
/**
 * Data protocol: request payloads of at least this many bytes (fragment puts) are received
 * into reused buffers (common's PayloadPool), not a fresh allocation each...
 */
export const DATA_POOLED_PAYLOAD_MIN_BYTES = 256 * 1024;
/** ...of which at most this many bytes wait for reuse. */
export const DATA_PAYLOAD_POOL_FREE_MAX_BYTES = 128 * 1024 * 1024;
/** Data client: request and expected reply bytes in flight on its one connection. */
export const DATA_CLIENT_MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024;
/** Data client: connecting and the HELLO exchange, at most. */
export const DATA_CLIENT_CONNECT_TIMEOUT_MS = 3000;
