import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import type { ShaleError } from '@shale/common';
import { KvErrorCode, kvError } from './errors.js';

/**
 * What a failed etcd call means for the caller. This table is the one place that decides
 * whether a write may be retried:
 *
 *   definite-retry  the server refused before proposing it to Raft (no leader, too many
 *                   requests, not capable, stale auth token); nothing was applied; another
 *                   endpoint or a later try may succeed.
 *   definite-fatal  refused for good (bad input, too large, no space, lease not found,
 *                   permission); nothing was applied; the caller gets the mapped error.
 *   indeterminate   the request may have reached Raft (timeouts, lost connections, a leader
 *                   that died with the proposal in its log). Reads retry; writes report
 *                   KV_OUTCOME_UNKNOWN, because etcd 3.4 can still commit them later.
 */
export type EtcdFailure =
  | { readonly kind: 'definite-retry'; readonly reason: string; readonly authExpired: boolean }
  | { readonly kind: 'definite-fatal'; readonly error: ShaleError }
  | { readonly kind: 'indeterminate'; readonly reason: string };

export function isServiceError(err: unknown): err is ServiceError {
  return (
    typeof err === 'object' &&
    err !== null &&
    'code' in err &&
    typeof (err as { code: unknown }).code === 'number'
  );
}

/** etcd's error texts (rpctypes), matched on the gRPC status details. */
const DEFINITE_RETRY = [
  'etcdserver: no leader',
  'etcdserver: too many requests',
  'etcdserver: not capable',
];
const AUTH_EXPIRED = ['etcdserver: invalid auth token', 'auth: invalid auth token'];

export function classifyEtcdError(err: unknown, what: string): EtcdFailure {
  if (!isServiceError(err)) {
    return { kind: 'indeterminate', reason: err instanceof Error ? err.message : String(err) };
  }
  const details = err.details ?? err.message;
  const fatal = (code: KvErrorCode, message: string): EtcdFailure => ({
    kind: 'definite-fatal',
    error: kvError(code, `${what}: ${message}`, { cause: err, details: { etcd: details } }),
  });
  if (DEFINITE_RETRY.some((text) => details.includes(text))) {
    return { kind: 'definite-retry', reason: details, authExpired: false };
  }
  if (AUTH_EXPIRED.some((text) => details.includes(text))) {
    return { kind: 'definite-retry', reason: details, authExpired: true };
  }
  if (
    details.includes('request is too large') ||
    (err.code === GrpcStatus.RESOURCE_EXHAUSTED && /larger than max/.test(details))
  ) {
    return fatal(KvErrorCode.ValueTooLarge, `etcd refused the request as too large (${details})`);
  }
  if (details.includes('database space exceeded')) {
    return fatal(
      KvErrorCode.NoSpace,
      `etcd is out of space (${details}); compact and defragment, or raise --quota-backend-bytes`,
    );
  }
  if (details.includes('requested lease not found')) {
    return fatal(KvErrorCode.LeaseNotFound, 'the lease does not exist (expired or revoked)');
  }
  if (details.includes('too many operations in txn')) {
    return fatal(KvErrorCode.TooManyOps, details);
  }
  if (details.includes('required revision has been compacted')) {
    return fatal(KvErrorCode.Compacted, details);
  }
  switch (err.code) {
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.OUT_OF_RANGE:
    case GrpcStatus.FAILED_PRECONDITION:
      return fatal(KvErrorCode.BadRequest, details);
    case GrpcStatus.PERMISSION_DENIED:
    case GrpcStatus.UNAUTHENTICATED:
      return fatal(KvErrorCode.PermissionDenied, details);
    case GrpcStatus.NOT_FOUND:
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.UNIMPLEMENTED:
      return fatal(KvErrorCode.Internal, details);
    default:
      // UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNKNOWN, INTERNAL, ...: the server may
      // have proposed it (etcdserver: request timed out, leader changed, server stopped).
      return { kind: 'indeterminate', reason: `${GrpcStatus[err.code] ?? err.code}: ${details}` };
  }
}
