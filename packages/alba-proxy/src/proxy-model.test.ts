// Proves the proxy engine and maintenance against an in-memory model: a seeded random mix of puts, overwrites, deletes, whole and ranged reads, real ASD stops (SIGKILL/SIGTERM) and restarts on 6 ASDs, and maintenance passes, every read checked byte for byte; prints the seed, replay with SHALE_SEED=N.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { memoryKeyProvider } from './key-provider.js';
import { Maintenance } from './maintenance.js';
import { placedCounts } from './manifest.js';
import { ProxyEngine } from './proxy-engine.js';
import { nsIdOf, patternedData, startTestBackend, type TestBackend } from './proxy-test-support.js';

const KiB = 1024;
const SEED =
  process.env.SHALE_SEED === undefined ? Date.now() % 1_000_000 : Number(process.env.SHALE_SEED);
const BUDGET_MS = 25_000;
const MAX_OPS = 600;

/** Polls until the engine sees `count` live OSDs (grpc reconnects after its own backoff). */
async function waitAlive(count: number): Promise<void> {
  for (let attempt = 0; attempt < 240; attempt++) {
    const states = await engine.refreshOsdStates();
    if (states.filter((s) => s.alive).length === count) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`the engine never saw ${count} live OSDs`);
}

let backend: TestBackend;
let engine: ProxyEngine;
let maintenance: Maintenance;

before(async () => {
  backend = await startTestBackend(6);
  engine = new ProxyEngine({
    kv: backend.kv,
    backendId: backend.backendId,
    keyProvider: memoryKeyProvider(new Map([['k-model', randomBytes(32)]]), 'k-model'),
    random: seededRandom(SEED),
    log: () => undefined,
  });
  // Orphans go at once (the test drains late writes before each pass); an OSD that is down
  // is waited for (the default grace), so repair never races a restart.
  maintenance = new Maintenance({
    kv: backend.kv,
    backendId: backend.backendId,
    random: seededRandom(SEED + 1),
    limits: { orphanGraceMs: 0 },
    log: () => undefined,
  });
});
after(async () => {
  await maintenance?.close();
  await engine?.close();
  await backend?.close();
});

test(`random operations match the model (seed ${SEED}; replay with SHALE_SEED=${SEED})`, async () => {
  process.stdout.write(`proxy model test: SHALE_SEED=${SEED}\n`);
  const random = seededRandom(SEED);
  const pick = (n: number): number => Math.floor(random() * n);
  const namespaces: string[] = [];
  for (const [i, transforms] of [
    { compression: 'none', encryption: 'none' },
    { compression: 'lz4', encryption: 'aes-256-gcm' },
  ].entries()) {
    const nsId = nsIdOf(0xabc000 + i);
    await backend.registry.addPreset(backend.backendId, {
      name: `model-${i}`,
      policies: [
        [4, 2, 5, 6],
        [3, 2, 4, 6],
      ],
      fragmentSizeMaxBytes: 64 * KiB,
      ...transforms,
      checksum: 'crc32c',
    });
    await engine.namespaces.create(nsId, backend.backendId, `model-${i}`);
    namespaces.push(nsId);
  }
  const model = new Map<string, Buffer>(); // `${ns} ${name}` -> bytes
  const names = Array.from({ length: 12 }, (_, i) => `sco/${String(i).padStart(16, '0')}`);
  let stopped: number | undefined;
  const counts: Record<string, number> = {};
  const startMs = Date.now();
  let op = 0;
  try {
    for (; op < MAX_OPS && Date.now() - startMs < BUDGET_MS; op++) {
      const nsId = namespaces[pick(namespaces.length)] as string;
      const name = names[pick(names.length)] as string;
      const key = `${nsId} ${name}`;
      const expected = model.get(key);
      const roll = pick(100);
      const kind =
        roll < 30
          ? 'put'
          : roll < 45
            ? 'get'
            : roll < 75
              ? 'ranges'
              : roll < 85
                ? 'delete'
                : roll < 92
                  ? 'stop'
                  : roll < 96
                    ? 'start'
                    : 'maintain';
      counts[kind] = (counts[kind] ?? 0) + 1;
      const where = `op ${op} ${kind} ${key} (seed ${SEED})`;
      if (kind === 'put') {
        const size = pick(4) === 0 ? pick(2 * KiB) : pick(1200 * KiB);
        const data = patternedData(size, SEED + op);
        await engine.putObject(nsId, name, data, { writerEpoch: 1 });
        model.set(key, data);
      } else if (kind === 'get') {
        if (expected === undefined) {
          await assert.rejects(engine.getObject(nsId, name), (err) =>
            isShaleError(err, 'PROXY_OBJECT_NOT_FOUND'),
          );
        } else {
          assert.ok((await engine.getObject(nsId, name)).equals(expected), where);
        }
      } else if (kind === 'ranges') {
        if (expected === undefined) continue;
        const slices = Array.from({ length: 1 + pick(6) }, () => {
          const offsetBytes = pick(expected.length + 1);
          const lengthBytes = pick(Math.min(expected.length - offsetBytes, 200 * KiB) + 1);
          return { name, offsetBytes, lengthBytes };
        });
        const got = await engine.readRanges(nsId, slices);
        for (const [i, s] of slices.entries())
          assert.ok(
            (got[i] as Buffer).equals(
              expected.subarray(s.offsetBytes, s.offsetBytes + s.lengthBytes),
            ),
            `${where}: slice ${s.offsetBytes}+${s.lengthBytes}`,
          );
      } else if (kind === 'delete') {
        const result = await engine.deleteObject(nsId, name, { writerEpoch: 1 });
        assert.equal(result.deleted, expected !== undefined, where);
        model.delete(key);
      } else if (kind === 'stop') {
        // At most one ASD down at a time: with no repair yet, an object written while one
        // was down has k + m - 1 fragments and survives exactly one more loss.
        if (stopped !== undefined) continue;
        stopped = pick(6);
        await backend.cluster.stop(stopped, pick(2) === 0 ? 'SIGKILL' : 'SIGTERM');
      } else if (kind === 'maintain') {
        // A maintenance pass (every other one verifying every fragment's CRC). Late fragment
        // writes are drained first: with a zero orphan grace they would look orphaned.
        await engine.drain();
        const summary = await maintenance.runPass({ verify: pick(2) === 0 });
        assert.equal(
          summary.unrecoverableCount,
          0,
          `${where}: ${JSON.stringify(summary.unrecoverable)}`,
        );
        assert.equal(summary.fragmentsBad, 0, `${where}: nothing was damaged`);
        if (stopped === undefined) {
          // Everything answers: every object is whole again (k + m fragments per chunk).
          for (const modelKey of model.keys()) {
            const [ns, objectName] = modelKey.split(' ') as [string, string];
            const manifest = await engine.objectInfo(ns, objectName);
            const full = manifest.info.k + manifest.info.m;
            assert.ok(
              placedCounts(manifest).every((count) => count === full),
              `${where}: ${modelKey} has ${placedCounts(manifest).join(',')} of ${full} after maintenance`,
            );
          }
        }
      } else if (stopped !== undefined) {
        await backend.cluster.restart(stopped);
        stopped = undefined;
        // Back for the engine too before anything else may stop: "one down at a time".
        await waitAlive(6);
      }
    }
    if (stopped !== undefined) await backend.cluster.restart(stopped);
    stopped = undefined;
    await engine.drain();
    for (const [key, data] of model) {
      const [nsId, name] = key.split(' ') as [string, string];
      assert.ok((await engine.getObject(nsId, name)).equals(data), `final ${key} (seed ${SEED})`);
    }
    for (const nsId of namespaces) {
      const listed = (await engine.listObjects(nsId)).objects.map((o) => o.name);
      const expectedNames = [...model.keys()]
        .filter((k) => k.startsWith(nsId))
        .map((k) => k.split(' ')[1])
        .sort();
      assert.deepEqual(listed, expectedNames, `listing of ${nsId} (seed ${SEED})`);
    }
  } catch (err) {
    process.stdout.write(`proxy model test FAILED at op ${op}: replay with SHALE_SEED=${SEED}\n`);
    throw err;
  } finally {
    if (stopped !== undefined) await backend.cluster.restart(stopped);
  }
  process.stdout.write(
    `proxy model test: ${op} ops in ${Date.now() - startMs} ms ${JSON.stringify(counts)} ${JSON.stringify(engine.stats())}\n`,
  );
});
