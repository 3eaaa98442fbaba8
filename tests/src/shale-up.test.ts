// Proves `shale up` runs a whole cluster that a newcomer can use with the CLI and qemu: vDisks created with `shale vdisk create`, written with qemu-io, snapshotted and cloned (the clone reads the old data, the vDisk the new), everything intact after SIGTERM and a second `shale up` on the same data dir, and every flushed write intact after the volumedriver child (with the co-located NBD server inside: qemu reconnects) is SIGKILLed mid-write and restarted by shale up, and the same with --separate-edge and a client that does not reconnect; by running the real processes and reading the bytes back.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '@shale/testing';
import { mustRun, runCommand } from './support/commands.js';
import { SHALE_BIN } from './support/shale-process.js';
import { alive, childPids, daemonPids, killUp, startUp, type Up } from './support/shale-up.js';

const MiB = 1024 * 1024;

describe('shale up', { timeout: 900_000 }, () => {
  let dataDir: string;
  let nbdPort: number;
  let apiPort: number;
  let up: Up | undefined;
  const cli = (args: readonly string[]) =>
    runCommand(SHALE_BIN, [...args, '--data-dir', dataDir], { timeoutMs: 120_000 });
  const nbd = (name: string) => `nbd://127.0.0.1:${nbdPort}/${name}`;
  const qemuIo = (name: string, commands: readonly string[], extra: readonly string[] = []) =>
    mustRun('qemu-io', ['-f', 'raw', ...extra, ...commands.flatMap((c) => ['-c', c]), nbd(name)], {
      package: 'qemu-utils',
      timeoutMs: 300_000,
    });

  before(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-up-'));
    nbdPort = await freePort();
    apiPort = await freePort();
  });

  after(async () => {
    if (up !== undefined) await killUp(up, dataDir);
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  test('a newcomer: shale up, a vDisk from the CLI, qemu-io, snapshot, clone; SIGTERM and up again: all there', async () => {
    up = await startUp(dataDir, nbdPort, apiPort);
    assert.match(up.stdout(), new RegExp(`nbd://127\\.0\\.0\\.1:${nbdPort}/`));
    assert.match(up.stdout(), /qemu-img info nbd:\/\//);
    const tokenFile = path.join(dataDir, 'api-token');
    assert.match(up.stdout(), new RegExp(tokenFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    assert.equal((await fs.stat(tokenFile)).mode & 0o777, 0o600);

    const created = await cli(['vdisk', 'create', 'disk1', '--size', '256MiB']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /created vDisk disk1 \(256 MiB, vPool default\)/);
    const duplicate = await cli(['vdisk', 'create', 'disk1', '--size', '256MiB']);
    assert.equal(duplicate.code, 5, 'a duplicate name exits 5 (conflict)');
    assert.match(duplicate.stderr, /VD_EXISTS/);
    const badSize = await cli(['vdisk', 'create', 'disk2', '--size', 'lots']);
    assert.equal(badSize.code, 2, 'a bad size is a usage error');
    const missing = await cli(['vdisk', 'show', 'nope']);
    assert.equal(missing.code, 4, 'a missing vDisk exits 4');

    await qemuIo('disk1', ['write -P 0xa1 0 4M', `write -P 0xa2 ${100 * MiB} 1M`, 'flush']);
    const snap = await cli(['snapshot', 'create', 'disk1', 'before']);
    assert.equal(snap.code, 0, snap.stderr);
    await qemuIo('disk1', ['write -P 0xb1 0 4M', 'flush']);
    const clone = await cli(['clone', 'disk1@before', 'disk1-old']);
    assert.equal(clone.code, 0, clone.stderr);
    const check = async () => {
      await qemuIo('disk1-old', ['read -P 0xa1 0 4M', `read -P 0xa2 ${100 * MiB} 1M`], ['-r']);
      await qemuIo('disk1', ['read -P 0xb1 0 4M', `read -P 0xa2 ${100 * MiB} 1M`], ['-r']);
    };
    await check();

    const listed = await cli(['vdisk', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const vdisks = JSON.parse(listed.stdout) as { name: string; parent?: { vdisk: string } }[];
    assert.deepEqual(vdisks.map((v) => v.name).sort(), ['disk1', 'disk1-old']);
    assert.equal(vdisks.find((v) => v.name === 'disk1-old')?.parent?.vdisk, 'disk1');
    const status = await cli(['status']);
    assert.equal(status.code, 0, `${status.stdout}\n${status.stderr}`);
    assert.match(status.stdout, /cluster: healthy/);

    assert.equal(await up.stop(), 0, up.stderr());
    assert.match(up.stderr(), /shale up: stopped/);
    for (const verb of ['edge', 'api', 'volumedriver', 'proxy', 'asd', 'kv']) {
      assert.deepEqual(
        await daemonPids(dataDir, verb),
        [],
        `${verb} still runs after shale up stopped`,
      );
    }
    const stopped = await cli(['vdisk', 'list']);
    assert.equal(stopped.code, 3, 'no cluster: exit 3');

    up = await startUp(dataDir, nbdPort, apiPort);
    await check();
    const snapshots = await cli(['snapshot', 'list', 'disk1', '--json']);
    assert.deepEqual(
      (JSON.parse(snapshots.stdout) as { name: string }[]).map((s) => s.name),
      ['before'],
    );
    // A vDisk with clones is not deleted; a rollback brings the snapshot's data back.
    const hasClones = await cli(['vdisk', 'delete', 'disk1']);
    assert.equal(hasClones.code, 5, 'deleting a vDisk with clones exits 5');
    assert.match(hasClones.stderr, /VD_HAS_CLONES/);
    const rolled = await cli(['rollback', 'disk1@before']);
    assert.equal(rolled.code, 0, rolled.stderr);
    assert.match(rolled.stdout, /rolled vDisk disk1 back to before/);
    await qemuIo('disk1', ['read -P 0xa1 0 4M'], ['-r']);
    await qemuIo('disk1', ['write -P 0xb1 0 4M', 'flush']);
    const scratch = await cli(['vdisk', 'create', 'scratch', '--size', '16MiB']);
    assert.equal(scratch.code, 0, scratch.stderr);
    const deleted = await cli(['vdisk', 'delete', 'scratch', '--json']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal((JSON.parse(deleted.stdout) as { state: string }).state, 'succeeded');
    assert.equal((await cli(['vdisk', 'show', 'scratch'])).code, 4);
  });

  /**
   * 96 writes of 1 MiB, each followed by a flush, on one connection; the volumedriver is
   * SIGKILLed in the middle. `reconnect`: the NBD server dies with it (co-located), so the
   * client is qemu's NBD driver with reconnect-delay, which re-sends what was in flight.
   */
  async function volumedriverKilledMidWrite(name: string, reconnect: boolean): Promise<void> {
    assert.ok(up !== undefined, 'shale up is not running');
    const created = await cli(['vdisk', 'create', name, '--size', '128MiB']);
    assert.equal(created.code, 0, created.stderr);
    const WRITES = 96;
    const commands: string[] = [];
    for (let i = 0; i < WRITES; i += 1)
      commands.push(`write -P ${(i % 250) + 1} ${i * MiB} 1M`, 'flush');
    let writerDone = false;
    const writer = (
      reconnect
        ? mustRun(
            'qemu-io',
            [
              '--image-opts',
              ...commands.flatMap((c) => ['-c', c]),
              `driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=${nbdPort},file.export=${name},file.reconnect-delay=60`,
            ],
            { package: 'qemu-utils', timeoutMs: 300_000 },
          )
        : qemuIo(name, commands)
    ).finally(() => {
      writerDone = true;
    });
    // Kill once a few writes have reached the volumedriver (its counters say so).
    const started = Date.now();
    for (;;) {
      const shown = await cli(['vdisk', 'show', name, '--json']);
      const writeOps =
        (JSON.parse(shown.stdout) as { stats?: { writeOps: number } }).stats?.writeOps ?? 0;
      if (writeOps >= 8) break;
      assert.ok(Date.now() - started < 60_000, 'qemu-io wrote nothing in 60 s');
      await sleep(100);
    }
    const [pid] = await daemonPids(dataDir, 'volumedriver');
    assert.ok(pid !== undefined, 'no volumedriver child found');
    const restartsBefore = (up.stderr().match(/volumedriver is back/g) ?? []).length;
    process.kill(pid, 'SIGKILL');
    assert.equal(writerDone, false, 'qemu-io finished before the kill: the test proves nothing');
    const result = await writer;
    assert.doesNotMatch(result.stdout + result.stderr, /error|failed/i, 'qemu-io saw an error');
    assert.equal((result.stdout.match(/^wrote /gm) ?? []).length, WRITES, result.stdout);
    // shale up noticed, reported and restarted it.
    const deadline = Date.now() + 60_000;
    while ((up.stderr().match(/volumedriver is back/g) ?? []).length === restartsBefore) {
      assert.ok(Date.now() < deadline, `no restart reported:\n${up.stderr()}`);
      await sleep(200);
    }
    assert.match(up.stderr(), /volumedriver exited \(SIGKILL\)/);
    const [newPid] = await daemonPids(dataDir, 'volumedriver');
    assert.ok(newPid !== undefined && newPid !== pid);
    const reads: string[] = [];
    for (let i = 0; i < WRITES; i += 1) reads.push(`read -P ${(i % 250) + 1} ${i * MiB} 1M`);
    await qemuIo(name, reads, ['-r']);
  }

  test('the volumedriver (with the NBD server inside) SIGKILLed while qemu-io writes with flushes: shale up restarts it, qemu reconnects, every flushed write is there', async () => {
    await volumedriverKilledMidWrite('crash', true);
    // The earlier vDisks came through the crash too.
    await qemuIo('disk1', ['read -P 0xb1 0 4M'], ['-r']);
    assert.equal(await (up as Up).stop(), 0, (up as Up).stderr());
    up = undefined;
  });

  test('with --separate-edge the NBD server is its own process: a volumedriver SIGKILL is invisible to a client without reconnect', async () => {
    up = await startUp(dataDir, nbdPort, apiPort, ['--separate-edge']);
    const edges: number[] = [];
    for (const child of await childPids(up.child.pid as number)) {
      const cmdline = await fs.readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.split('\0').join(' ').includes(' edge serve ')) edges.push(child);
    }
    assert.equal(edges.length, 1, 'an edge process runs');
    await volumedriverKilledMidWrite('crash2', false);
    assert.equal(await up.stop(), 0, up.stderr());
    up = undefined;
  });

  test('shale up SIGKILLed: its daemons notice and stop by themselves (no orphans)', async () => {
    up = await startUp(dataDir, nbdPort, apiPort);
    const pid = up.child.pid as number;
    // bin/shale execs node: the daemons are children of the shale up process itself.
    const children = await childPids(pid);
    assert.ok(children.length >= 10, `shale up has ${children.length} children`);
    up.child.kill('SIGKILL');
    const deadline = Date.now() + 60_000;
    while (children.some(alive)) {
      assert.ok(
        Date.now() < deadline,
        `daemons still alive 60 s after shale up died: ${children.filter(alive)}`,
      );
      await sleep(200);
    }
    up = undefined;
    // And the data dir starts again (the stale status file of the dead shale up is ignored).
    up = await startUp(dataDir, nbdPort, apiPort);
    await qemuIo('crash', ['read -P 1 0 1M'], ['-r']);
    assert.equal(await up.stop(), 0, up.stderr());
    up = undefined;
  });
});
