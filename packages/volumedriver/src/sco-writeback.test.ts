// Proves a SCO being written starts background fdatasyncs as it fills (so its seal has little left to write back), that its seal still returns the bytes written with their CRC32C, and that a failed background fdatasync fails the writer: the seal reports VD_IO_ERROR, never success.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { crc32c, isShaleError } from '@shale/common';
import { SCO_SIZE_MIN_BYTES, SCO_WRITEBACK_STEPS } from './constants.js';
import { nodeScoDisk, type ScoDisk } from './sco-disk.js';
import { ScoWriter } from './sco-writer.js';
import { scoNumber } from './types.js';

const CLUSTER = 4096;
const CAPACITY = SCO_SIZE_MIN_BYTES / CLUSTER;

/** The real disk; counts fdatasyncs, and fails them while `failing()` says so. */
function countingDisk(failing: () => boolean): { disk: ScoDisk; datasyncs: () => number } {
  let datasyncs = 0;
  const disk: ScoDisk = {
    async createExclusive(filePath) {
      const real = await nodeScoDisk.createExclusive(filePath);
      return {
        writev: (buffers, position) => real.writev(buffers, position),
        async datasync() {
          datasyncs += 1;
          if (failing()) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
          return real.datasync();
        },
        sync: () => real.sync(),
        close: () => real.close(),
      };
    },
    openForRead: (filePath) => nodeScoDisk.openForRead(filePath),
    fsyncDir: (dirPath) => nodeScoDisk.fsyncDir(dirPath),
  };
  return { disk, datasyncs: () => datasyncs };
}

async function fill(writer: ScoWriter, clusterCount: number): Promise<Buffer> {
  const bytes = randomBytes(clusterCount * CLUSTER);
  for (let at = 0; at < clusterCount; at += 64) {
    const n = Math.min(64, clusterCount - at);
    const batch = Array.from({ length: n }, (_, i) =>
      bytes.subarray((at + i) * CLUSTER, (at + i + 1) * CLUSTER),
    );
    await writer.appendQueued(batch).written;
  }
  return bytes;
}

test('a filling SCO starts background fdatasyncs; the seal returns what was written', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-sco-wb-'));
  try {
    const { disk, datasyncs } = countingDisk(() => false);
    const writer = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(7),
      clusterSizeBytes: CLUSTER,
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
      disk,
    });
    const bytes = await fill(writer, CAPACITY);
    const sealed = await writer.seal();
    // At most one per step crossed before the SCO is full (one at a time: steps crossed
    // while one runs are skipped; the seal syncs the last part itself), and at least one.
    assert.ok(
      datasyncs() >= 1 && datasyncs() <= SCO_WRITEBACK_STEPS - 1,
      `${datasyncs()} background fdatasyncs`,
    );
    assert.equal(sealed.sizeBytes, bytes.length);
    assert.equal(sealed.crc32c, crc32c(bytes));
    assert.ok((await fs.readFile(path.join(dir, '00000007.sco'))).equals(bytes));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('a failed background fdatasync fails the writer: the seal is VD_IO_ERROR', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-sco-wb-'));
  try {
    const { disk, datasyncs } = countingDisk(() => true);
    const writer = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(8),
      clusterSizeBytes: CLUSTER,
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
      disk,
    });
    // Half full: the first background fdatasync has started (and fails) behind the appends.
    await fill(writer, CAPACITY / 2).catch(() => undefined);
    assert.ok(datasyncs() >= 1, 'no background fdatasync started');
    await assert.rejects(writer.seal(), (err: unknown) => {
      assert.ok(isShaleError(err, 'VD_IO_ERROR'), `expected VD_IO_ERROR, got ${String(err)}`);
      return true;
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
