export * from './constants.js';
export { VdErrorCode, vdError } from './errors.js';
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
