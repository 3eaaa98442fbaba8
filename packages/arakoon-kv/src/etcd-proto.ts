import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { assert } from '@shale/common';

/** Our subset of etcd's v3 API (see the comment at the top of the file). */
export const ETCD_PROTO_PATH = fileURLToPath(new URL('../proto/etcd.proto', import.meta.url));

const packageDefinition = protoLoader.loadSync(ETCD_PROTO_PATH, {
  keepCase: false,
  // int64/uint64 as decimal strings: revisions are converted (and checked) by the caller;
  // lease and member ids are 64-bit random numbers and must stay strings.
  longs: String,
  defaults: true,
  oneofs: true,
});

interface EtcdPackage {
  etcdserverpb: Record<
    'KV' | 'Watch' | 'Lease' | 'Maintenance' | 'Auth',
    grpc.ServiceClientConstructor
  >;
}

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as EtcdPackage;

type Method = grpc.MethodDefinition<object, unknown>;

function method(service: keyof EtcdPackage['etcdserverpb'], name: string): Method {
  const definition = loaded.etcdserverpb[service].service[name];
  assert(definition !== undefined, `etcd.proto has no ${service}.${name}`);
  return definition as Method;
}

export const etcdMethods = {
  range: method('KV', 'Range'),
  put: method('KV', 'Put'),
  deleteRange: method('KV', 'DeleteRange'),
  txn: method('KV', 'Txn'),
  watch: method('Watch', 'Watch'),
  leaseGrant: method('Lease', 'LeaseGrant'),
  leaseRevoke: method('Lease', 'LeaseRevoke'),
  leaseKeepAlive: method('Lease', 'LeaseKeepAlive'),
  status: method('Maintenance', 'Status'),
  authenticate: method('Auth', 'Authenticate'),
} as const;

export type EtcdMethod = keyof typeof etcdMethods;

// Wire shapes as proto-loader produces them (camelCase, int64 as string, bytes as Buffer).
export interface WireHeader {
  clusterId: string;
  memberId: string;
  revision: string;
  raftTerm: string;
}
export interface WireKeyValue {
  key: Buffer;
  createRevision: string;
  modRevision: string;
  version: string;
  value: Buffer;
  lease: string;
}
export interface WireRangeRequest {
  key: Buffer;
  rangeEnd?: Buffer;
  limit?: number;
}
export interface WireRangeResponse {
  header: WireHeader;
  kvs: WireKeyValue[];
  more: boolean;
  count: string;
}
export interface WirePutRequest {
  key: Buffer;
  value: Buffer;
  lease?: string;
}
export interface WirePutResponse {
  header: WireHeader;
}
export interface WireDeleteRangeRequest {
  key: Buffer;
  rangeEnd?: Buffer;
}
export interface WireDeleteRangeResponse {
  header: WireHeader;
  deleted: string;
}
export type WireRequestOp =
  | { requestRange: WireRangeRequest }
  | { requestPut: WirePutRequest }
  | { requestDeleteRange: WireDeleteRangeRequest };
export interface WireResponseOp {
  response?: 'responseRange' | 'responsePut' | 'responseDeleteRange';
  responseRange?: WireRangeResponse | null;
  responsePut?: WirePutResponse | null;
  responseDeleteRange?: WireDeleteRangeResponse | null;
}
export interface WireCompare {
  result: number;
  target: number;
  key: Buffer;
  version?: string;
  createRevision?: string;
  modRevision?: string;
  value?: Buffer;
}
export interface WireTxnRequest {
  compare: WireCompare[];
  success: WireRequestOp[];
  failure: WireRequestOp[];
}
export interface WireTxnResponse {
  header: WireHeader;
  succeeded: boolean;
  responses: WireResponseOp[];
}
export interface WireEvent {
  type: 'PUT' | 'DELETE' | number;
  kv: WireKeyValue | null;
}
export interface WireWatchRequest {
  createRequest?: {
    key: Buffer;
    rangeEnd: Buffer;
    startRevision: string;
    progressNotify: boolean;
  };
  cancelRequest?: { watchId: string };
}
export interface WireWatchResponse {
  header: WireHeader | null;
  watchId: string;
  created: boolean;
  canceled: boolean;
  compactRevision: string;
  cancelReason: string;
  events: WireEvent[];
}
export interface WireLeaseGrantResponse {
  header: WireHeader;
  ID: string;
  TTL: string;
  error: string;
}
export interface WireLeaseKeepAliveResponse {
  header: WireHeader;
  ID: string;
  TTL: string;
}
export interface WireStatusResponse {
  header: WireHeader;
  version: string;
  leader: string;
}
export interface WireAuthenticateResponse {
  header: WireHeader;
  token: string;
}
