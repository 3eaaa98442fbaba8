import { ShaleError } from '@shale/common';

/** The framework API's own stable error codes (domain codes pass through unchanged). */
export const ApiErrorCode = {
  /** A request field, path parameter or query parameter breaks its schema; the message names it. */
  BadRequest: 'API_BAD_REQUEST',
  /** The request body is not JSON. */
  BadJson: 'API_BAD_JSON',
  /** POST /api/v1/vdisks without a vpool while there is not exactly one vPool. */
  VpoolRequired: 'API_VPOOL_REQUIRED',
  /** No bearer token, or the wrong one. */
  Unauthorized: 'API_UNAUTHORIZED',
  /** No route has this path. */
  RouteNotFound: 'API_ROUTE_NOT_FOUND',
  /** No operation with this id (never started, or dropped from the bounded list). */
  OperationNotFound: 'API_OPERATION_NOT_FOUND',
  /** The request (its headers, or all of it) did not arrive within its deadline. */
  RequestTimeout: 'API_REQUEST_TIMEOUT',
  /** The path exists, not with this method (the Allow header lists those it has). */
  MethodNotAllowed: 'API_METHOD_NOT_ALLOWED',
  /** The request body is larger than API_BODY_MAX_BYTES. */
  BodyTooLarge: 'API_BODY_TOO_LARGE',
  /** The request headers are larger than Node's limit (16 KiB). */
  HeadersTooLarge: 'API_HEADERS_TOO_LARGE',
  /** A request body that is not application/json. */
  UnsupportedMediaType: 'API_UNSUPPORTED_MEDIA_TYPE',
  /** A bug in the API (an answer that fails its own schema, an unexpected exception). */
  Internal: 'API_INTERNAL',
  /** Too many requests or operations in progress: retry after Retry-After seconds. */
  Busy: 'API_BUSY',
  /** At start: the token file can be read by its group or others. */
  TokenFileInsecure: 'API_TOKEN_FILE_INSECURE',
  /** At start: the token file is not a regular file holding one token. */
  TokenFileBad: 'API_TOKEN_FILE_BAD',
  /** ApiClient: the server did not answer within the request timeout. */
  ClientTimeout: 'API_CLIENT_TIMEOUT',
  /** ApiClient: the server could not be reached. */
  Unreachable: 'API_UNREACHABLE',
  /** ApiClient: the server answered something that is not the API's JSON. */
  BadResponse: 'API_BAD_RESPONSE',
} as const;

export type ApiErrorCode = (typeof ApiErrorCode)[keyof typeof ApiErrorCode];

export function apiError(
  code: ApiErrorCode,
  message: string,
  options: { cause?: unknown; details?: Record<string, string> } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}
