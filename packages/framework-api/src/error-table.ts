import { ApiErrorCode } from './errors.js';
import { IscsiErrorCode } from './iscsi/iscsi-target-spec.js';

/**
 * The one table from error codes to HTTP statuses. API codes are the API's own; domain
 * codes (the volumedriver's VD_*, the metadata store's KV_*, the backend registry's
 * PROXY_*, the iSCSI target model's ISCSI_*) pass through unchanged with the status below. Any other code is a 500 with its
 * own code; an exception that is not a ShaleError is a 500 API_INTERNAL.
 */
export const ERROR_STATUS: Readonly<Record<string, number>> = {
  [ApiErrorCode.BadRequest]: 400,
  [ApiErrorCode.BadJson]: 400,
  [ApiErrorCode.VpoolRequired]: 400,
  [ApiErrorCode.Unauthorized]: 401,
  [ApiErrorCode.RouteNotFound]: 404,
  [ApiErrorCode.OperationNotFound]: 404,
  [ApiErrorCode.MethodNotAllowed]: 405,
  [ApiErrorCode.RequestTimeout]: 408,
  [ApiErrorCode.BodyTooLarge]: 413,
  [ApiErrorCode.UnsupportedMediaType]: 415,
  [ApiErrorCode.HeadersTooLarge]: 431,
  [ApiErrorCode.Internal]: 500,
  [ApiErrorCode.Busy]: 503,
  VD_INVALID_ARGUMENT: 400,
  VD_OUT_OF_RANGE: 400,
  VD_NOT_FOUND: 404,
  PROXY_BACKEND_NOT_FOUND: 404,
  PROXY_PRESET_NOT_FOUND: 404,
  VD_EXISTS: 409,
  VD_HAS_CLONES: 409,
  VD_FENCED: 409,
  VD_BAD_STATE: 409,
  VD_BUSY: 409,
  VD_NOT_OWNER: 409,
  /** Owned by a volumedriver that could not open it (its state says why); retried there. */
  VD_OPEN_FAILED: 503,
  VD_UNAVAILABLE: 503,
  VD_DEADLINE_EXCEEDED: 503,
  /** A vDisk closing under the call (its volumedriver is stopping): retry elsewhere or later. */
  VD_CLOSED: 503,
  VD_BACKEND_ERROR: 503,
  KV_UNAVAILABLE: 503,
  VD_NO_SPACE: 507,
  KV_NO_SPACE: 507,
  [IscsiErrorCode.BadIqn]: 400,
  [IscsiErrorCode.BadInitiator]: 400,
  [IscsiErrorCode.TooManyInitiators]: 400,
  [IscsiErrorCode.BadChapUser]: 400,
  [IscsiErrorCode.ChapSecretShort]: 400,
  [IscsiErrorCode.ChapSecretLong]: 400,
  [IscsiErrorCode.ChapSecretBad]: 400,
  [IscsiErrorCode.MutualWithoutChap]: 400,
  [IscsiErrorCode.MutualSameSecret]: 400,
  [IscsiErrorCode.TargetNotFound]: 404,
  [IscsiErrorCode.TargetExists]: 409,
  [IscsiErrorCode.VdiskTaken]: 409,
  [IscsiErrorCode.ChapUserTaken]: 409,
  [IscsiErrorCode.VdiskExported]: 409,
  /** A target record this build cannot read, or a secret that does not open with the key file. */
  [IscsiErrorCode.BadRecord]: 500,
};

/** Any code not in the table. */
export const UNLISTED_ERROR_STATUS = 500;

export function httpStatusOf(code: string): number {
  return Object.hasOwn(ERROR_STATUS, code)
    ? (ERROR_STATUS[code] ?? UNLISTED_ERROR_STATUS)
    : UNLISTED_ERROR_STATUS;
}
