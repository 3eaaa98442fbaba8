import type { Bytes, KeyRange } from './kv-store.js';

/** A resolved key range: `[start, end)`; `end` undefined means "to the end of the keyspace". */
export interface ResolvedRange {
  readonly start: Buffer;
  readonly end: Buffer | undefined;
}

export function toBuffer(bytes: Bytes): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The first key after every key that starts with `prefix` (etcd's "prefix + 1"), or
 * undefined when there is none (the prefix is empty or all 0xff).
 */
export function prefixEnd(prefix: Bytes): Buffer | undefined {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    const byte = end[i] as number;
    if (byte < 0xff) {
      end[i] = byte + 1;
      return end.subarray(0, i + 1);
    }
  }
  return undefined;
}

export function resolveRange(range: KeyRange): ResolvedRange {
  if ('prefix' in range) return { start: Buffer.from(range.prefix), end: prefixEnd(range.prefix) };
  return {
    start: Buffer.from(range.start),
    end: range.end === undefined ? undefined : Buffer.from(range.end),
  };
}

/** The smallest key after `key`. */
export function keySuccessor(key: Bytes): Buffer {
  return Buffer.concat([toBuffer(key), Buffer.alloc(1)]);
}

export function inRange(key: Buffer, range: ResolvedRange): boolean {
  return key.compare(range.start) >= 0 && (range.end === undefined || key.compare(range.end) < 0);
}
