import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The .proto of the ASD service; other packages that speak it import it from here. */
export const ASD_PROTO_PATH = fileURLToPath(new URL('../proto/asd.proto', import.meta.url));

const packageDefinition = protoLoader.loadSync(ASD_PROTO_PATH, {
  keepCase: false,
  // uint64 fields stay below 2^53 (sizes, counts): plain numbers, not Long objects.
  longs: Number,
  defaults: true,
  oneofs: true,
});

interface AsdPackage {
  shale: { asd: { v1: { AsdService: grpc.ServiceClientConstructor } } };
}

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as AsdPackage;

export const AsdServiceClient: grpc.ServiceClientConstructor = loaded.shale.asd.v1.AsdService;
export const asdServiceDefinition: grpc.ServiceDefinition = AsdServiceClient.service;

// Wire shapes (proto-loader: camelCase fields, bytes as Buffer, defaults filled in).
export interface WireItemError {
  code: string;
  message: string;
}
export interface WirePutRequest {
  items: { key: Buffer; value: Buffer; crc32c?: number }[];
}
export interface WirePutResponse {
  crc32c: number[];
}
export interface WireGetRequest {
  keys: Buffer[];
}
export interface WireGetResponse {
  results: { value: Buffer; crc32c: number; error: WireItemError | null }[];
}
export interface WireGetRangesRequest {
  slices: { key: Buffer; offset: number; length: number }[];
}
export interface WireGetRangesResponse {
  results: { data: Buffer; error: WireItemError | null }[];
}
export interface WireDeleteRequest {
  keys: Buffer[];
}
export interface WireDeleteResponse {
  existed: boolean[];
}
export interface WireListRequest {
  prefix: Buffer;
  startAfter: Buffer;
  limit: number;
}
export interface WireListResponse {
  entries: { key: Buffer; sizeBytes: number; crc32c: number }[];
  more: boolean;
}
export interface WireStatsResponse {
  asdId: string;
  nodeId: string;
  capacityBytes: number;
  usedBytes: number;
  freeBytes: number;
  objectCount: number;
  reserveBytes: number;
  createdAtMs: number;
  version: string;
  filesystemId: string;
  lastNoSpaceAtMs: number;
  /** 0 when the ASD has no data server (older versions). */
  dataPort: number;
}
export interface WireHealthResponse {
  status: string;
  asdId: string;
  reason: string;
}
