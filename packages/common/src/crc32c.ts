import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * Below this many bytes a table in JavaScript is cheaper than the native call (whose
 * crossing costs ~1 µs on these VMs; the table ~3 ns a byte): frame headers, TLog entries.
 */
const SHORT_INPUT_BYTES = 128;
const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32C with the byte table (the same result as the native one; for short inputs). */
export function crc32cTable(data: Uint8Array, seed = 0): number {
  let crc = ~seed;
  for (let i = 0; i < data.length; i += 1) {
    crc = (TABLE[(crc ^ (data[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  }
  return ~crc >>> 0;
}

/**
 * CRC32C (Castagnoli), hardware accelerated (SSE4.2) through @node-rs/crc32 (short inputs
 * by a table in JavaScript). `seed` continues a running checksum:
 * crc32c(b, crc32c(a)) === crc32c(a ++ b).
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  if (data.length < SHORT_INPUT_BYTES) return crc32cTable(data, seed);
  return nativeCrc32c(data, seed) >>> 0;
}

/** The reflected Castagnoli polynomial. */
const POLY_REFLECTED = 0x82f63b78;
/** Operators for the lengths seen (fragments and blocks come in few sizes): bounded. */
const COMBINE_OPERATORS_MAX = 64;
const operators = new Map<number, Uint32Array>();

/** A 32 x 32 matrix over GF(2) (one column per word) times a vector. */
function times(matrix: Uint32Array, vector: number): number {
  let sum = 0;
  for (let i = 0; vector !== 0; i += 1, vector >>>= 1) {
    if ((vector & 1) !== 0) sum ^= matrix[i] as number;
  }
  return sum >>> 0;
}

function square(matrix: Uint32Array): Uint32Array {
  const out = new Uint32Array(32);
  for (let i = 0; i < 32; i += 1) out[i] = times(matrix, matrix[i] as number);
  return out;
}

/** The operator that appends `lengthBytes` zero bytes to a CRC register (zlib's crc32_combine). */
function zerosOperator(lengthBytes: number): Uint32Array {
  let op: Uint32Array = new Uint32Array(32);
  op[0] = POLY_REFLECTED;
  for (let i = 1; i < 32; i += 1) op[i] = 1 << (i - 1);
  // op: one zero bit. Square twice: four zero bits; the loop goes on from one zero byte.
  op = square(square(op));
  let result: Uint32Array | undefined;
  let remaining = lengthBytes;
  for (;;) {
    op = square(op);
    if ((remaining & 1) !== 0) {
      if (result === undefined) result = op;
      else {
        const next = new Uint32Array(32);
        for (let i = 0; i < 32; i += 1) next[i] = times(op, result[i] as number);
        result = next;
      }
    }
    remaining = Math.floor(remaining / 2);
    if (remaining === 0) break;
  }
  return result as Uint32Array;
}

/**
 * crc32c(a ++ b) from crc32c(a), crc32c(b) and b's length, without reading the bytes again
 * (so that data checksummed in blocks needs one pass, not two, for its whole checksum too).
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB === 0) return crcA >>> 0;
  let op: Uint32Array | undefined = operators.get(lengthB);
  if (op === undefined) {
    op = zerosOperator(lengthB);
    if (operators.size >= COMBINE_OPERATORS_MAX) operators.clear();
    operators.set(lengthB, op);
  }
  return (times(op, crcA >>> 0) ^ crcB) >>> 0;
}
