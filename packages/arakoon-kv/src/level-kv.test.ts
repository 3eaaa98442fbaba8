// Proves LevelKv keeps the KvStore contract (the shared conformance suite) plus what only a local engine must: the directory lock against a second process, durability across reopen, lease expiry on the monotonic clock and history compaction.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { KvErrorCode } from './errors.js';
import { collect, expectCode, runConformance, waitUntil } from './kv-conformance.js';
import { LevelKv, type MonotonicClock } from './level-kv.js';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shale-levelkv-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

let last: LevelKv | undefined;
runConformance({
  name: 'LevelKv',
  open: async () => {
    last = await LevelKv.open({ dir: await freshDir() });
    return last;
  },
  // One process, one instance: the "peer" shares it, as two callers in one process would.
  openPeer: async () => {
    assert.ok(last !== undefined);
    return last;
  },
  leaseTtlMs: 1000,
});

const b = (text: string): Buffer => Buffer.from(text, 'latin1');

describe('LevelKv only', () => {
  test('a second process opening the same directory is refused with KV_DIR_LOCKED', async () => {
    const dir = await freshDir();
    const kv = await LevelKv.open({ dir });
    try {
      const entry = fileURLToPath(new URL('./index.js', import.meta.url));
      const script = `
        const { LevelKv } = await import(${JSON.stringify(entry)});
        try { await LevelKv.open({ dir: ${JSON.stringify(dir)} }); console.log('OPENED'); }
        catch (err) { console.log(err.code + ' ' + err.message); }`;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        encoding: 'utf8',
      });
      assert.match(
        child.stdout,
        /^KV_DIR_LOCKED .*in use by another process/,
        child.stdout + child.stderr,
      );
      // And in the same process too.
      await expectCode(LevelKv.open({ dir }), KvErrorCode.DirLocked);
    } finally {
      await kv.close();
    }
    // Once closed, the directory opens again.
    const again = await LevelKv.open({ dir });
    await again.close();
  });

  test('data, revisions, counters and leases survive close and reopen', async () => {
    const dir = await freshDir();
    const kv = await LevelKv.open({ dir });
    const lease = await kv.grantLease(60_000);
    await kv.put(b('/p/leased'), b('L'), { leaseId: lease.id });
    const written = await kv.put(b('/p/a'), b('A'));
    await kv.allocate(b('/p/seq'), 5);
    await kv.close();
    const reopened = await LevelKv.open({ dir });
    try {
      assert.equal((await reopened.get(b('/p/a')))?.value.toString(), 'A');
      assert.equal((await reopened.get(b('/p/a')))?.modRevision, written.revision);
      assert.ok((await reopened.put(b('/p/b'), b('B'))).revision > written.revision + 1);
      assert.deepEqual(await reopened.allocate(b('/p/seq'), 1), { first: 6, count: 1 });
      await reopened.keepAlive(lease.id);
      const other = await reopened.grantLease(60_000);
      assert.notEqual(other.id, lease.id, 'lease ids are not reused');
      await reopened.revokeLease(lease.id);
      assert.equal(await reopened.get(b('/p/leased')), undefined);
    } finally {
      await reopened.close();
    }
  });

  test('leases expire on the injected monotonic clock, not the wall clock', async () => {
    let nowMs = 0;
    const clock: MonotonicClock = { nowMs: () => nowMs };
    const kv = await LevelKv.open({ dir: await freshDir(), clock });
    try {
      const lease = await kv.grantLease(10_000);
      await kv.put(b('/c/k'), b('v'), { leaseId: lease.id });
      nowMs = 9_000;
      await kv.keepAlive(lease.id);
      nowMs = 18_000;
      await sleep(300);
      assert.ok(await kv.get(b('/c/k')), 'renewed at 9 s: alive at 18 s');
      nowMs = 19_001;
      await waitUntil('expiry at 19 s', 2000, async () => (await kv.get(b('/c/k'))) === undefined);
    } finally {
      await kv.close();
    }
  });

  test('a watch from before the kept history fails with KV_COMPACTED', async () => {
    const kv = await LevelKv.open({ dir: await freshDir(), historyRevisions: 10, sync: false });
    try {
      for (let i = 0; i < 1005; i++) await kv.put(b(`/h/${i % 7}`), b(String(i)));
      const watcher = kv.watch({ prefix: b('/h/'), fromRevision: 2 }, () => undefined);
      await expectCode(watcher.done, KvErrorCode.Compacted);
      // Within the kept history it works.
      const recent = collect(kv, '/h/', kv.currentRevision - 3);
      await recent.waitFor(4);
      await recent.watcher.close();
    } finally {
      await kv.close();
    }
  });
});
