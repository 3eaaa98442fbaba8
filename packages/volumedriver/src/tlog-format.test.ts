// Proves the TLog format: every entry type round-trips, and the reader trusts exactly the prefix before a torn tail (every cut of the last entry), a flipped bit (every bit of an entry), a stale or zeroed entry.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AssertionFailure } from '@shale/common';
import { CLUSTER_INDEX_MAX, SNAPSHOT_ID_MAX, TLOG_ENTRY_SIZE_BYTES } from './constants.js';
import {
  decodeTLogEntry,
  encodeTLogEntry,
  encodeTLogEntryInto,
  readTLog,
  type TLogEntry,
} from './tlog-format.js';
import { clusterIndex, scoNumber } from './types.js';

/** One of each type, with boundary values in every field. */
const SAMPLES: TLogEntry[] = [
  {
    type: 'write',
    clusterIndex: clusterIndex(0),
    scoNumber: scoNumber(1),
    clusterOffset: 0,
    crc32c: 0,
  },
  {
    type: 'write',
    clusterIndex: clusterIndex(CLUSTER_INDEX_MAX),
    scoNumber: scoNumber(0xffff_ffff),
    clusterOffset: 32_767,
    crc32c: 0xffff_ffff,
  },
  { type: 'trim', firstClusterIndex: clusterIndex(5), clusterCount: 1 },
  { type: 'trim', firstClusterIndex: clusterIndex(0), clusterCount: CLUSTER_INDEX_MAX },
  { type: 'scoSealed', scoNumber: scoNumber(7), sizeBytes: 128 * 1024 * 1024, crc32c: 0xdeadbeef },
  { type: 'snapshot', snapshotId: 0 },
  { type: 'snapshot', snapshotId: SNAPSHOT_ID_MAX },
  { type: 'sync' },
];

/** A TLog of `entries`, each at its position. */
function tlogOf(entries: readonly TLogEntry[]): Buffer {
  const buf = Buffer.alloc(entries.length * TLOG_ENTRY_SIZE_BYTES);
  entries.forEach((entry, i) => {
    encodeTLogEntryInto(entry, i, buf, i * TLOG_ENTRY_SIZE_BYTES);
  });
  return buf;
}

describe('TLog entries', () => {
  test('every entry type round-trips with its sequence number', () => {
    for (const [i, entry] of SAMPLES.entries()) {
      const encoded = encodeTLogEntry(entry, 1000 + i);
      assert.equal(encoded.length, 32);
      const decoded = decodeTLogEntry(encoded);
      assert.ok(decoded.ok, `${entry.type} decodes`);
      assert.deepEqual(decoded.entry, entry);
      assert.equal(decoded.sequence, 1000 + i);
    }
  });

  test('a whole TLog of every type reads back complete', () => {
    const result = readTLog(tlogOf(SAMPLES));
    assert.deepEqual(result.entries, SAMPLES);
    assert.equal(result.validBytes, SAMPLES.length * 32);
    assert.equal(result.stop, 'end');
    assert.equal(result.reason, undefined);
    assert.deepEqual(readTLog(Buffer.alloc(0)), {
      entries: [],
      validBytes: 0,
      stop: 'end',
      reason: undefined,
    });
  });

  test('out-of-range fields are programmer errors, caught by assertions', () => {
    const bad: TLogEntry[] = [
      {
        type: 'write',
        clusterIndex: (CLUSTER_INDEX_MAX + 1) as never,
        scoNumber: scoNumber(1),
        clusterOffset: 0,
        crc32c: 0,
      },
      {
        type: 'write',
        clusterIndex: clusterIndex(1),
        scoNumber: scoNumber(1),
        clusterOffset: -1,
        crc32c: 0,
      },
      { type: 'trim', firstClusterIndex: clusterIndex(1), clusterCount: 0 },
      { type: 'trim', firstClusterIndex: clusterIndex(CLUSTER_INDEX_MAX), clusterCount: 2 },
      { type: 'snapshot', snapshotId: SNAPSHOT_ID_MAX + 1 },
      { type: 'scoSealed', scoNumber: scoNumber(1), sizeBytes: 2 ** 32, crc32c: 0 },
    ];
    for (const entry of bad) {
      assert.throws(() => encodeTLogEntry(entry, 0), AssertionFailure, JSON.stringify(entry));
    }
  });
});

describe('TLog reader', () => {
  test('a torn tail: truncating anywhere inside the last entry keeps exactly the entries before it', () => {
    const full = tlogOf(SAMPLES);
    const lastStart = (SAMPLES.length - 1) * 32;
    for (let cut = lastStart; cut < full.length; cut += 1) {
      const result = readTLog(full.subarray(0, cut));
      assert.deepEqual(result.entries, SAMPLES.slice(0, -1), `cut at ${cut}`);
      assert.equal(result.validBytes, lastStart, `cut at ${cut}`);
      assert.equal(result.stop, cut === lastStart ? 'end' : 'torn', `cut at ${cut}`);
    }
  });

  test('a flipped bit anywhere in an entry stops the reader at that entry', () => {
    const full = tlogOf(SAMPLES);
    const damagedIndex = 3;
    for (let bit = 0; bit < 32 * 8; bit += 1) {
      const copy = Buffer.from(full);
      const at = damagedIndex * 32 + (bit >> 3);
      copy[at] = (copy[at] as number) ^ (1 << (bit & 7));
      const result = readTLog(copy);
      assert.equal(result.stop, 'damaged', `bit ${bit}`);
      assert.equal(result.validBytes, damagedIndex * 32, `bit ${bit}`);
      assert.deepEqual(result.entries, SAMPLES.slice(0, damagedIndex), `bit ${bit}`);
    }
  });

  test('valid entries after a damaged one are not trusted', () => {
    const full = tlogOf(SAMPLES);
    full[1 * 32 + 10] = (full[1 * 32 + 10] as number) ^ 0xff;
    const result = readTLog(full);
    assert.equal(result.entries.length, 1);
    assert.equal(result.stop, 'damaged');
    assert.match(result.reason ?? '', /entry 1 at offset 32: entry CRC32C mismatch/);
  });

  test('a stale entry (intact CRC, wrong position) and a zero-filled tail stop the reader', () => {
    const entries = SAMPLES.slice(0, 3);
    const stale = Buffer.concat([tlogOf(entries), encodeTLogEntry(SAMPLES[4] as TLogEntry, 0)]);
    const staleResult = readTLog(stale);
    assert.equal(staleResult.entries.length, 3);
    assert.equal(staleResult.stop, 'damaged');
    assert.match(staleResult.reason ?? '', /sequence 0, expected 3/);

    const preallocated = Buffer.concat([tlogOf(entries), Buffer.alloc(4 * 32)]);
    const zeroResult = readTLog(preallocated);
    assert.deepEqual(zeroResult.entries, entries);
    assert.equal(zeroResult.validBytes, 3 * 32);
    assert.equal(zeroResult.stop, 'damaged');
  });
});
