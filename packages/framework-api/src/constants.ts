/** Every limit and default of the framework API, with its unit. */

/** Default TCP port of `shale api serve`. */
export const API_DEFAULT_PORT = 8080;

/** Largest request body accepted (bytes); past it the answer is 413 API_BODY_TOO_LARGE. */
export const API_BODY_MAX_BYTES = 1024 * 1024;
/**
 * After an answer that closes the connection (a body past API_BODY_MAX_BYTES, malformed
 * HTTP), up to this many more bytes are read and dropped while the answer is delivered; a
 * client that sends more has its connection cut.
 */
export const API_BODY_DRAIN_MAX_BYTES = 16 * 1024 * 1024;
/** Longest time to receive a whole request, headers and body (Node's requestTimeout), ms. */
export const API_REQUEST_RECEIVE_TIMEOUT_MS = 60_000;
/**
 * Longest time from a connection's start (or a request's first byte) to the end of its
 * headers (Node's headersTimeout), ms. A real client sends its headers in one packet; a
 * connection that has not within this is answered 408 and closed.
 */
export const API_HEADERS_TIMEOUT_MS = 5_000;
/**
 * How often the server looks for connections past their headers or request deadline
 * (Node's connectionsCheckingInterval; its default, 30 s, would let a stalled connection
 * live up to 35 s), ms.
 */
export const API_CONNECTIONS_CHECK_INTERVAL_MS = 1_000;
/** An idle keep-alive connection is closed after this, ms (Node's keepAliveTimeout). */
export const API_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/**
 * TCP connections held at once. At the cap a new connection evicts the oldest one that is
 * not serving a request (see connection-guard.ts); if every one is, it is refused.
 */
export const API_CONNECTIONS_MAX = 512;
/**
 * TCP connections held at once by one remote address: one client cannot take every slot.
 * Past it the client's own oldest connection that is not serving a request goes. Behind a
 * reverse proxy every client is the proxy: raise it (`--connections-per-client`).
 */
export const API_CONNECTIONS_PER_CLIENT_MAX = 64;
/**
 * After an answer that closes the connection (413, 408, 400 for malformed HTTP), what the
 * client still sends is read and dropped for up to this long before the connection is cut,
 * so that the answer reaches it rather than a reset, ms.
 */
export const API_CLOSE_LINGER_MS = 2_000;
/** Requests being handled at once; past it the answer is 503 API_BUSY (Retry-After). */
export const API_REQUESTS_IN_FLIGHT_MAX = 256;
/** Seconds a 503 API_BUSY asks the client to wait (Retry-After). */
export const API_BUSY_RETRY_AFTER_S = 1;

/** Random bytes of a generated bearer token (written as hex: 64 characters). */
export const API_TOKEN_BYTES = 32;
/** Mode of a token file the API creates; an existing one must not be readable by others. */
export const API_TOKEN_FILE_MODE = 0o600;

/** Operations kept in memory (running and finished); the oldest finished ones go first. */
export const API_OPERATIONS_KEPT_MAX = 1000;
/** Operations running at once; past it POSTs that start one get 503 API_BUSY. */
export const API_OPERATIONS_RUNNING_MAX = 64;

/** Deadline of a control call to a volumedriver (list, info, create, resize, snapshot), ms. */
export const API_VOLUME_CALL_DEADLINE_MS = 30_000;
/** Deadline of a background operation's call (delete, clone, rollback, sync, scrub), ms. */
export const API_OPERATION_CALL_DEADLINE_MS = 60 * 60 * 1000;
/** Deadline of a probe: /health, a storage router's health, an ASD's stats, a KV read, ms. */
export const API_PROBE_DEADLINE_MS = 2_000;
/** ASDs (or storage routers) probed at once by /asds, /stats and /storagerouters. */
export const API_PROBE_CONCURRENCY = 32;
/** What a stopping daemon gives requests in progress before it cuts their connections, ms. */
export const API_SHUTDOWN_GRACE_MS = 5_000;

/** Names of vPools, vDisks and snapshots: the volumedriver's rule. */
export const API_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
/** Backend, OSD and preset ids: the backend registry's rule (1..128 characters). */
export const API_REGISTRY_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
/** Operation ids: 32 lowercase hex characters. */
export const API_OPERATION_ID_PATTERN = '^[0-9a-f]{32}$';
/** Longest error message or free-text detail in an answer (characters). */
export const API_TEXT_MAX_CHARS = 4096;

/** Buckets of the request latency histogram, seconds. */
export const API_LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** ApiClient: deadline of one HTTP request, ms. */
export const API_CLIENT_REQUEST_TIMEOUT_MS = 60_000;
/** ApiClient.waitForOperation: first poll interval, doubled up to the maximum, ms. */
export const API_CLIENT_POLL_INITIAL_MS = 50;
export const API_CLIENT_POLL_MAX_MS = 1_000;
/** ApiClient.waitForOperation: default timeout, ms. */
export const API_CLIENT_WAIT_TIMEOUT_MS = 10 * 60 * 1000;

/** An active ASD with less free space than this fraction of its capacity is reported full. */
export const API_ASD_FULL_FRACTION = 0.02;
/** An ASD that refused a put for lack of space this recently is the problem ASD_FULL too. */
export const API_ASD_FULL_RECENT_MS = 60_000;

/** The iSCSI key file's default name, in the token file's directory (`shale up`'s DATA). */
export const API_ISCSI_KEY_FILE_NAME = 'iscsi-secrets.key';
