// Proves the chunking rule chunks = ceil(size / min(k * fragmentSizeMax, size)) with the Open vStorage example, edge sizes and the spans it yields.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chunkCount, chunkSpans } from './chunking.js';

const MiB = 1024 * 1024;

test('a 64 MiB SCO with k = 8 and 4 MiB fragments is 2 chunks of 32 MiB', () => {
  assert.equal(chunkCount(64 * MiB, 8, 4 * MiB), 2);
  assert.deepEqual(chunkSpans(64 * MiB, 8, 4 * MiB), [
    { chunkIndex: 0, objectOffsetBytes: 0, plainSizeBytes: 32 * MiB },
    { chunkIndex: 1, objectOffsetBytes: 32 * MiB, plainSizeBytes: 32 * MiB },
  ]);
});

test('edge sizes: empty is 0 chunks, small is 1, one byte over k * F is 2', () => {
  assert.equal(chunkCount(0, 4, 4 * MiB), 0);
  assert.deepEqual(chunkSpans(0, 4, 4 * MiB), []);
  assert.equal(chunkCount(1, 4, 4 * MiB), 1);
  assert.equal(chunkCount(16 * MiB, 4, 4 * MiB), 1);
  assert.equal(chunkCount(16 * MiB + 1, 4, 4 * MiB), 2);
  assert.deepEqual(chunkSpans(16 * MiB + 1, 4, 4 * MiB)[1], {
    chunkIndex: 1,
    objectOffsetBytes: 16 * MiB,
    plainSizeBytes: 1,
  });
  assert.equal(chunkCount(64 * MiB, 4, 4 * MiB), 4);
  assert.equal(chunkCount(64 * MiB, 4, 16 * MiB), 1);
});
