// Proves the LBA map's persisted form on real files: at most 8 B per mapped cluster in memory and in the log (dense maps, counted from the typed arrays and the file size), torn tails cut, damage in the middle of the log and a page without its CRC32C table detected (the map starts empty with no marker), clear() atomic on disk, CRC32C tables dropped with their last entry, and an old LevelDB directory replaced by an empty map.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { ClassicLevel } from 'classic-level';
import { LBA_MAP_PAGE_CLUSTERS } from './constants.js';
import { encodeHeader, encodeMarker, encodePage } from './lba-log-format.js';
import { LbaMap, type LbaUpdate } from './lba-map.js';
import { collect, collectSnapshot, loc, put, TempDirs, unmap } from './testing/lba-map-fixtures.js';
import { clusterIndex } from './types.js';

const temp = new TempDirs();
after(() => temp.removeAll());

const LOG = 'map.log';
/** A 64 MiB SCO at 4 KiB clusters. */
const SCO_CLUSTERS = 16_384;

async function fill(map: LbaMap, count: number, at: (i: number) => LbaUpdate): Promise<void> {
  for (let first = 0; first < count; first += 65_536) {
    const updates: LbaUpdate[] = [];
    for (let i = first; i < Math.min(count, first + 65_536); i += 1) updates.push(at(i));
    await map.apply(updates);
  }
}

function quiet(): { log: (message: string) => void; messages: string[] } {
  const messages: string[] = [];
  return { log: (message) => messages.push(message), messages };
}

describe('LBA map persistence', () => {
  test('a dense map costs 8 B per mapped cluster in memory and at most 8 B in its log (CRC32C tables included)', async (t) => {
    const dir = await temp.make();
    const CLUSTERS = 256 * 1024;
    const random = seededRandom(42);
    const crcs = Array.from({ length: CLUSTERS }, () => Math.floor(random() * 2 ** 32));
    // Written sequentially, SCO by SCO, as the write lane does.
    const map = await LbaMap.open({ dir });
    let stats: ReturnType<LbaMap['cacheStats']>;
    try {
      await fill(map, CLUSTERS, (i) =>
        put(i, loc(1 + Math.floor(i / SCO_CLUSTERS), i % SCO_CLUSTERS, crcs[i] as number)),
      );
      await map.compact();
      stats = map.cacheStats();
    } finally {
      await map.close();
    }
    const fileBytes = (await fs.stat(path.join(dir, LOG))).size;
    const memoryPerCluster = stats.mapBytes / stats.mappedClusters;
    const pagesPerCluster = stats.logPageBytes / CLUSTERS;
    const tablesPerCluster = stats.logTableBytes / CLUSTERS;
    t.diagnostic(
      `memory: map ${memoryPerCluster} B/cluster, CRC32C tables ${(stats.crcTableBytes / CLUSTERS).toFixed(3)} B/cluster slot; ` +
        `log: ${(fileBytes / CLUSTERS).toFixed(3)} B/cluster (pages ${pagesPerCluster.toFixed(3)}, tables ${tablesPerCluster.toFixed(3)})`,
    );
    assert.equal(stats.mappedClusters, CLUSTERS);
    assert.ok(memoryPerCluster <= 8, `${memoryPerCluster} B per cluster in memory`);
    assert.equal(stats.logBytes, fileBytes, 'the map accounts for its log');
    assert.ok(fileBytes / CLUSTERS <= 8, `${fileBytes / CLUSTERS} B per cluster in the log`);
    // The CRC32Cs are random: 4 B each, and the entries compress to runs.
    assert.ok(tablesPerCluster >= 4 && tablesPerCluster < 4.01, `${tablesPerCluster}`);
    assert.ok(pagesPerCluster < 0.1, `${pagesPerCluster}`);
    // Everything reads back after a reopen, the CRC32C tables loaded on demand.
    const reopened = await LbaMap.open({ dir });
    try {
      assert.equal(reopened.cacheStats().crcTableBytes, 0);
      const sample = Array.from({ length: 1000 }, (_, k) => (k * 7919) % CLUSTERS);
      const got = await reopened.getMany(sample.map((i) => clusterIndex(i)));
      sample.forEach((i, k) => {
        assert.deepEqual(
          got[k],
          loc(1 + Math.floor(i / SCO_CLUSTERS), i % SCO_CLUSTERS, crcs[i] as number),
        );
      });
      assert.ok(reopened.cacheStats().misses > 0);
    } finally {
      await reopened.close();
    }
  });

  test('a dense map of scattered entries (random SCOs, offsets and layers) stays at 8 B per cluster in memory and in its page records', async (t) => {
    const dir = await temp.make();
    const CLUSTERS = 64 * 1024;
    const random = seededRandom(7);
    // Every (layer, SCO, offset) once: a permutation of the slots of 16 SCOs in 2 layers.
    const slots = Array.from({ length: CLUSTERS }, (_, i) => i);
    for (let i = slots.length - 1; i > 0; i -= 1) {
      const j = Math.floor(random() * (i + 1));
      [slots[i], slots[j]] = [slots[j] as number, slots[i] as number];
    }
    const at = (i: number) => {
      const slot = slots[i] as number;
      return loc(100 + (slot % 16), Math.floor(slot / 32), slot * 2_654_435_761, (slot >> 4) & 1);
    };
    for (const layered of [false, true]) {
      let map = await LbaMap.open({ dir });
      try {
        await map.clear();
        // Without layers, layer 1's slots go to 16 SCOs of their own.
        const flat = (i: number) => {
          const l = at(i);
          return loc(l.scoNumber + 16 * (l.layer ?? 0), l.clusterOffset, l.crc32c);
        };
        const expected = layered ? at : flat;
        await fill(map, CLUSTERS, (i) => put(i, expected(i)));
        await map.compact();
        const stats = map.cacheStats();
        const perCluster = stats.logPageBytes / CLUSTERS;
        t.diagnostic(
          `${layered ? 'with' : 'without'} layers: memory ${stats.mapBytes / CLUSTERS} B/cluster, page records ${perCluster.toFixed(3)} B/cluster, CRC32C tables ${(stats.logTableBytes / CLUSTERS).toFixed(3)} B/cluster`,
        );
        assert.equal(stats.mapBytes / CLUSTERS, 8);
        assert.ok(perCluster <= 8, `${perCluster} B per cluster`);
        // One cluster changed in each of the 64 pages: the log grows by DELTA records
        // (36 B each), not by 64 whole pages (~3 KiB each).
        const before = map.cacheStats().logBytes;
        const changes = Array.from({ length: 64 }, (_, p) => p * 1024 + 17);
        await map.apply(changes.map((i, k) => put(i, loc(999, k, k))));
        const grewBytes = map.cacheStats().logBytes - before;
        t.diagnostic(`64 clusters changed in 64 pages: the log grew by ${grewBytes} B`);
        assert.ok(grewBytes < 64 * 36 + 600, `${grewBytes} B`);
        const expectedNow = (i: number) => {
          const k = changes.indexOf(i);
          return k >= 0 ? loc(999, k, k) : expected(i);
        };
        const sample = [...changes, ...Array.from({ length: 500 }, (_, k) => (k * 131) % CLUSTERS)];
        assert.deepEqual(
          await map.getMany(sample.map((i) => clusterIndex(i))),
          sample.map((i) => expectedNow(i)),
        );
        // And the same after a reopen, from the whole pages and their deltas.
        await map.close();
        map = await LbaMap.open({ dir });
        assert.deepEqual(
          await map.getMany(sample.map((i) => clusterIndex(i))),
          sample.map((i) => expectedNow(i)),
        );
      } finally {
        await map.close();
      }
    }
  });

  test('a torn tail is cut: the newest complete marker is the marker, complete page records after it are kept', async () => {
    const dir = await temp.make();
    const map = await LbaMap.open({ dir });
    await map.apply([put(1, loc(1, 0, 11)), put(2, loc(1, 1, 12))], { meta: Buffer.from('one') });
    await map.apply([put(1, loc(2, 0, 21)), unmap(2)], { meta: Buffer.from('two') });
    await map.close();
    const logPath = path.join(dir, LOG);
    const whole = (await fs.stat(logPath)).size;
    // Cut into the last record (the marker 'two'); then also append garbage.
    await fs.truncate(logPath, whole - 3);
    await fs.appendFile(logPath, Buffer.from('LBAM\x02\x00\x00\x00garbage'));
    const { log, messages } = quiet();
    const reopened = await LbaMap.open({ dir, log });
    try {
      assert.equal((await reopened.getMeta())?.toString(), 'one');
      assert.deepEqual(await collect(reopened, 0, 10), [[1, loc(2, 0, 21)]]);
      assert.match(messages.join('\n'), /cut a torn tail/);
      assert.ok((await fs.stat(logPath)).size < whole, 'the tail is gone from the file');
      // The log goes on from there.
      await reopened.apply([put(3, loc(3, 0, 31))], { meta: Buffer.from('three') });
    } finally {
      await reopened.close();
    }
    const again = await LbaMap.open({ dir, log });
    try {
      assert.equal((await again.getMeta())?.toString(), 'three');
      assert.deepEqual(await collect(again, 0, 10), [
        [1, loc(2, 0, 21)],
        [3, loc(3, 0, 31)],
      ]);
    } finally {
      await again.close();
    }
  });

  test('a damaged record in the middle of the log: the map starts empty with no marker, says VD_CORRUPT, keeps the file', async () => {
    const dir = await temp.make();
    const map = await LbaMap.open({ dir });
    await map.apply([put(5, loc(1, 0, 5))], { meta: Buffer.from('m1') });
    await map.apply([put(6, loc(1, 1, 6))], { meta: Buffer.from('m2') });
    await map.close();
    const logPath = path.join(dir, LOG);
    const bytes = await fs.readFile(logPath);
    // Byte 40 is inside the first checkpoint's first record (after the 20 B header record).
    bytes[40] = (bytes[40] as number) ^ 0xff;
    await fs.writeFile(logPath, bytes);
    const { log, messages } = quiet();
    const reopened = await LbaMap.open({ dir, log });
    try {
      assert.equal(await reopened.getMeta(), undefined, 'no marker: the volume rebuilds');
      assert.deepEqual(await collect(reopened, 0, 100), []);
      assert.match(messages.join('\n'), /VD_CORRUPT: the record at byte 20 .*not a torn tail/);
      assert.deepEqual(await fs.readFile(path.join(dir, 'map.log.corrupt')), bytes);
      await reopened.apply([put(7, loc(2, 0, 7))], { meta: Buffer.from('rebuilt') });
    } finally {
      await reopened.close();
    }
    const again = await LbaMap.open({ dir, log });
    try {
      assert.equal((await again.getMeta())?.toString(), 'rebuilt');
      assert.deepEqual(await collect(again, 0, 100), [[7, loc(2, 0, 7)]]);
    } finally {
      await again.close();
    }
  });

  test('a page that points into a CRC32C table the log does not hold: the map starts empty with no marker, says VD_CORRUPT', async () => {
    const dir = await temp.make();
    await fs.mkdir(dir, { recursive: true });
    const entries = new Uint32Array(2 * LBA_MAP_PAGE_CLUSTERS);
    entries[0] = 9; // SCO 9
    entries[1] = 1; // cluster offset 0, layer 0
    await fs.writeFile(
      path.join(dir, LOG),
      Buffer.concat([encodeHeader(), encodePage(0, entries), encodeMarker(Buffer.from('m'))]),
    );
    const { log, messages } = quiet();
    const map = await LbaMap.open({ dir, log });
    try {
      assert.equal(await map.getMeta(), undefined);
      assert.deepEqual(await collect(map, 0, 10), []);
      assert.match(messages.join('\n'), /VD_CORRUPT: entries point into the CRC32C table of SCO 9/);
    } finally {
      await map.close();
    }
  });

  test('clear() is on disk when it resolves: a copy of the directory taken then has no old entry and no marker', async () => {
    const dir = await temp.make();
    const map = await LbaMap.open({ dir });
    try {
      await map.apply([put(1, loc(1, 0, 1)), put(2000, loc(1, 1, 2))], {
        meta: Buffer.from('old'),
        sync: true,
      });
      const before = collectSnapshot(map.snapshotEntries());
      await map.clear();
      // What a crash right now would leave (the lock file names this live process: a
      // copy opened here takes it over as stale, being our own pid).
      const copy = `${dir}-copy`;
      await fs.cp(dir, copy, { recursive: true });
      await map.apply([put(3, loc(2, 0, 3))]);
      const copied = await LbaMap.open({ dir: copy });
      try {
        assert.equal(await copied.getMeta(), undefined);
        assert.deepEqual(await collect(copied, 0, 10_000), []);
      } finally {
        await copied.close();
      }
      // A snapshot taken before the clear still reads the old map.
      const old = await before;
      assert.deepEqual(old.entries, [
        [1, loc(1, 0, 1)],
        [2000, loc(1, 1, 2)],
      ]);
      assert.equal(old.meta?.toString(), 'old');
      assert.deepEqual(await collect(map, 0, 10_000), [[3, loc(2, 0, 3)]]);
      assert.equal(await map.getMeta(), undefined);
    } finally {
      await map.close();
    }
  });

  test('a snapshot or a read that outlives the map gets VD_CLOSED (or its answer), never a crash', async () => {
    const dir = await temp.make();
    let map = await LbaMap.open({ dir });
    await map.apply(Array.from({ length: 50 }, (_, i) => put(i, loc(1 + (i % 5), i, i))));
    await map.close();
    // Reopened with no room for CRC32C tables: every lookup reads the log.
    map = await LbaMap.open({ dir, crcCacheBytes: 0 });
    const snapshot = map.snapshotEntries();
    // Handled at once: it may fail while close() runs.
    const reading = map.getMany(Array.from({ length: 50 }, (_, i) => clusterIndex(i))).then(
      (got) => (got.length === 50 ? 'answered' : 'wrong'),
      (err: unknown) => (isShaleError(err, 'VD_CLOSED') ? 'closed' : String(err)),
    );
    await map.close();
    await assert.rejects(collectSnapshot(snapshot), (err: unknown) =>
      isShaleError(err, 'VD_CLOSED'),
    );
    assert.match(await reading, /^(answered|closed)$/);
    // A snapshot never iterated is let go when it is collected (global.gc when exposed).
    map = await LbaMap.open({ dir, crcCacheBytes: 0 });
    void map.range(clusterIndex(0), 50);
    await map.close();
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((resolve) => setTimeout(resolve, 10));
  });

  test('a CRC32C table is dropped with the last entry that points into it, in memory and in the log', async () => {
    const dir = await temp.make();
    const map = await LbaMap.open({ dir });
    try {
      await map.apply(Array.from({ length: 100 }, (_, i) => put(i, loc(1, i, i))));
      await map.apply(Array.from({ length: 99 }, (_, i) => put(i, loc(2, i, 1000 + i))));
      assert.equal(map.cacheStats().crcTables, 2, 'cluster 99 still points into SCO 1');
      await map.apply([unmap(99)]);
      assert.equal(map.cacheStats().crcTables, 1);
    } finally {
      await map.close();
    }
    const reopened = await LbaMap.open({ dir });
    try {
      assert.equal(reopened.cacheStats().crcTables, 1, 'the DROP record is in the log');
      assert.deepEqual(await reopened.get(clusterIndex(98)), loc(2, 98, 1098));
    } finally {
      await reopened.close();
    }
  });

  test('a directory of the LevelDB map is replaced by an empty map with no marker (the volume rebuilds it)', async () => {
    const dir = await temp.make();
    const db = new ClassicLevel<Buffer, Buffer>(dir, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    await db.open();
    await db.put(Buffer.alloc(8), Buffer.alloc(12, 1));
    await db.put(Buffer.from([0xff, 0x6d, 0x65, 0x74, 0x61]), Buffer.from('marker'));
    await db.close();
    assert.ok((await fs.readdir(dir)).includes('CURRENT'));
    const { log, messages } = quiet();
    const map = await LbaMap.open({ dir, log });
    try {
      assert.equal(await map.getMeta(), undefined);
      assert.deepEqual(await collect(map, 0, 100), []);
      assert.match(messages.join('\n'), /LevelDB files of an older version/);
      assert.deepEqual((await fs.readdir(dir)).sort(), ['map.lock', 'map.log']);
    } finally {
      await map.close();
    }
  });
});
