// Proves the operation list's state machine and bounds with a fake clock: running -> succeeded/failed with the error's code, newest first, at most keptMax kept (oldest finished evicted, running never), and API_BUSY past runningMax.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isShaleError, ShaleError } from '@shale/common';
import { OperationStore } from './operations.js';

function gate(): { promise: Promise<void>; open: () => void } {
  let open: () => void = () => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test('an operation runs, then succeeds with its result or fails with its code', async () => {
  let nowMs = 1_000;
  const finished: string[] = [];
  const store = new OperationStore({
    now: () => nowMs,
    onFinished: (op) => finished.push(op.state),
  });
  const g = gate();
  const ok = store.start('vdisk.scrub', 'd', async () => {
    await g.promise;
    return {
      scosExamined: 1,
      scosRewritten: 0,
      clustersMoved: 0,
      scosCreated: 0,
      backendBytesBefore: 10,
      backendBytesAfter: 10,
      aborted: false,
    };
  });
  assert.equal(ok.state, 'running');
  assert.equal(ok.createdAtMs, 1_000);
  assert.match(ok.id, /^[0-9a-f]{32}$/);
  assert.equal(store.runningCount, 1);
  nowMs = 2_000;
  g.open();
  await settle();
  const done = store.get(ok.id);
  assert.equal(done.state, 'succeeded');
  assert.equal(done.finishedAtMs, 2_000);
  assert.equal((done.result as { scosExamined: number }).scosExamined, 1);

  const failed = store.start('vdisk.sync', 'd', async () => {
    throw new ShaleError('VD_BACKEND_ERROR', 'proxy down');
  });
  const crashed = store.start('vdisk.delete', 'd', async () => {
    throw new TypeError('a bug');
  });
  await settle();
  assert.deepEqual(store.get(failed.id).error, { code: 'VD_BACKEND_ERROR', message: 'proxy down' });
  assert.deepEqual(store.get(crashed.id).error, {
    code: 'API_INTERNAL',
    message: 'internal error; see the API log',
  });
  assert.deepEqual(
    store.list().map((op) => op.kind),
    ['vdisk.delete', 'vdisk.sync', 'vdisk.scrub'],
    'newest first',
  );
  assert.deepEqual(finished, ['succeeded', 'failed', 'failed']);
  assert.equal(store.runningCount, 0);
  assert.throws(
    () => store.get('0'.repeat(32)),
    (err: unknown) => isShaleError(err, 'API_OPERATION_NOT_FOUND'),
  );
});

test('bounded: the oldest finished operations are evicted, running ones never; API_BUSY past runningMax', async () => {
  const store = new OperationStore({ keptMax: 5, runningMax: 2 });
  const held = gate();
  const first = store.start('vdisk.sync', 'a', () => held.promise.then(() => undefined));
  for (let i = 0; i < 10; i++) {
    store.start('vdisk.sync', `n${i}`, async () => undefined);
    await settle();
  }
  const kept = store.list();
  assert.equal(kept.length, 5);
  assert.ok(
    kept.some((op) => op.id === first.id),
    'the running operation is kept',
  );
  assert.deepEqual(
    kept.map((op) => op.target),
    ['n9', 'n8', 'n7', 'n6', 'a'],
  );
  const second = store.start('vdisk.sync', 'b', () => held.promise.then(() => undefined));
  assert.throws(
    () => store.start('vdisk.sync', 'c', async () => undefined),
    (err: unknown) => isShaleError(err, 'API_BUSY'),
  );
  assert.throws(
    () => store.checkCapacity(),
    (err: unknown) => isShaleError(err, 'API_BUSY'),
  );
  held.open();
  await store.drain(1_000);
  assert.equal(store.get(first.id).state, 'succeeded');
  assert.equal(store.get(second.id).state, 'succeeded');
  store.start('vdisk.sync', 'c', async () => undefined);
  await settle();
  assert.equal(store.list().length, 5);
});
