import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import {
  AssertionFailure,
  errorMessage,
  grpcErrorOf,
  ShaleError,
  shaleErrorFromGrpc,
} from '@shale/common';
import type {
  BlockExtent,
  IoRequest,
  ScrubReport,
  SnapshotInfo,
  StorageRouterInfo,
  VdiskDataLoss,
  VdiskInfo,
  VdiskLocation,
  VdiskOpenError,
  VdiskParent,
  VdiskState,
  VdiskStats,
  VpoolInfo,
  WriteBufferSpaceStatus,
} from './api-types.js';
import { VDISK_STATES } from './api-types.js';
import { VdErrorCode, vdError } from './errors.js';
import { IO_REQUEST_MAX_BYTES } from './service-constants.js';

/** The .proto of the VolumeService; clients (the edge, the CLI) load it from here. */
export const VOLUME_PROTO_PATH = fileURLToPath(new URL('../proto/volume.proto', import.meta.url));

const definition = protoLoader.loadSync(VOLUME_PROTO_PATH, {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  shale: { volumedriver: { v1: { VolumeService: grpc.ServiceClientConstructor } } };
};
export const VolumeServiceClient: grpc.ServiceClientConstructor =
  loaded.shale.volumedriver.v1.VolumeService;
export const volumeServiceDefinition: grpc.ServiceDefinition = VolumeServiceClient.service;

/**
 * The code of a failure that is not a ShaleError (a bug in the manager or in this service).
 * Not in errors.ts because that file belongs to another change; move it there.
 */
export const VD_INTERNAL = 'VD_INTERNAL';

/** The one table between volumedriver error codes (and the KV's that pass through) and gRPC statuses. */
const STATUS_OF_CODE: Readonly<Record<string, grpc.status>> = {
  [VdErrorCode.InvalidArgument]: grpc.status.INVALID_ARGUMENT,
  [VdErrorCode.Corrupt]: grpc.status.DATA_LOSS,
  [VdErrorCode.ScoNotFound]: grpc.status.NOT_FOUND,
  [VdErrorCode.ScoExists]: grpc.status.ALREADY_EXISTS,
  [VdErrorCode.NoSpace]: grpc.status.RESOURCE_EXHAUSTED,
  [VdErrorCode.IoError]: grpc.status.INTERNAL,
  [VdErrorCode.DirLocked]: grpc.status.FAILED_PRECONDITION,
  [VdErrorCode.Closed]: grpc.status.UNAVAILABLE,
  [VdErrorCode.NotFound]: grpc.status.NOT_FOUND,
  [VdErrorCode.Exists]: grpc.status.ALREADY_EXISTS,
  [VdErrorCode.OutOfRange]: grpc.status.OUT_OF_RANGE,
  [VdErrorCode.HasClones]: grpc.status.FAILED_PRECONDITION,
  [VdErrorCode.Fenced]: grpc.status.FAILED_PRECONDITION,
  [VdErrorCode.Busy]: grpc.status.ABORTED,
  [VdErrorCode.BackendError]: grpc.status.UNAVAILABLE,
  [VdErrorCode.BadState]: grpc.status.FAILED_PRECONDITION,
  [VdErrorCode.OpenFailed]: grpc.status.UNAVAILABLE,
  [VdErrorCode.NotOwner]: grpc.status.FAILED_PRECONDITION,
  KV_UNAVAILABLE: grpc.status.UNAVAILABLE,
  KV_OUTCOME_UNKNOWN: grpc.status.UNKNOWN,
};

/** Any failure as a ShaleError: itself, or VD_INTERNAL with it as the cause. */
export function asShaleError(err: unknown): ShaleError {
  if (err instanceof ShaleError) return err;
  return new ShaleError(VD_INTERNAL, `internal error: ${errorMessage(err)}`, { cause: err });
}

export function toGrpcError(err: unknown): grpc.ServiceError {
  const shaleError = asShaleError(err);
  return grpcErrorOf(shaleError, STATUS_OF_CODE[shaleError.code] ?? grpc.status.INTERNAL);
}

/** Client side: a failed call as a ShaleError with the server's stable code (VD_* otherwise). */
export function fromGrpcError(err: grpc.ServiceError, what: string): ShaleError {
  return shaleErrorFromGrpc(err, what, 'VD');
}

/** A programmer error must crash the process, after the caller got its answer. */
export function crashOnAssertion(err: unknown): void {
  if (err instanceof AssertionFailure) {
    process.nextTick(() => {
      throw err;
    });
  }
}

/** Wraps an async handler: answers with the result or the mapped error; crashes on a broken invariant. */
export function unary<Req, Res>(
  handle: (request: Req) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let answer: Promise<Res>;
    try {
      answer = handle(call.request);
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (response) => callback(null, response),
      (err: unknown) => {
        callback(toGrpcError(err), null);
        crashOnAssertion(err);
      },
    );
  };
}

// ---- Messages, as proto-loader decodes them (camelCase, uint64 as numbers, enums as names).

export type ProtoIoOp =
  | 'OP_UNSPECIFIED'
  | 'READ'
  | 'WRITE'
  | 'FLUSH'
  | 'TRIM'
  | 'WRITE_ZEROES'
  | 'BLOCK_STATUS';

export interface ProtoIoRequest {
  id: number;
  /** A name, or a number the proto does not know (a newer or broken client). */
  op: ProtoIoOp | number;
  offsetBytes: number;
  lengthBytes: number;
  data: Buffer;
  fua: boolean;
}

export interface ProtoIoBatch {
  vdiskName: string;
  requests: ProtoIoRequest[];
}

export interface ProtoIoReply {
  id: number;
  data: Buffer;
  errorCode: string;
  errorMessage: string;
}

export interface ProtoIoReplyBatch {
  replies: ProtoIoReply[];
}

export interface ProtoVdiskInfo
  extends Omit<VdiskInfo, 'parent' | 'stats' | 'snapshots' | 'state' | 'openError' | 'dataLoss'> {
  parent: VdiskParent | null;
  stats: VdiskStats | null;
  snapshots: SnapshotInfo[];
  state: string;
  openError: VdiskOpenError | null;
  dataLoss: VdiskDataLoss | null;
}

export interface ProtoHealthReply {
  ok: boolean;
  nodeId: string;
  vdisksOpen: number;
  vdisksFailed: number;
  writeBuffer: WriteBufferSpaceStatus | null;
}

// ---- Conversions. Fields are copied one by one so that nothing the api types do not name
// (a manager's internal field) reaches the wire, and nothing the wire adds reaches callers.

export function vpoolToProto(info: VpoolInfo): VpoolInfo {
  return {
    id: info.id,
    name: info.name,
    backendId: info.backendId,
    presetName: info.presetName,
    clusterSizeBytes: info.clusterSizeBytes,
    scoSizeBytes: info.scoSizeBytes,
    writeBufferBytes: info.writeBufferBytes,
    createdAtMs: info.createdAtMs,
  };
}

export const vpoolFromProto = vpoolToProto;

export function snapshotToProto(info: SnapshotInfo): SnapshotInfo {
  return {
    id: info.id,
    name: info.name,
    createdAtMs: info.createdAtMs,
    inBackend: info.inBackend,
    clones: [...info.clones],
  };
}

export const snapshotFromProto = snapshotToProto;

function parentCopy(parent: VdiskParent): VdiskParent {
  return {
    vdiskId: parent.vdiskId,
    vdiskName: parent.vdiskName,
    snapshotId: parent.snapshotId,
    snapshotName: parent.snapshotName,
  };
}

function statsCopy(stats: VdiskStats): VdiskStats {
  return {
    readOps: stats.readOps,
    writeOps: stats.writeOps,
    readBytes: stats.readBytes,
    writeBytes: stats.writeBytes,
    flushOps: stats.flushOps,
    trimOps: stats.trimOps,
    writeBufferDirtyBytes: stats.writeBufferDirtyBytes,
    uploadBacklogObjects: stats.uploadBacklogObjects,
    scosUploaded: stats.scosUploaded,
    tlogsUploaded: stats.tlogsUploaded,
    bytesUploaded: stats.bytesUploaded,
    currentScoNumber: stats.currentScoNumber,
    tlogCount: stats.tlogCount,
    dataAtRiskBytes: stats.dataAtRiskBytes,
    dataAtRiskAgeMs: stats.dataAtRiskAgeMs,
    dataAtRiskBoundMs: stats.dataAtRiskBoundMs,
    uploadError: stats.uploadError,
    writeLaneError: stats.writeLaneError,
  };
}

function openErrorCopy(error: VdiskOpenError): VdiskOpenError {
  return { code: error.code, message: error.message, atMs: error.atMs };
}

function dataLossCopy(loss: VdiskDataLoss): VdiskDataLoss {
  return { sinceMs: loss.sinceMs, nodeId: loss.nodeId, detectedAtMs: loss.detectedAtMs };
}

export function vdiskToProto(info: VdiskInfo): ProtoVdiskInfo {
  return {
    id: info.id,
    name: info.name,
    vpoolName: info.vpoolName,
    sizeBytes: info.sizeBytes,
    clusterSizeBytes: info.clusterSizeBytes,
    scoSizeBytes: info.scoSizeBytes,
    namespace: info.namespace,
    parent: info.parent === undefined ? null : parentCopy(info.parent),
    ownerNodeId: info.ownerNodeId,
    createdAtMs: info.createdAtMs,
    snapshots: info.snapshots.map(snapshotToProto),
    stats: info.stats === undefined ? null : statsCopy(info.stats),
    state: info.state,
    openError: info.openError === undefined ? null : openErrorCopy(info.openError),
    dataLoss: info.dataLoss === undefined ? null : dataLossCopy(info.dataLoss),
  };
}

export function vdiskFromProto(message: ProtoVdiskInfo): VdiskInfo {
  return {
    id: message.id,
    name: message.name,
    vpoolName: message.vpoolName,
    sizeBytes: message.sizeBytes,
    clusterSizeBytes: message.clusterSizeBytes,
    scoSizeBytes: message.scoSizeBytes,
    namespace: message.namespace,
    parent: message.parent === null ? undefined : parentCopy(message.parent),
    ownerNodeId: message.ownerNodeId,
    createdAtMs: message.createdAtMs,
    snapshots: message.snapshots.map(snapshotFromProto),
    stats: message.stats === null ? undefined : statsCopy(message.stats),
    // An older volumedriver sends no state: what the stats say is all that is known.
    state: (VDISK_STATES as readonly string[]).includes(message.state)
      ? (message.state as VdiskState)
      : message.stats === null
        ? 'elsewhere'
        : 'open',
    openError: message.openError === null ? undefined : openErrorCopy(message.openError),
    dataLoss: message.dataLoss === null ? undefined : dataLossCopy(message.dataLoss),
  };
}

export function scrubReportCopy(report: ScrubReport): ScrubReport {
  return {
    scosExamined: report.scosExamined,
    scosRewritten: report.scosRewritten,
    clustersMoved: report.clustersMoved,
    scosCreated: report.scosCreated,
    backendBytesBefore: report.backendBytesBefore,
    backendBytesAfter: report.backendBytesAfter,
    aborted: report.aborted,
  };
}

export function routerCopy(info: StorageRouterInfo): StorageRouterInfo {
  return {
    nodeId: info.nodeId,
    address: info.address,
    startedAtMs: info.startedAtMs,
    ...(info.dataAddress ? { dataAddress: info.dataAddress } : {}),
  };
}

export function locationCopy(location: VdiskLocation): VdiskLocation {
  return {
    vdiskName: location.vdiskName,
    vdiskId: location.vdiskId,
    sizeBytes: location.sizeBytes,
    clusterSizeBytes: location.clusterSizeBytes,
    ownerNodeId: location.ownerNodeId,
    ownerAddress: location.ownerAddress,
    ownerDataAddress: location.ownerDataAddress ?? '',
    failoverRouters: location.failoverRouters.map(routerCopy),
  };
}

const EMPTY = Buffer.alloc(0);

/** Client side: one api request as a wire request. */
export function ioRequestToProto(id: number, request: IoRequest): ProtoIoRequest {
  switch (request.op) {
    case 'read':
      return {
        id,
        op: 'READ',
        offsetBytes: request.offsetBytes,
        lengthBytes: request.lengthBytes,
        data: EMPTY,
        fua: false,
      };
    case 'write':
      return {
        id,
        op: 'WRITE',
        offsetBytes: request.offsetBytes,
        lengthBytes: request.data.length,
        data: request.data,
        fua: request.fua,
      };
    case 'flush':
      return { id, op: 'FLUSH', offsetBytes: 0, lengthBytes: 0, data: EMPTY, fua: false };
    case 'blockStatus':
      return {
        id,
        op: 'BLOCK_STATUS',
        offsetBytes: request.offsetBytes,
        lengthBytes: request.lengthBytes,
        data: EMPTY,
        fua: false,
      };
    case 'trim':
    case 'writeZeroes':
      return {
        id,
        op: request.op === 'trim' ? 'TRIM' : 'WRITE_ZEROES',
        offsetBytes: request.offsetBytes,
        lengthBytes: request.lengthBytes,
        data: EMPTY,
        fua: request.fua,
      };
  }
}

/**
 * Server side: a wire request as an api request, or VD_INVALID_ARGUMENT for what no vDisk
 * could serve (an unknown op, a write without data, a request above IO_REQUEST_MAX_BYTES).
 * Ranges are checked by the vDisk itself (VD_OUT_OF_RANGE).
 */
export function ioRequestFromProto(message: ProtoIoRequest): IoRequest {
  const { op, offsetBytes, lengthBytes, fua } = message;
  switch (op) {
    case 'READ':
      if (lengthBytes > IO_REQUEST_MAX_BYTES) {
        throw vdError(
          VdErrorCode.InvalidArgument,
          `read of ${lengthBytes} bytes: at most ${IO_REQUEST_MAX_BYTES} per request`,
        );
      }
      return { op: 'read', offsetBytes, lengthBytes };
    case 'WRITE':
      if (message.data.length === 0)
        throw vdError(VdErrorCode.InvalidArgument, 'write request without data');
      if (message.data.length > IO_REQUEST_MAX_BYTES) {
        throw vdError(
          VdErrorCode.InvalidArgument,
          `write of ${message.data.length} bytes: at most ${IO_REQUEST_MAX_BYTES} per request`,
        );
      }
      return { op: 'write', offsetBytes, data: message.data, fua };
    case 'FLUSH':
      return { op: 'flush' };
    case 'TRIM':
      return { op: 'trim', offsetBytes, lengthBytes, fua };
    case 'WRITE_ZEROES':
      return { op: 'writeZeroes', offsetBytes, lengthBytes, fua };
    case 'BLOCK_STATUS':
      return { op: 'blockStatus', offsetBytes, lengthBytes };
    default:
      throw vdError(VdErrorCode.InvalidArgument, `unknown Io op ${String(op)}`);
  }
}

/** Size of one block-status extent on the wire (u32 length, u32 flags). */
const EXTENT_WIRE_BYTES = 8;
const EXTENT_FLAG_HOLE = 1;

/** Block-status extents as IoReply.data (volume.proto). */
export function encodeExtents(extents: readonly BlockExtent[]): Buffer {
  const out = Buffer.allocUnsafe(extents.length * EXTENT_WIRE_BYTES);
  for (let i = 0; i < extents.length; i += 1) {
    const extent = extents[i] as BlockExtent;
    out.writeUInt32BE(extent.lengthBytes, i * EXTENT_WIRE_BYTES);
    out.writeUInt32BE(extent.hole ? EXTENT_FLAG_HOLE : 0, i * EXTENT_WIRE_BYTES + 4);
  }
  return out;
}

/** IoReply.data of a BLOCK_STATUS request as extents; VD_RPC_FAILED when it is malformed. */
export function decodeExtents(data: Buffer, what: string): BlockExtent[] {
  if (data.length === 0 || data.length % EXTENT_WIRE_BYTES !== 0) {
    throw new ShaleError(
      'VD_RPC_FAILED',
      `${what}: a block-status reply of ${data.length} bytes (not a positive multiple of ${EXTENT_WIRE_BYTES})`,
    );
  }
  const extents: BlockExtent[] = [];
  for (let at = 0; at < data.length; at += EXTENT_WIRE_BYTES) {
    const lengthBytes = data.readUInt32BE(at);
    if (lengthBytes === 0) {
      throw new ShaleError('VD_RPC_FAILED', `${what}: a block-status extent of length 0`);
    }
    extents.push({ lengthBytes, hole: (data.readUInt32BE(at + 4) & EXTENT_FLAG_HOLE) !== 0 });
  }
  return extents;
}
