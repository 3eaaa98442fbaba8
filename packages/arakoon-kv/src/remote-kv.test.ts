// Proves RemoteKv keeps the KvStore contract against a KvServer over a LevelKv in this process (the shared conformance suite; the peer is a second RemoteKv; the watch rides through connections cut by a TCP relay), that two clients share one store, that a server restart on the same port and directory is survived by calls and by a watch (no loss, no repeat), and that refusing, silent and frozen servers give KV_UNAVAILABLE / KV_OUTCOME_UNKNOWN within the deadline.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isShaleError } from '@shale/common';
import { freePort, TcpRelay } from '@shale/testing';
import { KvErrorCode } from './errors.js';
import { collect, expectCode, runConformance } from './kv-conformance.js';
import { KvServer } from './kv-server.js';
import { LevelKv } from './level-kv.js';
import { RemoteKv, type RemoteKvOptions } from './remote-kv.js';

const b = (text: string): Buffer => Buffer.from(text, 'latin1');
const s = (buf: Buffer | undefined): string | undefined => buf?.toString('latin1');

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shale-remotekv-'));
  dirs.push(dir);
  return dir;
}

const clients: RemoteKv[] = [];
function client(endpoint: string, options: Partial<RemoteKvOptions> = {}): RemoteKv {
  const kv = new RemoteKv({ endpoint, ...options });
  clients.push(kv);
  return kv;
}

let level: LevelKv | undefined;
let server: KvServer | undefined;
let proxy: TcpRelay | undefined;

before(async () => {
  level = await LevelKv.open({ dir: await freshDir() });
  server = await KvServer.start({ store: level, port: 0 });
  proxy = await TcpRelay.start({ host: '127.0.0.1', port: server.port });
});
after(async () => {
  for (const kv of clients) await kv.close();
  await proxy?.close();
  await server?.close();
  await level?.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

runConformance({
  name: 'RemoteKv (a KvServer over a LevelKv)',
  // The main client goes through the proxy, so the suite can cut its connections; the
  // peer is a second client, straight to the server.
  open: async () => client((proxy as TcpRelay).address),
  openPeer: async () => client((server as KvServer).address),
  leaseTtlMs: 1000,
  dropConnections: () => proxy?.dropConnections(),
  connectionCount: () => proxy?.acceptedCount ?? 0,
});

/** Runs `fn`, expects `code`, and returns how long it took. */
async function timed(fn: () => Promise<unknown>, code: string): Promise<number> {
  const t0 = Date.now();
  await expectCode(fn(), code);
  return Date.now() - t0;
}

describe('RemoteKv: several clients, one store', () => {
  test('a second client sees the first one’s writes, leases and watch events', async () => {
    const one = client((server as KvServer).address);
    const two = client(`kv://${(server as KvServer).address}`);
    const watch = collect(two, '/shared/');
    await watch.watcher.ready;
    const written = await one.put(b('/shared/a'), b('from one'));
    const seen = await two.get(b('/shared/a'));
    assert.equal(s(seen?.value), 'from one');
    assert.equal(seen?.modRevision, written.revision);
    const lease = await one.grantLease(60_000);
    await one.put(b('/shared/leased'), b('L'), { leaseId: lease.id });
    assert.equal((await two.keepAlive(lease.id)).id, lease.id);
    await two.revokeLease(lease.id);
    assert.equal(await one.get(b('/shared/leased')), undefined);
    await watch.waitFor(3);
    assert.deepEqual(
      watch.events.map((e) => [e.type, s(e.key)]),
      [
        ['put', '/shared/a'],
        ['put', '/shared/leased'],
        ['delete', '/shared/leased'],
      ],
    );
    await watch.watcher.close();
  });

  test('the watch of the proxied client really reconnected when its connections were cut', async () => {
    const kv = client((proxy as TcpRelay).address);
    const watch = collect(kv, '/reconnect/');
    await watch.watcher.ready;
    const before = (proxy as TcpRelay).acceptedCount;
    await kv.put(b('/reconnect/0'), b('0'));
    await watch.waitFor(1);
    (proxy as TcpRelay).dropConnections();
    await client((server as KvServer).address).put(b('/reconnect/1'), b('1'));
    await watch.waitFor(2);
    assert.ok((proxy as TcpRelay).acceptedCount > before, 'a new connection was opened');
    assert.deepEqual(
      watch.events.map((e) => s(e.value)),
      ['0', '1'],
    );
    await watch.watcher.close();
  });

  test('a value the client lets through but the server’s store refuses gets the store’s code', async () => {
    const generous = client((server as KvServer).address, {
      maxValueBytes: 4 * 1024 * 1024,
      maxRequestBytes: 8 * 1024 * 1024,
    });
    await expectCode(
      generous.put(b('/big/x'), Buffer.alloc(2 * 1024 * 1024)),
      KvErrorCode.ValueTooLarge,
    );
    assert.equal(await generous.get(b('/big/x')), undefined);
  });

  test('a watch from compacted history fails with KV_COMPACTED across the wire', async () => {
    const small = await LevelKv.open({ dir: await freshDir(), historyRevisions: 10, sync: false });
    const own = await KvServer.start({ store: small, port: 0 });
    try {
      for (let i = 0; i < 1005; i++) await small.put(b(`/h/${i % 7}`), b(String(i)));
      const kv = client(own.address);
      const watcher = kv.watch({ prefix: b('/h/'), fromRevision: 2 }, () => undefined);
      await expectCode(watcher.done, KvErrorCode.Compacted);
      const recent = collect(kv, '/h/', small.currentRevision - 3);
      await recent.waitFor(4);
      await recent.watcher.close();
    } finally {
      await own.close();
      await small.close();
    }
  });
});

describe('RemoteKv: a server restart', () => {
  test('close + start on the same port over the same directory: calls succeed after it, a watch resumes', async () => {
    const dir = await freshDir();
    let store = await LevelKv.open({ dir });
    let own = await KvServer.start({ store, port: 0 });
    const port = own.port;
    try {
      const kv = client(own.address);
      const watch = collect(kv, '/restart/');
      await watch.watcher.ready;
      for (let i = 0; i < 10; i++) await kv.put(b(`/restart/${i}`), b(String(i)));
      await watch.waitFor(10);
      const t0 = Date.now();
      await own.close();
      await store.close();
      // Nothing listens: a write that cannot connect was certainly not applied. (First let
      // the client see its connection go: a write sent on it would be KV_OUTCOME_UNKNOWN.)
      await sleep(100);
      await expectCode(
        kv.put(b('/restart/lost'), b('x'), { deadlineMs: 300 }),
        KvErrorCode.Unavailable,
      );
      // History written while no server runs must reach the watch too.
      store = await LevelKv.open({ dir });
      for (let i = 10; i < 15; i++) await store.put(b(`/restart/${i}`), b(String(i)));
      own = await KvServer.start({ store, port });
      for (let i = 15; i < 20; i++) await kv.put(b(`/restart/${i}`), b(String(i)));
      console.log(
        `server restart: the first write after it was answered ${Date.now() - t0} ms after close`,
      );
      assert.equal(s((await kv.get(b('/restart/3')))?.value), '3');
      assert.equal(await kv.get(b('/restart/lost')), undefined);
      await watch.waitFor(20);
      await sleep(200);
      assert.deepEqual(
        watch.events.map((e) => s(e.value)),
        Array.from({ length: 20 }, (_, i) => String(i)),
      );
      await watch.watcher.close();
    } finally {
      await own.close();
      await store.close();
    }
  });
});

describe('RemoteKv: bad days', () => {
  test('a server that refuses connections: every call fails within the deadline with KV_UNAVAILABLE', async () => {
    const kv = client(`127.0.0.1:${await freePort()}`, { deadlineMs: 1000 });
    const readMs = await timed(() => kv.get(b('/x')), KvErrorCode.Unavailable);
    const writeMs = await timed(() => kv.put(b('/x'), b('1')), KvErrorCode.Unavailable);
    const txnMs = await timed(
      () => kv.txn({ compares: [], success: [{ type: 'put', key: b('/x'), value: b('1') }] }),
      KvErrorCode.Unavailable,
    );
    const leaseMs = await timed(() => kv.grantLease(5000), KvErrorCode.Unavailable);
    console.log(
      `refused: get ${readMs} ms, put ${writeMs} ms, txn ${txnMs} ms, grant ${leaseMs} ms (deadline 1000 ms)`,
    );
    for (const ms of [readMs, writeMs, txnMs, leaseMs]) assert.ok(ms <= 1500, `took ${ms} ms`);
  });

  test('a server that accepts TCP but never speaks: KV_UNAVAILABLE within the deadline, writes too', async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((socket) => {
      held.push(socket);
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const kv = client(`127.0.0.1:${(silent.address() as net.AddressInfo).port}`, {
        deadlineMs: 1000,
      });
      const readMs = await timed(() => kv.get(b('/x')), KvErrorCode.Unavailable);
      const writeMs = await timed(() => kv.put(b('/x'), b('1')), KvErrorCode.Unavailable);
      console.log(`silent: get ${readMs} ms, put ${writeMs} ms (deadline 1000 ms)`);
      for (const ms of [readMs, writeMs]) assert.ok(ms <= 1500, `took ${ms} ms`);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  test('a frozen server: a sent write is KV_OUTCOME_UNKNOWN, a read KV_UNAVAILABLE, both within the deadline', async () => {
    const frozen = await TcpRelay.start({ host: '127.0.0.1', port: (server as KvServer).port });
    try {
      const kv = client(frozen.address, { deadlineMs: 1000 });
      await kv.put(b('/frozen/k'), b('before'));
      frozen.freeze();
      const writeMs = await timed(
        () => kv.put(b('/frozen/k'), b('during')),
        KvErrorCode.OutcomeUnknown,
      );
      const readMs = await timed(() => kv.get(b('/frozen/k')), KvErrorCode.Unavailable);
      console.log(
        `frozen: put ${writeMs} ms (unknown), get ${readMs} ms (unavailable), deadline 1000 ms`,
      );
      for (const ms of [readMs, writeMs]) assert.ok(ms <= 1500, `took ${ms} ms`);
      frozen.thaw();
      // The caller resolves the unknown outcome by reading: either value is legal, as
      // long as the write was never reported as failed.
      let value: string | undefined;
      for (let i = 0; i < 20 && value === undefined; i++) {
        try {
          value = s((await kv.get(b('/frozen/k')))?.value);
        } catch (err) {
          if (!isShaleError(err, KvErrorCode.Unavailable)) throw err;
        }
      }
      assert.ok(value === 'before' || value === 'during', `resolved value ${value}`);
      console.log(
        `frozen: the unknown write resolved as ${value === 'during' ? 'applied' : 'not applied'}`,
      );
    } finally {
      await frozen.close();
    }
  });

  test('construction refuses a malformed endpoint and impossible options', () => {
    for (const endpoint of ['', 'localhost', 'etcd://127.0.0.1:2379', 'kv://host:port', 'a b:1']) {
      assert.throws(
        () => new RemoteKv({ endpoint }),
        (err: unknown) => isShaleError(err, KvErrorCode.BadRequest),
        endpoint,
      );
    }
    assert.throws(
      () => new RemoteKv({ endpoint: '127.0.0.1:1', deadlineMs: 0 }),
      (err: unknown) => isShaleError(err, KvErrorCode.BadRequest),
    );
    const v6 = new RemoteKv({ endpoint: 'kv://[::1]:7000' });
    assert.equal(v6.endpoint, '[::1]:7000');
    return v6.close();
  });
});
