// Proves `shale kv serve` as the daemons of one machine meet it, with two RemoteKv clients in this process: they share the store (writes seen, one CAS winner per round, a watch), a SIGKILL mid-writes loses no acknowledged put and applies no put reported KV_UNAVAILABLE once the server is restarted on the same directory and port, clients and watch carry on across the restart (no event lost or repeated), a second server on the directory is refused with KV_DIR_LOCKED, and SIGTERM stops it with exit code 0.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ifUnchanged, KvErrorCode, RemoteKv, type WatchEvent } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { freePort } from '@shale/testing';
import { runShale, type ShaleProcess, startShale } from './support/shale-process.js';

const b = (text: string): Buffer => Buffer.from(text, 'latin1');
const s = (buf: Buffer | undefined): string | undefined => buf?.toString('latin1');

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

function serve(dir: string, port: number): Promise<ShaleProcess> {
  return startShale(['kv', 'serve', '--dir', dir, '--port', String(port), '--metrics-port', '0']);
}

test('shale kv serve: two clients share it; SIGKILL mid-writes loses no acknowledged put', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-kv-serve-'));
  cleanup.push(() => fs.rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  let server = await serve(dir, port);
  cleanup.push(() => server.kill9());
  assert.equal(server.ready.service, 'kv');
  assert.equal(server.port, port);
  assert.equal(server.ready.address, `127.0.0.1:${port}`);

  const one = new RemoteKv({ endpoint: `kv://127.0.0.1:${port}` });
  const two = new RemoteKv({ endpoint: `127.0.0.1:${port}` });
  cleanup.push(() => one.close());
  cleanup.push(() => two.close());

  // Two clients, one store.
  await one.put(b('/shared/x'), b('from one'));
  assert.equal(s((await two.get(b('/shared/x')))?.value), 'from one');
  const key = b('/shared/owner');
  for (let round = 1; round <= 10; round++) {
    const [seenOne, seenTwo] = await Promise.all([one.get(key), two.get(key)]);
    const [a, c] = await Promise.all([
      one.txn({
        compares: [ifUnchanged(key, seenOne)],
        success: [{ type: 'put', key, value: b(`one:${round}`) }],
      }),
      two.txn({
        compares: [ifUnchanged(key, seenTwo)],
        success: [{ type: 'put', key, value: b(`two:${round}`) }],
      }),
    ]);
    assert.equal(Number(a.succeeded) + Number(c.succeeded), 1, `round ${round}: one winner`);
  }

  // A watch on the second client, writers on both, and a SIGKILL in the middle.
  const events: WatchEvent[] = [];
  const watcher = two.watch({ prefix: b('/acked/') }, (batch) => {
    events.push(...batch.events);
  });
  await watcher.ready;
  const acked = new Map<string, string>();
  const notApplied = new Set<string>();
  const unknown = new Set<string>();
  let stop = false;
  const writer = async (kv: RemoteKv, name: string): Promise<void> => {
    for (let n = 0; !stop; n++) {
      const k = `/acked/${name}/${String(n).padStart(6, '0')}`;
      try {
        await kv.put(b(k), b(`${name}-${n}`), { deadlineMs: 2000 });
        acked.set(k, `${name}-${n}`);
      } catch (err) {
        if (isShaleError(err, KvErrorCode.Unavailable)) notApplied.add(k);
        else if (isShaleError(err, KvErrorCode.OutcomeUnknown)) unknown.add(k);
        else throw err;
      }
    }
  };
  const writers = Promise.all([writer(one, 'one'), writer(two, 'two')]);
  const waitAcked = async (count: number): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (acked.size < count) {
      assert.ok(Date.now() < deadline, `only ${acked.size} of ${count} puts acknowledged`);
      await sleep(10);
    }
  };
  await waitAcked(150);
  await server.kill9();
  const ackedAtKill = acked.size;
  // While nothing listens, a put that cannot connect within its deadline is KV_UNAVAILABLE
  // and must never show up later. (First let the client see its connection close: a put
  // sent on a connection about to report its loss would rightly be KV_OUTCOME_UNKNOWN.)
  await sleep(100);
  for (let i = 0; i < 3; i++) {
    const k = `/acked/down/${i}`;
    await assert.rejects(one.put(b(k), b('x'), { deadlineMs: 100 }), (err: unknown) =>
      isShaleError(err, KvErrorCode.Unavailable),
    );
    notApplied.add(k);
  }
  const t0 = Date.now();
  server = await serve(dir, port);
  const restartMs = Date.now() - t0;
  await waitAcked(ackedAtKill + 150);
  stop = true;
  await writers;
  console.log(
    `kv serve: ${acked.size} puts acknowledged (${ackedAtKill} before SIGKILL), ${unknown.size} unknown, ${notApplied.size} unavailable; restart took ${restartMs} ms`,
  );

  // Every acknowledged put is there with its value; none reported KV_UNAVAILABLE is.
  const present = new Map<string, string>();
  let continuation: Buffer | undefined;
  do {
    const page = await one.range(
      { prefix: b('/acked/') },
      continuation === undefined ? {} : { continuation },
    );
    for (const item of page.items) present.set(s(item.key) as string, s(item.value) as string);
    continuation = page.continuation;
  } while (continuation !== undefined);
  for (const [k, value] of acked) assert.equal(present.get(k), value, `acknowledged ${k}`);
  for (const k of notApplied) assert.ok(!present.has(k), `${k} was KV_UNAVAILABLE yet applied`);
  for (const k of present.keys()) assert.ok(acked.has(k) || unknown.has(k), `stray key ${k}`);

  // The watch rode through the kill and the restart: every applied put once, in order.
  const deadline = Date.now() + 10_000;
  while (events.length < present.size && Date.now() < deadline) await sleep(20);
  await sleep(100);
  const watched = events.map((e) => s(e.key) as string);
  assert.equal(new Set(watched).size, watched.length, 'no event repeated');
  assert.deepEqual(new Set(watched), new Set(present.keys()), 'no event lost');
  for (let i = 1; i < events.length; i++) {
    assert.ok(
      (events[i]?.modRevision ?? 0) > (events[i - 1]?.modRevision ?? 0),
      'events in revision order',
    );
  }
  await watcher.close();

  // The restarted server counts what it served.
  const metrics = await (
    await fetch(`http://127.0.0.1:${server.ready.metricsPort}/metrics`)
  ).text();
  const served = Number(/^shale_kv_calls_total (\d+)$/m.exec(metrics)?.[1] ?? '0');
  assert.ok(served >= 150, `shale_kv_calls_total ${served}`);

  // One server per directory.
  const second = await runShale(['kv', 'serve', '--dir', dir, '--port', '0']);
  assert.equal(second.code, 1, second.stderr);
  assert.match(second.stderr, /KV_DIR_LOCKED/);

  // SIGTERM: a clean stop; the clients see a closed server as unavailable, not as lost writes.
  assert.equal(await server.stop(), 0, server.stderr());
  await assert.rejects(one.put(b('/after/stop'), b('x'), { deadlineMs: 300 }), (err: unknown) =>
    isShaleError(err, KvErrorCode.Unavailable),
  );
});

test('shale kv serve refuses bad options with exit code 2', async () => {
  const missing = await runShale(['kv', 'serve', '--port', '0']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--dir is required/);
  const port = await runShale(['kv', 'serve', '--dir', '/tmp/x', '--port', 'http']);
  assert.equal(port.code, 2);
  assert.match(port.stderr, /--port must be a port number/);
});
