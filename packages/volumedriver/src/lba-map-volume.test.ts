// Proves a vDisk reads back every acknowledged byte when its LBA map cannot be trusted or was written by an older version: a log damaged in the middle, a deleted map, and an old LevelDB map directory each make the volume rebuild the map from its TLogs; by reopening a real VolumeManager (LevelDB store, in-memory backend) on the same write buffer.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { seededRandom } from '@shale/testing';
import { ClassicLevel } from 'classic-level';
import { LbaMap } from './lba-map.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
let dir: string;
let kv: LevelKv;
const backend = new MemoryVolumeBackend();

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-vd-lba-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
});

after(async () => {
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function open(): Promise<VolumeManager> {
  return VolumeManager.open({ kv, backend, dir: path.join(dir, 'wb'), nodeId: 'node-a' });
}

test('a damaged, missing or LevelDB LBA map is rebuilt from the TLogs; every byte reads back', async () => {
  let manager = await open();
  await manager.createVpool({
    name: 'pool',
    backendId: 'b',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 8 * MiB,
  });
  await manager.createVdisk({ name: 'v', vpoolName: 'pool', sizeBytes: 16 * MiB });
  const lbaDir = path.join(dir, 'wb', 'vdisks', (await manager.vdiskInfo('v')).id, 'lba');
  const random = seededRandom(11);
  const image = Buffer.alloc(16 * MiB);
  const writeSome = async (m: VolumeManager) => {
    for (let k = 0; k < 200; k += 1) {
      const offset = Math.floor(random() * 4000) * 4096;
      const data = Buffer.alloc(4096 * (1 + Math.floor(random() * 4)), Math.floor(random() * 255));
      const end = Math.min(offset + data.length, image.length);
      await m.io('v').write(offset, data.subarray(0, end - offset));
      data.copy(image, offset, 0, end - offset);
    }
    await m.io('v').trim(2 * MiB, 1 * MiB);
    image.fill(0, 2 * MiB, 3 * MiB);
  };
  await writeSome(manager);
  await manager.close();
  const damage: [string, () => Promise<void>][] = [
    [
      'a log damaged in the middle',
      async () => {
        const logPath = path.join(lbaDir, 'map.log');
        const bytes = await fs.readFile(logPath);
        assert.ok(bytes.length > 200);
        bytes[40] = (bytes[40] as number) ^ 0x55;
        await fs.writeFile(logPath, bytes);
      },
    ],
    ['a deleted map', () => fs.rm(lbaDir, { recursive: true, force: true })],
    [
      'an old LevelDB map',
      async () => {
        await fs.rm(lbaDir, { recursive: true, force: true });
        const db = new ClassicLevel<Buffer, Buffer>(lbaDir, {
          keyEncoding: 'buffer',
          valueEncoding: 'buffer',
        });
        await db.open();
        await db.put(Buffer.alloc(8), Buffer.alloc(12, 7));
        await db.close();
      },
    ],
  ];
  for (const [what, harm] of damage) {
    await harm();
    manager = await open();
    assert.ok((await manager.io('v').read(0, 16 * MiB)).equals(image), `${what}: reads back`);
    await writeSome(manager);
    assert.ok((await manager.io('v').read(0, 16 * MiB)).equals(image), `${what}: then writes`);
    await manager.close();
    // The rebuilt map is in its log, with a marker: the next open catches up from it.
    const map = await LbaMap.open({ dir: lbaDir });
    try {
      assert.notEqual(await map.getMeta(), undefined, what);
    } finally {
      await map.close();
    }
  }
  manager = await open();
  assert.ok((await manager.io('v').read(0, 16 * MiB)).equals(image), 'a clean reopen');
  await manager.close();
});
