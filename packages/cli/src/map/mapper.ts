/**
 * Maps a vDisk to a kernel block device without the kernel's nbd module:
 *
 *   NBD server (the vDisk's export) <- nbdfuse (MAP_DIR/NAME/fuse/nbd) <- losetup --direct-io
 *   (/dev/loopN) <- mkfs, mount, fstrim
 *
 * Discard passes through: the loop device punches holes in its file (FALLOC_FL_PUNCH_HOLE),
 * which nbdfuse sends as NBD trims. A mapping's life:
 *
 *   (none) --map--> ok --nbdfuse dies / NBD server restarts / host reboots--> broken
 *     ^              |                                                          |
 *     +----unmap-----+<------------ map again (repair: same loop device) -------+
 *
 * A repair needs the device closed: a file system mounted on a broken mapping has seen
 * I/O errors and must be unmounted first (MAP_DEVICE_BUSY says so).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShaleError } from '@shale/common';
import {
  LOG_TAIL_BYTES,
  NBDFUSE_EXIT_TIMEOUT_MS,
  NBDFUSE_READY_TIMEOUT_MS,
  POLL_INTERVAL_MS,
} from './constants.js';
import {
  heldExclusively,
  isMountpoint,
  loopBackingFile,
  loopDirectIo,
  mountpointsOf,
  nbdConnections,
  nbdfuseAlive,
} from './host-probe.js';
import {
  mustRunTool,
  requireFuseDevice,
  requireRoot,
  requireTools,
  runTool,
} from './host-tools.js';
import {
  listRecords,
  type MappingPaths,
  type MapRecord,
  mappingPaths,
  readRecord,
  withLock,
  writeRecord,
} from './map-record.js';

export interface MappingStatus {
  readonly record: MapRecord;
  readonly health: 'ok' | 'broken';
  /** Why it is broken, one sentence each; empty when ok. */
  readonly problems: readonly string[];
  /** Where the device is mounted (only while it is attached to this mapping's file). */
  readonly mountpoints: readonly string[];
  readonly directIo: boolean;
}

/** The health of one recorded mapping, from the kernel's point of view. */
export function inspect(root: string, record: MapRecord): MappingStatus {
  const paths = mappingPaths(root, record.vdisk);
  const problems: string[] = [];
  const backing = loopBackingFile(record.device);
  const attached = backing === paths.file;
  if (backing === undefined) problems.push(`${record.device} is not attached`);
  else if (!attached) problems.push(`${record.device} now belongs to ${backing}`);
  if (!nbdfuseAlive(record.nbdfusePid, paths.mountpoint)) {
    problems.push(`nbdfuse (pid ${record.nbdfusePid}) is not running: I/O fails`);
  } else {
    const connections = nbdConnections(record.nbdfusePid);
    if (connections.established === 0 || connections.down > 0) {
      problems.push(
        `nbdfuse lost its NBD connection to ${record.nbd} (${connections.established} of ${connections.established + connections.down} up): I/O fails`,
      );
    }
    if (!isMountpoint(paths.mountpoint))
      problems.push(`the FUSE mount ${paths.mountpoint} is gone`);
  }
  return {
    record,
    health: problems.length === 0 ? 'ok' : 'broken',
    problems,
    mountpoints: attached ? mountpointsOf(record.device) : [],
    directIo: attached && loopDirectIo(record.device),
  };
}

export async function listMappings(root: string): Promise<MappingStatus[]> {
  return (await listRecords(root)).map((record) => inspect(root, record));
}

/** Root, /dev/fuse and the tools, before anything else is asked (also of the cluster). */
export function checkHost(verb: string, tools: readonly string[]): Map<string, string> {
  requireRoot(verb);
  requireFuseDevice();
  return requireTools(tools);
}

export const MAP_TOOLS = ['nbdfuse', 'fusermount3', 'losetup', 'umount'];

export interface MapRequest {
  readonly root: string;
  readonly vdisk: string;
  /** HOST:PORT of the NBD server that exports the vDisk under its name. */
  readonly nbd: string;
  readonly readOnly: boolean;
  readonly sizeBytes: number;
}

/**
 * Maps a vDisk; a recorded mapping that is broken is repaired (on the same loop device
 * when it is free), a healthy one is MAP_ALREADY_MAPPED.
 */
export async function mapVdisk(
  request: MapRequest,
): Promise<{ device: string; repaired: boolean }> {
  const tools = checkHost('map', MAP_TOOLS);
  const paths = mappingPaths(request.root, request.vdisk);
  return withLock(paths, async () => {
    const existing = await readRecord(paths);
    if (existing !== undefined) {
      const status = inspect(request.root, existing);
      const mode = existing.readOnly ? 'read-only' : 'read-write';
      if (existing.readOnly !== request.readOnly) {
        throw new ShaleError(
          'MAP_ALREADY_MAPPED',
          `vDisk ${request.vdisk} is mapped ${mode} at ${existing.device} (${status.health}); unmap it first to map it ${request.readOnly ? 'read-only' : 'read-write'}`,
        );
      }
      if (status.health === 'ok') {
        throw new ShaleError(
          'MAP_ALREADY_MAPPED',
          `vDisk ${request.vdisk} is already mapped at ${existing.device} (${mode})`,
          { details: { device: existing.device } },
        );
      }
      const device = await repair(tools, paths, existing, request);
      return { device, repaired: true };
    }
    await fsp.mkdir(paths.mountpoint, { recursive: true, mode: 0o700 });
    const pid = await startNbdfuse(tools, paths, request);
    let device: string;
    try {
      device = await attachLoop(tools, paths, request.readOnly, undefined);
    } catch (err) {
      await stopNbdfuse(tools, paths, pid, false);
      await fsp.rm(paths.dir, { recursive: true, force: true });
      throw err;
    }
    await writeRecord(paths, {
      vdisk: request.vdisk,
      nbd: request.nbd,
      readOnly: request.readOnly,
      sizeBytes: request.sizeBytes,
      method: 'nbdfuse-loop',
      device,
      nbdfusePid: pid,
      mappedAtMs: Date.now(),
    });
    return { device, repaired: false };
  });
}

/**
 * Repairs one recorded mapping if it is (still) broken, with its recorded mode and size, on
 * `nbd` (default: the recorded NBD server). Returns the device and whether it repaired.
 */
export async function repairMapping(
  root: string,
  vdisk: string,
  nbd: string | undefined,
): Promise<{ device: string; repaired: boolean }> {
  const tools = checkHost('mapped --repair', MAP_TOOLS);
  const paths = mappingPaths(root, vdisk);
  return withLock(paths, async () => {
    const record = await readRecord(paths);
    if (record === undefined) {
      throw new ShaleError('MAP_NOT_MAPPED', `${vdisk} is not mapped on this host any more`);
    }
    if (inspect(root, record).health === 'ok') return { device: record.device, repaired: false };
    const request = { ...record, root, nbd: nbd ?? record.nbd };
    return { device: await repair(tools, paths, record, request), repaired: true };
  });
}

async function repair(
  tools: Map<string, string>,
  paths: MappingPaths,
  record: MapRecord,
  request: MapRequest,
): Promise<string> {
  const attached = loopBackingFile(record.device) === paths.file;
  if (attached) {
    const mounts = mountpointsOf(record.device);
    if (mounts.length > 0 || heldExclusively(record.device)) {
      throw new ShaleError(
        'MAP_DEVICE_BUSY',
        `vDisk ${record.vdisk} at ${record.device} is broken and ${mounts.length > 0 ? `mounted at ${mounts.join(', ')}` : 'in use'}: its I/O fails until repaired, and the repair needs the device closed; unmount it, then run "shale vdisk map ${record.vdisk}${record.readOnly ? ' --read-only' : ''}" again`,
      );
    }
    await mustRunTool(tool(tools, 'losetup'), ['-d', record.device]);
  }
  await stopNbdfuse(tools, paths, record.nbdfusePid, false);
  const pid = await startNbdfuse(tools, paths, request);
  let device: string;
  try {
    // The same device number when it is free, so that fstab lines and scripts still hold.
    device = await attachLoop(
      tools,
      paths,
      request.readOnly,
      loopBackingFile(record.device) === undefined ? record.device : undefined,
    );
  } catch (err) {
    await stopNbdfuse(tools, paths, pid, false);
    throw err;
  }
  await writeRecord(paths, {
    ...record,
    nbd: request.nbd,
    sizeBytes: request.sizeBytes,
    device,
    nbdfusePid: pid,
    repairedAtMs: Date.now(),
  });
  return device;
}

function tool(tools: Map<string, string>, name: string): string {
  const at = tools.get(name);
  if (at === undefined) throw new Error(`assertion: tool ${name} was not looked up`);
  return at;
}

async function logTail(paths: MappingPaths): Promise<string> {
  const text = await fsp.readFile(paths.log, 'utf8').catch(() => '');
  return text.slice(-LOG_TAIL_BYTES).trim() || '(no output)';
}

/** Starts nbdfuse in its own session (it outlives this command) and waits until it serves. */
async function startNbdfuse(
  tools: Map<string, string>,
  paths: MappingPaths,
  request: MapRequest,
): Promise<number> {
  if (isMountpoint(paths.mountpoint)) await unmountFuse(tools, paths, false);
  await fsp.rm(paths.pidFile, { force: true });
  const log = fs.openSync(paths.log, 'a');
  const uri = `nbd://${request.nbd}/${encodeURIComponent(request.vdisk)}`;
  const child = spawn(
    tool(tools, 'nbdfuse'),
    [...(request.readOnly ? ['-r'] : []), '-P', paths.pidFile, paths.mountpoint, uri],
    { detached: true, stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = signal === null ? `exit ${code}` : signal;
  });
  child.once('error', (err) => {
    exited = err.message;
  });
  child.unref();
  const deadline = Date.now() + NBDFUSE_READY_TIMEOUT_MS;
  for (;;) {
    if (exited !== undefined) {
      throw new ShaleError(
        'MAP_NBDFUSE_FAILED',
        `nbdfuse ${uri} stopped (${exited}): ${await logTail(paths)}`,
      );
    }
    const pid = Number((await fsp.readFile(paths.pidFile, 'utf8').catch(() => '')).trim());
    if (pid > 0 && fs.existsSync(paths.file)) return pid;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new ShaleError(
        'MAP_NBDFUSE_FAILED',
        `nbdfuse ${uri} did not serve within ${NBDFUSE_READY_TIMEOUT_MS} ms: ${await logTail(paths)}`,
      );
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

/** losetup --direct-io=on over nbdfuse's file: on `device` when given, else the first free one. */
async function attachLoop(
  tools: Map<string, string>,
  paths: MappingPaths,
  readOnly: boolean,
  device: string | undefined,
): Promise<string> {
  const args = ['--direct-io=on', ...(readOnly ? ['-r'] : [])];
  const losetup = tool(tools, 'losetup');
  if (device !== undefined) {
    const same = await runTool(losetup, [...args, device, paths.file]);
    if (same.code === 0) return device;
  }
  const stdout = await mustRunTool(losetup, [...args, '--show', '-f', paths.file]);
  const attached = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(attached)) {
    throw new ShaleError('MAP_TOOL_FAILED', `losetup printed "${attached}", not a loop device`);
  }
  return attached;
}

/**
 * Unmounts nbdfuse's FUSE mount. A loop device that the kernel has not released yet keeps
 * it busy for a moment after losetup -d: retried, then lazily when `lazy` (nbdfuse then
 * serves until the last user lets go, and exits by itself).
 */
async function unmountFuse(
  tools: Map<string, string>,
  paths: MappingPaths,
  lazy: boolean,
): Promise<void> {
  const fusermount = tool(tools, 'fusermount3');
  const deadline = Date.now() + NBDFUSE_EXIT_TIMEOUT_MS;
  let last = '';
  while (isMountpoint(paths.mountpoint)) {
    const result = await runTool(fusermount, ['-u', paths.mountpoint]);
    if (result.code === 0) return;
    last = result.stderr.trim();
    if (Date.now() > deadline) {
      if (lazy) {
        await mustRunTool(fusermount, ['-u', '-z', paths.mountpoint]);
        return;
      }
      // A dead connection's mount: the kernel lets root detach it lazily.
      const umount = await runTool(tool(tools, 'umount'), ['-l', paths.mountpoint]);
      if (umount.code === 0) return;
      throw new ShaleError('MAP_TOOL_FAILED', `cannot unmount ${paths.mountpoint}: ${last}`);
    }
    await sleep(POLL_INTERVAL_MS * 4);
  }
}

/** Ends nbdfuse: unmount its FUSE mount (it then exits), SIGTERM and SIGKILL if it lingers. */
async function stopNbdfuse(
  tools: Map<string, string>,
  paths: MappingPaths,
  pid: number,
  lazy: boolean,
): Promise<void> {
  await unmountFuse(tools, paths, lazy);
  if (lazy) return;
  for (const signal of [undefined, 'SIGTERM', 'SIGKILL'] as const) {
    if (signal !== undefined && nbdfuseAlive(pid, paths.mountpoint)) process.kill(pid, signal);
    const deadline = Date.now() + NBDFUSE_EXIT_TIMEOUT_MS / 3;
    while (nbdfuseAlive(pid, paths.mountpoint) && Date.now() < deadline) {
      await sleep(POLL_INTERVAL_MS);
    }
  }
  if (nbdfuseAlive(pid, paths.mountpoint)) {
    throw new ShaleError(
      'MAP_TOOL_FAILED',
      `nbdfuse (pid ${pid}) does not exit, even after SIGKILL`,
    );
  }
}

/** The mapping named by a vDisk name or by its device (/dev/loopN), or MAP_NOT_MAPPED. */
export async function findMapping(root: string, target: string): Promise<MapRecord> {
  const records = await listRecords(root);
  let device = target;
  if (target.startsWith('/')) device = await fsp.realpath(target).catch(() => target);
  const record =
    records.find((r) => r.vdisk === target) ?? records.find((r) => r.device === device);
  if (record === undefined) {
    throw new ShaleError(
      'MAP_NOT_MAPPED',
      `${target} is not mapped on this host (see shale vdisk mapped; records in ${root})`,
    );
  }
  return record;
}

/**
 * Unmaps: refuses a device that is mounted (MAP_DEVICE_MOUNTED) or held (MAP_DEVICE_BUSY)
 * unless force, which unmounts its file systems first (lazily when busy).
 */
export async function unmapVdisk(root: string, target: string, force: boolean): Promise<MapRecord> {
  const tools = checkHost('unmap', ['fusermount3', 'losetup', 'umount']);
  const found = await findMapping(root, target);
  const paths = mappingPaths(root, found.vdisk);
  return withLock(paths, async () => {
    const record = (await readRecord(paths)) ?? found;
    const attached = loopBackingFile(record.device) === paths.file;
    let lazy = false;
    if (attached) {
      const mounts = mountpointsOf(record.device);
      if (!force && mounts.length > 0) {
        throw new ShaleError(
          'MAP_DEVICE_MOUNTED',
          `${record.device} (vDisk ${record.vdisk}) is mounted at ${mounts.join(', ')}: unmount it first, or pass --force to unmount it`,
        );
      }
      if (!force && heldExclusively(record.device)) {
        throw new ShaleError(
          'MAP_DEVICE_BUSY',
          `${record.device} (vDisk ${record.vdisk}) is in use (held open exclusively); stop its user first, or pass --force`,
        );
      }
      // Deepest first, so that a mount inside another comes off before it.
      for (const mountpoint of [...mounts].sort((a, b) => b.length - a.length)) {
        const result = await runTool(tool(tools, 'umount'), [mountpoint]);
        if (result.code !== 0) {
          await mustRunTool(tool(tools, 'umount'), ['-l', mountpoint]);
          lazy = true;
        }
      }
      // Still open by someone: the kernel detaches it when the last user closes it.
      await mustRunTool(tool(tools, 'losetup'), ['-d', record.device]);
    }
    await stopNbdfuse(tools, paths, record.nbdfusePid, lazy);
    if (isMountpoint(paths.mountpoint)) await fsp.rm(paths.record, { force: true });
    else await fsp.rm(paths.dir, { recursive: true, force: true });
    return record;
  });
}
