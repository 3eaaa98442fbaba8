// Proves tgt's shale backing store never reports acknowledged writes stable when the NBD server that acknowledged them died before a flush and could not keep them (no durable epoch, or another one after the restart): that SYNCHRONIZE CACHE fails (once) and I/O goes on; a death with nothing unflushed, or a restart with the same durable epoch, is only a pause.
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

const LUN_BYTES = 64 << 20;
const ENV = { PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };
const FLUSH_FAILED = /SYNCHRONIZECACHE10 failed|flush failed/i;

/**
 * memory: loses, when killed, everything it acknowledged (and says nothing about it): the
 * case a flush on a new connection must not paper over. file + epoch: keeps what it
 * acknowledged in the page cache, and says so with a durable epoch in its description, as
 * Shale's co-located edge does.
 */
type Server = { kind: 'memory' } | { kind: 'file'; file: string; epoch: string };

class Nbdkit {
  private child: ChildProcess | undefined;

  constructor(readonly port: number) {}

  async start(server: Server): Promise<void> {
    const args =
      server.kind === 'memory'
        ? ['memory', String(LUN_BYTES)]
        : [
            '--filter=exportname',
            'file',
            server.file,
            `exportdesc=fixed:test server; durable-epoch=${server.epoch}`,
          ];
    this.child = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(this.port), ...args], {
      stdio: 'ignore',
      env: ENV,
    });
    const deadline = Date.now() + 10_000;
    const url = `nbd://127.0.0.1:${this.port}`;
    while (
      (await runCommand('nbdinfo', ['--can', 'connect', url], { package: 'libnbd-bin' })).code
    ) {
      if (Date.now() > deadline) throw new Error(`nbdkit on ${this.port} did not come up`);
      await sleep(50);
    }
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
  }
}

/**
 * One qemu-io session (one iSCSI login, as a guest has), writeback: qemu-io's default is
 * writethrough (every write FUA, stable when acked), a guest's is writeback, which leaves
 * durability to the flushes. `at` runs each action once qemu-io printed its line (stdout is
 * line-buffered for that).
 */
async function session(
  target: string,
  script: readonly string[],
  at: readonly { readonly printed: RegExp; readonly action: () => Promise<void> }[],
): Promise<{ code: number | null; out: string }> {
  const qemu = spawn(
    'stdbuf',
    ['-oL', 'qemu-io', '-t', 'writeback', '-f', 'raw', ...script.flatMap((c) => ['-c', c]), target],
    { stdio: ['ignore', 'pipe', 'pipe'], env: ENV },
  );
  let out = '';
  qemu.stdout.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  qemu.stderr.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  const exited = new Promise<number | null>((resolve) => qemu.once('exit', resolve));
  for (const step of at) {
    const deadline = Date.now() + 30_000;
    while (!step.printed.test(out)) {
      if (Date.now() > deadline) throw new Error(`qemu-io never printed ${step.printed}: ${out}`);
      await sleep(20);
    }
    await step.action();
  }
  return { code: await exited, out };
}

/** The lines that tell what happened, in order. */
function events(out: string): string[] {
  return out.split('\n').filter((l) => /wrote|read|flush|fail|error/i.test(l));
}

describe(
  'bs_shale: writes acknowledged by an NBD server that died unflushed',
  { timeout: 120_000 },
  () => {
    let stateDir: string;
    let daemon: TgtDaemon;
    let iscsiPort: number;
    let memory: Nbdkit;
    let file: Nbdkit;
    let image: string;
    const iqn = (tid: number) => `iqn.2026-12.io.shale:lost-writes-${tid}`;

    before(async () => {
      stateDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bs-shale-lost-'));
      image = path.join(stateDir, 'lun.img');
      await fsp.writeFile(image, '');
      await fsp.truncate(image, LUN_BYTES);
      iscsiPort = await freePort();
      memory = new Nbdkit(await freePort());
      file = new Nbdkit(await freePort());
      await memory.start({ kind: 'memory' });
      await file.start({ kind: 'file', file: image, epoch: 'E1' });
      daemon = await TgtDaemon.start({
        // tgtd's control port is a number <= 32767 naming a socket, not a TCP port.
        control: 20_000 + (process.pid % 10_000),
        portal: parsePortal(`127.0.0.1:${iscsiPort}`),
        stateDir,
        log: (line) => console.log(`tgtd: ${line}`),
      });
      for (const [tid, server] of [
        [1, memory],
        [2, file],
      ] as const) {
        await daemon.admin.newTarget(tid, iqn(tid));
        await daemon.admin.newLun(tid, 1, {
          bstype: NATIVE_BSTYPE,
          backing: `nbd://127.0.0.1:${server.port}`,
          readOnly: false,
          thinProvisioning: false,
        });
        await daemon.admin.bindInitiator(tid, 'address', 'ALL');
      }
    });

    after(async () => {
      for (const tid of [1, 2]) {
        await daemon?.admin
          .deleteTarget(tid, true)
          .catch((err: unknown) => console.log(`cleanup: ${String(err)}`));
      }
      await daemon?.stop();
      await memory?.kill();
      await file?.kill();
      await fsp.rm(stateDir, { recursive: true, force: true });
    });

    test('no durable epoch: the flush after a death holding unflushed writes fails; a clean death is a pause; I/O goes on', async () => {
      const restart = async () => {
        await memory.kill();
        await memory.start({ kind: 'memory' });
      };
      const { code, out } = await session(
        `iscsi://127.0.0.1:${iscsiPort}/${iqn(1)}/1`,
        [
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
        ],
        [
          // 300 ms: the flush after the write is through (the kill lands in the sleep).
          {
            printed: /wrote 1048576\/1048576 bytes at offset 0\b/,
            action: () => sleep(300).then(restart),
          },
          { printed: /wrote 1048576\/1048576 bytes at offset 1048576\b/, action: restart },
        ],
      );
      const lines = events(out);
      assert.equal(
        lines.filter((l) => FLUSH_FAILED.test(l)).length,
        1,
        `exactly the flush after death 2 fails (death 1 had nothing unflushed):\n${out}`,
      );
      // The failure sits between the 0x22 write and the 0x33 write: the flush after death 2.
      const failAt = lines.findIndex((l) => FLUSH_FAILED.test(l));
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

    test('durable epoch: a restart with the same epoch covers unflushed writes (flush ok, bytes there); another epoch fails the flush', async () => {
      const restartAs = (epoch: string) => async () => {
        await file.kill();
        await file.start({ kind: 'file', file: image, epoch });
      };
      const { code, out } = await session(
        `iscsi://127.0.0.1:${iscsiPort}/${iqn(2)}/1`,
        [
          'write -P 0x44 0 1M',
          'sleep 2500', // restart, epoch E1 again: the write is in the file, the flush covers it
          'flush',
          'read -P 0x44 0 1M',
          'write -P 0x55 1M 1M',
          'sleep 2500', // restart as E2: bs_shale cannot know the write is kept
          'flush',
          'read -P 0x55 1M 1M',
        ],
        [
          { printed: /wrote 1048576\/1048576 bytes at offset 0\b/, action: restartAs('E1') },
          { printed: /wrote 1048576\/1048576 bytes at offset 1048576\b/, action: restartAs('E2') },
        ],
      );
      const lines = events(out);
      const failures = lines.flatMap((l, i) => (FLUSH_FAILED.test(l) ? [i] : []));
      assert.equal(failures.length, 1, `only the flush after the E2 restart fails:\n${out}`);
      const read1At = lines.findIndex((l) => /read 1048576\/1048576 bytes at offset 0\b/.test(l));
      const write2At = lines.findIndex((l) =>
        /wrote 1048576\/1048576 bytes at offset 1048576\b/.test(l),
      );
      assert.ok(
        read1At >= 0 && read1At < write2At && write2At < (failures[0] ?? -1),
        lines.join('\n'),
      );
      assert.match(out, /read 1048576\/1048576 bytes at offset 1048576/);
      assert.doesNotMatch(out, /Pattern verification failed/);
      assert.notEqual(code, 0, 'qemu-io exits non-zero: a command failed');
    });
  },
);
