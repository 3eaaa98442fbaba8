// Proves the manifest encoding: exact round trips (plain, compressed, encrypted, empty, missing fragments, uuid/hex/other OSD ids), every single-bit flip and every truncation refused with PROXY_CORRUPT_MANIFEST, and prints the encoded size of a 64 MiB object's manifest (goal < 2 KiB).
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { isShaleError } from '@shale/common';
import { memoryKeyProvider } from './key-provider.js';
import { decodeManifest, encodeManifest, type Manifest } from './manifest.js';
import { encodeObject, type ObjectCodecInfo, objectInfoOf } from './object-codec.js';
import type { Compression, Encryption } from './preset.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const keyProvider = memoryKeyProvider(
  new Map([['k-0123456789abcdef', randomBytes(32)]]),
  'k-0123456789abcdef',
);

async function infoFor(
  sizeBytes: number,
  k: number,
  m: number,
  fragmentSizeMaxBytes: number,
  compression: Compression,
  encryption: Encryption,
): Promise<ObjectCodecInfo> {
  const data = randomBytes(sizeBytes);
  const encoded = await encodeObject(data, {
    k,
    m,
    fragmentSizeMaxBytes,
    compression,
    encryption,
    keyProvider,
    aad: Buffer.from('ns/obj'),
  });
  return objectInfoOf(encoded);
}

function manifestFor(info: ObjectCodecInfo, osdIds: string[], missing = 0): Manifest {
  const total = info.k + info.m;
  return {
    name: 'sco/0000000000000123',
    version: 2 ** 40 + 7,
    writerEpoch: 3,
    createdAtMs: 1_760_000_000_000,
    policy: { k: info.k, m: info.m, c: info.k + 1, x: 6 },
    info,
    placement: info.chunks.map((_, c) =>
      Array.from({ length: total }, (_, f) =>
        f >= total - missing ? undefined : osdIds[(c + f) % osdIds.length],
      ),
    ),
  };
}

function assertCorrupt(fn: () => unknown, what: string): void {
  assert.throws(fn, (err) => isShaleError(err, 'PROXY_CORRUPT_MANIFEST'), what);
}

describe('manifest', () => {
  test('round trips exactly for every transform, with missing fragments and every OSD id form', async () => {
    const osdIds = [randomUUID(), randomBytes(16).toString('hex'), 'asd-on-node-2', randomUUID()];
    for (const [compression, encryption] of [
      ['none', 'none'],
      ['lz4', 'none'],
      ['zstd', 'aes-256-gcm'],
      ['none', 'aes-256-gcm'],
    ] as const) {
      for (const size of [0, 1, 300 * KiB, 1 * MiB + 5]) {
        const info = await infoFor(size, 3, 2, 64 * KiB, compression, encryption);
        const manifest = manifestFor(info, osdIds, size % 2);
        const bytes = encodeManifest(manifest);
        assert.deepEqual(decodeManifest(bytes), manifest, `${compression}/${encryption} ${size}`);
      }
    }
  });

  test('every bit flip and every truncation is PROXY_CORRUPT_MANIFEST', async () => {
    const info = await infoFor(200 * KiB, 2, 1, 64 * KiB, 'lz4', 'aes-256-gcm');
    const bytes = encodeManifest(manifestFor(info, [randomUUID(), randomUUID(), 'x-1'], 1));
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const copy = Buffer.from(bytes);
      copy[bit >> 3] = (copy[bit >> 3] as number) ^ (1 << (bit & 7));
      assertCorrupt(() => decodeManifest(copy), `bit ${bit}`);
    }
    for (let length = 0; length < bytes.length; length++) {
      assertCorrupt(() => decodeManifest(bytes.subarray(0, length)), `truncated to ${length}`);
    }
    assertCorrupt(() => decodeManifest(Buffer.concat([bytes, Buffer.from([0])])), 'trailing byte');
  });

  test('a 64 MiB object: encoded manifest sizes (goal < 2 KiB)', async () => {
    const rows: string[] = [];
    for (const [k, m] of [
      [4, 2],
      [8, 2],
    ] as const) {
      for (const fragmentSizeMaxBytes of [4 * MiB, 16 * MiB]) {
        const sizes: number[] = [];
        for (const [compression, encryption] of [
          ['none', 'none'],
          ['lz4', 'aes-256-gcm'],
        ] as const) {
          const info = await infoFor(64 * MiB, k, m, fragmentSizeMaxBytes, compression, encryption);
          // k + m distinct ASDs (uuid ids), as a real backend would have.
          const osdIds = Array.from({ length: k + m }, () => randomUUID());
          const bytes = encodeManifest(manifestFor(info, osdIds));
          assert.ok(
            bytes.length < 2 * KiB,
            `(${k},${m}) F=${fragmentSizeMaxBytes}: ${bytes.length} B`,
          );
          sizes.push(bytes.length);
        }
        rows.push(
          `| (${k},${m}) | ${fragmentSizeMaxBytes / MiB} MiB | ${Math.ceil(64 / (k * (fragmentSizeMaxBytes / MiB)))} | ${sizes[0]} B | ${sizes[1]} B |`,
        );
      }
    }
    process.stdout.write(
      `manifest of a 64 MiB object (name 'sco/0000000000000123', uuid OSD ids):\n| code | fragmentSizeMax | chunks | none/none | lz4/aes |\n|---|---|---|---|---|\n${rows.join('\n')}\n`,
    );
  });
});
