// Proves a real ASD on a small, really full file system (tmpfs) refuses writes with ASD_NO_SPACE, keeps serving reads and deletes, never crashes, and writes again once space is freed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { AsdClient, asdConstants } from '@shale/asd';
import { ShaleError } from '@shale/common';
import { type ShaleProcess, startShale } from './support/shale-process.js';

const FS_SIZE = '48m';
let mountPoint: string;
let mounted = false;
let proc: ShaleProcess | undefined;

before(async () => {
  mountPoint = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${FS_SIZE}`, 'tmpfs', mountPoint], {
      stdio: 'pipe',
    });
    mounted = true;
  } catch (err) {
    throw new Error(
      `this test mounts a ${FS_SIZE} tmpfs and must run as root (mount from Debian's "mount" package): ${String(err)}`,
    );
  }
});

after(async () => {
  await proc?.kill9();
  if (mounted) execFileSync('umount', ['-l', mountPoint]);
  await fs.rm(mountPoint, { recursive: true, force: true });
});

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (err) {
    assert.ok(err instanceof ShaleError, String(err));
    return err.code;
  }
}

test(
  'a full disk answers ASD_NO_SPACE while the reserve is kept; reads and deletes keep working',
  { timeout: 120_000 },
  async () => {
    const dir = path.join(mountPoint, 'asd');
    proc = await startShale([
      'asd',
      'serve',
      '--dir',
      dir,
      '--port',
      '0',
      '--reserve-bytes',
      '6MiB',
    ]);
    const client = new AsdClient(`127.0.0.1:${proc.port}`);
    const stored = new Map<string, string>();
    try {
      let refusal = 'OK';
      for (let i = 0; i < 100 && refusal === 'OK'; i += 1) {
        const value = randomBytes(1024 * 1024);
        const key = `full/${i}`;
        refusal = await codeOf(client.put([{ key: Buffer.from(key), value }]));
        if (refusal === 'OK') stored.set(key, sha(value));
      }
      assert.equal(refusal, 'ASD_NO_SPACE');
      assert.ok(
        stored.size >= 30 && stored.size <= 42,
        `${stored.size} MiB fit on a ${FS_SIZE} file system with a 6 MiB reserve`,
      );
      // What is left above the reserve still takes a small value; a big one is refused.
      assert.equal(
        await codeOf(client.put([{ key: Buffer.from('tiny'), value: randomBytes(10) }])),
        'OK',
      );
      assert.equal(
        await codeOf(
          client.put([{ key: Buffer.from('big'), value: randomBytes(4 * 1024 * 1024) }]),
        ),
        'ASD_NO_SPACE',
      );

      // Alive, healthy and reading everything back.
      assert.equal((await client.health()).status, 'ok');
      for (const [key, hash] of stored)
        assert.equal(sha(await client.getOne(Buffer.from(key))), hash, key);
      const stats = await client.stats();
      assert.ok(stats.freeBytes < 1024 * 1024, `free ${stats.freeBytes}`);

      // Deletes work on a full disk, and make room.
      const victims = [...stored.keys()].slice(0, 5);
      assert.deepEqual(
        await client.delete(victims.map((key) => Buffer.from(key))),
        victims.map(() => true),
      );
      for (const key of victims) stored.delete(key);
      for (let i = 0; i < 3; i += 1) {
        const value = randomBytes(1024 * 1024);
        await client.put([{ key: Buffer.from(`again/${i}`), value }]);
        stored.set(`again/${i}`, sha(value));
      }
      for (const [key, hash] of stored)
        assert.equal(sha(await client.getOne(Buffer.from(key))), hash, key);
    } finally {
      client.close();
    }
    assert.equal(await proc.stop(), 0, 'clean exit after a full disk');
    proc = undefined;
  },
);

test(
  'with no reserve, racing puts on a full disk: clear errors, no crash, no leftover files',
  { timeout: 120_000 },
  async () => {
    const dir = path.join(mountPoint, 'asd-noreserve');
    proc = await startShale(['asd', 'serve', '--dir', dir, '--port', '0', '--reserve-bytes', '0']);
    const client = new AsdClient(`127.0.0.1:${proc.port}`);
    const stored = new Map<string, string>();
    const codes = new Map<string, number>();
    try {
      // Fill what the first test left free and more, 8 puts at a time, so admission races the disk.
      for (let wave = 0; wave < 8; wave += 1) {
        const values = Array.from({ length: 8 }, () => randomBytes(2 * 1024 * 1024 + 12345));
        const outcomes = await Promise.all(
          values.map((value, i) =>
            codeOf(client.put([{ key: Buffer.from(`race/${wave}/${i}`), value }])),
          ),
        );
        outcomes.forEach((code, i) => {
          codes.set(code, (codes.get(code) ?? 0) + 1);
          if (code === 'OK') stored.set(`race/${wave}/${i}`, sha(values[i] as Buffer));
        });
      }
      assert.ok(
        (codes.get('ASD_NO_SPACE') ?? 0) > 0,
        `some puts were refused: ${JSON.stringify([...codes])}`,
      );
      for (const code of codes.keys())
        assert.ok(['OK', 'ASD_NO_SPACE', 'ASD_IO_ERROR'].includes(code), `unexpected ${code}`);
      // The daemon answers, and every acknowledged value reads back whole.
      const health = await client.health();
      assert.ok(['ok', 'degraded'].includes(health.status));
      for (const [key, hash] of stored)
        assert.equal(sha(await client.getOne(Buffer.from(key))), hash, key);
      // Files of refused puts were removed: files on disk = file-backed objects.
      let fileBacked = 0;
      for await (const entry of client.listAll())
        if (entry.sizeBytes > asdConstants.INLINE_MAX_BYTES) fileBacked += 1;
      let files = 0;
      for (const fan of await fs.readdir(path.join(dir, 'objects')))
        files += (await fs.readdir(path.join(dir, 'objects', fan))).length;
      assert.equal(files, fileBacked);
    } finally {
      client.close();
    }
    assert.equal(await proc.stop(), 0);
    proc = undefined;
  },
);
