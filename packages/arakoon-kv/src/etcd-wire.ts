import { assert } from '@shale/common';
import type { WireCompare, WireKeyValue, WireRequestOp } from './etcd-proto.js';
import { prefixEnd, toBuffer } from './key-range.js';
import type { Compare, KeyValue, LeaseId, TxnOp } from './kv-store.js';
import { NO_LEASE } from './kv-store.js';

/** Conversions between the KvStore shapes and etcd's wire shapes. */

const COMPARE_RESULT = { equal: 0, greater: 1, less: 2, notEqual: 3 } as const;
const COMPARE_TARGET = { version: 0, createRevision: 1, modRevision: 2, value: 3 } as const;
/** etcd's "every key from here on" range end. */
export const RANGE_END_ALL = Buffer.of(0);

export function toRevision(text: string): number {
  const revision = Number(text);
  assert(Number.isSafeInteger(revision) && revision >= 0, `etcd revision out of range: ${text}`);
  return revision;
}

export function fromWire(kv: WireKeyValue): KeyValue {
  return {
    key: kv.key,
    value: kv.value,
    createRevision: toRevision(kv.createRevision),
    modRevision: toRevision(kv.modRevision),
    version: toRevision(kv.version),
    leaseId: (kv.lease === '' ? NO_LEASE : kv.lease) as LeaseId,
  };
}

export function compareToWire(compare: Compare): WireCompare {
  const base = {
    result: COMPARE_RESULT[compare.op],
    target: COMPARE_TARGET[compare.target],
    key: toBuffer(compare.key),
  };
  switch (compare.target) {
    case 'value':
      return { ...base, value: toBuffer(compare.value) };
    case 'version':
      return { ...base, version: String(compare.number) };
    case 'createRevision':
      return { ...base, createRevision: String(compare.number) };
    case 'modRevision':
      return { ...base, modRevision: String(compare.number) };
  }
}

export function opToWire(op: TxnOp): WireRequestOp {
  switch (op.type) {
    case 'get':
      return { requestRange: { key: toBuffer(op.key) } };
    case 'put':
      return {
        requestPut: {
          key: toBuffer(op.key),
          value: toBuffer(op.value),
          lease: op.leaseId ?? NO_LEASE,
        },
      };
    case 'delete':
      return { requestDeleteRange: { key: toBuffer(op.key) } };
    case 'deletePrefix':
      return {
        requestDeleteRange: {
          key: toBuffer(op.prefix),
          rangeEnd: prefixEnd(op.prefix) ?? RANGE_END_ALL,
        },
      };
  }
}
