import {
  MAX_KEY_BYTES,
  MAX_LEASE_TTL_MS,
  MAX_TXN_OPS,
  MIN_LEASE_TTL_MS,
  RANGE_DEFAULT_LIMIT,
  RANGE_MAX_LIMIT,
} from './constants.js';
import { describeKey, KvErrorCode, kvError } from './errors.js';
import type { Bytes, KeyRange, LeaseId, Txn, TxnOp } from './kv-store.js';

/** Limits an engine enforces before it touches anything; both engines share them. */
export interface RequestLimits {
  readonly maxValueBytes: number;
  readonly maxRequestBytes: number;
}

export function validateKey(key: Bytes, what = 'key'): void {
  if (!(key instanceof Uint8Array)) {
    throw kvError(KvErrorCode.BadRequest, `${what} must be bytes (Uint8Array or Buffer)`);
  }
  if (key.byteLength === 0) throw kvError(KvErrorCode.BadRequest, `${what} is empty`);
  if (key.byteLength > MAX_KEY_BYTES) {
    throw kvError(
      KvErrorCode.KeyTooLarge,
      `${what} ${describeKey(key)} is ${key.byteLength} bytes; the limit is ${MAX_KEY_BYTES}`,
      { details: { sizeBytes: String(key.byteLength), limitBytes: String(MAX_KEY_BYTES) } },
    );
  }
}

export function validateValue(key: Bytes, value: Bytes, limits: RequestLimits): void {
  if (!(value instanceof Uint8Array)) {
    throw kvError(KvErrorCode.BadRequest, `value of ${describeKey(key)} must be bytes`);
  }
  if (value.byteLength > limits.maxValueBytes) {
    throw kvError(
      KvErrorCode.ValueTooLarge,
      `value of ${describeKey(key)} is ${value.byteLength} bytes; the limit is ${limits.maxValueBytes}`,
      {
        details: { sizeBytes: String(value.byteLength), limitBytes: String(limits.maxValueBytes) },
      },
    );
  }
}

export function validateLeaseId(leaseId: LeaseId): void {
  if (typeof leaseId !== 'string' || !/^[0-9]{1,20}$/.test(leaseId)) {
    throw kvError(
      KvErrorCode.BadRequest,
      `lease id must be a decimal string, got ${String(leaseId)}`,
    );
  }
}

export function validateTtl(ttlMs: number): void {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < MIN_LEASE_TTL_MS || ttlMs > MAX_LEASE_TTL_MS) {
    throw kvError(
      KvErrorCode.BadRequest,
      `lease TTL must be whole milliseconds in [${MIN_LEASE_TTL_MS}, ${MAX_LEASE_TTL_MS}], got ${ttlMs}`,
    );
  }
}

export function validateRange(range: KeyRange): void {
  if ('prefix' in range) {
    if (!(range.prefix instanceof Uint8Array)) {
      throw kvError(KvErrorCode.BadRequest, 'prefix must be bytes');
    }
    return;
  }
  validateKey(range.start, 'range start');
  if (range.end !== undefined) {
    validateKey(range.end, 'range end');
    if (Buffer.compare(range.start, range.end) >= 0) {
      throw kvError(KvErrorCode.BadRequest, 'range start must be before range end');
    }
  }
}

export function resolveLimit(limit: number | undefined): number {
  const resolved = limit ?? RANGE_DEFAULT_LIMIT;
  if (!Number.isSafeInteger(resolved) || resolved < 1 || resolved > RANGE_MAX_LIMIT) {
    throw kvError(KvErrorCode.BadRequest, `limit must be in [1, ${RANGE_MAX_LIMIT}], got ${limit}`);
  }
  return resolved;
}

function opKeyBytes(op: TxnOp): number {
  switch (op.type) {
    case 'get':
    case 'delete':
      return op.key.byteLength;
    case 'put':
      return op.key.byteLength + op.value.byteLength;
    case 'deletePrefix':
      return op.prefix.byteLength * 2;
  }
}

function validateOps(ops: readonly TxnOp[], limits: RequestLimits, branch: string): void {
  if (ops.length > MAX_TXN_OPS) {
    throw kvError(
      KvErrorCode.TooManyOps,
      `txn ${branch} has ${ops.length} ops; the limit is ${MAX_TXN_OPS}`,
    );
  }
  // etcd refuses a txn that writes the same key twice in one branch; so do we, everywhere.
  const written = new Set<string>();
  for (const op of ops) {
    if (op.type === 'deletePrefix') {
      if (!(op.prefix instanceof Uint8Array) || op.prefix.byteLength === 0) {
        throw kvError(KvErrorCode.BadRequest, 'deletePrefix needs a non-empty prefix');
      }
      continue;
    }
    validateKey(op.key);
    if (op.type === 'put') {
      validateValue(op.key, op.value, limits);
      if (op.leaseId !== undefined) validateLeaseId(op.leaseId);
    }
    if (op.type !== 'get') {
      const hex = Buffer.from(op.key).toString('hex');
      if (written.has(hex)) {
        throw kvError(
          KvErrorCode.BadRequest,
          `txn ${branch} writes ${describeKey(op.key)} more than once`,
        );
      }
      written.add(hex);
    }
  }
}

export function validateTxn(txn: Txn, limits: RequestLimits): void {
  if (txn.compares.length > MAX_TXN_OPS) {
    throw kvError(
      KvErrorCode.TooManyOps,
      `txn has ${txn.compares.length} compares; the limit is ${MAX_TXN_OPS}`,
    );
  }
  let requestBytes = 0;
  for (const compare of txn.compares) {
    validateKey(compare.key, 'compare key');
    if (compare.target === 'value') {
      validateValue(compare.key, compare.value, limits);
      requestBytes += compare.value.byteLength;
    } else if (!Number.isSafeInteger(compare.number) || compare.number < 0) {
      throw kvError(
        KvErrorCode.BadRequest,
        `compare on ${compare.target} needs a whole number >= 0`,
      );
    }
    requestBytes += compare.key.byteLength;
  }
  validateOps(txn.success, limits, 'success');
  validateOps(txn.failure ?? [], limits, 'failure');
  for (const op of [...txn.success, ...(txn.failure ?? [])]) requestBytes += opKeyBytes(op);
  if (requestBytes > limits.maxRequestBytes) {
    throw kvError(
      KvErrorCode.ValueTooLarge,
      `txn carries ${requestBytes} bytes of keys and values; the limit is ${limits.maxRequestBytes}`,
      {
        details: { sizeBytes: String(requestBytes), limitBytes: String(limits.maxRequestBytes) },
      },
    );
  }
}
