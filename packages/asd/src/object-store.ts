import nodeFs from 'node:fs/promises';
import path from 'node:path';
import { assert, crc32c, errorMessage, ShaleError, systemErrorCode } from '@shale/common';
import { ClassicLevel } from 'classic-level';
import {
  BLOCK_SIZE_BYTES,
  FAN_OUT_DIRS,
  FILE_ID_RESTART_GAP,
  INLINE_MAX_BYTES,
  MAX_CALL_BYTES,
  MAX_INFLIGHT_PUT_BYTES,
  MAX_JOBS_PER_COMMIT,
  OPEN_FILES_MAX,
  RECORD_CACHE_ENTRIES,
  RESERVE_FRACTION,
  RESERVE_MAX_BYTES,
  RESERVE_MIN_BYTES,
  SCRATCH_BUFFERS_MAX,
} from './constants.js';
import { type Disk, nodeDisk, readExactly } from './disk.js';
import { AsdErrorCode, asdError, describeKey } from './errors.js';
import { FileHandleCache } from './file-handle-cache.js';
import { type AsdIdentity, loadOrCreateIdentity } from './identity.js';
import {
  clientKeyOf,
  fileIdOfKey,
  fileKey,
  GARBAGE_RANGE,
  garbageKey,
  metaKey,
  objectKey,
  objectRange,
} from './index-keys.js';
import { checksumValue, decodeRecord, encodeRecord, type ObjectRecord } from './index-record.js';
import type { AsdMetrics } from './metrics.js';
import { RecordCache } from './record-cache.js';
import {
  checkKeys,
  checkListBound,
  checkListLimit,
  checkPutChecksum,
  checkPutItems,
  checkSlices,
  type PutItem,
  type Slice,
} from './request-validation.js';

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
 * sweeps them (orphan-sweep below). Garbage files are recorded in the same batch that
 * drops their object, and removed after it, again at the next start if need be.
 */

export interface AsdStoreOptions {
  readonly dir: string;
  readonly nodeId: string;
  /** The ASD id the caller expects; a directory with another id is refused unless `claim`. */
  readonly asdId?: string | undefined;
  readonly claim?: boolean | undefined;
  /** At most this many value bytes are stored; default: no limit but the file system. */
  readonly capacityBytes?: number | undefined;
  /** File-system bytes kept free for the index and deletes; default 1% (32 MiB..4 GiB). */
  readonly reserveBytes?: number | undefined;
  readonly disk?: Disk | undefined;
  readonly log?: ((line: string) => void) | undefined;
}

export type ItemResult<T> = { ok: true; value: T } | { ok: false; error: ShaleError };

export interface GetValue {
  readonly value: Buffer;
  readonly crc32c: number;
}

export interface ListEntry {
  readonly key: Buffer;
  readonly sizeBytes: number;
  readonly crc32c: number;
}

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

type ValueChecksums = ReturnType<typeof checksumValue>;

interface PendingPut {
  readonly key: Buffer;
  readonly record: ObjectRecord;
  readonly encoded: Buffer;
}

type CommitJob =
  | {
      readonly kind: 'put';
      readonly entries: readonly PendingPut[];
      readonly dirs: ReadonlySet<number>;
      resolve(): void;
      reject(err: ShaleError): void;
    }
  | {
      readonly kind: 'delete';
      readonly keys: readonly Buffer[];
      resolve(existed: boolean[]): void;
      reject(err: ShaleError): void;
    };

/** What a record lookup finds: the record, nothing, or a record failing its own checksum. */
const ABSENT = 'absent';
const DAMAGED = 'damaged';
type RecordLookup = ObjectRecord | typeof ABSENT | typeof DAMAGED;

/** A stack that drops what is pushed past its bound. */
class BoundedStack<T> {
  private readonly items: T[] = [];
  constructor(private readonly max: number) {}
  push(item: T): void {
    if (this.items.length < this.max) this.items.push(item);
  }
  pop(): T | undefined {
    return this.items.pop();
  }
}

const META_STATS = metaKey('stats');
const META_FILE_ID_HIGH = metaKey('file-id-high');
const META_STATE = metaKey('state');
const STATE_RUNNING = Buffer.from('running');
const STATE_CLEAN = Buffer.from('clean');
/** Per value file: one file-system block of slack, for the space check. */
const FILE_OVERHEAD_BYTES = 4096;

export class AsdStore {
  readonly identity: AsdIdentity;
  readonly dir: string;
  metrics: AsdMetrics | undefined;

  private readonly disk: Disk;
  private readonly db: ClassicLevel<Buffer, Buffer>;
  private readonly log: (line: string) => void;
  private readonly capacityLimitBytes: number | undefined;
  private readonly reserveBytes: number;
  private fsTotalBytes: number;
  private readonly filesystemId: string;
  private lastNoSpaceAtMs = 0;

  private objectCount: number;
  private usedBytes: number;
  private fileIdHigh: number;
  private nextFileId: number;
  /** Files with ids from here on belong to this run; the orphan sweep leaves them alone. */
  private readonly firstFileIdOfRun: number;

  private inflightPutBytes = 0;
  private readonly commitQueue: CommitJob[] = [];
  private committing: Promise<void> | undefined;
  private readonly background = new Set<Promise<void>>();
  private readonly records = new RecordCache(RECORD_CACHE_ENTRIES);
  private readonly fileHandles: FileHandleCache;
  /** Reused read buffers for small slices; at most SCRATCH_BUFFERS_MAX are kept. */
  private readonly scratch = new BoundedStack<Buffer>(SCRATCH_BUFFERS_MAX);
  private activeCalls = 0;
  private callsDrained: (() => void) | undefined;
  private closing = false;
  /** True until an orphan sweep owed by an unclean shutdown has finished. */
  private sweepOwed = false;
  /** Set when the index refused a write: the store keeps serving reads, refuses writes. */
  private degradedReason: string | undefined;

  private constructor(init: {
    options: AsdStoreOptions;
    identity: AsdIdentity;
    db: ClassicLevel<Buffer, Buffer>;
    disk: Disk;
    fsTotalBytes: number;
    filesystemId: string;
    stats: { objectCount: number; usedBytes: number };
    fileIdHigh: number;
  }) {
    this.identity = init.identity;
    this.dir = init.options.dir;
    this.disk = init.disk;
    this.db = init.db;
    this.log = init.options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.capacityLimitBytes = init.options.capacityBytes;
    this.fsTotalBytes = init.fsTotalBytes;
    this.filesystemId = init.options.capacityBytes === undefined ? init.filesystemId : '';
    this.reserveBytes =
      init.options.reserveBytes ??
      Math.min(
        RESERVE_MAX_BYTES,
        Math.max(RESERVE_MIN_BYTES, Math.floor(init.fsTotalBytes * RESERVE_FRACTION)),
      );
    this.objectCount = init.stats.objectCount;
    this.usedBytes = init.stats.usedBytes;
    this.fileIdHigh = init.fileIdHigh;
    this.firstFileIdOfRun = init.fileIdHigh + 1 + FILE_ID_RESTART_GAP;
    this.nextFileId = this.firstFileIdOfRun;
    this.fileHandles = new FileHandleCache(this.disk, OPEN_FILES_MAX);
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
      store.log(
        `asd ${identity.asdId} (node ${identity.nodeId}) ${created ? 'created' : claimed ? 'claimed' : 'opened'} ${dir}: ${stats.objectCount} objects, ${stats.usedBytes} bytes${unclean ? ', previous run ended uncleanly' : ''}`,
      );
      store.track(store.collectRecordedGarbage());
      if (unclean) {
        store.sweepOwed = true;
        store.track(store.sweepOrphans());
      }
      return store;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  // ---- Put ---------------------------------------------------------------------------

  /** Stores every item or none; resolves once all are durable. Returns each value's CRC32C. */
  async put(items: readonly PutItem[]): Promise<number[]> {
    return this.call(async () => {
      const totalBytes = checkPutItems(items);
      // Every byte is read once, here: block checksums, the whole value's checksum combined
      // from them, and the check against what the caller sent, before any I/O.
      const sums = items.map((item, index) => {
        const sum = checksumValue(item.value, BLOCK_SIZE_BYTES);
        checkPutChecksum(item, index, sum.crc32c);
        return sum;
      });
      this.checkWritable();
      if (
        this.inflightPutBytes + totalBytes > MAX_INFLIGHT_PUT_BYTES &&
        this.inflightPutBytes > 0
      ) {
        throw asdError(
          AsdErrorCode.Busy,
          `${this.inflightPutBytes} put bytes already in flight (limit ${MAX_INFLIGHT_PUT_BYTES}); retry later`,
        );
      }
      const fileCount = items.filter((item) => item.value.length > INLINE_MAX_BYTES).length;
      // Count this call as in flight before the (asynchronous) space check, so that calls
      // checking at the same time see each other's bytes.
      this.inflightPutBytes += totalBytes;
      try {
        await this.checkSpace(totalBytes + fileCount * FILE_OVERHEAD_BYTES, totalBytes);
        return await this.putAdmitted(items, sums);
      } finally {
        this.inflightPutBytes -= totalBytes;
      }
    });
  }

  private async putAdmitted(
    items: readonly PutItem[],
    sums: readonly ValueChecksums[],
  ): Promise<number[]> {
    const entries: PendingPut[] = [];
    const writes: { fileId: number; value: Uint8Array }[] = [];
    const dirs = new Set<number>();
    for (const [index, item] of items.entries()) {
      const { crc32c: crc, blockCrcs } = sums[index] as ValueChecksums;
      const inline = item.value.length <= INLINE_MAX_BYTES;
      const fileId = inline ? 0 : this.allocateFileId();
      const record: ObjectRecord = {
        sizeBytes: item.value.length,
        blockSizeBytes: BLOCK_SIZE_BYTES,
        crc32c: crc,
        blockCrcs,
        inline: inline
          ? Buffer.from(item.value.buffer, item.value.byteOffset, item.value.byteLength)
          : undefined,
        fileId,
      };
      if (!inline) {
        writes.push({ fileId, value: item.value });
        dirs.add(fileId % FAN_OUT_DIRS);
      }
      entries.push({ key: Buffer.from(item.key), record, encoded: encodeRecord(record) });
    }

    const outcomes = await Promise.allSettled(
      writes.map((write) => this.disk.writeFileDurably(this.filePath(write.fileId), write.value)),
    );
    const failed = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failed !== undefined) {
      // Nothing was indexed: the files are ours to remove.
      await this.removeFiles(writes.map((write) => write.fileId));
      throw fsError((failed as PromiseRejectedResult).reason, 'writing a value file');
    }

    // If this fails the files stay: LevelDB may have logged the batch before refusing it,
    // and a restart could surface it; the next start sweeps what the index does not name.
    await new Promise<void>((resolve, reject) => {
      this.enqueue({ kind: 'put', entries, dirs, resolve, reject });
    });
    // Durability: every item's value file is fsynced, its directory entry fsynced, and its
    // index record is in a LevelDB batch written with sync: the put survives a crash.
    return entries.map((entry) => entry.record.crc32c);
  }

  private allocateFileId(): number {
    const id = this.nextFileId;
    this.nextFileId += 1;
    assert(id < 2 ** 48, 'file ids exhausted');
    return id;
  }

  // ---- Delete ------------------------------------------------------------------------

  /** Deletes every key in one atomic, durable commit. Returns whether each key existed. */
  async delete(keys: readonly Uint8Array[]): Promise<boolean[]> {
    return this.call(async () => {
      checkKeys(keys, 'delete');
      this.checkWritable();
      const copies = keys.map((key) => Buffer.from(key));
      return new Promise<boolean[]>((resolve, reject) => {
        this.enqueue({ kind: 'delete', keys: copies, resolve, reject });
      });
    });
  }

  // ---- Group commit ------------------------------------------------------------------

  private enqueue(job: CommitJob): void {
    this.commitQueue.push(job);
    if (this.committing === undefined) {
      this.committing = this.drainCommitQueue().finally(() => {
        this.committing = undefined;
      });
    }
  }

  /** One commit at a time; every job queued while one is in progress shares the next fsync. */
  private async drainCommitQueue(): Promise<void> {
    while (this.commitQueue.length > 0) {
      const jobs = this.commitQueue.splice(0, MAX_JOBS_PER_COMMIT);
      try {
        const results = await this.commitBatch(jobs);
        jobs.forEach((job, index) => {
          if (job.kind === 'put') job.resolve();
          else job.resolve(results[index] ?? []);
        });
      } catch (err) {
        const error =
          err instanceof ShaleError
            ? err
            : asdError(AsdErrorCode.IoError, `index commit failed: ${errorMessage(err)}`, {
                cause: err,
              });
        for (const job of jobs) job.reject(error);
      }
    }
  }

  private async commitBatch(jobs: readonly CommitJob[]): Promise<boolean[][]> {
    const dirs = new Set<number>();
    const touched = new Map<string, Buffer>();
    for (const job of jobs) {
      if (job.kind === 'put') {
        for (const dir of job.dirs) dirs.add(dir);
        for (const entry of job.entries) touched.set(entry.key.toString('latin1'), entry.key);
      } else {
        for (const key of job.keys) touched.set(key.toString('latin1'), key);
      }
    }
    try {
      await Promise.all([...dirs].map((dir) => this.disk.fsyncDir(fanDir(this.dir, dir))));
    } catch (err) {
      this.degradedReason = `syncing a value directory failed: ${errorMessage(err)}`;
      this.log(`asd ${this.identity.asdId}: DEGRADED, ${this.degradedReason}`);
      throw fsError(err, 'syncing a value directory');
    }

    const keyIds = [...touched.keys()];
    const previous = await this.db.getMany(
      keyIds.map((id) => objectKey(touched.get(id) as Buffer)),
    );
    // What each touched key holds as the jobs are applied in order.
    const state = new Map<
      string,
      { record: ObjectRecord | undefined; encoded: Buffer | undefined }
    >();
    keyIds.forEach((id, index) => {
      const raw = previous[index];
      state.set(id, {
        record: raw === undefined ? undefined : decodeRecord(raw),
        encoded: undefined,
      });
    });
    const filesAdded = new Map<number, Buffer>();
    const filesDropped = new Set<number>();
    const garbage = new Set<number>();
    let countDelta = 0;
    let bytesDelta = 0;
    const dropFile = (fileId: number): void => {
      if (fileId === 0) return;
      if (filesAdded.delete(fileId)) garbage.add(fileId);
      else {
        filesDropped.add(fileId);
        garbage.add(fileId);
      }
    };
    const forget = (id: string): boolean => {
      const current = state.get(id);
      if (current?.record === undefined) return false;
      countDelta -= 1;
      bytesDelta -= current.record.sizeBytes;
      dropFile(current.record.fileId);
      return true;
    };

    const results: boolean[][] = [];
    for (const job of jobs) {
      if (job.kind === 'put') {
        for (const entry of job.entries) {
          const id = entry.key.toString('latin1');
          forget(id);
          state.set(id, { record: entry.record, encoded: entry.encoded });
          countDelta += 1;
          bytesDelta += entry.record.sizeBytes;
          if (entry.record.fileId !== 0) filesAdded.set(entry.record.fileId, entry.key);
        }
        results.push([]);
      } else {
        results.push(
          job.keys.map((key) => {
            const id = key.toString('latin1');
            const existed = forget(id);
            if (existed) state.set(id, { record: undefined, encoded: undefined });
            return existed;
          }),
        );
      }
    }

    type Op = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };
    const ops: Op[] = [];
    keyIds.forEach((id, index) => {
      const final = state.get(id);
      const key = objectKey(touched.get(id) as Buffer);
      if (final?.encoded !== undefined) ops.push({ type: 'put', key, value: final.encoded });
      else if (final?.record === undefined && previous[index] !== undefined)
        ops.push({ type: 'del', key });
    });
    let high = this.fileIdHigh;
    for (const [fileId, key] of filesAdded) {
      ops.push({ type: 'put', key: fileKey(fileId), value: key });
      high = Math.max(high, fileId);
    }
    for (const fileId of filesDropped) ops.push({ type: 'del', key: fileKey(fileId) });
    for (const fileId of garbage) {
      ops.push({ type: 'put', key: garbageKey(fileId), value: Buffer.alloc(0) });
      high = Math.max(high, fileId);
    }
    const objectCount = this.objectCount + countDelta;
    const usedBytes = this.usedBytes + bytesDelta;
    assert(objectCount >= 0 && usedBytes >= 0, 'object count and used bytes stay non-negative');
    ops.push({ type: 'put', key: META_STATS, value: encodeStats({ objectCount, usedBytes }) });
    const highBuf = Buffer.alloc(6);
    highBuf.writeUIntBE(high, 0, 6);
    ops.push({ type: 'put', key: META_FILE_ID_HIGH, value: highBuf });

    try {
      await this.db.batch(ops, { sync: true });
    } catch (err) {
      this.degradedReason = `the index refused a write: ${errorMessage(err)}`;
      this.log(`asd ${this.identity.asdId}: DEGRADED, ${this.degradedReason}`);
      throw fsError(err, 'committing the index');
    }
    // Same tick as learning the batch is durable: readers that started before cannot
    // refill the cache with what this batch replaced (see RecordCache).
    this.records.generation += 1;
    for (const id of keyIds) this.records.update(id, state.get(id)?.record);
    this.objectCount = objectCount;
    this.usedBytes = usedBytes;
    this.fileIdHigh = high;
    this.metrics?.commits.inc();
    this.metrics?.commitJobs.observe(jobs.length);
    if (garbage.size > 0) this.track(this.removeGarbage([...garbage]));
    return results;
  }

  // ---- Get ---------------------------------------------------------------------------

  async get(keys: readonly Uint8Array[]): Promise<ItemResult<GetValue>[]> {
    return this.call(async () => {
      checkKeys(keys, 'get');
      const records = await this.lookupRecords(keys, true);
      let budgetBytes = MAX_CALL_BYTES;
      return Promise.all(
        keys.map(async (key, index): Promise<ItemResult<GetValue>> => {
          const record = records[index];
          if (record === ABSENT || record === undefined) return notFound(key);
          if (record === DAMAGED) return corruptIndex(key);
          if (record.sizeBytes > budgetBytes) {
            return {
              ok: false,
              error: asdError(
                AsdErrorCode.ResponseTooLarge,
                `get: ${describeKey(key)} does not fit in this response (${MAX_CALL_BYTES} bytes at most); ask for it in another call`,
              ),
            };
          }
          budgetBytes -= record.sizeBytes;
          return this.readVerified(key, record, 0, record.sizeBytes);
        }),
      );
    });
  }

  async getRanges(slices: readonly Slice[]): Promise<ItemResult<Buffer>[]> {
    return this.call(async () => {
      checkSlices(slices);
      const records = await this.lookupRecords(
        slices.map((slice) => slice.key),
        true,
      );
      return Promise.all(
        slices.map(async (slice, index): Promise<ItemResult<Buffer>> => {
          const record = records[index];
          if (record === ABSENT || record === undefined) return notFound(slice.key);
          if (record === DAMAGED) return corruptIndex(slice.key);
          if (slice.offset + slice.length > record.sizeBytes) {
            return {
              ok: false,
              error: asdError(
                AsdErrorCode.BadRange,
                `slice [${slice.offset}, ${slice.offset + slice.length}) of ${describeKey(slice.key)} ends past its size ${record.sizeBytes}`,
              ),
            };
          }
          const result = await this.readVerified(slice.key, record, slice.offset, slice.length);
          return result.ok ? { ok: true, value: result.value.value } : result;
        }),
      );
    });
  }

  /** Each key's record: from the record cache when allowed and present, else from LevelDB. */
  private async lookupRecords(
    keys: readonly Uint8Array[],
    useCache: boolean,
  ): Promise<RecordLookup[]> {
    const out: RecordLookup[] = new Array(keys.length);
    const missIndexes: number[] = [];
    const ids = keys.map((key) =>
      Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1'),
    );
    ids.forEach((id, index) => {
      const cached = useCache ? this.records.get(id) : undefined;
      if (cached !== undefined) out[index] = cached;
      else missIndexes.push(index);
    });
    if (missIndexes.length === 0) return out;
    const generation = this.records.generation;
    let raws: (Buffer | undefined)[];
    try {
      raws = await this.db.getMany(
        missIndexes.map((index) => objectKey(keys[index] as Uint8Array)),
      );
    } catch (err) {
      throw asdError(AsdErrorCode.IoError, `reading the index failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    missIndexes.forEach((index, i) => {
      const raw = raws[i];
      if (raw === undefined) {
        out[index] = ABSENT;
        return;
      }
      const record = decodeRecord(raw);
      if (record === undefined) {
        out[index] = DAMAGED;
        return;
      }
      out[index] = record;
      this.records.fill(ids[index] as string, record, generation);
    });
    return out;
  }

  /**
   * Reads [offset, offset + length) of a value, reading and verifying only the checksum
   * blocks that cover it. Never returns bytes whose block failed its CRC32C.
   */
  private async readVerified(
    key: Uint8Array,
    record: ObjectRecord,
    offset: number,
    length: number,
    attempt = 0,
  ): Promise<ItemResult<GetValue>> {
    if (length === 0) return { ok: true, value: { value: Buffer.alloc(0), crc32c: record.crc32c } };
    const blockSize = record.blockSizeBytes;
    const firstBlock = Math.floor(offset / blockSize);
    const lastBlock = Math.floor((offset + length - 1) / blockSize);
    const start = firstBlock * blockSize;
    const end = Math.min((lastBlock + 1) * blockSize, record.sizeBytes);
    const coveredBytes = end - start;
    // A small slice of a larger covered range is read into a reused scratch buffer and
    // copied out: the 64 KiB blocks around a 4 KiB read then cost no allocation.
    const scratch =
      record.inline === undefined && length < coveredBytes && coveredBytes <= 2 * blockSize
        ? this.takeScratch(coveredBytes)
        : undefined;
    try {
      let covered: Buffer;
      if (record.inline !== undefined) {
        covered = record.inline.subarray(start, end);
      } else {
        const path = this.filePath(record.fileId);
        const into = scratch ?? Buffer.allocUnsafe(coveredBytes);
        try {
          await this.fileHandles.with(record.fileId, path, (handle) =>
            readExactly(handle, into, coveredBytes, start, path),
          );
        } catch (err) {
          return this.readFailed(key, record, offset, length, attempt, err);
        }
        covered = into.subarray(0, coveredBytes);
      }
      for (let block = firstBlock; block <= lastBlock; block += 1) {
        const from = (block - firstBlock) * blockSize;
        const bytes = covered.subarray(from, Math.min(from + blockSize, covered.length));
        if (crc32c(bytes) !== record.blockCrcs[block]) {
          return corrupt(
            key,
            `checksum block ${block} (bytes ${block * blockSize}..${block * blockSize + bytes.length}) fails its CRC32C`,
          );
        }
      }
      const view = covered.subarray(offset - start, offset - start + length);
      const value = scratch === undefined ? view : Buffer.from(view);
      return { ok: true, value: { value, crc32c: record.crc32c } };
    } finally {
      if (scratch !== undefined) this.scratch.push(scratch);
    }
  }

  private readFailed(
    key: Uint8Array,
    record: ObjectRecord,
    offset: number,
    length: number,
    attempt: number,
    err: unknown,
  ): Promise<ItemResult<GetValue>> | ItemResult<GetValue> {
    const code = systemErrorCode(err);
    if (code === 'ENOENT' && attempt < 2) {
      // An overwrite or delete may have committed and removed the file since we read the
      // record: look again, past the cache.
      return this.lookupRecords([key], false).then(([fresh]) => {
        if (fresh === ABSENT || fresh === undefined) return notFound(key);
        if (fresh === DAMAGED) return corruptIndex(key);
        if (fresh.fileId === record.fileId) {
          return corrupt(key, `its value file ${this.filePath(record.fileId)} is missing`);
        }
        if (offset + length > fresh.sizeBytes) {
          return {
            ok: false,
            error: asdError(
              AsdErrorCode.BadRange,
              `${describeKey(key)} was overwritten by a shorter value during the read`,
            ),
          };
        }
        return this.readVerified(key, fresh, offset, length, attempt + 1);
      });
    }
    if (code === 'ENOENT' || code === 'ESHORTREAD') {
      return corrupt(key, `its value file ${this.filePath(record.fileId)} is missing or short`);
    }
    return {
      ok: false,
      error: asdError(
        AsdErrorCode.IoError,
        `reading ${describeKey(key)} failed: ${errorMessage(err)}`,
        {
          cause: err,
        },
      ),
    };
  }

  private takeScratch(bytes: number): Buffer {
    const buffer = this.scratch.pop();
    if (buffer !== undefined && buffer.length >= bytes) return buffer;
    return Buffer.allocUnsafe(Math.max(bytes, 2 * BLOCK_SIZE_BYTES));
  }

  // ---- List and stats ----------------------------------------------------------------

  async list(options: {
    prefix?: Uint8Array | undefined;
    startAfter?: Uint8Array | undefined;
    limit?: number | undefined;
  }): Promise<{ entries: ListEntry[]; more: boolean }> {
    return this.call(async () => {
      const prefix = options.prefix ?? Buffer.alloc(0);
      checkListBound(prefix, 'prefix');
      if (options.startAfter !== undefined) checkListBound(options.startAfter, 'start key');
      const limit = checkListLimit(options.limit);
      const entries: ListEntry[] = [];
      let more = false;
      for await (const [indexKey, raw] of this.db.iterator({
        ...objectRange(prefix, options.startAfter),
        limit: limit + 1,
      })) {
        if (entries.length === limit) {
          more = true;
          break;
        }
        const record = decodeRecord(raw);
        entries.push({
          key: Buffer.from(clientKeyOf(indexKey)),
          sizeBytes: record?.sizeBytes ?? 0,
          crc32c: record?.crc32c ?? 0,
        });
      }
      return { entries, more };
    });
  }

  async stats(): Promise<AsdStats> {
    const fs = await this.disk.statfs(this.dir);
    this.fsTotalBytes = fs.totalBytes;
    const fsFree = Math.max(0, fs.availableBytes - this.reserveBytes - this.inflightPutBytes);
    const capacityBytes = this.capacityBytes();
    const capFree = Math.max(0, capacityBytes - this.usedBytes - this.inflightPutBytes);
    return {
      asdId: this.identity.asdId,
      nodeId: this.identity.nodeId,
      capacityBytes,
      usedBytes: this.usedBytes,
      freeBytes: Math.min(fsFree, capFree),
      objectCount: this.objectCount,
      reserveBytes: this.reserveBytes,
      createdAtMs: this.identity.createdAtMs,
      filesystemId: this.filesystemId,
      lastNoSpaceAtMs: this.lastNoSpaceAtMs,
    };
  }

  health(): { status: 'ok' | 'degraded'; reason: string } {
    if (this.degradedReason !== undefined)
      return { status: 'degraded', reason: this.degradedReason };
    return { status: 'ok', reason: '' };
  }

  /** For metrics gauges: cheap, no I/O. */
  snapshot(): {
    objectCount: number;
    usedBytes: number;
    inflightPutBytes: number;
    capacityBytes: number;
  } {
    return {
      objectCount: this.objectCount,
      usedBytes: this.usedBytes,
      inflightPutBytes: this.inflightPutBytes,
      capacityBytes: this.capacityBytes(),
    };
  }

  private capacityBytes(): number {
    return this.capacityLimitBytes ?? this.fsTotalBytes;
  }

  // ---- Space -------------------------------------------------------------------------

  /** Refuses a put that would eat into the reserve or past --capacity-bytes. */
  private async checkSpace(neededBytes: number, ownInflightBytes: number): Promise<void> {
    const othersInflightBytes = this.inflightPutBytes - ownInflightBytes;
    if (this.capacityLimitBytes !== undefined) {
      const capFree = this.capacityLimitBytes - this.usedBytes - othersInflightBytes;
      if (neededBytes > capFree) {
        this.lastNoSpaceAtMs = Date.now();
        throw asdError(
          AsdErrorCode.NoSpace,
          `no space: ${neededBytes} bytes asked, ${Math.max(0, capFree)} left of this ASD's capacity ${this.capacityLimitBytes}`,
        );
      }
    }
    let availableBytes: number;
    try {
      availableBytes = (await this.disk.statfs(this.dir)).availableBytes;
    } catch (err) {
      throw fsError(err, 'checking free space');
    }
    const fsFree = availableBytes - othersInflightBytes - this.reserveBytes;
    if (neededBytes > fsFree) {
      this.lastNoSpaceAtMs = Date.now();
      throw asdError(
        AsdErrorCode.NoSpace,
        `no space: ${neededBytes} bytes asked, ${Math.max(0, fsFree)} free above the ${this.reserveBytes}-byte reserve`,
      );
    }
  }

  // ---- Garbage and orphans -----------------------------------------------------------

  private async removeGarbage(fileIds: readonly number[]): Promise<void> {
    const removed = await this.removeFiles(fileIds);
    if (removed.length === 0 || this.db.status !== 'open') return;
    this.metrics?.garbageFilesRemoved.inc(removed.length);
    await this.db.batch(
      removed.map((fileId) => ({ type: 'del' as const, key: garbageKey(fileId) })),
    );
  }

  /** Unlinks files; returns the ids that are gone (ENOENT counts as gone). */
  private async removeFiles(fileIds: readonly number[]): Promise<number[]> {
    const gone: number[] = [];
    await Promise.all(
      fileIds.map(async (fileId) => {
        try {
          await this.fileHandles.retire(fileId);
          await this.disk.unlink(this.filePath(fileId));
          gone.push(fileId);
        } catch (err) {
          if (systemErrorCode(err) === 'ENOENT') gone.push(fileId);
          else
            this.log(
              `asd ${this.identity.asdId}: cannot remove ${this.filePath(fileId)}: ${errorMessage(err)}`,
            );
        }
      }),
    );
    return gone;
  }

  private async collectRecordedGarbage(): Promise<void> {
    const ids: number[] = [];
    for await (const key of this.db.keys(GARBAGE_RANGE)) ids.push(fileIdOfKey(key));
    if (ids.length > 0) {
      this.log(
        `asd ${this.identity.asdId}: removing ${ids.length} garbage files left by the previous run`,
      );
      await this.removeGarbage(ids);
    }
  }

  /**
   * After an unclean shutdown: value files that no index record names (written by puts
   * that never committed) are removed. Only ids from before this run are considered.
   */
  private async sweepOrphans(): Promise<void> {
    let orphans = 0;
    for (let dir = 0; dir < FAN_OUT_DIRS && !this.closing; dir += 1) {
      const names = await this.disk.readdir(fanDir(this.dir, dir));
      const ids = names
        .map((name) => (/^[0-9a-f]{12}$/.test(name) ? Number.parseInt(name, 16) : -1))
        .filter((id) => id > 0 && id < this.firstFileIdOfRun);
      for (let i = 0; i < ids.length; i += 1000) {
        const batch = ids.slice(i, i + 1000);
        const owners = await this.db.getMany(batch.map((id) => fileKey(id)));
        const unowned = batch.filter((_, index) => owners[index] === undefined);
        orphans += (await this.removeFiles(unowned)).length;
      }
    }
    if (!this.closing) this.sweepOwed = false;
    if (orphans > 0) {
      this.metrics?.orphanFilesRemoved.inc(orphans);
      this.log(
        `asd ${this.identity.asdId}: removed ${orphans} orphan value files of uncommitted puts`,
      );
    }
  }

  // ---- Lifecycle ---------------------------------------------------------------------

  /** Waits for calls in progress, writes the clean-shutdown mark, closes the index. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.activeCalls > 0) {
      await new Promise<void>((resolve) => {
        this.callsDrained = resolve;
      });
    }
    await this.committing;
    await Promise.allSettled([...this.background]);
    await this.fileHandles.closeAll();
    // "clean" promises the next start that no orphan files exist: not after a failed
    // write (it may have left some) nor while a sweep is unfinished.
    if (this.degradedReason === undefined && !this.sweepOwed) {
      await this.db.put(META_STATE, STATE_CLEAN, { sync: true });
    }
    await this.db.close();
  }

  /** Resolves when background work (garbage removal, orphan sweep) started so far is done. */
  async settled(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  private async call<T>(body: () => Promise<T>): Promise<T> {
    if (this.closing) throw asdError(AsdErrorCode.Closed, 'the ASD is shutting down');
    this.activeCalls += 1;
    try {
      return await body();
    } finally {
      this.activeCalls -= 1;
      if (this.activeCalls === 0 && this.callsDrained !== undefined) this.callsDrained();
    }
  }

  private checkWritable(): void {
    if (this.degradedReason !== undefined) {
      throw asdError(AsdErrorCode.IoError, `the ASD refuses writes: ${this.degradedReason}`);
    }
  }

  private track(work: Promise<void>): void {
    const tracked = work.catch((err: unknown) => {
      this.log(`asd ${this.identity.asdId}: background work failed: ${errorMessage(err)}`);
    });
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }

  /** Where a value file lives. Test hook too: the corruption tests flip bits in it. */
  filePath(fileId: number): string {
    return path.join(
      fanDir(this.dir, fileId % FAN_OUT_DIRS),
      fileId.toString(16).padStart(12, '0'),
    );
  }

  /** The file holding a key's value, or undefined when the value is inline or absent. */
  async valueFileOf(key: Uint8Array): Promise<string | undefined> {
    const [record] = await this.lookupRecords([key], false);
    if (
      record === undefined ||
      record === ABSENT ||
      record === DAMAGED ||
      record.inline !== undefined
    ) {
      return undefined;
    }
    return this.filePath(record.fileId);
  }
}

function fanDir(dir: string, index: number): string {
  return path.join(dir, 'objects', index.toString(16).padStart(2, '0'));
}

function encodeStats(stats: { objectCount: number; usedBytes: number }): Buffer {
  const out = Buffer.alloc(16);
  out.writeDoubleBE(stats.objectCount, 0);
  out.writeDoubleBE(stats.usedBytes, 8);
  return out;
}

function decodeStats(buf: Buffer): { objectCount: number; usedBytes: number } {
  return { objectCount: buf.readDoubleBE(0), usedBytes: buf.readDoubleBE(8) };
}

function notFound(key: Uint8Array): { ok: false; error: ShaleError } {
  return { ok: false, error: asdError(AsdErrorCode.NotFound, `no object ${describeKey(key)}`) };
}

function corrupt(key: Uint8Array, why: string): { ok: false; error: ShaleError } {
  return {
    ok: false,
    error: asdError(AsdErrorCode.Corrupt, `object ${describeKey(key)} is corrupt: ${why}`, {
      details: { key: Buffer.from(key).toString('hex') },
    }),
  };
}

function corruptIndex(key: Uint8Array): { ok: false; error: ShaleError } {
  return corrupt(key, 'its index record fails its checksum');
}

function fsError(err: unknown, doing: string): ShaleError {
  if (err instanceof ShaleError) return err;
  const code = systemErrorCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return asdError(AsdErrorCode.NoSpace, `no space left on the disk while ${doing}`, {
      cause: err,
    });
  }
  return asdError(AsdErrorCode.IoError, `disk error while ${doing}: ${errorMessage(err)}`, {
    cause: err,
  });
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
