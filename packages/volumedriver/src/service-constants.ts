/**
 * The limits of the VolumeService (gRPC), with their units. They sit apart from
 * constants.ts only because another change owns that file now; merge them there later.
 */

const MiB = 1024 * 1024;

/** Largest READ length, and largest WRITE payload, of one Io request. */
export const IO_REQUEST_MAX_BYTES = 32 * MiB;
/**
 * A client stops adding requests to an IoBatch, and the server replies to an IoReplyBatch,
 * once it carries this many payload bytes: one request larger than this travels alone.
 */
export const IO_BATCH_MAX_BYTES = 4 * MiB;
/** Most requests (client) or replies (server) in one batch message. */
export const IO_BATCH_MAX_REQUESTS = 1024;
/** gRPC message ceiling: one request of IO_REQUEST_MAX_BYTES plus a batch's worth of framing. */
export const VOLUME_MAX_MESSAGE_BYTES = IO_REQUEST_MAX_BYTES + IO_BATCH_MAX_BYTES + MiB;
/**
 * Requests a VolumeIoStream client has issued and not seen answered (queued or on the wire).
 * Beyond it, new calls wait for a slot.
 */
export const IO_CLIENT_MAX_IN_FLIGHT_REQUESTS = 1024;
/**
 * Requests the server runs at once per Io stream. When reached, it stops reading the stream
 * (HTTP/2 flow control pushes back to the client) until requests complete.
 */
export const IO_SERVER_MAX_IN_FLIGHT_REQUESTS = 256;
/** Deadline of every unary VolumeService call made by VolumeClient (default). */
export const VOLUME_CALL_DEADLINE_MS = 60_000;
/** Default time a stopping volumedriver gives calls and Io streams to finish. */
export const VOLUME_SHUTDOWN_GRACE_MS = 10_000;
