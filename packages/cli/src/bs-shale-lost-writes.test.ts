// Proves tgt's shale backing store never reports acknowledged writes stable when the NBD server that acknowledged them died before a flush: the SYNCHRONIZE CACHE after such a death fails (once), a death with nothing unflushed is only a pause, and I/O goes on afterwards.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, runCommand } from '@shale/testing';
import { NATIVE_BSTYPE } from './iscsi/constants.js';
import { parsePortal, TgtDaemon } from './iscsi/tgt-daemon.js';

const IQN = 'iqn.2026-12.io.shale:lost-writes';
const LUN_BYTES = 64 << 20;

/**
 * nbdkit's memory plugin is the NBD server here because it loses, when killed, everything
 * it acknowledged: the case a flush on a new connection must not paper over.
 */
function startNbdkit(port: number): ChildProcess {
  return spawn(
    'nbdkit',
    ['-f', '-i', '127.0.0.1', '-p', String(port), 'memory', String(LUN_BYTES)],
    { stdio: 'ignore', env: { PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` } },
  );
}

async function nbdUp(port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = await runCommand('nbdinfo', ['--can', 'connect', `nbd://127.0.0.1:${port}`], {
      package: 'libnbd-bin',
    });
    if (probe.code === 0) return;
    if (Date.now() > deadline) throw new Error(`nbdkit on ${port} did not come up`);
    await sleep(50);
  }
}

async function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await gone;
}

describe(
  'bs_shale: writes acknowledged by an NBD server that died unflushed',
  { timeout: 120_000 },
  () => {
    let stateDir: string;
    let daemon: TgtDaemon;
    let nbdPort: number;
    let iscsiPort: number;
    let nbdkit: ChildProcess;

    before(async () => {
      stateDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bs-shale-lost-'));
      nbdPort = await freePort();
      iscsiPort = await freePort();
      nbdkit = startNbdkit(nbdPort);
      await nbdUp(nbdPort);
      daemon = await TgtDaemon.start({
        // tgtd's control port is a number <= 32767 naming a socket, not a TCP port.
        control: 20_000 + (process.pid % 10_000),
        portal: parsePortal(`127.0.0.1:${iscsiPort}`),
        stateDir,
        log: (line) => console.log(`tgtd: ${line}`),
      });
      await daemon.admin.newTarget(1, IQN);
      await daemon.admin.newLun(1, 1, {
        bstype: NATIVE_BSTYPE,
        backing: `nbd://127.0.0.1:${nbdPort}`,
        readOnly: false,
        thinProvisioning: false,
      });
      await daemon.admin.bindInitiator(1, 'address', 'ALL');
    });

    after(async () => {
      await daemon?.admin
        .deleteTarget(1, true)
        .catch((err: unknown) => console.log(`cleanup: ${String(err)}`));
      await daemon?.stop();
      if (nbdkit) await killed(nbdkit);
      await fsp.rm(stateDir, { recursive: true, force: true });
    });

    test('flush fails after a death holding unflushed writes; a clean death is a pause; I/O goes on', async () => {
      // One qemu-io session (one iSCSI login, as a guest has): the sleeps are where the
      // NBD server is killed and restarted empty. Line-buffered so progress is visible.
      const script = [
        'write -P 0x11 0 1M',
        'flush',
        'sleep 2500', // death 1: nothing acknowledged is unflushed
        'flush',
        'write -P 0x22 1M 1M',
        'sleep 2500', // death 2: 1 MiB acknowledged, unflushed, gone with the server
        'flush',
        'flush',
        'write -P 0x33 2M 64k',
        'flush',
        'read -P 0x33 2M 64k',
      ];
      const qemu = spawn(
        'stdbuf',
        [
          '-oL',
          'qemu-io',
          // qemu-io's default is writethrough (every write FUA, stable when acked): the
          // guest default, writeback, leaves durability to the flushes.
          '-t',
          'writeback',
          '-f',
          'raw',
          ...script.flatMap((c) => ['-c', c]),
          `iscsi://127.0.0.1:${iscsiPort}/${IQN}/1`,
        ],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` },
        },
      );
      let out = '';
      qemu.stdout.setEncoding('utf8').on('data', (c: string) => {
        out += c;
      });
      qemu.stderr.setEncoding('utf8').on('data', (c: string) => {
        out += c;
      });
      const exited = new Promise<number | null>((resolve) => qemu.once('exit', resolve));
      const waitOut = async (what: RegExp, count: number): Promise<void> => {
        const deadline = Date.now() + 30_000;
        while ((out.match(new RegExp(what, 'g')) ?? []).length < count) {
          if (Date.now() > deadline)
            throw new Error(`qemu-io never printed ${what} x${count}: ${out}`);
          await sleep(20);
        }
      };
      const restartNbdkit = async (): Promise<void> => {
        await killed(nbdkit);
        nbdkit = startNbdkit(nbdPort);
        await nbdUp(nbdPort);
      };

      await waitOut(/wrote 1048576\/1048576 bytes at offset 0\b/, 1);
      await sleep(300); // the flush after it is on its way
      await restartNbdkit();
      await waitOut(/wrote 1048576\/1048576 bytes at offset 1048576\b/, 1);
      await restartNbdkit();
      const code = await exited;

      const lines = out.split('\n').filter((l) => /wrote|read|flush|fail|error/i.test(l));
      const flushFailures = out.match(/SYNCHRONIZECACHE10 failed|flush failed/gi) ?? [];
      assert.equal(
        flushFailures.length,
        1,
        `exactly the flush after death 2 fails (death 1 had nothing unflushed):\n${out}`,
      );
      // The failure sits between the 0x22 write and the 0x33 write: the flush after death 2.
      const failAt = lines.findIndex((l) => /SYNCHRONIZECACHE10 failed|flush failed/i.test(l));
      const write2At = lines.findIndex((l) => /at offset 1048576\b/.test(l));
      const write3At = lines.findIndex((l) => /wrote 65536\/65536 bytes at offset 2097152/.test(l));
      assert.ok(write2At >= 0 && write2At < failAt && failAt < write3At, lines.join('\n'));
      assert.match(
        out,
        /read 65536\/65536 bytes at offset 2097152/,
        'I/O goes on after the failure',
      );
      assert.doesNotMatch(out, /Pattern verification failed/);
      assert.notEqual(code, 0, 'qemu-io exits non-zero: a command failed');
    });
  },
);
