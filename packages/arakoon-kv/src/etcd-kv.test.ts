// Proves EtcdKv keeps the KvStore contract against a real single-member etcd (the shared conformance suite, its watch riding through connections cut by a TCP relay), and that bad input and bad days get typed errors within the deadline: oversized values, unreachable or silent endpoints, a frozen (SIGSTOPped) member.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { isShaleError } from '@shale/common';
import { EtcdTestCluster, freePort, TcpRelay } from '@shale/testing';
import { KvErrorCode } from './errors.js';
import { EtcdKv } from './etcd-kv.js';
import { expectCode, runConformance } from './kv-conformance.js';

const b = (text: string): Buffer => Buffer.from(text, 'latin1');

let cluster: EtcdTestCluster | undefined;
let proxy: TcpRelay | undefined;
const clients: EtcdKv[] = [];

before(async () => {
  cluster = await EtcdTestCluster.start(1);
  const [host, port] = cluster.endpoint(0).split(':');
  proxy = await TcpRelay.start({ host: host as string, port: Number(port) });
});
after(async () => {
  for (const client of clients) await client.close();
  await proxy?.close();
  await cluster?.stop();
});

function client(endpoints: string[], deadlineMs = 5000): EtcdKv {
  const kv = new EtcdKv({ endpoints, deadlineMs });
  clients.push(kv);
  return kv;
}

runConformance({
  name: 'EtcdKv (one real etcd member)',
  // The main client goes through the proxy, so the suite can cut its connections.
  open: async () => client([(proxy as TcpRelay).address]),
  openPeer: async () => client([(cluster as EtcdTestCluster).endpoint(0)]),
  leaseTtlMs: 2000,
  dropConnections: () => proxy?.dropConnections(),
  connectionCount: () => proxy?.acceptedCount ?? 0,
});

/** Runs `fn`, expects `code`, and returns how long it took. */
async function timed(fn: () => Promise<unknown>, code: string): Promise<number> {
  const t0 = Date.now();
  await expectCode(fn(), code);
  return Date.now() - t0;
}

describe('EtcdKv bad input and bad days', () => {
  test('a value over the client limit is KV_VALUE_TOO_LARGE before anything is sent', async () => {
    const kv = client([(cluster as EtcdTestCluster).endpoint(0)]);
    await expectCode(kv.put(b('/big/a'), Buffer.alloc(1024 * 1024 + 1)), KvErrorCode.ValueTooLarge);
    assert.equal(await kv.get(b('/big/a')), undefined);
  });

  test('a value etcd itself refuses (past --max-request-bytes) is KV_VALUE_TOO_LARGE, not a transport error', async () => {
    // A client configured with limits above the server's: etcd's own refusal must map too.
    const kv = new EtcdKv({
      endpoints: [(cluster as EtcdTestCluster).endpoint(0)],
      maxValueBytes: 16 * 1024 * 1024,
      maxRequestBytes: 16 * 1024 * 1024,
    });
    clients.push(kv);
    // Past 1.5 MiB: "etcdserver: request is too large".
    await expectCode(kv.put(b('/big/b'), Buffer.alloc(1600 * 1024)), KvErrorCode.ValueTooLarge);
    // Past 2 MiB (1.5 MiB + gRPC overhead): refused by etcd's gRPC server.
    await expectCode(kv.put(b('/big/c'), Buffer.alloc(3 * 1024 * 1024)), KvErrorCode.ValueTooLarge);
    assert.equal(await kv.get(b('/big/b')), undefined);
    // The connection is still good afterwards.
    await kv.put(b('/big/d'), b('small'));
  });

  test('endpoints that refuse connections fail within the deadline with KV_UNAVAILABLE', async () => {
    const kv = client([`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`], 1500);
    const readMs = await timed(() => kv.get(b('/x')), KvErrorCode.Unavailable);
    const writeMs = await timed(() => kv.put(b('/x'), b('1')), KvErrorCode.Unavailable);
    const txnMs = await timed(
      () => kv.txn({ compares: [], success: [{ type: 'put', key: b('/x'), value: b('1') }] }),
      KvErrorCode.Unavailable,
    );
    const leaseMs = await timed(() => kv.grantLease(5000), KvErrorCode.Unavailable);
    console.log(
      `refused endpoints: get ${readMs} ms, put ${writeMs} ms, txn ${txnMs} ms, grant ${leaseMs} ms (deadline 1500 ms)`,
    );
    for (const ms of [readMs, writeMs, txnMs, leaseMs]) assert.ok(ms <= 2000, `took ${ms} ms`);
  });

  test('an endpoint that accepts TCP but never speaks fails within the deadline with KV_UNAVAILABLE', async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((socket) => {
      held.push(socket);
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const kv = client([`127.0.0.1:${(silent.address() as net.AddressInfo).port}`], 1200);
      const readMs = await timed(() => kv.get(b('/x')), KvErrorCode.Unavailable);
      const writeMs = await timed(() => kv.put(b('/x'), b('1')), KvErrorCode.Unavailable);
      console.log(`silent endpoint: get ${readMs} ms, put ${writeMs} ms (deadline 1200 ms)`);
      for (const ms of [readMs, writeMs]) assert.ok(ms <= 1700, `took ${ms} ms`);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  test('a frozen member: reads are KV_UNAVAILABLE, a sent write is KV_OUTCOME_UNKNOWN, both within the deadline', async () => {
    const own = await EtcdTestCluster.start(1);
    try {
      const kv = new EtcdKv({ endpoints: [own.endpoint(0)], deadlineMs: 1500 });
      clients.push(kv);
      await kv.put(b('/frozen/k'), b('before'));
      own.signal(0, 'SIGSTOP');
      try {
        const writeMs = await timed(
          () => kv.put(b('/frozen/k'), b('during')),
          KvErrorCode.OutcomeUnknown,
        );
        const readMs = await timed(() => kv.get(b('/frozen/k')), KvErrorCode.Unavailable);
        console.log(
          `frozen member: put ${writeMs} ms (unknown), get ${readMs} ms (unavailable), deadline 1500 ms`,
        );
        for (const ms of [readMs, writeMs]) assert.ok(ms <= 2500, `took ${ms} ms`);
      } finally {
        own.signal(0, 'SIGCONT');
      }
      // The caller resolves the unknown outcome by reading once the member is back. The
      // write may or may not land (it sat in the frozen member's socket buffer); either value
      // is legal. What matters is that it was never reported as failed.
      let value: string | undefined;
      for (let i = 0; i < 50 && value === undefined; i++) {
        try {
          value = (await kv.get(b('/frozen/k')))?.value.toString('latin1');
        } catch (err) {
          if (!isShaleError(err, KvErrorCode.Unavailable)) throw err;
        }
      }
      assert.ok(value === 'before' || value === 'during', `resolved value ${value}`);
      console.log(
        `frozen member: the unknown write resolved as ${value === 'during' ? 'applied' : 'not applied'}`,
      );
    } finally {
      await own.stop();
    }
  });

  test('construction refuses an empty endpoint list and half credentials', () => {
    assert.throws(
      () => new EtcdKv({ endpoints: [] }),
      (err: unknown) => isShaleError(err, KvErrorCode.BadRequest),
    );
    assert.throws(
      () => new EtcdKv({ endpoints: ['127.0.0.1:1'], user: 'root' }),
      (err: unknown) => isShaleError(err, KvErrorCode.BadRequest),
    );
  });
});
