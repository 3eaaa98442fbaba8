export type { BlockExport, ExportInfo, ExportProvider, Extent } from './block-export.js';
export type { BudgetWaitReason, BufferBudgetStats } from './buffer-budget.js';
export {
  CoLocatedExports,
  type CoLocatedExportsOptions,
  type LocalVolumes,
} from './co-located-exports.js';
export type {
  ConnectionObserver,
  ExportObserver,
  ProtocolErrorKind,
  RequestKind,
} from './connection-observer.js';
export * from './constants.js';
export { EdgeDaemon, type EdgeDaemonOptions } from './edge-daemon.js';
export { EdgeMetrics } from './edge-metrics.js';
export { EdgeErrorCode, edgeError, nbdErrnoOf } from './errors.js';
export { MemoryExports } from './memory-exports.js';
export { NbdConnection, type NbdConnectionOptions } from './nbd-connection.js';
export * from './nbd-protocol.js';
export { NbdServer, type NbdServerOptions } from './nbd-server.js';
export {
  type ExportRoute,
  VolumedriverExports,
  type VolumedriverExportsOptions,
} from './volumedriver-exports.js';
