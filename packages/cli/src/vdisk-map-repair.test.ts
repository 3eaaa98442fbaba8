// Proves a broken `shale vdisk map` is reported and repaired: nbdfuse killed with SIGKILL under a mounted file system, and the volumedriver SIGKILLed (shale up restarts it, nbdfuse's NBD connections stay dead), and a host reboot (only the record left), each make `shale vdisk mapped` exit 1 and name the cause, the repair (`map` again, or `mapped --repair`) is refused while the device is mounted and then brings the mapping back on the same loop device with every file intact; and bad input (unknown vDisk, not mapped, bad name or address, nbdfuse missing, not root) gets a clear error and exit code; against a real `shale up`, with real tools.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MapHarness, mustRun, run } from './testing/map-harness.js';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

interface Mapped {
  vdisk: string;
  device: string;
  health: string;
  problems: string[];
  nbdfusePid: number;
  mountpoints: string[];
}

describe('shale vdisk map: broken mappings and bad input', { timeout: 240_000 }, () => {
  let h: MapHarness;
  let device: string;
  let mnt: string;
  const files = new Map<string, string>();

  const mapped = async (): Promise<{ code: number | null; list: Mapped[] }> => {
    const result = await h.shale(['vdisk', 'mapped', '--json']);
    return { code: result.code, list: JSON.parse(result.stdout) as Mapped[] };
  };
  const checkFiles = async () => {
    for (const [name, sum] of files)
      assert.equal(sha256(await fs.readFile(path.join(mnt, name))), sum, name);
  };
  /** The repair as an operator does it: refused while mounted, then umount, map, mount. */
  const repair = async (via: 'map' | 'mapped --repair') => {
    const args = via === 'map' ? ['vdisk', 'map', 'vol2'] : ['vdisk', 'mapped', '--repair'];
    const busy = await h.shale(args);
    assert.equal(busy.code, via === 'map' ? 5 : 1, busy.stderr);
    assert.match(
      busy.stderr,
      new RegExp(
        `MAP_DEVICE_BUSY: vDisk vol2 at ${device} is broken and mounted at ${mnt}.*unmount it, then run "shale vdisk map vol2" again`,
      ),
    );
    await h.umount(mnt);
    const repaired = await h.shale(args);
    assert.equal(repaired.code, 0, repaired.stderr);
    if (via === 'map') {
      assert.equal(repaired.stdout.trim(), device, 'the same loop device');
      assert.match(repaired.stderr, /repaired the mapping of vDisk vol2/);
    } else {
      assert.equal(
        repaired.stderr,
        `shale: repaired vDisk vol2 at ${device}\n`,
        'the same loop device',
      );
      assert.match(repaired.stdout, new RegExp(`vol2 +${device} .* ok\n`));
    }
    const now = await mapped();
    assert.equal(now.code, 0);
    assert.equal(now.list[0]?.health, 'ok', now.list[0]?.problems.join('; '));
    // Through a fresh page cache: the bytes come from the vDisk.
    await fs.writeFile('/proc/sys/vm/drop_caches', '3');
    mnt = await h.mount(device, 'fs');
    await checkFiles();
  };

  before(async () => {
    h = await MapHarness.start('shale-vdisk-map-repair-');
    const created = await h.shale(['vdisk', 'create', 'vol2', '--size', '128MiB']);
    assert.equal(created.code, 0, created.stderr);
    const result = await h.shale(['vdisk', 'map', 'vol2']);
    assert.equal(result.code, 0, result.stderr);
    device = result.stdout.trim();
    await mustRun('mkfs.ext4', ['-q', '-F', device]);
    mnt = await h.mount(device, 'fs');
    for (let i = 0; i < 20; i += 1) {
      const data = randomBytes(256 * 1024 + i);
      await fs.writeFile(path.join(mnt, `file${i}`), data);
      files.set(`file${i}`, sha256(data));
    }
    await mustRun('sync', ['-f', mnt]);
  });
  after(async () => {
    await h?.close();
  });

  test('nbdfuse killed with SIGKILL: mapped says so (exit 1); repaired onto the same loop device, data intact', async () => {
    const healthy = await mapped();
    assert.equal(healthy.code, 0);
    assert.deepEqual(healthy.list[0]?.mountpoints, [mnt]);
    const pid = healthy.list[0]?.nbdfusePid as number;
    process.kill(pid, 'SIGKILL');
    // Gone, or a zombie (its state after the command name) that nobody has reaped yet.
    while (/\) [^Z] /.test(await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ') Z '))) {
      await sleep(20);
    }

    const broken = await mapped();
    assert.equal(broken.code, 1, 'mapped exits 1 when a mapping is broken');
    assert.equal(broken.list[0]?.health, 'broken');
    assert.deepEqual(broken.list[0]?.problems, [`nbdfuse (pid ${pid}) is not running: I/O fails`]);
    const table = await h.shale(['vdisk', 'mapped']);
    assert.match(table.stdout, /BROKEN: nbdfuse \(pid \d+\) is not running/);
    assert.match(table.stdout, /repair: shale vdisk map NAME/);
    const write = await run('dd', [
      'if=/dev/zero',
      `of=${path.join(mnt, 'x')}`,
      'bs=64k',
      'count=1',
      'oflag=direct',
    ]);
    assert.notEqual(write.code, 0, 'I/O on the broken mapping fails');
    await repair('map');
  });

  test('the volumedriver SIGKILLed and restarted by shale up: nbdfuse is disconnected; mapped --repair repairs it, data intact', async () => {
    process.kill(await h.volumedriverPid(), 'SIGKILL');
    await h.waitForRestart('volumedriver', 1);
    const broken = await mapped();
    assert.equal(broken.code, 1);
    assert.match(
      broken.list[0]?.problems.join('; ') ?? '',
      /nbdfuse lost its NBD connection to 127\.0\.0\.1:\d+ \(0 of \d+ up\): I\/O fails/,
    );
    await repair('mapped --repair');
    await h.umount(mnt);
    const unmapped = await h.shale(['vdisk', 'unmap', 'vol2']);
    assert.equal(unmapped.code, 0, unmapped.stderr);
  });

  test('after a host reboot (no loop device, no FUSE mount, no nbdfuse): mapped says so; map brings it back', async () => {
    const result = await h.shale(['vdisk', 'map', 'vol2']);
    assert.equal(result.code, 0, result.stderr);
    device = result.stdout.trim();
    const [record] = (await mapped()).list;
    // What a reboot leaves of a mapping: only its record.
    await mustRun('losetup', ['-d', device]);
    await mustRun('fusermount3', ['-u', path.join(h.mapDir, 'vol2', 'fuse')]);
    while (
      /\) [^Z] /.test(
        await fs.readFile(`/proc/${record?.nbdfusePid}/stat`, 'utf8').catch(() => ') Z '),
      )
    ) {
      await sleep(20);
    }
    const broken = await mapped();
    assert.equal(broken.code, 1);
    assert.deepEqual(broken.list[0]?.problems, [
      `${device} is not attached`,
      `nbdfuse (pid ${record?.nbdfusePid}) is not running: I/O fails`,
    ]);
    const repaired = await h.shale(['vdisk', 'map', 'vol2']);
    assert.equal(repaired.code, 0, repaired.stderr);
    assert.equal(repaired.stdout.trim(), device, 'the same loop device, free again');
    mnt = await h.mount(device, 'fs');
    await checkFiles();
    await h.umount(mnt);
    const unmapped = await h.shale(['vdisk', 'unmap', 'vol2']);
    assert.equal(unmapped.code, 0, unmapped.stderr);
  });

  test('bad input: unknown vDisk, not mapped, bad name, bad --nbd, nbdfuse missing, not root', async () => {
    const cases: [string[], number, RegExp, Record<string, string>?, number?][] = [
      [['vdisk', 'map', 'nope'], 4, /^shale: VD_NOT_FOUND: no vDisk named nope\n$/],
      [['vdisk', 'unmap', 'nope'], 4, /^shale: MAP_NOT_MAPPED: nope is not mapped on this host/],
      [['vdisk', 'unmap', '/dev/loop999'], 4, /MAP_NOT_MAPPED: \/dev\/loop999 is not mapped/],
      [['vdisk', 'map', '../etc'], 2, /"\.\.\/etc" is not a vDisk name that can be mapped/],
      [['vdisk', 'map', 'vol2', '--nbd', 'nowhere'], 2, /--nbd must be HOST:PORT, not "nowhere"/],
      [['vdisk', 'map', 'vol2', 'extra'], 2, /unexpected argument "extra"/],
      [['vdisk', 'map'], 2, /NAME is required/],
      [['vdisk', 'map', 'vol2', '--bogus'], 2, /Unknown option '--bogus'/],
      [
        ['vdisk', 'map', 'vol2'],
        1,
        /MAP_TOOL_MISSING: nbdfuse is not installed: apt-get install -y libnbd-bin/,
        { PATH: '/nonexistent' },
      ],
      [['vdisk', 'map', 'vol2'], 1, /MAP_NOT_ROOT: shale vdisk map must run as root/, {}, 65534],
      [
        ['vdisk', 'unmap', 'vol2'],
        1,
        /MAP_NOT_ROOT: shale vdisk unmap must run as root/,
        {},
        65534,
      ],
    ];
    for (const [args, code, stderr, env, uid] of cases) {
      const result = await h.shale(args, {
        ...(env === undefined ? {} : { env }),
        ...(uid === undefined ? {} : { uid }),
      });
      assert.equal(result.code, code, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, stderr, args.join(' '));
    }
    const none = await mapped();
    assert.deepEqual(none, { code: 0, list: [] }, 'nothing was mapped by the failed attempts');
  });
});
