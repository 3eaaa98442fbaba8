import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { assert, errorMessage } from '@shale/common';
import {
  CLONE_DEPTH_MAX,
  CLUSTER_INDEX_MAX,
  LBA_MAP_APPLY_MAX_UPDATES,
  LBA_MAP_CACHE_ENTRIES,
  LBA_MAP_CHECKPOINT_DIRTY_PAGES,
  LBA_MAP_CHECKPOINT_INTERVAL_MS,
  LBA_MAP_CLUSTER_OFFSET_LIMIT,
  LBA_MAP_CRC_CACHE_BYTES,
  LBA_MAP_DIRTY_PAGES_MAX,
  LBA_MAP_ENTRY_SIZE_BYTES,
  LBA_MAP_GET_MANY_MAX,
  LBA_MAP_PAGE_CLUSTERS,
  SCO_NUMBER_MAX,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { CrcTables } from './lba-crc-cache.js';
import type { CrcTable, TableLocation } from './lba-crc-table.js';
import { DirLock } from './lba-dir-lock.js';
import type { LogFile } from './lba-log-file.js';
import { WORD1_OFFSET_MASK } from './lba-log-format.js';
import { compactionDue, writeCheckpoint, writeCompaction } from './lba-map-checkpoint.js';
import { createLog, loadMap, type Page, type PageRecordBytes } from './lba-map-load.js';
import { crcIn, iterateSnapshot, makeLocation } from './lba-map-snapshot.js';
import type { LbaMapOptions, LbaMapStats, LbaUpdate } from './lba-map-types.js';
import type { ClusterIndex, ClusterLocation } from './types.js';

export type { LbaMapOptions, LbaMapStats, LbaUpdate } from './lba-map-types.js';

/** What a snapshot (range, snapshotEntries) holds until it finishes: log files it may read. */
interface SnapshotHold {
  readonly files: Set<LogFile>;
}

/** Two u32 words per cluster. */
const PAGE_WORDS = 2 * LBA_MAP_PAGE_CLUSTERS;
assert(PAGE_WORDS * 4 === LBA_MAP_PAGE_CLUSTERS * LBA_MAP_ENTRY_SIZE_BYTES, 'entry size');
/** A snapshot dropped without being iterated to its end releases its files when collected. */
const abandoned = new FinalizationRegistry<() => void>((release) => release());

/**
 * The LBA map of one vDisk: cluster index -> where its payload lives, in memory, in pages
 * of LBA_MAP_PAGE_CLUSTERS clusters at 8 B per cluster (word0 the SCO number, word1
 * layer << 24 | clusterOffset + 1; 0 = unmapped). A page exists while it has a mapped
 * cluster. The CRC32C of each cluster's payload (every read checks it) is kept out of the
 * entry, in one table per (layer, SCO) indexed by cluster offset (lba-crc-table.ts),
 * reference-counted by the entries that point into it, and evicted from memory past
 * `crcCacheBytes` (read back from the log on demand).
 *
 * Persistence is a log of checkpoints in `dir` (map.log; records in lba-log-format.ts):
 *
 *   apply ──> pages/tables in memory, dirty ──(256 dirty pages, 1 s, drain, close)──>
 *   checkpoint: [TABLE patches][PAGE records][DROP records][MARKER] appended
 *   log > 2x live ──> compaction: a full checkpoint to map.log.new, synced, renamed over
 *
 * A checkpoint takes its pages, tables and the marker synchronously (pages copy-on-write),
 * then writes them. Tables go before pages, so a complete page record never points into a
 * table slot that was not written; drops go after pages, so a dropped table is never still
 * named by a complete page record. The marker record says "the pages and tables before me
 * hold the fold of the TLogs up to this marker"; on open, getMeta() is the newest complete
 * marker (see lba-map-load.ts for why newer page records are applied as well).
 *
 * range() and snapshotEntries() are snapshots: they hold the pages as of the call (a write
 * to a held page copies it) and the table directory as of the call (copied by the next
 * change); tables are shared, safe because their slots never change (lba-crc-table.ts).
 */
export class LbaMap {
  readonly dir: string;
  private readonly lock: DirLock;
  private readonly syncByDefault: boolean;
  private readonly log: (message: string) => void;
  private file: LogFile;
  private pages: Map<number, Page>;
  private dirtyPages = new Set<number>();
  /** Bytes of each page's records in the log (pages without one are not here). */
  private pageRecordBytes: PageRecordBytes;
  private logPageBytes = 0;
  private logTableBytes = 0;
  private readonly crc: CrcTables;
  private mappedClusters: number;
  private meta: Buffer | undefined;
  /** Applies so far; the count a checkpoint took, wrote, and fdatasynced. */
  private applySeq = 0;
  private capturedSeq = 0;
  private persistedSeq = 0;
  private syncedSeq = -1;
  /** The one checkpoint, compaction or clear() in flight (they run one after the other). */
  private op: Promise<void> | undefined;
  private clearing = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly snapshots = new Set<SnapshotHold>();
  private readonly retired = new Set<LogFile>();
  /** A failed write: the map is unusable until it is cleared and rebuilt (VD_IO_ERROR). */
  private failure: Error | undefined;
  private closed = false;

  private constructor(dir: string, lock: DirLock, options: LbaMapOptions) {
    this.dir = dir;
    this.lock = lock;
    this.syncByDefault = options.sync ?? false;
    this.log = options.log ?? ((message) => console.error(message));
    this.crc = new CrcTables(
      dir,
      options.crcCacheBytes ?? LBA_MAP_CRC_CACHE_BYTES,
      options.cacheEntries ?? LBA_MAP_CACHE_ENTRIES,
      () => this.closed,
    );
    this.file = undefined as unknown as LogFile;
    this.pages = new Map();
    this.pageRecordBytes = { whole: new Map(), live: new Map() };
    this.mappedClusters = 0;
  }

  /** Opens (or creates) the map in `dir`; VD_DIR_LOCKED when another opener has it. */
  static async open(options: LbaMapOptions): Promise<LbaMap> {
    const dir = path.resolve(options.dir);
    await mkdir(dir, { recursive: true });
    const lock = await DirLock.acquire(dir);
    const map = new LbaMap(dir, lock, options);
    try {
      const loaded = await loadMap(dir, map.log);
      map.file = loaded.file;
      map.pages = loaded.pages;
      map.pageRecordBytes = loaded.pageRecordBytes;
      for (const bytes of loaded.pageRecordBytes.live.values()) map.logPageBytes += bytes;
      map.crc.reset(loaded.tables);
      map.logTableBytes = map.crc.logBytes();
      map.mappedClusters = loaded.mappedClusters;
      map.meta = loaded.meta;
    } catch (err) {
      await lock.release();
      throw vdError(VdErrorCode.IoError, `cannot open LBA map ${dir}: ${errorMessage(err)}`, {
        cause: err,
        details: { dir },
      });
    }
    if (map.crc.unused.size > 0) map.schedule();
    return map;
  }

  /** Where cluster `clusterIndex` lives, or undefined when it is unmapped (reads as zeros). */
  async get(clusterIndex: ClusterIndex): Promise<ClusterLocation | undefined> {
    const [location] = await this.getMany([clusterIndex]);
    return location;
  }

  /**
   * get() for many clusters, as of the call. CRC32Cs missing from memory are read back from
   * the log, one read per table.
   */
  async getMany(clusterIndexes: readonly ClusterIndex[]): Promise<(ClusterLocation | undefined)[]> {
    this.checkOpen();
    assert(clusterIndexes.length <= LBA_MAP_GET_MANY_MAX, 'getMany of too many clusters');
    const out: (ClusterLocation | undefined)[] = new Array(clusterIndexes.length);
    let misses:
      | Map<CrcTable, { location: TableLocation; at: number[]; words: number[] }>
      | undefined;
    for (let i = 0; i < clusterIndexes.length; i += 1) {
      const index = clusterIndexes[i] as number;
      const page = this.pages.get(Math.floor(index / LBA_MAP_PAGE_CLUSTERS));
      const at = 2 * (index % LBA_MAP_PAGE_CLUSTERS);
      const word1 = page === undefined ? 0 : (page.entries[at + 1] as number);
      if (page === undefined || word1 === 0) {
        out[i] = undefined;
        continue;
      }
      const sco = page.entries[at] as number;
      const { table, crc } = this.crc.lookup(sco, word1);
      if (crc !== undefined) {
        out[i] = makeLocation(sco, word1, crc);
        continue;
      }
      const location = this.crc.persistedPart(table, index, sco, word1);
      misses ??= new Map();
      let miss = misses.get(table as CrcTable);
      if (miss === undefined) {
        miss = { location, at: [], words: [] };
        misses.set(table as CrcTable, miss);
      }
      miss.at.push(i);
      miss.words.push(sco, word1);
    }
    if (misses === undefined) return out;
    // Held before the first await: a compaction may replace the file meanwhile.
    for (const miss of misses.values()) miss.location.file.hold();
    try {
      for (const [table, miss] of misses) {
        const slots = await this.crc.load(table, miss.location);
        for (let k = 0; k < miss.at.length; k += 1) {
          const sco = miss.words[2 * k] as number;
          const word1 = miss.words[2 * k + 1] as number;
          const i = miss.at[k] as number;
          const crc = crcIn(slots, (word1 & WORD1_OFFSET_MASK) - 1);
          if (crc === undefined) {
            throw this.crc.missingCrc(clusterIndexes[i] as number, sco, word1);
          }
          out[i] = makeLocation(sco, word1, crc);
        }
      }
    } finally {
      for (const miss of misses.values()) miss.location.file.release();
    }
    return out;
  }

  /**
   * Applies updates at once (every read from now on sees them; later updates of the same
   * cluster win); a checkpoint writes them to the log behind the caller. The marker goes
   * with the state it describes: a checkpoint taken after this call has it. Resolves at
   * once unless more than LBA_MAP_DIRTY_PAGES_MAX pages wait for the log (back-pressure).
   * Throws VD_IO_ERROR once a write of the log has failed.
   */
  async applyBehind(updates: readonly LbaUpdate[], options: { meta?: Buffer } = {}): Promise<void> {
    this.checkOpen();
    if (this.failure !== undefined) throw this.failure;
    assert(updates.length <= LBA_MAP_APPLY_MAX_UPDATES, `apply of ${updates.length} updates`);
    if (updates.length === 0 && options.meta === undefined) return;
    for (const update of updates) this.setEntry(update.clusterIndex, update.location);
    if (options.meta !== undefined) this.meta = options.meta;
    this.applySeq += 1;
    this.crc.evict();
    this.schedule();
    while (this.dirtyPages.size > LBA_MAP_DIRTY_PAGES_MAX && this.op !== undefined) {
      await this.op;
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * applyBehind, then waits until the log holds it (and everything applied before).
   * `sync` (default: the map's option) fdatasyncs the log.
   */
  async apply(
    updates: readonly LbaUpdate[],
    options: { sync?: boolean; meta?: Buffer } = {},
  ): Promise<void> {
    await this.applyBehind(updates, options.meta === undefined ? {} : { meta: options.meta });
    await this.drain(options.sync ?? this.syncByDefault);
  }

  /** Waits until every apply so far is in the log (a checkpoint); with sync, fdatasynced. */
  async drain(sync = false): Promise<void> {
    const target = this.applySeq;
    for (;;) {
      if (this.failure !== undefined) throw this.failure;
      if (this.persistedSeq >= target && (!sync || this.syncedSeq >= target)) return;
      if (this.op !== undefined) await this.op;
      else this.startOp(sync ? 'sync' : 'checkpoint');
    }
  }

  /** Rewrites the log as one full checkpoint now (it also happens by itself past 2x). */
  async compact(): Promise<void> {
    this.checkOpen();
    while (this.op !== undefined) await this.op;
    this.startOp('compact');
    await this.op;
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * The mapped clusters in [fromClusterIndex, toClusterIndex), in cluster order, as the
   * map held them when this was called (applies while the caller iterates are not seen).
   */
  range(
    fromClusterIndex: ClusterIndex,
    toClusterIndex: number,
  ): AsyncGenerator<[ClusterIndex, ClusterLocation]> {
    this.checkOpen();
    assert(toClusterIndex <= CLUSTER_INDEX_MAX + 1, 'range end past the last cluster');
    const pages: [number, Page][] = [];
    if (toClusterIndex > fromClusterIndex) {
      const first = Math.floor(fromClusterIndex / LBA_MAP_PAGE_CLUSTERS);
      const last = Math.floor((toClusterIndex - 1) / LBA_MAP_PAGE_CLUSTERS);
      if (last - first < this.pages.size) {
        for (let p = first; p <= last; p += 1) {
          const page = this.pages.get(p);
          if (page !== undefined) pages.push([p, page]);
        }
      } else {
        for (const entry of this.pages) {
          if (entry[0] >= first && entry[0] <= last) pages.push(entry);
        }
        pages.sort((a, b) => a[0] - b[0]);
      }
    }
    return this.snapshot(pages, fromClusterIndex, toClusterIndex, undefined) as AsyncGenerator<
      [ClusterIndex, ClusterLocation]
    >;
  }

  /**
   * Every mapped cluster, in cluster order, then the marker (a Buffer, last, when there is
   * one), as of this call: updates applied after it returns are not seen. For checkpoints.
   */
  snapshotEntries(): AsyncGenerator<[ClusterIndex, ClusterLocation] | Buffer> {
    this.checkOpen();
    const pages = [...this.pages].sort((a, b) => a[0] - b[0]);
    return this.snapshot(pages, 0, CLUSTER_INDEX_MAX + 1, { meta: this.meta });
  }

  /** The marker last given to an apply (after a reopen: the newest one in the log). */
  async getMeta(): Promise<Buffer | undefined> {
    this.checkOpen();
    return this.meta;
  }

  /**
   * Removes every entry and the marker (before a rebuild). The log is replaced by an empty
   * one atomically (lba-map-load.ts createLog) before this resolves: a reopen sees nothing
   * of the old map, even if the rebuild that follows does not finish.
   */
  async clear(): Promise<void> {
    this.checkOpen();
    while (this.op !== undefined) await this.op;
    // Applies from here on belong to the new map; no checkpoint runs until the log is new.
    this.clearing = true;
    this.pages = new Map();
    this.dirtyPages = new Set();
    this.pageRecordBytes = { whole: new Map(), live: new Map() };
    this.logPageBytes = 0;
    this.logTableBytes = 0;
    this.crc.reset();
    this.mappedClusters = 0;
    this.meta = undefined;
    this.failure = undefined;
    const seq = this.applySeq;
    const run = (async () => {
      const fresh = await createLog(this.dir);
      this.retire(this.file);
      this.file = fresh;
      this.capturedSeq = seq;
      this.persistedSeq = seq;
      this.syncedSeq = seq;
    })();
    this.op = run.then(
      () => undefined,
      () => undefined,
    );
    try {
      await run;
    } catch (err) {
      this.failure = vdError(VdErrorCode.IoError, `LBA map ${this.dir}: clear failed`, {
        cause: err,
      });
      throw this.failure;
    } finally {
      this.op = undefined;
      this.clearing = false;
    }
    // What was applied meanwhile is dirty already: the next checkpoint writes it to the new log.
    this.schedule();
  }

  /** The map's figures (the names of the LevelDB version's cache counters are kept). */
  cacheStats(): LbaMapStats {
    return {
      entries: this.crc.inMemory,
      hits: this.crc.hits,
      misses: this.crc.misses,
      pending: this.dirtyPages.size + this.crc.dirty.size,
      mappedClusters: this.mappedClusters,
      pages: this.pages.size,
      crcTables: this.crc.size,
      mapBytes: this.pages.size * LBA_MAP_PAGE_CLUSTERS * LBA_MAP_ENTRY_SIZE_BYTES,
      crcTableBytes: this.crc.bytesInMemory,
      logBytes: this.file.sizeBytes,
      logPageBytes: this.logPageBytes,
      logTableBytes: this.logTableBytes,
    };
  }

  /** Writes what is not in the log yet, fdatasyncs it, and releases the directory. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    try {
      await this.drain(true);
    } catch (err) {
      // The TLogs repair it: the marker in the log never claims more than the log holds.
      this.log(`LBA map ${this.dir}: last checkpoint failed: ${errorMessage(err)}`);
    }
    await this.file.close();
    for (const file of this.retired) await file.close();
    this.retired.clear();
    await this.lock.release();
  }

  // ------------------------------------------------------------------ entries

  private setEntry(index: number, location: ClusterLocation | undefined): void {
    assert(
      Number.isInteger(index) && index >= 0 && index <= CLUSTER_INDEX_MAX,
      `cluster index ${index} out of range`,
    );
    const pageIndex = Math.floor(index / LBA_MAP_PAGE_CLUSTERS);
    const at = 2 * (index - pageIndex * LBA_MAP_PAGE_CLUSTERS);
    let page = this.pages.get(pageIndex);
    const oldWord1 = page === undefined ? 0 : (page.entries[at + 1] as number);
    if (location === undefined) {
      if (page === undefined || oldWord1 === 0) return;
      page = this.writable(pageIndex, page, at >>> 1);
      this.crc.unref(page.entries[at] as number, oldWord1);
      page.entries[at] = 0;
      page.entries[at + 1] = 0;
      page.mapped -= 1;
      this.mappedClusters -= 1;
      if (page.mapped === 0) this.pages.delete(pageIndex);
      return;
    }
    const sco = location.scoNumber;
    const offset = location.clusterOffset;
    const layer = location.layer ?? 0;
    assert(Number.isInteger(sco) && sco >= 0 && sco <= SCO_NUMBER_MAX, `SCO number ${sco}`);
    assert(
      Number.isInteger(offset) && offset >= 0 && offset < LBA_MAP_CLUSTER_OFFSET_LIMIT,
      `cluster offset ${offset} out of range 0..${LBA_MAP_CLUSTER_OFFSET_LIMIT - 1}`,
    );
    assert(Number.isInteger(layer) && layer >= 0 && layer <= CLONE_DEPTH_MAX, `layer ${layer}`);
    assert(Number.isInteger(location.crc32c), 'CRC32C must be an integer');
    if (page === undefined) {
      page = {
        entries: new Uint32Array(PAGE_WORDS),
        mapped: 0,
        shared: false,
        dirty: true,
        changed: undefined,
      };
      this.pages.set(pageIndex, page);
      this.dirtyPages.add(pageIndex);
    } else {
      page = this.writable(pageIndex, page, at >>> 1);
    }
    this.crc.ref(layer, sco, offset, location.crc32c >>> 0);
    if (oldWord1 === 0) {
      page.mapped += 1;
      this.mappedClusters += 1;
    } else {
      this.crc.unref(page.entries[at] as number, oldWord1);
    }
    page.entries[at] = sco;
    page.entries[at + 1] = ((layer << 24) | (offset + 1)) >>> 0;
  }

  /**
   * `page`, or its copy when a snapshot or a checkpoint holds it; marked dirty, with `slot`
   * noted as changed (for a DELTA record).
   */
  private writable(pageIndex: number, page: Page, slot: number): Page {
    let writable = page;
    if (page.shared) {
      writable = {
        entries: page.entries.slice(),
        mapped: page.mapped,
        shared: false,
        dirty: page.dirty,
        changed: page.changed?.slice(),
      };
      this.pages.set(pageIndex, writable);
    }
    if (!writable.dirty) {
      writable.dirty = true;
      writable.changed = new Uint32Array(LBA_MAP_PAGE_CLUSTERS / 32);
      this.dirtyPages.add(pageIndex);
    }
    const changed = writable.changed;
    if (changed !== undefined) {
      changed[slot >>> 5] = ((changed[slot >>> 5] as number) | (1 << (slot & 31))) >>> 0;
    }
    return writable;
  }

  // ------------------------------------------------------------------ snapshots

  private snapshot(
    pages: [number, Page][],
    from: number,
    to: number,
    withMeta: { meta: Buffer | undefined } | undefined,
  ): AsyncGenerator<[ClusterIndex, ClusterLocation] | Buffer> {
    for (const [, page] of pages) page.shared = true;
    const tables = this.crc.share();
    const hold: SnapshotHold = { files: new Set([this.file]) };
    this.file.hold();
    this.snapshots.add(hold);
    const release = (): void => {
      if (!this.snapshots.delete(hold)) return;
      for (const file of hold.files) file.release();
    };
    const generator = iterateSnapshot({
      pages,
      from,
      to,
      withMeta,
      tables,
      crc: this.crc,
      dir: this.dir,
      isClosed: () => this.closed,
      release,
    });
    abandoned.register(generator, release, hold);
    return generator;
  }

  /** A log file is replaced: snapshots alive now may still read it, so each holds it. */
  private retire(file: LogFile): void {
    for (const hold of this.snapshots) {
      if (!hold.files.has(file)) {
        hold.files.add(file);
        file.hold();
      }
    }
    this.retired.add(file);
    file.release();
  }

  // ------------------------------------------------------------------ checkpoints

  /** Starts a background checkpoint when enough is dirty, or arms the interval timer. */
  private schedule(): void {
    if (this.closed || this.clearing || this.failure !== undefined || this.op !== undefined) return;
    const work = this.applySeq > this.capturedSeq || this.crc.unused.size > 0;
    if (!work) return;
    if (this.dirtyPages.size >= LBA_MAP_CHECKPOINT_DIRTY_PAGES) {
      this.startOp('checkpoint');
      return;
    }
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (!this.closed && !this.clearing && this.op === undefined && this.failure === undefined) {
          this.startOp('checkpoint');
        }
      }, LBA_MAP_CHECKPOINT_INTERVAL_MS);
      this.timer.unref();
    }
  }

  private startOp(kind: 'checkpoint' | 'sync' | 'compact'): void {
    assert(this.op === undefined && !this.clearing, 'one LBA map checkpoint at a time');
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const seq = this.applySeq;
    if (kind === 'sync' && seq === this.capturedSeq && this.crc.unused.size === 0) {
      // Nothing new to write: only make what is written durable.
      const file = this.file;
      this.op = file
        .datasync()
        .then(() => {
          this.syncedSeq = Math.max(this.syncedSeq, seq);
        })
        .catch((err: unknown) => {
          this.failure ??= vdError(VdErrorCode.IoError, `LBA map ${this.dir}: fdatasync failed`, {
            cause: err,
            details: { dir: this.dir },
          });
        })
        .finally(() => {
          this.op = undefined;
        });
      return;
    }
    const compact = kind === 'compact' || this.compactDue();
    const state = {
      dir: this.dir,
      file: this.file,
      pages: this.pages,
      dirtyPages: this.dirtyPages,
      pageRecordBytes: this.pageRecordBytes,
      tables: this.crc.writable(),
      dirtyTables: this.crc.dirty,
      unusedTables: this.crc.unused,
      meta: this.meta,
    };
    // Synchronous: what the checkpoint writes is taken here (pages become copy-on-write).
    const write = compact ? writeCompaction(state) : writeCheckpoint(state, kind === 'sync');
    this.dirtyPages = new Set();
    this.crc.dirty = new Set();
    this.crc.unused = new Set();
    this.crc.forget(write.dropped);
    for (const table of write.dropped) this.logTableBytes -= table.persisted?.bytes ?? 0;
    this.capturedSeq = seq;
    this.op = write.done
      .then((result) => {
        if (result.newFile !== undefined) {
          this.retire(this.file);
          this.file = result.newFile;
          this.pageRecordBytes = result.pageRecordBytes;
          this.logPageBytes = 0;
          for (const bytes of this.pageRecordBytes.live.values()) this.logPageBytes += bytes;
          this.logTableBytes = this.crc.logBytes();
        } else {
          this.logPageBytes += result.pageBytesDelta;
          this.logTableBytes += result.tableBytesDelta;
        }
        this.persistedSeq = Math.max(this.persistedSeq, seq);
        if (result.synced) this.syncedSeq = Math.max(this.syncedSeq, seq);
      })
      .catch((err: unknown) => {
        this.failure ??= vdError(VdErrorCode.IoError, `LBA map ${this.dir}: checkpoint failed`, {
          cause: err,
          details: { dir: this.dir },
        });
      })
      .finally(() => {
        this.op = undefined;
        this.crc.evict();
        this.schedule();
      });
  }

  private compactDue(): boolean {
    return compactionDue(this.file.sizeBytes, this.logPageBytes + this.logTableBytes);
  }

  private checkOpen(): void {
    if (this.closed) throw vdError(VdErrorCode.Closed, `LBA map ${this.dir} is closed`);
  }
}
