import {
  crc32c,
  decodeErrorPayload,
  encodeErrorPayload,
  FrameErrorCode,
  frameError,
  type ShaleError,
} from '@shale/common';
import type { GetValue, ItemResult } from './object-store.js';
import type { PutItem, Slice } from './request-validation.js';

/**
 * The ASD's op table on Shale's data protocol (the frame of @shale/common): the bulk calls
 * of the proxy -> ASD hop. Everything else (delete, list, stats, health) stays on gRPC.
 * Payload layouts (little-endian; see README "Data protocol"):
 *
 *   request  = u32 count N, u32 CRC32C of the rest of the index and the keys, then
 *     PUT        N x { u32 key bytes, u32 value bytes, u32 value CRC32C }, keys, values
 *     GET        N x { u32 key bytes }, keys
 *     GET_RANGES N x { u32 key bytes, u32 offset low, u32 offset high, u32 length }, keys
 *   PUT reply = N x u32 CRC32C of the stored values
 *   GET / GET_RANGES reply = u32 N, u32 CRC32C of the item index, then
 *     N x { u32 status (0 OK, 1 error), u32 body bytes, u32 value CRC32C (GET; 0 for ranges) },
 *     bodies back to back (the value or slice, or "CODE\nmessage" for an item's error)
 *
 * Checksums: values carry their own CRC32C (checked by the ASD while it computes its block
 * checksums on PUT; by the client on GET), and the small index and keys are covered by the
 * index CRC, so PUT and GET frames go without the frame's PAYLOAD_CRC (no byte checksummed
 * three times). Slices have no CRC of their own: GET_RANGES asks for PAYLOAD_CRC instead.
 *
 * A payload whose lengths do not add up to the frame's, or whose index CRC is wrong, is a
 * FRAME_MALFORMED protocol error (the connection ends: its framing can no longer be
 * trusted); bad values in a well-formed payload (an empty key, too many items) are the
 * ASD's own checks and come back as an error reply with its ASD_* code.
 */
export const AsdDataOp = { Put: 1, Get: 2, GetRanges: 3 } as const;
export type AsdDataOp = (typeof AsdDataOp)[keyof typeof AsdDataOp];

const PREFIX_BYTES = 8;
const PUT_ENTRY_BYTES = 12;
const GET_ENTRY_BYTES = 4;
const RANGE_ENTRY_BYTES = 16;
const RESULT_ENTRY_BYTES = 12;
const TWO_32 = 2 ** 32;
const ITEM_OK = 0;
const ITEM_ERROR = 1;

function malformed(what: string, message: string): ShaleError {
  return frameError(FrameErrorCode.Malformed, `${what}: ${message}`);
}

/** The count, checked against what the payload can hold, and the index CRC. */
function readPrefix(payload: Buffer, entryBytes: number, what: string): number {
  if (payload.length < PREFIX_BYTES) {
    throw malformed(what, `a payload of ${payload.length} B is shorter than its 8-byte prefix`);
  }
  const count = payload.readUInt32LE(0);
  if (count * entryBytes > payload.length - PREFIX_BYTES) {
    throw malformed(what, `${count} items do not fit in a payload of ${payload.length} B`);
  }
  return count;
}

function checkIndexCrc(payload: Buffer, end: number, what: string): void {
  const sent = payload.readUInt32LE(4);
  const actual = crc32c(payload.subarray(PREFIX_BYTES, end));
  if (sent !== actual) {
    throw malformed(what, 'index checksum mismatch (damaged in transit)');
  }
}

function prefix(count: number, body: Buffer): void {
  body.writeUInt32LE(count, 0);
}

function sealIndex(buf: Buffer, end: number): void {
  buf.writeUInt32LE(crc32c(buf.subarray(PREFIX_BYTES, end)), 4);
}

// ---- PUT -------------------------------------------------------------------------------

/** The PUT payload: the index and keys in one small buffer, then each value (not copied). */
export function encodePutRequest(items: readonly PutItem[]): Buffer[] {
  let keyBytes = 0;
  for (const item of items) keyBytes += item.key.length;
  const indexEnd = PREFIX_BYTES + items.length * PUT_ENTRY_BYTES;
  const head = Buffer.allocUnsafe(indexEnd + keyBytes);
  prefix(items.length, head);
  let at = indexEnd;
  items.forEach((item, i) => {
    const entry = PREFIX_BYTES + i * PUT_ENTRY_BYTES;
    head.writeUInt32LE(item.key.length, entry);
    head.writeUInt32LE(item.value.length, entry + 4);
    head.writeUInt32LE((item.crc32c ?? crc32c(item.value)) >>> 0, entry + 8);
    head.set(item.key, at);
    at += item.key.length;
  });
  sealIndex(head, head.length);
  return [head, ...items.map((item) => asBuffer(item.value))];
}

/** Views into the payload; every item carries the CRC32C the store checks before storing. */
export function decodePutRequest(payload: Buffer): PutItem[] {
  const what = 'PUT';
  const count = readPrefix(payload, PUT_ENTRY_BYTES, what);
  const indexEnd = PREFIX_BYTES + count * PUT_ENTRY_BYTES;
  let keysEnd = indexEnd;
  let valuesEnd = 0;
  for (let i = 0; i < count; i += 1) {
    const entry = PREFIX_BYTES + i * PUT_ENTRY_BYTES;
    keysEnd += payload.readUInt32LE(entry);
    valuesEnd += payload.readUInt32LE(entry + 4);
  }
  if (keysEnd + valuesEnd !== payload.length) {
    throw malformed(
      what,
      `the index says ${keysEnd + valuesEnd} B of index, keys and values, the payload has ${payload.length} B`,
    );
  }
  checkIndexCrc(payload, keysEnd, what);
  const items: PutItem[] = [];
  let keyAt = indexEnd;
  let valueAt = keysEnd;
  for (let i = 0; i < count; i += 1) {
    const entry = PREFIX_BYTES + i * PUT_ENTRY_BYTES;
    const keyBytes = payload.readUInt32LE(entry);
    const valueBytes = payload.readUInt32LE(entry + 4);
    items.push({
      key: payload.subarray(keyAt, keyAt + keyBytes),
      value: payload.subarray(valueAt, valueAt + valueBytes),
      crc32c: payload.readUInt32LE(entry + 8),
    });
    keyAt += keyBytes;
    valueAt += valueBytes;
  }
  return items;
}

export function encodePutReply(crcs: readonly number[]): Buffer {
  const out = Buffer.allocUnsafe(crcs.length * 4);
  crcs.forEach((crc, i) => {
    out.writeUInt32LE(crc >>> 0, i * 4);
  });
  return out;
}

export function decodePutReply(payload: Buffer, count: number): number[] {
  if (payload.length !== count * 4) {
    throw malformed('PUT reply', `${payload.length} B for ${count} items`);
  }
  return Array.from({ length: count }, (_, i) => payload.readUInt32LE(i * 4));
}

// ---- GET and GET_RANGES requests ---------------------------------------------------------

export function encodeGetRequest(keys: readonly Uint8Array[]): Buffer {
  return encodeKeyed(keys, GET_ENTRY_BYTES, (out, entry, i) => {
    out.writeUInt32LE((keys[i] as Uint8Array).length, entry);
  });
}

export function decodeGetRequest(payload: Buffer): Buffer[] {
  return decodeKeyed(payload, GET_ENTRY_BYTES, 'GET', (key) => key);
}

export function encodeRangesRequest(slices: readonly Slice[]): Buffer {
  return encodeKeyed(
    slices.map((slice) => slice.key),
    RANGE_ENTRY_BYTES,
    (out, entry, i) => {
      const slice = slices[i] as Slice;
      if (!Number.isSafeInteger(slice.offset) || slice.offset < 0)
        throw new RangeError(`slice offset ${slice.offset}`);
      if (!Number.isInteger(slice.length) || slice.length < 0 || slice.length >= TWO_32)
        throw new RangeError(`slice length ${slice.length}`);
      out.writeUInt32LE(slice.key.length, entry);
      out.writeUInt32LE(slice.offset % TWO_32, entry + 4);
      out.writeUInt32LE(Math.floor(slice.offset / TWO_32), entry + 8);
      out.writeUInt32LE(slice.length, entry + 12);
    },
  );
}

export function decodeRangesRequest(payload: Buffer): Slice[] {
  return decodeKeyed(payload, RANGE_ENTRY_BYTES, 'GET_RANGES', (key, entry) => ({
    key,
    offset: payload.readUInt32LE(entry + 8) * TWO_32 + payload.readUInt32LE(entry + 4),
    length: payload.readUInt32LE(entry + 12),
  }));
}

/** Requests whose entries start with u32 key bytes, keys after the index. */
function encodeKeyed(
  keys: readonly Uint8Array[],
  entryBytes: number,
  writeEntry: (out: Buffer, entry: number, index: number) => void,
): Buffer {
  let keyBytes = 0;
  for (const key of keys) keyBytes += key.length;
  const indexEnd = PREFIX_BYTES + keys.length * entryBytes;
  const out = Buffer.allocUnsafe(indexEnd + keyBytes);
  prefix(keys.length, out);
  let at = indexEnd;
  keys.forEach((key, i) => {
    writeEntry(out, PREFIX_BYTES + i * entryBytes, i);
    out.set(key, at);
    at += key.length;
  });
  sealIndex(out, out.length);
  return out;
}

function decodeKeyed<T>(
  payload: Buffer,
  entryBytes: number,
  what: string,
  make: (key: Buffer, entry: number) => T,
): T[] {
  const count = readPrefix(payload, entryBytes, what);
  const indexEnd = PREFIX_BYTES + count * entryBytes;
  let end = indexEnd;
  for (let i = 0; i < count; i += 1) end += payload.readUInt32LE(PREFIX_BYTES + i * entryBytes);
  if (end !== payload.length) {
    throw malformed(
      what,
      `the index says ${end} B of index and keys, the payload has ${payload.length} B`,
    );
  }
  checkIndexCrc(payload, end, what);
  const out: T[] = [];
  let at = indexEnd;
  for (let i = 0; i < count; i += 1) {
    const entry = PREFIX_BYTES + i * entryBytes;
    const keyBytes = payload.readUInt32LE(entry);
    out.push(make(payload.subarray(at, at + keyBytes), entry));
    at += keyBytes;
  }
  return out;
}

// ---- GET and GET_RANGES replies -------------------------------------------------------

/** One reply of item results; values are copied once, into the reply. */
export function encodeItemsReply(
  results: readonly ItemResult<{ readonly value: Buffer; readonly crc32c: number }>[],
): Buffer {
  const bodies = results.map((result) =>
    result.ok ? result.value.value : encodeErrorPayload(result.error.code, result.error.message),
  );
  const indexEnd = PREFIX_BYTES + results.length * RESULT_ENTRY_BYTES;
  let total = indexEnd;
  for (const body of bodies) total += body.length;
  const out = Buffer.allocUnsafe(total);
  prefix(results.length, out);
  let at = indexEnd;
  results.forEach((result, i) => {
    const entry = PREFIX_BYTES + i * RESULT_ENTRY_BYTES;
    const body = bodies[i] as Buffer;
    out.writeUInt32LE(result.ok ? ITEM_OK : ITEM_ERROR, entry);
    out.writeUInt32LE(body.length, entry + 4);
    out.writeUInt32LE(result.ok ? result.value.crc32c >>> 0 : 0, entry + 8);
    out.set(body, at);
    at += body.length;
  });
  sealIndex(out, indexEnd);
  return out;
}

/** Item results as views of the reply; values are not checked here (the caller does). */
export function decodeItemsReply(
  payload: Buffer,
  expectedCount: number,
  what: string,
): ItemResult<GetValue>[] {
  const count = readPrefix(payload, RESULT_ENTRY_BYTES, what);
  if (count !== expectedCount) {
    throw malformed(what, `${count} results for ${expectedCount} items`);
  }
  const indexEnd = PREFIX_BYTES + count * RESULT_ENTRY_BYTES;
  checkIndexCrc(payload, indexEnd, what);
  let end = indexEnd;
  for (let i = 0; i < count; i += 1)
    end += payload.readUInt32LE(PREFIX_BYTES + i * RESULT_ENTRY_BYTES + 4);
  if (end !== payload.length) {
    throw malformed(what, `the index says ${end} B, the reply has ${payload.length} B`);
  }
  const out: ItemResult<GetValue>[] = [];
  let at = indexEnd;
  for (let i = 0; i < count; i += 1) {
    const entry = PREFIX_BYTES + i * RESULT_ENTRY_BYTES;
    const status = payload.readUInt32LE(entry);
    const body = payload.subarray(at, at + payload.readUInt32LE(entry + 4));
    at += body.length;
    if (status === ITEM_OK) {
      out.push({ ok: true, value: { value: body, crc32c: payload.readUInt32LE(entry + 8) } });
    } else if (status === ITEM_ERROR) {
      out.push({ ok: false, error: decodeErrorPayload(body) });
    } else {
      throw malformed(what, `item ${i} has status ${status}`);
    }
  }
  return out;
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}
