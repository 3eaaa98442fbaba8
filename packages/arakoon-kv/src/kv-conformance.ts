// The KvStore conformance suite (not a test file itself): every engine's test file runs it
// against a real instance, so both engines are held to one set of outcomes.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isShaleError } from '@shale/common';
import { KvErrorCode } from './errors.js';
import type { KvStore, LeaseId, WatchBatch, WatchEvent, Watcher } from './kv-store.js';
import { ifAbsent, ifUnchanged, ifValueEquals } from './txn-helpers.js';

export interface EngineHarness {
  readonly name: string;
  /** A client of the store under test. */
  open(): Promise<KvStore>;
  /** A second client of the same store (for races). LevelKv: the same instance. */
  openPeer(): Promise<KvStore>;
  /** The TTL for lease tests; etcd's minimum is ~2 s. */
  readonly leaseTtlMs: number;
  /** Cuts the transport under the store's open watches, if it has one. */
  dropConnections?(): void;
  /** Connections opened so far by the store under test (to see that drops forced reconnects). */
  connectionCount?(): number;
}

const b = (text: string): Buffer => Buffer.from(text, 'latin1');
const s = (buf: Buffer | undefined): string | undefined => buf?.toString('latin1');

export async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isShaleError(err), `expected ShaleError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    return true;
  });
}

export async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean> | boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A watch that records everything it is handed. */
export function collect(kv: KvStore, prefix: string, fromRevision?: number) {
  const events: WatchEvent[] = [];
  const batches: WatchBatch[] = [];
  const watcher: Watcher = kv.watch(
    fromRevision === undefined ? { prefix: b(prefix) } : { prefix: b(prefix), fromRevision },
    (batch) => {
      batches.push(batch);
      events.push(...batch.events);
    },
  );
  return {
    events,
    batches,
    watcher,
    waitFor: (count: number, timeoutMs = 10_000) =>
      waitUntil(
        `${count} watch events under ${prefix} (have ${events.length})`,
        timeoutMs,
        () => events.length >= count,
      ),
  };
}

export function runConformance(harness: EngineHarness): void {
  describe(`KvStore conformance: ${harness.name}`, () => {
    let kv: KvStore;
    let peer: KvStore;
    let counter = 0;
    // Each test works under its own prefix, so tests never see each other's keys.
    const space = (): string => `/conf/${Date.now().toString(36)}-${++counter}/`;

    before(async () => {
      kv = await harness.open();
      peer = await harness.openPeer();
    });
    after(async () => {
      if (peer !== kv) await peer.close();
      await kv.close();
    });

    test('put then get returns the bytes and etcd-style metadata', async () => {
      const p = space();
      const first = await kv.put(b(`${p}a`), b('one'));
      let item = await kv.get(b(`${p}a`));
      assert.equal(s(item?.value), 'one');
      assert.equal(item?.version, 1);
      assert.equal(item?.createRevision, first.revision);
      assert.equal(item?.modRevision, first.revision);
      const second = await kv.put(b(`${p}a`), Buffer.from([0, 255, 1]));
      assert.ok(second.revision > first.revision, 'revisions increase');
      item = await kv.get(b(`${p}a`));
      assert.deepEqual([...(item?.value ?? [])], [0, 255, 1]);
      assert.equal(item?.version, 2);
      assert.equal(item?.createRevision, first.revision);
      assert.equal(item?.modRevision, second.revision);
      assert.equal(await kv.get(b(`${p}missing`)), undefined);
      // An empty value is a value, not an absence.
      await kv.put(b(`${p}empty`), Buffer.alloc(0));
      assert.equal((await kv.get(b(`${p}empty`)))?.value.length, 0);
    });

    test('getMany reads several keys in order, missing ones as undefined', async () => {
      const p = space();
      await kv.put(b(`${p}x`), b('X'));
      await kv.put(b(`${p}z`), b('Z'));
      const items = await kv.getMany([b(`${p}z`), b(`${p}y`), b(`${p}x`)]);
      assert.deepEqual(
        items.map((item) => s(item?.value)),
        ['Z', undefined, 'X'],
      );
      assert.deepEqual(await kv.getMany([]), []);
    });

    test('delete removes a key once; re-creating starts a new version history', async () => {
      const p = space();
      const created = await kv.put(b(`${p}k`), b('v'));
      const removed = await kv.delete(b(`${p}k`));
      assert.equal(removed.deleted, true);
      assert.ok(removed.revision > created.revision);
      assert.equal(await kv.get(b(`${p}k`)), undefined);
      const again = await kv.delete(b(`${p}k`));
      assert.equal(again.deleted, false);
      const recreated = await kv.put(b(`${p}k`), b('w'));
      const item = await kv.get(b(`${p}k`));
      assert.equal(item?.version, 1);
      assert.equal(item?.createRevision, recreated.revision);
    });

    test('range by prefix pages with a limit and a continuation, in key order, nothing twice', async () => {
      const p = space();
      const names = Array.from({ length: 25 }, (_, i) => `${p}item/${String(i).padStart(3, '0')}`);
      for (const name of [...names].reverse()) await kv.put(b(name), b(name));
      await kv.put(b(`${p}itemz`), b('outside the prefix'));
      await kv.put(b(`${p}ite`), b('outside too'));
      const seen: string[] = [];
      let continuation: Buffer | undefined;
      let pages = 0;
      do {
        const page = await kv.range(
          { prefix: b(`${p}item/`) },
          continuation === undefined ? { limit: 10 } : { limit: 10, continuation },
        );
        pages += 1;
        assert.ok(page.items.length <= 10);
        assert.ok(page.revision >= 1);
        for (const item of page.items) {
          assert.equal(s(item.value), s(item.key));
          seen.push(s(item.key) as string);
        }
        continuation = page.continuation;
      } while (continuation !== undefined);
      assert.equal(pages, 3);
      assert.deepEqual(seen, names);
    });

    test('range [start, end) includes start, excludes end; an open end runs to the last key', async () => {
      const p = space();
      for (const k of ['a', 'b', 'c', 'd']) await kv.put(b(`${p}${k}`), b(k));
      const page = await kv.range({ start: b(`${p}b`), end: b(`${p}d`) });
      assert.deepEqual(
        page.items.map((item) => s(item.value)),
        ['b', 'c'],
      );
      assert.equal(page.continuation, undefined);
      const open = await kv.range({ start: b(`${p}c`) }, { limit: 2 });
      assert.deepEqual(
        open.items.map((item) => s(item.value)),
        ['c', 'd'],
      );
      const empty = await kv.range({ prefix: b(`${p}nothing/`) });
      assert.deepEqual(empty.items, []);
    });

    test('binary keys: a prefix ending in 0xff still bounds the range', async () => {
      const p = space();
      const base = b(p);
      const k1 = Buffer.concat([base, Buffer.from([0xff, 0x00])]);
      const k2 = Buffer.concat([base, Buffer.from([0xff, 0xff])]);
      const outside = Buffer.concat([base.subarray(0, base.length - 1), Buffer.from([0x30])]);
      await kv.put(k1, b('1'));
      await kv.put(k2, b('2'));
      await kv.put(outside, b('out'));
      const page = await kv.range({ prefix: Buffer.concat([base, Buffer.from([0xff])]) });
      assert.deepEqual(
        page.items.map((item) => s(item.value)),
        ['1', '2'],
      );
    });

    test('txn: compares on value, version, mod revision and existence pick the branch', async () => {
      const p = space();
      const key = b(`${p}epoch`);
      // Create-only: succeeds once, fails the second time and runs the failure branch.
      const created = await kv.txn({
        compares: [ifAbsent(key)],
        success: [{ type: 'put', key, value: b('1') }],
        failure: [{ type: 'get', key }],
      });
      assert.equal(created.succeeded, true);
      assert.deepEqual(created.results, [{ type: 'put' }]);
      const again = await kv.txn({
        compares: [ifAbsent(key)],
        success: [{ type: 'put', key, value: b('X') }],
        failure: [{ type: 'get', key }],
      });
      assert.equal(again.succeeded, false);
      assert.equal(
        again.revision,
        created.revision,
        'a txn that wrote nothing does not add a revision',
      );
      const got = again.results[0];
      assert.ok(got?.type === 'get');
      assert.equal(s(got.item?.value), '1');

      assert.equal(
        (await kv.txn({ compares: [ifValueEquals(key, b('1'))], success: [] })).succeeded,
        true,
      );
      assert.equal(
        (await kv.txn({ compares: [ifValueEquals(key, b('2'))], success: [] })).succeeded,
        false,
      );
      assert.equal(
        (
          await kv.txn({
            compares: [{ key, target: 'value', op: 'greater', value: b('0') }],
            success: [],
          })
        ).succeeded,
        true,
      );
      assert.equal(
        (
          await kv.txn({
            compares: [{ key, target: 'value', op: 'notEqual', value: b('1') }],
            success: [],
          })
        ).succeeded,
        false,
      );
      assert.equal(
        (
          await kv.txn({
            compares: [{ key, target: 'version', op: 'equal', number: 1 }],
            success: [],
          })
        ).succeeded,
        true,
      );
      assert.equal(
        (
          await kv.txn({
            compares: [{ key, target: 'version', op: 'less', number: 1 }],
            success: [],
          })
        ).succeeded,
        false,
      );
      assert.equal(
        (
          await kv.txn({
            compares: [{ key, target: 'createRevision', op: 'equal', number: created.revision }],
            success: [],
          })
        ).succeeded,
        true,
      );
      // A value compare on a missing key is false whatever the operator (etcd's rule).
      const missing = b(`${p}missing`);
      assert.equal(
        (
          await kv.txn({
            compares: [{ key: missing, target: 'value', op: 'notEqual', value: b('x') }],
            success: [],
          })
        ).succeeded,
        false,
      );
      // Conditional commit on the epoch, as manifests do: stale epoch -> nothing written.
      const item = await kv.get(key);
      const manifest = b(`${p}manifest/obj1`);
      const stale = await kv.txn({
        compares: [ifValueEquals(key, b('0'))],
        success: [{ type: 'put', key: manifest, value: b('m') }],
      });
      assert.equal(stale.succeeded, false);
      assert.equal(await kv.get(manifest), undefined);
      const fresh = await kv.txn({
        compares: [ifUnchanged(key, item), ifValueEquals(key, b('1'))],
        success: [
          { type: 'put', key: manifest, value: b('m') },
          { type: 'put', key: b(`${p}manifest/obj2`), value: b('n') },
          { type: 'delete', key: b(`${p}nothing`) },
          { type: 'get', key: manifest },
        ],
      });
      assert.equal(fresh.succeeded, true);
      const read = fresh.results[3];
      assert.ok(read?.type === 'get');
      assert.equal(s(read.item?.value), 'm', "a get in a txn sees the txn's earlier puts");
      const [m1, m2] = await kv.getMany([manifest, b(`${p}manifest/obj2`)]);
      assert.equal(m1?.modRevision, fresh.revision, 'all ops of a txn share one revision');
      assert.equal(m2?.modRevision, fresh.revision);
    });

    test('txn: deletePrefix removes a whole subtree atomically', async () => {
      const p = space();
      for (let i = 0; i < 5; i++) await kv.put(b(`${p}ns/obj${i}`), b('x'));
      await kv.put(b(`${p}nsX`), b('keep'));
      const result = await kv.txn({
        compares: [],
        success: [{ type: 'deletePrefix', prefix: b(`${p}ns/`) }],
      });
      assert.deepEqual(result.results, [{ type: 'delete', deletedCount: 5 }]);
      assert.equal((await kv.range({ prefix: b(`${p}ns/`) })).items.length, 0);
      assert.equal(s((await kv.get(b(`${p}nsX`)))?.value), 'keep');
    });

    test('txn is all-or-nothing: a put bound to a missing lease fails the whole txn', async () => {
      const p = space();
      await expectCode(
        kv.txn({
          compares: [],
          success: [
            { type: 'put', key: b(`${p}a`), value: b('a') },
            { type: 'put', key: b(`${p}b`), value: b('b'), leaseId: '123456789' as LeaseId },
          ],
        }),
        KvErrorCode.LeaseNotFound,
      );
      assert.equal(await kv.get(b(`${p}a`)), undefined);
    });

    test('bad input gets a clear error and changes nothing', async () => {
      const p = space();
      await expectCode(kv.put(Buffer.alloc(0), b('x')), KvErrorCode.BadRequest);
      await expectCode(kv.put(Buffer.alloc(5000, 0x61), b('x')), KvErrorCode.KeyTooLarge);
      await expectCode(
        kv.put(b(`${p}big`), Buffer.alloc(2 * 1024 * 1024)),
        KvErrorCode.ValueTooLarge,
      );
      assert.equal(await kv.get(b(`${p}big`)), undefined);
      await expectCode(
        kv.txn({
          compares: [],
          success: [
            { type: 'put', key: b(`${p}d`), value: b('1') },
            { type: 'put', key: b(`${p}d`), value: b('2') },
          ],
        }),
        KvErrorCode.BadRequest,
      );
      const many = Array.from({ length: 129 }, (_, i) => ({
        type: 'get' as const,
        key: b(`${p}${i}`),
      }));
      await expectCode(kv.txn({ compares: [], success: many }), KvErrorCode.TooManyOps);
      await expectCode(kv.range({ prefix: b(p) }, { limit: 0 }), KvErrorCode.BadRequest);
      await expectCode(kv.range({ start: b(`${p}b`), end: b(`${p}a`) }), KvErrorCode.BadRequest);
      await expectCode(kv.grantLease(10), KvErrorCode.BadRequest);
      await expectCode(kv.allocate(b(`${p}seq`), 0), KvErrorCode.BadRequest);
      assert.equal(await kv.get(b(`${p}d`)), undefined);
    });

    test('race: two writers CAS the same key at once, exactly one wins every round', async () => {
      const p = space();
      const key = b(`${p}owner`);
      await kv.put(key, b('node0:epoch0'));
      for (let round = 1; round <= 20; round++) {
        const [seenA, seenB] = await Promise.all([kv.get(key), peer.get(key)]);
        assert.equal(seenA?.modRevision, seenB?.modRevision);
        const [a, c] = await Promise.all([
          kv.txn({
            compares: [ifUnchanged(key, seenA)],
            success: [{ type: 'put', key, value: b(`A:${round}`) }],
          }),
          peer.txn({
            compares: [ifUnchanged(key, seenB)],
            success: [{ type: 'put', key, value: b(`B:${round}`) }],
          }),
        ]);
        assert.equal(
          Number(a.succeeded) + Number(c.succeeded),
          1,
          `round ${round}: exactly one winner`,
        );
        const now = await kv.get(key);
        assert.equal(s(now?.value), a.succeeded ? `A:${round}` : `B:${round}`);
      }
    });

    test('race: two CAS-increment loops on one counter lose no increment', async () => {
      const p = space();
      const key = b(`${p}counter`);
      const perWriter = 30;
      const increment = async (store: KvStore): Promise<number> => {
        let conflicts = 0;
        for (let i = 0; i < perWriter; i++) {
          for (;;) {
            const current = await store.get(key);
            const next = Number(s(current?.value) ?? '0') + 1;
            const result = await store.txn({
              compares: [ifUnchanged(key, current)],
              success: [{ type: 'put', key, value: b(String(next)) }],
            });
            if (result.succeeded) break;
            conflicts += 1;
          }
        }
        return conflicts;
      };
      await Promise.all([increment(kv), increment(peer)]);
      assert.equal(s((await kv.get(key))?.value), String(2 * perWriter));
    });

    test('sequence allocation: concurrent allocators get disjoint, increasing ranges', async () => {
      const p = space();
      const key = b(`${p}seq`);
      const grab = async (store: KvStore) => {
        const ranges = [];
        for (let i = 0; i < 15; i++) ranges.push(await store.allocate(key, 3));
        return ranges;
      };
      const [mine, theirs] = await Promise.all([grab(kv), grab(peer)]);
      for (const ranges of [mine, theirs]) {
        for (let i = 1; i < ranges.length; i++) {
          assert.ok((ranges[i]?.first ?? 0) > (ranges[i - 1]?.first ?? 0), 'increasing per caller');
        }
      }
      const numbers = [...mine, ...theirs].flatMap((r) => [r.first, r.first + 1, r.first + 2]);
      assert.equal(new Set(numbers).size, 90, 'no number handed out twice');
      assert.deepEqual(
        [...numbers].sort((x, y) => x - y),
        Array.from({ length: 90 }, (_, i) => i + 1),
        'no gaps without failures',
      );
      assert.deepEqual(await kv.allocate(key), { first: 91, count: 1 });
    });

    test('leases: keep-alive holds keys past the TTL; without it they vanish, with a delete event', async () => {
      const p = space();
      const ttl = harness.leaseTtlMs;
      const lease = await kv.grantLease(ttl);
      assert.ok(lease.ttlMs >= ttl);
      await kv.put(b(`${p}alive`), b('1'), { leaseId: lease.id });
      await kv.put(b(`${p}unbound`), b('2'));
      assert.equal((await kv.get(b(`${p}alive`)))?.leaseId, lease.id);
      const watch = collect(kv, p);
      await watch.watcher.ready;
      const t0 = Date.now();
      // Renew at 40% of the TTL until 1.5 TTLs have passed.
      while (Date.now() - t0 < lease.ttlMs * 1.5) {
        await sleep(lease.ttlMs * 0.4);
        const renewed = await kv.keepAlive(lease.id);
        assert.equal(renewed.id, lease.id);
      }
      assert.equal(s((await kv.get(b(`${p}alive`)))?.value), '1', 'kept alive past its TTL');
      const stopped = Date.now();
      await waitUntil(
        'the leased key to expire',
        lease.ttlMs + 5000,
        async () => (await kv.get(b(`${p}alive`))) === undefined,
      );
      const expiredAfterMs = Date.now() - stopped;
      assert.ok(expiredAfterMs >= lease.ttlMs * 0.5, `expired too early: ${expiredAfterMs} ms`);
      assert.equal(s((await kv.get(b(`${p}unbound`)))?.value), '2', 'unbound keys stay');
      await watch.waitFor(1);
      assert.equal(watch.events[0]?.type, 'delete');
      assert.equal(s(watch.events[0]?.key), `${p}alive`);
      await watch.watcher.close();
      await expectCode(kv.keepAlive(lease.id), KvErrorCode.LeaseNotFound);
      await expectCode(
        kv.put(b(`${p}late`), b('x'), { leaseId: lease.id }),
        KvErrorCode.LeaseNotFound,
      );
    });

    test('leases: revoke deletes the bound keys at once; revoking twice is KV_LEASE_NOT_FOUND', async () => {
      const p = space();
      const lease = await kv.grantLease(60_000);
      await kv.put(b(`${p}a`), b('1'), { leaseId: lease.id });
      await kv.put(b(`${p}b`), b('2'), { leaseId: lease.id });
      // Re-putting without the lease detaches the key from it.
      await kv.put(b(`${p}b`), b('3'));
      await kv.revokeLease(lease.id);
      assert.equal(await kv.get(b(`${p}a`)), undefined);
      assert.equal(s((await kv.get(b(`${p}b`)))?.value), '3');
      await expectCode(kv.revokeLease(lease.id), KvErrorCode.LeaseNotFound);
      await expectCode(kv.keepAlive(lease.id), KvErrorCode.LeaseNotFound);
    });

    test('watch from a revision replays history in order, whole revisions per batch', async () => {
      const p = space();
      const r1 = await kv.put(b(`${p}a`), b('1'));
      await kv.put(b('/conf-elsewhere'), b('not watched'));
      const t = await kv.txn({
        compares: [],
        success: [
          { type: 'put', key: b(`${p}b`), value: b('2') },
          { type: 'delete', key: b(`${p}a`) },
        ],
      });
      const watch = collect(kv, p, r1.revision);
      await watch.waitFor(3);
      await sleep(100);
      assert.deepEqual(
        watch.events.map((e) => [e.type, s(e.key), s(e.value), e.modRevision]),
        [
          ['put', `${p}a`, '1', r1.revision],
          ['put', `${p}b`, '2', t.revision],
          ['delete', `${p}a`, '', t.revision],
        ],
      );
      // A txn's events never straddle two batches.
      for (const batch of watch.batches) {
        const revisions = new Set(batch.events.map((e) => e.modRevision));
        assert.ok(revisions.size >= 1);
        assert.ok(batch.revision >= Math.max(...revisions));
      }
      assert.ok(watch.watcher.deliveredRevision >= t.revision);
      await watch.watcher.close();
      await watch.watcher.done;
    });

    test('watch from now sees only later writes', async () => {
      const p = space();
      await kv.put(b(`${p}before`), b('0'));
      const watch = collect(kv, p);
      await watch.watcher.ready;
      await kv.put(b(`${p}after`), b('1'));
      await watch.waitFor(1);
      await sleep(100);
      assert.deepEqual(
        watch.events.map((e) => s(e.key)),
        [`${p}after`],
      );
      await watch.watcher.close();
    });

    test('watch resumes from deliveredRevision + 1 after the watcher goes away: no loss, no repeat', async () => {
      const p = space();
      const first = collect(kv, p);
      await first.watcher.ready;
      for (let i = 0; i < 10; i++) await kv.put(b(`${p}k${i}`), b(String(i)));
      await first.waitFor(10);
      await first.watcher.close();
      const resumeFrom = first.watcher.deliveredRevision + 1;
      // Writes while nobody watches.
      for (let i = 10; i < 20; i++) await kv.put(b(`${p}k${i}`), b(String(i)));
      const second = collect(peer, p, resumeFrom);
      for (let i = 20; i < 25; i++) await kv.put(b(`${p}k${i}`), b(String(i)));
      await second.waitFor(15);
      await sleep(100);
      const all = [...first.events, ...second.events].map((e) => s(e.value));
      assert.deepEqual(
        all,
        Array.from({ length: 25 }, (_, i) => String(i)),
      );
      await second.watcher.close();
    });

    test(
      'watch rides through a dropped connection without losing or repeating events',
      {
        skip:
          harness.dropConnections === undefined ? 'this engine has no connection to drop' : false,
      },
      async () => {
        const p = space();
        const watch = collect(kv, p);
        await watch.watcher.ready;
        const total = 60;
        const writer = (async () => {
          for (let i = 0; i < total; i++) {
            await peer.put(b(`${p}k${String(i).padStart(3, '0')}`), b(String(i)));
            if (i === 20 || i === 40) harness.dropConnections?.();
            await sleep(5);
          }
        })();
        await writer;
        await watch.waitFor(total, 20_000);
        await sleep(200);
        assert.deepEqual(
          watch.events.map((e) => s(e.value)),
          Array.from({ length: total }, (_, i) => String(i)),
        );
        await watch.watcher.close();
      },
    );

    test('a handler that throws stops its watch and rejects done with that error', async () => {
      const p = space();
      const watcher = kv.watch({ prefix: b(p) }, () => {
        throw new Error('handler refuses');
      });
      await watcher.ready;
      await kv.put(b(`${p}x`), b('1'));
      await assert.rejects(watcher.done, /handler refuses/);
    });

    test('after close every call fails with KV_CLOSED', async () => {
      const own = await harness.open();
      await own.put(b(`${space()}x`), b('1'));
      await own.close();
      await expectCode(own.get(b('/x')), KvErrorCode.Closed);
      await expectCode(own.put(b('/x'), b('1')), KvErrorCode.Closed);
      await own.close();
    });
  });
}
