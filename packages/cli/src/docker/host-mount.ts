/**
 * The file system on a mapped vDisk: probe it, make it on first use, mount and unmount it.
 * Real host tools only (blkid, mkfs.ext4, mkfs.xfs, mount, umount), run as root.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ShaleError } from '@shale/common';
import { isMountpoint, mountpointsOf } from '../map/host-probe.js';
import { findTool, runTool } from '../map/host-tools.js';
import { MKFS_TIMEOUT_MS } from './constants.js';
import type { FileSystem } from './volume-options.js';

/** The host tools the plugin needs besides the mapper's, with their Debian packages. */
export const MOUNT_TOOL_PACKAGES: Readonly<Record<string, string>> = {
  blkid: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  'mkfs.ext4': 'e2fsprogs',
  'mkfs.xfs': 'xfsprogs',
};

function tool(name: string): string {
  const found = findTool(name);
  if (found === undefined) {
    throw new ShaleError(
      'DOCKER_TOOL_MISSING',
      `${name} is not installed on this host (apt-get install ${MOUNT_TOOL_PACKAGES[name] ?? name})`,
    );
  }
  return found;
}

function failed(what: string, result: { code: number | null; stderr: string }): ShaleError {
  return new ShaleError(
    'DOCKER_HOST_FAILED',
    `${what} failed (${result.code === null ? 'timed out' : `exit ${result.code}`}): ${result.stderr.trim()}`,
  );
}

/** The file system type on a device, undefined when it has none (blkid -p exits 2). */
export async function fileSystemOf(device: string): Promise<string | undefined> {
  const result = await runTool(tool('blkid'), ['-p', '-s', 'TYPE', '-o', 'value', device]);
  if (result.code === 2) return undefined;
  if (result.code !== 0) throw failed(`blkid ${device}`, result);
  const type = result.stdout.trim();
  return type.length === 0 ? undefined : type;
}

/**
 * Makes a file system on a new (all-zero, thin) vDisk. No discard pass: every block of a
 * new vDisk reads as zeros already, and a whole-device trim would only cost time.
 */
export async function makeFileSystem(device: string, fs: FileSystem, label: string): Promise<void> {
  const args =
    fs === 'ext4'
      ? ['-q', '-F', '-E', 'nodiscard', '-L', label.slice(0, 16), device]
      : ['-q', '-K', '-L', label.slice(0, 12), device];
  const result = await runTool(tool(`mkfs.${fs}`), args, MKFS_TIMEOUT_MS);
  if (result.code !== 0) throw failed(`mkfs.${fs} ${device}`, result);
}

/** Mounts device on dir (made if missing); nothing to do when it is mounted there already. */
export async function mountFileSystem(device: string, dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
  if (mountpointsOf(device).includes(path.resolve(dir))) return;
  if (isMountpoint(dir)) {
    throw new ShaleError(
      'DOCKER_HOST_FAILED',
      `${dir} has another file system mounted on it; unmount it first`,
    );
  }
  const result = await runTool(tool('mount'), [device, dir]);
  if (result.code !== 0) throw failed(`mount ${device} ${dir}`, result);
}

/**
 * Unmounts dir (nothing to do when it is not a mountpoint). A busy file system is not
 * unmounted lazily: DOCKER_VOLUME_BUSY says what still uses it, and nothing changes.
 */
export async function unmountFileSystem(dir: string): Promise<void> {
  if (!isMountpoint(dir)) return;
  const result = await runTool(tool('umount'), [dir]);
  if (result.code === 0) return;
  if (/busy/i.test(result.stderr)) {
    throw new ShaleError(
      'DOCKER_VOLUME_BUSY',
      `${dir} is still in use by a process outside Docker (umount: ${result.stderr.trim()}); stop it and unmount again`,
    );
  }
  throw failed(`umount ${dir}`, result);
}

export { isMountpoint };
