// Proves, with shale up's real processes driven through the REST API and NBD as the report did it, that a clone racing a DELETE or a rollback of its parent (delays 0..1 s) never both succeed and every clone reads its snapshot's data; that an unsynced write reaches the backend within the (shortened) data-at-risk bound, with the API's figures before and after; and that after every process is SIGKILLed and the write buffer deleted, shale up starts again with every vDisk open and every byte read back.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShaleError } from '@shale/common';
import type { ApiClient } from '@shale/framework-api';
import { freePort } from '@shale/testing';
import { mustRun, runCommand } from './support/commands.js';
import { SHALE_BIN } from './support/shale-process.js';
import { killUp, startUp, type Up, upApi } from './support/shale-up.js';

const MiB = 1024 * 1024;
/** The report: both succeeded at 50-300 ms, a clean refusal at 600 ms. */
const DELAYS_MS = [0, 50, 150, 300, 600, 1000];
/** The data-at-risk bound of this cluster (production: 30 s). */
const BOUND_MS = 4000;
const CLEAN_REFUSALS = new Set(['VD_HAS_CLONES', 'VD_NOT_FOUND', 'VD_BUSY']);

type Outcome = { ok: true } | { ok: false; code: string; message: string };

async function outcome(work: () => Promise<unknown>): Promise<Outcome> {
  try {
    await work();
    return { ok: true };
  } catch (err) {
    if (!(err instanceof ShaleError)) throw err;
    return { ok: false, code: err.code, message: err.message };
  }
}

describe('races, data at risk and a lost write buffer under shale up', { timeout: 900_000 }, () => {
  let dataDir: string;
  let nbdPort: number;
  let apiPort: number;
  let up: Up | undefined;
  let api: ApiClient;
  /** vDisk -> [offset, length, pattern] it must read. */
  const expected = new Map<string, [number, number, number][]>();

  const nbd = (name: string) => `nbd://127.0.0.1:${nbdPort}/${name}`;
  const qemuIo = (name: string, commands: readonly string[], extra: readonly string[] = []) =>
    mustRun('qemu-io', ['-f', 'raw', ...extra, ...commands.flatMap((c) => ['-c', c]), nbd(name)], {
      package: 'qemu-utils',
      timeoutMs: 120_000,
    });
  const start = async () => {
    up = await startUp(dataDir, nbdPort, apiPort, ['--data-at-risk-ms', String(BOUND_MS)]);
    api = await upApi(dataDir, apiPort);
  };
  const expect = (name: string, offset: number, length: number, pattern: number) => {
    const list = expected.get(name) ?? [];
    list.push([offset, length, pattern]);
    expected.set(name, list);
  };
  const readBack = async (name: string) => {
    const reads = (expected.get(name) ?? []).map(([o, l, p]) => `read -P ${p} ${o} ${l}`);
    const result = await qemuIo(name, reads, ['-r']);
    assert.doesNotMatch(result.stdout, /Pattern verification failed/, `${name}: ${result.stdout}`);
  };
  const parentWith = async (name: string, patterns: readonly number[]) => {
    await api.createVdisk({ name, sizeBytes: 16 * MiB });
    for (const [i, pattern] of patterns.entries()) {
      await qemuIo(name, [`write -P ${pattern} 0 4M`, 'flush']);
      await api.createSnapshot(name, `s${i}`);
    }
    await qemuIo(name, ['write -P 7 0 1M', 'flush']); // the head differs from every snapshot
  };
  const clone = async (parent: string, name: string, snapshot: string) =>
    api.waitForOperation((await api.cloneVdisk(parent, { name, snapshot })).id);

  before(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-races-'));
    nbdPort = await freePort();
    apiPort = await freePort();
    await start();
  });

  after(async () => {
    if (up !== undefined) await killUp(up, dataDir);
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  test('an unsynced write is in the backend within the bound; the API shows it before and after', async () => {
    await api.createVdisk({ name: 'risk', sizeBytes: 64 * MiB });
    const t0 = Date.now();
    await qemuIo('risk', ['write -P 90 0 4M']); // no flush, no sync
    expect('risk', 0, 4 * MiB, 90);
    const before = await api.getVdisk('risk');
    assert.ok(before.stats !== undefined);
    assert.ok(before.stats.dataAtRiskBytes >= 4 * MiB, `at risk: ${before.stats.dataAtRiskBytes}`);
    assert.equal(before.stats.dataAtRiskBoundMs, BOUND_MS);
    assert.ok((await api.stats()).totals.dataAtRiskBytes >= 4 * MiB);
    for (;;) {
      const stats = (await api.getVdisk('risk')).stats;
      if (stats?.dataAtRiskBytes === 0 && stats.dataAtRiskAgeMs === 0) break;
      assert.ok(Date.now() - t0 < 5 * BOUND_MS, `still at risk: ${JSON.stringify(stats)}`);
      await sleep(100);
    }
    process.stdout.write(
      `data at risk: 4 MiB written, in the backend after ${Date.now() - t0} ms (bound ${BOUND_MS} ms)\n`,
    );
    assert.equal((await api.stats()).totals.dataAtRiskBytes, 0);
  });

  test('clone vs DELETE of the parent over 0..1 s: never both, the clone reads its snapshot', async () => {
    for (const delayMs of DELAYS_MS) {
      const parent = `dp${delayMs}`;
      await parentWith(parent, [0x11]);
      const cloning = outcome(() => clone(parent, `${parent}-c`, 's0'));
      await sleep(delayMs);
      const deleted = await outcome(async () =>
        api.waitForOperation((await api.deleteVdisk(parent)).id),
      );
      const cloned = await cloning;
      assert.ok(!(cloned.ok && deleted.ok), `delay ${delayMs} ms: both succeeded`);
      for (const [what, o] of [
        ['clone', cloned],
        ['delete', deleted],
      ] as const) {
        if (!o.ok)
          assert.ok(
            CLEAN_REFUSALS.has(o.code),
            `delay ${delayMs} ms: ${what}: ${o.code} ${o.message}`,
          );
      }
      process.stdout.write(
        `delete race at ${delayMs} ms: clone ${cloned.ok ? 'ok' : cloned.code}, delete ${deleted.ok ? 'ok' : deleted.code}\n`,
      );
      if (cloned.ok) {
        expect(`${parent}-c`, 0, 4 * MiB, 0x11);
        await readBack(`${parent}-c`);
      }
      if (!deleted.ok) expect(parent, MiB, 3 * MiB, 0x11);
    }
  });

  test('clone vs rollback past its snapshot over 0..1 s: never both, the clone reads its snapshot', async () => {
    for (const delayMs of DELAYS_MS) {
      const parent = `rp${delayMs}`;
      await parentWith(parent, [0x21, 0x22]);
      const cloning = outcome(() => clone(parent, `${parent}-c`, 's1'));
      await sleep(delayMs);
      const rolled = await outcome(async () =>
        api.waitForOperation((await api.rollbackVdisk(parent, 's0')).id),
      );
      const cloned = await cloning;
      assert.ok(!(cloned.ok && rolled.ok), `delay ${delayMs} ms: both succeeded`);
      process.stdout.write(
        `rollback race at ${delayMs} ms: clone ${cloned.ok ? 'ok' : cloned.code}, rollback ${rolled.ok ? 'ok' : rolled.code}\n`,
      );
      if (cloned.ok) {
        expect(`${parent}-c`, 0, 4 * MiB, 0x22);
        await readBack(`${parent}-c`);
      } else {
        assert.ok(CLEAN_REFUSALS.has(cloned.code), `${cloned.code} ${cloned.message}`);
      }
      if (rolled.ok) {
        expect(parent, 0, 4 * MiB, 0x21);
        await readBack(parent);
      } else {
        assert.ok(CLEAN_REFUSALS.has(rolled.code), `${rolled.code} ${rolled.message}`);
      }
    }
  });

  test('every process SIGKILLed, the write buffer gone: shale up starts, every vDisk opens, every byte is there', async () => {
    // Everything acknowledged is in the backend within the bound, without a sync.
    const t0 = Date.now();
    while ((await api.stats()).totals.dataAtRiskBytes > 0) {
      assert.ok(Date.now() - t0 < 5 * BOUND_MS, 'data still at risk');
      await sleep(200);
    }
    assert.ok(up !== undefined);
    await killUp(up, dataDir);
    up = undefined;
    await fs.rm(path.join(dataDir, 'volumedriver'), { recursive: true, force: true });
    await start();
    const vdisks = await api.listVdisks();
    assert.deepEqual(
      vdisks.filter((v) => v.state !== 'open').map((v) => `${v.name}: ${v.state}`),
      [],
    );
    assert.ok(
      vdisks.every((v) => v.dataLoss === undefined),
      'a loss was reported',
    );
    for (const name of expected.keys()) await readBack(name);
    const status = await runCommand(SHALE_BIN, ['status', '--data-dir', dataDir]);
    assert.equal(status.code, 0, status.stdout + status.stderr);
  });
});
