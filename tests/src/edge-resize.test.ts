// Proves a resized vDisk is seen at its new size by every new NBD connection while older connections to it stay open (grow and shrink), and that an open connection's requests past a shrunk end get ENOSPC (writes) or EINVAL (the rest) and never a byte; over the real edge daemon (VolumedriverExports: LocateVdisk, one shared Io stream) in front of a real VolumeManager (LevelDB store, in-memory backend) behind the real gRPC VolumeService, with raw NBD clients for exact errors and nbdinfo for what a real client sees.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { bindGrpcServer, shutdownGrpcServer } from '@shale/common';
import { EdgeDaemon, NbdErrno } from '@shale/edge';
import { type NbdReply, RawNbdClient } from '@shale/edge/testing';
import {
  createVolumeGrpcServer,
  MemoryVolumeBackend,
  VolumeClient,
  VolumeManager,
} from '@shale/volumedriver';
import { mustRun } from './support/commands.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const DISK = 'resized';

let dir: string;
let kv: LevelKv;
let manager: VolumeManager;
let grpcServer: ReturnType<typeof createVolumeGrpcServer>;
let volumes: VolumeClient;
let edge: EdgeDaemon;
const clients: RawNbdClient[] = [];

function pattern(lengthBytes: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  for (let i = 0; i < lengthBytes; i += 4) out.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return out;
}

/** A new connection that negotiates the vDisk; returns it and the size it was told. */
async function open(): Promise<{ client: RawNbdClient; sizeBytes: number }> {
  const client = await RawNbdClient.connect(edge.port);
  clients.push(client);
  const { sizeBytes } = await client.handshake({ name: DISK });
  return { client, sizeBytes };
}

/** The size nbdinfo (libnbd) sees on a connection of its own. */
async function nbdinfoSize(): Promise<number> {
  const result = await mustRun('nbdinfo', ['--size', `nbd://127.0.0.1:${edge.port}/${DISK}`], {
    package: 'libnbd-bin',
  });
  return Number(result.stdout.trim());
}

function assertErrno(reply: NbdReply, errno: NbdErrno, what: string): void {
  assert.equal(reply.error, errno, `${what}: errno ${reply.error}, expected ${errno}`);
  assert.equal(reply.data.length, 0, `${what}: no data with an error`);
}

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-edge-resize-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  manager = await VolumeManager.open({
    kv,
    backend: new MemoryVolumeBackend(),
    dir: path.join(dir, 'wb'),
    nodeId: 'node-1',
  });
  grpcServer = createVolumeGrpcServer(manager, { nodeId: 'node-1' });
  const port = await bindGrpcServer(grpcServer, '127.0.0.1', 0);
  await manager.registerStorageRouter(`127.0.0.1:${port}`);
  volumes = new VolumeClient(`127.0.0.1:${port}`);
  await volumes.createVpool({
    name: 'pool',
    backendId: 'memory',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 16 * MiB,
  });
  await volumes.createVdisk({ name: DISK, vpoolName: 'pool', sizeBytes: 8 * MiB });
  edge = await EdgeDaemon.start({ volumedrivers: [`127.0.0.1:${port}`], port: 0 });
});

after(async () => {
  for (const client of clients) client.destroy();
  await edge?.close(1_000);
  volumes?.close();
  if (grpcServer !== undefined) await shutdownGrpcServer(grpcServer, 1_000);
  await manager?.close();
  await kv?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

test('new connections see a grown or shrunk vDisk at its new size; open ones get clean errors past the new end', async () => {
  const first = await open();
  const a = first.client;
  assert.equal(first.sizeBytes, 8 * MiB);
  const head = pattern(MiB, 1);
  const tail = pattern(64 * KiB, 2);
  assert.equal((await a.nbdWrite(0, head)).error, 0);
  assert.equal((await a.nbdWrite(6 * MiB, tail)).error, 0);

  // Grow while `a` holds the vDisk's shared stream open.
  await volumes.resizeVdisk(DISK, 16 * MiB);
  const grown = await open();
  const b = grown.client;
  assert.equal(grown.sizeBytes, 16 * MiB, 'a new connection after a grow');
  assert.equal(await nbdinfoSize(), 16 * MiB);
  const far = pattern(64 * KiB, 3);
  assert.equal((await b.nbdWrite(12 * MiB, far)).error, 0, 'a write in the new space');
  assert.ok((await b.nbdRead(12 * MiB, 64 * KiB)).data.equals(far));
  // `a` was told 8 MiB: past that is its end (NBD cannot tell it the new size).
  assertErrno(await a.nbdWrite(12 * MiB, far), NbdErrno.ENOSPC, 'a: write past its 8 MiB');

  // Shrink below what `a` and `b` were told.
  await volumes.resizeVdisk(DISK, 4 * MiB, { force: true });
  const shrunk = await open();
  assert.equal(shrunk.sizeBytes, 4 * MiB, 'a new connection after a shrink');
  assert.equal(await nbdinfoSize(), 4 * MiB);
  assertErrno(await a.nbdRead(6 * MiB, 64 * KiB), NbdErrno.EINVAL, 'a: read past the new end');
  assertErrno(await a.nbdWrite(6 * MiB, tail), NbdErrno.ENOSPC, 'a: write past the new end');
  assertErrno(await a.nbdWriteZeroes(6 * MiB, 64 * KiB), NbdErrno.ENOSPC, 'a: write-zeroes');
  assertErrno(await a.nbdTrim(6 * MiB, 64 * KiB), NbdErrno.EINVAL, 'a: trim past the new end');
  assertErrno(await b.nbdRead(12 * MiB, 64 * KiB), NbdErrno.EINVAL, 'b: read past the new end');
  assertErrno(await b.nbdWrite(12 * MiB, far), NbdErrno.ENOSPC, 'b: write past the new end');
  // A request straddling the new end changes nothing either.
  assertErrno(
    await a.nbdWrite(4 * MiB - 4 * KiB, pattern(8 * KiB, 4)),
    NbdErrno.ENOSPC,
    'a: straddling write',
  );
  // The connections go on, with the bytes below the end intact.
  assert.ok((await a.nbdRead(0, MiB)).data.equals(head), 'a: the head after the shrink');
  assert.ok((await b.nbdRead(0, MiB)).data.equals(head), 'b: the head after the shrink');

  // Grow again: what was cut off reads as zeros, never as the old bytes.
  await volumes.resizeVdisk(DISK, 8 * MiB);
  const again = await open();
  assert.equal(again.sizeBytes, 8 * MiB);
  assert.ok((await again.client.nbdRead(6 * MiB, 64 * KiB)).data.equals(Buffer.alloc(64 * KiB)));
  assert.ok((await a.nbdRead(6 * MiB, 64 * KiB)).data.equals(Buffer.alloc(64 * KiB)));
});
