// Proves SCO files on a real directory: write/sync/seal/read round trips, a flipped bit read as VD_CORRUPT (never the bytes), group commit, and disk faults injected through the ScoDisk seam.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { AssertionFailure, crc32c, isShaleError } from '@shale/common';
import { rejectsWith } from '@shale/testing';
import { SCO_SIZE_MIN_BYTES } from './constants.js';
import { nodeScoDisk, type ScoDisk } from './sco-disk.js';
import { parseScoFileName, scoFileName } from './sco-file.js';
import { ScoReader } from './sco-reader.js';
import { ScoWriter } from './sco-writer.js';
import { scoNumber } from './types.js';

const CLUSTER = 4096;
const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-sco-test-'));
  dirs.push(dir);
  return dir;
}

function clusters(count: number): Buffer[] {
  const all = randomBytes(count * CLUSTER);
  return Array.from({ length: count }, (_, i) => all.subarray(i * CLUSTER, (i + 1) * CLUSTER));
}

function errnoError(code: string): Error {
  return Object.assign(new Error(`${code}: injected`), { code });
}

/** The real disk, with every call recorded and faults injectable per call name. */
function faultyDisk(
  faults: {
    writev?: () => Error | undefined;
    datasync?: () => Error | undefined;
    maxWriteBytes?: number;
  } = {},
) {
  const calls: string[] = [];
  const disk: ScoDisk = {
    async createExclusive(filePath) {
      const real = await nodeScoDisk.createExclusive(filePath);
      return {
        async writev(buffers, position) {
          calls.push('writev');
          const fault = faults.writev?.();
          if (fault !== undefined) throw fault;
          if (faults.maxWriteBytes === undefined) return real.writev(buffers, position);
          // A short write: only the first maxWriteBytes of the batch.
          const joined = Buffer.concat(buffers as Buffer[]).subarray(0, faults.maxWriteBytes);
          return real.writev([joined], position);
        },
        async datasync() {
          calls.push('datasync');
          const fault = faults.datasync?.();
          if (fault !== undefined) throw fault;
          return real.datasync();
        },
        async sync() {
          calls.push('sync');
          return real.sync();
        },
        close: () => real.close(),
      };
    },
    openForRead: (filePath) => nodeScoDisk.openForRead(filePath),
    async fsyncDir(dirPath) {
      calls.push('fsyncDir');
      return nodeScoDisk.fsyncDir(dirPath);
    },
  };
  return { disk, calls };
}

describe('SCO files', () => {
  test('file names are zero-padded hex of the SCO number and parse back', () => {
    assert.equal(scoFileName(scoNumber(42)), '0000002a.sco');
    assert.equal(scoFileName(scoNumber(0xffff_ffff)), 'ffffffff.sco');
    assert.equal(parseScoFileName('0000002a.sco'), 42);
    assert.equal(parseScoFileName('2a.sco'), undefined);
    assert.equal(parseScoFileName('0000002a.tlog'), undefined);
  });

  test('write, sync, seal and read back: cluster k at byte k * clusterSize, CRCs match', async () => {
    const dir = await tempDir();
    const sco = scoNumber(42);
    const writer = await ScoWriter.create({
      dir,
      scoNumber: sco,
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
    });
    assert.equal(writer.capacityClusters, SCO_SIZE_MIN_BYTES / CLUSTER);
    const first = clusters(3);
    const second = clusters(200);
    const a = await writer.append(first);
    const b = await writer.append(second);
    assert.equal(a.firstClusterOffset, 0);
    assert.equal(b.firstClusterOffset, 3);
    assert.deepEqual(
      Array.from(a.crc32cs),
      first.map((c) => crc32c(c)),
    );
    await writer.sync();
    const all = [...first, ...second];
    const crcs = all.map((c) => crc32c(c));

    // Readable while the SCO is still open.
    const early = await ScoReader.open({ dir, scoNumber: sco });
    assert.ok((await early.readCluster(4, crcs[4] as number)).equals(all[4] as Buffer));
    await early.close();

    const sealed = await writer.seal();
    const onDisk = await fs.readFile(path.join(dir, '0000002a.sco'));
    assert.equal(sealed.sizeBytes, all.length * CLUSTER);
    assert.equal(sealed.clusterCount, all.length);
    assert.equal(onDisk.length, sealed.sizeBytes);
    assert.equal(sealed.crc32c, crc32c(onDisk));
    assert.ok(onDisk.equals(Buffer.concat(all)));

    const reader = await ScoReader.open({ dir, scoNumber: sco });
    try {
      for (const k of [0, 2, 3, 100, all.length - 1]) {
        assert.ok(
          (await reader.readCluster(k, crcs[k] as number)).equals(all[k] as Buffer),
          `cluster ${k}`,
        );
      }
      const into = Buffer.alloc(10 * CLUSTER);
      const run = await reader.readClusters(50, crcs.slice(50, 60), into);
      assert.equal(run.buffer, into.buffer, 'reads into the caller buffer');
      assert.ok(run.equals(Buffer.concat(all.slice(50, 60))));
      // Past the end of the SCO: the TLog promised more than the file holds.
      await rejectsWith(reader.readCluster(all.length, 0), 'VD_CORRUPT');
    } finally {
      await reader.close();
    }
    await rejectsWith(reader.readCluster(0, crcs[0] as number), 'VD_CLOSED');
  });

  test('a flipped bit in the SCO file is VD_CORRUPT and the bytes are never handed out', async () => {
    const dir = await tempDir();
    const sco = scoNumber(7);
    const writer = await ScoWriter.create({
      dir,
      scoNumber: sco,
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
    });
    const data = clusters(8);
    const { crc32cs } = await writer.append(data);
    await writer.seal();
    const file = path.join(dir, scoFileName(sco));
    const bytes = await fs.readFile(file);
    const at = 5 * CLUSTER + 1234;
    bytes[at] = (bytes[at] as number) ^ 0x10;
    await fs.writeFile(file, bytes);

    const reader = await ScoReader.open({ dir, scoNumber: sco });
    try {
      const into = Buffer.alloc(8 * CLUSTER, 0xaa);
      await assert.rejects(reader.readClusters(0, crc32cs, into), (err: unknown) => {
        assert.ok(isShaleError(err, 'VD_CORRUPT'), String(err));
        assert.equal(err.details.clusterOffset, '5');
        return true;
      });
      assert.ok(into.equals(Buffer.alloc(8 * CLUSTER)), 'the caller buffer is wiped');
      await rejectsWith(reader.readCluster(5, crc32cs[5] as number), 'VD_CORRUPT');
      // The clusters around it are intact.
      assert.ok((await reader.readCluster(4, crc32cs[4] as number)).equals(data[4] as Buffer));
      assert.ok((await reader.readCluster(6, crc32cs[6] as number)).equals(data[6] as Buffer));
    } finally {
      await reader.close();
    }
  });

  test('refusals: a reused SCO number, a missing SCO, a SCO size out of range', async () => {
    const dir = await tempDir();
    const writer = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(1),
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
    });
    await writer.seal();
    await rejectsWith(ScoWriter.create({ dir, scoNumber: scoNumber(1) }), 'VD_SCO_EXISTS');
    await rejectsWith(ScoReader.open({ dir, scoNumber: scoNumber(2) }), 'VD_SCO_NOT_FOUND');
    for (const scoSizeBytes of [2 * 1024 * 1024, 256 * 1024 * 1024, SCO_SIZE_MIN_BYTES + 1]) {
      await rejectsWith(
        ScoWriter.create({ dir, scoNumber: scoNumber(3), scoSizeBytes }),
        'VD_INVALID_ARGUMENT',
      );
    }
    await rejectsWith(
      ScoWriter.create({ dir, scoNumber: scoNumber(3), clusterSizeBytes: 3000 }),
      'VD_INVALID_ARGUMENT',
    );
  });

  test('group commit: concurrent sync() calls share one fdatasync, which follows the writes', async () => {
    const dir = await tempDir();
    const { disk, calls } = faultyDisk();
    const writer = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(1),
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
      disk,
    });
    const appends = [writer.append(clusters(4)), writer.append(clusters(4))];
    const syncs = Array.from({ length: 10 }, () => writer.sync());
    await Promise.all([...appends, ...syncs]);
    assert.deepEqual(calls, ['writev', 'writev', 'datasync', 'fsyncDir']);
    // An append after the shared sync needs a new one.
    await Promise.all([writer.append(clusters(1)), writer.sync()]);
    assert.deepEqual(calls.slice(4), ['writev', 'datasync']);
    const sealing = writer.seal();
    // Nothing may queue behind a seal: a programmer error, not an I/O error later.
    assert.throws(() => writer.sync(), AssertionFailure);
    assert.throws(() => writer.append(clusters(1)), AssertionFailure);
    await sealing;
    assert.equal(calls.at(-1), 'sync');
  });

  test('short writes are completed: the SCO still holds every byte in place', async () => {
    const dir = await tempDir();
    const { disk, calls } = faultyDisk({ maxWriteBytes: 1000 });
    const writer = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(9),
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
      disk,
    });
    const data = clusters(3);
    await writer.append(data);
    const sealed = await writer.seal();
    assert.ok(calls.filter((c) => c === 'writev').length >= 13);
    const onDisk = await fs.readFile(path.join(dir, scoFileName(scoNumber(9))));
    assert.ok(onDisk.equals(Buffer.concat(data)));
    assert.equal(sealed.crc32c, crc32c(onDisk));
  });

  test('a failed fdatasync fails the writer for good (VD_IO_ERROR); ENOSPC is VD_NO_SPACE', async () => {
    const dir = await tempDir();
    let failSync = true;
    const eio = faultyDisk({ datasync: () => (failSync ? errnoError('EIO') : undefined) });
    const writer = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(1),
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
      disk: eio.disk,
    });
    await writer.append(clusters(2));
    await rejectsWith(writer.sync(), 'VD_IO_ERROR');
    failSync = false;
    // No retry of a failed fdatasync: the dirty pages may be gone.
    await rejectsWith(writer.append(clusters(1)), 'VD_IO_ERROR');
    await rejectsWith(writer.sync(), 'VD_IO_ERROR');
    await rejectsWith(writer.seal(), 'VD_IO_ERROR');
    await writer.abort();

    const full = faultyDisk({ writev: () => errnoError('ENOSPC') });
    const second = await ScoWriter.create({
      dir,
      scoNumber: scoNumber(2),
      scoSizeBytes: SCO_SIZE_MIN_BYTES,
      disk: full.disk,
    });
    await rejectsWith(second.append(clusters(1)), 'VD_NO_SPACE');
    await rejectsWith(second.sync(), 'VD_NO_SPACE');
    await second.abort();
  });
});
