/**
 * `@shale/volumedriver/client`: what talks to a volumedriver from another process — the
 * gRPC control client (VolumeClient, with the Io stream), the data protocol's client
 * (VolumeDataStream) and the public types — and nothing of the engine behind them (no
 * Volume, LBA map, LevelDB, proxy engine, Reed-Solomon). The remote edge, the API and the
 * CLI import this. A test checks the module graph stays that way.
 */
export type * from './api-types.js';
export { VDISK_STATES } from './api-types.js';
export {
  VolumeDataStream,
  type VolumeDataStreamOptions,
  type VolumeIoChannel,
} from './data-client.js';
export { DataOp } from './data-protocol.js';
export { VdErrorCode } from './errors.js';
export { VolumeClient, VolumeIoStream } from './volume-service.js';
