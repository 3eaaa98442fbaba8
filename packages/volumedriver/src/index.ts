export type * from './api-types.js';
export { VDISK_STATES } from './api-types.js';
export * from './constants.js';
export {
  ENGINE_CACHE_DEFAULT_BYTES,
  type EngineBackendOptions,
  EngineVolumeBackend,
} from './engine-backend.js';
export { VdErrorCode, vdError } from './errors.js';
export { type FoldedMap, foldTLogs } from './history.js';
export { LbaMap, type LbaMapOptions, type LbaUpdate } from './lba-map.js';
export {
  nodeScoDisk,
  type ScoDisk,
  type ScoReadHandle,
  type ScoWriteHandle,
} from './sco-disk.js';
export { checkScoSize, parseScoFileName, scoFileName, scoFilePath } from './sco-file.js';
export { ScoReader, type ScoReaderOptions } from './sco-reader.js';
export {
  type ScoAppendResult,
  ScoWriter,
  type ScoWriterOptions,
  type SealedSco,
} from './sco-writer.js';
export * from './service-constants.js';
export { TLogWriter, tlogFileName } from './tlog-file.js';
export {
  decodeTLogEntry,
  encodeTLogEntry,
  encodeTLogEntryInto,
  readTLog,
  type TLogDecodeResult,
  type TLogEntry,
  TLogEntryType,
  type TLogReadResult,
} from './tlog-format.js';
export {
  type ClusterIndex,
  type ClusterLocation,
  clusterIndex,
  type ScoNumber,
  scoNumber,
} from './types.js';
export { foldVdiskFromBackend, Volume, type VolumeOptions } from './volume.js';
export {
  type BackendSlice,
  MemoryVolumeBackend,
  ProxyVolumeBackend,
  type VolumeBackend,
} from './volume-backend.js';
export { VD_INTERNAL, VOLUME_PROTO_PATH } from './volume-grpc.js';
export { VolumeManager, type VolumeManagerOptions } from './volume-manager.js';
export {
  createVolumeGrpcServer,
  createVolumeServiceCounters,
  VolumeClient,
  type VolumeHealth,
  VolumeIoStream,
  type VolumeServiceCounters,
  type VolumeServiceOptions,
} from './volume-service.js';
export { VolumedriverDaemon, type VolumedriverDaemonOptions } from './volumedriver-daemon.js';
