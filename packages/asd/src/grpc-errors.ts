import * as grpc from '@grpc/grpc-js';
import { errorMessage, ShaleError } from '@shale/common';
import { AsdErrorCode, asdError } from './errors.js';

/**
 * The one table between ASD error codes and gRPC statuses. The stable code itself
 * travels in the "shale-code" trailer, so clients never parse messages.
 */
const STATUS_OF_CODE: Readonly<Record<string, grpc.status>> = {
  [AsdErrorCode.KeyEmpty]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.KeyTooLarge]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.ValueTooLarge]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.TooManyItems]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.CallTooLarge]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.DuplicateKey]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.ChecksumMismatch]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.BadRange]: grpc.status.OUT_OF_RANGE,
  [AsdErrorCode.InvalidArgument]: grpc.status.INVALID_ARGUMENT,
  [AsdErrorCode.NotFound]: grpc.status.NOT_FOUND,
  [AsdErrorCode.Corrupt]: grpc.status.DATA_LOSS,
  [AsdErrorCode.ResponseTooLarge]: grpc.status.RESOURCE_EXHAUSTED,
  [AsdErrorCode.NoSpace]: grpc.status.RESOURCE_EXHAUSTED,
  [AsdErrorCode.Busy]: grpc.status.RESOURCE_EXHAUSTED,
  [AsdErrorCode.IoError]: grpc.status.INTERNAL,
  [AsdErrorCode.Closed]: grpc.status.UNAVAILABLE,
};

export const SHALE_CODE_TRAILER = 'shale-code';

export function toGrpcError(err: unknown): Partial<grpc.StatusObject> {
  const shaleError =
    err instanceof ShaleError
      ? err
      : asdError(AsdErrorCode.IoError, `internal error: ${errorMessage(err)}`, { cause: err });
  const metadata = new grpc.Metadata();
  metadata.set(SHALE_CODE_TRAILER, shaleError.code);
  return {
    code: STATUS_OF_CODE[shaleError.code] ?? grpc.status.INTERNAL,
    details: `${shaleError.code}: ${shaleError.message}`,
    metadata,
  };
}

/** Client side: a failed call as a ShaleError with the server's stable code. */
export function fromGrpcError(err: grpc.ServiceError, address: string): ShaleError {
  const sent = err.metadata?.get(SHALE_CODE_TRAILER)[0];
  if (typeof sent === 'string' && sent.length > 0) {
    const prefix = `${sent}: `;
    const message = err.details.startsWith(prefix) ? err.details.slice(prefix.length) : err.details;
    return asdError(sent as AsdErrorCode, message, { cause: err });
  }
  if (err.code === grpc.status.DEADLINE_EXCEEDED) {
    return asdError(AsdErrorCode.DeadlineExceeded, `ASD ${address}: deadline exceeded`, {
      cause: err,
    });
  }
  if (err.code === grpc.status.UNAVAILABLE) {
    return asdError(AsdErrorCode.Unavailable, `ASD ${address} is unreachable: ${err.details}`, {
      cause: err,
    });
  }
  return asdError(AsdErrorCode.RpcFailed, `ASD ${address}: ${err.details || err.message}`, {
    cause: err,
  });
}
