import { assert, errorMessage, ShaleError } from '@shale/common';
import {
  BLOCK_SIZE_BYTES,
  FAN_OUT_DIRS,
  INLINE_MAX_BYTES,
  MAX_INFLIGHT_PUT_BYTES,
  MAX_JOBS_PER_COMMIT,
} from './constants.js';
import { AsdErrorCode, asdError } from './errors.js';
import { fileKey, garbageKey, objectKey } from './index-keys.js';
import { checksumValue, decodeRecord, encodeRecord, type ObjectRecord } from './index-record.js';
import type { StoreSpace } from './object-store-space.js';
import {
  encodeStats,
  fanDir,
  fsError,
  META_FILE_ID_HIGH,
  META_STATS,
  type StoreState,
} from './object-store-state.js';
import { checkKeys, checkPutChecksum, checkPutItems, type PutItem } from './request-validation.js';

/**
 * The ASD's write path: put (a call's objects, all or nothing) and delete, and the group
 * commit that makes them durable:
 *
 *   put: check request -> check space -> checksum blocks -> write value files (fsync each)
 *        -> commit queue -> [group commit: fsync touched dirs -> one LevelDB batch, fsync]
 *        -> reply -> unlink files of overwritten values (garbage)
 *   delete: check keys -> commit queue -> [the same group commit] -> reply -> garbage
 *
 * One commit runs at a time; every call queued meanwhile shares the next one's fsyncs.
 * State shared with reads lives in StoreState (object-store-state.ts).
 */

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

/** Per value file: one file-system block of slack, for the space check. */
const FILE_OVERHEAD_BYTES = 4096;

export class StoreWriter {
  private readonly commitQueue: CommitJob[] = [];
  private committing: Promise<void> | undefined;

  constructor(
    private readonly state: StoreState,
    private readonly space: StoreSpace,
  ) {}

  /** Stores every item or none; resolves once all are durable. Returns each value's CRC32C. */
  async put(items: readonly PutItem[]): Promise<number[]> {
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
      this.state.inflightPutBytes + totalBytes > MAX_INFLIGHT_PUT_BYTES &&
      this.state.inflightPutBytes > 0
    ) {
      throw asdError(
        AsdErrorCode.Busy,
        `${this.state.inflightPutBytes} put bytes already in flight (limit ${MAX_INFLIGHT_PUT_BYTES}); retry later`,
      );
    }
    const fileCount = items.filter((item) => item.value.length > INLINE_MAX_BYTES).length;
    // Count this call as in flight before the (asynchronous) space check, so that calls
    // checking at the same time see each other's bytes.
    this.state.inflightPutBytes += totalBytes;
    try {
      await this.space.checkSpace(totalBytes + fileCount * FILE_OVERHEAD_BYTES, totalBytes);
      return await this.putAdmitted(items, sums);
    } finally {
      this.state.inflightPutBytes -= totalBytes;
    }
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
        // A copy: the value may be a view of a pooled receive buffer (data-server.ts), which
        // is reused once this put settles, while the record lives on in the caches.
        inline: inline ? Buffer.from(item.value) : undefined,
        fileId,
      };
      if (!inline) {
        writes.push({ fileId, value: item.value });
        dirs.add(fileId % FAN_OUT_DIRS);
      }
      entries.push({ key: Buffer.from(item.key), record, encoded: encodeRecord(record) });
    }

    const outcomes = await Promise.allSettled(
      writes.map((write) =>
        this.state.disk.writeFileDurably(this.state.filePath(write.fileId), write.value),
      ),
    );
    const failed = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failed !== undefined) {
      // Nothing was indexed: the files are ours to remove.
      await this.space.removeFiles(writes.map((write) => write.fileId));
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
    const id = this.state.nextFileId;
    this.state.nextFileId += 1;
    assert(id < 2 ** 48, 'file ids exhausted');
    return id;
  }

  /** Deletes every key in one atomic, durable commit. Returns whether each key existed. */
  async delete(keys: readonly Uint8Array[]): Promise<boolean[]> {
    checkKeys(keys, 'delete');
    this.checkWritable();
    const copies = keys.map((key) => Buffer.from(key));
    return new Promise<boolean[]>((resolve, reject) => {
      this.enqueue({ kind: 'delete', keys: copies, resolve, reject });
    });
  }

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
      await Promise.all(
        [...dirs].map((dir) => this.state.disk.fsyncDir(fanDir(this.state.dir, dir))),
      );
    } catch (err) {
      this.state.degradedReason = `syncing a value directory failed: ${errorMessage(err)}`;
      this.state.log(`asd ${this.state.identity.asdId}: DEGRADED, ${this.state.degradedReason}`);
      throw fsError(err, 'syncing a value directory');
    }

    const keyIds = [...touched.keys()];
    const previous = await this.state.db.getMany(
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
    let high = this.state.fileIdHigh;
    for (const [fileId, key] of filesAdded) {
      ops.push({ type: 'put', key: fileKey(fileId), value: key });
      high = Math.max(high, fileId);
    }
    for (const fileId of filesDropped) ops.push({ type: 'del', key: fileKey(fileId) });
    for (const fileId of garbage) {
      ops.push({ type: 'put', key: garbageKey(fileId), value: Buffer.alloc(0) });
      high = Math.max(high, fileId);
    }
    const objectCount = this.state.objectCount + countDelta;
    const usedBytes = this.state.usedBytes + bytesDelta;
    assert(objectCount >= 0 && usedBytes >= 0, 'object count and used bytes stay non-negative');
    ops.push({ type: 'put', key: META_STATS, value: encodeStats({ objectCount, usedBytes }) });
    const highBuf = Buffer.alloc(6);
    highBuf.writeUIntBE(high, 0, 6);
    ops.push({ type: 'put', key: META_FILE_ID_HIGH, value: highBuf });

    try {
      await this.state.db.batch(ops, { sync: true });
    } catch (err) {
      this.state.degradedReason = `the index refused a write: ${errorMessage(err)}`;
      this.state.log(`asd ${this.state.identity.asdId}: DEGRADED, ${this.state.degradedReason}`);
      throw fsError(err, 'committing the index');
    }
    // Same tick as learning the batch is durable: readers that started before cannot
    // refill the cache with what this batch replaced (see RecordCache).
    this.state.records.generation += 1;
    for (const id of keyIds) this.state.records.update(id, state.get(id)?.record);
    this.state.objectCount = objectCount;
    this.state.usedBytes = usedBytes;
    this.state.fileIdHigh = high;
    this.state.metrics?.commits.inc();
    this.state.metrics?.commitJobs.observe(jobs.length);
    if (garbage.size > 0) this.state.track(this.space.removeGarbage([...garbage]));
    return results;
  }

  /** Resolves once the commit in progress, if any, has ended. */
  async idle(): Promise<void> {
    await this.committing;
  }

  private checkWritable(): void {
    if (this.state.degradedReason !== undefined) {
      throw asdError(AsdErrorCode.IoError, `the ASD refuses writes: ${this.state.degradedReason}`);
    }
  }
}
