// Proves the proxy engine against 6 real ASD processes and a LevelKv: byte-exact round trips (sizes, every compression x encryption), ranged reads equal to the slice, objects readable after SIGTERM/SIGKILL of m ASDs for (4,2), (3,1), (2,2), acknowledged puts with a stopped or a stalled ASD (late fragments recorded), flipped bits never returned, no plaintext on disk with encryption, fencing by epoch, and namespace deletion leaving zero fragments.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { crc32c, isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { FragmentCache } from './fragment-cache.js';
import { memoryKeyProvider } from './key-provider.js';
import { placedCounts } from './manifest.js';
import { fragmentKey, namespaceFragmentPrefix, versionHex } from './object-keys.js';
import { AsdOsd, type Osd, type OsdAddress } from './osd.js';
import type { Compression, Encryption } from './preset.js';
import { type DamagedFragment, ProxyEngine } from './proxy-engine.js';
import { nsIdOf, patternedData, startTestBackend, type TestBackend } from './proxy-test-support.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const keyProvider = memoryKeyProvider(new Map([['k-test', randomBytes(32)]]), 'k-test');

/** Polls until the engine sees `count` live OSDs (grpc reconnects after its own backoff). */
async function waitAlive(engine: ProxyEngine, count: number): Promise<void> {
  for (let attempt = 0; attempt < 240; attempt++) {
    const states = await engine.refreshOsdStates();
    if (states.filter((s) => s.alive).length === count) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`the engine never saw ${count} live OSDs`);
}

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err) => isShaleError(err, code) || assert.fail(String(err)));
}

describe('proxy engine on 6 real ASDs', () => {
  let backend: TestBackend;
  let engine: ProxyEngine;
  const damaged: DamagedFragment[] = [];
  let nextNs = 1;

  async function namespace(preset: {
    policies: number[][];
    fragmentSizeMaxBytes?: number;
    compression?: Compression;
    encryption?: Encryption;
  }): Promise<string> {
    const nsId = nsIdOf(nextNs++);
    const name = `p-${nsId.slice(-6)}`;
    await backend.registry.addPreset(backend.backendId, {
      name,
      policies: preset.policies,
      fragmentSizeMaxBytes: preset.fragmentSizeMaxBytes ?? 64 * KiB,
      compression: preset.compression ?? 'none',
      encryption: preset.encryption ?? 'none',
      checksum: 'crc32c',
    });
    await engine.namespaces.create(nsId, backend.backendId, name);
    return nsId;
  }

  async function checkRanges(nsId: string, name: string, data: Buffer, seed: number) {
    const random = seededRandom(seed);
    const slices = Array.from({ length: 12 }, () => {
      const offsetBytes = Math.floor(random() * data.length);
      const lengthBytes = Math.floor(random() * Math.min(data.length - offsetBytes, 300 * KiB));
      return { name, offsetBytes, lengthBytes };
    });
    slices.push({ name, offsetBytes: 0, lengthBytes: data.length });
    const got = await engine.readRanges(nsId, slices);
    for (const [i, s] of slices.entries())
      assert.ok(
        (got[i] as Buffer).equals(data.subarray(s.offsetBytes, s.offsetBytes + s.lengthBytes)),
        `slice ${s.offsetBytes}+${s.lengthBytes} of ${name}`,
      );
  }

  before(async () => {
    backend = await startTestBackend(6);
    engine = new ProxyEngine({
      kv: backend.kv,
      backendId: backend.backendId,
      keyProvider,
      random: seededRandom(7),
      onDamaged: (d) => damaged.push(d),
      log: () => undefined,
    });
  });
  after(async () => {
    await engine?.close();
    await backend?.close();
  });

  test('round trips byte-exact for several sizes; ranged reads equal the slice', async () => {
    const nsId = await namespace({ policies: [[4, 2, 5, 6]] });
    for (const [i, size] of [
      0,
      1,
      4095,
      64 * KiB,
      256 * KiB,
      256 * KiB + 1,
      1 * MiB + 7,
    ].entries()) {
      const data = patternedData(size, i + 1);
      const name = `obj/${size}`;
      const put = await engine.putObject(nsId, name, data, { writerEpoch: 1 });
      assert.deepEqual(put.policy, { k: 4, m: 2, c: 5, x: 6 });
      assert.ok((await engine.getObject(nsId, name)).equals(data), `size ${size}`);
      if (size > 0) await checkRanges(nsId, name, data, size);
      const info = await engine.objectInfo(nsId, name);
      assert.equal(info.info.sizeBytes, size);
    }
    await rejectsCode(
      engine.readRanges(nsId, [{ name: 'obj/1', offsetBytes: 1, lengthBytes: 1 }]),
      'PROXY_BAD_RANGE',
    );
    await rejectsCode(engine.getObject(nsId, 'nope'), 'PROXY_OBJECT_NOT_FOUND');
    await rejectsCode(
      engine.putObject(nsId, '/abs', Buffer.alloc(1), { writerEpoch: 1 }),
      'PROXY_BAD_OBJECT_NAME',
    );
    await rejectsCode(
      engine.putObject(nsId, 'a\nb', Buffer.alloc(1), { writerEpoch: 1 }),
      'PROXY_BAD_OBJECT_NAME',
    );
    const listing = await engine.listObjects(nsId, { prefix: 'obj/1' });
    assert.deepEqual(
      listing.objects.map((o) => o.name),
      ['obj/1', 'obj/1048583'],
    );
    // Overwrite: a new version, the old version's fragments are deleted.
    const before = await engine.objectInfo(nsId, 'obj/65536');
    const data = patternedData(100 * KiB, 99);
    await engine.putObject(nsId, 'obj/65536', data, { writerEpoch: 1 });
    await engine.drain();
    assert.ok((await engine.getObject(nsId, 'obj/65536')).equals(data));
    const oldKeys = await backend.cluster.listAllKeys(`${nsId}/${versionHex(before.version)}/`);
    assert.deepEqual(oldKeys, []);
  });

  test('whole-object reads fill and then hit the fragment cache, byte-exact', async () => {
    const cache = await FragmentCache.open({ dir: `${backend.root}/cache`, quotaBytes: 64 * MiB });
    const cached = new ProxyEngine({
      kv: backend.kv,
      backendId: backend.backendId,
      fragmentCache: cache,
      log: () => undefined,
    });
    try {
      const nsId = await namespace({ policies: [[4, 2, 5, 6]] });
      const data = patternedData(900 * KiB, 41);
      await cached.putObject(nsId, 'c', data, { writerEpoch: 1 });
      assert.ok((await cached.getObject(nsId, 'c')).equals(data));
      await cached.drain(); // cache fills run in the background
      assert.ok((await cached.getObject(nsId, 'c')).equals(data));
      assert.ok(cached.stats().cacheHits >= 4, JSON.stringify(cached.stats()));
    } finally {
      await cached.close();
    }
  });

  test('every compression x encryption combination round trips (whole and ranged)', async () => {
    for (const compression of ['none', 'lz4', 'zstd'] as const) {
      for (const encryption of ['none', 'aes-256-gcm'] as const) {
        const nsId = await namespace({ policies: [[3, 2, 4, 6]], compression, encryption });
        const data = patternedData(700 * KiB + 13, compression.length + encryption.length);
        await engine.putObject(nsId, 'x', data, { writerEpoch: 1 });
        assert.ok((await engine.getObject(nsId, 'x')).equals(data), `${compression}/${encryption}`);
        await checkRanges(nsId, 'x', data, 5);
      }
    }
  });

  for (const [k, m] of [
    [4, 2],
    [3, 1],
    [2, 2],
  ] as const) {
    test(`(${k},${m}): with m ASDs stopped every object reads byte-exact`, async () => {
      const nsId = await namespace({ policies: [[k, m, k + m, 6]] });
      const objects = new Map<string, Buffer>();
      for (let i = 0; i < 4; i++) {
        const data = patternedData(300 * KiB + i * 77 * KiB, 100 + i);
        objects.set(`o${i}`, data);
        await engine.putObject(nsId, `o${i}`, data, { writerEpoch: 1 });
      }
      // Stop the ASDs holding the first m data fragments of o0 (the worst case for reads).
      const info = await engine.objectInfo(nsId, 'o0');
      const victims = (info.placement[0] as (string | undefined)[])
        .slice(0, m)
        .map((osdId) => backend.cluster.indexOf(osdId as string));
      try {
        for (const [j, i] of victims.entries())
          await backend.cluster.stop(i, j % 2 === 0 ? 'SIGKILL' : 'SIGTERM');
        for (const [name, data] of objects) {
          assert.ok((await engine.getObject(nsId, name)).equals(data), `whole ${name}`);
          await checkRanges(nsId, name, data, name.length);
        }
        assert.ok(engine.stats().parityDecodes > 0);
      } finally {
        for (const i of victims) await backend.cluster.restart(i);
        await waitAlive(engine, 6);
      }
    });
  }

  test('c < k+m: acknowledged with an ASD stopped before the put; the manifest shows the gap', async () => {
    const nsId = await namespace({ policies: [[4, 2, 5, 6]] });
    await backend.cluster.stop(5, 'SIGKILL');
    try {
      const states = await engine.refreshOsdStates();
      assert.equal(states.filter((s) => s.alive).length, 5);
      const data = patternedData(500 * KiB, 3);
      const put = await engine.putObject(nsId, 'gap', data, { writerEpoch: 1 });
      assert.ok(put.placedAtAck.every((n) => n === 5));
      const info = await engine.objectInfo(nsId, 'gap');
      assert.ok(placedCounts(info).every((n) => n === 5));
      assert.ok(info.placement.every((row) => row.includes(undefined)));
      assert.ok((await engine.getObject(nsId, 'gap')).equals(data));
    } finally {
      await backend.cluster.restart(5);
      await waitAlive(engine, 6);
    }
  });

  test('c < k+m: a put is acknowledged while one fragment write stalls; the manifest records it later', async () => {
    const nsId = await namespace({ policies: [[4, 2, 5, 6]] });
    const stalledOsd = backend.cluster.asds[2]?.osdId as string;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const stalling = new ProxyEngine({
      kv: backend.kv,
      backendId: backend.backendId,
      random: seededRandom(3),
      log: () => undefined,
      osdFactory: (address): Osd => {
        const osd = new AsdOsd(address);
        if (address.osdId !== stalledOsd) return osd;
        return Object.assign(Object.create(osd) as Osd, {
          putFragments: async (...args: Parameters<Osd['putFragments']>) => {
            await gate;
            return osd.putFragments(...args);
          },
        });
      },
    });
    try {
      const data = patternedData(600 * KiB, 11);
      const put = await stalling.putObject(nsId, 'late', data, { writerEpoch: 1 });
      assert.ok(
        put.placedAtAck.every((n) => n === 5),
        `acknowledged with ${put.placedAtAck}`,
      );
      const early = await stalling.objectInfo(nsId, 'late');
      assert.ok(early.placement.every((row) => !row.includes(stalledOsd)));
      release();
      await stalling.drain();
      const later = await stalling.objectInfo(nsId, 'late');
      assert.ok(
        placedCounts(later).every((n) => n === 6),
        `${placedCounts(later)}`,
      );
      assert.ok(later.placement.every((row) => row.includes(stalledOsd)));
      assert.ok((await engine.getObject(nsId, 'late')).equals(data));
    } finally {
      release();
      await stalling.close();
    }
  });

  test('a flipped bit in a fragment file is never returned; the object reads via parity', async () => {
    // Fragments over 64 KiB are files on the ASD (smaller ones live in its index).
    const nsId = await namespace({ policies: [[4, 2, 6, 6]], fragmentSizeMaxBytes: 128 * KiB });
    const data = patternedData(1 * MiB, 21); // 2 chunks of 4 x 128 KiB
    const startMs = Date.now() - 50; // value files written by this put only
    await engine.putObject(nsId, 'flip', data, { writerEpoch: 1 });
    const info = await engine.objectInfo(nsId, 'flip');
    const victim = backend.cluster.indexOf(info.placement[0]?.[0] as string);
    const files = (await backend.cluster.valueFiles(victim)).filter((f) => f.mtimeMs >= startMs);
    assert.equal(files.length, info.info.chunks.length, 'one file per chunk on the victim');
    for (const { file, sizeBytes } of files) {
      const handle = await fs.open(file, 'r+');
      try {
        const at = Math.floor(sizeBytes / 2);
        const byte = Buffer.alloc(1);
        await handle.read(byte, 0, 1, at);
        byte[0] = (byte[0] as number) ^ 0x10;
        await handle.write(byte, 0, 1, at);
      } finally {
        await handle.close();
      }
    }
    damaged.length = 0;
    assert.ok((await engine.getObject(nsId, 'flip')).equals(data));
    assert.ok(damaged.some((d) => d.reason === 'corrupt' && d.fragmentIndex === 0));
    await checkRanges(nsId, 'flip', data, 17);
  });

  test('with encryption no ASD value file holds the plaintext (and without it, one does)', async () => {
    const marker = Buffer.from('SHALE-PLAINTEXT-MARKER-7d1c');
    const data = Buffer.alloc(512 * KiB);
    for (let at = 0; at + marker.length <= data.length; at += 4 * KiB) marker.copy(data, at);
    async function filesWithMarker(): Promise<number> {
      let found = 0;
      for (let i = 0; i < 6; i++) {
        for (const { file } of await backend.cluster.valueFiles(i)) {
          if ((await fs.readFile(file)).includes(marker)) found += 1;
        }
      }
      return found;
    }
    const encrypted = await namespace({
      policies: [[4, 2, 6, 6]],
      fragmentSizeMaxBytes: 128 * KiB,
      compression: 'lz4',
      encryption: 'aes-256-gcm',
    });
    await engine.putObject(encrypted, 'secret', data, { writerEpoch: 1 });
    assert.equal(await filesWithMarker(), 0);
    assert.ok((await engine.getObject(encrypted, 'secret')).equals(data));
    const plain = await namespace({ policies: [[4, 2, 6, 6]], fragmentSizeMaxBytes: 128 * KiB });
    await engine.putObject(plain, 'open', data, { writerEpoch: 1 });
    assert.ok((await filesWithMarker()) > 0, 'the control must find the marker');
  });

  test('a stale writerEpoch cannot commit or delete after bumpEpoch; its fragments are removed', async () => {
    const nsId = await namespace({ policies: [[4, 2, 5, 6]] });
    const first = patternedData(200 * KiB, 31);
    const committed = await engine.putObject(nsId, 'sco/1', first, { writerEpoch: 1 });
    // Let the 6th fragment be recorded first: a late fragment that lands after the bump is
    // deleted rather than recorded (the writer is fenced), which would make the count 5.
    await engine.drain();
    assert.equal(await engine.namespaces.bumpEpoch(nsId), 2);
    await rejectsCode(
      engine.putObject(nsId, 'sco/1', patternedData(200 * KiB, 32), { writerEpoch: 1 }),
      'PROXY_FENCED',
    );
    await rejectsCode(engine.putObject(nsId, 'sco/2', first, { writerEpoch: 1 }), 'PROXY_FENCED');
    await rejectsCode(engine.deleteObject(nsId, 'sco/1', { writerEpoch: 1 }), 'PROXY_FENCED');
    await engine.drain();
    assert.ok((await engine.getObject(nsId, 'sco/1')).equals(first));
    const keys = await backend.cluster.listAllKeys(namespaceFragmentPrefix(nsId).toString());
    const ours = `${nsId}/${versionHex(committed.version)}/`;
    assert.deepEqual(
      keys.filter((k) => !k.slice(k.indexOf(':') + 1).startsWith(ours)),
      [],
      'only the committed version has fragments',
    );
    assert.equal(keys.length, 6 * 1, 'one chunk of 6 fragments');
    assert.deepEqual(await engine.deleteObject(nsId, 'sco/1', { writerEpoch: 2 }), {
      deleted: true,
    });
    assert.deepEqual(await backend.cluster.listAllKeys(`${nsId}/`), []);
    await rejectsCode(engine.getObject(nsId, 'sco/1'), 'PROXY_OBJECT_NOT_FOUND');
  });

  test('deleting a namespace leaves zero fragments on all 6 ASDs, and resumes after a failure', async () => {
    const nsId = await namespace({ policies: [[4, 2, 5, 6]] });
    for (let i = 0; i < 5; i++)
      await engine.putObject(nsId, `o${i}`, patternedData(150 * KiB * (i + 1), i), {
        writerEpoch: 1,
      });
    // Fragments of a crashed writer: on the ASDs, in no manifest.
    const stray = new AsdOsd(backend.cluster.addresses()[0] as OsdAddress);
    const strayValue = Buffer.from('left by a crashed writer');
    await stray.putFragments([
      {
        key: fragmentKey(nsId, 9999, 0, 0),
        value: strayValue,
        crc32c: crc32c(strayValue),
      },
    ]);
    stray.close();
    assert.ok((await backend.cluster.listAllKeys(`${nsId}/`)).length > 5 * 6);
    // First attempt: one ASD is down -> PROXY_OSD_UNAVAILABLE, the namespace stays 'deleting'.
    await backend.cluster.stop(4, 'SIGKILL');
    try {
      await rejectsCode(engine.namespaces.delete(nsId), 'PROXY_OSD_UNAVAILABLE');
      assert.equal((await engine.namespaces.get(nsId))?.state, 'deleting');
      await rejectsCode(
        engine.putObject(nsId, 'late', Buffer.alloc(10), { writerEpoch: 1 }),
        'PROXY_NAMESPACE_DELETING',
      );
    } finally {
      await backend.cluster.restart(4);
      await waitAlive(engine, 6);
    }
    const report = await engine.namespaces.delete(nsId);
    assert.ok(report.fragmentsDeleted > 0);
    assert.deepEqual(await backend.cluster.listAllKeys(`${nsId}/`), []);
    assert.equal(await engine.namespaces.get(nsId), undefined);
    const leftovers = await backend.kv.range({ prefix: Buffer.from(`/shale/ns/${nsId}/`) });
    assert.equal(leftovers.items.length, 0);
  });
});
