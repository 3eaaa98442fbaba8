// Proves erasure coding of stored chunks: any k of k + m fragments rebuild the chunk, and a byte range of k fragments rebuilds the same range of the missing ones (partial decode), checked against the original bytes for many (k, m), fragment sizes up to 4 MiB (where the coder's super-blocks matter) and random ranges.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32c } from '@shale/common';
import { rejectsWith, seededRandom, throwsWith } from '@shale/testing';
import {
  assemble,
  decodeStored,
  fragmentSizeFor,
  planRead,
  rebuildFragments,
  type StripeLayout,
  stripeChunk,
} from './chunk-format.js';
import type { RandomSource } from './random-source.js';

async function striped(k: number, m: number, storedSizeBytes: number) {
  const stored = randomBytes(storedSizeBytes);
  const f = fragmentSizeFor(storedSizeBytes, k, m);
  const layout: StripeLayout = { k, m, fragmentSizeBytes: f, storedSizeBytes };
  const padded = Buffer.alloc(k * f);
  stored.copy(padded);
  const { fragments, fragmentCrcs } = await stripeChunk(layout, padded);
  return { stored, layout, fragments, fragmentCrcs };
}

function pickMissing(random: RandomSource, total: number, count: number): Set<number> {
  assert.ok(count <= total, 'cannot lose more fragments than there are');
  const gone = new Set<number>();
  while (gone.size < count) gone.add(Math.floor(random() * total));
  return gone;
}

async function readVia(
  layout: StripeLayout,
  fragments: readonly Buffer[],
  available: boolean[],
  offset: number,
  length: number,
): Promise<Buffer> {
  const plan = planRead(layout, offset, length, available);
  for (const slice of plan.slices)
    assert.ok(available[slice.fragmentIndex], 'plan reads only available fragments');
  const fetched = plan.slices.map((s) =>
    (fragments[s.fragmentIndex] as Buffer).subarray(s.offsetBytes, s.offsetBytes + s.lengthBytes),
  );
  return assemble(layout, plan, fetched);
}

describe('erasure coding of a stored chunk', () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1000],
    [1, 3, 70_001],
    [2, 1, 17],
    [3, 2, 200_003],
    [4, 2, 4 * 1024 * 1024 * 4],
    [4, 2, 1_000_000],
    [5, 3, 777_777],
    [8, 2, 8 * 1024 * 1024 + 5],
    [10, 4, 3_000_000],
    [24, 6, 2_400_000],
    [6, 0, 123_457],
  ];
  for (const [k, m, size] of shapes) {
    test(`(${k},${m}) ${size} bytes: whole-chunk decode from any k, ranged decode with up to m missing`, async () => {
      const random = seededRandom(k * 1000 + m * 10 + size);
      const { stored, layout, fragments, fragmentCrcs } = await striped(k, m, size);
      for (let trial = 0; trial < 4; trial++) {
        const gone = pickMissing(random, k + m, Math.min(m, trial));
        const given = fragments.map((f, i) => (gone.has(i) ? undefined : f));
        const { stored: back, badFragments } = await decodeStored(layout, given, fragmentCrcs);
        assert.ok(back.equals(stored), `whole chunk, missing ${[...gone]}`);
        assert.deepEqual(badFragments, []);
      }
      for (let trial = 0; trial < 30; trial++) {
        const gone = pickMissing(random, k, Math.min(m, k, Math.floor(random() * (m + 1))));
        const available = fragments.map((_, i) => !gone.has(i));
        if (m > 0 && random() < 0.3) available[k] = false; // parity 0 gone too: general decode path
        if (available.filter(Boolean).length < k) continue;
        const offset = Math.floor(random() * size);
        const longRange = random() < 0.3;
        const length = Math.floor(
          random() * Math.min(size - offset, longRange ? 1_500_000 : 10_000),
        );
        const got = await readVia(layout, fragments, available, offset, length);
        assert.ok(
          got.equals(stored.subarray(offset, offset + length)),
          `range ${offset}+${length}, missing ${[...gone]}`,
        );
      }
      if (m > 0) {
        const targets = [...pickMissing(random, k + m, m)].sort((a, b) => a - b);
        const given = fragments.map((f, i) => (targets.includes(i) ? undefined : f));
        const { rebuilt } = await rebuildFragments(layout, given, fragmentCrcs, targets);
        for (const [i, t] of targets.entries()) {
          assert.ok(rebuilt[i]?.equals(fragments[t] as Buffer), `rebuilt ${t}`);
        }
      }
    });
  }

  test('a fragment failing its CRC32C counts as missing and is reported', async () => {
    const { stored, layout, fragments, fragmentCrcs } = await striped(3, 2, 100_000);
    const damaged = fragments.map((f) => Buffer.from(f));
    const flip = (fragment: number, at: number): void => {
      const buf = damaged[fragment] as Buffer;
      buf[at] = (buf[at] as number) ^ 1;
    };
    flip(1, 5);
    flip(4, 7);
    const { stored: back, badFragments } = await decodeStored(layout, damaged, fragmentCrcs);
    assert.ok(back.equals(stored));
    assert.deepEqual(badFragments, [1, 4]);
    flip(0, 0);
    await rejectsWith(decodeStored(layout, damaged, fragmentCrcs), 'PROXY_NOT_ENOUGH_FRAGMENTS');
    assert.equal(crc32c(fragments[0] as Buffer), fragmentCrcs[0]);
  });

  test('planRead refuses ranges past the chunk and short availability lists', async () => {
    const { layout } = await striped(2, 1, 1000);
    throwsWith(() => planRead(layout, 990, 11, [true, true, true]), 'PROXY_BAD_ARGUMENT');
    throwsWith(() => planRead(layout, 0, 1, [true, true]), 'PROXY_BAD_ARGUMENT');
    throwsWith(() => planRead(layout, 0, 600, [false, false, true]), 'PROXY_NOT_ENOUGH_FRAGMENTS');
  });
});
