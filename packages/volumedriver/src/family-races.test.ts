// Proves that operations racing on one vDisk family never both succeed against an invariant (a clone against a delete, a rollback or a snapshot delete of its parent; and at the metadata store's commit, where no lock is shared), that every clone reads its snapshot's data, and that a restart on an empty write buffer after the sweep opens every vDisk; by sweeping the delay between the two requests over 0..1 s (every 25 ms from -200 ms with SHALE_LONG=1) against real VolumeManagers (LevelDB store, a slowed in-memory backend).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { ShaleError } from '@shale/common';
import { type VdiskRecord, VdiskRegistry } from './vdisk-registry.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
/**
 * Delay of the second request after the first: the clone first (>= 0), or the other request
 * first by |delay| (< 0). The report lost data at 50-300 ms with the clone first.
 */
const DELAYS_MS =
  process.env.SHALE_LONG === '1'
    ? Array.from({ length: 49 }, (_, i) => -200 + i * 25) // the long tier: every 25 ms
    : [-100, -10, 0, 5, 20, 50, 100, 200, 300, 500, 750, 1000];
/** Every backend call waits this long: a clone then takes a few hundred ms, the sweep spans it. */
const BACKEND_LATENCY_MS = 15;
/** What a losing operation may answer: a clean, specific refusal. */
const CLEAN_REFUSALS = new Set(['VD_HAS_CLONES', 'VD_NOT_FOUND', 'VD_BUSY', 'VD_CLOSED']);

let dir: string;
let kv: LevelKv;
let backend: MemoryVolumeBackend;
let manager: VolumeManager;
/** Every clone that was made, with what it must read. */
const clones = new Map<string, Buffer>();

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-family-races-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  backend = new MemoryVolumeBackend();
  manager = await VolumeManager.open({ kv, backend, dir: path.join(dir, 'a'), nodeId: 'node-a' });
  await manager.createVpool({
    name: 'pool',
    backendId: 'b',
    scoSizeBytes: 4 * MiB,
    writeBufferBytes: 8 * MiB,
  });
});

after(async () => {
  backend.latencyMs = 0;
  await manager.close();
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

type Outcome = { ok: true } | { ok: false; code: string; message: string };

async function outcome(work: Promise<unknown>): Promise<Outcome> {
  try {
    await work;
    return { ok: true };
  } catch (err) {
    assert.ok(err instanceof ShaleError, `not a ShaleError: ${String(err)}`);
    return { ok: false, code: err.code, message: err.message };
  }
}

function refusedCleanly(result: Outcome, what: string): void {
  if (result.ok) return;
  assert.ok(
    CLEAN_REFUSALS.has(result.code),
    `${what} failed with ${result.code} (${result.message}), not a clean refusal`,
  );
}

/** A parent with `snapshots` snapshots, each over different data; returns the data of each. */
async function parentWith(name: string, snapshots: readonly string[]): Promise<Buffer[]> {
  await manager.createVdisk({ name, vpoolName: 'pool', sizeBytes: 8 * MiB });
  const io = manager.io(name);
  const seen: Buffer[] = [];
  for (const snapshot of snapshots) {
    const data = crypto.randomBytes(4 * MiB);
    await io.write(0, data);
    await manager.createSnapshot(name, snapshot);
    seen.push(data);
  }
  // Writes after the last snapshot, so a clone must not see the head.
  await io.write(0, crypto.randomBytes(MiB));
  return seen;
}

async function race(
  clone: () => Promise<unknown>,
  against: () => Promise<unknown>,
  delayMs: number,
): Promise<[Outcome, Outcome]> {
  const pause = () => new Promise((resolve) => setTimeout(resolve, Math.abs(delayMs)));
  if (delayMs >= 0) {
    const first = outcome(clone());
    await pause();
    return Promise.all([first, outcome(against())]);
  }
  const first = outcome(against());
  await pause();
  return Promise.all([outcome(clone()), first]);
}

async function checkClone(name: string, expected: Buffer): Promise<void> {
  const read = await manager.io(name).read(0, expected.length);
  assert.ok(read.equals(expected), `clone ${name} does not read its snapshot's data`);
  clones.set(name, expected);
}

async function noRecord(name: string): Promise<void> {
  const names = (await manager.listVdisks()).map((v) => v.name);
  assert.ok(!names.includes(name), `${name} is listed after its operation failed`);
}

test('clone vs delete of the parent: never both; the clone reads its snapshot', async () => {
  backend.latencyMs = BACKEND_LATENCY_MS;
  let cloneWins = 0;
  let deleteWins = 0;
  for (const delayMs of DELAYS_MS) {
    const parent = `del-p-${delayMs}`;
    const [data] = await parentWith(parent, ['s1']);
    const [cloned, deleted] = await race(
      () => manager.cloneVdisk({ name: `${parent}-c`, parentName: parent, snapshotName: 's1' }),
      () => manager.deleteVdisk(parent),
      delayMs,
    );
    assert.ok(
      !(cloned.ok && deleted.ok),
      `delay ${delayMs} ms: both the clone and the delete succeeded`,
    );
    refusedCleanly(cloned, `delay ${delayMs} ms: the clone`);
    refusedCleanly(deleted, `delay ${delayMs} ms: the delete`);
    if (cloned.ok) {
      cloneWins += 1;
      assert.equal(!deleted.ok && deleted.code, 'VD_HAS_CLONES');
      await checkClone(`${parent}-c`, data as Buffer);
    } else {
      await noRecord(`${parent}-c`);
    }
    if (deleted.ok) {
      deleteWins += 1;
      await noRecord(parent);
    }
  }
  // The sweep is only a test if it saw both outcomes.
  assert.ok(cloneWins > 0 && deleteWins > 0, `clone won ${cloneWins}, delete won ${deleteWins}`);
});

test('clone vs rollback past its snapshot: never both; the clone reads its snapshot', async () => {
  backend.latencyMs = BACKEND_LATENCY_MS;
  let cloneWins = 0;
  let rollbackWins = 0;
  for (const delayMs of DELAYS_MS) {
    const parent = `rb-p-${delayMs}`;
    const [dataA, dataB] = await parentWith(parent, ['sA', 'sB']);
    const [cloned, rolled] = await race(
      () => manager.cloneVdisk({ name: `${parent}-c`, parentName: parent, snapshotName: 'sB' }),
      () => manager.rollback(parent, 'sA'),
      delayMs,
    );
    assert.ok(
      !(cloned.ok && rolled.ok),
      `delay ${delayMs} ms: both the clone and the rollback succeeded`,
    );
    refusedCleanly(cloned, `delay ${delayMs} ms: the clone`);
    refusedCleanly(rolled, `delay ${delayMs} ms: the rollback`);
    if (cloned.ok) {
      cloneWins += 1;
      await checkClone(`${parent}-c`, dataB as Buffer);
    } else {
      await noRecord(`${parent}-c`);
    }
    if (rolled.ok) {
      rollbackWins += 1;
      const read = await manager.io(parent).read(0, 4 * MiB);
      assert.ok(read.equals(dataA as Buffer), 'the rollback did not bring sA back');
    }
  }
  assert.ok(
    cloneWins > 0 && rollbackWins > 0,
    `clone won ${cloneWins}, rollback won ${rollbackWins}`,
  );
});

test('clone vs delete of its snapshot: never both', async () => {
  backend.latencyMs = BACKEND_LATENCY_MS;
  let cloneWins = 0;
  let deleteWins = 0;
  for (const delayMs of DELAYS_MS) {
    const parent = `sd-p-${delayMs}`;
    const [data] = await parentWith(parent, ['s1']);
    const [cloned, deleted] = await race(
      () => manager.cloneVdisk({ name: `${parent}-c`, parentName: parent, snapshotName: 's1' }),
      () => manager.deleteSnapshot(parent, 's1'),
      delayMs,
    );
    assert.ok(!(cloned.ok && deleted.ok), `delay ${delayMs} ms: both succeeded`);
    refusedCleanly(cloned, `delay ${delayMs} ms: the clone`);
    refusedCleanly(deleted, `delay ${delayMs} ms: the snapshot delete`);
    if (cloned.ok) {
      cloneWins += 1;
      await checkClone(`${parent}-c`, data as Buffer);
    } else {
      await noRecord(`${parent}-c`);
    }
    if (deleted.ok) deleteWins += 1;
  }
  assert.ok(cloneWins > 0 && deleteWins > 0, `clone won ${cloneWins}, delete won ${deleteWins}`);
});

test('the metadata store decides at commit time: a claim and a family change on one record, one wins', async () => {
  // What holds across processes, where no admin lock is shared: the compare-and-swap commits.
  backend.latencyMs = 0;
  await parentWith('cas-p', ['s1']);
  const registry = new VdiskRegistry(kv);
  const seen = await registry.byName('cas-p');
  const clone = (name: string): VdiskRecord => ({
    ...seen.record,
    id: crypto.randomUUID().replaceAll('-', ''),
    name,
    parent: { vdiskId: seen.record.id, vdiskName: 'cas-p', snapshotId: 1, snapshotName: 's1' },
  });
  // A clone claimed after a delete checked the clones: the delete's commit fails.
  await registry.claim(clone('cas-c1'), seen);
  await assert.rejects(
    registry.update(seen, { ...seen.record, lifecycle: 'deleting' }),
    /VD_BUSY|changed/,
  );
  assert.equal((await registry.byName('cas-p')).record.lifecycle, undefined);
  // A delete committed after a clone read the parent: the clone's claim fails, nothing claimed.
  const again = await registry.byName('cas-p');
  await registry.update(again, again.record);
  await assert.rejects(registry.claim(clone('cas-c2'), again), /changed/);
  await assert.rejects(registry.byName('cas-c2'), /no vDisk/);
  await registry.remove((await registry.byName('cas-c1')).record);
});

test('after the sweep, a restart on an empty write buffer opens every vDisk and each clone reads its snapshot', async () => {
  backend.latencyMs = 0;
  const names = (await manager.listVdisks()).map((v) => v.name).sort();
  for (const name of names) await manager.syncToBackend(name);
  await manager.close();
  await fs.rm(path.join(dir, 'a'), { recursive: true, force: true });
  manager = await VolumeManager.open({ kv, backend, dir: path.join(dir, 'a'), nodeId: 'node-a' });
  assert.equal(manager.failedVdiskCount, 0);
  const listed = await manager.listVdisks();
  assert.deepEqual(listed.map((v) => v.name).sort(), names);
  for (const info of listed) assert.equal(info.state, 'open', `${info.name} is ${info.state}`);
  assert.ok(clones.size > 0);
  for (const [name, expected] of clones) {
    const read = await manager.io(name).read(0, expected.length);
    assert.ok(read.equals(expected), `clone ${name} after the restore`);
  }
});
