import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import {
  AssertionFailure,
  errorMessage,
  grpcErrorOf,
  ShaleError,
  shaleErrorFromGrpc,
} from '@shale/common';
import { ProxyErrorCode, proxyError } from './errors.js';

/** The .proto of the proxy service; clients (the volumedriver, the CLI) load it from here. */
export const PROXY_PROTO_PATH = fileURLToPath(new URL('../proto/proxy.proto', import.meta.url));

const definition = protoLoader.loadSync(PROXY_PROTO_PATH, {
  keepCase: false,
  longs: Number,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  shale: { proxy: { v1: { ProxyService: grpc.ServiceClientConstructor } } };
};
export const ProxyServiceClient: grpc.ServiceClientConstructor = loaded.shale.proxy.v1.ProxyService;
export const proxyServiceDefinition: grpc.ServiceDefinition = ProxyServiceClient.service;

/** The one table between proxy error codes (and the KV's and ASD's that pass through) and gRPC statuses. */
const STATUS_OF_CODE: Readonly<Record<string, grpc.status>> = {
  [ProxyErrorCode.BadPreset]: grpc.status.INVALID_ARGUMENT,
  [ProxyErrorCode.BadArgument]: grpc.status.INVALID_ARGUMENT,
  [ProxyErrorCode.BadNamespace]: grpc.status.INVALID_ARGUMENT,
  [ProxyErrorCode.BadObjectName]: grpc.status.INVALID_ARGUMENT,
  [ProxyErrorCode.BadId]: grpc.status.INVALID_ARGUMENT,
  [ProxyErrorCode.BadRange]: grpc.status.OUT_OF_RANGE,
  [ProxyErrorCode.NamespaceExists]: grpc.status.ALREADY_EXISTS,
  [ProxyErrorCode.BackendExists]: grpc.status.ALREADY_EXISTS,
  [ProxyErrorCode.OsdExists]: grpc.status.ALREADY_EXISTS,
  [ProxyErrorCode.PresetExists]: grpc.status.ALREADY_EXISTS,
  [ProxyErrorCode.NamespaceNotFound]: grpc.status.NOT_FOUND,
  [ProxyErrorCode.ObjectNotFound]: grpc.status.NOT_FOUND,
  [ProxyErrorCode.BackendNotFound]: grpc.status.NOT_FOUND,
  [ProxyErrorCode.OsdNotFound]: grpc.status.NOT_FOUND,
  [ProxyErrorCode.PresetNotFound]: grpc.status.NOT_FOUND,
  [ProxyErrorCode.KeyNotFound]: grpc.status.NOT_FOUND,
  [ProxyErrorCode.NamespaceDeleting]: grpc.status.FAILED_PRECONDITION,
  [ProxyErrorCode.WrongBackend]: grpc.status.FAILED_PRECONDITION,
  [ProxyErrorCode.Fenced]: grpc.status.FAILED_PRECONDITION,
  [ProxyErrorCode.NoPolicy]: grpc.status.UNAVAILABLE,
  [ProxyErrorCode.NotEnoughOsds]: grpc.status.UNAVAILABLE,
  [ProxyErrorCode.OsdUnavailable]: grpc.status.UNAVAILABLE,
  [ProxyErrorCode.NotEnoughFragments]: grpc.status.DATA_LOSS,
  [ProxyErrorCode.Corrupt]: grpc.status.DATA_LOSS,
  [ProxyErrorCode.CorruptManifest]: grpc.status.DATA_LOSS,
  [ProxyErrorCode.Busy]: grpc.status.RESOURCE_EXHAUSTED,
  [ProxyErrorCode.CommitUnknown]: grpc.status.UNKNOWN,
  [ProxyErrorCode.Closed]: grpc.status.UNAVAILABLE,
  KV_UNAVAILABLE: grpc.status.UNAVAILABLE,
  KV_OUTCOME_UNKNOWN: grpc.status.UNKNOWN,
};

export function toGrpcError(err: unknown): grpc.ServiceError {
  if (err instanceof ShaleError)
    return grpcErrorOf(err, STATUS_OF_CODE[err.code] ?? grpc.status.INTERNAL);
  return grpcErrorOf(
    proxyError(ProxyErrorCode.BadArgument, `internal error: ${errorMessage(err)}`, { cause: err }),
    grpc.status.INTERNAL,
  );
}

/** Client side: a failed call as a ShaleError with the server's stable code (PROXY_* otherwise). */
export function fromGrpcError(err: grpc.ServiceError, address: string): ShaleError {
  return shaleErrorFromGrpc(err, `proxy ${address}`, 'PROXY');
}

/** Wraps an async handler: answers with the result or the mapped error; crashes on a broken invariant. */
export function unary<Req, Res>(
  handle: (request: Req) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    handle(call.request).then(
      (response) => callback(null, response),
      (err: unknown) => {
        callback(toGrpcError(err), null);
        if (err instanceof AssertionFailure) {
          process.nextTick(() => {
            throw err;
          });
        }
      },
    );
  };
}
