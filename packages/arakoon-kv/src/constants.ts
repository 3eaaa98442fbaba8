/** Every limit and default of @shale/arakoon-kv, with its unit. */

/** Longest key accepted by either engine. Project keys are < 200 bytes (see README). */
export const MAX_KEY_BYTES = 4096;
/**
 * Largest value by default. etcd 3.4 refuses requests over --max-request-bytes (1.5 MiB by
 * default); 1 MiB leaves room for the key, a txn's other ops and framing. Manifests are < 2 KiB.
 */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;
/** Largest whole request (sum of keys and values of a txn), matching etcd 3.4's default. */
export const DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024;
/** Most ops in one txn branch (and compares), etcd's default --max-txn-ops. */
export const MAX_TXN_OPS = 128;
/** Default and ceiling of a range page. */
export const RANGE_DEFAULT_LIMIT = 1000;
export const RANGE_MAX_LIMIT = 10_000;
/** Shortest lease. etcd raises shorter TTLs to its own minimum (~1.5 s, rounded up to 2 s). */
export const MIN_LEASE_TTL_MS = 1000;
/** Longest lease: etcd's MaxLeaseTTL (9 000 000 000 s) is far past any use; we cap at a year. */
export const MAX_LEASE_TTL_MS = 365 * 24 * 3600 * 1000;

/** EtcdKv: deadline of every call unless the caller gives one. */
export const ETCD_DEFAULT_DEADLINE_MS = 5000;
/** EtcdKv: how long one attempt waits for a connection to one endpoint before trying the next. */
export const ETCD_CONNECT_ATTEMPT_MS = 1000;
/** EtcdKv: pause between attempts after a retryable failure (grows x2 up to the max). */
export const ETCD_RETRY_BACKOFF_MS = 25;
export const ETCD_RETRY_BACKOFF_MAX_MS = 500;
/** EtcdKv: gRPC message ceiling on receive (large range pages). */
export const ETCD_MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024;
/** EtcdKv watch: queued responses before the stream is paused (backpressure). */
export const WATCH_MAX_QUEUED_BATCHES = 64;

/** LevelKv: revisions of event history kept for watchers; older ones are compacted. */
export const LEVEL_HISTORY_REVISIONS = 100_000;
/** LevelKv: compaction runs every this many revisions. */
export const LEVEL_COMPACT_EVERY_REVISIONS = 1000;
/** LevelKv: how often lease expiry is checked. */
export const LEVEL_LEASE_CHECK_INTERVAL_MS = 100;
/** LevelKv watch: most revisions read from the log and delivered in one go. */
export const LEVEL_WATCH_BATCH_REVISIONS = 256;

/** Sequence allocation: compare-and-swap attempts under contention before KV_TXN_FAILED. */
export const SEQUENCE_MAX_ATTEMPTS = 100;
