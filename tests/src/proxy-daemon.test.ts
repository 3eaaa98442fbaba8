// Proves `shale proxy serve` end to end with real processes: six ASDs, a proxy on an embedded metadata store, objects put and read back whole and by range over gRPC, still byte-exact after two ASDs are killed with SIGKILL, and a fenced writer refused.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { ProxyClient } from '@shale/alba-proxy';
import { ShaleError } from '@shale/common';
import { runShale, type ShaleProcess, startShale } from './support/shale-process.js';

const processes: ShaleProcess[] = [];
let dir: string | undefined;
after(async () => {
  for (const proc of processes) await proc.kill9();
  if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true });
});

test(
  'a proxy over six real ASDs serves objects through the loss of two of them',
  { timeout: 180_000 },
  async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'proxy-e2e-'));
    const asds: ShaleProcess[] = [];
    for (let i = 0; i < 6; i += 1) {
      const asd = await startShale([
        'asd',
        'serve',
        '--dir',
        path.join(dir, `asd${i}`),
        '--port',
        '0',
        '--node-id',
        'node1',
        '--reserve-bytes',
        '0',
      ]);
      processes.push(asd);
      asds.push(asd);
    }
    const proxy = await startShale([
      'proxy',
      'serve',
      '--kv-dir',
      path.join(dir, 'kv'),
      '--backend',
      'local',
      '--port',
      '0',
      '--cache-dir',
      path.join(dir, 'cache'),
      '--cache-bytes',
      '64MiB',
      '--metrics-port',
      '0',
      ...asds.flatMap((asd) => ['--asd', `127.0.0.1:${asd.port}`]),
    ]);
    processes.push(proxy);
    const client = new ProxyClient(`127.0.0.1:${proxy.port}`);
    try {
      const health = await runShale(['proxy', 'health', '--address', `127.0.0.1:${proxy.port}`]);
      assert.equal(health.code, 0, health.stderr);
      assert.match(health.stdout, /6\/6 OSDs answer/);

      const ns = 'ab'.repeat(16);
      const created = await client.createNamespace(ns);
      assert.equal(created.epoch, 1);
      const objects = new Map<string, Buffer>();
      for (const [i, size] of [1, 4095, 300_000, 1024 * 1024, 5 * 1024 * 1024 + 17].entries()) {
        const data = randomBytes(size);
        const put = await client.putObject(ns, `sco/${i}`, data, 1);
        assert.ok(put.policy.length === 4 && put.manifestBytes > 0);
        objects.set(`sco/${i}`, data);
      }
      const check = async (phase: string): Promise<void> => {
        for (const [name, data] of objects) {
          assert.ok((await client.getObject(ns, name)).equals(data), `${phase}: ${name} whole`);
          const offset = Math.floor(data.length / 3);
          const length = Math.min(4096, data.length - offset);
          const [slice] = await client.readRanges(ns, [{ name, offset, length }]);
          assert.ok(
            slice?.equals(data.subarray(offset, offset + length)),
            `${phase}: ${name} range`,
          );
        }
      };
      await check('healthy');

      // A new owner fences the old writer: its epoch no longer commits.
      assert.equal(await client.bumpEpoch(ns), 2);
      await assert.rejects(
        client.putObject(ns, 'sco/late', randomBytes(1000), 1),
        (err: unknown) => err instanceof ShaleError && err.code === 'PROXY_FENCED',
      );
      await assert.rejects(
        client.getObject(ns, 'sco/late'),
        (err: unknown) => err instanceof ShaleError && err.code === 'PROXY_OBJECT_NOT_FOUND',
      );

      // Two ASDs die (m = 2 in the default single-node preset): everything still reads.
      await asds[1]?.kill9();
      await asds[4]?.kill9();

      // The first put right after the loss (the proxy's OSD view still says six are alive)
      // is acknowledged: when it falls short the view is refreshed, and the put falls back to
      // the first policy the four live ASDs can satisfy.
      const data = randomBytes(700_000);
      const put = await client.putObject(ns, 'sco/degraded', data, 2);
      assert.ok((put.policy[2] as number) <= 4, `a policy with c <= 4: ${put.policy.join(',')}`);
      objects.set('sco/degraded', data);
      await check('two ASDs down');

      const metrics = await (
        await fetch(`http://127.0.0.1:${String(proxy.ready.metricsPort)}/metrics`)
      ).text();
      assert.match(metrics, /shale_proxy_puts_total [1-9]/);
      assert.match(metrics, /shale_proxy_fenced_commits_total [1-9]/);
      assert.match(metrics, /shale_proxy_parity_decodes_total [1-9]/);
      assert.match(metrics, /shale_proxy_manifest_bytes_written_total [1-9]/);
      assert.match(metrics, /shale_proxy_cache_hit_ratio /);

      assert.equal(await client.deleteObject(ns, 'sco/0', 2), true);
      await assert.rejects(
        client.getObject(ns, 'sco/0'),
        (err: unknown) => err instanceof ShaleError && err.code === 'PROXY_OBJECT_NOT_FOUND',
      );
      await assert.rejects(
        client.createNamespace('not-hex'),
        (err: unknown) => err instanceof ShaleError && err.code === 'PROXY_BAD_NAMESPACE',
      );
    } finally {
      client.close();
    }
    assert.equal(await proxy.stop(), 0, `proxy exit; stderr:\n${proxy.stderr()}`);

    // With the proxy stopped, maintenance can open the embedded store: one pass over the
    // backend, two of whose ASDs are down (within the grace: waited for, not rebuilt).
    const pass = await runShale(
      ['maintenance', 'serve', '--kv-dir', path.join(dir, 'kv'), '--backend', 'local', '--once'],
      120_000,
    );
    assert.equal(pass.code, 0, pass.stderr);
    const summary = JSON.parse(pass.stdout.trim().split('\n').at(-1) as string) as {
      objectsScanned: number;
      unrecoverableCount: number;
    };
    assert.ok(summary.objectsScanned >= 5, pass.stdout);
    assert.equal(summary.unrecoverableCount, 0);
  },
);
