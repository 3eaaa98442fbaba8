// Proves the manifest byte budget: a 64 MiB SCO stays under 2 KiB for the presets we ship and the widest codes the coder allows, with and without compression and encryption.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MANIFEST_TARGET_BYTES } from './constants.js';
import { estimateManifestInfoBytes } from './manifest-budget.js';

const MiB = 1024 * 1024;

test('a 64 MiB SCO manifest is under 2 KiB for (4,2), (8,2), (24,6) with 4 and 16 MiB fragments', () => {
  for (const [k, m] of [
    [4, 2],
    [8, 2],
    [24, 6],
  ] as const) {
    for (const fragmentSizeMaxBytes of [4 * MiB, 16 * MiB]) {
      for (const [compression, encryption] of [
        ['none', 'none'],
        ['zstd', 'aes-256-gcm'],
      ] as const) {
        const budget = estimateManifestInfoBytes({
          sizeBytes: 64 * MiB,
          k,
          m,
          fragmentSizeMaxBytes,
          compression,
          encryption,
        });
        assert.ok(
          budget.totalBytes < MANIFEST_TARGET_BYTES,
          `(${k},${m}) ${fragmentSizeMaxBytes}: ${budget.totalBytes}`,
        );
      }
    }
  }
  // (4,2), 4 MiB fragments: 4 chunks of 40 bytes + the object's 129 bytes.
  const plain = estimateManifestInfoBytes({
    sizeBytes: 64 * MiB,
    k: 4,
    m: 2,
    fragmentSizeMaxBytes: 4 * MiB,
    compression: 'none',
    encryption: 'none',
  });
  assert.deepEqual(plain, { chunks: 4, objectBytes: 129, perChunkBytes: 40, totalBytes: 289 });
});
