// Proves a full disk does not brick the cluster: with shale up's data dir (ASDs and write buffer together, which shale up warns about) on a small loop-mounted ext4, writes through NBD until the disk is full end in clean ENOSPC; after a clean stop shale up starts again, every acknowledged byte reads back, the API and shale status report the space state (degraded, with the problems named); once space is freed the upload backlog drains and writes go through again; and the write buffer and the ASDs can be put on different file systems; by running the real processes on a real file system.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApiClient } from '@shale/framework-api';
import { freePort } from '@shale/testing';
import { mustRun, runCommand } from './support/commands.js';
import { SHALE_BIN } from './support/shale-process.js';
import { killUp, startUp, type Up, upApi } from './support/shale-up.js';

const MiB = 1024 * 1024;
/** The file system: small enough to fill in seconds, large enough for 6 ASDs and the metadata. */
const FS_BYTES = 640 * MiB;
/** Space held by something else on the disk; removing it is how the test adds space. */
const SPACER_BYTES = 200 * MiB;
/** Most blocks the writer tries (a 1 GiB vDisk; the disk fills long before). */
const MAX_BLOCKS = 1000;

/** Writes 1 MiB blocks with a flush each (a block refused with ENOSPC retried for ~6 s) until an error; prints the acknowledged count and errno. */
const WRITER = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
first, count = int(sys.argv[2]), int(sys.argv[3])
MiB = 1024 * 1024
acked = first
err = "none"
import time
for i in range(first, first + count):
    # ENOSPC may be the write buffer's margin while uploads catch up (it says "free again"
    # once they freed space): a block is retried for a few seconds before the disk counts
    # as full.
    for attempt in range(6):
        try:
            h.pwrite(bytes([i % 251 + 1]) * MiB, i * MiB)
            h.flush()
            acked = i + 1
            err = "none"
            break
        except nbd.Error as e:
            err = "errno=%s %s" % (e.errno, e.string)
            time.sleep(1)
    if err != "none":
        break
print("ACKED %d %s" % (acked, err))
`;

/** Reads blocks [0, count) and checks each one's pattern. */
const READER = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
count = int(sys.argv[2])
MiB = 1024 * 1024
bad = [i for i in range(count) if h.pread(MiB, i * MiB) != bytes([i % 251 + 1]) * MiB]
print("BAD %s" % bad)
`;

/** Writes `file` until the file system is full; the bytes it took. */
async function fillDisk(file: string): Promise<number> {
  const handle = await fs.open(file, 'w');
  const chunk = Buffer.alloc(MiB, 2);
  let taken = 0;
  try {
    for (let size = MiB; size >= 4096; size /= 2) {
      for (;;) {
        try {
          const { bytesWritten } = await handle.write(chunk, 0, size, taken);
          taken += bytesWritten;
          if (bytesWritten < size) break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
    await handle.sync().catch(() => undefined);
  } finally {
    await handle.close();
  }
  return taken;
}

describe('a full disk under shale up', { timeout: 900_000 }, () => {
  let root: string;
  let mount: string;
  let loop = '';
  let dataDir: string;
  let nbdPort: number;
  let apiPort: number;
  let up: Up | undefined;
  let api: ApiClient;
  let acked = 0;

  const uri = () => `nbd://127.0.0.1:${nbdPort}/big`;
  const python = async (script: string, args: readonly string[]) => {
    const file = path.join(root, 'script.py');
    await fs.writeFile(file, script);
    return mustRun('python3', [file, ...args], { package: 'python3-libnbd', timeoutMs: 600_000 });
  };
  const start = async () => {
    up = await startUp(dataDir, nbdPort, apiPort, [
      '--reserve',
      '32MiB',
      '--write-buffer-reserve',
      '32MiB',
      // Below the ASDs' 32 MiB reserve: the ASDs fill first, uploads stall, the backlog grows.
      '--write-buffer-margin',
      '16MiB',
      '--data-at-risk-ms',
      '5000',
    ]);
    api = await upApi(dataDir, apiPort);
  };
  const problemCodes = async () => (await api.stats()).problems.map((p) => p.code);
  const readAll = async () => {
    const result = await python(READER, [uri(), String(acked)]).catch((err: unknown) => {
      // What the daemons said is the diagnosis.
      throw new Error(
        `${String(err)}\nshale up's log (tail):\n${(up?.stderr() ?? '').slice(-6000)}`,
      );
    });
    assert.match(result.stdout, /^BAD \[\]$/m, `blocks that read back wrong: ${result.stdout}`);
  };

  before(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-full-'));
    mount = path.join(root, 'mnt');
    await fs.mkdir(mount);
    const image = path.join(root, 'disk.img');
    await fs.writeFile(image, '');
    await fs.truncate(image, FS_BYTES);
    await mustRun('mkfs.ext4', ['-q', '-F', '-m', '0', image], { package: 'e2fsprogs' });
    loop = (await mustRun('losetup', ['-f', '--show', image], { package: 'mount' })).stdout.trim();
    await mustRun('mount', [loop, mount], { package: 'mount' });
    // Other data on the disk, allocated for real.
    const spacer = await fs.open(path.join(mount, 'spacer'), 'w');
    const chunk = Buffer.alloc(MiB, 1);
    for (let at = 0; at < SPACER_BYTES; at += MiB) await spacer.write(chunk, 0, MiB, at);
    await spacer.sync();
    await spacer.close();
    dataDir = path.join(mount, 'shale');
    nbdPort = await freePort();
    apiPort = await freePort();
  });

  after(async () => {
    if (up !== undefined) await killUp(up, dataDir);
    if (loop !== '') {
      await runCommand('umount', [mount]);
      await runCommand('losetup', ['-d', loop]);
    }
    await fs.rm(root, { recursive: true, force: true });
  });

  test('writes until the disk is full end in ENOSPC; every acknowledged byte reads back', async () => {
    await start();
    const sharing = up?.stderr() ?? '';
    assert.match(sharing, /shares its file system with every ASD/, 'shale up did not warn');
    await api.createVdisk({ name: 'big', sizeBytes: MAX_BLOCKS * MiB });
    const result = await python(WRITER, [uri(), '0', String(MAX_BLOCKS)]);
    const match = /^ACKED (\d+) (.*)$/m.exec(result.stdout);
    assert.ok(match !== null, result.stdout);
    acked = Number(match[1]);
    process.stdout.write(`full disk: ${acked} MiB acknowledged, then ${match[2]}\n`);
    assert.ok(acked > 16 && acked < MAX_BLOCKS, `acknowledged ${acked} MiB`);
    assert.match(match[2] as string, /ENOSPC/, 'the first failure is not ENOSPC');
    await readAll();
    const codes = await problemCodes();
    // The ASDs refused puts (the backend is full) and the write buffer refused writes.
    assert.ok(codes.includes('ASD_FULL'), `problems: ${codes}`);
    assert.ok(
      codes.includes('WRITE_BUFFER_FULL') || codes.includes('VDISK_UPLOADS_FAILING'),
      `problems: ${codes}`,
    );
    const status = await runCommand(SHALE_BIN, ['status', '--data-dir', dataDir]);
    assert.equal(status.code, 1, `status should be degraded:\n${status.stdout}`);
    assert.match(status.stdout, /cluster: DEGRADED/);
  });

  test('a clean stop, the last free byte taken, a start: the cluster comes up, reads every byte, says why it is degraded', async () => {
    assert.ok(up !== undefined);
    assert.equal(await up.stop(), 0, up.stderr());
    up = undefined;
    // While it is down, something else takes every free byte: only the reserves are left.
    const filled = await fillDisk(path.join(mount, 'filler'));
    process.stdout.write(`filler took the last ${filled} B\n`);
    await start();
    assert.match(
      (up as Up | undefined)?.stderr() ?? '',
      /too little for the \d+ B reserve/,
      'no word on the reserve',
    );
    const vdisk = await api.getVdisk('big');
    assert.equal(vdisk.state, 'open', JSON.stringify(vdisk));
    await readAll();
    const stats = await api.stats();
    const codes = stats.problems.map((p) => p.code);
    process.stdout.write(`after restart on the full disk: problems ${codes.join(', ')}\n`);
    // The backend is full: the backlog cannot go up, and that is what the problems say.
    assert.ok(codes.includes('ASD_FULL'), `problems: ${codes}`);
    assert.ok(stats.totals.dataAtRiskBytes > 0, 'nothing in the backlog: the test proves little');
    const failing = async () => (await problemCodes()).includes('VDISK_UPLOADS_FAILING');
    const t0 = Date.now();
    while (!(await failing())) {
      assert.ok(Date.now() - t0 < 60_000, 'uploads to a full backend are not reported failing');
      await sleep(500);
    }
    const status = await runCommand(SHALE_BIN, ['status', '--data-dir', dataDir]);
    assert.equal(status.code, 1);
    assert.match(status.stdout, /PROBLEM/);
  });

  test('space added: the backlog drains and writes go through again', async () => {
    await fs.rm(path.join(mount, 'spacer'));
    await fs.rm(path.join(mount, 'filler'));
    const t0 = Date.now();
    for (;;) {
      const stats = await api.stats();
      const codes = stats.problems.filter((p) => p.severity === 'degraded').map((p) => p.code);
      if (
        stats.totals.dataAtRiskBytes === 0 &&
        stats.totals.uploadBacklogObjects === 0 &&
        !codes.includes('VDISK_UPLOADS_FAILING') &&
        !codes.includes('WRITE_BUFFER_FULL')
      )
        break;
      assert.ok(Date.now() - t0 < 180_000, `not drained in 180 s: ${JSON.stringify(stats)}`);
      await sleep(500);
    }
    process.stdout.write(`drained ${Date.now() - t0} ms after space was added\n`);
    const more = await python(WRITER, [uri(), String(acked), '8']);
    assert.match(more.stdout, /ACKED \d+ none/, more.stdout);
    acked += 8;
    await readAll();
  });

  test('the write buffer and the ASDs on different file systems: no warning, and it serves', async () => {
    assert.ok(up !== undefined);
    assert.equal(await up.stop(), 0, up.stderr());
    up = undefined;
    // A new cluster: its write buffer on the loop disk, its ASDs on the temp dir's file system.
    dataDir = path.join(root, 'apart');
    up = await startUp(dataDir, nbdPort, apiPort, [
      '--write-buffer-dir',
      path.join(mount, 'wb-apart'),
      '--asd-dir',
      path.join(root, 'asds-apart'),
    ]);
    api = await upApi(dataDir, apiPort);
    assert.doesNotMatch(up.stderr(), /shares its file system/);
    await api.createVdisk({ name: 'big', sizeBytes: 64 * MiB });
    const wrote = await python(WRITER, [uri(), '0', '4']);
    assert.match(wrote.stdout, /ACKED 4 none/, wrote.stdout);
    acked = 4;
    await readAll();
    assert.ok((await fs.readdir(path.join(mount, 'wb-apart'))).includes('vdisks'));
    assert.ok((await fs.readdir(path.join(root, 'asds-apart'))).includes('asd0'));
  });
});
