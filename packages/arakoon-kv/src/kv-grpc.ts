import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { AssertionFailure, assert, errorMessage, grpcErrorOf, ShaleError } from '@shale/common';
import { KvErrorCode, kvError } from './errors.js';
import { toBuffer } from './key-range.js';
import type {
  Compare,
  CompareOp,
  KeyRange,
  KeyValue,
  LeaseId,
  TxnOp,
  TxnOpResult,
  WatchEvent,
} from './kv-store.js';
import { NO_LEASE } from './kv-store.js';

/**
 * The KvService's wire: its .proto, the messages as proto-loader decodes them, the
 * conversions to and from the KvStore shapes (shared by KvServer and RemoteKv), and the one
 * table from KvStore error codes to gRPC statuses.
 */
export const KV_PROTO_PATH = fileURLToPath(new URL('../proto/kv.proto', import.meta.url));

const packageDefinition = protoLoader.loadSync(KV_PROTO_PATH, {
  keepCase: false,
  // uint64 as JS numbers: revisions, versions and counts stay below 2^53 (checked on receipt).
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  shale: { kv: { v1: { KvService: grpc.ServiceClientConstructor } } };
};
export const kvServiceDefinition: grpc.ServiceDefinition = loaded.shale.kv.v1.KvService.service;

type Method = grpc.MethodDefinition<object, unknown>;

function method(name: string): Method {
  const definition = kvServiceDefinition[name];
  assert(definition !== undefined, `kv.proto has no KvService.${name}`);
  return definition as Method;
}

export const kvMethods = {
  get: method('Get'),
  getMany: method('GetMany'),
  put: method('Put'),
  delete: method('Delete'),
  range: method('Range'),
  txn: method('Txn'),
  allocate: method('Allocate'),
  grantLease: method('GrantLease'),
  keepAlive: method('KeepAlive'),
  revokeLease: method('RevokeLease'),
  watch: method('Watch'),
} as const;

export type KvMethod = keyof typeof kvMethods;

// ---- Messages, as proto-loader decodes them (camelCase, uint64 as numbers, enums as names,
// bytes as Buffers, absent messages as null).

export interface WireKeyValue {
  key: Buffer;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
  leaseId: string;
}
export interface WireGetReply {
  item: WireKeyValue | null;
}
export interface WireGetManyReply {
  items: WireGetReply[];
}
export interface WireWriteReply {
  revision: number;
}
export interface WireDeleteReply {
  revision: number;
  deleted: boolean;
}
export interface WireKeyRange {
  prefix?: { prefix: Buffer } | null;
  interval?: { start: Buffer; end: Buffer } | null;
  kind?: 'prefix' | 'interval';
}
export interface WireRangeRequest {
  range: WireKeyRange | null;
  limit: number;
  continuation: Buffer;
}
export interface WireRangeReply {
  items: WireKeyValue[];
  continuation: Buffer;
  revision: number;
}
export type WireCompareTarget = 'VALUE' | 'VERSION' | 'CREATE_REVISION' | 'MOD_REVISION';
export type WireCompareOp = 'EQUAL' | 'NOT_EQUAL' | 'GREATER' | 'LESS';
export interface WireCompare {
  key: Buffer;
  /** A name, or whatever an unknown client sent. */
  target: WireCompareTarget | string;
  op: WireCompareOp | string;
  value: Buffer;
  number: number;
}
export type WireTxnOpType = 'GET' | 'PUT' | 'DELETE' | 'DELETE_PREFIX';
export interface WireTxnOp {
  type: WireTxnOpType | string;
  key: Buffer;
  value: Buffer;
  leaseId: string;
}
export interface WireTxnOpResult {
  type: WireTxnOpType | string;
  item: WireKeyValue | null;
  deletedCount: number;
}
export interface WireTxnRequest {
  compares: WireCompare[];
  success: WireTxnOp[];
  failure: WireTxnOp[];
}
export interface WireTxnReply {
  succeeded: boolean;
  revision: number;
  results: WireTxnOpResult[];
}
export interface WireAllocateReply {
  first: number;
  count: number;
}
export interface WireLeaseReply {
  leaseId: string;
  ttlMs: number;
}
export interface WireWatchRequest {
  prefix: Buffer;
  fromRevision: number;
}
export interface WireWatchEvent {
  type: 'PUT_EVENT' | 'DELETE_EVENT' | string;
  key: Buffer;
  value: Buffer;
  modRevision: number;
  createRevision: number;
  version: number;
}
export interface WireWatchBatch {
  events: WireWatchEvent[];
  revision: number;
  more: boolean;
  created: boolean;
}

// ---- Conversions. Requests are checked again by the store behind the server; these only
// refuse what the wire itself can get wrong (an unknown enum value, a missing oneof).

const EMPTY = Buffer.alloc(0);

/** A number received from the wire: a revision, version or count below 2^53. */
export function wireNumber(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw kvError(KvErrorCode.Internal, `${what} out of range on the wire: ${value}`);
  }
  return value;
}

export function leaseToWire(leaseId: LeaseId | undefined): string {
  return leaseId === undefined || leaseId === NO_LEASE ? '' : leaseId;
}

export function leaseFromWire(leaseId: string): LeaseId | undefined {
  return leaseId === '' ? undefined : (leaseId as LeaseId);
}

export function kvToWire(kv: KeyValue): WireKeyValue {
  return {
    key: kv.key,
    value: kv.value,
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
    leaseId: leaseToWire(kv.leaseId),
  };
}

export function kvFromWire(kv: WireKeyValue): KeyValue {
  return {
    key: kv.key,
    value: kv.value,
    createRevision: wireNumber(kv.createRevision, 'createRevision'),
    modRevision: wireNumber(kv.modRevision, 'modRevision'),
    version: wireNumber(kv.version, 'version'),
    leaseId: leaseFromWire(kv.leaseId) ?? NO_LEASE,
  };
}

export function maybeKvFromWire(kv: WireKeyValue | null): KeyValue | undefined {
  return kv === null ? undefined : kvFromWire(kv);
}

export function rangeToWire(range: KeyRange): WireKeyRange {
  if ('prefix' in range) return { prefix: { prefix: toBuffer(range.prefix) } };
  return {
    interval: {
      start: toBuffer(range.start),
      end: range.end === undefined ? EMPTY : toBuffer(range.end),
    },
  };
}

export function rangeFromWire(range: WireKeyRange | null): KeyRange {
  if (range?.kind === 'prefix' && range.prefix) return { prefix: range.prefix.prefix };
  if (range?.kind === 'interval' && range.interval) {
    const { start, end } = range.interval;
    return end.length === 0 ? { start } : { start, end };
  }
  throw kvError(KvErrorCode.BadRequest, 'Range request without a prefix or an interval');
}

const COMPARE_OP_TO_WIRE: Readonly<Record<CompareOp, WireCompareOp>> = {
  equal: 'EQUAL',
  notEqual: 'NOT_EQUAL',
  greater: 'GREATER',
  less: 'LESS',
};
const COMPARE_OP_FROM_WIRE: Readonly<Record<string, CompareOp>> = {
  EQUAL: 'equal',
  NOT_EQUAL: 'notEqual',
  GREATER: 'greater',
  LESS: 'less',
};
const COMPARE_TARGET_TO_WIRE = {
  value: 'VALUE',
  version: 'VERSION',
  createRevision: 'CREATE_REVISION',
  modRevision: 'MOD_REVISION',
} as const;
const NUMERIC_TARGET_FROM_WIRE: Readonly<
  Record<string, 'version' | 'createRevision' | 'modRevision'>
> = {
  VERSION: 'version',
  CREATE_REVISION: 'createRevision',
  MOD_REVISION: 'modRevision',
};

export function compareToWire(compare: Compare): WireCompare {
  return {
    key: toBuffer(compare.key),
    target: COMPARE_TARGET_TO_WIRE[compare.target],
    op: COMPARE_OP_TO_WIRE[compare.op],
    value: compare.target === 'value' ? toBuffer(compare.value) : EMPTY,
    number: compare.target === 'value' ? 0 : compare.number,
  };
}

export function compareFromWire(compare: WireCompare): Compare {
  const op = COMPARE_OP_FROM_WIRE[compare.op];
  if (op === undefined) throw kvError(KvErrorCode.BadRequest, `unknown compare op ${compare.op}`);
  if (compare.target === 'VALUE') {
    return { key: compare.key, target: 'value', op, value: compare.value };
  }
  const target = NUMERIC_TARGET_FROM_WIRE[compare.target];
  if (target === undefined) {
    throw kvError(KvErrorCode.BadRequest, `unknown compare target ${compare.target}`);
  }
  return { key: compare.key, target, op, number: compare.number };
}

export function opToWire(op: TxnOp): WireTxnOp {
  switch (op.type) {
    case 'get':
      return { type: 'GET', key: toBuffer(op.key), value: EMPTY, leaseId: '' };
    case 'put':
      return {
        type: 'PUT',
        key: toBuffer(op.key),
        value: toBuffer(op.value),
        leaseId: leaseToWire(op.leaseId),
      };
    case 'delete':
      return { type: 'DELETE', key: toBuffer(op.key), value: EMPTY, leaseId: '' };
    case 'deletePrefix':
      return { type: 'DELETE_PREFIX', key: toBuffer(op.prefix), value: EMPTY, leaseId: '' };
  }
}

export function opFromWire(op: WireTxnOp): TxnOp {
  switch (op.type) {
    case 'GET':
      return { type: 'get', key: op.key };
    case 'PUT': {
      const leaseId = leaseFromWire(op.leaseId);
      return leaseId === undefined
        ? { type: 'put', key: op.key, value: op.value }
        : { type: 'put', key: op.key, value: op.value, leaseId };
    }
    case 'DELETE':
      return { type: 'delete', key: op.key };
    case 'DELETE_PREFIX':
      return { type: 'deletePrefix', prefix: op.key };
    default:
      throw kvError(KvErrorCode.BadRequest, `unknown txn op ${op.type}`);
  }
}

export function opResultToWire(result: TxnOpResult): WireTxnOpResult {
  switch (result.type) {
    case 'get':
      return {
        type: 'GET',
        item: result.item === undefined ? null : kvToWire(result.item),
        deletedCount: 0,
      };
    case 'put':
      return { type: 'PUT', item: null, deletedCount: 0 };
    case 'delete':
      return { type: 'DELETE', item: null, deletedCount: result.deletedCount };
  }
}

export function opResultFromWire(result: WireTxnOpResult): TxnOpResult {
  switch (result.type) {
    case 'GET':
      return { type: 'get', item: maybeKvFromWire(result.item) };
    case 'PUT':
      return { type: 'put' };
    case 'DELETE':
      return { type: 'delete', deletedCount: wireNumber(result.deletedCount, 'deletedCount') };
    default:
      throw kvError(KvErrorCode.Internal, `unknown txn op result ${result.type}`);
  }
}

export function eventToWire(event: WatchEvent): WireWatchEvent {
  return {
    type: event.type === 'put' ? 'PUT_EVENT' : 'DELETE_EVENT',
    key: event.key,
    value: event.value,
    modRevision: event.modRevision,
    createRevision: event.createRevision,
    version: event.version,
  };
}

export function eventFromWire(event: WireWatchEvent): WatchEvent {
  if (event.type !== 'PUT_EVENT' && event.type !== 'DELETE_EVENT') {
    throw kvError(KvErrorCode.Internal, `unknown watch event type ${event.type}`);
  }
  return {
    type: event.type === 'PUT_EVENT' ? 'put' : 'delete',
    key: event.key,
    value: event.value,
    modRevision: wireNumber(event.modRevision, 'modRevision'),
    createRevision: wireNumber(event.createRevision, 'createRevision'),
    version: wireNumber(event.version, 'version'),
  };
}

/** Bytes of keys and values an event carries (what the size targets and queue limits count). */
export function eventBytes(event: { readonly key: Buffer; readonly value: Buffer }): number {
  return event.key.length + event.value.length;
}

// ---- Errors on the wire.

/**
 * The one table from KvStore error codes to gRPC statuses. The code itself travels in the
 * "shale-code" trailer; the status is for clients that do not read it.
 */
const STATUS_OF_CODE: Readonly<Record<string, grpc.status>> = {
  [KvErrorCode.BadRequest]: grpc.status.INVALID_ARGUMENT,
  [KvErrorCode.KeyTooLarge]: grpc.status.INVALID_ARGUMENT,
  [KvErrorCode.ValueTooLarge]: grpc.status.INVALID_ARGUMENT,
  [KvErrorCode.TooManyOps]: grpc.status.INVALID_ARGUMENT,
  [KvErrorCode.BadValue]: grpc.status.FAILED_PRECONDITION,
  [KvErrorCode.Unavailable]: grpc.status.UNAVAILABLE,
  [KvErrorCode.OutcomeUnknown]: grpc.status.UNKNOWN,
  [KvErrorCode.TxnFailed]: grpc.status.ABORTED,
  [KvErrorCode.LeaseNotFound]: grpc.status.NOT_FOUND,
  [KvErrorCode.Compacted]: grpc.status.OUT_OF_RANGE,
  [KvErrorCode.NoSpace]: grpc.status.RESOURCE_EXHAUSTED,
  [KvErrorCode.PermissionDenied]: grpc.status.PERMISSION_DENIED,
  [KvErrorCode.DirLocked]: grpc.status.FAILED_PRECONDITION,
  // The server's store is closed: the server is stopping; nothing was done.
  [KvErrorCode.Closed]: grpc.status.UNAVAILABLE,
  [KvErrorCode.Internal]: grpc.status.INTERNAL,
};

/** Any failure as a ShaleError: itself, or KV_INTERNAL with it as the cause. */
export function asShaleError(err: unknown): ShaleError {
  if (err instanceof ShaleError) return err;
  return kvError(KvErrorCode.Internal, `kv server: internal error: ${errorMessage(err)}`, {
    cause: err,
  });
}

export function toGrpcError(err: unknown): grpc.ServiceError {
  const error = asShaleError(err);
  return grpcErrorOf(error, STATUS_OF_CODE[error.code] ?? grpc.status.INTERNAL);
}

/** A programmer error must crash the process, after the caller got its answer. */
export function crashOnAssertion(err: unknown): void {
  if (err instanceof AssertionFailure) {
    process.nextTick(() => {
      throw err;
    });
  }
}
