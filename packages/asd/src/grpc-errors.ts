import * as grpc from '@grpc/grpc-js';
import { errorMessage, grpcErrorOf, ShaleError, shaleErrorFromGrpc } from '@shale/common';
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

export function toGrpcError(err: unknown): grpc.ServiceError {
  const shaleError =
    err instanceof ShaleError
      ? err
      : asdError(AsdErrorCode.IoError, `internal error: ${errorMessage(err)}`, { cause: err });
  return grpcErrorOf(shaleError, STATUS_OF_CODE[shaleError.code] ?? grpc.status.INTERNAL);
}

/** Client side: a failed call as a ShaleError with the server's stable code (ASD_* otherwise). */
export function fromGrpcError(err: grpc.ServiceError, address: string): ShaleError {
  return shaleErrorFromGrpc(err, `ASD ${address}`, 'ASD');
}
