// Proves EtcdKv rides through the loss of the leader: a real 3-member etcd cluster, a writer running a CAS-increment loop (resolving every KV_OUTCOME_UNKNOWN by re-reading), the leader killed with SIGKILL mid-run; the key's full history (read back with a watch from the start) must hold each acknowledged increment exactly once, in order.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isShaleError } from '@shale/common';
import { EtcdTestCluster } from '@shale/testing';
import { KvErrorCode } from './errors.js';
import { EtcdKv } from './etcd-kv.js';
import { collect } from './kv-conformance.js';
import { ifUnchanged } from './txn-helpers.js';

let cluster: EtcdTestCluster | undefined;
const clients: EtcdKv[] = [];
after(async () => {
  for (const kv of clients) await kv.close();
  await cluster?.stop();
});

const KEY = Buffer.from('/fault/counter', 'latin1');

/** Value of the counter after op `n`: "n:op-n". A doubled op would show up as a repeated n. */
const counterValue = (n: number): Buffer => Buffer.from(`${n}:op-${n}`, 'latin1');

test('kill -9 the leader during a CAS-increment loop: no acknowledged increment lost or applied twice', async () => {
  cluster = await EtcdTestCluster.start(3);
  const leader = await cluster.leaderIndex();
  // The writer's preferred member is the leader, so it loses its connection too.
  const order = [leader, ...[0, 1, 2].filter((i) => i !== leader)];
  const kv = new EtcdKv({
    endpoints: order.map((i) => (cluster as EtcdTestCluster).endpoint(i)),
    deadlineMs: 3000,
  });
  clients.push(kv);
  const start = await kv.put(Buffer.from('/fault/start', 'latin1'), Buffer.from('x'));

  let acknowledged = 0;
  let unknownOutcomes = 0;
  let unavailable = 0;
  let maxStallMs = 0;
  let lastAckAt = Date.now();
  let stop = false;

  /** Applies op n exactly once: CAS from n-1, and after an unknown outcome, look before retrying. */
  const incrementOnce = async (n: number): Promise<void> => {
    for (;;) {
      let current: Awaited<ReturnType<EtcdKv['get']>>;
      try {
        current = await kv.get(KEY);
      } catch (err) {
        if (!isShaleError(err, KvErrorCode.Unavailable)) throw err;
        unavailable += 1;
        continue;
      }
      const text = current?.value.toString('latin1') ?? '0:op-0';
      if (text === counterValue(n).toString('latin1')) return; // an earlier unknown attempt landed
      assert.equal(
        text,
        counterValue(n - 1).toString('latin1'),
        `counter moved under a single writer: ${text}`,
      );
      try {
        const result = await kv.txn({
          compares: [ifUnchanged(KEY, current)],
          success: [{ type: 'put', key: KEY, value: counterValue(n) }],
        });
        if (result.succeeded) return;
        // Compares failed: a late commit of an unknown attempt; the next read will show it.
      } catch (err) {
        if (isShaleError(err, KvErrorCode.OutcomeUnknown)) unknownOutcomes += 1;
        else if (isShaleError(err, KvErrorCode.Unavailable)) unavailable += 1;
        else throw err;
      }
    }
  };

  const writer = (async () => {
    for (let n = 1; !stop; n++) {
      await incrementOnce(n);
      acknowledged = n;
      const now = Date.now();
      maxStallMs = Math.max(maxStallMs, now - lastAckAt);
      lastAckAt = now;
    }
  })();

  await sleep(1500);
  const beforeKill = acknowledged;
  assert.ok(beforeKill > 5, `the writer made progress before the kill (${beforeKill})`);
  const killedAt = Date.now();
  await cluster.kill(leader);
  // Let the writer run through the election and well past it.
  await sleep(5000);
  stop = true;
  await writer;
  const afterKill = acknowledged - beforeKill;
  console.log(
    `leader m${leader} killed after ${beforeKill} increments; ${afterKill} more after the kill; ` +
      `writes stalled at most ${maxStallMs} ms; ${unknownOutcomes} unknown outcomes, ${unavailable} unavailable, resolved by re-reading`,
  );
  assert.ok(afterKill > 5, `the writer made progress after the kill (${afterKill})`);
  assert.ok(Date.now() - killedAt < 10_000);

  // The whole history of the counter, from a watch started before the first increment.
  const history = collect(kv, '/fault/counter', start.revision);
  await history.waitFor(acknowledged, 20_000);
  await sleep(300);
  await history.watcher.close();
  const values = history.events.map((event) => event.value.toString('latin1'));
  assert.deepEqual(
    values,
    Array.from({ length: acknowledged }, (_, i) => counterValue(i + 1).toString('latin1')),
    'each acknowledged increment exactly once, in order',
  );
  assert.equal(
    (await kv.get(KEY))?.value.toString('latin1'),
    counterValue(acknowledged).toString('latin1'),
  );
});
