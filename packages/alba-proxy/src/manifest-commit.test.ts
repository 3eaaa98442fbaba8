// Proves the one-txn put commit on a real LevelKv: versions from in-memory ranges are unique across committers and restarts (never reused), a new SCO costs exactly one KV txn, a concurrent writer of the same name is detected by the single txn (the replaced manifest is reported exactly), a moved epoch or a re-created namespace fences, and late fragments are recorded by one txn or refused when superseded/fenced.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type KvStore, LevelKv } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { encodeManifest, type Manifest } from './manifest.js';
import { ManifestCommitter } from './manifest-commit.js';
import type { NamespaceInfo } from './namespace-manager.js';
import { encodeObject, objectInfoOf } from './object-codec.js';
import { encodeEpoch, nsKeys } from './object-keys.js';

/** The KvStore with its calls counted (the KV round trips of the put path). */
function counting(kv: KvStore): { kv: KvStore; calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  const proxy = new Proxy(kv, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls[String(prop)] = (calls[String(prop)] ?? 0) + 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { kv: proxy, calls };
}

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isShaleError(err, code));
}

describe('manifest commit', () => {
  let dir: string;
  let level: LevelKv;
  let info: Manifest['info'];
  let nextNs = 1;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'manifest-commit-'));
    level = await LevelKv.open({ dir: path.join(dir, 'kv'), sync: false });
    const encoded = await encodeObject(randomBytes(100_000), {
      k: 4,
      m: 2,
      fragmentSizeMaxBytes: 64 * 1024,
      compression: 'none',
      encryption: 'none',
      aad: Buffer.from('x'),
    });
    info = objectInfoOf(encoded);
  });
  after(async () => {
    await level?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A namespace as the committer sees it: a record revision and an epoch key. */
  async function namespace(epoch = 1): Promise<NamespaceInfo> {
    const nsId = (nextNs++).toString(16).padStart(32, '0');
    const { revision } = await level.put(nsKeys.record(nsId), Buffer.from('record'));
    await level.put(nsKeys.epoch(nsId), encodeEpoch(epoch));
    return {
      nsId,
      backendId: 'b',
      presetName: 'p',
      state: 'active',
      createdAtMs: 0,
      createRevision: revision,
    };
  }

  function manifest(name: string, version: number, writerEpoch = 1, placed = 5): Manifest {
    return {
      name,
      version,
      writerEpoch,
      createdAtMs: 1,
      policy: { k: 4, m: 2, c: 5, x: 6 },
      info,
      placement: info.chunks.map(() =>
        Array.from({ length: 6 }, (_, f) => (f < placed ? `osd-${f}` : undefined)),
      ),
    };
  }

  function committer(kv: KvStore, rangeCount = 64): ManifestCommitter {
    return new ManifestCommitter(kv, {
      versionRangeCount: rangeCount,
      knownMaxEntries: 1000,
      log: () => undefined,
      namespaceGone: async (nsId) => {
        throw new Error(`namespace ${nsId} gone`);
      },
    });
  }

  async function put(c: ManifestCommitter, ns: NamespaceInfo, name: string, epoch = 1) {
    const lease = await c.nextVersion(ns);
    const m = manifest(name, lease.version, epoch);
    return { m, ...(await c.commit(ns, m, encodeManifest(m), lease)) };
  }

  test('a new SCO costs one txn; ranges cost one get + txn per 64 puts', async () => {
    const ns = await namespace();
    const { kv, calls } = counting(level);
    const c = committer(kv);
    for (let i = 0; i < 100; i += 1) {
      const { previous } = await put(c, ns, `sco/${i}`);
      assert.equal(previous, undefined);
    }
    assert.deepEqual(calls, { get: 2, txn: 100 + 2 }, JSON.stringify(calls));
  });

  test('versions are unique across committers, concurrent takers and restarts', async () => {
    const ns = await namespace();
    const seen = new Set<number>();
    const take = async (c: ManifestCommitter, n: number) => {
      const leases = await Promise.all(Array.from({ length: n }, () => c.nextVersion(ns)));
      for (const lease of leases) {
        assert.ok(!seen.has(lease.version), `version ${lease.version} handed out twice`);
        seen.add(lease.version);
      }
      return Math.max(...leases.map((l) => l.version));
    };
    const { kv, calls } = counting(level);
    const a = committer(kv, 8);
    await take(a, 20); // 20 concurrent takers: ranges taken one at a time, 3 of them
    assert.equal(calls.txn, 3);
    const b = committer(level, 8);
    await take(b, 5);
    // "Restart": a new committer on the same KV starts past every range taken before,
    // including the unused rest of a's and b's ranges.
    const highest = Math.max(...seen);
    const restarted = committer(level, 8);
    const first = (await restarted.nextVersion(ns)).version;
    assert.ok(first > highest, `after restart ${first} must pass ${highest}`);
    assert.ok(first > 24 + 8, `a's and b's unused numbers are skipped (${first})`);
    seen.add(first);
    await take(a, 10);
    await take(b, 10);
  });

  test('a concurrent writer of the same name is seen by the single txn; the replaced manifest is exact', async () => {
    const ns = await namespace();
    const a = committer(level);
    const b = committer(level);
    const first = await put(a, ns, 'sco/x');
    assert.equal(first.previous, undefined);
    // b never wrote the name: it assumes a new SCO, the compare fails, it retries once.
    const { kv, calls } = counting(level);
    const bCounted = new ManifestCommitter(kv, {
      knownMaxEntries: 10,
      log: () => undefined,
      namespaceGone: async () => {
        throw new Error('gone');
      },
    });
    const lease = await b.nextVersion(ns);
    const mb = manifest('sco/x', lease.version);
    const second = await bCounted.commit(ns, mb, encodeManifest(mb), lease);
    assert.equal(second.previous?.version, first.m.version);
    assert.deepEqual(calls, { txn: 2 });
    // a's knowledge is stale now: it still replaces exactly what is there (b's version).
    const third = await put(a, ns, 'sco/x');
    assert.equal(third.previous?.version, mb.version);
    const stored = await level.get(nsKeys.manifest(ns.nsId, 'sco/x'));
    assert.equal(stored?.modRevision, third.modRevision);
  });

  test('a moved epoch fences, also when the manifest changed at the same time', async () => {
    const ns = await namespace();
    const a = committer(level);
    const b = committer(level);
    await put(a, ns, 'sco/f');
    await put(b, ns, 'sco/f'); // a's revision is stale
    await level.put(nsKeys.epoch(ns.nsId), encodeEpoch(2));
    await rejectsCode(put(a, ns, 'sco/f'), 'PROXY_FENCED');
    await rejectsCode(put(a, ns, 'sco/new'), 'PROXY_FENCED');
    assert.equal(await level.get(nsKeys.manifest(ns.nsId, 'sco/new')), undefined);
    const ok = await put(a, ns, 'sco/new', 2);
    assert.equal(ok.previous, undefined);
  });

  test('a namespace deleted and re-created since the version was taken fences the put', async () => {
    const ns = await namespace();
    const a = committer(level);
    const lease = await a.nextVersion(ns);
    await level.txn({
      compares: [],
      success: [{ type: 'deletePrefix', prefix: nsKeys.prefix(ns.nsId) }],
    });
    await level.put(nsKeys.epoch(ns.nsId), encodeEpoch(1));
    // Someone else starts the new incarnation's counter.
    await committer(level).nextVersion(ns);
    const m = manifest('sco/r', lease.version);
    await rejectsCode(a.commit(ns, m, encodeManifest(m), lease), 'PROXY_FENCED');
    assert.equal(await level.get(nsKeys.manifest(ns.nsId, 'sco/r')), undefined);
  });

  test('late fragments: one txn when nothing moved; superseded and fenced are refused', async () => {
    const ns = await namespace();
    const a = committer(level);
    const acked = await put(a, ns, 'sco/l');
    const fill = (current: Manifest): Manifest => ({
      ...current,
      placement: current.placement.map((row) => row.map((o, f) => o ?? `osd-${f}`)),
    });
    const { kv, calls } = counting(level);
    const counted = committer(kv);
    // A committer that did not commit it reads once; the one that did needs no read.
    const viaOther = await counted.recordLate(ns, acked.m, 1, fill);
    assert.equal(viaOther.outcome, 'recorded');
    assert.deepEqual(calls, { get: 1, txn: 1 });
    const stored = await level.get(nsKeys.manifest(ns.nsId, 'sco/l'));
    assert.ok(stored !== undefined);
    // a's known revision is stale (counted wrote since): recorded after one failed compare.
    assert.equal((await a.recordLate(ns, acked.m, 1, fill)).outcome, 'recorded');
    await put(a, ns, 'sco/l');
    assert.equal((await a.recordLate(ns, acked.m, 1, fill)).outcome, 'superseded');
    const again = await put(a, ns, 'sco/l2');
    await level.put(nsKeys.epoch(ns.nsId), encodeEpoch(5));
    assert.equal((await a.recordLate(ns, again.m, 1, fill)).outcome, 'fenced');
  });
});
