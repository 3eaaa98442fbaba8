export * from './constants.js';
export { describeKey, KvErrorCode, kvError } from './errors.js';
export { EtcdKv, type EtcdKvOptions, type EtcdTlsOptions } from './etcd-kv.js';
export { prefixEnd } from './key-range.js';
export { KvDaemon, type KvDaemonOptions } from './kv-daemon.js';
export { KV_PROTO_PATH } from './kv-grpc.js';
export {
  createKvGrpcServer,
  createKvServiceCounters,
  type KvGrpcServer,
  KvServer,
  type KvServerOptions,
  type KvServiceCounters,
} from './kv-server.js';
export type {
  Bytes,
  CallOptions,
  Compare,
  CompareOp,
  DeleteResult,
  KeyRange,
  KeyValue,
  KvStore,
  Lease,
  LeaseId,
  PutOptions,
  RangeOptions,
  RangePage,
  SequenceRange,
  Txn,
  TxnOp,
  TxnOpResult,
  TxnResult,
  WatchBatch,
  WatchEvent,
  Watcher,
  WatchHandler,
  WatchOptions,
  WriteResult,
} from './kv-store.js';
export { NO_LEASE } from './kv-store.js';
export { LevelKv, type LevelKvOptions, type MonotonicClock } from './level-kv.js';
export { RemoteKv, type RemoteKvOptions } from './remote-kv.js';
export type { ReconnectPolicy } from './remote-watch.js';
export { ifAbsent, ifExists, ifUnchanged, ifValueEquals, requireSucceeded } from './txn-helpers.js';
export { jsonCodec, type ProtobufType, protobufCodec, type ValueCodec } from './value-codecs.js';
