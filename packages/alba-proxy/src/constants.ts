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

// ---- The proxy engine (proxy-engine.ts, namespace-manager.ts, backend-registry.ts) ----

/** Manifest encoding format (the first byte of every stored manifest). */
export const MANIFEST_FORMAT_VERSION = 1;
/** Distinct OSDs one manifest's OSD table can name (one byte per fragment; 0xff = missing). */
export const MANIFEST_MAX_OSDS = 255;
/** Longest object name, in bytes (printable ASCII). */
export const OBJECT_NAME_MAX_BYTES = 512;
/** Longest backend, OSD or preset id in the registry, in bytes. */
export const REGISTRY_ID_MAX_BYTES = 128;
/** OSDs of one backend created in one txn (the KV's 128 ops per txn, minus the backend's own). */
export const BACKEND_CREATE_MAX_OSDS = 100;

/** How long the engine trusts its OSD states (alive, free bytes) before probing again. */
export const OSD_STATE_TTL_MS = 2_000;
/** Deadline of one capacity probe: a dead OSD costs at most this, once per TTL, in the background. */
export const OSD_PROBE_DEADLINE_MS = 1_000;
/** How long namespace records and presets are cached by the engine. */
export const NAMESPACE_CACHE_TTL_MS = 2_000;
/** Deadline of one putFragments call. */
export const FRAGMENT_WRITE_DEADLINE_MS = 10_000;
/** Deadline of one getFragments / getFragmentRanges call. */
export const FRAGMENT_READ_DEADLINE_MS = 5_000;
/** Deadline of one list or delete call to an OSD (namespace deletion, cleanup). */
export const OSD_ADMIN_DEADLINE_MS = 10_000;
/**
 * Hedge: a read that an OSD has not answered after HEDGE_BASE_MS + bytes / HEDGE_BYTES_PER_MS
 * is treated as unavailable and the read is re-planned around it (parity), as long as
 * enough other fragments remain. 50 ms is ~100 loopback round trips; 64 KiB/ms = 64 MB/s
 * is a slow disk's streaming rate, so a large slice is not hedged merely for being large.
 */
export const READ_HEDGE_BASE_MS = 50;
export const READ_HEDGE_BYTES_PER_MS = 64 * 1024;

/** putFragments calls in flight per object put. */
export const PUT_WRITE_CONCURRENCY = 8;
/** A failed fragment write is retried on another OSD at most this many times. */
export const PUT_REROUTE_MAX_ATTEMPTS = 2;
/** Object puts in progress per engine; more wait (up to PUT_MAX_QUEUED), then PROXY_BUSY. */
export const PUT_MAX_CONCURRENT = 8;
export const PUT_MAX_QUEUED = 256;
/**
 * Puts whose last fragments are still being written after the acknowledgement. When full,
 * a put waits for all its fragments before acknowledging (backpressure, not memory).
 */
export const BACKGROUND_MAX_TASKS = 64;
/** Slices of one readRanges call read at once. */
export const READ_SLICE_CONCURRENCY = 16;
/** Slices in one readRanges call, and their total bytes. */
export const READ_MAX_SLICES = 4096;
export const READ_MAX_TOTAL_BYTES = 256 * 1024 * 1024;
/** Manifests cached in memory for readRanges (LRU, by namespace and object name). */
export const MANIFEST_CACHE_MAX_ENTRIES = 10_000;
/** Fragment cache fills in flight (best effort; skipped when full). */
export const CACHE_FILL_MAX_IN_FLIGHT = 16;
/**
 * Object versions taken from a namespace's counter at once and handed out from memory
 * (one KV round trip per this many puts; a restart skips what was left, never reuses it).
 */
export const PUT_VERSION_RANGE_COUNT = 64;
/** Namespaces whose version ranges are kept (LRU); a dropped range only leaves a gap. */
export const VERSION_RANGES_MAX_NAMESPACES = 4096;
/**
 * Once every chunk has c fragments durable, a put waits this fraction of the time its
 * writes took so far (at most PUT_COMPLETE_GRACE_MAX_MS) for the rest, so that one commit
 * records them all: a late fragment costs a second KV transaction.
 */
export const PUT_COMPLETE_GRACE_RATIO = 0.5;
export const PUT_COMPLETE_GRACE_MAX_MS = 100;
/** Attempts of a compare-and-swap loop (manifest commit, epoch bump) before giving up. */
export const CAS_MAX_ATTEMPTS = 32;
/** Keys per list page and delete call when deleting a namespace or an object's fragments. */
export const OSD_LIST_PAGE_KEYS = 1000;
/** Objects listed per listObjects page, at most (the KV's own maximum is 10 000). */
export const LIST_OBJECTS_MAX_LIMIT = 1000;

// ---- Maintenance (maintenance.ts): repair, completion, orphan collection ----

/** Bytes read plus written per second by maintenance (token bucket, burst of one second). */
export const MAINTENANCE_REPAIR_BYTES_PER_SEC = 50 * 1024 * 1024;
/** A fragment in no manifest is deleted only after staying an orphan this long (in-flight puts). */
export const MAINTENANCE_ORPHAN_GRACE_MS = 10 * 60 * 1000;
/** An active OSD that has not answered for this long counts as lost: its fragments are rebuilt. */
export const MAINTENANCE_OSD_DOWN_GRACE_MS = 15 * 60 * 1000;
/** Objects repaired at once. */
export const MAINTENANCE_REPAIR_CONCURRENCY = 4;
/** Objects classified before their repairs run (danger-first order holds within a batch). */
export const MAINTENANCE_SCAN_BATCH_OBJECTS = 10_000;
/** Manifests read per KV range page while scanning. */
export const MAINTENANCE_MANIFEST_PAGE = 1000;
/** Fragment keys listed per OSD per window of orphan collection (each window re-reads manifests). */
export const MAINTENANCE_ORPHAN_LIST_KEYS = 10_000;
/** Pause between maintenance passes of the loop runner. */
export const MAINTENANCE_INTERVAL_MS = 60_000;
/** A pass that reads every fragment (verify) runs at most this often in the loop runner. */
export const MAINTENANCE_VERIFY_INTERVAL_MS = 24 * 60 * 60 * 1000;
/** Unrecoverable objects listed in one pass summary (the count is kept beyond it). */
export const MAINTENANCE_MAX_REPORTED_UNRECOVERABLE = 1000;
/** Compare-and-swap attempts of one manifest update by maintenance. */
export const MAINTENANCE_CAS_ATTEMPTS = 4;
/**
 * An OSD client asks its ASD's stats for the data protocol port at most this often, when
 * it has none (an ASD without a data server, or one whose data connection failed); the
 * calls in between go over gRPC.
 */
export const OSD_DATA_REDISCOVER_MS = 5000;
/** Deadline of that stats call (within the deadline of the bulk call that made it). */
export const OSD_DATA_DISCOVER_DEADLINE_MS = 2000;
