// Proves the Docker volume plugin (`shale docker serve`) with a real private dockerd and a real `shale up`: a volume created with -o size is written by one container and read back (checksums) by a later one, shared by two at once, listed by docker and by shale vdisk list; the plugin killed with SIGKILL while containers hold the volume answers Path and Unmount correctly when restarted, data intact; a clone of a snapshot shows its files; rm in use fails, after the containers exit it removes the volume and the vDisk; bad options get the plugin's error in the docker CLI.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { BUSYBOX_IMAGE, DockerEngine } from './testing/docker-engine.js';
import { MapHarness } from './testing/map-harness.js';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');
const PLUGIN = `shale-test-${process.pid}`;
const SPEC = `/etc/docker/plugins/${PLUGIN}.spec`;

/** One call of the plugin protocol straight on its socket (what dockerd sends). */
function pluginCall(
  socketPath: string,
  call: string,
  body: object,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        socketPath,
        path: `/${call}`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8').on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
      },
    );
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

describe('shale docker serve with a real dockerd', { timeout: 600_000 }, () => {
  let h: MapHarness;
  let docker: DockerEngine;
  let plugin: ChildProcess | undefined;
  let socketPath: string;
  let mountRoot: string;
  let pluginLog = '';

  async function startPlugin(): Promise<void> {
    const layout = JSON.parse(await fsp.readFile(path.join(h.dataDir, 'shale-up.json'), 'utf8'));
    const child = spawn(
      process.execPath,
      [
        MAIN,
        'docker',
        'serve',
        '--kv',
        `kv://127.0.0.1:${layout.ports.kv}`,
        '--data-dir',
        h.dataDir,
        '--socket',
        socketPath,
        '--mount-root',
        mountRoot,
        '--map-dir',
        h.mapDir,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      pluginLog += chunk;
    });
    const deadline = Date.now() + 30_000;
    while (!out.includes('"event":"listening"')) {
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`the plugin did not start:\n${pluginLog}`);
      }
      await sleep(50);
    }
    plugin = child;
  }

  const run = (name: string, script: string, extra: string[] = []) =>
    docker.docker([
      'run',
      '--rm',
      '--network',
      'none',
      ...extra,
      '-v',
      `${name}:/data`,
      BUSYBOX_IMAGE,
      'sh',
      '-c',
      script,
    ]);

  before(async () => {
    h = await MapHarness.start('shale-docker-');
    socketPath = path.join(h.dir, 'plugins', `${PLUGIN}.sock`);
    mountRoot = path.join(h.dir, 'volumes');
    await startPlugin();
    await fsp.mkdir(path.dirname(SPEC), { recursive: true });
    await fsp.writeFile(SPEC, `unix://${socketPath}\n`);
    docker = await DockerEngine.start(path.join(h.dir, 'docker'));
  });

  after(async () => {
    await docker?.stop();
    plugin?.kill('SIGKILL');
    await fsp.rm(SPEC, { force: true });
    await h?.close();
  });

  test('create, write, read back later, two containers at once, listed', async () => {
    await docker.mustDocker(['volume', 'create', '-d', PLUGIN, '-o', 'size=256MiB', 'v1']);
    const wrote = await run(
      'v1',
      'echo hello > /data/f && dd if=/dev/urandom of=/data/big bs=1M count=8 2>/dev/null && md5sum /data/big > /data/sum && sync',
    );
    assert.equal(wrote.code, 0, wrote.stderr + pluginLog);
    const read = await run('v1', 'cat /data/f && md5sum -c /data/sum');
    assert.equal(read.code, 0, read.stderr);
    assert.match(read.stdout, /hello\n\/data\/big: OK/);

    for (const name of ['c1', 'c2']) {
      await docker.mustDocker([
        'run',
        '-d',
        '--name',
        name,
        '--network',
        'none',
        '-v',
        'v1:/data',
        BUSYBOX_IMAGE,
        'sleep',
        '600',
      ]);
    }
    await docker.mustDocker(['exec', 'c2', 'sh', '-c', 'echo from-c2 > /data/g && sync']);
    assert.equal((await docker.mustDocker(['exec', 'c1', 'cat', '/data/g'])).trim(), 'from-c2');
    const mountpoints = fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.includes(` ${path.join(mountRoot, 'v1')} `));
    assert.equal(mountpoints.length, 1, 'two containers share one mount');

    const listed = await docker.mustDocker(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}']);
    assert.match(listed, new RegExp(`^${PLUGIN} v1$`, 'm'));
    const inspected = JSON.parse(await docker.mustDocker(['volume', 'inspect', 'v1']))[0];
    assert.equal(inspected.Driver, PLUGIN);
    assert.equal(inspected.Scope, 'global');
    assert.equal(inspected.Status.sizeBytes, 256 * 1024 * 1024);
    assert.equal(inspected.Status.containers, 2);
    const vdisks = JSON.parse((await h.shale(['vdisk', 'list', '--json'])).stdout) as {
      name: string;
    }[];
    assert.ok(
      vdisks.some((v) => v.name === 'v1'),
      'the vDisk is in shale vdisk list',
    );
  });

  test('rm while in use fails with a clear message', async () => {
    const rm = await docker.docker(['volume', 'rm', 'v1']);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /in use/);
    // The plugin refuses too, not only dockerd's own bookkeeping.
    const direct = await pluginCall(socketPath, 'VolumeDriver.Remove', { Name: 'v1' });
    assert.match(String(direct.Err), /DOCKER_VOLUME_IN_USE: volume v1 is in use/);
  });

  test('the plugin killed with SIGKILL and restarted answers Path and Unmount; data intact', async () => {
    plugin?.kill('SIGKILL');
    await new Promise((resolve) => plugin?.once('exit', resolve));
    await startPlugin();
    const pathAnswer = await pluginCall(socketPath, 'VolumeDriver.Path', { Name: 'v1' });
    assert.deepEqual(pathAnswer, { Mountpoint: path.join(mountRoot, 'v1'), Err: '' });
    assert.equal((await docker.mustDocker(['exec', 'c1', 'cat', '/data/f'])).trim(), 'hello');
    await docker.mustDocker(['rm', '-f', 'c1']);
    assert.equal((await docker.mustDocker(['exec', 'c2', 'cat', '/data/g'])).trim(), 'from-c2');
    await docker.mustDocker(['rm', '-f', 'c2']);
    const after = await pluginCall(socketPath, 'VolumeDriver.Path', { Name: 'v1' });
    assert.deepEqual(after, { Mountpoint: '', Err: '' }, 'released after the last container');
    assert.ok(
      !fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${path.join(mountRoot, 'v1')} `),
    );
    const read = await run('v1', 'cat /data/f /data/g && md5sum -c /data/sum');
    assert.equal(read.code, 0, read.stderr);
    assert.match(read.stdout, /hello\nfrom-c2\n\/data\/big: OK/);
  });

  test('a volume from a snapshot shows its files', async () => {
    const snap = await h.shale(['snapshot', 'create', 'v1', 's1']);
    assert.equal(snap.code, 0, snap.stderr);
    await run('v1', 'echo after-snapshot > /data/f && sync');
    await docker.mustDocker(['volume', 'create', '-d', PLUGIN, '-o', 'from=v1@s1', 'v1c']);
    const read = await run('v1c', 'cat /data/f && md5sum -c /data/sum');
    assert.equal(read.code, 0, read.stderr);
    assert.match(read.stdout, /^hello\n\/data\/big: OK/);
  });

  test('bad input gets the plugin error in the docker CLI and creates nothing', async () => {
    const cases: [string[], RegExp][] = [
      [['-o', 'size=abc'], /DOCKER_BAD_OPTION: size "abc" is not a size/],
      [['-o', 'colour=red'], /DOCKER_BAD_OPTION: unknown option "colour"/],
      [['-o', 'vpool=nope'], /DOCKER_UNKNOWN_VPOOL: no vPool named nope/],
      [['-o', 'fs=btrfs'], /DOCKER_BAD_OPTION: fs "btrfs" is not one shale makes/],
      [['-o', 'from=v1@nosuch'], /DOCKER_NO_SUCH_SNAPSHOT: volume v1 has no snapshot nosuch/],
    ];
    for (const [options, message] of cases) {
      const created = await docker.docker(['volume', 'create', '-d', PLUGIN, ...options, 'bad1']);
      assert.notEqual(created.code, 0, options.join(' '));
      assert.match(created.stderr, message);
    }
    // A name another vDisk has is refused, and that vDisk is untouched.
    assert.equal((await h.shale(['vdisk', 'create', 'plain', '--size', '64MiB'])).code, 0);
    const taken = await docker.docker(['volume', 'create', '-d', PLUGIN, 'plain']);
    assert.match(taken.stderr, /DOCKER_NAME_TAKEN: a vDisk named plain exists/);
    const listed = await docker.mustDocker(['volume', 'ls', '--format', '{{.Name}}']);
    assert.ok(!listed.includes('bad1') && !listed.includes('plain'), listed);
    const vdisks = JSON.parse((await h.shale(['vdisk', 'list', '--json'])).stdout) as {
      name: string;
    }[];
    assert.ok(!vdisks.some((v) => v.name === 'bad1'));
    assert.ok(vdisks.some((v) => v.name === 'plain'));
  });

  test('rm after the containers exit removes the volume and the vDisk', async () => {
    await docker.mustDocker(['volume', 'rm', 'v1c']);
    await docker.mustDocker(['volume', 'rm', 'v1']);
    const listed = await docker.mustDocker(['volume', 'ls', '--format', '{{.Name}}']);
    assert.equal(listed.trim(), '');
    const vdisks = JSON.parse((await h.shale(['vdisk', 'list', '--json'])).stdout) as {
      name: string;
    }[];
    assert.deepEqual(
      vdisks.map((v) => v.name),
      ['plain'],
    );
  });
});
