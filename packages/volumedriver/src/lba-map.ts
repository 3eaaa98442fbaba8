import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { assert, errorMessage, systemErrorCode } from '@shale/common';
import { ClassicLevel } from 'classic-level';
import {
  CLUSTER_INDEX_MAX,
  LBA_MAP_APPLY_MAX_UPDATES,
  LBA_MAP_CACHE_ENTRIES,
  LBA_MAP_GET_MANY_MAX,
  LBA_MAP_KEY_SIZE_BYTES,
  LBA_MAP_VALUE_SIZE_BYTES,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import type { ClusterIndex, ClusterLocation, ScoNumber } from './types.js';

type Db = ClassicLevel<Buffer, Buffer>;

/** One change to the map: a cluster now lives at `location`, or is unmapped (undefined). */
export interface LbaUpdate {
  readonly clusterIndex: ClusterIndex;
  readonly location: ClusterLocation | undefined;
}

export interface LbaMapOptions {
  /** The map's own directory (created if missing). One LbaMap per directory. */
  readonly dir: string;
  /** Decoded entries kept in memory; default LBA_MAP_CACHE_ENTRIES. */
  readonly cacheEntries?: number;
  /**
   * Default for apply(): fsync the LevelDB log on every batch. Off by default: the map
   * is a cache of the TLogs, which are the durable truth and rebuild it after a crash.
   */
  readonly sync?: boolean;
}

interface PendingEntry {
  readonly location: ClusterLocation | null;
  /** The apply that set it: its LevelDB batch removes it only if no later apply replaced it. */
  readonly seq: number;
}

/**
 * The persistent LBA map of one vDisk: cluster index -> where its payload lives, in
 * LevelDB (classic-level). Keys are the cluster index as a u64 big-endian (8 B), so a
 * range of clusters iterates in order; values are 12 B:
 *
 *   0 u32 scoNumber   4 u32 clusterOffset   8 u32 CRC32C of the payload
 *
 * An unmapped cluster has no key. The value carries no CRC of its own: every read checks
 * the payload against the CRC32C in it, so a damaged location (wrong SCO, wrong offset,
 * wrong CRC) shows up as VD_CORRUPT on that read, and the map is rebuilt from TLogs.
 *
 * An LRU cache of decoded entries (mapped and unmapped) sits in front. It is kept
 * coherent by writing through on apply() and by dropping any LevelDB read that an
 * apply() overlapped (an epoch counter), so a get that started before an apply can never
 * put the old location back into the cache after it.
 *
 * The write lane does not wait for LevelDB: applyBehind() makes updates visible at once
 * (a `pending` overlay that reads, ranges and checkpoint snapshots consult first) and
 * writes them to LevelDB one batch at a time behind it, with the position marker in the
 * same batch as its updates. A crash loses at most the pending batches, and the marker
 * that goes with them: the volume replays the TLogs from the marker LevelDB holds.
 */
/** Outside the cluster key space (cluster keys start with two zero bytes). */
const META_KEY = Buffer.from([0xff, 0x6d, 0x65, 0x74, 0x61]);
/** A value with a layer byte: the cluster lives in an ancestor's namespace (clones). */
const LAYERED_VALUE_SIZE_BYTES = LBA_MAP_VALUE_SIZE_BYTES + 1;

export class LbaMap {
  readonly dir: string;
  private readonly db: Db;
  private readonly cacheEntries: number;
  private readonly syncByDefault: boolean;
  /** Insertion order is recency order: a hit moves the entry to the end. null = unmapped. */
  private readonly cache = new Map<number, ClusterLocation | null>();
  /** Bumped when an apply starts and when it ends; reads overlapping one are not cached. */
  private epoch = 0;
  private closed = false;
  private cacheHits = 0;
  private cacheMisses = 0;
  /**
   * Updates applied (visible to every read) whose LevelDB batch has not completed yet, by
   * cluster, with the sequence number of the apply that made them. Reads look here first,
   * so an entry never disappears between "applied" and "in LevelDB".
   */
  private readonly pending = new Map<number, PendingEntry>();
  /** The marker of the newest apply that is not in LevelDB yet. */
  private pendingMeta: { meta: Buffer; seq: number } | undefined;
  /** Applies not yet handed to LevelDB, in order (written as one batch). */
  private queued: LbaUpdate[] = [];
  private queuedMeta: Buffer | undefined;
  private queuedSeq = 0;
  private seq = 0;
  /** The one LevelDB batch write in flight (batches are written one after the other). */
  private writing: Promise<void> | undefined;
  /** A failed background write: the map is unusable until it is rebuilt (VD_IO_ERROR). */
  private failure: Error | undefined;

  private constructor(dir: string, db: Db, options: LbaMapOptions) {
    this.dir = dir;
    this.db = db;
    this.cacheEntries = options.cacheEntries ?? LBA_MAP_CACHE_ENTRIES;
    this.syncByDefault = options.sync ?? false;
    assert(
      Number.isInteger(this.cacheEntries) && this.cacheEntries >= 0,
      'LBA map cache size must be a whole number',
    );
  }

  /** Opens (or creates) the map in `dir`; VD_DIR_LOCKED when another process has it open. */
  static async open(options: LbaMapOptions): Promise<LbaMap> {
    const dir = path.resolve(options.dir);
    await mkdir(dir, { recursive: true });
    const db: Db = new ClassicLevel<Buffer, Buffer>(dir, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    try {
      await db.open();
    } catch (err) {
      if (isLockedError(err)) {
        throw vdError(
          VdErrorCode.DirLocked,
          `LBA map ${dir} is in use by another process (its LevelDB LOCK is held); one LbaMap per directory`,
          { cause: err, details: { dir } },
        );
      }
      throw vdError(VdErrorCode.IoError, `cannot open LBA map ${dir}: ${errorMessage(err)}`, {
        cause: err,
        details: { dir },
      });
    }
    return new LbaMap(dir, db, options);
  }

  /** Where cluster `clusterIndex` lives, or undefined when it is unmapped (reads as zeros). */
  async get(clusterIndex: ClusterIndex): Promise<ClusterLocation | undefined> {
    const [location] = await this.getMany([clusterIndex]);
    return location;
  }

  /** get() for many clusters: cache hits answered at once, the misses in one LevelDB call. */
  async getMany(clusterIndexes: readonly ClusterIndex[]): Promise<(ClusterLocation | undefined)[]> {
    this.checkOpen();
    assert(clusterIndexes.length <= LBA_MAP_GET_MANY_MAX, 'getMany of too many clusters');
    const out: (ClusterLocation | undefined)[] = new Array(clusterIndexes.length);
    const missPositions: number[] = [];
    const missKeys: Buffer[] = [];
    for (let i = 0; i < clusterIndexes.length; i += 1) {
      const index = clusterIndexes[i] as ClusterIndex;
      const pending = this.pending.get(index);
      if (pending !== undefined) {
        out[i] = pending.location ?? undefined;
        continue;
      }
      const cached = this.cacheGet(index);
      if (cached === undefined) {
        missPositions.push(i);
        missKeys.push(encodeKey(index));
      } else {
        out[i] = cached ?? undefined;
      }
    }
    if (missKeys.length === 0) return out;
    const epochBefore = this.epoch;
    let values: (Buffer | undefined)[];
    try {
      values = await this.db.getMany(missKeys);
    } catch (err) {
      throw vdError(VdErrorCode.IoError, `LBA map ${this.dir}: getMany failed`, { cause: err });
    }
    const cacheable = this.epoch === epochBefore;
    for (let j = 0; j < missPositions.length; j += 1) {
      const index = clusterIndexes[missPositions[j] as number] as ClusterIndex;
      const value = values[j];
      const location = value === undefined ? undefined : decodeValue(value, index, this.dir);
      out[missPositions[j] as number] = location;
      if (cacheable) this.cachePut(index, location ?? null);
    }
    return out;
  }

  /**
   * Applies updates at once (every read from now on sees them) and writes them to LevelDB
   * behind the caller: batches are written one at a time, in order, with the applies queued
   * meanwhile coalesced into the next one; the marker goes in the same atomic batch as the
   * updates it follows. Later updates of the same cluster win. Resolves at once unless
   * more than LBA_MAP_APPLY_MAX_UPDATES updates wait for LevelDB (back-pressure). Throws
   * VD_IO_ERROR once a background write has failed.
   */
  async applyBehind(updates: readonly LbaUpdate[], options: { meta?: Buffer } = {}): Promise<void> {
    this.checkOpen();
    if (this.failure !== undefined) throw this.failure;
    assert(updates.length <= LBA_MAP_APPLY_MAX_UPDATES, `apply of ${updates.length} updates`);
    if (updates.length === 0 && options.meta === undefined) return;
    this.seq += 1;
    const seq = this.seq;
    // Reads of LevelDB that overlap this apply must not fill the cache with what it replaces.
    this.epoch += 1;
    for (const update of updates) {
      const location = update.location ?? null;
      this.pending.set(update.clusterIndex, { location, seq });
      this.cachePut(update.clusterIndex, location);
      this.queued.push(update);
    }
    if (options.meta !== undefined) {
      this.pendingMeta = { meta: options.meta, seq };
      this.queuedMeta = options.meta;
    }
    this.queuedSeq = seq;
    this.pump();
    while (this.queued.length > LBA_MAP_APPLY_MAX_UPDATES && this.writing !== undefined) {
      await this.writing;
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * applyBehind, then waits until LevelDB holds it (and everything applied before).
   * `sync` (default: the map's option) fsyncs the last batch.
   */
  async apply(
    updates: readonly LbaUpdate[],
    options: { sync?: boolean; meta?: Buffer } = {},
  ): Promise<void> {
    await this.applyBehind(updates, options.meta === undefined ? {} : { meta: options.meta });
    await this.drain(options.sync ?? this.syncByDefault);
  }

  /** Waits until every apply so far is in LevelDB; with sync, fsynced. */
  async drain(sync = false): Promise<void> {
    while (this.writing !== undefined) await this.writing;
    if (this.failure !== undefined) throw this.failure;
    if (sync) await this.writeBatch([], undefined, 0, true);
  }

  /** Starts the next LevelDB batch when none is in flight. */
  private pump(): void {
    if (this.writing !== undefined || this.failure !== undefined) return;
    if (this.queued.length === 0 && this.queuedMeta === undefined) return;
    const updates = this.queued;
    const meta = this.queuedMeta;
    const seq = this.queuedSeq;
    this.queued = [];
    this.queuedMeta = undefined;
    this.writing = this.writeBatch(updates, meta, seq, false).finally(() => {
      this.writing = undefined;
      this.pump();
    });
  }

  private async writeBatch(
    updates: readonly LbaUpdate[],
    meta: Buffer | undefined,
    seq: number,
    sync: boolean,
  ): Promise<void> {
    const batch = this.db.batch();
    if (meta !== undefined) batch.put(META_KEY, meta);
    for (const update of updates) {
      const key = encodeKey(update.clusterIndex);
      if (update.location === undefined) batch.del(key);
      else batch.put(key, encodeValue(update.location));
    }
    if (!sync && batch.length === 0) {
      await batch.close();
      return;
    }
    this.epoch += 1;
    try {
      await batch.write({ sync });
    } catch (err) {
      // The batch may or may not be in LevelDB: the map must be rebuilt (from the TLogs).
      this.failure ??= vdError(VdErrorCode.IoError, `LBA map ${this.dir}: batch write failed`, {
        cause: err,
      });
      return;
    } finally {
      this.epoch += 1;
    }
    for (const update of updates) {
      const entry = this.pending.get(update.clusterIndex);
      if (entry !== undefined && entry.seq <= seq) this.pending.delete(update.clusterIndex);
    }
    if (this.pendingMeta !== undefined && this.pendingMeta.seq <= seq) this.pendingMeta = undefined;
    // Durability: with sync, the batch is in LevelDB's fsynced log; without, in its log
    // in the page cache (lost on power failure, rebuilt from TLogs).
  }

  /**
   * The mapped clusters in [fromClusterIndex, toClusterIndex), in cluster order, read
   * from LevelDB (a snapshot taken when iteration starts). Unmapped clusters are skipped.
   */
  range(
    fromClusterIndex: ClusterIndex,
    toClusterIndex: number,
  ): AsyncGenerator<[ClusterIndex, ClusterLocation]> {
    this.checkOpen();
    assert(toClusterIndex <= CLUSTER_INDEX_MAX + 1, 'range end past the last cluster');
    const entries = this.merged(fromClusterIndex, toClusterIndex, false);
    return (async function* () {
      for await (const value of entries) if (!Buffer.isBuffer(value)) yield value;
    })();
  }

  /**
   * What the map holds in [from, to) as of now (synchronously: LevelDB's implicit iterator
   * snapshot and a copy of the pending updates are both taken before this returns), in
   * cluster order; with the marker (a Buffer, last) when `withMeta`.
   */
  private merged(
    from: number,
    to: number,
    withMeta: boolean,
  ): AsyncGenerator<[ClusterIndex, ClusterLocation] | Buffer> {
    const overlay: [number, ClusterLocation | null][] = [];
    if (to > from) {
      for (const [index, entry] of this.pending) {
        if (index >= from && index < to) overlay.push([index, entry.location]);
      }
      overlay.sort((a, b) => a[0] - b[0]);
    }
    const pendingMeta = withMeta ? this.pendingMeta?.meta : undefined;
    const iterator =
      to > from
        ? this.db.iterator(
            withMeta ? { gte: encodeKey(from) } : { gte: encodeKey(from), lt: encodeKey(to) },
          )
        : undefined;
    const dir = this.dir;
    return (async function* () {
      let k = 0;
      let metaSeen = false;
      try {
        if (iterator !== undefined) {
          for await (const [key, value] of iterator) {
            if (key.equals(META_KEY)) {
              for (; k < overlay.length; k += 1) {
                const [index, location] = overlay[k] as [number, ClusterLocation | null];
                if (location !== null) yield [index as ClusterIndex, location];
              }
              metaSeen = true;
              yield pendingMeta ?? value;
              continue;
            }
            assert(key.length === LBA_MAP_KEY_SIZE_BYTES, 'LBA map key of the wrong size');
            const index = key.readUIntBE(2, 6);
            for (; k < overlay.length && (overlay[k] as [number, unknown])[0] < index; k += 1) {
              const [at, location] = overlay[k] as [number, ClusterLocation | null];
              if (location !== null) yield [at as ClusterIndex, location];
            }
            if (k < overlay.length && (overlay[k] as [number, unknown])[0] === index) {
              const location = (overlay[k] as [number, ClusterLocation | null])[1];
              k += 1;
              if (location !== null) yield [index as ClusterIndex, location];
              continue;
            }
            yield [index as ClusterIndex, decodeValue(value, index, dir)];
          }
        }
        for (; k < overlay.length; k += 1) {
          const [index, location] = overlay[k] as [number, ClusterLocation | null];
          if (location !== null) yield [index as ClusterIndex, location];
        }
        if (!metaSeen && pendingMeta !== undefined) yield pendingMeta;
      } finally {
        await iterator?.close();
      }
    })();
  }

  /** The position marker last written with apply({ meta }), if any. */
  async getMeta(): Promise<Buffer | undefined> {
    this.checkOpen();
    if (this.pendingMeta !== undefined) return this.pendingMeta.meta;
    try {
      return await this.db.get(META_KEY);
    } catch (err) {
      throw vdError(VdErrorCode.IoError, `LBA map ${this.dir}: reading the marker failed`, {
        cause: err,
      });
    }
  }

  /**
   * Every mapped cluster and the marker, as of one instant: the iterator's implicit
   * LevelDB snapshot is taken now, synchronously, so updates applied after this call
   * returns are not seen. For checkpoints.
   */
  snapshotEntries(): AsyncGenerator<[ClusterIndex, ClusterLocation] | Buffer> {
    this.checkOpen();
    return this.merged(0, CLUSTER_INDEX_MAX + 1, true);
  }

  /** Removes every entry and the marker (before a rebuild). */
  async clear(): Promise<void> {
    this.checkOpen();
    // What is still being written would land after the clear: let it land first.
    while (this.writing !== undefined) await this.writing;
    this.pending.clear();
    this.pendingMeta = undefined;
    this.failure = undefined;
    this.epoch += 1;
    try {
      await this.db.clear();
    } catch (err) {
      throw vdError(VdErrorCode.IoError, `LBA map ${this.dir}: clear failed`, { cause: err });
    } finally {
      this.epoch += 1;
      this.cache.clear();
    }
  }

  /** Cache counters, for metrics and tests. */
  cacheStats(): { entries: number; hits: number; misses: number; pending: number } {
    return {
      entries: this.cache.size,
      hits: this.cacheHits,
      misses: this.cacheMisses,
      pending: this.pending.size,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Applies still on their way to LevelDB land first (a failure is the TLogs' to repair).
    while (this.writing !== undefined) await this.writing;
    this.cache.clear();
    await this.db.close();
  }

  private checkOpen(): void {
    if (this.closed) throw vdError(VdErrorCode.Closed, `LBA map ${this.dir} is closed`);
  }

  /** undefined: not cached; null: cached as unmapped. */
  private cacheGet(index: number): ClusterLocation | null | undefined {
    const hit = this.cache.get(index);
    if (hit === undefined) {
      this.cacheMisses += 1;
      return undefined;
    }
    this.cacheHits += 1;
    this.cache.delete(index);
    this.cache.set(index, hit);
    return hit;
  }

  private cachePut(index: number, location: ClusterLocation | null): void {
    if (this.cacheEntries === 0) return;
    this.cache.delete(index);
    this.cache.set(index, location);
    if (this.cache.size > this.cacheEntries) {
      const oldest = this.cache.keys().next();
      if (oldest.done !== true) this.cache.delete(oldest.value);
    }
  }
}

/** u64 big-endian: the top two bytes are 0 (cluster indexes are u48). */
function encodeKey(index: number): Buffer {
  assert(
    Number.isInteger(index) && index >= 0 && index <= CLUSTER_INDEX_MAX + 1,
    `cluster index ${index} out of range`,
  );
  const key = Buffer.alloc(LBA_MAP_KEY_SIZE_BYTES);
  key.writeUIntBE(Math.floor(index / 2 ** 32), 0, 4);
  key.writeUInt32BE(index >>> 0, 4);
  return key;
}

function encodeValue(location: ClusterLocation): Buffer {
  const layer = location.layer ?? 0;
  const value = Buffer.allocUnsafe(
    layer === 0 ? LBA_MAP_VALUE_SIZE_BYTES : LAYERED_VALUE_SIZE_BYTES,
  );
  value.writeUInt32BE(location.scoNumber, 0);
  value.writeUInt32BE(location.clusterOffset, 4);
  value.writeUInt32BE(location.crc32c >>> 0, 8);
  if (layer !== 0) value.writeUInt8(layer, 12);
  return value;
}

function decodeValue(value: Buffer, index: number, dir: string): ClusterLocation {
  if (value.length !== LBA_MAP_VALUE_SIZE_BYTES && value.length !== LAYERED_VALUE_SIZE_BYTES) {
    throw vdError(
      VdErrorCode.Corrupt,
      `LBA map ${dir}: entry of cluster ${index} is ${value.length} B, expected ${LBA_MAP_VALUE_SIZE_BYTES} B`,
      { details: { dir, clusterIndex: String(index) } },
    );
  }
  return {
    scoNumber: value.readUInt32BE(0) as ScoNumber,
    clusterOffset: value.readUInt32BE(4),
    crc32c: value.readUInt32BE(8),
    ...(value.length === LAYERED_VALUE_SIZE_BYTES ? { layer: value.readUInt8(12) } : {}),
  };
}

function isLockedError(err: unknown): boolean {
  for (let current: unknown = err; current !== undefined && current !== null; ) {
    if (systemErrorCode(current) === 'LEVEL_LOCKED') return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
