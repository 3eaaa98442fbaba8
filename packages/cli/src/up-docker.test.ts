// Proves `shale up --docker` serves the Docker volume plugin as one of its supervised daemons, wired to the cluster's API, NBD server and metadata store: a volume is created (a vDisk), mounted with a file system, survives the plugin being killed with SIGKILL (shale up restarts it; Path answers the same mount, the file is there), is unmounted and removed; the --docker-* options are refused without --docker.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MapHarness, pidOf, run } from './testing/map-harness.js';

/** One call of the plugin protocol on its socket (what dockerd sends). */
function pluginCall(
  socketPath: string,
  call: string,
  body: object,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath, path: `/${call}`, method: 'POST' }, (response) => {
      let text = '';
      response.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
    });
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

describe('shale up --docker', { timeout: 300_000 }, () => {
  let h: MapHarness;
  let socketPath: string;
  let mountRoot: string;

  before(async () => {
    h = await MapHarness.start('shale-up-docker-', (dir) => [
      '--docker',
      '--docker-socket',
      path.join(dir, 'plugins', 'shale-up-test.sock'),
      '--docker-mount-root',
      path.join(dir, 'volumes'),
      '--docker-map-dir',
      path.join(dir, 'mapped'),
    ]);
    socketPath = path.join(h.dir, 'plugins', 'shale-up-test.sock');
    mountRoot = path.join(h.dir, 'volumes');
  });

  after(async () => {
    await h?.close();
  });

  test('the plugin runs under shale up, is restarted when killed, keeps its mounts', async () => {
    assert.match(h.upOutput(), /Docker {4}volume plugin "shale-up-test" on /);
    const activate = await pluginCall(socketPath, 'Plugin.Activate', {});
    assert.deepEqual(activate.Implements, ['VolumeDriver']);
    const created = await pluginCall(socketPath, 'VolumeDriver.Create', {
      Name: 'u1',
      Opts: { size: '64MiB' },
    });
    assert.equal(created.Err, '', JSON.stringify(created));
    const list = await h.shale(['vdisk', 'list']);
    assert.match(list.stdout, /\bu1\b/);

    const mounted = await pluginCall(socketPath, 'VolumeDriver.Mount', { Name: 'u1', ID: 'm1' });
    assert.equal(mounted.Err, '', JSON.stringify(mounted) + h.upOutput());
    const mountpoint = mounted.Mountpoint as string;
    assert.ok(mountpoint.startsWith(mountRoot), mountpoint);
    await fsp.writeFile(path.join(mountpoint, 'f'), 'before the kill\n');
    await run('sync', []);

    process.kill(await pidOf([' docker serve ', socketPath]), 'SIGKILL');
    await h.waitForRestart('docker', 1);
    const where = await pluginCall(socketPath, 'VolumeDriver.Path', { Name: 'u1' });
    assert.deepEqual(where, { Err: '', Mountpoint: mountpoint });
    assert.equal(await fsp.readFile(path.join(mountpoint, 'f'), 'utf8'), 'before the kill\n');

    const unmounted = await pluginCall(socketPath, 'VolumeDriver.Unmount', {
      Name: 'u1',
      ID: 'm1',
    });
    assert.equal(unmounted.Err, '', JSON.stringify(unmounted));
    assert.ok(
      !fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${mountpoint} `),
      'unmounted',
    );
    const removed = await pluginCall(socketPath, 'VolumeDriver.Remove', { Name: 'u1' });
    assert.equal(removed.Err, '', JSON.stringify(removed));
    assert.doesNotMatch((await h.shale(['vdisk', 'list'])).stdout, /\bu1\b/);
  });

  test('the --docker-* options without --docker are a usage error', async () => {
    const result = await h.shale(['up', '--docker-socket', '/tmp/x.sock']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--docker-socket goes with --docker/);
  });
});
