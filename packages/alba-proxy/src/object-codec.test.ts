// Proves the object codec end to end in memory: round trips for every compression x encryption x (k,m) and edge size, ranged reads (across chunk and block boundaries, with up to m data fragments missing) equal to the plaintext, round-trip counts, corruption and tamper detection, no plaintext leaking into encrypted fragments.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { rejectsWith, seededRandom } from '@shale/testing';
import { type FetchLog, memoryFetch, mixedData } from './codec-test-support.js';
import { memoryKeyProvider } from './key-provider.js';
import {
  type CodecParams,
  decodeChunk,
  decodeObject,
  type EncodedObject,
  encodeObject,
  objectInfoOf,
  readRange,
} from './object-codec.js';
import type { Compression, Encryption } from './preset.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const keyProvider = memoryKeyProvider(new Map([['k-test', randomBytes(32)]]), 'k-test');
const aad = Buffer.from('namespace-1/object-a');
const ctx = { keyProvider, aad };

const COMPRESSIONS: Compression[] = ['none', 'lz4', 'zstd'];
const ENCRYPTIONS: Encryption[] = ['none', 'aes-256-gcm'];

function params(
  k: number,
  m: number,
  compression: Compression,
  encryption: Encryption,
  fragmentSizeMaxBytes = 64 * KiB,
): CodecParams {
  return { k, m, fragmentSizeMaxBytes, compression, encryption };
}

async function encode(data: Buffer, p: CodecParams): Promise<EncodedObject> {
  return encodeObject(data, { ...p, keyProvider, aad });
}

function fragmentsOf(encoded: EncodedObject): Buffer[][] {
  return encoded.chunks.map((chunk) => [...chunk.fragments]);
}

describe('round trips', () => {
  for (const compression of COMPRESSIONS) {
    for (const encryption of ENCRYPTIONS) {
      test(`${compression} x ${encryption}: (k,m) in (1,1) (2,1) (4,2) (5,3) (8,2); sizes 0, 1, odd, k*F, k*F+1, 3.5 chunks`, async () => {
        for (const [k, m] of [
          [1, 1],
          [2, 1],
          [4, 2],
          [5, 3],
          [8, 2],
          [3, 0],
        ] as const) {
          const p = params(k, m, compression, encryption);
          const kF = k * p.fragmentSizeMaxBytes;
          for (const size of [0, 1, 7, 4097, 65_537, kF, kF + 1, Math.floor(3.5 * kF) + 3]) {
            const data = mixedData(size);
            const encoded = await encode(data, p);
            const label = `${compression}/${encryption} (${k},${m}) size ${size}`;
            assert.equal(encoded.sizeBytes, size);
            for (const chunk of encoded.chunks) {
              assert.equal(chunk.fragments.length, k + m, label);
              for (const f of chunk.fragments)
                assert.equal(f.length, chunk.fragmentSizeBytes, label);
              assert.equal(chunk.fragmentSizeBytes % 8, 0);
            }
            const info = objectInfoOf(encoded);
            const { data: back } = await decodeObject(info, fragmentsOf(encoded), ctx);
            assert.ok(back.equals(data), label);
            if (encoded.chunks.length > 0 && m > 0) {
              // Drop m fragments (data first): the whole chunk still decodes from any k.
              const last = encoded.chunks.length - 1;
              const frags: (Buffer | undefined)[] = [...(encoded.chunks[last]?.fragments ?? [])];
              for (let i = 0; i < m; i++) frags[(i * 2) % (k + m)] = undefined;
              const { plaintext } = await decodeChunk(info, last, frags, ctx);
              const start = last * kF;
              assert.ok(plaintext.equals(data.subarray(start)), `${label} degraded`);
            }
          }
        }
      });
    }
  }

  test('a 64 MiB SCO, (4,2) with 4 MiB fragments, in every transform: round trip and ranged reads', async () => {
    const data = mixedData(64 * MiB);
    for (const compression of COMPRESSIONS) {
      for (const encryption of ENCRYPTIONS) {
        const encoded = await encode(data, params(4, 2, compression, encryption, 4 * MiB));
        assert.equal(encoded.chunks.length, 4);
        const { data: back } = await decodeObject(encoded, fragmentsOf(encoded), ctx);
        assert.ok(back.equals(data), `${compression}/${encryption}`);
        const fetch = memoryFetch(fragmentsOf(encoded), (_c, f) => f === 1);
        const got = await readRange(encoded, 16 * MiB - 5000, 10_000, { ...ctx, fetch });
        assert.ok(got.equals(data.subarray(16 * MiB - 5000, 16 * MiB + 5000)));
      }
    }
  });

  test('plain full chunks are zero-copy: data fragments are views of the object', async () => {
    const data = mixedData(2 * 4 * 64 * KiB);
    const encoded = await encode(data, params(4, 2, 'none', 'none'));
    const first = encoded.chunks[0]?.fragments[0];
    assert.ok(first !== undefined && first.buffer === data.buffer);
  });
});

describe('ranged reads', () => {
  for (const [compression, encryption] of [
    ['none', 'none'],
    ['lz4', 'none'],
    ['zstd', 'aes-256-gcm'],
    ['none', 'aes-256-gcm'],
  ] as const) {
    test(`${compression} x ${encryption}: random ranges with 0..m data fragments missing equal the plaintext`, async () => {
      const random = seededRandom(1234);
      for (const [k, m] of [
        [4, 2],
        [3, 3],
        [6, 1],
      ] as const) {
        const p = params(k, m, compression, encryption, 128 * KiB);
        const data = mixedData(Math.floor(2.6 * k * p.fragmentSizeMaxBytes) + 11);
        const encoded = await encode(data, p);
        const info = objectInfoOf(encoded);
        for (let missingCount = 0; missingCount <= m; missingCount++) {
          const gone = new Set<number>();
          while (gone.size < missingCount) gone.add(Math.floor(random() * k));
          const fetch = memoryFetch(fragmentsOf(encoded), (_c, f) => gone.has(f));
          for (let t = 0; t < 40; t++) {
            const offset = Math.floor(random() * data.length);
            const length = Math.floor(
              random() * Math.min(data.length - offset, t % 4 === 0 ? 600 * KiB : 9000),
            );
            const got = await readRange(info, offset, length, { ...ctx, fetch });
            assert.ok(
              got.equals(data.subarray(offset, offset + length)),
              `(${k},${m}) missing ${[...gone]} range ${offset}+${length}`,
            );
          }
        }
      }
    });
  }

  test('a range spanning two chunks and a block boundary, with the unavailable known up front or discovered', async () => {
    const p = params(4, 2, 'lz4', 'aes-256-gcm', 64 * KiB);
    const data = mixedData(3 * 256 * KiB);
    const encoded = await encode(data, p);
    const offset = 256 * KiB - 100;
    const log: FetchLog = { rounds: 0, reads: [] };
    const fetch = memoryFetch(fragmentsOf(encoded), () => false, log);
    const got = await readRange(encoded, offset, 200, { ...ctx, fetch });
    assert.ok(got.equals(data.subarray(offset, offset + 200)));
    assert.equal(log.rounds, 2, 'table entries, then payloads, both chunks in the same rounds');
    assert.deepEqual(new Set(log.reads.map((r) => r.chunkIndex)), new Set([0, 1]));
    const unreachable = memoryFetch(fragmentsOf(encoded), (_c, f) => f === 3 || f === 0);
    const again = await readRange(encoded, offset, 200, { ...ctx, fetch: unreachable });
    assert.ok(again.equals(data.subarray(offset, offset + 200)));
    const known = await readRange(encoded, offset, 200, {
      ...ctx,
      fetch: unreachable,
      isAvailable: (_c, f) => f !== 3 && f !== 0,
    });
    assert.ok(known.equals(data.subarray(offset, offset + 200)));
  });

  test('plain: one round trip, only the covering data fragment, no parity', async () => {
    const p = params(4, 2, 'none', 'none', 64 * KiB);
    const data = mixedData(256 * KiB);
    const encoded = await encode(data, p);
    const log: FetchLog = { rounds: 0, reads: [] };
    const got = await readRange(encoded, 70 * KiB, 4 * KiB, {
      ...ctx,
      fetch: memoryFetch(fragmentsOf(encoded), () => false, log),
    });
    assert.ok(got.equals(data.subarray(70 * KiB, 74 * KiB)));
    assert.equal(log.rounds, 1);
    assert.deepEqual(log.reads, [
      { chunkIndex: 0, fragmentIndex: 1, offsetBytes: 6 * KiB, lengthBytes: 4 * KiB },
    ]);
  });

  test('degraded plain read of 4 KiB with one data fragment gone reads 4 KiB from k others (XOR path)', async () => {
    const p = params(4, 2, 'none', 'none', 4 * MiB);
    const data = mixedData(16 * MiB);
    const encoded = await encode(data, p);
    const log: FetchLog = { rounds: 0, reads: [] };
    const fetch = memoryFetch(fragmentsOf(encoded), () => false, log);
    const got = await readRange(encoded, 4 * MiB + 8192, 4096, {
      ...ctx,
      fetch,
      isAvailable: (_c, f) => f !== 1,
    });
    assert.ok(got.equals(data.subarray(4 * MiB + 8192, 4 * MiB + 12288)));
    assert.deepEqual(
      log.reads.map((r) => [r.fragmentIndex, r.lengthBytes]),
      [
        [0, 4096],
        [2, 4096],
        [3, 4096],
        [4, 4096],
      ],
    );
  });

  test('too few fragments: PROXY_NOT_ENOUGH_FRAGMENTS; range outside the object: PROXY_BAD_ARGUMENT', async () => {
    const encoded = await encode(mixedData(300 * KiB), params(4, 2, 'none', 'none'));
    const fetch = memoryFetch(fragmentsOf(encoded), (_c, f) => f < 3);
    await rejectsWith(readRange(encoded, 0, 1000, { ...ctx, fetch }), 'PROXY_NOT_ENOUGH_FRAGMENTS');
    await rejectsWith(
      readRange(encoded, 300 * KiB - 1, 2, { ...ctx, fetch }),
      'PROXY_BAD_ARGUMENT',
    );
    assert.equal((await readRange(encoded, 5, 0, { ...ctx, fetch })).length, 0);
  });
});

describe('integrity', () => {
  test('a flipped bit in an encrypted fragment is PROXY_CORRUPT when nothing can replace it, healed by parity when it can', async () => {
    const data = mixedData(200 * KiB);
    for (const compression of COMPRESSIONS) {
      const encoded = await encode(data, params(2, 1, compression, 'aes-256-gcm'));
      const frags = fragmentsOf(encoded).map((list) => list.map((f) => Buffer.from(f)));
      const chunk0 = frags[0] as Buffer[];
      const victim = chunk0[0] as Buffer;
      victim[victim.length - 9000] = (victim[victim.length - 9000] as number) ^ 0x10;
      // Whole-chunk decode: the CRC32C catches it, parity replaces it, the fragment is reported.
      const whole = await decodeChunk(encoded, 0, chunk0, ctx);
      assert.ok(whole.plaintext.equals(data.subarray(0, 128 * KiB)));
      assert.deepEqual(whole.badFragments, [0]);
      // Ranged read with the parity unavailable: the tag catches it, no bytes come back.
      const noParity = memoryFetch(frags, (_c, f) => f === 2);
      await rejectsWith(
        readRange(encoded, 0, 128 * KiB, { ...ctx, fetch: noParity }),
        'PROXY_CORRUPT',
      );
      // With parity: retried without the suspect data fragment, the right bytes come back.
      const withParity = memoryFetch(frags);
      const healed = await readRange(encoded, 0, 128 * KiB, { ...ctx, fetch: withParity });
      assert.ok(healed.equals(data.subarray(0, 128 * KiB)), compression);
      // Whole chunk with the damaged fragment and no parity: CORRUPT/NOT_ENOUGH, never bytes.
      await rejectsWith(
        decodeChunk(encoded, 0, [chunk0[0], chunk0[1], undefined], ctx),
        'PROXY_NOT_ENOUGH_FRAGMENTS',
      );
    }
  });

  test('a block moved to another object, chunk or key fails the tag', async () => {
    const data = mixedData(128 * KiB);
    const encoded = await encode(data, params(2, 1, 'none', 'aes-256-gcm'));
    await rejectsWith(
      decodeChunk(encoded, 0, fragmentsOf(encoded)[0] ?? [], {
        keyProvider,
        aad: Buffer.from('namespace-1/object-b'),
      }),
      'PROXY_CORRUPT',
    );
    const otherKey = memoryKeyProvider(new Map([['k-test', randomBytes(32)]]), 'k-test');
    await rejectsWith(
      decodeChunk(encoded, 0, fragmentsOf(encoded)[0] ?? [], { keyProvider: otherKey, aad }),
      'PROXY_CORRUPT',
    );
    await rejectsWith(
      decodeChunk(encoded, 0, fragmentsOf(encoded)[0] ?? [], {
        keyProvider: memoryKeyProvider(new Map([['k-2', randomBytes(32)]]), 'k-2'),
        aad,
      }),
      'PROXY_KEY_NOT_FOUND',
    );
  });

  test('with encryption no fragment contains a known plaintext pattern; without, it does', async () => {
    const pattern = Buffer.from('SHALE-KNOWN-PLAINTEXT-PATTERN-0123456789');
    const data = Buffer.alloc(300 * KiB);
    for (let at = 0; at + pattern.length <= data.length; at += pattern.length)
      pattern.copy(data, at);
    for (const compression of COMPRESSIONS) {
      const encrypted = await encode(data, params(3, 2, compression, 'aes-256-gcm'));
      for (const chunk of encrypted.chunks) {
        for (const fragment of chunk.fragments) {
          assert.equal(fragment.indexOf(pattern.subarray(0, 16)), -1, compression);
        }
      }
    }
    const plain = await encode(data, params(3, 2, 'none', 'none'));
    assert.notEqual(plain.chunks[0]?.fragments[0]?.indexOf(pattern), -1);
  });

  test('incompressible blocks are stored raw, compressible ones compressed; the counts say so', async () => {
    const random = Buffer.from(randomBytes(256 * KiB));
    const zeros = Buffer.alloc(256 * KiB);
    const r = await encode(random, params(4, 1, 'zstd', 'none'));
    const z = await encode(zeros, params(4, 1, 'zstd', 'none'));
    assert.equal(r.chunks[0]?.compressedBlocks, 0);
    assert.equal(z.chunks[0]?.compressedBlocks, 4);
    assert.ok((z.chunks[0]?.storedSizeBytes ?? Infinity) < 2 * KiB);
    assert.equal(r.chunks[0]?.storedSizeBytes, 256 * KiB + 4 * 8);
  });

  test('bad arguments: encryption without a key provider, k out of range', async () => {
    await rejectsWith(
      encodeObject(Buffer.alloc(10), { ...params(2, 1, 'none', 'aes-256-gcm'), aad }),
      'PROXY_BAD_ARGUMENT',
    );
    await rejectsWith(
      encodeObject(Buffer.alloc(10), { ...params(25, 1, 'none', 'none'), aad }),
      'PROXY_BAD_ARGUMENT',
    );
  });
});
