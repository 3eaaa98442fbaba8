import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * Below this many bytes tables in JavaScript are cheaper than the native call (whose
 * crossing costs ~1 µs on these VMs): frame headers, TLog entries, small records.
 */
const SHORT_INPUT_BYTES = 128;
/**
 * Slicing-by-8 tables: TABLES[0] is the classic byte table; TABLES[k][n] is the CRC
 * register after byte n followed by k zero bytes, so eight bytes fold in one step
 * (about 4x faster per byte than the byte-at-a-time table).
 */
const TABLES = (() => {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = tables[0] as Uint32Array;
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n += 1) {
    let c = t0[n] as number;
    for (let k = 1; k < 8; k += 1) {
      c = (t0[c & 0xff] as number) ^ (c >>> 8);
      (tables[k] as Uint32Array)[n] = c >>> 0;
    }
  }
  return tables;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
];

/** CRC32C with tables in JavaScript (the same result as the native one; for short inputs). */
export function crc32cTable(data: Uint8Array, seed = 0): number {
  let crc = ~seed;
  let i = 0;
  const end8 = data.length - (data.length % 8);
  for (; i < end8; i += 8) {
    const lo =
      crc ^
      ((data[i] as number) |
        ((data[i + 1] as number) << 8) |
        ((data[i + 2] as number) << 16) |
        ((data[i + 3] as number) << 24));
    crc =
      (T7[lo & 0xff] as number) ^
      (T6[(lo >>> 8) & 0xff] as number) ^
      (T5[(lo >>> 16) & 0xff] as number) ^
      (T4[lo >>> 24] as number) ^
      (T3[data[i + 4] as number] as number) ^
      (T2[data[i + 5] as number] as number) ^
      (T1[data[i + 6] as number] as number) ^
      (T0[data[i + 7] as number] as number);
  }
  for (; i < data.length; i += 1) {
    crc = (T0[(crc ^ (data[i] as number)) & 0xff] as number) ^ (crc >>> 8);
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
