// Proves `shale vdisk map` turns a vDisk of a running `shale up` into a kernel block device (nbdfuse + loop): mkfs.ext4, mount, files written, fstrim reaching the vDisk as NBD trims (its TRIM count grows and the trimmed blocks read back as zeros through the device), unmap refused while mounted and done with --force (which unmounts first), then a read-only map that reads every checksum back and refuses writes; with real tools, reading bytes back.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MapHarness, mustRun, run } from './testing/map-harness.js';

const MiB = 1024 * 1024;
const FS_BLOCK_BYTES = 4096;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Reads `count` 4 KiB blocks at block `skip` of a device with O_DIRECT (no page cache). */
async function readDirect(
  h: MapHarness,
  device: string,
  skip: number,
  count: number,
): Promise<Buffer> {
  const out = path.join(h.dir, 'direct.bin');
  await mustRun('dd', [
    `if=${device}`,
    `of=${out}`,
    'bs=4096',
    `skip=${skip}`,
    `count=${count}`,
    'iflag=direct',
    'status=none',
  ]);
  return fs.readFile(out);
}

describe('shale vdisk map, mkfs, mount, fstrim, unmap, read-only map', { timeout: 240_000 }, () => {
  let h: MapHarness;
  const files = new Map<string, string>();

  before(async () => {
    h = await MapHarness.start('shale-vdisk-map-');
    const created = await h.shale(['vdisk', 'create', 'vol1', '--size', '256MiB']);
    assert.equal(created.code, 0, created.stderr);
  });
  after(async () => {
    await h?.close();
  });

  test('map prints a loop device; mkfs, mount, write, fstrim: trims reach the vDisk; unmap refused while mounted', async () => {
    const mapped = await h.shale(['vdisk', 'map', 'vol1']);
    assert.equal(mapped.code, 0, mapped.stderr);
    const device = mapped.stdout.trim();
    assert.match(device, /^\/dev\/loop\d+$/);
    const list = await h.shale(['vdisk', 'mapped', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const [entry] = JSON.parse(list.stdout) as {
      vdisk: string;
      device: string;
      health: string;
      readOnly: boolean;
      directIo: boolean;
      sizeBytes: number;
      nbd: string;
    }[];
    assert.deepEqual(
      { ...entry, nbd: undefined },
      {
        ...entry,
        vdisk: 'vol1',
        device,
        health: 'ok',
        readOnly: false,
        directIo: true,
        sizeBytes: 256 * MiB,
        nbd: undefined,
      },
    );
    assert.equal(entry?.nbd, `127.0.0.1:${h.nbdPort}`);
    assert.equal((await mustRun('blockdev', ['--getsize64', device])).trim(), String(256 * MiB));

    // nodiscard: the trims counted below are fstrim's, not mkfs's.
    await mustRun('mkfs.ext4', [
      '-q',
      '-F',
      '-E',
      'nodiscard',
      '-b',
      String(FS_BLOCK_BYTES),
      device,
    ]);
    const mnt = await h.mount(device, 'rw');
    const table = await h.shale(['vdisk', 'mapped']);
    assert.match(table.stdout, new RegExp(`vol1 +${device} +rw +256 MiB .*${mnt}.* ok\\n`));

    const big = randomBytes(16 * MiB);
    await fs.writeFile(path.join(mnt, 'big.bin'), big);
    files.set('big.bin', sha256(big));
    await fs.mkdir(path.join(mnt, 'small'));
    for (let i = 0; i < 100; i += 1) {
      const data = Buffer.from(`small file ${i}\n`.repeat(i + 1));
      await fs.writeFile(path.join(mnt, 'small', `f${i}`), data);
      files.set(`small/f${i}`, sha256(data));
    }
    const doomed = Buffer.alloc(8 * MiB, 0xab);
    await fs.writeFile(path.join(mnt, 'doomed.bin'), doomed);
    await mustRun('sync', []);
    // Where doomed.bin lives on the device: its first file system block.
    const blocks = (await mustRun('debugfs', ['-R', 'blocks /doomed.bin', device]))
      .trim()
      .split(/\s+/);
    const firstBlock = Number(blocks[0]);
    assert.ok(firstBlock > 0, `debugfs blocks: ${blocks.join(' ')}`);
    const before = await readDirect(h, device, firstBlock, 16);
    assert.ok(before.equals(Buffer.alloc(64 * 1024, 0xab)), 'doomed.bin is on the vDisk');

    await fs.rm(path.join(mnt, 'doomed.bin'));
    await mustRun('sync', []);
    const trimsBefore = await h.trimOps('vol1');
    const trimmed = await mustRun('fstrim', ['-v', mnt]);
    assert.match(trimmed, /trimmed/);
    const trimsAfter = await h.trimOps('vol1');
    assert.ok(
      trimsAfter > trimsBefore,
      `fstrim reached the vDisk as trims: ${trimsBefore} -> ${trimsAfter}`,
    );
    const afterTrim = await readDirect(h, device, firstBlock, 16);
    assert.ok(afterTrim.equals(Buffer.alloc(64 * 1024)), 'the trimmed blocks read back as zeros');

    const refused = await h.shale(['vdisk', 'unmap', 'vol1']);
    assert.equal(refused.code, 5, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(`MAP_DEVICE_MOUNTED: ${device} \\(vDisk vol1\\) is mounted at ${mnt}`),
    );
    const byDevice = await h.shale(['vdisk', 'unmap', device]);
    assert.equal(byDevice.code, 5, byDevice.stderr);
    assert.equal(
      (await fs.readFile(path.join(mnt, 'small', 'f7'))).length > 0,
      true,
      'still mounted and readable',
    );

    await h.umount(mnt);
    const unmapped = await h.shale(['vdisk', 'unmap', 'vol1']);
    assert.equal(unmapped.code, 0, unmapped.stderr);
    assert.equal(unmapped.stdout, `unmapped vDisk vol1 (${device})\n`);
    const gone = await run('losetup', ['-j', path.join(h.mapDir, 'vol1', 'fuse', 'nbd')]);
    assert.equal(gone.stdout, '', 'no loop device is left on the FUSE file');
    const none = await h.shale(['vdisk', 'mapped']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, 'no vDisk is mapped on this host\n');
    await assert.rejects(fs.stat(path.join(h.mapDir, 'vol1')), { code: 'ENOENT' });
  });

  test('unmap --force unmounts a mounted device first, then unmaps it', async () => {
    const mapped = await h.shale(['vdisk', 'map', 'vol1']);
    assert.equal(mapped.code, 0, mapped.stderr);
    const device = mapped.stdout.trim();
    const mnt = await h.mount(device, 'forced');
    await fs.writeFile(path.join(mnt, 'forced.txt'), 'written before unmap --force\n');
    const forced = await h.shale(['vdisk', 'unmap', 'vol1', '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(` ${mnt} `), 'the file system was unmounted');
    assert.equal(
      (await run('losetup', ['-j', path.join(h.mapDir, 'vol1', 'fuse', 'nbd')])).stdout,
      '',
    );
    const none = await h.shale(['vdisk', 'mapped', '--json']);
    assert.deepEqual(JSON.parse(none.stdout), []);
  });

  test('map --read-only: every checksum reads back, writes are refused; a second map is a conflict', async () => {
    assert.ok(files.size > 0, 'the first test wrote the files');
    const mapped = await h.shale(['vdisk', 'map', 'vol1', '--read-only', '--json']);
    assert.equal(mapped.code, 0, mapped.stderr);
    const { device, readOnly } = JSON.parse(mapped.stdout) as { device: string; readOnly: boolean };
    assert.equal(readOnly, true);
    assert.equal((await mustRun('blockdev', ['--getro', device])).trim(), '1');

    const again = await h.shale(['vdisk', 'map', 'vol1', '--read-only']);
    assert.equal(again.code, 5, again.stderr);
    assert.match(
      again.stderr,
      new RegExp(`MAP_ALREADY_MAPPED: vDisk vol1 is already mapped at ${device} \\(read-only\\)`),
    );
    const writable = await h.shale(['vdisk', 'map', 'vol1']);
    assert.equal(writable.code, 5, writable.stderr);
    assert.match(writable.stderr, /mapped read-only .*unmap it first to map it read-write/);

    const mnt = await h.mount(device, 'ro', ['-o', 'ro']);
    for (const [name, sum] of files) {
      assert.equal(sha256(await fs.readFile(path.join(mnt, name))), sum, name);
    }
    await assert.rejects(fs.writeFile(path.join(mnt, 'new'), 'x'), { code: 'EROFS' });
    await assert.rejects(fs.stat(path.join(mnt, 'doomed.bin')), { code: 'ENOENT' });
    assert.equal(
      await fs.readFile(path.join(mnt, 'forced.txt'), 'utf8'),
      'written before unmap --force\n',
      'unmap --force unmounted cleanly (nothing lost)',
    );
    await h.umount(mnt);
    const direct = await run('dd', [
      'if=/dev/zero',
      `of=${device}`,
      'bs=4096',
      'count=1',
      'oflag=direct',
    ]);
    assert.notEqual(direct.code, 0, 'the read-only device refuses writes');

    const unmapped = await h.shale(['vdisk', 'unmap', device, '--json']);
    assert.equal(unmapped.code, 0, unmapped.stderr);
    assert.deepEqual(JSON.parse(unmapped.stdout), { vdisk: 'vol1', device, unmapped: true });
  });
});
