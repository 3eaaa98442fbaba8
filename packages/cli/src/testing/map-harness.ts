/**
 * What the `shale vdisk map` tests share: a real single-node cluster (`shale up` on a
 * temporary data dir, 3 ASDs), the CLI run against it with SHALE_DATA_DIR and
 * SHALE_MAP_DIR, host tools, and a cleanup that leaves no mount, loop device, nbdfuse or
 * daemon behind even when a test fails midway.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '@shale/framework-api';
import {
  type CommandResult,
  freePort,
  runCommand,
  mustRun as testingMustRun,
} from '@shale/testing';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'main.js');
const UP_READY_TIMEOUT_MS = 120_000;
const UP_STOP_TIMEOUT_MS = 60_000;

export type RunResult = CommandResult;

export interface RunOptions {
  readonly env?: Readonly<Record<string, string>>;
  readonly uid?: number;
  readonly input?: string;
  readonly timeoutMs?: number;
}

/** Runs a command to completion (SIGKILL after the timeout, 60 s by default). */
export function run(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  return runCommand(command, args, { ...options, timeoutMs: options.timeoutMs ?? 60_000 });
}

/** run, and throw (with its output) unless it exited 0; its stdout. */
export async function mustRun(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  const result = await testingMustRun(command, args, {
    ...options,
    timeoutMs: options.timeoutMs ?? 60_000,
  });
  return result.stdout;
}

/** The pid of the process whose command line holds every one of `needles` (read from /proc). */
export async function pidOf(needles: readonly string[]): Promise<number> {
  for (const entry of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = (await fsp.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => ''))
      .split('\0')
      .join(' ');
    if (needles.every((needle) => cmdline.includes(needle))) return Number(entry);
  }
  throw new Error(`no process with ${needles.join(' and ')} in its command line`);
}

export class MapHarness {
  /** Mountpoints the test made, unmounted by close(). */
  private readonly mounts: string[] = [];
  private stdoutText = '';
  private stderrText = '';

  private constructor(
    readonly dir: string,
    readonly dataDir: string,
    readonly mapDir: string,
    readonly nbdPort: number,
    readonly api: ApiClient,
    private up: ReturnType<typeof spawn>,
    private readonly upCommand: readonly string[],
  ) {}

  /**
   * Starts `shale up` (3 ASDs, plus `upArgs` of the test directory) on a fresh directory
   * and waits until it is ready.
   */
  static async start(
    prefix: string,
    upArgs: (dir: string) => readonly string[] = () => [],
  ): Promise<MapHarness> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
    const dataDir = path.join(dir, 'data');
    const nbdPort = await freePort();
    const apiPort = await freePort();
    const upCommand = [
      MAIN,
      'up',
      '--data-dir',
      dataDir,
      '--asds',
      '3',
      '--nbd-port',
      String(nbdPort),
      '--api-port',
      String(apiPort),
      // No iSCSI unless a test asks: parallel clusters would race for 3260.
      ...(upArgs(dir).includes('--iscsi-port') ? [] : ['--iscsi-port', '0']),
      ...upArgs(dir),
    ];
    const api = new ApiClient({ url: `http://127.0.0.1:${apiPort}`, token: '' });
    const harness = new MapHarness(
      dir,
      dataDir,
      path.join(dir, 'mapped'),
      nbdPort,
      api,
      MapHarness.spawnUp(upCommand),
      upCommand,
    );
    await harness.waitReady();
    const token = () => fs.readFileSync(path.join(dataDir, 'api-token'), 'utf8').trim();
    (harness as { api: ApiClient }).api = new ApiClient({
      url: `http://127.0.0.1:${apiPort}`,
      token: token(),
      requestTimeoutMs: 60_000,
    });
    return harness;
  }

  /** `shale up` in its own process group, so that close() can always end every daemon of it. */
  private static spawnUp(upCommand: readonly string[]): ReturnType<typeof spawn> {
    return spawn(process.execPath, [...upCommand], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
  }

  private async waitReady(): Promise<void> {
    const up = this.up;
    const from = this.stdoutText.length;
    up.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stdoutText += chunk;
    });
    up.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrText += chunk;
    });
    const deadline = Date.now() + UP_READY_TIMEOUT_MS;
    while (!this.stdoutText.slice(from).includes('shale up: ready')) {
      if (up.exitCode !== null || Date.now() > deadline) {
        await this.close();
        throw new Error(`shale up did not become ready:\n${this.upOutput()}`);
      }
      await sleep(100);
    }
  }

  /** Stops shale up with SIGTERM (every vDisk made durable) and starts it again on the same data. */
  async restart(): Promise<void> {
    const exited = new Promise((resolve) => this.up.once('exit', resolve));
    this.up.kill('SIGTERM');
    await exited;
    this.up = MapHarness.spawnUp(this.upCommand);
    await this.waitReady();
  }

  upOutput(): string {
    return `${this.stdoutText}\n${this.stderrText}`;
  }

  /** The shale CLI against this cluster and map dir. */
  shale(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return run(process.execPath, [MAIN, ...args], {
      ...options,
      env: { SHALE_DATA_DIR: this.dataDir, SHALE_MAP_DIR: this.mapDir, ...options.env },
    });
  }

  /** A new directory to mount on, and mount; close() unmounts it. */
  async mount(device: string, name: string, options: readonly string[] = []): Promise<string> {
    const mountpoint = path.join(this.dir, name);
    await fsp.mkdir(mountpoint, { recursive: true });
    if (!this.mounts.includes(mountpoint)) this.mounts.push(mountpoint);
    await mustRun('mount', [...options, device, mountpoint]);
    return mountpoint;
  }

  async umount(mountpoint: string): Promise<void> {
    await mustRun('umount', [mountpoint]);
  }

  /** The volumedriver's TRIM count of a vDisk (the API's live statistics). */
  async trimOps(vdisk: string): Promise<number> {
    const stats = (await this.api.getVdisk(vdisk)).stats;
    if (stats === undefined) throw new Error(`vDisk ${vdisk} has no statistics (not open?)`);
    return stats.trimOps;
  }

  /** The pid of this cluster's volumedriver (a child of shale up). */
  async volumedriverPid(): Promise<number> {
    return await pidOf([' volumedriver serve ', this.dataDir]);
  }

  /** Waits until shale up has restarted a dead child (its "is back" line). */
  async waitForRestart(what: string, count: number): Promise<void> {
    const deadline = Date.now() + 60_000;
    const pattern = new RegExp(`${what} is back`, 'g');
    while (
      (this.stderrText.match(pattern)?.length ?? 0) +
        (this.stdoutText.match(pattern)?.length ?? 0) <
      count
    ) {
      if (Date.now() > deadline) throw new Error(`${what} did not come back:\n${this.upOutput()}`);
      await sleep(100);
    }
  }

  /**
   * Leaves nothing behind, whatever state a failed test left: the test's mounts, every
   * mapping in this map dir (loop devices, FUSE mounts, nbdfuse), then shale up and its
   * daemons, then the directory. Problems are collected and thrown at the end.
   */
  async close(): Promise<void> {
    const problems: string[] = [];
    for (const mountpoint of [...this.mounts].reverse()) {
      if (!isMounted(mountpoint)) continue;
      const plain = await run('umount', [mountpoint]);
      if (plain.code !== 0) {
        const lazy = await run('umount', ['-l', mountpoint]);
        if (lazy.code !== 0) problems.push(`umount ${mountpoint}: ${lazy.stderr}`);
      }
    }
    await this.cleanMappings(problems);
    if (this.up.exitCode === null && this.up.signalCode === null) {
      const exited = new Promise((resolve) => this.up.once('exit', resolve));
      this.up.kill('SIGTERM');
      const cancel = new AbortController();
      const timer = sleep(UP_STOP_TIMEOUT_MS, 'timeout', { signal: cancel.signal }).catch(
        () => 'cancelled',
      );
      if ((await Promise.race([exited, timer])) === 'timeout') {
        problems.push('shale up did not stop on SIGTERM in time: SIGKILLed its process group');
      }
      cancel.abort();
    }
    try {
      process.kill(-(this.up.pid as number), 'SIGKILL');
    } catch {
      // The group has exited already: the usual case.
    }
    await fsp.rm(this.dir, { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`cleanup: ${problems.join('; ')}`);
  }

  private async cleanMappings(problems: string[]): Promise<void> {
    let names: string[] = [];
    try {
      names = (await fsp.readdir(this.mapDir)).filter((n) => !n.endsWith('.lock'));
    } catch {
      return; // Nothing was ever mapped.
    }
    for (const name of names) {
      const dir = path.join(this.mapDir, name);
      const fuse = path.join(dir, 'fuse');
      const record = JSON.parse(
        await fsp.readFile(path.join(dir, 'mapping.json'), 'utf8').catch(() => '{}'),
      ) as { device?: string; nbdfusePid?: number };
      if (record.device !== undefined) {
        const backing = (
          await fsp
            .readFile(`/sys/block/${path.basename(record.device)}/loop/backing_file`, 'utf8')
            .catch(() => '')
        ) // Not attached (any more).
          .trim();
        if (backing.startsWith(this.mapDir)) {
          for (const mountpoint of mountpointsOfSource(record.device))
            await run('umount', ['-l', mountpoint]);
          const detach = await run('losetup', ['-d', record.device]);
          if (detach.code !== 0) problems.push(`losetup -d ${record.device}: ${detach.stderr}`);
        }
      }
      if (isMounted(fuse)) {
        const unmount = await run('fusermount3', ['-u', '-z', fuse]);
        if (unmount.code !== 0) await run('umount', ['-l', fuse]);
      }
      const pid = record.nbdfusePid;
      if (pid !== undefined) {
        const cmdline = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmdline.includes(fuse)) process.kill(pid, 'SIGKILL');
      }
    }
  }
}

function mountLines(): string[][] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' '));
}

function isMounted(dir: string): boolean {
  return mountLines().some((fields) => fields[4] === dir);
}

function mountpointsOfSource(device: string): string[] {
  return mountLines()
    .filter((fields) => fields[fields.indexOf('-') + 2] === device)
    .map((fields) => fields[4] ?? '');
}
