/** Every limit and default of the framework API, with its unit. */

/** Default TCP port of `shale api serve`. */
export const API_DEFAULT_PORT = 8080;

/** Largest request body accepted (bytes); past it the answer is 413 API_BODY_TOO_LARGE. */
export const API_BODY_MAX_BYTES = 1024 * 1024;
/**
 * After a body grew past API_BODY_MAX_BYTES, up to this many more bytes are read and dropped
 * so the client can read its 413; a client that sends more has its connection cut.
 */
export const API_BODY_DRAIN_MAX_BYTES = 16 * 1024 * 1024;
/** Longest time to receive a whole request, headers and body (Node's requestTimeout), ms. */
export const API_REQUEST_RECEIVE_TIMEOUT_MS = 60_000;
/** Longest time to receive the request headers, ms. */
export const API_HEADERS_TIMEOUT_MS = 20_000;
/** TCP connections served at once; more are refused by the server (server.maxConnections). */
export const API_CONNECTIONS_MAX = 512;
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
