/**
 * The LevelDB key space. One leading byte separates the ASD's own records from client
 * keys, so no client key can ever collide with an internal record:
 *
 *   'o' + clientKey     -> object record (index-record.ts)
 *   'f' + fileId(6 BE)  -> clientKey        (which key owns a value file; for orphan sweeps)
 *   'g' + fileId(6 BE)  -> ''               (value file to unlink: garbage awaiting removal)
 *   'm' + name          -> ASD metadata (stats, file id high-water mark, shutdown state)
 */
const OBJECT = 0x6f; // 'o'
const FILE = 0x66; // 'f'
const GARBAGE = 0x67; // 'g'
const META = 0x6d; // 'm'

export function objectKey(clientKey: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + clientKey.length);
  out[0] = OBJECT;
  out.set(clientKey, 1);
  return out;
}

export function clientKeyOf(indexKey: Buffer): Buffer {
  return indexKey.subarray(1);
}

function idKey(tag: number, fileId: number): Buffer {
  const out = Buffer.allocUnsafe(7);
  out[0] = tag;
  out.writeUIntBE(fileId, 1, 6);
  return out;
}

export const fileKey = (fileId: number): Buffer => idKey(FILE, fileId);
export const garbageKey = (fileId: number): Buffer => idKey(GARBAGE, fileId);
export const fileIdOfKey = (key: Buffer): number => key.readUIntBE(1, 6);
export const metaKey = (name: string): Buffer =>
  Buffer.concat([Buffer.of(META), Buffer.from(name)]);

export const GARBAGE_RANGE = { gte: Buffer.of(GARBAGE), lt: Buffer.of(GARBAGE + 1) };

/** The index-key range of client keys starting with `prefix`, optionally after `startAfter`. */
export function objectRange(
  prefix: Uint8Array,
  startAfter: Uint8Array | undefined,
): { gte?: Buffer; gt?: Buffer; lt: Buffer } {
  const lower = objectKey(prefix);
  const upper = prefixUpperBound(lower);
  if (startAfter !== undefined && startAfter.length > 0) {
    const after = objectKey(startAfter);
    if (Buffer.compare(after, lower) >= 0) return { gt: after, lt: upper };
  }
  return { gte: lower, lt: upper };
}

/** The smallest key greater than every key that starts with `prefix` (prefix[0] is a tag, never 0xff). */
function prefixUpperBound(prefix: Buffer): Buffer {
  const out = Buffer.from(prefix);
  for (let i = out.length - 1; i >= 0; i -= 1) {
    const byte = out[i] as number;
    if (byte < 0xff) {
      out[i] = byte + 1;
      return out.subarray(0, i + 1);
    }
  }
  throw new Error('unreachable: tag byte is never 0xff');
}
