import { assert, crc32c, crc32cCombine } from '@shale/common';
import {
  CLUSTER_SIZE_BYTES,
  SCO_APPEND_MAX_CLUSTERS,
  SCO_SIZE_DEFAULT_BYTES,
  SCO_WRITEBACK_STEPS,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { nodeScoDisk, type ScoDisk, type ScoWriteHandle } from './sco-disk.js';
import { checkScoSize, scoFilePath, scoIoError } from './sco-file.js';
import type { ScoNumber } from './types.js';

export interface ScoWriterOptions {
  /** The write-buffer directory (it must exist). */
  readonly dir: string;
  readonly scoNumber: ScoNumber;
  readonly clusterSizeBytes?: number;
  readonly scoSizeBytes?: number;
  readonly disk?: ScoDisk;
  /**
   * A buffer of scoSizeBytes (sco-memory.ts) that receives a copy of every append; the
   * file is written from it, and once sealed it is the whole SCO, ready for upload.
   */
  readonly memory?: Buffer | undefined;
}

export interface ScoAppendResult {
  /** Cluster offset (inside the SCO) of the first cluster of the batch; the rest follow. */
  readonly firstClusterOffset: number;
  /** CRC32C of each appended cluster's payload, in order: what the TLog WRITE entries carry. */
  readonly crc32cs: Uint32Array;
}

export interface SealedSco {
  readonly scoNumber: ScoNumber;
  readonly sizeBytes: number;
  readonly clusterCount: number;
  /** CRC32C of the whole SCO file: what the TLog SCO_SEALED entry carries. */
  readonly crc32c: number;
}

/**
 * Writes one SCO in the write buffer: clusters appended back to back, cluster k at byte
 * offset k * clusterSizeBytes, so a ranged read of the uploaded object maps directly.
 *
 *   create ──> open ──append/sync──> open ──seal──> sealed
 *                 └──(a disk error)──> failed (every later call: VD_IO_ERROR)
 *
 * Calls are served in the order they are made (one queue), so `sync()` covers every
 * append made before it. A disk error fails the writer for good: after a failed write or
 * fdatasync the file's contents are unknown (and Linux may have dropped the dirty pages),
 * so the volume must roll to a new SCO rather than retry here.
 *
 * While it fills, each 1/SCO_WRITEBACK_STEPS of it written starts an fdatasync in the
 * background (one at a time, outside the queue: nothing waits for it but the seal), so the
 * seal's fsync, which the write lane waits for, has little left to write back. A failed
 * one fails the writer like any other.
 */
export class ScoWriter {
  readonly scoNumber: ScoNumber;
  readonly clusterSizeBytes: number;
  readonly capacityClusters: number;
  readonly path: string;
  private readonly dir: string;
  private readonly disk: ScoDisk;
  private readonly handle: ScoWriteHandle;
  /** The SCO's bytes in memory (see ScoWriterOptions.memory), or undefined. */
  readonly memory: Buffer | undefined;
  private state: 'open' | 'sealed' | 'failed' = 'open';
  private failure: Error | undefined;
  /** Clusters accepted by append() (including ones still queued). */
  private acceptedClusters = 0;
  /** Clusters written to the file. */
  private writtenClusters = 0;
  private runningCrc = 0;
  /** The background fdatasync in progress (SCO_WRITEBACK_STEPS), if any. */
  private writeback: Promise<void> | undefined;
  /** Written clusters at which the next background fdatasync starts. */
  private nextWritebackAt: number;
  private dirSynced = false;
  /** seal() was called: nothing may be queued behind it (the handle will be closed). */
  private sealRequested = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** A sync() queued after the last append, which later sync() calls can share. */
  private sharedSync: Promise<void> | undefined;

  private constructor(
    options: Required<Omit<ScoWriterOptions, 'memory'>>,
    handle: ScoWriteHandle,
    memory: Buffer | undefined,
  ) {
    this.memory = memory;
    this.scoNumber = options.scoNumber;
    this.clusterSizeBytes = options.clusterSizeBytes;
    this.capacityClusters = options.scoSizeBytes / options.clusterSizeBytes;
    this.nextWritebackAt = Math.ceil(this.capacityClusters / SCO_WRITEBACK_STEPS);
    this.dir = options.dir;
    this.disk = options.disk;
    this.path = scoFilePath(options.dir, options.scoNumber);
    this.handle = handle;
  }

  /** Creates the SCO file (VD_SCO_EXISTS if it exists: SCO numbers are never reused). */
  static async create(options: ScoWriterOptions): Promise<ScoWriter> {
    const full: Required<Omit<ScoWriterOptions, 'memory'>> = {
      dir: options.dir,
      scoNumber: options.scoNumber,
      clusterSizeBytes: options.clusterSizeBytes ?? CLUSTER_SIZE_BYTES,
      scoSizeBytes: options.scoSizeBytes ?? SCO_SIZE_DEFAULT_BYTES,
      disk: options.disk ?? nodeScoDisk,
    };
    checkScoSize(full.scoSizeBytes, full.clusterSizeBytes);
    assert(
      options.memory === undefined || options.memory.length === full.scoSizeBytes,
      'SCO memory must be exactly one SCO',
    );
    const filePath = scoFilePath(full.dir, full.scoNumber);
    let handle: ScoWriteHandle;
    try {
      handle = await full.disk.createExclusive(filePath);
    } catch (err) {
      throw scoIoError(err, 'cannot create SCO', filePath);
    }
    return new ScoWriter(full, handle, options.memory);
  }

  /** Clusters accepted so far (appends still in flight included). */
  get clusterCount(): number {
    return this.acceptedClusters;
  }

  get remainingClusters(): number {
    return this.capacityClusters - this.acceptedClusters;
  }

  get isFull(): boolean {
    return this.acceptedClusters === this.capacityClusters;
  }

  get isSealed(): boolean {
    return this.state === 'sealed';
  }

  /**
   * Appends a batch of whole clusters with one gathered write. Without SCO memory the
   * buffers are written as they are (views of the caller's request, not copies) and must
   * not change until the promise settles; with it they are copied at once. The batch must fit: the caller checks `remainingClusters` and rolls
   * to a new SCO first.
   */
  append(clusters: readonly Buffer[]): Promise<ScoAppendResult> {
    const appended = this.appendQueued(clusters);
    return appended.written.then(() => ({
      firstClusterOffset: appended.firstClusterOffset,
      crc32cs: appended.crc32cs,
    }));
  }

  /**
   * append(), answered before the write: where the clusters go and their CRC32Cs are known
   * at once (so the TLog entries naming them can be written at the same time as the data),
   * and `written` settles when the gathered write has. Recovery cuts a TLog at the first
   * entry whose cluster is not on disk, so an entry may reach the page cache before its
   * data as long as neither is acknowledged before both are written.
   */
  appendQueued(clusters: readonly Buffer[]): ScoAppendResult & { readonly written: Promise<void> } {
    assert(!this.sealRequested, `append to sealed SCO ${this.scoNumber}`);
    assert(clusters.length > 0, 'append of an empty batch');
    assert(clusters.length <= SCO_APPEND_MAX_CLUSTERS, `append of ${clusters.length} clusters`);
    assert(
      clusters.length <= this.remainingClusters,
      `append of ${clusters.length} clusters to SCO ${this.scoNumber} with ${this.remainingClusters} free`,
    );
    const crc32cs = new Uint32Array(clusters.length);
    for (let i = 0; i < clusters.length; i += 1) {
      const cluster = clusters[i] as Buffer;
      assert(
        cluster.length === this.clusterSizeBytes,
        `cluster of ${cluster.length} B, expected ${this.clusterSizeBytes} B`,
      );
      crc32cs[i] = crc32c(cluster);
    }

    const firstClusterOffset = this.acceptedClusters;
    this.acceptedClusters += clusters.length;
    this.sharedSync = undefined;
    const position = firstClusterOffset * this.clusterSizeBytes;
    let toWrite = clusters;
    if (this.memory !== undefined) {
      // One copy into the SCO's memory now (the caller's buffers are free at once); the
      // file is written from there, one contiguous range per append.
      for (let i = 0; i < clusters.length; i += 1) {
        (clusters[i] as Buffer).copy(this.memory, position + i * this.clusterSizeBytes);
      }
      toWrite = [
        this.memory.subarray(position, position + clusters.length * this.clusterSizeBytes),
      ];
    }
    const written = this.enqueue(async () => {
      assert(this.writtenClusters === firstClusterOffset, 'SCO appends ran out of order');
      await this.writeAll(toWrite, position);
      // The whole SCO's CRC32C runs on from the clusters' own, combined (one length, so one
      // cached operator), not from a second pass over the bytes.
      for (let i = 0; i < crc32cs.length; i += 1) {
        this.runningCrc = crc32cCombine(
          this.runningCrc,
          crc32cs[i] as number,
          this.clusterSizeBytes,
        );
      }
      this.writtenClusters += clusters.length;
      // Durability: the batch is in the page cache only; sync() or seal() makes it durable.
      this.maybeStartWriteback();
    });
    return { firstClusterOffset, crc32cs, written };
  }

  /**
   * fdatasync: every cluster appended before this call is durable. Calls made while one is
   * already queued (with no append in between) share it: one fdatasync serves them all,
   * which is the group commit behind FLUSH and FUA.
   */
  sync(): Promise<void> {
    assert(!this.sealRequested, `sync of sealed SCO ${this.scoNumber}`);
    if (this.sharedSync !== undefined) return this.sharedSync;
    const done = this.enqueue(async () => {
      if (this.sharedSync === done) this.sharedSync = undefined;
      await this.diskCall('cannot fdatasync SCO', () => this.handle.datasync());
      await this.syncDirOnce();
      // Durability: every cluster appended before this sync() is on stable storage, and
      // so is the SCO file's name in the write-buffer directory.
    });
    this.sharedSync = done;
    return done;
  }

  /** Final fsync and close. Returns the SCO's size and CRC32C for its SCO_SEALED entry. */
  seal(): Promise<SealedSco> {
    assert(!this.sealRequested, `SCO ${this.scoNumber} sealed twice`);
    this.sealRequested = true;
    this.sharedSync = undefined;
    const sealing = this.enqueue(async () => {
      // A background fdatasync that failed fails the seal: its error is the data's.
      await this.settleWriteback();
      await this.diskCall('cannot fsync SCO', () => this.handle.sync());
      await this.syncDirOnce();
      await this.diskCall('cannot close SCO', () => this.handle.close());
      this.state = 'sealed';
      // Durability: the whole SCO and its directory entry are on stable storage.
      return {
        scoNumber: this.scoNumber,
        sizeBytes: this.writtenClusters * this.clusterSizeBytes,
        clusterCount: this.writtenClusters,
        crc32c: this.runningCrc >>> 0,
      };
    });
    return sealing;
  }

  /**
   * Closes the file without sealing (after a failure, or when the volume goes away). The
   * file stays; what it holds is whatever the TLog says it holds.
   */
  async abort(): Promise<void> {
    if (this.isSealed) return;
    // Wait for queued work, whatever its outcome: each caller got its own answer.
    await this.queue;
    if (this.isSealed) return;
    await this.writeback;
    this.fail(vdError(VdErrorCode.Closed, `SCO ${this.scoNumber} writer was aborted`));
    try {
      await this.handle.close();
    } catch (err) {
      throw scoIoError(err, 'cannot close SCO', this.path);
    }
  }

  /**
   * Starts an fdatasync behind the appends once another 1/SCO_WRITEBACK_STEPS of the SCO is
   * written (one at a time). Nothing waits for it but the seal; a failure fails the writer
   * (after a failed fdatasync the file's contents are unknown), so the next append, sync or
   * seal reports it.
   */
  private maybeStartWriteback(): void {
    if (this.writeback !== undefined || this.writtenClusters < this.nextWritebackAt) return;
    if (this.writtenClusters >= this.capacityClusters) return; // the seal syncs it now
    const step = Math.ceil(this.capacityClusters / SCO_WRITEBACK_STEPS);
    this.nextWritebackAt = (Math.floor(this.writtenClusters / step) + 1) * step;
    this.writeback = this.diskCall('cannot fdatasync SCO', () => this.handle.datasync())
      .catch(() => undefined) // recorded as the writer's failure by diskCall
      .finally(() => {
        this.writeback = undefined;
      });
  }

  private async settleWriteback(): Promise<void> {
    await this.writeback;
    if (this.failure !== undefined) throw this.failure;
  }

  /** Runs `op` after everything queued before it; a failed writer refuses it. */
  private enqueue<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queue.then(() => {
      if (this.failure !== undefined) throw this.failure;
      return op();
    });
    // The queue only orders calls; each caller receives its own outcome through `result`.
    this.queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private async writeAll(clusters: readonly Buffer[], position: number): Promise<void> {
    let pending: readonly Buffer[] = clusters;
    let at = position;
    while (pending.length > 0) {
      const batch = pending;
      const { bytesWritten } = await this.diskCall('cannot write SCO', () =>
        this.handle.writev(batch, at),
      );
      assert(bytesWritten > 0, 'writev wrote nothing');
      at += bytesWritten;
      pending = dropBytes(batch, bytesWritten);
    }
  }

  private async syncDirOnce(): Promise<void> {
    if (this.dirSynced) return;
    await this.diskCall('cannot fsync write-buffer directory of SCO', () =>
      this.disk.fsyncDir(this.dir),
    );
    this.dirSynced = true;
  }

  /** A disk call whose failure fails the writer for good. */
  private async diskCall<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      const failure = scoIoError(err, what, this.path);
      this.fail(failure);
      throw failure;
    }
  }

  private fail(failure: Error): void {
    if (this.failure === undefined) this.failure = failure;
    this.state = 'failed';
  }
}

/** The buffers left after the first `bytes` of them were written (views, no copies). */
function dropBytes(buffers: readonly Buffer[], bytes: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = bytes;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip === 0 ? buffer : buffer.subarray(skip));
    skip = 0;
  }
  return rest;
}
