// Proves the LBA map's log records round-trip: seeded random pages (dense, sparse, runs, SCO numbers 0 and 2^32-1, the largest cluster offset, layers 0..255) and CRC32C table patches decode to what was encoded, and any flipped bit fails the record's CRC32C.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { seededRandom } from '@shale/testing';
import {
  LBA_MAP_CLUSTER_OFFSET_LIMIT,
  LBA_MAP_PAGE_CLUSTERS,
  SCO_NUMBER_MAX,
} from './constants.js';
import {
  decodePage,
  decodeTable,
  encodePage,
  encodeTable,
  RECORD_HEADER_BYTES,
  recordCrc,
  tableKey,
} from './lba-log-format.js';
import { testSeed } from './testing/lba-map-fixtures.js';

function randomPage(random: () => number): Uint32Array {
  const entries = new Uint32Array(2 * LBA_MAP_PAGE_CLUSTERS);
  const density = [0.01, 0.5, 1][Math.floor(random() * 3)] as number;
  const scoSpread = [1, 300, 70_000, 2 ** 25, SCO_NUMBER_MAX][Math.floor(random() * 5)] as number;
  const scoBase = Math.floor(random() * (SCO_NUMBER_MAX - scoSpread + 1));
  const layers = random() < 0.5 ? 1 : 256;
  const sequential = random() < 0.3;
  for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
    if (random() >= density) continue;
    const offset = sequential
      ? slot
      : random() < 0.05
        ? LBA_MAP_CLUSTER_OFFSET_LIMIT - 1
        : Math.floor(random() * LBA_MAP_CLUSTER_OFFSET_LIMIT);
    entries[2 * slot] = sequential ? scoBase : scoBase + Math.floor(random() * scoSpread);
    entries[2 * slot + 1] = ((Math.floor(random() * layers) << 24) | (offset + 1)) >>> 0;
  }
  return entries;
}

describe('LBA map log records', () => {
  test('pages round-trip in every encoding (seeded)', () => {
    const seed = testSeed();
    const random = seededRandom(seed);
    for (let round = 0; round < 300; round += 1) {
      const entries = randomPage(random);
      const pageIndex = Math.floor(random() * 2 ** 38);
      const record = encodePage(pageIndex, entries);
      const decoded = decodePage(record.subarray(RECORD_HEADER_BYTES));
      assert.equal(decoded.pageIndex, pageIndex, `seed ${seed} round ${round}`);
      const mapped = entries.some((w, i) => i % 2 === 1 && w !== 0);
      if (!mapped) assert.equal(decoded.entries, undefined);
      else assert.deepEqual(decoded.entries, entries, `seed ${seed} (VD_TEST_SEED) round ${round}`);
      // Any bit flipped past the magic fails the CRC32C.
      const bit = 32 + Math.floor(random() * (record.length * 8 - 32));
      const flipped = Buffer.from(record);
      flipped[bit >>> 3] = (flipped[bit >>> 3] as number) ^ (1 << (bit & 7));
      assert.notEqual(
        recordCrc(flipped.subarray(4, 12), flipped.subarray(RECORD_HEADER_BYTES)),
        flipped.readUInt32LE(12),
        `seed ${seed} round ${round} bit ${bit}`,
      );
    }
  });

  test('CRC32C table patches round-trip, sparse and full', () => {
    const random = seededRandom(3);
    const crcs = new Uint32Array(4096);
    const present = new Uint32Array(4096 / 32);
    for (let s = 0; s < 4096; s += 1) {
      crcs[s] = Math.floor(random() * 2 ** 32);
      if (s < 1000 || random() < 0.3)
        present[s >>> 5] = ((present[s >>> 5] as number) | (1 << (s & 31))) >>> 0;
    }
    for (const [firstSlot, slotCount] of [
      [0, 1000],
      [900, 3196],
      [4095, 1],
    ] as const) {
      const key = tableKey(255, SCO_NUMBER_MAX);
      const record = encodeTable({ key, firstSlot, slotCount, present, crcs });
      const got = new Map<number, number>();
      const decodedKey = decodeTable(record.subarray(RECORD_HEADER_BYTES), (slot, crc) =>
        got.set(slot, crc),
      );
      assert.equal(decodedKey, key);
      const want = new Map<number, number>();
      for (let s = firstSlot; s < firstSlot + slotCount; s += 1) {
        if (((present[s >>> 5] as number) >>> (s & 31)) & 1) want.set(s, crcs[s] as number);
      }
      assert.deepEqual(got, want);
    }
  });
});
