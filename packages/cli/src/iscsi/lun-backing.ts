/**
 * What a target's LUN reads and writes, in one of two ways:
 *
 *   native: tgtd --bstype shale -b nbd://EDGE/VDISK   (native/tgt-bs-shale: libnbd straight
 *           to the edge, many commands in flight, FUA/flush/trim/zero, reconnects)
 *   file:   tgtd --bstype rdwr -b STATE/fuse/<target>/nbd   (nbdfuse serving the export as
 *           a file; the fallback where the module is not installed)
 *
 * An nbdfuse belongs to this process: it does not reconnect, so when it dies (the edge
 * restarted) the reconciler sees its LUN as broken and makes the target again.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShaleError } from '@shale/common';
import type { IscsiTargetSpec } from '@shale/framework-api';
import { isMountpoint } from '../map/host-probe.js';
import { findTool, runTool } from '../map/host-tools.js';
import {
  FILE_BSTYPE,
  ISCSI_POLL_MS,
  NATIVE_BSTYPE,
  NBDFUSE_READY_TIMEOUT_MS,
} from './constants.js';
import type { TgtLun } from './tgt-admin.js';

export type BackingKind = 'native' | 'file';

export interface LunSource {
  readonly bstype: string;
  readonly path: string;
}

interface FuseMount {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly file: string;
  exited: boolean;
}

export class LunBacking {
  private readonly mounts = new Map<string, FuseMount>();

  constructor(
    readonly kind: BackingKind,
    /** The edge's NBD server, HOST:PORT. */
    private readonly nbd: string,
    private readonly stateDir: string,
    private readonly log: (line: string) => void,
  ) {}

  private get fuseRoot(): string {
    return path.join(this.stateDir, 'fuse');
  }

  private uri(vdisk: string): string {
    return `nbd://${this.nbd}/${encodeURIComponent(vdisk)}`;
  }

  /** What the LUN of `spec` has when it is right; undefined when it cannot be right yet. */
  expected(spec: IscsiTargetSpec): LunSource | undefined {
    if (this.kind === 'native') return { bstype: NATIVE_BSTYPE, path: this.uri(spec.vdisk) };
    const mount = this.mounts.get(spec.iqn);
    return mount === undefined || mount.exited
      ? undefined
      : { bstype: FILE_BSTYPE, path: mount.file };
  }

  /** Whether a LUN of tgtd was made by a Shale serve (its backing says so). */
  isOurs(lun: TgtLun): boolean {
    return (
      lun.backingType === NATIVE_BSTYPE || lun.backingPath.startsWith(`${this.fuseRoot}${path.sep}`)
    );
  }

  /** Makes the LUN's source (for file: starts nbdfuse and waits until it serves). */
  async acquire(spec: IscsiTargetSpec): Promise<LunSource> {
    if (this.kind === 'native') return { bstype: NATIVE_BSTYPE, path: this.uri(spec.vdisk) };
    await this.release(spec.iqn);
    const nbdfuse = findTool('nbdfuse');
    if (nbdfuse === undefined) {
      throw new ShaleError(
        'MAP_TOOL_MISSING',
        'nbdfuse is not installed: apt-get install -y libnbd-bin',
      );
    }
    const dir = path.join(
      this.fuseRoot,
      createHash('sha256').update(spec.iqn).digest('hex').slice(0, 16),
    );
    await this.unmountStale(dir);
    await fsp.mkdir(dir, { recursive: true });
    const file = path.join(dir, 'nbd');
    const child = spawn(nbdfuse, [...(spec.readOnly ? ['-r'] : []), dir, this.uri(spec.vdisk)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2048);
    });
    const mount: FuseMount = { child, dir, file, exited: false };
    child.once('exit', (code, signal) => {
      mount.exited = true;
      this.log(`nbdfuse for ${spec.iqn} exited (${signal ?? `exit ${code}`}) ${stderr.trim()}`);
    });
    child.once('error', () => {
      mount.exited = true;
    });
    const deadline = Date.now() + NBDFUSE_READY_TIMEOUT_MS;
    while (!fs.existsSync(file)) {
      if (mount.exited || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new ShaleError(
          'ISCSI_BACKING_FAILED',
          `nbdfuse ${this.uri(spec.vdisk)} did not serve: ${stderr.trim() || 'no output'}`,
        );
      }
      await sleep(ISCSI_POLL_MS);
    }
    this.mounts.set(spec.iqn, mount);
    return { bstype: FILE_BSTYPE, path: file };
  }

  /** Ends the target's nbdfuse (after tgtd let go of its file). */
  async release(iqn: string): Promise<void> {
    const mount = this.mounts.get(iqn);
    if (mount === undefined) return;
    this.mounts.delete(iqn);
    await this.unmountStale(mount.dir);
    if (!mount.exited) mount.child.kill('SIGTERM');
    const deadline = Date.now() + 5_000;
    while (!mount.exited && Date.now() < deadline) await sleep(ISCSI_POLL_MS);
    if (!mount.exited) mount.child.kill('SIGKILL');
  }

  async releaseAll(): Promise<void> {
    for (const iqn of [...this.mounts.keys()]) await this.release(iqn);
  }

  /** A FUSE mount left by a killed serve: detached lazily (nobody serves it any more). */
  private async unmountStale(dir: string): Promise<void> {
    if (!isMountpoint(dir)) return;
    const fusermount = findTool('fusermount3');
    if (fusermount !== undefined) {
      const result = await runTool(fusermount, ['-u', dir]);
      if (result.code === 0) return;
      await runTool(fusermount, ['-u', '-z', dir]);
    }
  }
}
