// Proves that SCOs kept in memory until uploaded reach the backend byte for byte, that a buffer is reused only after the upload that read it resolved (a slow backend checks its input did not change under it), that the pool stays within its budget, and that SCOs past it are read back from disk as before.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { crc32c } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { ScoMemoryPool } from './sco-memory.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';
import { scoObjectName } from './volume-state.js';

const MiB = 1024 * 1024;
const SCO_BYTES = 4 * MiB;
let dir: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-sco-memory-'));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('the pool lends within its budget, reuses buffers of a size, and makes room from other sizes', () => {
  const pool = new ScoMemoryPool(3 * MiB);
  const a = pool.take(MiB);
  const b = pool.take(MiB);
  const c = pool.take(MiB);
  assert.ok(a && b && c);
  assert.equal(pool.take(MiB), undefined, 'a fourth does not fit');
  assert.deepEqual(pool.stats, { taken: 3, refused: 1 });
  pool.give(a);
  assert.equal(pool.take(MiB), a, 'the buffer given back is the one lent next');
  pool.forget(b);
  const d = pool.take(MiB);
  assert.ok(d !== undefined && d !== b, 'a forgotten buffer is never lent again');
  pool.give(c);
  pool.give(d);
  // Two free 1 MiB buffers and one lent (a): a 2 MiB take frees both free ones first.
  const big = pool.take(2 * MiB);
  assert.equal(big?.length, 2 * MiB);
  assert.equal(pool.lentBytesNow, 3 * MiB);
  assert.equal(pool.take(MiB), undefined);
});

/** A backend that holds each put's input for a while and checks it did not change meanwhile. */
class SlowCheckingBackend extends MemoryVolumeBackend {
  changedUnderPut: string[] = [];
  override async putObject(ns: string, name: string, data: Buffer, epoch: number): Promise<void> {
    const before = crc32c(data);
    await new Promise((resolve) => setTimeout(resolve, 30));
    if (crc32c(data) !== before) this.changedUnderPut.push(name);
    await super.putObject(ns, name, data, epoch);
  }
}

for (const memoryBytes of [SCO_BYTES, 0]) {
  test(`SCO memory ${memoryBytes / MiB} MiB: every SCO reaches the backend equal to its file`, async () => {
    const caseDir = path.join(dir, `m${memoryBytes}`);
    const kv = await LevelKv.open({ dir: path.join(caseDir, 'kv') });
    const backend = new SlowCheckingBackend();
    const manager = await VolumeManager.open({
      kv,
      backend,
      dir: path.join(caseDir, 'wb'),
      nodeId: 'n',
      scoMemoryBytes: memoryBytes,
    });
    try {
      await manager.createVpool({ name: 'p', backendId: 'b', scoSizeBytes: SCO_BYTES });
      await manager.createVdisk({ name: 'd', vpoolName: 'p', sizeBytes: 64 * MiB });
      const io = manager.io('d');
      const random = seededRandom(memoryBytes + 7);
      // Six SCOs' worth in 256 KiB writes, several in flight: SCOs seal while others upload.
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 96; i += 1) {
        const data = Buffer.alloc(256 * 1024);
        for (let j = 0; j < data.length; j += 4096) data.writeUInt32LE(random() * 2 ** 32, j);
        writes.push(io.write(((i * 7) % 96) * 256 * 1024, data));
        if (writes.length >= 8) await writes.shift();
      }
      await Promise.all(writes);
      await manager.syncToBackend('d');
      const ns = (await manager.vdiskInfo('d')).namespace;
      const objects = backend.namespaces.get(ns)?.objects as Map<string, Buffer>;
      const scoDir = (await fs.readdir(path.join(caseDir, 'wb'), { recursive: true }))
        .map((f) => String(f))
        .filter((f) => f.endsWith('.sco'));
      let compared = 0;
      for (const file of scoDir) {
        const n = Number.parseInt(path.basename(file, '.sco'), 16);
        const stored = objects.get(scoObjectName(n));
        if (stored === undefined) continue;
        const local = await fs.readFile(path.join(caseDir, 'wb', file));
        assert.ok(stored.equals(local), `SCO ${n} in the backend equals its file`);
        compared += 1;
      }
      assert.ok(compared >= 5, `compared ${compared} SCOs`);
      assert.deepEqual(backend.changedUnderPut, [], 'no upload input changed under its put');
      const stats = manager.scoMemory.stats;
      if (memoryBytes === 0) assert.equal(stats.taken, 0);
      else assert.ok(stats.taken >= 1 && stats.refused >= 1, JSON.stringify(stats));
      assert.ok(manager.scoMemory.lentBytesNow <= memoryBytes);
    } finally {
      await manager.close();
      await kv.close();
    }
  });
}
