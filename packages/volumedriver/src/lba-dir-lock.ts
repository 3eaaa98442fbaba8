import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { isShaleError, systemErrorCode } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';

/** Directories this process has an LbaMap open in (a second open here is refused too). */
const openHere = new Set<string>();
const LOCK_FILE = 'map.lock';
/** A stale lock (its process is gone) is taken over; a race for it tries this often. */
const LOCK_ATTEMPTS = 3;

/**
 * The exclusive lock of one LBA map directory: a file `map.lock` created with O_EXCL that
 * holds the owner's pid, plus this process's set of open directories. A lock file whose
 * pid is dead (kill(pid, 0) fails with ESRCH), unreadable or our own pid without the
 * directory being open here (a previous incarnation reusing the pid) is stale: it is
 * removed and taken. Limits: a live unrelated process that reuses a dead owner's pid
 * keeps the directory locked until it exits (delete map.lock by hand); two processes
 * taking over the same stale lock at the same instant can both win (the volumedriver
 * opens each vDisk once, from one process).
 */
export class DirLock {
  private constructor(
    readonly dir: string,
    private readonly lockPath: string,
  ) {}

  static async acquire(dir: string): Promise<DirLock> {
    if (openHere.has(dir)) {
      throw vdError(
        VdErrorCode.DirLocked,
        `LBA map ${dir} is already open in this process; one LbaMap per directory`,
        { details: { dir } },
      );
    }
    openHere.add(dir);
    const lockPath = path.join(dir, LOCK_FILE);
    try {
      for (let attempt = 1; ; attempt += 1) {
        try {
          const handle = await open(lockPath, 'wx');
          try {
            await handle.writeFile(`${process.pid}\n`);
          } finally {
            await handle.close();
          }
          return new DirLock(dir, lockPath);
        } catch (err) {
          if (systemErrorCode(err) !== 'EEXIST' || attempt >= LOCK_ATTEMPTS) throw err;
        }
        const owner = await readFile(lockPath, 'utf8').then(
          (text) => Number.parseInt(text, 10),
          () => Number.NaN,
        );
        if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
          throw vdError(
            VdErrorCode.DirLocked,
            `LBA map ${dir} is in use by another process (pid ${owner} holds ${LOCK_FILE}); one LbaMap per directory`,
            { details: { dir, pid: String(owner) } },
          );
        }
        await rm(lockPath, { force: true });
      }
    } catch (err) {
      openHere.delete(dir);
      if (isShaleError(err, VdErrorCode.DirLocked)) throw err;
      throw vdError(VdErrorCode.IoError, `cannot lock LBA map ${dir}: ${String(err)}`, {
        cause: err,
        details: { dir },
      });
    }
  }

  async release(): Promise<void> {
    try {
      await rm(this.lockPath, { force: true });
    } finally {
      openHere.delete(this.dir);
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but is not ours to signal; only ESRCH says it is gone.
    return systemErrorCode(err) !== 'ESRCH';
  }
}
