/**
 * What the kernel says about one mapping, read from /proc and /sys: is the loop device
 * attached to our FUSE file, is nbdfuse alive and still connected to the NBD server, is
 * the FUSE mount there, where is the device mounted, does anything hold it exclusively.
 */
import fs from 'node:fs';
import path from 'node:path';

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** "loop3" from "/dev/loop3"; undefined for anything that is not a loop device node. */
export function loopName(device: string): string | undefined {
  const match = /^\/dev\/(loop\d+)$/.exec(device);
  return match?.[1];
}

/** The file a loop device reads and writes, or undefined when it is not attached. */
export function loopBackingFile(device: string): string | undefined {
  const name = loopName(device);
  if (name === undefined) return undefined;
  const text = readText(`/sys/block/${name}/loop/backing_file`);
  return text === undefined ? undefined : text.trim();
}

/** Whether the loop device does direct I/O on its file (losetup --direct-io=on took). */
export function loopDirectIo(device: string): boolean {
  const name = loopName(device);
  return name !== undefined && readText(`/sys/block/${name}/loop/dio`)?.trim() === '1';
}

interface MountEntry {
  readonly majorMinor: string;
  readonly mountpoint: string;
  readonly fstype: string;
  readonly source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const unescapeMountinfo = (text: string): string =>
  text.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );

function mountEntries(): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of (readText('/proc/self/mountinfo') ?? '').split('\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6) continue;
    entries.push({
      majorMinor: fields[2] ?? '',
      mountpoint: unescapeMountinfo(fields[4] ?? ''),
      fstype: fields[dash + 1] ?? '',
      source: unescapeMountinfo(fields[dash + 2] ?? ''),
    });
  }
  return entries;
}

function majorMinorOf(device: string): string | undefined {
  try {
    const rdev = fs.statSync(device).rdev;
    // Linux dev_t: major in bits 8..19 (and 32..), minor in bits 0..7 and 20..31.
    const major = ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
    const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    return `${major}:${minor}`;
  } catch {
    return undefined;
  }
}

/** Where a block device is mounted (every mountpoint; bind mounts included). */
export function mountpointsOf(device: string): string[] {
  const majorMinor = majorMinorOf(device);
  return mountEntries()
    .filter((m) => m.source === device || (majorMinor !== undefined && m.majorMinor === majorMinor))
    .map((m) => m.mountpoint);
}

/** Whether dir is a mountpoint (any file system type). */
export function isMountpoint(dir: string): boolean {
  const resolved = path.resolve(dir);
  return mountEntries().some((m) => m.mountpoint === resolved);
}

/**
 * Whether something holds the device exclusively (a mounted file system, a device mapper
 * table, mkfs): an O_EXCL open of a block device fails with EBUSY then.
 */
export function heldExclusively(device: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(device, fs.constants.O_RDONLY | fs.constants.O_EXCL);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EBUSY';
  }
  fs.closeSync(fd);
  return false;
}

/** Whether pid is a live nbdfuse serving mountpoint (not a recycled pid). */
export function nbdfuseAlive(pid: number, mountpoint: string): boolean {
  const cmdline = readText(`/proc/${pid}/cmdline`);
  if (cmdline === undefined) return false;
  const args = cmdline.split('\0');
  const state = /\) (\S) /.exec(readText(`/proc/${pid}/stat`) ?? '')?.[1];
  return (
    state !== 'Z' &&
    path.basename(args[0] ?? '') === 'nbdfuse' &&
    args.some((arg) => arg === mountpoint || arg.startsWith(`${mountpoint}/`))
  );
}

/**
 * nbdfuse's NBD connections: its socket fds, looked up in its network namespace's TCP
 * tables. nbdfuse never reconnects: when the server goes away (a volumedriver restart),
 * libnbd closes its sockets and every read and write fails with EIO from then on.
 */
export function nbdConnections(pid: number): { established: number; down: number } {
  const inodes = new Set<string>();
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return { established: 0, down: 0 };
  }
  for (const fd of fds) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match?.[1] !== undefined) inodes.add(match[1]);
    } catch {
      // Closed meanwhile.
    }
  }
  let established = 0;
  for (const table of ['tcp', 'tcp6']) {
    for (const row of (readText(`/proc/${pid}/net/${table}`) ?? '').split('\n').slice(1)) {
      const cols = row.trim().split(/\s+/);
      // sl local remote st tx:rx tr:when retrnsmt uid timeout inode
      if (cols[9] !== undefined && inodes.has(cols[9]) && cols[3] === '01') established += 1;
    }
  }
  return { established, down: inodes.size - established };
}
