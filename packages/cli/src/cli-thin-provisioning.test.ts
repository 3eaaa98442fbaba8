// Proves the CLI says when thin vDisks over-commit the backend: against a real API over two real ASDs (64 MiB each), `shale vdisk create` within the free space prints no warning, past it prints API_THIN_OVERCOMMITTED on stderr (so does a resize), and `shale status` shows provisioned, free and the ratio.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ApiTestCluster, MiB, type TestApi } from '@shale/framework-api/testing';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');

function shale(
  args: readonly string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

describe('shale and thin provisioning', () => {
  let cluster: ApiTestCluster;
  let api: TestApi;
  let apiArgs: string[];

  before(async () => {
    cluster = await ApiTestCluster.start();
    await cluster.startRealAsds('real', 2, 64 * MiB);
    api = await cluster.startApi();
    apiArgs = ['--api', api.daemon.url, '--token', api.token];
    await api.client.createVpool({
      name: 'pool',
      backend: 'real',
      scoSizeBytes: 4 * MiB,
      writeBufferBytes: 8 * MiB,
    });
  });
  after(async () => {
    await cluster.close();
  });

  test('vdisk create within the free space: no warning; past it: API_THIN_OVERCOMMITTED on stderr', async () => {
    const small = await shale(['vdisk', 'create', 'small', '--size', '32MiB', ...apiArgs]);
    assert.equal(small.code, 0, small.stderr);
    assert.equal(small.stderr, '');
    const huge = await shale(['vdisk', 'create', 'huge', '--size', '4096TiB', ...apiArgs]);
    assert.equal(huge.code, 0, huge.stderr);
    assert.match(huge.stdout, /^created vDisk huge \(4\.0 PiB, vPool pool\)\n$/);
    assert.match(
      huge.stderr,
      /^shale: warning: API_THIN_OVERCOMMITTED: thin provisioning: 2 vDisks provision 4\.0 PiB, more than the 128 MiB free/,
    );
    const resized = await shale([
      'vdisk',
      'resize',
      'small',
      '--size',
      '64MiB',
      '--json',
      ...apiArgs,
    ]);
    assert.equal(resized.code, 0, resized.stderr);
    assert.match(resized.stderr, /^shale: warning: API_THIN_OVERCOMMITTED: /);
    const json = JSON.parse(resized.stdout) as { sizeBytes: number; warnings: { code: string }[] };
    assert.equal(json.sizeBytes, 64 * MiB);
    assert.equal(json.warnings[0]?.code, 'API_THIN_OVERCOMMITTED');
  });

  test('status shows provisioned, free once per file system, and the over-commit ratio', async () => {
    const status = await shale(['status', ...apiArgs]);
    // The test cluster's other backend has ASDs that never answer: degraded.
    assert.equal(status.code, 1, status.stderr);
    assert.match(
      status.stdout,
      /capacity: +0 B used of 128 MiB \(128 MiB free\) on 2\/4 ASDs, 2 file systems\n/,
    );
    const ratio = (4 * 2 ** 50 + 64 * MiB) / (128 * MiB);
    assert.match(
      status.stdout,
      new RegExp(
        `thin provisioning: +4\\.0 PiB provisioned, 128 MiB free: ${ratio.toFixed(2)} x \\(OVER-COMMITTED`,
      ),
    );
  });
});
