/** Every limit and default of the edge, with its unit. */

const KiB = 1024;
const MiB = 1024 * KiB;

/** The IANA port of NBD. */
export const NBD_DEFAULT_PORT = 10809;

/** Block size constraints we advertise (NBD_INFO_BLOCK_SIZE). Unaligned requests still work. */
export const NBD_MIN_BLOCK_BYTES = 512;
export const NBD_PREFERRED_BLOCK_BYTES = 4 * KiB;
/** Largest READ length and WRITE payload; the volumedriver's IO_REQUEST_MAX_BYTES. */
export const NBD_MAX_PAYLOAD_BYTES = 32 * MiB;

/**
 * A client in the handshake must send its flags or its next option within this long of the
 * last one (or of its answer), or the connection is closed: an idle deadline, restarted by
 * every option, so a client listing thousands of exports is not cut while it works.
 */
export const NBD_HANDSHAKE_IDLE_TIMEOUT_MS = 30_000;
/**
 * The whole handshake, however busy the client (a DoS guard: one connection cannot haggle
 * for ever), plus NBD_HANDSHAKE_MS_PER_EXPORT for each export its last LIST returned.
 */
export const NBD_HANDSHAKE_MAX_MS = 5 * 60_000;
/**
 * nbdinfo --list (libnbd 1.14) spends ~210 ms per export over TCP: it sends its
 * LIST_META_CONTEXT with MSG_MORE on the last write, so the client's kernel holds the option
 * until its 200 ms timer. 1 s each leaves room for a loaded machine; 3000 exports take
 * about 11 minutes that way (about 3 s over a Unix socket, where MSG_MORE is a no-op).
 */
export const NBD_HANDSHAKE_MS_PER_EXPORT = 1_000;
/** Options one connection may send before transmission, besides the per-export ones. */
export const NBD_HANDSHAKE_MAX_OPTIONS = 1024;
/**
 * More options allowed per export its last LIST returned: nbdinfo --list sends INFO and
 * LIST_META_CONTEXT for each (libnbd 1.14); SET_META_CONTEXT and GO leave room for others.
 * A client that never lists stays at NBD_HANDSHAKE_MAX_OPTIONS.
 */
export const NBD_HANDSHAKE_OPTIONS_PER_EXPORT = 4;
/**
 * INFO and the meta-context options are answered from the connection's own LIST while that
 * is younger than this (then it is listed again): one ListVdisks instead of a VdiskInfo per
 * option. The size INFO reports is at most this old; GO always asks again.
 */
export const NBD_HANDSHAKE_LIST_MAX_AGE_MS = 10_000;
/**
 * Largest option payload read into memory (names are at most 4 KiB; a meta-context query
 * list a few). Larger ones are skipped unread and answered NBD_REP_ERR_TOO_BIG.
 */
export const NBD_OPTION_MAX_BYTES = 64 * KiB;
/** Longest string (export name, context name) the protocol allows. */
export const NBD_STRING_MAX_BYTES = 4096;
/** Most meta-context queries in one option. */
export const NBD_META_QUERIES_MAX = 128;

/** Requests one connection may have in flight; reading stops until one completes. */
export const NBD_CONNECTION_MAX_IN_FLIGHT = 256;
/**
 * Payload bytes one connection may hold in flight (write payloads received plus reads
 * being answered); reading stops above it. One request larger than this still runs alone.
 */
export const NBD_CONNECTION_MAX_IN_FLIGHT_BYTES = 64 * MiB;
/** Reply bytes queued in the socket before reading stops (the client does not read). */
export const NBD_CONNECTION_MAX_UNSENT_BYTES = 64 * MiB;
/**
 * Reply buffers queued in the socket before reading stops, whatever their size. Each costs
 * ~150 B of heap besides its bytes: 16-byte write replies alone would reach the byte limit
 * only after 4 Mi of them (~600 MB of heap).
 */
export const NBD_CONNECTION_MAX_UNSENT_BUFFERS = 64 * 1024;
/**
 * Bytes all connections of one server may buffer together: payload in flight plus replies
 * queued for clients that do not read them (buffer-budget.ts). Past it connections stop
 * reading requests; a connection holding bytes stops at its share first. 512 MiB holds 16
 * requests of the largest size at once, and each connection's own 64 + 64 MiB many times;
 * without it 24 clients sending 32 MiB READs and never reading held 2.1 GB.
 */
export const EDGE_MAX_BUFFERED_BYTES = 512 * MiB;
/** Most connections the server accepts at once; later ones are closed at once. */
export const NBD_MAX_CONNECTIONS = 1024;
/** Most extents in one block-status reply (NBD asks servers to keep replies small). */
export const NBD_BLOCK_STATUS_MAX_EXTENTS = 4096;

/**
 * A request not answered within this long fails with EIO (a volumedriver that hangs, or
 * none reachable while reconnecting). Requests are retried on a new stream meanwhile.
 */
export const EDGE_REQUEST_TIMEOUT_MS = 30_000;
/** Wait between attempts to reach a volumedriver again (doubling up to the max). */
export const EDGE_RECONNECT_MIN_MS = 100;
export const EDGE_RECONNECT_MAX_MS = 2_000;
/** Deadline of the edge's unary calls to a volumedriver (locate, list). */
export const EDGE_CONTROL_CALL_DEADLINE_MS = 5_000;
/** How often pending requests are checked against their deadline. */
export const EDGE_TIMEOUT_SWEEP_MS = 500;
/** Write-zeroes with NO_HOLE writes real zeros in requests of this size. */
export const EDGE_ZERO_WRITE_CHUNK_BYTES = 1 * MiB;
/** How long a stopping edge lets connections finish their requests. */
export const EDGE_SHUTDOWN_GRACE_MS = 10_000;
