// Proves maintenance against real ASD processes and a LevelKv: for (4,2), (3,1), (2,2) objects stay byte-exact with m ASDs SIGKILLed and get k+m fragments on live OSDs back (then survive m other ASDs stopping); a flipped bit is found by verify, never returned, and repaired; a c < k+m put is completed; fenced and crashed writers' fragments are collected after the grace period and not before; a pass stopped after N objects resumes from the stored progress.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { crc32c, isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { Maintenance, type MaintenanceLimits, maintenanceKeys } from './maintenance.js';
import { placedCounts } from './manifest.js';
import { fragmentKey, versionHex } from './object-keys.js';
import { AsdOsd, type Osd, type OsdAddress } from './osd.js';
import { ProxyEngine } from './proxy-engine.js';
import {
  AsdCluster,
  nsIdOf,
  patternedData,
  startTestBackend,
  type TestBackend,
} from './proxy-test-support.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('maintenance on real ASDs', () => {
  let backend: TestBackend;
  let engine: ProxyEngine;
  const fresh: AsdCluster[] = [];
  /** Every ASD process of the test by OSD id: the backend's and the fresh ones. */
  const where = new Map<string, { cluster: AsdCluster; index: number }>();
  let nextNs = 1;

  function maintenance(limits: Partial<MaintenanceLimits> = {}, now?: () => number): Maintenance {
    return new Maintenance({
      kv: backend.kv,
      backendId: backend.backendId,
      random: seededRandom(5),
      limits: { orphanGraceMs: 0, osdDownGraceMs: 0, repairBytesPerSec: 1024 * MiB, ...limits },
      log: () => undefined,
      ...(now === undefined ? {} : { now }),
    });
  }

  async function namespace(policy: number[], fragmentSizeMaxBytes = 64 * KiB): Promise<string> {
    const nsId = nsIdOf(nextNs++);
    const name = `p-${nsId.slice(-6)}`;
    await backend.registry.addPreset(backend.backendId, {
      name,
      policies: [policy],
      fragmentSizeMaxBytes,
      compression: 'none',
      encryption: 'none',
      checksum: 'crc32c',
    });
    await engine.namespaces.create(nsId, backend.backendId, name);
    return nsId;
  }

  async function stop(osdId: string): Promise<void> {
    const at = where.get(osdId);
    assert.ok(at !== undefined, `unknown OSD ${osdId}`);
    await at.cluster.stop(at.index, 'SIGKILL');
  }

  async function restart(osdId: string): Promise<void> {
    const at = where.get(osdId);
    assert.ok(at !== undefined, `unknown OSD ${osdId}`);
    await at.cluster.restart(at.index);
  }

  /** Polls until every active OSD answers the engine (grpc reconnects after its backoff). */
  async function waitAllAlive(): Promise<void> {
    for (let attempt = 0; attempt < 240; attempt++) {
      const states = await engine.refreshOsdStates();
      if (states.every((s) => s.alive)) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error('some active OSD never answered again');
  }

  async function readsExact(nsId: string, objects: ReadonlyMap<string, Buffer>): Promise<void> {
    for (const [name, data] of objects)
      assert.ok((await engine.getObject(nsId, name)).equals(data), `${nsId}/${name}`);
  }

  before(async () => {
    backend = await startTestBackend(6);
    backend.cluster.asds.forEach((asd, index) => {
      where.set(asd.osdId, { cluster: backend.cluster, index });
    });
    engine = new ProxyEngine({
      kv: backend.kv,
      backendId: backend.backendId,
      random: seededRandom(9),
      log: () => undefined,
    });
  });
  after(async () => {
    await engine?.close();
    for (const cluster of fresh) await cluster.close();
    await backend?.close();
  });

  for (const [k, m] of [
    [4, 2],
    [3, 1],
    [2, 2],
  ] as const) {
    test(`(${k},${m}): m ASDs SIGKILLed -> reads exact; maintenance restores k+m on live OSDs`, async () => {
      const nsId = await namespace([k, m, k + m, 6]);
      const objects = new Map<string, Buffer>();
      for (let i = 0; i < 4; i++) {
        const data = patternedData(150 * KiB + i * 61 * KiB, 10 * k + i);
        objects.set(`o${i}`, data);
        await engine.putObject(nsId, `o${i}`, data, { writerEpoch: 1 });
      }
      await engine.drain();
      const first = await engine.objectInfo(nsId, 'o0');
      const victims = (first.placement[0] as string[]).slice(0, m);
      for (const osdId of victims) await stop(osdId);
      await readsExact(nsId, objects);

      // The dead ASDs leave the backend; fresh ones join (so k + m distinct OSDs exist).
      for (const osdId of victims) await backend.registry.decommissionOsd(backend.backendId, osdId);
      const added = await AsdCluster.start(path.join(backend.root, `fresh-${k}-${m}`), m);
      fresh.push(added);
      for (const [index, address] of added.addresses().entries()) {
        await backend.registry.addOsd(backend.backendId, address);
        where.set(address.osdId, { cluster: added, index });
      }
      await waitAllAlive();

      const maint = maintenance();
      try {
        const summary = await maint.runPass();
        assert.equal(summary.complete, true);
        assert.deepEqual(
          summary.unrecoverable.filter((u) => u.nsId === nsId),
          [],
        );
        assert.ok(summary.fragmentsRepaired >= m, JSON.stringify(summary));
      } finally {
        maint.close();
      }
      const live = new Set((await engine.refreshOsdStates()).map((s) => s.osdId));
      for (const name of objects.keys()) {
        const info = await engine.objectInfo(nsId, name);
        for (const row of info.placement) {
          assert.equal(row.length, k + m);
          assert.ok(
            row.every((osdId) => osdId !== undefined && live.has(osdId)),
            `${name}: ${row}`,
          );
          assert.equal(new Set(row).size, k + m, 'distinct OSDs per chunk');
        }
      }
      await readsExact(nsId, objects);

      // m OTHER ASDs (holding fragments of o0 now) stop: every object still reads exact.
      const repaired = await engine.objectInfo(nsId, 'o0');
      const others = (repaired.placement[0] as string[]).slice(0, m);
      assert.ok(others.every((osdId) => !victims.includes(osdId)));
      try {
        for (const osdId of others) await stop(osdId);
        await readsExact(nsId, objects);
      } finally {
        for (const osdId of others) await restart(osdId);
        await waitAllAlive();
      }
      // Gone, so that the next policy's m stopped ASDs cannot take this one below k.
      await engine.namespaces.delete(nsId);
    });
  }

  test('a flipped bit is found by verify, never returned, and repaired from parity', async () => {
    // Fragments over 64 KiB are files on the ASD (smaller ones live in its index).
    const nsId = await namespace([4, 2, 6, 6], 128 * KiB);
    const data = patternedData(1 * MiB, 77); // 2 chunks of 4 x 128 KiB
    const startMs = Date.now() - 50;
    await engine.putObject(nsId, 'flip', data, { writerEpoch: 1 });
    await engine.drain();
    const info = await engine.objectInfo(nsId, 'flip');
    const victimOsd = info.placement[0]?.[0] as string;
    const at = where.get(victimOsd);
    assert.ok(at !== undefined);
    const files = (await at.cluster.valueFiles(at.index)).filter((f) => f.mtimeMs >= startMs);
    assert.equal(files.length, info.info.chunks.length, 'one file per chunk on the victim');
    for (const { file, sizeBytes } of files) {
      const handle = await fs.open(file, 'r+');
      try {
        const byte = Buffer.alloc(1);
        await handle.read(byte, 0, 1, Math.floor(sizeBytes / 2));
        byte[0] = (byte[0] as number) ^ 0x04;
        await handle.write(byte, 0, 1, Math.floor(sizeBytes / 2));
      } finally {
        await handle.close();
      }
    }
    assert.ok((await engine.getObject(nsId, 'flip')).equals(data), 'never returned');

    const maint = maintenance();
    try {
      const plain = await maint.runPass();
      assert.equal(plain.fragmentsBad, 0, 'a pass without verify reads no fragment');
      const verified = await maint.runPass({ verify: true });
      assert.equal(verified.fragmentsBad, info.info.chunks.length, JSON.stringify(verified));
      assert.ok(verified.fragmentsRepaired >= info.info.chunks.length);
      const again = await maint.runPass({ verify: true });
      assert.equal(again.fragmentsBad, 0, 'the repair holds');
    } finally {
      maint.close();
    }
    // Every fragment the manifest names now reads back with its CRC32C.
    const after = await engine.objectInfo(nsId, 'flip');
    for (const [c, row] of after.placement.entries()) {
      const chunk = after.info.chunks[c];
      assert.ok(chunk !== undefined);
      for (const [f, osdId] of row.entries()) {
        const address = (await backend.registry.listOsds(backend.backendId)).find(
          (o) => o.osdId === osdId,
        ) as OsdAddress;
        const osd = new AsdOsd(address);
        try {
          const [got] = await osd.getFragments([fragmentKey(nsId, after.version, c, f)]);
          assert.ok(got?.ok === true, `chunk ${c} fragment ${f} on ${osdId}`);
          assert.equal(crc32c(got.value), chunk.fragmentCrcs[f]);
        } finally {
          osd.close();
        }
      }
    }
    assert.ok((await engine.getObject(nsId, 'flip')).equals(data));
  });

  test('an object put with c < k+m while an ASD was down is completed to k+m', async () => {
    const nsId = await namespace([4, 2, 5, 6]);
    const active = await engine.refreshOsdStates();
    assert.equal(active.length, 6, 'each policy test replaced the OSDs it decommissioned');
    const down = active[active.length - 1]?.osdId as string;
    await stop(down);
    const data = patternedData(400 * KiB, 5);
    try {
      await engine.refreshOsdStates();
      const put = await engine.putObject(nsId, 'gap', data, { writerEpoch: 1 });
      assert.ok(
        put.placedAtAck.every((n) => n === 5),
        `${put.placedAtAck}`,
      );
    } finally {
      await restart(down);
      await waitAllAlive();
    }
    await engine.drain();
    assert.ok(placedCounts(await engine.objectInfo(nsId, 'gap')).every((n) => n === 5));
    const maint = maintenance();
    try {
      const summary = await maint.runPass();
      assert.ok(summary.fragmentsCompleted >= 1, JSON.stringify(summary));
    } finally {
      maint.close();
    }
    const info = await engine.objectInfo(nsId, 'gap');
    assert.ok(
      placedCounts(info).every((n) => n === 6),
      `${placedCounts(info)}`,
    );
    assert.ok((await engine.getObject(nsId, 'gap')).equals(data));
  });

  test('a chunk below k is reported unrecoverable and nothing is written; it heals when OSDs return', async () => {
    const nsId = await namespace([3, 1, 4, 6]);
    const data = patternedData(100 * KiB, 12);
    await engine.putObject(nsId, 'thin', data, { writerEpoch: 1 });
    await engine.drain();
    const before = await engine.objectInfo(nsId, 'thin');
    const victims = (before.placement[0] as string[]).slice(0, 2);
    const maint = maintenance(); // osdDownGraceMs 0: a silent OSD counts as lost at once
    try {
      for (const osdId of victims) await stop(osdId);
      const summary = await maint.runPass({ collectOrphans: false });
      assert.deepEqual(
        summary.unrecoverable.filter((u) => u.nsId === nsId),
        [{ nsId, name: 'thin', version: before.version, chunkIndex: 0, healthyFragments: 2, k: 3 }],
      );
      assert.deepEqual(await engine.objectInfo(nsId, 'thin'), before, 'manifest untouched');
    } finally {
      for (const osdId of victims) await restart(osdId);
      await waitAllAlive();
    }
    try {
      const healed = await maint.runPass({ collectOrphans: false });
      assert.deepEqual(healed.unrecoverable, []);
    } finally {
      maint.close();
    }
    assert.ok((await engine.getObject(nsId, 'thin')).equals(data));
  });

  test('fenced and crashed writers: their fragments are collected after the grace period, not before', async () => {
    const nsId = await namespace([4, 2, 6, 6]);
    const kept = patternedData(180 * KiB, 8);
    const committed = await engine.putObject(nsId, 'keep', kept, { writerEpoch: 1 });
    await engine.drain();
    assert.equal(await engine.namespaces.bumpEpoch(nsId), 2);
    // A fenced writer whose cleanup fails (as if it crashed right after PROXY_FENCED).
    const fenced = new ProxyEngine({
      kv: backend.kv,
      backendId: backend.backendId,
      log: () => undefined,
      osdFactory: (address): Osd => {
        const osd = new AsdOsd(address);
        return Object.assign(Object.create(osd) as Osd, {
          deleteFragments: async () => {
            throw new Error('crashed before cleaning up');
          },
        });
      },
    });
    try {
      await assert.rejects(
        fenced.putObject(nsId, 'stale', patternedData(180 * KiB, 9), { writerEpoch: 1 }),
        (err) => isShaleError(err, 'PROXY_FENCED'),
      );
      await fenced.drain();
    } finally {
      await fenced.close();
    }
    // A crashed writer's fragment, and one of a namespace that does not exist.
    const live = (await backend.registry.listOsds(backend.backendId)).filter(
      (o) => o.state === 'active',
    );
    const stray = new AsdOsd(live[0] as OsdAddress);
    const strayValue = Buffer.from('left by a crashed writer');
    const ghostNs = nsIdOf(0xdead);
    await stray.putFragments([
      { key: fragmentKey(nsId, 9999, 0, 0), value: strayValue, crc32c: crc32c(strayValue) },
      { key: fragmentKey(ghostNs, 1, 0, 0), value: strayValue, crc32c: crc32c(strayValue) },
    ]);
    stray.close();
    const keysOf = async (prefix: string): Promise<string[]> => {
      const out: string[] = [];
      for (const record of live) {
        const osd = new AsdOsd(record);
        try {
          const page = await osd.listFragments(Buffer.from(prefix, 'latin1'), undefined, 1000);
          out.push(...page.keys.map((key) => key.toString('latin1')));
        } finally {
          osd.close();
        }
      }
      return out;
    };
    const ours = `${nsId}/${versionHex(committed.version)}/`;
    const strays = (await keysOf(`${nsId}/`)).filter((key) => !key.startsWith(ours));
    assert.ok(strays.length >= 6 + 1, `fenced fragments and the stray are there: ${strays}`);

    let nowMs = 1_000_000;
    const maint = maintenance({ orphanGraceMs: 60_000 }, () => nowMs);
    try {
      const first = await maint.runPass();
      assert.equal(first.orphansDeleted, 0);
      assert.ok(first.orphansPending >= strays.length + 1, JSON.stringify(first));
      nowMs += 30_000;
      assert.equal((await maint.runPass()).orphansDeleted, 0, 'not before the grace period');
      assert.equal((await keysOf(`${nsId}/`)).length, strays.length + 6);
      nowMs += 31_000;
      const collected = await maint.runPass();
      assert.ok(collected.orphansDeleted >= strays.length + 1, JSON.stringify(collected));
    } finally {
      maint.close();
    }
    const left = await keysOf(`${nsId}/`);
    assert.equal(left.length, 6);
    assert.ok(left.every((key) => key.startsWith(ours)));
    assert.deepEqual(await keysOf(`${ghostNs}/`), []);
    assert.ok((await engine.getObject(nsId, 'keep')).equals(kept));
    const records = await backend.kv.range({
      prefix: maintenanceKeys.orphansPrefix(backend.backendId, nsId),
    });
    assert.equal(records.items.length, 0, 'first-seen records are cleaned up');
  });

  test('a pass stopped after N objects saves its progress; the next one resumes there', async () => {
    const nsId = await namespace([3, 1, 4, 6]);
    for (let i = 0; i < 5; i++)
      await engine.putObject(nsId, `r${i}`, patternedData(70 * KiB, 40 + i), { writerEpoch: 1 });
    await engine.drain();
    const all = await backend.kv.range({ prefix: Buffer.from('/shale/ns/') }, { limit: 10_000 });
    const total = all.items.filter((item) => item.key.toString('latin1').includes('/m/')).length;
    const first = maintenance();
    let stored: Awaited<ReturnType<Maintenance['progress']>>;
    try {
      const partial = await first.runPass({ maxObjects: 3 });
      assert.equal(partial.complete, false);
      assert.equal(partial.objectsScanned, 3);
      stored = await first.progress();
      assert.equal(stored?.phase, 'scan');
    } finally {
      first.close(); // a restart: a new Maintenance reads the stored progress
    }
    const second = maintenance();
    try {
      const rest = await second.runPass();
      assert.equal(rest.complete, true);
      assert.deepEqual(rest.resumedFrom, { nsId: stored?.nsId, name: stored?.name });
      assert.equal(rest.objectsScanned, total - 3);
      assert.equal(await second.progress(), undefined);
      assert.equal((await second.runPass()).objectsScanned, total, 'the next pass starts over');
    } finally {
      second.close();
    }
  });
});
