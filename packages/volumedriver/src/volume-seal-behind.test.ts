// Proves a full SCO's seal runs behind the write lane: writes go on into the next SCO while its fsync is held back, at most SCO_SEALS_IN_BACKGROUND_MAX seals run at once (then the lane waits), a FLUSH waits for every seal in progress, and a crash with seals unfinished (SCOs named by writes and no SCO_SEALED) recovers: every acknowledged byte reads back, each SCO is sealed in the TLog and all of them reach the backend; with a real Volume on a real directory, the SCOs' fsync gated.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { seededRandom } from '@shale/testing';
import {
  CLUSTER_SIZE_BYTES,
  SCO_SEALS_IN_BACKGROUND_MAX,
  SCO_SIZE_MIN_BYTES,
} from './constants.js';
import { nodeScoDisk, type ScoDisk } from './sco-disk.js';
import { tlogFileName } from './tlog-file.js';
import { readTLog } from './tlog-format.js';
import { Volume } from './volume.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { STATE_FORMAT, scoObjectName } from './volume-state.js';

const SCO = SCO_SIZE_MIN_BYTES;
const WRITE = 256 * 1024;

/** The real disk, except that a full fsync (what a seal does) waits while the gate is shut. */
function gatedDisk(): { disk: ScoDisk; open(): void; shut(): void; fsyncs: () => number } {
  let waiters: (() => void)[] = [];
  let shut = true;
  let fsyncs = 0;
  const disk: ScoDisk = {
    async createExclusive(filePath) {
      const real = await nodeScoDisk.createExclusive(filePath);
      return {
        writev: (buffers, position) => real.writev(buffers, position),
        datasync: () => real.datasync(),
        async sync() {
          fsyncs += 1;
          if (shut) await new Promise<void>((resolve) => waiters.push(resolve));
          return real.sync();
        },
        close: () => real.close(),
      };
    },
    openForRead: (filePath) => nodeScoDisk.openForRead(filePath),
    fsyncDir: (dirPath) => nodeScoDisk.fsyncDir(dirPath),
  };
  return {
    disk,
    open() {
      shut = false;
      for (const wake of waiters) wake();
      waiters = [];
    },
    shut() {
      shut = true;
    },
    fsyncs: () => fsyncs,
  };
}

async function newVolume(dir: string, backend: MemoryVolumeBackend, disk: ScoDisk) {
  return Volume.create(
    { dir, backend, scoDisk: disk },
    {
      format: STATE_FORMAT,
      id: 'v1',
      name: 'v1',
      namespace: 'ns-v1',
      clusterSizeBytes: CLUSTER_SIZE_BYTES,
      scoSizeBytes: SCO,
      writeBufferBytes: 256 * 1024 * 1024,
      tlogScos: 20,
      ancestors: [],
      parent: undefined,
      createdAtMs: Date.now(),
    },
    { sizeBytes: 64 * 1024 * 1024, presetName: '' },
  );
}

/** Writes [from, to) of `image` in WRITE-sized requests, in order. */
async function writeRange(volume: Volume, image: Buffer, from: number, to: number) {
  for (let at = from; at < to; at += WRITE) await volume.write(at, image.subarray(at, at + WRITE));
}

/** Settles within `ms`? */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await new Promise((resolve) => setTimeout(resolve, ms));
  return settled;
}

/** Polls `cond` (a seal reaches its fsync a few turns after the lane starts it). */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i += 1) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), what);
}

function randomImage(bytes: number, seed: number): Buffer {
  const random = seededRandom(seed);
  const image = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) image.writeUInt32LE(Math.floor(random() * 2 ** 32), i);
  return image;
}

test('writes go on while seals run behind; the lane waits past the limit; FLUSH waits for seals', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-seal-behind-'));
  const gate = gatedDisk();
  const volume = await newVolume(dir, new MemoryVolumeBackend(), gate.disk);
  try {
    const image = randomImage((SCO_SEALS_IN_BACKGROUND_MAX + 2) * SCO, 1);
    // One SCO and a bit: acknowledged although the first SCO's seal cannot finish.
    await writeRange(volume, image, 0, SCO + WRITE);
    await eventually(() => gate.fsyncs() === 1, 'the first SCO is sealing');
    // A FLUSH must not return before the sealing SCO is durable.
    const flushed = volume.flush();
    assert.equal(await settlesWithin(flushed, 150), false, 'FLUSH waited for the seal');
    gate.open();
    await flushed;

    // With the gate shut again: seals pile up to the limit, then the lane waits.
    gate.shut();
    const sealsBefore = gate.fsyncs();
    await writeRange(volume, image, SCO + WRITE, (SCO_SEALS_IN_BACKGROUND_MAX + 1) * SCO);
    await eventually(
      () => gate.fsyncs() - sealsBefore === SCO_SEALS_IN_BACKGROUND_MAX,
      `${SCO_SEALS_IN_BACKGROUND_MAX} seals running behind the lane`,
    );
    const past = writeRange(
      volume,
      image,
      (SCO_SEALS_IN_BACKGROUND_MAX + 1) * SCO,
      (SCO_SEALS_IN_BACKGROUND_MAX + 2) * SCO,
    );
    assert.equal(await settlesWithin(past, 150), false, 'the lane waited for the oldest seal');
    gate.open();
    await past;
    await volume.flush();
    for (let at = 0; at < image.length; at += SCO) {
      assert.ok((await volume.read(at, SCO)).equals(image.subarray(at, at + SCO)), `at ${at}`);
    }
  } finally {
    gate.open();
    await volume.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('a crash with seals unfinished: each unsealed SCO is sealed at open, every byte reads back and reaches the backend', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-seal-crash-'));
  const backend = new MemoryVolumeBackend();
  const gate = gatedDisk();
  let volume = await newVolume(dir, backend, gate.disk);
  const bytes = SCO_SEALS_IN_BACKGROUND_MAX * SCO + SCO / 2;
  const image = randomImage(bytes, 2);
  try {
    // Acknowledged (in the page cache; no FLUSH): SCOs 1..MAX sealing, MAX+1 open.
    await writeRange(volume, image, 0, bytes);
    await eventually(
      () => gate.fsyncs() === SCO_SEALS_IN_BACKGROUND_MAX,
      'the full SCOs are sealing',
    );
    // The process dies with the seals' fsyncs unfinished: closeFiles is what a crash leaves
    // (no seal, no sync); the held fsyncs finish after it, and journal nothing.
    const crashed = volume.closeFiles();
    gate.open();
    await crashed;
    const { entries } = readTLog(await fs.readFile(path.join(dir, 'tlogs', tlogFileName(1))));
    const written = new Set(entries.flatMap((e) => (e.type === 'write' ? [e.scoNumber] : [])));
    const sealed = entries.filter((e) => e.type === 'scoSealed');
    assert.equal(written.size, SCO_SEALS_IN_BACKGROUND_MAX + 1, 'SCOs named by writes');
    assert.equal(sealed.length, 0, 'none of them sealed in the TLog');

    volume = await Volume.open({ dir, backend });
    for (let at = 0; at < bytes; at += WRITE) {
      assert.ok((await volume.read(at, WRITE)).equals(image.subarray(at, at + WRITE)), `at ${at}`);
    }
    await volume.syncToBackend();
    const objects = backend.namespaces.get('ns-v1')?.objects;
    for (const n of written) assert.ok(objects?.has(scoObjectName(n)), `SCO ${n} uploaded`);
    await volume.close();
    // Reopened once more: the seals recovery wrote are in the history.
    volume = await Volume.open({ dir, backend });
    for (let at = 0; at < bytes; at += SCO / 2) {
      const length = Math.min(SCO / 2, bytes - at);
      assert.ok((await volume.read(at, length)).equals(image.subarray(at, at + length)));
    }
  } finally {
    gate.open();
    await volume.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
