// Proves that one vDisk that cannot be opened (its backend namespace gone, as a clone of a deleted parent had) never keeps the others from starting: it is reported (state, error, metric), refused with VD_OPEN_FAILED and retried, while the rest serve; and that creates and deletes cut short by a crash are finished at the next start; by reopening a real VolumeManager (embedded LevelDB metadata store, in-memory backend) on an empty write buffer.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { Registry } from 'prom-client';
import { registryKeys, type VdiskRecord } from './vdisk-registry.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
let dir: string;
let kv: LevelKv;
let backend: MemoryVolumeBackend;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-vd-open-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  backend = new MemoryVolumeBackend();
});

after(async () => {
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function open(registry?: Registry, openRetryMs = 60_000): Promise<VolumeManager> {
  return VolumeManager.open({
    kv,
    backend,
    dir: path.join(dir, 'wb'),
    nodeId: 'node-a',
    openRetryMs,
    ...(registry === undefined ? {} : { metricsRegistry: registry }),
  });
}

test('a vDisk whose namespace is gone is reported and retried; the others start', async () => {
  let manager = await open();
  await manager.createVpool({
    name: 'pool',
    backendId: 'b',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 8 * MiB,
  });
  for (const name of ['good1', 'broken', 'good2']) {
    await manager.createVdisk({ name, vpoolName: 'pool', sizeBytes: 4 * MiB });
    await manager.io(name).write(0, Buffer.alloc(4096, name.length));
    await manager.syncToBackend(name);
  }
  const brokenNs = (await manager.vdiskInfo('broken')).namespace;
  await manager.close();
  // A lost write buffer, and a backend without one namespace.
  await fs.rm(path.join(dir, 'wb'), { recursive: true, force: true });
  const saved = backend.namespaces.get(brokenNs);
  backend.namespaces.delete(brokenNs);

  const registry = new Registry();
  manager = await open(registry);
  try {
    assert.equal(manager.failedVdiskCount, 1);
    for (const name of ['good1', 'good2']) {
      assert.ok((await manager.io(name).read(0, 4096)).equals(Buffer.alloc(4096, name.length)));
    }
    const info = await manager.vdiskInfo('broken');
    assert.equal(info.state, 'failed');
    assert.equal(info.openError?.code, 'VD_BACKEND_ERROR');
    assert.match(info.openError?.message ?? '', /namespace/);
    assert.equal((await manager.vdiskInfo('good1')).state, 'open');
    assert.throws(
      () => manager.io('broken'),
      (err: unknown) => isShaleError(err, 'VD_OPEN_FAILED') && /namespace/.test(String(err)),
    );
    await assert.rejects(manager.rollback('broken', 'x'), (err: unknown) =>
      isShaleError(err, 'VD_OPEN_FAILED'),
    );
    assert.match(await registry.metrics(), /shale_volumedriver_vdisks_failed 1/);

    // Still broken: still failed. Back: it opens and serves.
    await manager.retryFailedOpens();
    assert.equal(manager.failedVdiskCount, 1);
    backend.namespaces.set(brokenNs, saved as NonNullable<typeof saved>);
    await manager.retryFailedOpens();
    assert.equal(manager.failedVdiskCount, 0);
    assert.equal((await manager.vdiskInfo('broken')).state, 'open');
    assert.ok((await manager.io('broken').read(0, 4096)).equals(Buffer.alloc(4096, 6)));
    assert.match(await registry.metrics(), /shale_volumedriver_vdisks_failed 0/);
  } finally {
    await manager.close();
  }
});

test('the background retry opens a vDisk once its backend is back', async () => {
  let manager = await open();
  await manager.createVdisk({ name: 'later', vpoolName: 'pool', sizeBytes: 4 * MiB });
  await manager.syncToBackend('later');
  await manager.close();
  await fs.rm(path.join(dir, 'wb', 'vdisks'), { recursive: true, force: true });
  backend.down = true;
  manager = await open(undefined, 200);
  try {
    assert.equal((await manager.vdiskInfo('later')).state, 'failed');
    backend.down = false;
    const deadline = Date.now() + 10_000;
    while ((await manager.vdiskInfo('later')).state !== 'open') {
      assert.ok(Date.now() < deadline, 'not reopened by the retry timer');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await manager.close();
  }
});

test('a create or delete cut short by a crash is finished at the next start', async () => {
  let manager = await open();
  await manager.createVdisk({ name: 'half-deleted', vpoolName: 'pool', sizeBytes: 4 * MiB });
  const deleted = (await manager.vdiskInfo('half-deleted')).namespace;
  await manager.close();
  // As a crash leaves them: one record claimed but never made ready, one marked deleting.
  const seen = await kv.get(registryKeys.vdiskName('half-deleted'));
  const item = await kv.get(registryKeys.vdisk(String(seen?.value)));
  const record = JSON.parse(String(item?.value)) as VdiskRecord;
  await kv.put(
    registryKeys.vdisk(record.id),
    Buffer.from(JSON.stringify({ ...record, lifecycle: 'deleting' })),
  );
  const claimed: VdiskRecord = {
    ...record,
    id: 'f'.repeat(32),
    name: 'half-created',
    namespace: 'f'.repeat(32),
    lifecycle: 'creating',
  };
  await kv.put(registryKeys.vdiskName('half-created'), Buffer.from(claimed.id));
  await kv.put(registryKeys.vdisk(claimed.id), Buffer.from(JSON.stringify(claimed)));
  await backend.createNamespace(claimed.namespace);

  manager = await open();
  try {
    const names = (await manager.listVdisks()).map((v) => v.name);
    assert.ok(!names.includes('half-deleted') && !names.includes('half-created'), names.join());
    assert.equal(backend.namespaces.has(deleted), false, 'the deleted namespace is gone');
    assert.equal(backend.namespaces.has(claimed.namespace), false, 'the half-created one too');
    assert.equal(manager.failedVdiskCount, 0);
  } finally {
    await manager.close();
  }
});
