// Proves the KvServer's side of the wire, with a RemoteKv client and an instrumented store: every KvStore error code arrives unchanged (a stub throws each), a slow watch client holds the store watcher back instead of buffering (grpc write() false -> drain), a closed or vanished client closes its store watcher, big watch batches are split and delivered whole, big range pages are cut with a continuation, and close() ends open watches at once.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { isShaleError } from '@shale/common';
import { TcpRelay } from '@shale/testing';
import { KvErrorCode, kvError } from './errors.js';
import { collect, expectCode, waitUntil } from './kv-conformance.js';
import { KvServer } from './kv-server.js';
import type {
  Bytes,
  CallOptions,
  DeleteResult,
  KeyRange,
  KeyValue,
  KvStore,
  Lease,
  LeaseId,
  PutOptions,
  RangeOptions,
  RangePage,
  SequenceRange,
  Txn,
  TxnResult,
  Watcher,
  WatchHandler,
  WatchOptions,
  WriteResult,
} from './kv-store.js';
import { LevelKv } from './level-kv.js';
import { RemoteKv } from './remote-kv.js';

const b = (text: string): Buffer => Buffer.from(text, 'latin1');
const s = (buf: Buffer | undefined): string | undefined => buf?.toString('latin1');

/** A store that counts its open watchers and what it handed out, and can fail every call. */
class InstrumentedStore implements KvStore {
  openWatchers = 0;
  /** The revision of the last batch handed to a watch handler (the server's). */
  handedRevision = 0;
  /** Thrown by every call but watch and close while set. */
  failure: unknown;

  constructor(readonly inner: KvStore) {}

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }
  async get(key: Bytes, options?: CallOptions): Promise<KeyValue | undefined> {
    this.check();
    return this.inner.get(key, options);
  }
  async getMany(keys: readonly Bytes[], options?: CallOptions): Promise<(KeyValue | undefined)[]> {
    this.check();
    return this.inner.getMany(keys, options);
  }
  async put(key: Bytes, value: Bytes, options?: PutOptions): Promise<WriteResult> {
    this.check();
    return this.inner.put(key, value, options);
  }
  async delete(key: Bytes, options?: CallOptions): Promise<DeleteResult> {
    this.check();
    return this.inner.delete(key, options);
  }
  async range(range: KeyRange, options?: RangeOptions): Promise<RangePage> {
    this.check();
    return this.inner.range(range, options);
  }
  async txn(txn: Txn, options?: CallOptions): Promise<TxnResult> {
    this.check();
    return this.inner.txn(txn, options);
  }
  async allocate(key: Bytes, count?: number, options?: CallOptions): Promise<SequenceRange> {
    this.check();
    return this.inner.allocate(key, count, options);
  }
  async grantLease(ttlMs: number, options?: CallOptions): Promise<Lease> {
    this.check();
    return this.inner.grantLease(ttlMs, options);
  }
  async keepAlive(leaseId: LeaseId, options?: CallOptions): Promise<Lease> {
    this.check();
    return this.inner.keepAlive(leaseId, options);
  }
  async revokeLease(leaseId: LeaseId, options?: CallOptions): Promise<void> {
    this.check();
    return this.inner.revokeLease(leaseId, options);
  }
  watch(options: WatchOptions, handler: WatchHandler): Watcher {
    const watcher = this.inner.watch(options, async (batch) => {
      this.handedRevision = batch.revision;
      await handler(batch);
    });
    this.openWatchers++;
    watcher.done.then(
      () => {
        this.openWatchers--;
      },
      () => {
        this.openWatchers--;
      },
    );
    return watcher;
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

/** A LevelKv (no fsync: these tests are about the wire) behind an instrumented store and a server. */
async function serve(): Promise<{ level: LevelKv; store: InstrumentedStore; server: KvServer }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shale-kvserver-'));
  const level = await LevelKv.open({ dir, sync: false });
  const store = new InstrumentedStore(level);
  const server = await KvServer.start({ store, port: 0 });
  cleanup.push(async () => {
    await server.close();
    await level.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { level, store, server };
}

function client(endpoint: string, deadlineMs?: number): RemoteKv {
  const kv = new RemoteKv(deadlineMs === undefined ? { endpoint } : { endpoint, deadlineMs });
  cleanup.push(() => kv.close());
  return kv;
}

describe('KvServer', () => {
  test('every KvStore error code the store throws arrives with the same code and message', async () => {
    const { store, server } = await serve();
    const kv = client(server.address, 400);
    for (const code of Object.values(KvErrorCode)) {
      store.failure = kvError(code, `the store says ${code}`);
      if (code === KvErrorCode.Closed) {
        // The server's store is closed (the server is stopping): nothing was done, so the
        // client keeps trying, writes included, and reports KV_UNAVAILABLE at its deadline.
        await expectCode(kv.get(b('/e/k')), KvErrorCode.Unavailable);
        await expectCode(kv.put(b('/e/k'), b('v')), KvErrorCode.Unavailable);
        continue;
      }
      for (const call of [
        () => kv.get(b('/e/k')),
        () => kv.put(b('/e/k'), b('v')),
        () => kv.txn({ compares: [], success: [{ type: 'delete', key: b('/e/k') }] }),
        () => kv.revokeLease('12345' as LeaseId),
      ]) {
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(isShaleError(err), String(err));
          assert.equal(err.code, code);
          assert.equal(err.message, `the store says ${code}`);
          return true;
        });
      }
    }
    store.failure = kvError(KvErrorCode.LeaseNotFound, 'gone');
    await assert.rejects(kv.keepAlive('7' as LeaseId), (err: unknown) => {
      assert.ok(isShaleError(err, KvErrorCode.LeaseNotFound));
      const cause = err.cause as { code?: unknown };
      assert.equal(cause.code, GrpcStatus.NOT_FOUND, 'the gRPC status follows the table');
      return true;
    });
    // Anything else the store throws is a bug behind the server: KV_INTERNAL, message kept.
    store.failure = new Error('boom');
    await assert.rejects(kv.get(b('/e/k')), (err: unknown) => {
      assert.ok(isShaleError(err, KvErrorCode.Internal));
      assert.match(err.message, /boom/);
      return true;
    });
    store.failure = undefined;
    assert.equal(await kv.get(b('/e/k')), undefined);
    assert.ok(server.counters.callErrorsTotal > 0);
  });

  test('a slow watch client holds the store watcher back (drain), then gets everything in order', async () => {
    const { level, store, server } = await serve();
    const kv = client(server.address);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const seen: string[] = [];
    const watcher = kv.watch({ prefix: b('/bp/') }, async (batch) => {
      for (const event of batch.events) seen.push(s(event.key) as string);
      await gate;
    });
    await watcher.ready;
    const total = 2000;
    const value = Buffer.alloc(32 * 1024, 0x61);
    const keys = Array.from({ length: total }, (_, i) => `/bp/${String(i).padStart(5, '0')}`);
    for (const key of keys) await level.put(b(key), value);
    const last = level.currentRevision;
    await sleep(500);
    const heldBack = last - store.handedRevision;
    console.log(
      `slow client: the store handed out revision ${store.handedRevision} of ${last}: ${heldBack} revisions (${(heldBack * 32) / 1024} MiB) stayed in the store; ${server.counters.watchDrainWaits} drain waits`,
    );
    assert.ok(server.counters.watchDrainWaits > 0, 'the server waited for drain');
    assert.ok(heldBack >= total / 2, `only ${heldBack} revisions held back`);
    release();
    await waitUntil('every event delivered', 20_000, () => seen.length >= total);
    assert.deepEqual(seen, keys);
    await watcher.close();
  });

  test('a client that vanishes or closes its watch closes the store watcher behind it', async () => {
    const { level, store, server } = await serve();
    const proxy = await TcpRelay.start({ host: '127.0.0.1', port: server.port });
    cleanup.push(() => proxy.close());
    const kv = client(proxy.address);
    const watch = collect(kv, '/gone/');
    await watch.watcher.ready;
    assert.equal(store.openWatchers, 1);
    assert.equal(server.openWatches, 1);
    // The connection vanishes: the server's session is cancelled, the client resumes on a new one.
    proxy.dropConnections();
    await level.put(b('/gone/a'), b('1'));
    await watch.waitFor(1);
    await waitUntil(
      'the old store watcher closed and one resumed watch open',
      5000,
      () => server.counters.watchesOpened === 2 && store.openWatchers === 1,
    );
    assert.equal(server.openWatches, 1);
    await watch.watcher.close();
    await waitUntil(
      'no store watcher left',
      5000,
      () => store.openWatchers === 0 && server.openWatches === 0,
    );
  });

  test('a store batch past the message target is split over messages and delivered whole', async () => {
    const { level, server } = await serve();
    const first = (await level.put(b('/split/00'), Buffer.alloc(512 * 1024, 0))).revision;
    for (let i = 1; i < 20; i++) {
      await level.put(b(`/split/${String(i).padStart(2, '0')}`), Buffer.alloc(512 * 1024, i));
    }
    const sentBefore = server.counters.watchMessagesSent;
    const kv = client(server.address);
    const watch = collect(kv, '/split/', first);
    await watch.waitFor(20);
    const messages = server.counters.watchMessagesSent - sentBefore - 1; // minus "created"
    console.log(`split: ${watch.batches.length} batches in ${messages} messages`);
    assert.ok(messages > watch.batches.length, 'some batch took several messages');
    assert.deepEqual(
      watch.events.map((e) => e.value[0]),
      Array.from({ length: 20 }, (_, i) => i),
    );
    for (const batch of watch.batches) {
      assert.equal(batch.revision, Math.max(...batch.events.map((e) => e.modRevision)));
    }
    await watch.watcher.close();
  });

  test('a range page past the reply target is cut with a continuation; paging sees every key once', async () => {
    const { level, server } = await serve();
    const names = Array.from({ length: 40 }, (_, i) => `/big/${String(i).padStart(2, '0')}`);
    for (const name of names) await level.put(b(name), Buffer.alloc(1000 * 1024, 0x62));
    const kv = client(server.address);
    const seen: string[] = [];
    let continuation: Buffer | undefined;
    let pages = 0;
    do {
      const page = await kv.range(
        { prefix: b('/big/') },
        continuation === undefined ? {} : { continuation },
      );
      pages++;
      assert.ok(page.items.length < names.length, 'the first pages are cut short');
      seen.push(...page.items.map((item) => s(item.key) as string));
      continuation = page.continuation;
    } while (continuation !== undefined && pages < 10);
    assert.ok(pages >= 3, `${pages} pages`);
    assert.deepEqual(seen, names);
  });

  test('close() ends open watches at once; the client keeps trying until it is closed', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'shale-kvserver-'));
    const level = await LevelKv.open({ dir, sync: false });
    try {
      const server = await KvServer.start({ store: level, port: 0 });
      const kv = client(server.address);
      const watch = collect(kv, '/closing/');
      await watch.watcher.ready;
      const t0 = Date.now();
      await server.close();
      const closeMs = Date.now() - t0;
      console.log(`close with an open watch: ${closeMs} ms`);
      assert.ok(closeMs < 1000, `close took ${closeMs} ms`);
      let settled = false;
      watch.watcher.done.then(
        () => {
          settled = true;
        },
        () => {
          settled = true;
        },
      );
      await sleep(300);
      assert.equal(settled, false, 'a stopped server is not a failed watch');
      await kv.close();
      await watch.watcher.done;
    } finally {
      await level.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a port in use is KV_LISTEN_FAILED', async () => {
    const { level, server } = await serve();
    await expectCode(KvServer.start({ store: level, port: server.port }), KvErrorCode.ListenFailed);
  });
});
