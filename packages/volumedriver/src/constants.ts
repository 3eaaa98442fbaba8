/** Every limit and default of the volumedriver, with its unit. */

const MiB = 1024 * 1024;

/** The unit of the LBA map and of a TLog WRITE entry (per vPool; 4 KiB by default). */
export const CLUSTER_SIZE_BYTES = 4096;
/** Smallest and largest cluster size a vPool may choose (powers of two in between). */
export const CLUSTER_SIZE_MIN_BYTES = 512;
export const CLUSTER_SIZE_MAX_BYTES = 64 * 1024;

/** SCO (Storage Container Object) size: 64 MiB by default, 4..128 MiB allowed (a multiple of the cluster size). */
export const SCO_SIZE_DEFAULT_BYTES = 64 * MiB;
export const SCO_SIZE_MIN_BYTES = 4 * MiB;
export const SCO_SIZE_MAX_BYTES = 128 * MiB;
/** Highest SCO number: the TLog stores it as a u32. 2^32 SCOs of 4 MiB is 16 PiB per vDisk. */
export const SCO_NUMBER_MAX = 0xffff_ffff;
/** Hex digits in a SCO file name (`0000002a.sco`): enough for SCO_NUMBER_MAX. */
export const SCO_FILE_NAME_HEX_DIGITS = 8;
/**
 * Most SCO seals (fsync, close) running behind the write lane at once; past it the lane
 * waits for the oldest. Recovery may find this many SCOs plus the open one unsealed.
 */
export const SCO_SEALS_IN_BACKGROUND_MAX = 2;
/** Most clusters appended to a SCO in one call (one writev): 1 MiB of 4 KiB clusters. */
export const SCO_APPEND_MAX_CLUSTERS = 256;
/**
 * A SCO being written starts an fdatasync in the background (not awaited by the lane) each
 * time another 1/SCO_WRITEBACK_STEPS of it is written, so that the seal's own fdatasync,
 * which the write lane waits for, finds little left to write back.
 */
export const SCO_WRITEBACK_STEPS = 4;
/** Most clusters read from a SCO in one call (one pread). */
export const SCO_READ_MAX_CLUSTERS = 256;

/** Highest cluster index: u48 in the TLog and the LBA map. 2^48 clusters of 4 KiB is 1 EiB. */
export const CLUSTER_INDEX_MAX = 2 ** 48 - 1;
/** Highest snapshot id and TRIM cluster count: u48 in the TLog. */
export const SNAPSHOT_ID_MAX = 2 ** 48 - 1;
export const TRIM_CLUSTER_COUNT_MAX = 2 ** 48 - 1;

/** Size of every TLog entry (fixed, so a torn tail is found by position). See README. */
export const TLOG_ENTRY_SIZE_BYTES = 32;
/** TLog format version, in every entry. */
export const TLOG_FORMAT_VERSION = 1;
/** A TLog is rolled after this many sealed SCOs (Open vStorage's tlog_multiplier: 20). */
export const TLOG_SCOS_PER_TLOG = 20;
/**
 * Most entries in one TLog file: every cluster of TLOG_SCOS_PER_TLOG SCOs of the largest
 * size at the smallest cluster size, plus room for trims and markers. 5.25 Mi entries of
 * 32 B: a TLog never exceeds 168 MiB, and a default one (20 x 64 MiB / 4 KiB) is ~10 MiB.
 */
export const TLOG_ENTRIES_PER_TLOG_MAX =
  (TLOG_SCOS_PER_TLOG * SCO_SIZE_MAX_BYTES) / CLUSTER_SIZE_MIN_BYTES + 2 ** 18;

/**
 * The LBA map (lba-map.ts) is an in-memory map of pages: each page covers this many
 * consecutive clusters, 8 B per cluster (a Uint32Array of 2 words each), created when first
 * written and dropped when empty. 1024 clusters = 8 KiB per page = 4 MiB of vDisk at 4 KiB.
 */
export const LBA_MAP_PAGE_CLUSTERS = 1024;
/** Bytes of one LBA map entry in memory: u32 SCO number, u8 layer << 24 | u24 clusterOffset + 1. */
export const LBA_MAP_ENTRY_SIZE_BYTES = 8;
/**
 * Cluster offsets a map entry can hold (0..limit-1): the largest SCO at the smallest
 * cluster size, 128 MiB / 512 B = 256 Ki. Stored + 1 in 24 bits (0 = unmapped).
 */
export const LBA_MAP_CLUSTER_OFFSET_LIMIT = SCO_SIZE_MAX_BYTES / CLUSTER_SIZE_MIN_BYTES;
/**
 * Memory for the per-SCO CRC32C tables of the LBA map, per vDisk (4 B per cluster slot of a
 * SCO the map still points into): past it, tables persisted in the map's log are dropped
 * from memory (least recently used first) and read back on demand. 64 MiB holds the tables
 * of 1,024 SCOs of 64 MiB at 4 KiB (a 64 GiB vDisk).
 */
export const LBA_MAP_CRC_CACHE_BYTES = 64 * MiB;
/** Most CRC32C tables (one per SCO) kept in memory per LBA map (option `cacheEntries`). */
export const LBA_MAP_CACHE_ENTRIES = 65_536;
/**
 * A checkpoint of the LBA map (dirty pages and CRC32C tables appended to its log, then a
 * marker record) starts in the background once this many pages are dirty (2 MiB)...
 */
export const LBA_MAP_CHECKPOINT_DIRTY_PAGES = 256;
/** ...or this long after the first change since the last checkpoint. */
export const LBA_MAP_CHECKPOINT_INTERVAL_MS = 1000;
/**
 * Back-pressure: applies wait for the running checkpoint while more pages than this are
 * dirty (32 MiB; a checkpoint holds the pages it writes, so memory stays under 2x this).
 */
export const LBA_MAP_DIRTY_PAGES_MAX = 4096;
/**
 * The map's log is compacted (a full checkpoint to a new file, renamed over) when it is
 * more than this many times its live size (the newest record of each page and table)...
 */
export const LBA_MAP_COMPACT_RATIO = 2;
/** ...and larger than this (a small log is not worth rewriting). */
export const LBA_MAP_COMPACT_MIN_BYTES = 4 * MiB;
/**
 * A CRC32C table is persisted as patches (the slots set since the last checkpoint); after
 * this many patches the next checkpoint writes it whole, so reading it back stays cheap.
 */
export const LBA_MAP_CRC_TABLE_RECORDS_MAX = 8;
/** Most bytes in one write (and one read) of the LBA map's log. */
export const LBA_MAP_LOG_IO_MAX_BYTES = 4 * MiB;
/** Most updates in one LBA map apply (the write lane applies a batch in chunks of this). */
export const LBA_MAP_APPLY_MAX_UPDATES = 65_536;
/** Most cluster indexes in one getMany call. */
export const LBA_MAP_GET_MANY_MAX = 65_536;

/** Most requests the write lane takes into one batch (one SCO append, one TLog write, one map batch). */
export const LANE_BATCH_MAX_OPS = 256;
/** Most payload bytes in one lane batch. */
export const LANE_BATCH_MAX_BYTES = 8 * MiB;
/** SCOs uploaded at once per vDisk; TLogs, roots and checkpoints go one at a time, in order. */
export const UPLOAD_CONCURRENCY = 2;
/** Wait between attempts when the backend fails an upload (doubling up to the max). */
export const UPLOAD_RETRY_MIN_MS = 200;
export const UPLOAD_RETRY_MAX_MS = 10_000;
/** A checkpoint of the LBA map is uploaded after this many TLogs (and on sync-to-backend). */
export const CHECKPOINT_EVERY_TLOGS = 8;
/** Entries per checkpoint part object (19 B each: ~19 MiB). */
export const CHECKPOINT_PART_ENTRIES = 1 << 20;
/** Open SCO read handles kept per vDisk. */
export const SCO_READERS_OPEN_MAX = 32;
/** Uploaded SCOs kept in the write buffer as a read cache, per vDisk (bytes). */
export const SCO_CACHE_DEFAULT_BYTES = 1024 * MiB;
/**
 * Memory for the clusters last written or read, shared by every vDisk of a volumedriver
 * (cluster-cache.ts): reads of them copy from memory instead of going to a SCO file.
 */
export const CLUSTER_CACHE_DEFAULT_BYTES = 512 * MiB;
/**
 * Memory for SCOs kept whole until they are uploaded (sco-memory.ts), shared by every vDisk
 * of a volumedriver: an upload takes the bytes from memory instead of reading the file back.
 * 256 MiB = 4 SCOs of the default 64 MiB; past it, SCOs are read back from the write buffer.
 */
export const SCO_MEMORY_DEFAULT_BYTES = 256 * MiB;
/** Default write buffer (dirty SCO bytes before writes are slowed down), per vDisk. */
export const WRITE_BUFFER_DEFAULT_BYTES = 1024 * MiB;
/** Clone depth limit: the layer of a location is a u8. */
export const CLONE_DEPTH_MAX = 255;
/** Scrubbing rewrites SCOs with less than this fraction of live clusters. */
export const SCRUB_LIVE_FRACTION_DEFAULT = 0.5;
/**
 * Block status: most clusters one answer looks at (256 MiB of 4 KiB clusters: one LBA map
 * range of at most that many clusters), and most extents in one answer.
 */
export const BLOCK_STATUS_MAX_CLUSTERS = 65_536;
export const BLOCK_STATUS_MAX_EXTENTS = 4_096;

/**
 * The bound on data at risk: a write reaches the backend (its SCO, and the TLog naming it,
 * then the root) within this long. The open SCO is sealed and the TLog rolled at half of it,
 * leaving the other half for the upload. Velostrata bounded its write-back RPO at 30 s.
 */
export const DATA_AT_RISK_MAX_MS = 30_000;
/** Smallest bound a volumedriver accepts (a seal per vDisk per 50 ms is already wasteful). */
export const DATA_AT_RISK_MIN_MS = 100;
/** A vDisk this node owns but could not open is tried again this often. */
export const OPEN_RETRY_MS = 30_000;
/** A family commit (delete, rollback, snapshot delete) re-checks this often when a race moved the record. */
export const FAMILY_COMMIT_ATTEMPTS = 3;
/** Keys per page when the registry lists vPools, vDisks or storage routers. */
export const REGISTRY_LIST_PAGE_KEYS = 1000;
/**
 * A checkpoint goes up after this many TLogs of any size (the data-at-risk bound rolls small
 * ones): a restore replays at most this many TLogs after the checkpoint.
 */
export const CHECKPOINT_MAX_TLOGS = 256;
/** A clean close waits this long for the last uploads (then leaves them for the next open). */
export const VOLUME_CLOSE_UPLOAD_WAIT_MS = 30_000;
/**
 * The write buffer's reserve: a file of this size, released before vDisks open (so the LBA
 * maps' logs and the state files open on a full file system) and made again once there is room.
 */
export const WRITE_BUFFER_RESERVE_BYTES = 64 * MiB;
/** Writes are refused (VD_NO_SPACE, before anything is written) below this much free space. */
export const WRITE_BUFFER_MARGIN_BYTES = 32 * MiB;
/** How often the write buffer's free space is read (statfs, off the lane). */
export const WRITE_BUFFER_SPACE_REFRESH_MS = 250;
/**
 * A batch that does not fit under the margin while its vDisk's uploads are queued (and the
 * last one succeeded) waits this long for space before VD_NO_SPACE: when the ASDs share the
 * write buffer's file system, an upload in flight takes space that dropping its cached SCO
 * gives back.
 */
export const WRITE_BUFFER_SPACE_WAIT_MS = 10_000;
/** How often such a waiting batch reads the free space again. */
export const WRITE_BUFFER_SPACE_POLL_MS = 100;
/** Uploaded SCOs cached in the write buffer are dropped when free space is under this many margins. */
export const WRITE_BUFFER_CACHE_EVICT_MARGINS = 4;
