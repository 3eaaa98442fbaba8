// Seeded model test of the codec: random objects, parameters and fragment losses; every ranged read and whole-object decode must equal the plaintext. Prints its seed; replay with SHALE_SEED=<seed>.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { seededRandom } from '@shale/testing';
import { memoryFetch, mixedData } from './codec-test-support.js';
import { memoryKeyProvider } from './key-provider.js';
import { decodeObject, encodeObject, objectInfoOf, readRange } from './object-codec.js';
import type { Compression, Encryption } from './preset.js';

const seed = Number(process.env.SHALE_SEED ?? randomBytes(4).readUInt32BE(0));
const ITERATIONS = Number(process.env.SHALE_ITERATIONS ?? 25);

test(`random objects, losses and ranges (seed ${seed}; replay with SHALE_SEED=${seed})`, async () => {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const keyProvider = memoryKeyProvider(new Map([['k-1', Buffer.alloc(32, seed & 0xff)]]), 'k-1');
  let step = 'start';
  try {
    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      const k = 1 + Math.floor(random() * 8);
      const m = Math.floor(random() * 5);
      const compression = pick<Compression>(['none', 'lz4', 'zstd']);
      const encryption = pick<Encryption>(['none', 'aes-256-gcm']);
      const fragmentSizeMaxBytes = pick([64, 128, 192, 1024]) * 1024;
      const size = pick([
        0,
        1,
        Math.floor(random() * 5000),
        Math.floor(random() * 3 * k * fragmentSizeMaxBytes),
      ]);
      const aad = Buffer.from(`ns/object-${iteration}`);
      step = `iteration ${iteration}: (${k},${m}) ${compression}/${encryption} F ${fragmentSizeMaxBytes} size ${size}`;
      const data = mixedData(size, random);
      const encoded = await encodeObject(data, {
        k,
        m,
        fragmentSizeMaxBytes,
        compression,
        encryption,
        keyProvider,
        aad,
      });
      const info = objectInfoOf(encoded);
      const fragments = encoded.chunks.map((c) => [...c.fragments]);
      // Per chunk, up to m fragments lost; some known up front, some discovered by the fetch.
      const lost = encoded.chunks.map(() => {
        const gone = new Set<number>();
        const count = Math.floor(random() * (m + 1));
        while (gone.size < count) gone.add(Math.floor(random() * (k + m)));
        return gone;
      });
      const known = random() < 0.5;
      const fetch = memoryFetch(fragments, (c, f) => lost[c]?.has(f) ?? false);
      const isAvailable = known ? (c: number, f: number) => !(lost[c]?.has(f) ?? false) : undefined;
      for (let read = 0; read < 12; read++) {
        const offset = Math.floor(random() * (size + 1));
        const length = Math.floor(random() * (size - offset + 1) * (random() < 0.7 ? 0.05 : 1));
        step = `${step}; read ${offset}+${length} lost ${lost.map((g) => [...g].join('.')).join('|')}`;
        const got = await readRange(info, offset, length, {
          keyProvider,
          aad,
          fetch,
          ...(isAvailable === undefined ? {} : { isAvailable }),
        });
        assert.ok(got.equals(data.subarray(offset, offset + length)), step);
      }
      const given = fragments.map((list, c) =>
        list.map((f, i) => (lost[c]?.has(i) ? undefined : f)),
      );
      const { data: whole } = await decodeObject(info, given, { keyProvider, aad });
      assert.ok(whole.equals(data), `${step}; whole object`);
    }
  } catch (err) {
    throw new Error(`codec model failed at ${step}; replay with SHALE_SEED=${seed}`, {
      cause: err,
    });
  }
});
