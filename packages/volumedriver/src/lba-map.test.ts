// Proves the LBA map on a real directory: round trips, persistence across reopen, cache coherence (a seeded random model check with a tiny CRC32C table cache, and a get racing an apply), range order, VD_DIR_LOCKED for a second process, and applyBehind (updates visible to reads, ranges and snapshots before the log has them; all there after a reopen: a seeded model check).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { CLUSTER_INDEX_MAX } from './constants.js';
import { LbaMap, type LbaUpdate } from './lba-map.js';
import { type ClusterLocation, clusterIndex, scoNumber } from './types.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-lba-test-'));
  dirs.push(dir);
  return path.join(dir, 'lba');
}

function loc(sco: number, clusterOffset: number, crc: number): ClusterLocation {
  return { scoNumber: scoNumber(sco), clusterOffset, crc32c: crc };
}

const put = (index: number, location: ClusterLocation): LbaUpdate => ({
  clusterIndex: clusterIndex(index),
  location,
});
const unmap = (index: number): LbaUpdate => ({
  clusterIndex: clusterIndex(index),
  location: undefined,
});

async function collect(
  map: LbaMap,
  from: number,
  to: number,
): Promise<[number, ClusterLocation][]> {
  const out: [number, ClusterLocation][] = [];
  for await (const entry of map.range(clusterIndex(from), to)) out.push(entry);
  return out;
}

describe('LBA map', () => {
  test('apply, get and getMany round-trip; unmapping removes; the maximum cluster index works', async () => {
    const map = await LbaMap.open({ dir: await tempDir() });
    try {
      await map.apply([
        put(0, loc(1, 0, 0xdeadbeef)),
        put(7, loc(1, 1, 7)),
        put(CLUSTER_INDEX_MAX, loc(0xffff_ffff, 32_767, 0xffff_ffff)),
      ]);
      assert.deepEqual(await map.get(clusterIndex(0)), loc(1, 0, 0xdeadbeef));
      assert.equal(await map.get(clusterIndex(1)), undefined);
      assert.deepEqual(
        await map.getMany([
          clusterIndex(7),
          clusterIndex(3),
          clusterIndex(CLUSTER_INDEX_MAX),
          clusterIndex(0),
        ]),
        [loc(1, 1, 7), undefined, loc(0xffff_ffff, 32_767, 0xffff_ffff), loc(1, 0, 0xdeadbeef)],
      );
      // Later updates of the same cluster in one batch win.
      await map.apply([unmap(0), put(7, loc(2, 0, 1)), put(7, loc(2, 5, 2))]);
      assert.deepEqual(await map.getMany([clusterIndex(0), clusterIndex(7)]), [
        undefined,
        loc(2, 5, 2),
      ]);
    } finally {
      await map.close();
    }
    await assert.rejects(map.get(clusterIndex(0)), (err: unknown) =>
      isShaleError(err, 'VD_CLOSED'),
    );
  });

  test('entries persist across close and reopen', async () => {
    const dir = await tempDir();
    const first = await LbaMap.open({ dir, sync: true });
    const updates = Array.from({ length: 1000 }, (_, i) =>
      put(i * 3, loc(i >> 4, i & 15, i * 7919)),
    );
    await first.apply(updates);
    await first.apply([unmap(30)]);
    await first.close();
    const second = await LbaMap.open({ dir });
    try {
      assert.equal(
        second.cacheStats().entries,
        0,
        'no CRC32C table in memory: reads load them from the log',
      );
      const got = await second.getMany(updates.map((u) => u.clusterIndex));
      for (const [i, update] of updates.entries()) {
        assert.deepEqual(got[i], i === 10 ? undefined : update.location, `cluster ${i * 3}`);
      }
    } finally {
      await second.close();
    }
  });

  test('cache coherence: a read after an apply sees the new location (seeded model check, tiny cache)', async () => {
    const seed = Number(process.env.VD_TEST_SEED ?? Date.now() % 2 ** 31);
    const random = seededRandom(seed);
    const map = await LbaMap.open({ dir: await tempDir(), cacheEntries: 16 });
    const model = new Map<number, ClusterLocation>();
    try {
      for (let step = 0; step < 400; step += 1) {
        const index = (): number => Math.floor(random() * 64);
        if (random() < 0.4) {
          const updates: LbaUpdate[] = [];
          for (let i = 0, n = 1 + Math.floor(random() * 8); i < n; i += 1) {
            const at = index();
            if (random() < 0.2) {
              updates.push(unmap(at));
              model.delete(at);
            } else {
              const location = loc(step, i, Math.floor(random() * 2 ** 32));
              updates.push(put(at, location));
              model.set(at, location);
            }
          }
          await map.apply(updates, { sync: false });
        } else {
          const asked = Array.from({ length: 1 + Math.floor(random() * 6) }, index);
          const got = await map.getMany(asked.map((a) => clusterIndex(a)));
          assert.deepEqual(
            got,
            asked.map((a) => model.get(a)),
            `seed ${seed} (VD_TEST_SEED=${seed}) step ${step}`,
          );
        }
      }
      assert.ok(map.cacheStats().entries <= 16, 'the cache stays bounded');
      assert.ok(map.cacheStats().hits > 0, 'the cache was used');
      const all = await collect(map, 0, 64);
      assert.deepEqual(
        all,
        [...model.entries()].sort((x, y) => x[0] - y[0]),
        `seed ${seed}`,
      );
    } finally {
      await map.close();
    }
  });

  test('a get racing an apply never leaves the old location in the cache', async () => {
    const map = await LbaMap.open({ dir: await tempDir() });
    try {
      await map.apply(Array.from({ length: 50 }, (_, i) => put(1000 + i, loc(1, i, 1))));
      await map.close();
      // Reopened: no CRC32C table is in memory, so every get below reads the log while the apply runs.
      const reopened = await LbaMap.open({ dir: map.dir });
      try {
        for (let round = 0; round < 50; round += 1) {
          const at = clusterIndex(1000 + round);
          const racing = reopened.get(at);
          const applying = reopened.apply([put(at, loc(2, round, 2))]);
          const [seen] = await Promise.all([racing, applying]);
          // The racing get may see either location; what follows must see the new one.
          assert.ok(seen !== undefined, `round ${round}`);
          assert.deepEqual(await reopened.get(at), loc(2, round, 2), `round ${round}`);
        }
      } finally {
        await reopened.close();
      }
    } finally {
      await map.close();
    }
  });

  test('range iterates mapped clusters in cluster order, across the 2^32 boundary, end exclusive', async () => {
    const map = await LbaMap.open({ dir: await tempDir() });
    try {
      const indexes = [2 ** 32 + 1, 5, 2 ** 32 - 1, 256, 2 ** 32, 6, 1];
      await map.apply(indexes.map((i) => put(i, loc(1, i % 1000, i % 97))));
      const sorted = [...indexes].sort((a, b) => a - b);
      assert.deepEqual(
        (await collect(map, 0, CLUSTER_INDEX_MAX + 1)).map(([i]) => i),
        sorted,
      );
      assert.deepEqual(
        (await collect(map, 5, 256)).map(([i]) => i),
        [5, 6],
      );
      assert.deepEqual(
        (await collect(map, 6, 2 ** 32 + 1)).map(([i]) => i),
        [6, 256, 2 ** 32 - 1, 2 ** 32],
      );
      assert.deepEqual(await collect(map, 7, 7), []);
      const [first] = await collect(map, 256, 257);
      assert.deepEqual(first, [256, loc(1, 256, 256 % 97)]);
    } finally {
      await map.close();
    }
  });

  test('a second opener of the directory is refused with VD_DIR_LOCKED, in another process and in this one', async () => {
    const dir = await tempDir();
    const map = await LbaMap.open({ dir });
    try {
      const entry = fileURLToPath(new URL('./index.js', import.meta.url));
      const script = `
        const { LbaMap } = await import(${JSON.stringify(entry)});
        try { await LbaMap.open({ dir: ${JSON.stringify(dir)} }); console.log('OPENED'); }
        catch (err) { console.log(err.code + ' ' + err.message); }`;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        encoding: 'utf8',
      });
      assert.match(
        child.stdout,
        /^VD_DIR_LOCKED .*in use by another process/,
        child.stdout + child.stderr,
      );
      await assert.rejects(LbaMap.open({ dir }), (err: unknown) =>
        isShaleError(err, 'VD_DIR_LOCKED'),
      );
    } finally {
      await map.close();
    }
    const again = await LbaMap.open({ dir });
    await again.close();
  });
  test('applyBehind: reads, ranges and snapshots see applies at once, before the log has them; a reopen after drain has them all (seeded model check)', async () => {
    const seed = Number(process.env.VD_TEST_SEED ?? Date.now() % 2 ** 31);
    const random = seededRandom(seed);
    const dir = await tempDir();
    let map = await LbaMap.open({ dir, cacheEntries: 8 });
    const model = new Map<number, ClusterLocation>();
    const say = (step: number) => `seed ${seed} (VD_TEST_SEED=${seed}) step ${step}`;
    const CLUSTERS = 200;
    const sorted = () => [...model.entries()].sort((a, b) => a[0] - b[0]);
    let meta = 0;
    for (let step = 0; step < 400; step += 1) {
      const updates: LbaUpdate[] = [];
      for (let n = Math.floor(random() * 20); n > 0; n -= 1) {
        const index = Math.floor(random() * CLUSTERS);
        if (random() < 0.25) {
          updates.push(unmap(index));
          model.delete(index);
        } else {
          // One payload per SCO slot (the map keys CRC32Cs by SCO and cluster offset).
          const location = loc(
            1 + Math.floor(random() * 5),
            step * 20 + n,
            Math.floor(random() * 2 ** 32),
          );
          updates.push(put(index, location));
          model.set(index, location);
        }
      }
      meta += 1;
      const marker = Buffer.from(String(meta));
      // Not awaited on purpose: what follows runs while the checkpoint writes behind.
      const applied = map.applyBehind(updates, { meta: marker });
      const from = Math.floor(random() * CLUSTERS);
      const to = from + Math.floor(random() * (CLUSTERS - from + 1));
      const ranged = collect(map, from, to);
      const snapshot = (async () => {
        const out: [number, ClusterLocation][] = [];
        let seenMeta: Buffer | undefined;
        for await (const value of map.snapshotEntries()) {
          if (Buffer.isBuffer(value)) seenMeta = value;
          else out.push(value);
        }
        return { out, seenMeta };
      })();
      const indexes = Array.from({ length: 10 }, () =>
        clusterIndex(Math.floor(random() * CLUSTERS)),
      );
      const got = await map.getMany(indexes);
      const expectedRange = sorted().filter(([i]) => i >= from && i < to);
      const expectedAll = sorted();
      for (let k = 0; k < indexes.length; k += 1) {
        assert.deepEqual(got[k], model.get(indexes[k] as number), say(step));
      }
      assert.deepEqual(await ranged, expectedRange, `${say(step)}: range ${from}..${to}`);
      const snap = await snapshot;
      assert.deepEqual(snap.out, expectedAll, `${say(step)}: snapshot`);
      assert.equal(snap.seenMeta?.toString(), String(meta), `${say(step)}: snapshot marker`);
      assert.equal((await map.getMeta())?.toString(), String(meta), say(step));
      await applied;
      if (random() < 0.05) {
        await map.close();
        map = await LbaMap.open({ dir, cacheEntries: 8 });
        assert.deepEqual(await collect(map, 0, CLUSTERS), sorted(), `${say(step)}: after reopen`);
        assert.equal((await map.getMeta())?.toString(), String(meta), `${say(step)}: marker`);
      }
    }
    await map.drain();
    assert.equal(map.cacheStats().pending, 0, 'everything reached the log');
    await map.close();
  });
});
