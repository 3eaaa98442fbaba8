// Proves the cluster cache returns exactly the bytes put for a (layer, SCO, offset), never more memory than its shared budget, gives the budget back on close, and that CLOCK keeps a cluster read since the hand last passed; a seeded model check against a Map under constant eviction (VD_TEST_SEED replays).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { seededRandom } from '@shale/testing';
import { ClusterCache, ClusterCacheBudget } from './cluster-cache.js';

const CLUSTER = 512;
const CHUNK_BYTES = 256 * CLUSTER; // CHUNK_SLOTS clusters per chunk

function cluster(tag: number): Buffer {
  const data = Buffer.alloc(CLUSTER);
  data.writeUInt32BE(tag >>> 0, 0);
  data.fill(tag & 0xff, 4);
  return data;
}

describe('cluster cache', () => {
  test('copies in and out, whole and partial; distinct layers and SCOs do not collide', () => {
    const cache = new ClusterCache(CLUSTER, 64, new ClusterCacheBudget(CHUNK_BYTES));
    cache.put(0, 7, 3, cluster(1));
    cache.put(1, 7, 3, cluster(2));
    cache.put(0, 8, 3, cluster(3));
    const out = Buffer.alloc(CLUSTER);
    assert.ok(cache.copyOut(0, 7, 3, out, 0));
    assert.deepEqual(out, cluster(1));
    assert.ok(cache.copyOut(1, 7, 3, out, 0));
    assert.deepEqual(out, cluster(2));
    assert.ok(cache.copyOut(0, 8, 3, out, 0));
    assert.deepEqual(out, cluster(3));
    assert.equal(cache.copyOut(0, 7, 4, out, 0), false);
    const part = Buffer.alloc(10);
    assert.ok(cache.copyOut(0, 7, 3, part, 2, 4, 12));
    assert.deepEqual(part.subarray(2), cluster(1).subarray(4, 12));
    assert.equal(cache.stats().hits, 4);
    assert.equal(cache.stats().misses, 1);
  });

  test('the budget is shared: a cache grows only while there is room, and close gives it back', () => {
    const budget = new ClusterCacheBudget(2 * CHUNK_BYTES);
    const a = new ClusterCache(CLUSTER, 4096, budget);
    const b = new ClusterCache(CLUSTER, 4096, budget);
    for (let i = 0; i < 600; i += 1) a.put(0, 1, i, cluster(i));
    assert.equal(budget.allocatedBytes, 2 * CHUNK_BYTES, 'a took both chunks, no more');
    b.put(0, 1, 0, cluster(9));
    assert.equal(b.copyOut(0, 1, 0, Buffer.alloc(CLUSTER), 0), false, 'no room: not cached');
    a.close();
    assert.equal(budget.allocatedBytes, 0);
    b.put(0, 1, 0, cluster(9));
    assert.ok(b.copyOut(0, 1, 0, Buffer.alloc(CLUSTER), 0));
    b.close();
  });

  test('CLOCK: a cluster read since the hand passed survives the next eviction', () => {
    const cache = new ClusterCache(CLUSTER, 4096, new ClusterCacheBudget(CHUNK_BYTES));
    for (let i = 0; i < 256; i += 1) cache.put(0, 1, i, cluster(i));
    const out = Buffer.alloc(CLUSTER);
    assert.ok(cache.copyOut(0, 1, 0, out, 0)); // referenced
    cache.put(0, 1, 300, cluster(300)); // evicts slot 1 (slot 0 gets another round)
    assert.ok(cache.copyOut(0, 1, 0, out, 0));
    assert.deepEqual(out, cluster(0));
    assert.equal(cache.copyOut(0, 1, 1, out, 0), false);
    assert.ok(cache.copyOut(0, 1, 300, out, 0));
    assert.deepEqual(out, cluster(300));
  });

  test('seeded model check under constant eviction: a hit is always the last bytes put', () => {
    const seed = Number(process.env.VD_TEST_SEED ?? Date.now() % 2 ** 31);
    const random = seededRandom(seed);
    const budget = new ClusterCacheBudget(CHUNK_BYTES);
    const cache = new ClusterCache(CLUSTER, 1024, budget);
    const model = new Map<string, number>();
    const out = Buffer.alloc(CLUSTER);
    let hits = 0;
    for (let step = 0; step < 20_000; step += 1) {
      const layer = Math.floor(random() * 2);
      const sco = Math.floor(random() * 6);
      const offset = Math.floor(random() * 200);
      const key = `${layer}/${sco}/${offset}`;
      if (random() < 0.5) {
        const tag = Math.floor(random() * 2 ** 32);
        cache.put(layer, sco, offset, cluster(tag));
        model.set(key, tag);
      } else if (cache.copyOut(layer, sco, offset, out, 0)) {
        hits += 1;
        const tag = model.get(key);
        assert.ok(tag !== undefined, `seed ${seed} step ${step}: a hit for ${key} never put`);
        assert.deepEqual(out, cluster(tag), `seed ${seed} (VD_TEST_SEED=${seed}) step ${step}`);
      }
      assert.ok(budget.allocatedBytes <= CHUNK_BYTES, `seed ${seed}: over budget`);
    }
    // Seeds give 990-1110 hits (the budget holds about a fifth of the keys): a check that
    // the cache serves hits at all under eviction, with room for any seed.
    assert.ok(hits > 500, `seed ${seed}: only ${hits} hits`);
  });
});
