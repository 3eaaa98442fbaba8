import { assert } from '@shale/common';
import type { KeyValue, LeaseId, WatchEvent } from './kv-store.js';

/**
 * LevelKv's on-disk layout, in one LevelDB (every write of one revision is one atomic batch):
 *
 *   'k' + key                      -> KvRecord (the live value and its metadata)
 *   'e' + revision u64 + index u32 -> EventRecord (the history watchers read, compacted)
 *   'l' + lease id u64             -> LeaseRecord (ttlMs)
 *   'b' + lease id u64 + key       -> '' (keys bound to a lease, deleted with it)
 *   'm' + name                     -> meta: 'revision', 'compacted', 'next-lease' as u64
 */
export const SPACE_KV = 0x6b;
export const SPACE_EVENT = 0x65;
export const SPACE_LEASE = 0x6c;
export const SPACE_BINDING = 0x62;
export const SPACE_META = 0x6d;

export const META_REVISION = metaKey('revision');
export const META_COMPACTED = metaKey('compacted');
export const META_NEXT_LEASE = metaKey('next-lease');

export function metaKey(name: string): Buffer {
  return Buffer.concat([Buffer.of(SPACE_META), Buffer.from(name, 'latin1')]);
}

export function kvKey(key: Buffer): Buffer {
  return Buffer.concat([Buffer.of(SPACE_KV), key]);
}

export function u64(value: number | bigint): Buffer {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64BE(BigInt(value));
  return buf;
}

export function readU64(buf: Buffer): number {
  const value = Number(buf.readBigUInt64BE(0));
  assert(Number.isSafeInteger(value), 'u64 meta value past 2^53');
  return value;
}

export function eventKey(revision: number, index: number): Buffer {
  const buf = Buffer.alloc(13);
  buf[0] = SPACE_EVENT;
  buf.writeBigUInt64BE(BigInt(revision), 1);
  buf.writeUInt32BE(index, 9);
  return buf;
}

export function eventKeyRevision(key: Buffer): number {
  return Number(key.readBigUInt64BE(1));
}

export function leaseKey(leaseId: LeaseId): Buffer {
  return Buffer.concat([Buffer.of(SPACE_LEASE), u64(BigInt(leaseId))]);
}

export function bindingPrefix(leaseId: LeaseId): Buffer {
  return Buffer.concat([Buffer.of(SPACE_BINDING), u64(BigInt(leaseId))]);
}

export function bindingKey(leaseId: LeaseId, key: Buffer): Buffer {
  return Buffer.concat([bindingPrefix(leaseId), key]);
}

/** KvRecord: createRevision u64, modRevision u64, version u64, lease u64, value bytes. */
const KV_HEADER_BYTES = 32;

export function encodeKv(item: KeyValue): Buffer {
  const buf = Buffer.allocUnsafe(KV_HEADER_BYTES + item.value.length);
  buf.writeBigUInt64BE(BigInt(item.createRevision), 0);
  buf.writeBigUInt64BE(BigInt(item.modRevision), 8);
  buf.writeBigUInt64BE(BigInt(item.version), 16);
  buf.writeBigUInt64BE(BigInt(item.leaseId), 24);
  item.value.copy(buf, KV_HEADER_BYTES);
  return buf;
}

export function decodeKv(key: Buffer, record: Buffer): KeyValue {
  assert(record.length >= KV_HEADER_BYTES, 'LevelKv record shorter than its header');
  return {
    key,
    createRevision: Number(record.readBigUInt64BE(0)),
    modRevision: Number(record.readBigUInt64BE(8)),
    version: Number(record.readBigUInt64BE(16)),
    leaseId: record.readBigUInt64BE(24).toString() as LeaseId,
    value: record.subarray(KV_HEADER_BYTES),
  };
}

/** EventRecord: type u8 (0 put, 1 delete), key length u32, key, then a KvRecord. */
export function encodeEvent(type: 'put' | 'delete', item: KeyValue): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type === 'put' ? 0 : 1;
  head.writeUInt32BE(item.key.length, 1);
  return Buffer.concat([head, item.key, encodeKv(item)]);
}

export function decodeEvent(record: Buffer): WatchEvent {
  const type = record[0] === 0 ? 'put' : 'delete';
  const keyBytes = record.readUInt32BE(1);
  const key = record.subarray(5, 5 + keyBytes);
  const item = decodeKv(key, record.subarray(5 + keyBytes));
  return {
    type,
    key,
    value: item.value,
    modRevision: item.modRevision,
    createRevision: item.createRevision,
    version: item.version,
  };
}
