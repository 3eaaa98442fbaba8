// Proves the vDisk operations answer bad input with specific errors and change nothing, that group snapshots are one consistent cut, that a full write buffer slows writes instead of failing them, and that metrics count what happened; by driving a real VolumeManager (embedded LevelDB metadata store, in-memory backend).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { rejectsWith } from '@shale/testing';
import { Registry } from 'prom-client';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
let dir: string;
let kv: LevelKv;
let backend: MemoryVolumeBackend;
let manager: VolumeManager;
let registry: Registry;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-vd-manager-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  backend = new MemoryVolumeBackend();
  registry = new Registry();
  manager = await VolumeManager.open({
    kv,
    backend,
    dir: path.join(dir, 'wb'),
    nodeId: 'node-a',
    metricsRegistry: registry,
  });
  await manager.createVpool({
    name: 'pool',
    backendId: 'b',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 8 * MiB,
  });
});

after(async () => {
  await manager.close();
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

test('bad input gets a specific error and changes nothing', async () => {
  await rejectsWith(manager.createVpool({ name: 'pool', backendId: 'b' }), 'VD_EXISTS');
  await rejectsWith(manager.createVpool({ name: '../x', backendId: 'b' }), 'VD_INVALID_ARGUMENT');
  const tooSmall = await rejectsWith(
    manager.createVpool({
      name: 'p2',
      backendId: 'b',
      scoSizeBytes: 4 * MiB,
      writeBufferBytes: 4 * MiB,
    }),
    'VD_INVALID_ARGUMENT',
  );
  assert.match(tooSmall.message, /two SCOs/);
  await rejectsWith(
    manager.createVdisk({ name: 'd', vpoolName: 'nope', sizeBytes: MiB }),
    'VD_NOT_FOUND',
  );
  await rejectsWith(
    manager.createVdisk({ name: 'd', vpoolName: 'pool', sizeBytes: 1000 }),
    'VD_INVALID_ARGUMENT',
  );
  await rejectsWith(
    manager.createVdisk({ name: '', vpoolName: 'pool', sizeBytes: MiB }),
    'VD_INVALID_ARGUMENT',
  );
  assert.deepEqual(
    (await manager.listVdisks()).map((v) => v.name),
    [],
  );
  await manager.createVdisk({ name: 'd', vpoolName: 'pool', sizeBytes: MiB });
  await rejectsWith(
    manager.createVdisk({ name: 'd', vpoolName: 'pool', sizeBytes: MiB }),
    'VD_EXISTS',
  );
  const io = manager.io('d');
  await io.write(0, Buffer.alloc(4096, 7));
  await assert.rejects(() => io.write(MiB - 100, Buffer.alloc(200)), /past the end/);
  await rejectsWith(
    Promise.resolve().then(() => io.read(MiB, 1)),
    'VD_OUT_OF_RANGE',
  );
  await rejectsWith(
    Promise.resolve().then(() => io.read(-1, 1)),
    'VD_INVALID_ARGUMENT',
  );
  await rejectsWith(
    Promise.resolve().then(() => io.read(0.5, 1)),
    'VD_INVALID_ARGUMENT',
  );
  assert.ok(
    (await io.read(MiB - 200, 200)).equals(Buffer.alloc(200)),
    'a refused write changed nothing',
  );
  assert.ok((await io.read(0, 4096)).equals(Buffer.alloc(4096, 7)));
  await rejectsWith(manager.createSnapshot('d', 'a/b'), 'VD_INVALID_ARGUMENT');
  await rejectsWith(manager.rollback('d', 'nope'), 'VD_NOT_FOUND');
  await rejectsWith(
    manager.cloneVdisk({ name: 'c', parentName: 'd', snapshotName: 'nope' }),
    'VD_NOT_FOUND',
  );
  await rejectsWith(
    Promise.resolve().then(() => manager.io('nope')),
    'VD_NOT_FOUND',
  );
  await rejectsWith(manager.scrub('d', { liveFractionThreshold: 2 }), 'VD_INVALID_ARGUMENT');
});

test('resize grows; a shrink needs force and then drops the tail', async () => {
  await manager.createVdisk({ name: 'r', vpoolName: 'pool', sizeBytes: MiB });
  const io = manager.io('r');
  await io.write(MiB - 4096, Buffer.alloc(4096, 9));
  assert.match(
    (await rejectsWith(manager.resizeVdisk('r', MiB / 2), 'VD_INVALID_ARGUMENT')).message,
    /force/,
  );
  assert.equal(io.sizeBytes, MiB);
  await manager.resizeVdisk('r', 2 * MiB);
  assert.equal((await manager.vdiskInfo('r')).sizeBytes, 2 * MiB);
  await io.write(2 * MiB - 4096, Buffer.alloc(4096, 1));
  await manager.resizeVdisk('r', MiB / 2, { force: true });
  await manager.resizeVdisk('r', 2 * MiB);
  assert.ok(
    (await io.read(MiB - 4096, 4096)).equals(Buffer.alloc(4096)),
    'the dropped tail reads as zeros',
  );
});

test('deleting a vDisk or snapshot that clones read from is refused', async () => {
  await manager.createVdisk({ name: 'p', vpoolName: 'pool', sizeBytes: MiB });
  await manager.io('p').write(0, Buffer.alloc(8192, 3));
  await manager.createSnapshot('p', 's1');
  await manager.cloneVdisk({ name: 'p-clone', parentName: 'p', snapshotName: 's1' });
  assert.match((await rejectsWith(manager.deleteVdisk('p'), 'VD_HAS_CLONES')).message, /p-clone/);
  await rejectsWith(manager.deleteSnapshot('p', 's1'), 'VD_HAS_CLONES');
  assert.ok((await manager.io('p-clone').read(0, 8192)).equals(Buffer.alloc(8192, 3)));
  const ns = (await manager.vdiskInfo('p-clone')).namespace;
  await manager.deleteVdisk('p-clone');
  assert.equal(backend.namespaces.has(ns), false, 'the clone namespace is gone');
  await manager.deleteSnapshot('p', 's1');
  await manager.deleteVdisk('p');
});

test('a group snapshot is one cut across vDisks under concurrent writes', async () => {
  await manager.createVdisk({ name: 'ga', vpoolName: 'pool', sizeBytes: MiB });
  await manager.createVdisk({ name: 'gb', vpoolName: 'pool', sizeBytes: MiB });
  const a = manager.io('ga');
  const b = manager.io('gb');
  // Write i goes to A, and only once A acknowledged it, to B. So any consistent cut has
  // B's counter equal to A's or one behind; never ahead.
  let stop = false;
  const counter = (n: number) => {
    const buf = Buffer.alloc(4096);
    buf.writeUInt32LE(n);
    return buf;
  };
  const writer = (async () => {
    for (let i = 1; !stop; i += 1) {
      await a.write(0, counter(i));
      await b.write(0, counter(i));
    }
  })();
  for (let round = 0; round < 5; round += 1) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    await manager.createGroupSnapshot(['ga', 'gb'], `g${round}`);
  }
  stop = true;
  await writer;
  for (let round = 0; round < 5; round += 1) {
    await manager.cloneVdisk({ name: `ga-${round}`, parentName: 'ga', snapshotName: `g${round}` });
    await manager.cloneVdisk({ name: `gb-${round}`, parentName: 'gb', snapshotName: `g${round}` });
    const seenA = (await manager.io(`ga-${round}`).read(0, 4)).readUInt32LE();
    const seenB = (await manager.io(`gb-${round}`).read(0, 4)).readUInt32LE();
    assert.ok(
      seenA === seenB || seenA === seenB + 1,
      `round ${round}: A at ${seenA}, B at ${seenB}`,
    );
    assert.ok(seenA > 0, 'the snapshot saw the writes before it');
  }
});

test('a full write buffer slows writes down until the backend is back; metrics count it', async () => {
  await manager.createVdisk({ name: 'bp', vpoolName: 'pool', sizeBytes: 32 * MiB });
  const io = manager.io('bp');
  backend.down = true;
  let done = 0;
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 24; i += 1) {
    writes.push(
      io.write(i * MiB, Buffer.alloc(MiB, i + 1)).then(() => {
        done += 1;
      }),
    );
  }
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.ok(
    done < 24,
    `all ${done} writes went through with the backend down and an 8 MiB write buffer`,
  );
  const stats = (await manager.vdiskInfo('bp')).stats;
  assert.ok(stats !== undefined && stats.writeBufferDirtyBytes >= 4 * MiB);
  backend.down = false;
  await Promise.all(writes);
  await manager.syncToBackend('bp');
  for (let i = 0; i < 24; i += 1)
    assert.ok((await io.read(i * MiB, MiB)).equals(Buffer.alloc(MiB, i + 1)));
  const text = await registry.metrics();
  assert.match(text, /shale_vdisk_write_ops_total\{vdisk="bp"\} 24/);
  assert.match(text, /shale_vdisk_request_seconds_count\{vdisk="bp",op="write"\} 24/);
  assert.match(text, /shale_vdisk_scos_uploaded_total\{vdisk="bp"\} [1-9]/);
});

test('storage routers register themselves; locating a vDisk names its owner and the fail-over routers', async () => {
  await manager.createVdisk({ name: 'where', vpoolName: 'pool', sizeBytes: 4 * MiB });
  const before = await manager.locateVdisk('where');
  assert.equal(before.ownerNodeId, 'node-a');
  assert.equal(before.ownerAddress, '', 'an owner that never registered has no address');
  await manager.registerStorageRouter('127.0.0.1:8800');
  await kv.put(
    Buffer.from('/shale/storagerouters/node-b'),
    Buffer.from(JSON.stringify({ nodeId: 'node-b', address: '127.0.0.2:8800', startedAtMs: 1 })),
  );
  const location = await manager.locateVdisk('where');
  assert.equal(location.ownerAddress, '127.0.0.1:8800');
  assert.equal(location.sizeBytes, 4 * MiB);
  assert.equal(location.clusterSizeBytes, 4096);
  assert.deepEqual(
    location.failoverRouters.map((r) => [r.nodeId, r.address]),
    [['node-b', '127.0.0.2:8800']],
  );
  assert.deepEqual(
    (await manager.listStorageRouters()).map((r) => r.nodeId),
    ['node-a', 'node-b'],
  );
  await rejectsWith(manager.locateVdisk('nowhere'), 'VD_NOT_FOUND');
  // Block status on a fresh vDisk: one hole; after a write in the middle, hole-data-hole.
  const io = manager.io('where');
  assert.deepEqual(await io.blockStatus(0, 4 * MiB), [{ lengthBytes: 4 * MiB, hole: true }]);
  await io.write(8192 + 100, Buffer.alloc(10, 7));
  assert.deepEqual(await io.blockStatus(1, 4 * MiB - 1), [
    { lengthBytes: 8191, hole: true },
    { lengthBytes: 4096, hole: false },
    { lengthBytes: 4 * MiB - 12288, hole: true },
  ]);
  await rejectsWith(io.blockStatus(0, 4 * MiB + 1), 'VD_OUT_OF_RANGE');
  await rejectsWith(io.blockStatus(0, 0), 'VD_INVALID_ARGUMENT');
});
