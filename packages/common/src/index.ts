export { AssertionFailure, assert, unreachable } from './assert.js';
export { crc32c, crc32cCombine } from './crc32c.js';
export { errorMessage, isShaleError, ShaleError, systemErrorCode } from './errors.js';
export {
  FastHistogram,
  type FastHistogramChild,
  type FastHistogramOptions,
} from './fast-histogram.js';
export * from './frame/index.js';
export {
  bindGrpcServer,
  grpcErrorOf,
  SHALE_CODE_TRAILER,
  shaleErrorFromGrpc,
  shutdownGrpcServer,
} from './grpc-support.js';
export { listenOn } from './listen.js';
export { type MetricsServer, registerStatsCounters, startMetricsServer } from './metrics-server.js';
export { SpaceReserve, type SpaceReserveOptions } from './space-reserve.js';
export { formatBytes, parseSizeBytes } from './units.js';
