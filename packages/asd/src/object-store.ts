import nodeFs from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, systemErrorCode } from '@shale/common';
import { ClassicLevel } from 'classic-level';
import { FAN_OUT_DIRS } from './constants.js';
import { nodeDisk } from './disk.js';
import { AsdErrorCode, asdError } from './errors.js';
import { type AsdIdentity, loadOrCreateIdentity } from './identity.js';
import type { AsdMetrics } from './metrics.js';
import {
  type GetValue,
  type ItemResult,
  type ListEntry,
  StoreReader,
} from './object-store-read.js';
import { type AsdStats, StoreSpace } from './object-store-space.js';
import {
  type AsdStoreOptions,
  decodeStats,
  fanDir,
  META_FILE_ID_HIGH,
  META_STATE,
  META_STATS,
  STATE_CLEAN,
  STATE_RUNNING,
  type StoreInit,
  StoreState,
} from './object-store-state.js';
import { StoreWriter } from './object-store-write.js';
import type { PutItem, Slice } from './request-validation.js';

export type { GetValue, ItemResult, ListEntry } from './object-store-read.js';
export type { AsdStats } from './object-store-space.js';
export type { AsdStoreOptions } from './object-store-state.js';

/**
 * The ASD's object store: one directory, one disk.
 *
 *   <dir>/asd-identity.json   who this ASD is (identity.ts)
 *   <dir>/index/              LevelDB: object records, small values inline, metadata
 *   <dir>/objects/00..ff/     values larger than INLINE_MAX_BYTES, one file each,
 *                             named by a never-reused file id (hex), never by the key
 *
 * Put (a call's objects, all or nothing):
 *   check request -> check space -> checksum blocks -> write value files (fsync each)
 *   -> commit queue -> [group commit: fsync touched dirs -> one LevelDB batch, fsync]
 *   -> reply -> unlink files of overwritten values (garbage)
 *
 * A value file becomes visible only through the index batch that names it, so a crash
 * leaves either the old object or the new one, never half of one. Files written by a
 * put that never committed are orphans; the first start after an unclean shutdown
 * sweeps them (sweepOrphans in object-store-space.ts). Garbage files are recorded in the
 * same batch that drops their object, and removed after it, again at the next start if
 * need be.
 *
 * This class is the facade and the lifecycle (open, the call gate, close); the work is in:
 *
 *   object-store-write.ts  StoreWriter: put, delete, the group commit
 *   object-store-read.ts   StoreReader: get, getRanges, list
 *   object-store-space.ts  StoreSpace: the space check, stats, garbage and orphan removal
 *   object-store-state.ts  StoreState: what they share (disk, index, counters, caches)
 */

export class AsdStore {
  readonly identity: AsdIdentity;
  readonly dir: string;

  private readonly state: StoreState;
  private readonly writer: StoreWriter;
  private readonly reader: StoreReader;
  private readonly space: StoreSpace;
  private activeCalls = 0;
  private callsDrained: (() => void) | undefined;

  private constructor(init: StoreInit) {
    this.state = new StoreState(init);
    this.identity = this.state.identity;
    this.dir = this.state.dir;
    this.space = new StoreSpace(this.state);
    this.writer = new StoreWriter(this.state, this.space);
    this.reader = new StoreReader(this.state);
  }

  /** Metrics to count into (set by the daemon once it has them). */
  get metrics(): AsdMetrics | undefined {
    return this.state.metrics;
  }

  set metrics(metrics: AsdMetrics | undefined) {
    this.state.metrics = metrics;
  }

  static async open(options: AsdStoreOptions): Promise<AsdStore> {
    const disk = options.disk ?? nodeDisk;
    const dir = path.resolve(options.dir);
    await disk.mkdir(dir);
    const { identity, created, claimed } = await loadOrCreateIdentity(disk, dir, {
      asdId: options.asdId,
      nodeId: options.nodeId,
      claim: options.claim ?? false,
    });

    const db = new ClassicLevel<Buffer, Buffer>(path.join(dir, 'index'), {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    try {
      await db.open();
    } catch (err) {
      if (isLockedError(err)) {
        throw asdError(
          AsdErrorCode.DirLocked,
          `${dir} is in use by another ASD process (its index is locked)`,
          { cause: err },
        );
      }
      throw asdError(
        AsdErrorCode.IoError,
        `cannot open the index in ${dir}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }

    try {
      await disk.mkdir(path.join(dir, 'objects'));
      for (let i = 0; i < FAN_OUT_DIRS; i += 1) await disk.mkdir(fanDir(dir, i));
      await disk.fsyncDir(path.join(dir, 'objects'));
      await disk.fsyncDir(dir);

      const [rawStats, rawHigh, rawState] = await db.getMany([
        META_STATS,
        META_FILE_ID_HIGH,
        META_STATE,
      ]);
      const stats =
        rawStats === undefined ? { objectCount: 0, usedBytes: 0 } : decodeStats(rawStats);
      const fileIdHigh = rawHigh === undefined ? 0 : rawHigh.readUIntBE(0, 6);
      const unclean = rawState?.equals(STATE_RUNNING) === true;
      const fs = await disk.statfs(dir);

      const store = new AsdStore({
        options: { ...options, dir },
        identity,
        db,
        disk,
        fsTotalBytes: fs.totalBytes,
        filesystemId: `dev-${(await nodeFs.stat(dir)).dev}`,
        stats,
        fileIdHigh,
      });
      // Mark the run unclean until close() says otherwise; the next start sweeps orphans if not.
      await db.put(META_STATE, STATE_RUNNING, { sync: true });
      store.state.log(
        `asd ${identity.asdId} (node ${identity.nodeId}) ${created ? 'created' : claimed ? 'claimed' : 'opened'} ${dir}: ${stats.objectCount} objects, ${stats.usedBytes} bytes${unclean ? ', previous run ended uncleanly' : ''}`,
      );
      store.state.track(store.space.collectRecordedGarbage());
      if (unclean) {
        store.state.sweepOwed = true;
        store.state.track(store.space.sweepOrphans());
      }
      return store;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  /** Stores every item or none; resolves once all are durable. Returns each value's CRC32C. */
  async put(items: readonly PutItem[]): Promise<number[]> {
    return this.call(() => this.writer.put(items));
  }

  /** Deletes every key in one atomic, durable commit. Returns whether each key existed. */
  async delete(keys: readonly Uint8Array[]): Promise<boolean[]> {
    return this.call(() => this.writer.delete(keys));
  }

  async get(keys: readonly Uint8Array[]): Promise<ItemResult<GetValue>[]> {
    return this.call(() => this.reader.get(keys));
  }

  async getRanges(slices: readonly Slice[]): Promise<ItemResult<Buffer>[]> {
    return this.call(() => this.reader.getRanges(slices));
  }

  async list(options: {
    prefix?: Uint8Array | undefined;
    startAfter?: Uint8Array | undefined;
    limit?: number | undefined;
  }): Promise<{ entries: ListEntry[]; more: boolean }> {
    return this.call(() => this.reader.list(options));
  }

  async stats(): Promise<AsdStats> {
    return this.space.stats();
  }

  health(): { status: 'ok' | 'degraded'; reason: string } {
    if (this.state.degradedReason !== undefined)
      return { status: 'degraded', reason: this.state.degradedReason };
    return { status: 'ok', reason: '' };
  }

  /** For metrics gauges: cheap, no I/O. */
  snapshot(): {
    objectCount: number;
    usedBytes: number;
    inflightPutBytes: number;
    capacityBytes: number;
  } {
    return this.space.snapshot();
  }

  /** Waits for calls in progress, writes the clean-shutdown mark, closes the index. */
  async close(): Promise<void> {
    if (this.state.closing) return;
    this.state.closing = true;
    if (this.activeCalls > 0) {
      await new Promise<void>((resolve) => {
        this.callsDrained = resolve;
      });
    }
    await this.writer.idle();
    await Promise.allSettled([...this.state.background]);
    await this.state.fileHandles.closeAll();
    // "clean" promises the next start that no orphan files exist: not after a failed
    // write (it may have left some) nor while a sweep is unfinished.
    if (this.state.degradedReason === undefined && !this.state.sweepOwed) {
      await this.state.db.put(META_STATE, STATE_CLEAN, { sync: true });
    }
    await this.state.db.close();
  }

  /** Resolves when background work (garbage removal, orphan sweep) started so far is done. */
  async settled(): Promise<void> {
    while (this.state.background.size > 0) await Promise.allSettled([...this.state.background]);
  }

  private async call<T>(body: () => Promise<T>): Promise<T> {
    if (this.state.closing) throw asdError(AsdErrorCode.Closed, 'the ASD is shutting down');
    this.activeCalls += 1;
    try {
      return await body();
    } finally {
      this.activeCalls -= 1;
      if (this.activeCalls === 0 && this.callsDrained !== undefined) this.callsDrained();
    }
  }

  /** Where a value file lives. Test hook too: the corruption tests flip bits in it. */
  filePath(fileId: number): string {
    return this.state.filePath(fileId);
  }

  /** The file holding a key's value, or undefined when the value is inline or absent. */
  async valueFileOf(key: Uint8Array): Promise<string | undefined> {
    return this.reader.valueFileOf(key);
  }
}

function isLockedError(err: unknown): boolean {
  for (let current: unknown = err; current !== undefined && current !== null; ) {
    const code = systemErrorCode(current);
    if (code === 'LEVEL_LOCKED') return true;
    if (/lock/i.test(errorMessage(current)) && /LOCK|held|unavailable/.test(errorMessage(current)))
      return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
