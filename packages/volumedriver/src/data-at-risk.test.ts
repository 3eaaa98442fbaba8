// Proves the bound on data at risk: a write reaches the backend within the bound without any sync (a restore on an empty write buffer after a crash reads it back), a clean close leaves nothing at risk, the figures (stats, metrics, the metadata store's marker) say what is at risk before and nothing after, and a restore that finds writes it cannot recover says so; by driving real VolumeManagers (LevelDB store, in-memory backend) with a short bound.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { Registry } from 'prom-client';
import { registryKeys } from './vdisk-registry.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
/** The bound under test (production: 30 s). */
const BOUND_MS = 800;

let dir: string;
let kv: LevelKv;
let backend: MemoryVolumeBackend;
const logs: string[] = [];

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-at-risk-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  backend = new MemoryVolumeBackend();
});

after(async () => {
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function open(registry?: Registry): Promise<VolumeManager> {
  return VolumeManager.open({
    kv,
    backend,
    dir: path.join(dir, 'wb'),
    nodeId: 'node-a',
    dataAtRiskMaxMs: BOUND_MS,
    log: (line) => logs.push(line),
    ...(registry === undefined ? {} : { metricsRegistry: registry }),
  });
}

/** What a lost node leaves: every file closed unsynced, the write buffer gone. */
async function loseTheNode(manager: VolumeManager): Promise<void> {
  for (const volume of manager.openVolumes()) await volume.closeFiles();
  await manager.close();
  await fs.rm(path.join(dir, 'wb'), { recursive: true, force: true });
}

async function marker(manager: VolumeManager, name: string): Promise<unknown> {
  const id = (await manager.vdiskInfo(name)).id;
  const item = await kv.get(registryKeys.atRisk(id));
  return item === undefined ? undefined : JSON.parse(String(item.value));
}

async function stats(manager: VolumeManager, name: string) {
  const info = await manager.vdiskInfo(name);
  assert.ok(info.stats !== undefined);
  return info.stats;
}

test('an unsynced write is in the backend within the bound: a restore after a crash reads it', async () => {
  const registry = new Registry();
  let manager = await open(registry);
  await manager.createVpool({
    name: 'pool',
    backendId: 'b',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 8 * MiB,
  });
  // 20 SCOs per TLog (the default): without the bound, nothing would reach the backend yet.
  await manager.createVdisk({ name: 'v', vpoolName: 'pool', sizeBytes: 16 * MiB });
  const data = crypto.randomBytes(MiB + 4096);
  const writtenAtMs = Date.now();
  await manager.io('v').write(12_288, data);

  // Before: the figures say what is at risk, and the marker is up before the ack.
  const before = await stats(manager, 'v');
  assert.equal(before.dataAtRiskBytes, data.length);
  assert.ok(before.dataAtRiskAgeMs >= 0 && before.dataAtRiskAgeMs < BOUND_MS);
  assert.ok((await marker(manager, 'v')) !== undefined, 'no at-risk marker before the ack');
  assert.match(
    await registry.metrics(),
    new RegExp(`shale_vdisk_data_at_risk_bytes\\{vdisk="v"\\} ${data.length}`),
  );

  // After: nothing at risk, within the bound (a generous margin for a noisy machine).
  let safeAtMs = 0;
  while ((await stats(manager, 'v')).dataAtRiskBytes > 0) {
    assert.ok(Date.now() - writtenAtMs < 10 * BOUND_MS, 'the write never reached the backend');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  safeAtMs = Date.now();
  assert.equal((await stats(manager, 'v')).dataAtRiskAgeMs, 0);
  // The figures drop at once; the marker's delete in the metadata store follows shortly.
  while ((await marker(manager, 'v')) !== undefined) {
    assert.ok(Date.now() - safeAtMs < 5000, 'the marker stays after the upload');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.match(await registry.metrics(), /shale_vdisk_data_at_risk_bytes\{vdisk="v"\} 0/);
  logs.push(`in the backend ${safeAtMs - writtenAtMs} ms after the write (bound ${BOUND_MS} ms)`);

  await loseTheNode(manager);
  manager = await open();
  try {
    assert.equal((await manager.vdiskInfo('v')).state, 'open');
    assert.ok(
      (await manager.io('v').read(12_288, data.length)).equals(data),
      'restored data differs',
    );
    assert.equal((await manager.vdiskInfo('v')).dataLoss, undefined);
  } finally {
    await manager.close();
  }
});

test('a clean close leaves nothing at risk: the write is in the backend at once', async () => {
  let manager = await open();
  const data = crypto.randomBytes(64 * 1024);
  await manager.io('v').write(5 * MiB, data);
  assert.equal((await stats(manager, 'v')).dataAtRiskBytes, data.length);
  await manager.close(); // well before the bound
  await fs.rm(path.join(dir, 'wb'), { recursive: true, force: true });
  manager = await open();
  try {
    assert.ok((await manager.io('v').read(5 * MiB, data.length)).equals(data));
    assert.equal((await manager.vdiskInfo('v')).dataLoss, undefined);
  } finally {
    await manager.close();
  }
});

test('a restore that cannot recover writes says so, loudly and for good', async () => {
  let manager = await open();
  backend.down = true; // the writes cannot leave the write buffer
  const lostAtMs = Date.now();
  await manager.io('v').write(8 * MiB, crypto.randomBytes(8192));
  await new Promise((resolve) => setTimeout(resolve, BOUND_MS + 200));
  const held = await stats(manager, 'v');
  assert.equal(held.dataAtRiskBytes, 8192);
  assert.ok(held.dataAtRiskAgeMs > BOUND_MS, 'the age shows the bound is broken');
  assert.ok(
    logs.some((line) => /have not reached the backend/.test(line)),
    'no warning logged',
  );
  await loseTheNode(manager);
  backend.down = false;
  logs.length = 0;
  manager = await open();
  try {
    const info = await manager.vdiskInfo('v');
    assert.equal(info.state, 'open');
    assert.ok(info.dataLoss !== undefined, 'the loss is not reported');
    assert.equal(info.dataLoss.nodeId, 'node-a');
    assert.ok(info.dataLoss.sinceMs >= lostAtMs - 5 && info.dataLoss.sinceMs <= Date.now());
    assert.ok(
      logs.some((line) => /DATA LOSS: vDisk v/.test(line)),
      logs.join('\n'),
    );
  } finally {
    await manager.close();
  }
  // It stays reported after a clean restart.
  manager = await open();
  try {
    assert.ok((await manager.vdiskInfo('v')).dataLoss !== undefined);
  } finally {
    await manager.close();
  }
});
