// Proves the write buffer's space guard: on a file system that fills up, writes are refused with VD_NO_SPACE before anything of them is written (after a bounded wait, and only while uploads are queued; the vDisk stays healthy, every acknowledged byte reads back), cached SCOs are dropped first, writes go through again once space is back, and the reserve file is released at open and made again when there is room; by driving a real VolumeManager (LevelDB store, in-memory backend) over a file system whose free space the test sets.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';
import { WriteBufferSpace } from './write-buffer-space.js';

const MiB = 1024 * 1024;
const RESERVE_BYTES = 4 * MiB;
const MARGIN_BYTES = 8 * MiB;
let dir: string;
let kv: LevelKv;
let backend: MemoryVolumeBackend;
/** What the fake statfs says is free. */
let freeBytes = 1024 * MiB;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-wb-space-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  backend = new MemoryVolumeBackend();
});

after(async () => {
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function open(): Promise<VolumeManager> {
  return VolumeManager.open({
    kv,
    backend,
    dir: path.join(dir, 'wb'),
    nodeId: 'node-a',
    writeBufferReserveBytes: RESERVE_BYTES,
    writeBufferMarginBytes: MARGIN_BYTES,
    writeBufferStatfs: async () => ({ totalBytes: 2048 * MiB, availableBytes: freeBytes }),
  });
}

const reserveFile = () => path.join(dir, 'wb', 'space-reserve');
const exists = (file: string) =>
  fs.stat(file).then(
    (s) => s.size,
    () => undefined,
  );

test('a full write buffer refuses writes cleanly, keeps every acknowledged byte, and takes writes again', async () => {
  let manager = await open();
  assert.equal(await exists(reserveFile()), RESERVE_BYTES, 'the reserve is made at open');
  assert.equal(manager.spaceStatus().reserveHeld, true);
  await manager.createVpool({
    name: 'pool',
    backendId: 'b',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 8 * MiB,
  });
  await manager.createVdisk({ name: 'v', vpoolName: 'pool', sizeBytes: 64 * MiB });
  const io = manager.io('v');
  const acked = crypto.randomBytes(2 * MiB);
  await io.write(0, acked);

  // The disk fills up (the ASDs on it, another process): below the margin, writes are refused.
  freeBytes = MARGIN_BYTES + MiB;
  await new Promise((resolve) => setTimeout(resolve, 400)); // past a refresh
  const refused = crypto.randomBytes(2 * MiB);
  await assert.rejects(
    io.write(8 * MiB, refused),
    (err: unknown) => isShaleError(err, 'VD_NO_SPACE') && /full/.test(String(err)),
  );
  assert.equal(manager.spaceStatus().low, true);
  assert.ok(manager.spaceStatus().refusedWrites >= 1);
  // Nothing of the refused write is there; the acknowledged one is; reads and small writes that fit still work.
  assert.ok((await io.read(8 * MiB, 2 * MiB)).equals(Buffer.alloc(2 * MiB)));
  assert.ok((await io.read(0, acked.length)).equals(acked));
  const info = await manager.vdiskInfo('v');
  assert.equal(info.state, 'open');
  assert.equal(info.stats?.writeLaneError, '', 'a refusal must not stop the write lane');

  // Space is back: writes go through.
  freeBytes = 1024 * MiB;
  await new Promise((resolve) => setTimeout(resolve, 400));
  await io.write(8 * MiB, refused);
  assert.ok((await io.read(8 * MiB, 2 * MiB)).equals(refused));
  assert.equal(manager.spaceStatus().low, false);
  await manager.close();

  // A restart with the disk full: the reserve is released so the metadata can open, and it
  // is not made again while there is no room.
  freeBytes = MARGIN_BYTES;
  manager = await open();
  try {
    assert.equal(await exists(reserveFile()), undefined, 'the reserve is released at open');
    assert.equal(manager.spaceStatus().reserveHeld, false);
    assert.ok((await manager.io('v').read(0, acked.length)).equals(acked));
    freeBytes = 1024 * MiB;
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(manager.spaceStatus().reserveHeld, true, 'the reserve is made again');
    assert.equal(await exists(reserveFile()), RESERVE_BYTES);
  } finally {
    await manager.close();
  }
});

test('a batch that does not fit waits for space while uploads are queued, and only then', async () => {
  let free = 4 * MiB;
  const space = new WriteBufferSpace({
    dir: path.join(dir, 'guard'),
    marginBytes: MARGIN_BYTES,
    spaceWaitMs: 600,
    statfs: async () => ({ totalBytes: 2048 * MiB, availableBytes: free }),
  });
  await space.refresh();
  assert.equal(space.tryAdmit(MiB), false, 'under the margin');

  // Uploads queued: the space they give back (300 ms later) admits the batch.
  let started = Date.now();
  setTimeout(() => {
    free = 64 * MiB;
  }, 300);
  await space.admitWaiting(MiB, () => true);
  assert.ok(Date.now() - started >= 250, `admitted after ${Date.now() - started} ms`);

  // No upload queued: refused at once.
  free = 4 * MiB;
  await space.refresh();
  started = Date.now();
  await assert.rejects(
    space.admitWaiting(MiB, () => false),
    (err: unknown) => isShaleError(err, 'VD_NO_SPACE'),
  );
  assert.ok(Date.now() - started < 200, `refused after ${Date.now() - started} ms`);

  // Uploads queued but no space ever comes back: refused after the wait.
  started = Date.now();
  await assert.rejects(
    space.admitWaiting(MiB, () => true),
    (err: unknown) => isShaleError(err, 'VD_NO_SPACE'),
  );
  const waited = Date.now() - started;
  assert.ok(waited >= 550 && waited < 3000, `refused after ${waited} ms`);
  assert.equal(space.status().low, true);
  await space.close();
});
