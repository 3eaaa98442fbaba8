// Proves the LBA map against a plain Map (seeded model test, VD_TEST_SEED replays): applies with unmaps, trims and layers, clear, drains, compactions and reopens, while several range() and snapshotEntries() iterators advance slowly in between and must each yield exactly what the map held when they were made; CRC32C tables evicted (a tiny crcCacheBytes) are read back correctly, and tables whose SCO lost its last cluster are dropped.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { seededRandom } from '@shale/testing';
import { LbaMap, type LbaUpdate } from './lba-map.js';
import { collect, loc, put, TempDirs, testSeed, unmap } from './testing/lba-map-fixtures.js';
import { type ClusterLocation, clusterIndex } from './types.js';

const temp = new TempDirs();
after(() => temp.removeAll());

const CLUSTERS = 6000;
const CRC_CACHE_BYTES = 600;
const CACHE_TABLES = 3;

interface LiveIterator {
  readonly what: string;
  readonly values: AsyncGenerator<[number, ClusterLocation] | Buffer>;
  readonly expected: ([number, ClusterLocation] | Buffer)[];
  at: number;
}

test('a seeded model: reads, ranges and snapshots match a plain Map through applies, trims, clear, eviction and reopens', async (t) => {
  const seed = testSeed();
  const random = seededRandom(seed);
  const say = (step: number) => `seed ${seed} (VD_TEST_SEED=${seed}) step ${step}`;
  const dir = await temp.make();
  const options = { dir, crcCacheBytes: CRC_CACHE_BYTES, cacheEntries: CACHE_TABLES };
  let map = await LbaMap.open(options);
  const model = new Map<number, ClusterLocation>();
  let meta: string | undefined;
  /** The next free cluster offset of each (layer, SCO): one payload per SCO slot. */
  const nextOffset = new Map<string, number>();
  let live: LiveIterator[] = [];
  let metaCount = 0;
  let misses = 0;
  const sorted = (from: number, to: number) =>
    [...model.entries()].filter(([i]) => i >= from && i < to).sort((a, b) => a[0] - b[0]);
  const newLocation = (): ClusterLocation => {
    const layer = random() < 0.3 ? 1 + Math.floor(random() * 2) : 0;
    const sco = 1 + Math.floor(random() * 12);
    const key = `${layer}/${sco}`;
    const offset = nextOffset.get(key) ?? 0;
    nextOffset.set(key, offset + 1);
    return loc(sco, offset, Math.floor(random() * 2 ** 32), layer);
  };
  const advance = async (it: LiveIterator, count: number, step: number): Promise<boolean> => {
    for (let k = 0; k < count; k += 1) {
      const next = await it.values.next();
      if (next.done === true) {
        assert.equal(it.at, it.expected.length, `${say(step)}: ${it.what} ended early`);
        return true;
      }
      assert.deepEqual(next.value, it.expected[it.at], `${say(step)}: ${it.what} item ${it.at}`);
      it.at += 1;
    }
    return false;
  };
  const finishAll = async (step: number) => {
    for (const it of live) assert.ok(await advance(it, Number.POSITIVE_INFINITY, step));
    live = [];
  };
  try {
    for (let step = 0; step < 1500; step += 1) {
      const r = random();
      if (r < 0.35) {
        const updates: LbaUpdate[] = [];
        for (let n = 1 + Math.floor(random() * 30); n > 0; n -= 1) {
          const index = Math.floor(random() * CLUSTERS);
          if (random() < 0.2) {
            updates.push(unmap(index));
            model.delete(index);
          } else {
            const location = newLocation();
            updates.push(put(index, location));
            model.set(index, location);
          }
        }
        const withMeta = random() < 0.7;
        if (withMeta) meta = `m${++metaCount}`;
        await map.applyBehind(updates, withMeta ? { meta: Buffer.from(meta as string) } : {});
      } else if (r < 0.42) {
        // A trim: unmap every mapped cluster of a run, as the volume does (from a range).
        const first = Math.floor(random() * CLUSTERS);
        const end = first + Math.floor(random() * 800);
        const updates: LbaUpdate[] = [];
        for await (const [index] of map.range(clusterIndex(first), end)) updates.push(unmap(index));
        for (const [index] of sorted(first, end)) model.delete(index);
        await map.applyBehind(updates);
      } else if (r < 0.52) {
        if (live.length < 4) {
          if (random() < 0.5) {
            const from = Math.floor(random() * CLUSTERS);
            const to = from + Math.floor(random() * (CLUSTERS - from + 10));
            live.push({
              what: `range ${from}..${to} of step ${step}`,
              values: map.range(clusterIndex(from), to),
              expected: sorted(from, to),
              at: 0,
            });
          } else {
            live.push({
              what: `snapshotEntries of step ${step}`,
              values: map.snapshotEntries(),
              expected: [
                ...sorted(0, CLUSTERS),
                ...(meta === undefined ? [] : [Buffer.from(meta)]),
              ],
              at: 0,
            });
          }
        }
      } else if (r < 0.77) {
        const still: LiveIterator[] = [];
        for (const it of live) {
          if (!(await advance(it, 1 + Math.floor(random() * 60), step))) still.push(it);
        }
        live = still;
      } else if (r < 0.87) {
        const indexes = Array.from({ length: 1 + Math.floor(random() * 40) }, () =>
          Math.floor(random() * CLUSTERS),
        );
        assert.deepEqual(
          await map.getMany(indexes.map((i) => clusterIndex(i))),
          indexes.map((i) => model.get(i)),
          say(step),
        );
      } else if (r < 0.9) {
        await map.clear();
        model.clear();
        meta = undefined;
      } else if (r < 0.95) {
        await map.drain(random() < 0.3);
        const stats = map.cacheStats();
        assert.equal(stats.pending, 0, say(step));
        assert.ok(stats.entries <= CACHE_TABLES, `${say(step)}: ${stats.entries} tables in memory`);
        assert.ok(stats.crcTableBytes <= CRC_CACHE_BYTES, `${say(step)}: ${stats.crcTableBytes} B`);
      } else if (r < 0.97) {
        await map.compact();
      } else {
        await finishAll(step);
        misses += map.cacheStats().misses;
        await map.close();
        map = await LbaMap.open(options);
        assert.deepEqual(await collect(map, 0, CLUSTERS), sorted(0, CLUSTERS), say(step));
        assert.equal((await map.getMeta())?.toString(), meta, `${say(step)}: marker`);
      }
      assert.equal(map.cacheStats().mappedClusters, model.size, say(step));
    }
    await finishAll(1500);
    // Unmapping everything drops every CRC32C table, in memory and, after a reopen, in the log.
    await map.apply([...model.keys()].map((i) => unmap(i)));
    model.clear();
    assert.equal(map.cacheStats().crcTables, 0);
    misses += map.cacheStats().misses;
    t.diagnostic(`${say(1500)}: ${misses} CRC32C lookups read a table back from the log`);
    assert.ok(misses > 0, 'evicted tables were read back');
    await map.close();
    map = await LbaMap.open(options);
    assert.equal(map.cacheStats().crcTables, 0);
    assert.equal(map.cacheStats().logTableBytes, 0);
  } finally {
    await map.close();
  }
});
