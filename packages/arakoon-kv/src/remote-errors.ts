import { status as GrpcStatus } from '@grpc/grpc-js';
import {
  errorMessage,
  SHALE_CODE_TRAILER,
  type ShaleError,
  shaleErrorFromGrpc,
} from '@shale/common';
import { KvErrorCode, kvError } from './errors.js';
import { isServiceError } from './etcd-errors.js';

/** Whether a call may be sent again after an answer that leaves its outcome unknown. */
export type Idempotence = 'read' | 'write';

/**
 * What a failed KvService call means for RemoteKv. This table is the one place that
 * decides whether a call may be sent again:
 *
 *   answer    the server answered with a KvStore error (the "shale-code" trailer), or
 *             with something no retry will change; the caller gets that error.
 *   not-sent  certainly not applied: grpc-js had no connection to put it on ("No
 *             connection established"), the server refused the HTTP/2 stream before
 *             reading it (REFUSED_STREAM), or the server's store is closed (KV_CLOSED: the
 *             server is stopping; stores check that before doing anything). Safe to resend,
 *             writes included.
 *   lost      sent, and no answer came back (deadline, dropped connection, reset stream,
 *             an answer that could not be decoded). Reads are sent again; writes become
 *             KV_OUTCOME_UNKNOWN, because the server may have applied them.
 */
export type RemoteFailure =
  | { readonly kind: 'answer'; readonly error: ShaleError }
  | { readonly kind: 'not-sent'; readonly reason: string }
  | { readonly kind: 'lost'; readonly reason: string };

/** grpc-js's details for a call that never left the client or never reached the handler. */
const NOT_SENT_DETAILS = ['No connection established', 'Stream refused by server'];

export function classifyRemoteError(
  err: unknown,
  what: string,
  idempotence: Idempotence,
): RemoteFailure {
  if (!isServiceError(err)) return { kind: 'lost', reason: errorMessage(err) };
  const sent = err.metadata?.get(SHALE_CODE_TRAILER)[0];
  if (typeof sent === 'string' && sent.length > 0) {
    const error = shaleErrorFromGrpc(err, what, 'KV');
    if (sent === KvErrorCode.Closed) {
      return { kind: 'not-sent', reason: `the server's store is closed: ${error.message}` };
    }
    return { kind: 'answer', error };
  }
  const details = err.details || err.message;
  const reason = `${GrpcStatus[err.code] ?? err.code}: ${details}`;
  switch (err.code) {
    case GrpcStatus.UNAVAILABLE:
      return NOT_SENT_DETAILS.some((text) => details.startsWith(text))
        ? { kind: 'not-sent', reason }
        : { kind: 'lost', reason };
    case GrpcStatus.DEADLINE_EXCEEDED:
    case GrpcStatus.CANCELLED:
    case GrpcStatus.UNKNOWN:
      return { kind: 'lost', reason };
    case GrpcStatus.UNIMPLEMENTED:
      // Refused before any handler ran.
      return {
        kind: 'answer',
        error: kvError(
          KvErrorCode.Internal,
          `${what}: the server does not serve this KvService call (not a kv server, or an older one): ${details}`,
          { cause: err },
        ),
      };
    case GrpcStatus.RESOURCE_EXHAUSTED:
      // A message past the gRPC limit; RemoteKv's own requests are far below it, so this
      // is an answer too large to receive: a write may have been applied.
      return idempotence === 'write'
        ? { kind: 'lost', reason }
        : {
            kind: 'answer',
            error: kvError(
              KvErrorCode.ValueTooLarge,
              `${what}: the answer is larger than the gRPC message limit (${details}); ask for fewer keys`,
              { cause: err },
            ),
          };
    default:
      // INTERNAL (a reset stream, an answer that did not decode) and other statuses
      // without our trailer: the handler may have run.
      return { kind: 'lost', reason };
  }
}

/**
 * Why a watch stream ended: undefined when it should be opened again (transport failure,
 * server stopping: KV_UNAVAILABLE or KV_CLOSED), else the error that ends the watch
 * (KV_COMPACTED, KV_BAD_REQUEST, ...).
 */
export function watchStreamFailure(err: unknown, what: string): ShaleError | undefined {
  const failure = classifyRemoteError(err, what, 'read');
  if (failure.kind !== 'answer') return undefined;
  return failure.error.code === KvErrorCode.Unavailable ? undefined : failure.error;
}
