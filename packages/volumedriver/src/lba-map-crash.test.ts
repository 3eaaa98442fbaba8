// Proves the LBA map survives kill -9 of a real process: a child applies seeded steps (each with its marker), drains and compacts in a loop and is killed at random points; after each kill (and a torn record appended to its log) the reopened map's marker never claims more than it holds — every cluster equals the model at the marker unless a later step touched it — and replaying the steps after the marker gives the model exactly.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { seededRandom } from '@shale/testing';
import { LbaMap, type LbaUpdate } from './lba-map.js';
import { collect, TempDirs, testSeed } from './testing/lba-map-fixtures.js';
import type { ClusterLocation } from './types.js';

const temp = new TempDirs();
after(() => temp.removeAll());

const CLUSTERS = 100_000;

/**
 * The updates of step `step`: its own SCO (numbered by the step, one payload per slot),
 * scattered writes, unmaps, a run of unmaps (a trim), some in layer 1. Self-contained: the
 * child process gets its source.
 */
function stepUpdates(seed: number, step: number): LbaUpdate[] {
  let a = (seed ^ Math.imul(step, 0x9e3779b9)) >>> 0;
  const random = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const updates: { clusterIndex: number; location: ClusterLocation | undefined }[] = [];
  for (let k = 0; k < 40; k += 1) {
    const index = Math.floor(random() * 100_000);
    if (random() < 0.15) updates.push({ clusterIndex: index, location: undefined });
    else {
      const crc32c = Math.floor(random() * 2 ** 32);
      const location: ClusterLocation =
        random() < 0.2
          ? { scoNumber: step as never, clusterOffset: k, crc32c, layer: 1 }
          : { scoNumber: step as never, clusterOffset: k, crc32c };
      updates.push({ clusterIndex: index, location });
    }
  }
  if (random() < 0.2) {
    const first = Math.floor(random() * (100_000 - 300));
    for (let i = first; i < first + 300; i += 1)
      updates.push({ clusterIndex: i, location: undefined });
  }
  return updates as LbaUpdate[];
}

const entry = fileURLToPath(new URL('./index.js', import.meta.url));
const CHILD = `
const { LbaMap } = await import(${JSON.stringify(entry)});
${stepUpdates.toString()}
const seed = Number(process.env.LBA_SEED);
const map = await LbaMap.open({ dir: process.env.LBA_DIR, log: () => {} });
for (let step = Number(process.env.LBA_FROM); ; step += 1) {
  const updates = stepUpdates(seed, step);
  process.stdout.write(step + '\\n');
  await map.applyBehind(updates, { meta: Buffer.from(String(step)) });
  if (step % 7 === 0) await map.drain(step % 14 === 0);
  if (step % 97 === 0) await map.compact();
  if (step % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
}
`;

function fold(model: Map<number, ClusterLocation>, updates: readonly LbaUpdate[]): void {
  for (const u of updates) {
    if (u.location === undefined) model.delete(u.clusterIndex);
    else model.set(u.clusterIndex, u.location);
  }
}

/** Runs the child from step `from` until it is killed after `killAfterMs`; the last step it began. */
async function runChild(
  dir: string,
  seed: number,
  from: number,
  killAfterMs: number,
): Promise<number> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
    env: { ...process.env, LBA_SEED: String(seed), LBA_DIR: dir, LBA_FROM: String(from) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Kill it once it runs (its first step printed) and then killAfterMs more.
  for (let waited = 0; !out.includes('\n'); waited += 10) {
    assert.ok(waited < 20_000 && child.exitCode === null, `the child did not start: ${err}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await new Promise((resolve) => setTimeout(resolve, killAfterMs));
  child.kill('SIGKILL');
  await exited;
  assert.equal(child.signalCode, 'SIGKILL', `the child died by itself: ${err}`);
  const steps = out.trim().split('\n').map(Number);
  return steps[steps.length - 1] as number;
}

test('kill -9 at random points: the marker never claims more than the log holds, and a replay from it gives the model', async (t) => {
  const seed = testSeed();
  const random = seededRandom(seed);
  const say = `seed ${seed} (VD_TEST_SEED=${seed})`;
  const dir = await temp.make();
  const model = new Map<number, ClusterLocation>();
  // A first marker, so that every round has a claim to check.
  let done = 20;
  const first = await LbaMap.open({ dir });
  for (let step = 1; step <= done; step += 1) {
    fold(model, stepUpdates(seed, step));
    await first.applyBehind(stepUpdates(seed, step), { meta: Buffer.from(String(step)) });
  }
  await first.close();
  let previousMarker = done;
  const rounds = Number(process.env.VD_CRASH_ROUNDS ?? 6);
  for (let round = 0; round < rounds; round += 1) {
    const killAfterMs = 20 + Math.floor(random() * 600);
    const last = await runChild(dir, seed, done + 1, killAfterMs);
    // A torn write on top of whatever the kill left.
    const logPath = path.join(dir, 'map.log');
    await fs.appendFile(logPath, Buffer.from('LBAM\x02\x00\x00\x00\xff\x00\x00\x00torn'));
    const sizeBefore = (await fs.stat(logPath)).size;
    const messages: string[] = [];
    const map = await LbaMap.open({ dir, log: (m) => messages.push(m) });
    try {
      const marker = Number((await map.getMeta())?.toString());
      t.diagnostic(
        `round ${round}: killed after ${killAfterMs} ms at step ${last}, marker ${marker}`,
      );
      assert.match(messages.join('\n'), /cut a torn tail/, say);
      assert.ok(map.cacheStats().logBytes < sizeBefore, `${say}: the tail is cut`);
      assert.ok(
        Number.isInteger(marker) && marker >= previousMarker && marker <= last,
        `${say} round ${round}: marker ${marker}, previous ${previousMarker}, last step ${last}`,
      );
      // The claim: the map holds the model at the marker, except clusters later steps touched.
      const atMarker = new Map(model);
      for (let step = done + 1; step <= marker; step += 1) fold(atMarker, stepUpdates(seed, step));
      const touchedLater = new Set<number>();
      for (let step = marker + 1; step <= last; step += 1) {
        for (const u of stepUpdates(seed, step)) touchedLater.add(u.clusterIndex);
      }
      const held = new Map(await collect(map, 0, CLUSTERS));
      for (let index = 0; index < CLUSTERS; index += 1) {
        if (touchedLater.has(index)) continue;
        assert.deepEqual(
          held.get(index),
          atMarker.get(index),
          `${say} round ${round} cluster ${index}`,
        );
      }
      // The volume's recovery: replay the steps after the marker over what the map holds.
      for (let step = marker + 1; step <= last; step += 1) {
        await map.applyBehind(stepUpdates(seed, step), { meta: Buffer.from(String(step)) });
      }
      for (let step = done + 1; step <= last; step += 1) fold(model, stepUpdates(seed, step));
      assert.deepEqual(
        await collect(map, 0, CLUSTERS),
        [...model.entries()].sort((x, y) => x[0] - y[0]),
        `${say} round ${round}: after the replay`,
      );
      done = last;
      previousMarker = last;
    } finally {
      await map.close();
    }
  }
});
