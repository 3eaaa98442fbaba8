import { errorMessage, systemErrorCode } from '@shale/common';
import { FAN_OUT_DIRS, STATFS_REUSE_MARGIN_BYTES, STATFS_REUSE_MS } from './constants.js';
import { AsdErrorCode, asdError } from './errors.js';
import { fileIdOfKey, fileKey, GARBAGE_RANGE, garbageKey } from './index-keys.js';
import { fanDir, fsError, type StoreState } from './object-store-state.js';

/**
 * The ASD's space: the check every put passes (the file system's available bytes minus the
 * reserve and the puts in flight, and --capacity-bytes), the figures stats() and the
 * metrics report, and the removal of files no record needs: garbage (values overwritten or
 * deleted, marked in the commit that dropped them, removed after it and again at the next
 * start) and orphans (files of puts that never committed, swept after an unclean shutdown).
 */

export interface AsdStats {
  readonly asdId: string;
  readonly nodeId: string;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly freeBytes: number;
  readonly objectCount: number;
  readonly reserveBytes: number;
  readonly createdAtMs: number;
  /** `dev-<device>` of the directory's file system; '' when --capacity-bytes caps this ASD. */
  readonly filesystemId: string;
  /** When a put was last refused with ASD_NO_SPACE (0: never since start). */
  readonly lastNoSpaceAtMs: number;
}

export class StoreSpace {
  /**
   * The last statfs, and the bytes admitted since: a put far from full reuses it instead of
   * a statfs of its own (one was 4% of an ASD's CPU under small SCOs); see checkSpace.
   */
  private sample: { availableBytes: number; atMs: number; admittedBytes: number } | undefined;

  constructor(private readonly state: StoreState) {}

  async stats(): Promise<AsdStats> {
    const fs = await this.state.disk.statfs(this.state.dir);
    this.sample = { availableBytes: fs.availableBytes, atMs: Date.now(), admittedBytes: 0 };
    this.state.fsTotalBytes = fs.totalBytes;
    const fsFree = Math.max(
      0,
      fs.availableBytes - this.state.reserveBytes - this.state.inflightPutBytes,
    );
    const capacityBytes = this.capacityBytes();
    const capFree = Math.max(0, capacityBytes - this.state.usedBytes - this.state.inflightPutBytes);
    return {
      asdId: this.state.identity.asdId,
      nodeId: this.state.identity.nodeId,
      capacityBytes,
      usedBytes: this.state.usedBytes,
      freeBytes: Math.min(fsFree, capFree),
      objectCount: this.state.objectCount,
      reserveBytes: this.state.reserveBytes,
      createdAtMs: this.state.identity.createdAtMs,
      filesystemId: this.state.filesystemId,
      lastNoSpaceAtMs: this.state.lastNoSpaceAtMs,
    };
  }

  /** For metrics gauges: cheap, no I/O. */
  snapshot(): {
    objectCount: number;
    usedBytes: number;
    inflightPutBytes: number;
    capacityBytes: number;
  } {
    return {
      objectCount: this.state.objectCount,
      usedBytes: this.state.usedBytes,
      inflightPutBytes: this.state.inflightPutBytes,
      capacityBytes: this.capacityBytes(),
    };
  }

  private capacityBytes(): number {
    return this.state.capacityLimitBytes ?? this.state.fsTotalBytes;
  }

  /** Refuses a put that would eat into the reserve or past --capacity-bytes. */
  async checkSpace(neededBytes: number, ownInflightBytes: number): Promise<void> {
    const othersInflightBytes = this.state.inflightPutBytes - ownInflightBytes;
    if (this.state.capacityLimitBytes !== undefined) {
      const capFree = this.state.capacityLimitBytes - this.state.usedBytes - othersInflightBytes;
      if (neededBytes > capFree) {
        this.state.lastNoSpaceAtMs = Date.now();
        throw asdError(
          AsdErrorCode.NoSpace,
          `no space: ${neededBytes} bytes asked, ${Math.max(0, capFree)} left of this ASD's capacity ${this.state.capacityLimitBytes}`,
        );
      }
    }
    // Far from full, a statfs less than STATFS_REUSE_MS old serves, less what was admitted
    // since; what other processes wrote meanwhile is what STATFS_REUSE_MARGIN_BYTES covers.
    // Closer to full than that margin, every put asks the file system.
    const sample = this.sample;
    if (
      sample !== undefined &&
      Date.now() - sample.atMs < STATFS_REUSE_MS &&
      sample.availableBytes -
        sample.admittedBytes -
        othersInflightBytes -
        this.state.reserveBytes >=
        neededBytes + STATFS_REUSE_MARGIN_BYTES
    ) {
      sample.admittedBytes += neededBytes;
      return;
    }
    let availableBytes: number;
    try {
      availableBytes = (await this.state.disk.statfs(this.state.dir)).availableBytes;
    } catch (err) {
      throw fsError(err, 'checking free space');
    }
    this.sample = { availableBytes, atMs: Date.now(), admittedBytes: 0 };
    const fsFree = availableBytes - othersInflightBytes - this.state.reserveBytes;
    if (neededBytes > fsFree) {
      this.state.lastNoSpaceAtMs = Date.now();
      throw asdError(
        AsdErrorCode.NoSpace,
        `no space: ${neededBytes} bytes asked, ${Math.max(0, fsFree)} free above the ${this.state.reserveBytes}-byte reserve`,
      );
    }
    this.sample.admittedBytes += neededBytes;
  }

  // ---- Garbage and orphans -----------------------------------------------------------

  async removeGarbage(fileIds: readonly number[]): Promise<void> {
    const removed = await this.removeFiles(fileIds);
    if (removed.length === 0 || this.state.db.status !== 'open') return;
    this.state.metrics?.garbageFilesRemoved.inc(removed.length);
    await this.state.db.batch(
      removed.map((fileId) => ({ type: 'del' as const, key: garbageKey(fileId) })),
    );
  }

  /** Unlinks files; returns the ids that are gone (ENOENT counts as gone). */
  async removeFiles(fileIds: readonly number[]): Promise<number[]> {
    const gone: number[] = [];
    await Promise.all(
      fileIds.map(async (fileId) => {
        try {
          await this.state.fileHandles.retire(fileId);
          await this.state.disk.unlink(this.state.filePath(fileId));
          gone.push(fileId);
        } catch (err) {
          if (systemErrorCode(err) === 'ENOENT') gone.push(fileId);
          else
            this.state.log(
              `asd ${this.state.identity.asdId}: cannot remove ${this.state.filePath(fileId)}: ${errorMessage(err)}`,
            );
        }
      }),
    );
    return gone;
  }

  async collectRecordedGarbage(): Promise<void> {
    const ids: number[] = [];
    for await (const key of this.state.db.keys(GARBAGE_RANGE)) ids.push(fileIdOfKey(key));
    if (ids.length > 0) {
      this.state.log(
        `asd ${this.state.identity.asdId}: removing ${ids.length} garbage files left by the previous run`,
      );
      await this.removeGarbage(ids);
    }
  }

  /**
   * After an unclean shutdown: value files that no index record names (written by puts
   * that never committed) are removed. Only ids from before this run are considered.
   */
  async sweepOrphans(): Promise<void> {
    let orphans = 0;
    for (let dir = 0; dir < FAN_OUT_DIRS && !this.state.closing; dir += 1) {
      const names = await this.state.disk.readdir(fanDir(this.state.dir, dir));
      const ids = names
        .map((name) => (/^[0-9a-f]{12}$/.test(name) ? Number.parseInt(name, 16) : -1))
        .filter((id) => id > 0 && id < this.state.firstFileIdOfRun);
      for (let i = 0; i < ids.length; i += 1000) {
        const batch = ids.slice(i, i + 1000);
        const owners = await this.state.db.getMany(batch.map((id) => fileKey(id)));
        const unowned = batch.filter((_, index) => owners[index] === undefined);
        orphans += (await this.removeFiles(unowned)).length;
      }
    }
    if (!this.state.closing) this.state.sweepOwed = false;
    if (orphans > 0) {
      this.state.metrics?.orphanFilesRemoved.inc(orphans);
      this.state.log(
        `asd ${this.state.identity.asdId}: removed ${orphans} orphan value files of uncommitted puts`,
      );
    }
  }
}
