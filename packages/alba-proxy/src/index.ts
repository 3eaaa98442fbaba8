export {
  type BackendRecord,
  BackendRegistry,
  type CreateBackendInput,
  checkRegistryId,
  type OsdRecord,
  type OsdRecordState,
} from './backend-registry.js';
export {
  type BlockEntry,
  blockCount,
  blockEntryBytes,
  blockTableBytes,
  coveringBlocks,
  parseBlockEntries,
  payloadsSpan,
} from './block-table.js';
export {
  assemble,
  type DecodeStep,
  decodeStored,
  type FragmentSlice,
  fragmentSizeFor,
  planRead,
  type ReadPlan,
  rebuildFragments,
  type StripeLayout,
  verifyFragments,
} from './chunk-format.js';
export { type ChunkSpan, chunkCount, chunkSizeMaxBytes, chunkSpans } from './chunking.js';
export * from './constants.js';
export {
  coderFragmentSizeBytes,
  decodeUnitBytes,
  encodeParity,
  reconstructShards,
} from './erasure-coder.js';
export { ProxyErrorCode, proxyError } from './errors.js';
export {
  FragmentCache,
  type FragmentCacheOptions,
  type FragmentCacheStats,
} from './fragment-cache.js';
export {
  type OsdState,
  type PlacementOptions,
  placeableFragmentCount,
  placeFragments,
  usableOsds,
} from './fragment-placement.js';
export {
  FileKeyProvider,
  type FileKeyProviderOptions,
  type KeyProvider,
  memoryKeyProvider,
} from './key-provider.js';
export {
  DEFAULT_MAINTENANCE_LIMITS,
  Maintenance,
  type MaintenanceLimits,
  type MaintenanceLoopOptions,
  type MaintenanceOptions,
  type MaintenanceStats,
  maintenanceKeys,
  type PassOptions,
  type PassSummary,
  runMaintenanceLoop,
  type UnrecoverableObject,
} from './maintenance.js';
export { createMaintenanceMetrics } from './maintenance-metrics.js';
export { decodeManifest, encodeManifest, type Manifest, placedCounts } from './manifest.js';
export {
  estimateManifestInfoBytes,
  type ManifestBudget,
  type ManifestBudgetInput,
} from './manifest-budget.js';
export {
  type DeleteNamespaceReport,
  deleteUnderPrefix,
  type NamespaceInfo,
  NamespaceManager,
  type NamespaceManagerOptions,
  type NamespaceRecord,
  type NamespaceState,
} from './namespace-manager.js';
export {
  type ChunkDecode,
  type ChunkInfo,
  type CodecParams,
  chunkLayout,
  type DecodeContext,
  decodeChunk,
  decodeObject,
  type EncodedChunk,
  type EncodedObject,
  type EncodeOptions,
  encodeObject,
  type FetchFragments,
  type FragmentRead,
  type ObjectCodecInfo,
  objectInfoOf,
  planRange,
  type RangePiece,
  type ReadRangeOptions,
  readRange,
} from './object-codec.js';
export {
  checkNamespaceId,
  checkObjectName,
  fragmentKey,
  namespaceFragmentPrefix,
  nsKeys,
  versionHex,
} from './object-keys.js';
export {
  AsdOsd,
  type FragmentWrite,
  type Osd,
  type OsdAddress,
  type OsdCallOptions,
  type OsdCapacity,
} from './osd.js';
export { defaultOsdFactory, type OsdFactory, OsdPool } from './osd-pool.js';
export { choosePolicy, type PolicyChoice } from './policy.js';
export {
  type Checksum,
  type Compression,
  DEFAULT_PRESET_MULTI_NODE,
  DEFAULT_PRESET_SINGLE_NODE,
  type Encryption,
  type Policy,
  type Preset,
  type PresetJson,
  parsePreset,
  presetToJson,
  validatePolicy,
  worstFragmentSizeBytes,
} from './preset.js';
export { ProxyDaemon, type ProxyDaemonOptions } from './proxy-daemon.js';
export {
  type DamagedFragment,
  DEFAULT_PROXY_LIMITS,
  type ObjectListing,
  type ObjectSlice,
  ProxyEngine,
  type ProxyEngineOptions,
  type ProxyLimits,
  type ProxyStats,
  type PutOptions,
  type PutResult,
} from './proxy-engine.js';
export { PROXY_PROTO_PATH } from './proxy-grpc.js';
export {
  createProxyGrpcServer,
  PROXY_MAX_MESSAGE_BYTES,
  ProxyClient,
  type ProxyHealth,
} from './proxy-service.js';
export type { RandomSource } from './random-source.js';
export { TokenBucket } from './token-bucket.js';
