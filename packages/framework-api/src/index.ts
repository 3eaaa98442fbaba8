export {
  ApiClient,
  type ApiClientOptions,
  type ApiResponse,
  type WaitOptions,
} from './api-client.js';
export { ApiDaemon, type ApiDaemonOptions } from './api-daemon.js';
export type { AsdClientFactory, AsdProbeClient } from './asd-probe.js';
export { ApiWarningCode } from './capacity.js';
export * from './constants.js';
export { ERROR_STATUS, httpStatusOf, UNLISTED_ERROR_STATUS } from './error-table.js';
export { ApiErrorCode, apiError } from './errors.js';
export * from './iscsi/index.js';
export {
  type Infer,
  type JsonValue,
  parseSchema,
  type Schema,
  type SchemaViolation,
  s,
  toJsonSchema,
  validate,
} from './json-schema.js';
export { API_VERSION, openApiDocument } from './openapi.js';
export { type HttpMethod, ROUTES, type Route } from './routes.js';
export * from './schemas.js';
export { bearerMatches, loadOrCreateToken, type TokenFile } from './token-file.js';
export type { CallClass, VolumeApi, VolumeClientFactory } from './volumedriver-pool.js';
