import * as grpc from '@grpc/grpc-js';
import { ShaleError } from './errors.js';

/**
 * What every Shale gRPC daemon and client shares: binding, graceful shutdown, and the
 * "shale-code" trailer that carries a stable error code across the wire. Each service keeps
 * its own table from codes to gRPC statuses; this file only moves codes back and forth.
 */
export const SHALE_CODE_TRAILER = 'shale-code';

/** Binds insecure (plaintext) on host:port; 0 picks a free port. Resolves with the port. */
export async function bindGrpcServer(
  server: grpc.Server,
  host: string,
  port: number,
): Promise<number> {
  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, boundPort) => {
      if (err) reject(err);
      else resolve(boundPort);
    });
  });
}

/** Stops taking calls and waits for those in progress, up to graceMs, then cuts them off. */
export async function shutdownGrpcServer(server: grpc.Server, graceMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A ShaleError as a gRPC error: the status from the service's table, the code in the trailer. */
export function grpcErrorOf(error: ShaleError, status: grpc.status): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  metadata.set(SHALE_CODE_TRAILER, error.code);
  return Object.assign(new Error(error.message), {
    code: status,
    details: `${error.code}: ${error.message}`,
    metadata,
  });
}

/**
 * Client side: a failed call as a ShaleError. The server's stable code when it sent one;
 * otherwise `<PREFIX>_DEADLINE_EXCEEDED`, `<PREFIX>_UNAVAILABLE` or `<PREFIX>_RPC_FAILED`.
 */
export function shaleErrorFromGrpc(
  err: grpc.ServiceError,
  what: string,
  prefix: string,
): ShaleError {
  const sent = err.metadata?.get(SHALE_CODE_TRAILER)[0];
  if (typeof sent === 'string' && sent.length > 0) {
    const lead = `${sent}: `;
    const message = err.details.startsWith(lead) ? err.details.slice(lead.length) : err.details;
    return new ShaleError(sent, message, { cause: err });
  }
  if (err.code === grpc.status.DEADLINE_EXCEEDED) {
    return new ShaleError(`${prefix}_DEADLINE_EXCEEDED`, `${what}: deadline exceeded`, {
      cause: err,
    });
  }
  if (err.code === grpc.status.UNAVAILABLE) {
    return new ShaleError(`${prefix}_UNAVAILABLE`, `${what} is unreachable: ${err.details}`, {
      cause: err,
    });
  }
  return new ShaleError(`${prefix}_RPC_FAILED`, `${what}: ${err.details || err.message}`, {
    cause: err,
  });
}
