// Proves the volume keeps every acknowledged byte through random writes, trims, flushes, snapshots, clones, rollbacks, restarts, crashes and restores from the backend, by checking every read against an in-memory model, with no cluster cache, a tiny one or the default, and no, one SCO's or the default SCO memory (seeded: SHALE_SEED replays, SHALE_MODEL_OPS sets the length).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 2 * MiB;
const CLUSTER = 4096;

interface ModelDisk {
  bytes: Buffer;
  snapshots: Map<string, Buffer>;
  /** The vDisk has clones from these snapshots. */
  clonedFrom: Set<string>;
}

test('seeded model: volumes through writes, trims, snapshots, clones, rollbacks, restarts, crashes, restores', async () => {
  const seed = Number(process.env.SHALE_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const opsTotal = Number(process.env.SHALE_MODEL_OPS ?? 1500);
  const random = seededRandom(seed);
  const int = (n: number) => Math.floor(random() * n);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-vd-model-'));
  const kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  const backend = new MemoryVolumeBackend();
  const wb = path.join(dir, 'wb');
  // The cluster cache: none, one chunk shared by every vDisk (evicting all the time), or the
  // default; chosen by the seed.
  const clusterCacheBytes = [0, MiB, undefined][int(3)];
  // SCO memory (sealed SCOs kept whole until uploaded): none (every upload reads the file
  // back), one SCO's worth (buffers recycled all the time, most SCOs read back), or the default.
  const scoMemoryBytes = [0, 4 * MiB, undefined][int(3)];
  const open = () =>
    VolumeManager.open({
      kv,
      backend,
      dir: wb,
      nodeId: 'node-a',
      tlogScos: 2,
      ...(clusterCacheBytes === undefined ? {} : { clusterCacheBytes }),
      ...(scoMemoryBytes === undefined ? {} : { scoMemoryBytes }),
    });
  let manager = await open();
  const model = new Map<string, ModelDisk>();
  let step = 0;
  let last = '';
  let scrubbed = 0;
  try {
    await manager.createVpool({
      name: 'pool',
      backendId: 'b',
      scoSizeBytes: 4 * MiB,
      writeBufferBytes: 16 * MiB,
    });
    for (const name of ['a', 'b']) {
      await manager.createVdisk({ name, vpoolName: 'pool', sizeBytes: DISK_BYTES });
      model.set(name, {
        bytes: Buffer.alloc(DISK_BYTES),
        snapshots: new Map(),
        clonedFrom: new Set(),
      });
    }
    let snapCounter = 0;
    let cloneCounter = 0;
    const pick = () => {
      const names = [...model.keys()];
      return names[int(names.length)] as string;
    };
    const randomRange = () => {
      const aligned = random() < 0.5;
      const lengthBytes = aligned ? (1 + int(64)) * CLUSTER : 1 + int(3 * CLUSTER);
      const offsetBytes = aligned
        ? int(DISK_BYTES / CLUSTER - lengthBytes / CLUSTER + 1) * CLUSTER
        : int(DISK_BYTES - lengthBytes + 1);
      return { offsetBytes, lengthBytes };
    };
    const check = async (name: string, offsetBytes: number, lengthBytes: number) => {
      const got = await manager.io(name).read(offsetBytes, lengthBytes);
      const want = (model.get(name) as ModelDisk).bytes.subarray(
        offsetBytes,
        offsetBytes + lengthBytes,
      );
      if (!got.equals(want)) {
        let at = 0;
        while (got[at] === want[at]) at += 1;
        assert.fail(
          `${name}: read ${offsetBytes}+${lengthBytes} differs at byte ${offsetBytes + at}`,
        );
      }
    };
    // Block status must never call a range with data in it a hole (a sparse copy would
    // skip it); holes read as zeros. Returns the extents for stronger checks.
    const checkStatus = async (name: string, offsetBytes: number, lengthBytes: number) => {
      const extents = await manager.io(name).blockStatus(offsetBytes, lengthBytes);
      const bytes = (model.get(name) as ModelDisk).bytes;
      assert.ok(extents.length > 0, 'block status without extents');
      let at = offsetBytes;
      for (const extent of extents) {
        assert.ok(extent.lengthBytes > 0, 'an empty extent');
        if (extent.hole) {
          const hole = bytes.subarray(at, at + extent.lengthBytes);
          assert.ok(
            hole.every((b) => b === 0),
            `${name}: ${at}+${extent.lengthBytes} reported a hole but holds data`,
          );
        }
        at += extent.lengthBytes;
      }
      assert.ok(at <= offsetBytes + lengthBytes, 'block status past the range');
      return extents;
    };
    const checkAll = async () => {
      for (const name of model.keys()) {
        for (let at = 0; at < DISK_BYTES; at += 256 * 1024) await check(name, at, 256 * 1024);
      }
    };

    for (step = 0; step < opsTotal; step += 1) {
      const roll = random();
      const name = pick();
      const disk = model.get(name) as ModelDisk;
      const io = manager.io(name);
      if (roll < 0.4) {
        // A burst of concurrent writes (as a client at queue depth > 1 sends them).
        const burst = 1 + int(8);
        const writes: Promise<void>[] = [];
        const ranges: { offsetBytes: number; lengthBytes: number }[] = [];
        for (let i = 0; i < burst; i += 1) {
          const { offsetBytes, lengthBytes } = randomRange();
          ranges.push({ offsetBytes, lengthBytes });
          const data = Buffer.alloc(lengthBytes, 1 + int(255));
          if (lengthBytes >= 4) data.writeUInt32LE(step, int(lengthBytes - 3));
          data.copy(disk.bytes, offsetBytes);
          last = `write ${name} ${offsetBytes}+${lengthBytes}`;
          writes.push(io.write(offsetBytes, data, { fua: random() < 0.1 }));
        }
        await Promise.all(writes);
        // A write maps every cluster it touches: its range is one data extent now.
        const written = ranges[int(ranges.length)] as { offsetBytes: number; lengthBytes: number };
        assert.deepEqual(
          await checkStatus(name, written.offsetBytes, written.lengthBytes),
          [{ lengthBytes: written.lengthBytes, hole: false }],
          `block status after write ${name} ${written.offsetBytes}+${written.lengthBytes}`,
        );
      } else if (roll < 0.6) {
        const { offsetBytes, lengthBytes } = randomRange();
        if (random() < 0.25) {
          last = `block status ${name} ${offsetBytes}+${lengthBytes}`;
          await checkStatus(name, offsetBytes, lengthBytes);
        } else {
          last = `read ${name} ${offsetBytes}+${lengthBytes}`;
          await check(name, offsetBytes, lengthBytes);
        }
      } else if (roll < 0.67) {
        const { offsetBytes, lengthBytes } = randomRange();
        if (random() < 0.5) {
          last = `trim ${name} ${offsetBytes}+${lengthBytes}`;
          await io.trim(offsetBytes, lengthBytes);
          // Only whole clusters are unmapped; partial edges keep their data.
          const from = Math.ceil(offsetBytes / CLUSTER) * CLUSTER;
          const to = Math.floor((offsetBytes + lengthBytes) / CLUSTER) * CLUSTER;
          if (to > from) {
            disk.bytes.fill(0, from, to);
            // The trimmed clusters are holes now (one extent: the scan is short).
            const extents = await checkStatus(name, from, to - from);
            assert.deepEqual(extents, [{ lengthBytes: to - from, hole: true }], last);
          }
        } else {
          last = `writeZeroes ${name} ${offsetBytes}+${lengthBytes}`;
          await io.writeZeroes(offsetBytes, lengthBytes);
          disk.bytes.fill(0, offsetBytes, offsetBytes + lengthBytes);
        }
      } else if (roll < 0.7) {
        last = `flush ${name}`;
        await io.flush();
      } else if (roll < 0.75) {
        snapCounter += 1;
        const snap = `s${snapCounter}`;
        if (random() < 0.3 && model.size > 1) {
          const names = [...model.keys()].filter(() => random() < 0.7);
          if (names.length === 0) names.push(name);
          last = `group snapshot ${names.join(',')} ${snap}`;
          await manager.createGroupSnapshot(names, snap);
          for (const n of names) {
            const d = model.get(n) as ModelDisk;
            d.snapshots.set(snap, Buffer.from(d.bytes));
          }
        } else {
          last = `snapshot ${name} ${snap}`;
          await manager.createSnapshot(name, snap);
          disk.snapshots.set(snap, Buffer.from(disk.bytes));
        }
      } else if (roll < 0.78 && disk.snapshots.size > 0) {
        const snaps = [...disk.snapshots.keys()];
        const snap = snaps[int(snaps.length)] as string;
        const later = snaps.slice(snaps.indexOf(snap) + 1);
        last = `rollback ${name} ${snap}`;
        try {
          await manager.rollback(name, snap);
          assert.ok(
            !later.some((s) => disk.clonedFrom.has(s)),
            'rollback past a cloned snapshot was allowed',
          );
          disk.bytes = Buffer.from(disk.snapshots.get(snap) as Buffer);
          for (const s of later) disk.snapshots.delete(s);
        } catch (err) {
          assert.ok(isShaleError(err, 'VD_HAS_CLONES'), String(err));
          assert.ok(later.some((s) => disk.clonedFrom.has(s)));
        }
      } else if (roll < 0.8 && disk.snapshots.size > 0 && model.size < 6) {
        const snaps = [...disk.snapshots.keys()];
        const snap = snaps[int(snaps.length)] as string;
        cloneCounter += 1;
        const clone = `c${cloneCounter}`;
        last = `clone ${name}@${snap} -> ${clone}`;
        await manager.cloneVdisk({ name: clone, parentName: name, snapshotName: snap });
        disk.clonedFrom.add(snap);
        model.set(clone, {
          bytes: Buffer.from(disk.snapshots.get(snap) as Buffer),
          snapshots: new Map(),
          clonedFrom: new Set(),
        });
        await check(clone, 0, DISK_BYTES);
      } else if (roll < 0.82 && disk.snapshots.size > 0) {
        const snaps = [...disk.snapshots.keys()];
        const snap = snaps[int(snaps.length)] as string;
        last = `delete snapshot ${name}@${snap}`;
        try {
          await manager.deleteSnapshot(name, snap);
          assert.ok(!disk.clonedFrom.has(snap));
          disk.snapshots.delete(snap);
        } catch (err) {
          assert.ok(isShaleError(err, 'VD_HAS_CLONES'), String(err));
        }
      } else if (roll < 0.85) {
        last = 'clean restart';
        await manager.close();
        manager = await open();
        await checkAll();
      } else if (roll < 0.88) {
        // A crash while idle: files closed without syncing. Every acknowledged write is
        // in the page cache, so all of them must be back.
        last = 'crash restart';
        const volumes = manager.openVolumes();
        for (const volume of volumes) await volume.closeFiles();
        manager = await open();
        await checkAll();
      } else if (roll < 0.9) {
        last = `sync-to-backend ${name} and restore on an empty write buffer`;
        for (const n of model.keys()) await manager.syncToBackend(n);
        await manager.close();
        await fs.rm(path.join(wb, 'vdisks'), { recursive: true, force: true });
        manager = await open();
        await checkAll();
      } else if (roll < 0.93) {
        last = `scrub ${name}`;
        const report = await manager.scrub(name, { liveFractionThreshold: 0.9 });
        scrubbed += report.scosRewritten;
        if (report.scosRewritten > 0) {
          assert.ok(
            report.backendBytesAfter < report.backendBytesBefore,
            `scrub ${JSON.stringify(report)} did not shrink the backend`,
          );
        }
        await check(name, 0, DISK_BYTES);
      } else {
        last = `sync-to-backend ${name}`;
        await manager.syncToBackend(name);
      }
    }
    await checkAll();
    console.log(`model: seed ${seed}, ${opsTotal} ops, ${scrubbed} SCOs scrubbed`);
    // Snapshots still read back through a clone of each.
    for (const [name, disk] of model) {
      for (const [snap, bytes] of [...disk.snapshots].slice(0, 1)) {
        const clone = `verify-${name}-${snap}`;
        await manager.cloneVdisk({ name: clone, parentName: name, snapshotName: snap });
        const got = await manager.io(clone).read(0, DISK_BYTES);
        assert.ok(got.equals(bytes), `${clone} differs from the snapshot`);
      }
    }
  } catch (err) {
    console.error(`model test failed: SHALE_SEED=${seed} at step ${step} (${last})`);
    throw err;
  } finally {
    await manager.close();
    await kv.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
