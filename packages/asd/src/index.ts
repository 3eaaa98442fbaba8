export { AsdClient, type AsdClientOptions, type CallOptions } from './client.js';
export * as asdConstants from './constants.js';
export { AsdDaemon, type AsdDaemonOptions } from './daemon.js';
export { AsdDataClient, type AsdDataClientOptions } from './data-client.js';
export { AsdDataOp } from './data-protocol.js';
export { AsdDataServer } from './data-server.js';
export type { Disk } from './disk.js';
export { nodeDisk } from './disk.js';
export { AsdErrorCode, describeKey } from './errors.js';
export { AsdMetrics } from './metrics.js';
export {
  type AsdStats,
  AsdStore,
  type AsdStoreOptions,
  type GetValue,
  type ItemResult,
  type ListEntry,
} from './object-store.js';
export { ASD_PROTO_PATH } from './proto-definition.js';
export type { PutItem, Slice } from './request-validation.js';
