import {
  LIST_DEFAULT_LIMIT,
  LIST_MAX_LIMIT,
  MAX_CALL_BYTES,
  MAX_ITEMS_PER_CALL,
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
} from './constants.js';
import { AsdErrorCode, asdError, describeKey } from './errors.js';

/**
 * The ASD's request checks, in one place, run before anything touches the disk: a call
 * that fails here has changed nothing.
 */

export interface PutItem {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** Expected CRC32C of the value; checked before anything is stored. */
  readonly crc32c?: number | undefined;
}

export interface Slice {
  readonly key: Uint8Array;
  readonly offset: number;
  readonly length: number;
}

export function checkKey(key: Uint8Array | undefined, where: string): void {
  if (key === undefined || key.length === 0) {
    throw asdError(AsdErrorCode.KeyEmpty, `${where}: the key is missing or empty`);
  }
  if (key.length > MAX_KEY_BYTES) {
    throw asdError(
      AsdErrorCode.KeyTooLarge,
      `${where}: the key is ${key.length} bytes; the limit is ${MAX_KEY_BYTES}`,
      { details: { limitBytes: String(MAX_KEY_BYTES) } },
    );
  }
}

function checkCount(count: number, what: string): void {
  if (count > MAX_ITEMS_PER_CALL) {
    throw asdError(
      AsdErrorCode.TooManyItems,
      `${count} ${what} in one call; the limit is ${MAX_ITEMS_PER_CALL}`,
    );
  }
}

/** Returns the total value bytes of the call. */
export function checkPutItems(items: readonly PutItem[]): number {
  if (items.length === 0) throw asdError(AsdErrorCode.InvalidArgument, 'put: no items');
  checkCount(items.length, 'objects');
  const seen = new Set<string>();
  let totalBytes = 0;
  items.forEach((item, index) => {
    checkKey(item.key, `put item ${index}`);
    if (item.value === undefined || item.value === null) {
      throw asdError(
        AsdErrorCode.InvalidArgument,
        `put item ${index} (${describeKey(item.key)}): the value is missing`,
      );
    }
    if (item.value.length > MAX_VALUE_BYTES) {
      throw asdError(
        AsdErrorCode.ValueTooLarge,
        `put item ${index} (${describeKey(item.key)}): the value is ${item.value.length} bytes; the limit is ${MAX_VALUE_BYTES}`,
        { details: { limitBytes: String(MAX_VALUE_BYTES) } },
      );
    }
    const id = Buffer.from(item.key.buffer, item.key.byteOffset, item.key.byteLength).toString(
      'latin1',
    );
    if (seen.has(id)) {
      throw asdError(
        AsdErrorCode.DuplicateKey,
        `put: key ${describeKey(item.key)} appears twice in one call`,
      );
    }
    seen.add(id);
    totalBytes += item.value.length;
  });
  if (totalBytes > MAX_CALL_BYTES) {
    throw asdError(
      AsdErrorCode.CallTooLarge,
      `put: ${totalBytes} value bytes in one call; the limit is ${MAX_CALL_BYTES}`,
    );
  }
  return totalBytes;
}

/**
 * An item's CRC32C as sent against the one the store computed while checksumming its
 * blocks (so every byte is read once): ASD_CHECKSUM_MISMATCH, before anything is stored.
 */
export function checkPutChecksum(item: PutItem, index: number, actual: number): void {
  if (item.crc32c === undefined || actual === item.crc32c >>> 0) return;
  throw asdError(
    AsdErrorCode.ChecksumMismatch,
    `put item ${index} (${describeKey(item.key)}): the value's CRC32C is ${hex(actual)}, the request says ${hex(item.crc32c)}; damaged in transit, nothing stored`,
  );
}

export function checkKeys(keys: readonly Uint8Array[], op: string): void {
  if (keys.length === 0) throw asdError(AsdErrorCode.InvalidArgument, `${op}: no keys`);
  checkCount(keys.length, 'keys');
  keys.forEach((key, index) => {
    checkKey(key, `${op} key ${index}`);
  });
}

export function checkSlices(slices: readonly Slice[]): void {
  if (slices.length === 0) throw asdError(AsdErrorCode.InvalidArgument, 'get-ranges: no slices');
  checkCount(slices.length, 'slices');
  let totalBytes = 0;
  slices.forEach((slice, index) => {
    checkKey(slice.key, `get-ranges slice ${index}`);
    if (!Number.isSafeInteger(slice.offset) || slice.offset < 0) {
      throw asdError(
        AsdErrorCode.BadRange,
        `get-ranges slice ${index}: bad offset ${slice.offset}`,
      );
    }
    if (!Number.isSafeInteger(slice.length) || slice.length < 0 || slice.length > MAX_VALUE_BYTES) {
      throw asdError(
        AsdErrorCode.BadRange,
        `get-ranges slice ${index}: bad length ${slice.length} (at most ${MAX_VALUE_BYTES})`,
      );
    }
    totalBytes += slice.length;
  });
  if (totalBytes > MAX_CALL_BYTES) {
    throw asdError(
      AsdErrorCode.CallTooLarge,
      `get-ranges: ${totalBytes} bytes asked in one call; the limit is ${MAX_CALL_BYTES}`,
    );
  }
}

export function checkListLimit(limit: number | undefined): number {
  if (limit === undefined || limit === 0) return LIST_DEFAULT_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > LIST_MAX_LIMIT) {
    throw asdError(
      AsdErrorCode.InvalidArgument,
      `list: limit ${limit} is out of range (1..${LIST_MAX_LIMIT})`,
    );
  }
  return limit;
}

export function checkListBound(bound: Uint8Array, what: string): void {
  if (bound.length > MAX_KEY_BYTES) {
    throw asdError(
      AsdErrorCode.KeyTooLarge,
      `list: the ${what} is ${bound.length} bytes; the limit is ${MAX_KEY_BYTES}`,
    );
  }
}

function hex(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}
