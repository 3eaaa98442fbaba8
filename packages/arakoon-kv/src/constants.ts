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
/** EtcdKv and RemoteKv watch: queued, undelivered batches before the stream is paused (backpressure). */
export const WATCH_MAX_QUEUED_BATCHES = 64;

/** LevelKv: revisions of event history kept for watchers; older ones are compacted. */
export const LEVEL_HISTORY_REVISIONS = 100_000;
/** LevelKv: compaction runs every this many revisions. */
export const LEVEL_COMPACT_EVERY_REVISIONS = 1000;
/** LevelKv: how often lease expiry is checked. */
export const LEVEL_LEASE_CHECK_INTERVAL_MS = 100;
/** LevelKv watch: most revisions read from the log and delivered in one go. */
export const LEVEL_WATCH_BATCH_REVISIONS = 256;

/** RemoteKv: deadline of every call unless the caller gives one, retries included (as EtcdKv). */
export const REMOTE_DEFAULT_DEADLINE_MS = ETCD_DEFAULT_DEADLINE_MS;
/**
 * RemoteKv reconnect policy (defaults): the first and the longest pause between connection
 * attempts of the gRPC channel, between re-opens of a broken watch and between retries of
 * a read; each pause doubles up to the longest.
 */
export const REMOTE_RECONNECT_INITIAL_BACKOFF_MS = 50;
export const REMOTE_RECONNECT_MAX_BACKOFF_MS = 1000;
/**
 * RemoteKv: a retry is not sent with less than this much of the call's deadline left. A
 * write sent with a millisecond to spare times out in flight and can only be reported as
 * KV_OUTCOME_UNKNOWN; not sending it keeps the honest answer (KV_UNAVAILABLE: not applied).
 */
export const REMOTE_MIN_RETRY_WINDOW_MS = 25;
/**
 * RemoteKv: a keep-alive ping every this often while calls or watches are open, and how long an
 * unanswered ping may take, so a watch notices a server that vanished without closing.
 */
export const REMOTE_KEEPALIVE_TIME_MS = 10_000;
export const REMOTE_KEEPALIVE_TIMEOUT_MS = 5_000;
/** RemoteKv: keys per GetMany call (each call is one snapshot), as EtcdKv's 128 per txn. */
export const REMOTE_GET_MANY_MAX_KEYS = 128;
/** RemoteKv watch: bytes of keys and values received and not yet delivered before the stream is paused. */
export const REMOTE_WATCH_MAX_QUEUED_BYTES = 8 * 1024 * 1024;
/** RemoteKv and KvServer: ceiling of one gRPC message, both ways (128 gets of 1 MiB values fit). */
export const KV_GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;
/** KvServer: a Range reply stops taking keys past this many bytes of keys and values (it returns a continuation). */
export const KV_SERVER_RANGE_REPLY_TARGET_BYTES = 16 * 1024 * 1024;
/**
 * KvServer: a store's watch batch is split into WatchBatch messages of about this many bytes
 * of keys and values. grpc-js buffers up to 16 messages per stream before write() says
 * "wait", so this also bounds what one slow watch client costs the server (~16 MiB).
 */
export const KV_SERVER_WATCH_MESSAGE_TARGET_BYTES = 1024 * 1024;
/** KvServer: the store gets a call's deadline minus this, so that its own answer still reaches the client in time. */
export const KV_SERVER_DEADLINE_MARGIN_MS = 50;
/** KvServer: open Watch streams of all clients together; more are refused with KV_UNAVAILABLE (clients retry). */
export const KV_SERVER_MAX_WATCHES = 4096;
/** KvServer: concurrent calls per client connection (HTTP/2 max concurrent streams); more wait in the client. */
export const KV_SERVER_MAX_CONCURRENT_STREAMS = 1024;
/** KvServer: how long close() lets unary calls in progress finish before cutting them off. */
export const KV_SERVER_SHUTDOWN_GRACE_MS = 5000;

/** Sequence allocation: compare-and-swap attempts under contention before KV_TXN_FAILED. */
export const SEQUENCE_MAX_ATTEMPTS = 100;
