import fs from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, isShaleError } from '@shale/common';
import {
  CHECKPOINT_EVERY_TLOGS,
  CHECKPOINT_MAX_TLOGS,
  CHECKPOINT_PART_ENTRIES,
  TLOG_ENTRY_SIZE_BYTES,
  UPLOAD_CONCURRENCY,
  UPLOAD_RETRY_MAX_MS,
  UPLOAD_RETRY_MIN_MS,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { encodeCheckpointPart, type MapPosition } from './history.js';
import { scoFilePath } from './sco-file.js';
import { parseClosedTLog, tlogFileName } from './tlog-file.js';
import type { TLogEntry } from './tlog-format.js';
import { type ClusterIndex, type ClusterLocation, scoNumber } from './types.js';
import { checkOpen, persistState, type VolumeContext } from './volume-context.js';
import {
  type BackendRoot,
  type CheckpointRef,
  checkpointObjectName,
  ROOT_OBJECT,
  STATE_FORMAT,
  scoObjectName,
  tlogObjectName,
} from './volume-state.js';

export type UploadItem =
  | { kind: 'sco'; scoNumber: number }
  | { kind: 'tlog'; tlogNumber: number }
  | { kind: 'root' }
  | {
      kind: 'checkpoint';
      entries: AsyncGenerator<[ClusterIndex, ClusterLocation] | Buffer>;
      position: MapPosition;
    }
  | { kind: 'gc'; scos: readonly number[]; tlogs: readonly number[]; checkpoint?: CheckpointRef };

interface QueuedUpload {
  item: UploadItem;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The upload pipeline of one vDisk: sealed SCOs, closed TLogs, checkpoints of the map, the
 * root, and garbage deletion, in one FIFO queue to the backend.
 *
 *   sco ─┐                         (up to UPLOAD_CONCURRENCY at once)
 *   sco ─┼─> tlog ─> root ─> checkpoint ─> gc ...   (each of these waits for all before it)
 *   sco ─┘
 *
 * A TLog, a checkpoint, the root and garbage deletion each wait for everything queued
 * before them, so the backend never holds a TLog that names a SCO it does not hold, and
 * the root never names a TLog it does not hold. A failed upload is retried with backoff
 * (UPLOAD_RETRY_MIN_MS..UPLOAD_RETRY_MAX_MS) until it succeeds, the vDisk closes, or the
 * backend answers VD_FENCED (another volumedriver took the namespace): then the queue is
 * dropped. Uploaded SCOs stay in the write buffer as a read cache up to scoCacheBytes.
 * Also here: reading a TLog back (local file, else the backend's copy).
 */
export class UploadPipeline {
  private readonly uploads: QueuedUpload[] = [];
  private uploadsRunning = 0;
  private uploadBarrierRunning = false;
  private uploadRetryMs = UPLOAD_RETRY_MIN_MS;
  /** Writes waiting for the write buffer to drain (the write lane); woken by every upload. */
  uploadWaiters: (() => void)[] = [];
  private tlogsSinceCheckpoint = 0;
  private tlogEntriesSinceCheckpoint = 0;
  lastUploadError: string | undefined;

  constructor(
    private readonly v: VolumeContext,
    /** Uploaded SCOs kept locally as a read cache (bytes). */
    private readonly scoCacheBytes: number,
    /** Asks the write lane for a checkpoint (it seals and rolls first). */
    private readonly requestCheckpoint: () => Promise<void>,
  ) {}

  /** Objects queued or uploading (metrics). */
  get backlogObjects(): number {
    return this.uploads.length + this.uploadsRunning + (this.uploadBarrierRunning ? 1 : 0);
  }

  /** Bytes of this vDisk's objects in the backend. */
  async backendBytes(): Promise<number> {
    const objects = await this.v.backend.listObjects(this.v.config.namespace, '');
    return objects.reduce((sum, o) => sum + o.sizeBytes, 0);
  }

  enqueueUpload(item: UploadItem): Promise<void> {
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => undefined);
    this.uploads.push({ item, done, resolve, reject });
    this.pumpUploads();
    return done;
  }

  /**
   * A checkpoint (the whole map) is worth its cost after CHECKPOINT_EVERY_TLOGS full TLogs'
   * worth of entries, or CHECKPOINT_MAX_TLOGS TLogs of any size: the data-at-risk bound rolls
   * small TLogs often, and a restore replays every TLog after the checkpoint.
   */
  private checkpointDue(): boolean {
    const fullTlogEntries =
      (this.v.config.tlogScos * this.v.config.scoSizeBytes) / this.v.config.clusterSizeBytes;
    return (
      (this.tlogsSinceCheckpoint >= CHECKPOINT_EVERY_TLOGS &&
        this.tlogEntriesSinceCheckpoint >= CHECKPOINT_EVERY_TLOGS * fullTlogEntries) ||
      this.tlogsSinceCheckpoint >= CHECKPOINT_MAX_TLOGS
    );
  }

  /** A checkpoint of the map as of now (the lane is idle or this is its batch end). */
  enqueueCheckpoint(): void {
    const position = this.closedPosition();
    if (position === undefined) return;
    this.tlogsSinceCheckpoint = 0;
    this.tlogEntriesSinceCheckpoint = 0;
    void this.enqueueUpload({
      kind: 'checkpoint',
      entries: this.v.lba.snapshotEntries(),
      position,
    });
  }

  /** The map's position as (last closed TLog, its length), when the current TLog is empty. */
  private closedPosition(): MapPosition | undefined {
    if (this.v.tlog.entryCount > 0) return undefined;
    const last = this.v.state.chain[this.v.state.chain.length - 1];
    if (last === undefined) return undefined;
    return { generation: this.v.state.generation, tlogNumber: last, entryCount: -1 };
  }

  enqueueGarbage(): void {
    const { scos, tlogs } = this.v.state.garbage;
    if (scos.length === 0 && tlogs.length === 0) return;
    void this.enqueueUpload({ kind: 'gc', scos: [...scos], tlogs: [...tlogs] });
  }

  private pumpUploads(): void {
    if (this.v.closed && this.uploads.length === 0) return;
    while (this.uploads.length > 0 && !this.uploadBarrierRunning && this.v.fencedBy === undefined) {
      const head = this.uploads[0] as QueuedUpload;
      if (head.item.kind === 'sco') {
        if (this.uploadsRunning >= UPLOAD_CONCURRENCY) return;
        this.uploads.shift();
        this.uploadsRunning += 1;
        void this.runUpload(head).finally(() => {
          this.uploadsRunning -= 1;
          this.pumpUploads();
        });
      } else {
        if (this.uploadsRunning > 0) return;
        this.uploads.shift();
        this.uploadBarrierRunning = true;
        void this.runUpload(head).finally(() => {
          this.uploadBarrierRunning = false;
          this.pumpUploads();
        });
        return;
      }
    }
  }

  private async runUpload(queued: QueuedUpload): Promise<void> {
    for (;;) {
      try {
        await this.upload(queued.item);
        this.uploadRetryMs = UPLOAD_RETRY_MIN_MS;
        this.lastUploadError = undefined;
        queued.resolve();
        const waiters = this.uploadWaiters;
        this.uploadWaiters = [];
        for (const wake of waiters) wake();
        return;
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        if (isShaleError(error, VdErrorCode.Fenced)) {
          this.v.fencedBy = error;
          this.v.log(`${this.v.name}: fenced: ${error.message}`);
        }
        if (this.v.fencedBy !== undefined || this.v.closed) {
          queued.reject(error);
          for (const rest of this.uploads.splice(0)) rest.reject(error);
          for (const wake of this.uploadWaiters.splice(0)) wake();
          return;
        }
        this.lastUploadError = error.message;
        this.v.log(
          `${this.v.name}: upload failed, retrying in ${this.uploadRetryMs} ms: ${error.message}`,
        );
        await new Promise((resolve) => setTimeout(resolve, this.uploadRetryMs));
        this.uploadRetryMs = Math.min(this.uploadRetryMs * 2, UPLOAD_RETRY_MAX_MS);
      }
    }
  }

  private async upload(item: UploadItem): Promise<void> {
    const ns = this.v.config.namespace;
    switch (item.kind) {
      case 'sco': {
        const memory = this.v.sealedMemory.get(item.scoNumber);
        const size = this.v.localScos.get(item.scoNumber);
        // A sealed SCO still in memory goes up from there; otherwise it is read back.
        const data =
          memory !== undefined && size !== undefined
            ? memory.subarray(0, size)
            : await fs.readFile(scoFilePath(this.v.scoDir, scoNumber(item.scoNumber)));
        await this.v.backend.putObject(ns, scoObjectName(item.scoNumber), data, this.v.epoch);
        if (memory !== undefined && this.v.sealedMemory.get(item.scoNumber) === memory) {
          // putObject resolved: the backend no longer reads `data` (what it still writes
          // in the background, it copied).
          this.v.sealedMemory.delete(item.scoNumber);
          this.v.scoMemory.give(memory);
        }
        this.v.uploadedScos.add(item.scoNumber);
        this.v.dirtyScoBytes = Math.max(0, this.v.dirtyScoBytes - data.length);
        this.v.stats.scosUploaded += 1;
        this.v.stats.bytesUploaded += data.length;
        await this.evictScoCache();
        return;
      }
      case 'tlog': {
        if (!this.v.state.chain.includes(item.tlogNumber)) return; // cut by a rollback
        const data = await fs.readFile(path.join(this.v.tlogDir, tlogFileName(item.tlogNumber)));
        await this.v.backend.putObject(ns, tlogObjectName(item.tlogNumber), data, this.v.epoch);
        this.v.uploadedTlogs.add(item.tlogNumber);
        this.v.stats.tlogsUploaded += 1;
        this.v.stats.bytesUploaded += data.length;
        this.tlogsSinceCheckpoint += 1;
        this.tlogEntriesSinceCheckpoint += data.length / TLOG_ENTRY_SIZE_BYTES;
        await this.putRoot();
        if (this.checkpointDue()) {
          this.tlogsSinceCheckpoint = 0;
          this.tlogEntriesSinceCheckpoint = 0;
          void this.requestCheckpoint().catch(() => undefined);
        }
        return;
      }
      case 'root':
        await this.putRoot();
        return;
      case 'checkpoint': {
        const { position } = item;
        if (position.generation !== this.v.state.generation) return; // history rewritten since
        const id = this.v.nextCheckpointId;
        this.v.nextCheckpointId += 1;
        let part = 0;
        let batch: [number, ClusterLocation][] = [];
        for await (const value of item.entries) {
          if (Buffer.isBuffer(value)) continue;
          batch.push(value);
          if (batch.length === CHECKPOINT_PART_ENTRIES) {
            await this.v.backend.putObject(
              ns,
              checkpointObjectName(id, part),
              encodeCheckpointPart(batch),
              this.v.epoch,
            );
            part += 1;
            batch = [];
          }
        }
        await this.v.backend.putObject(
          ns,
          checkpointObjectName(id, part),
          encodeCheckpointPart(batch),
          this.v.epoch,
        );
        const tlogEntries = (await this.readTlog(position.tlogNumber)).length;
        const previous = this.v.rootCheckpoint;
        this.v.rootCheckpoint = {
          id,
          parts: part + 1,
          tlogNumber: position.tlogNumber,
          entryCount: tlogEntries,
          generation: position.generation,
        };
        await this.putRoot();
        if (previous !== undefined) await this.deleteCheckpoint(previous);
        return;
      }
      case 'gc': {
        for (const n of item.tlogs) {
          await this.v.backend.deleteObject(ns, tlogObjectName(n), this.v.epoch);
          await fs.rm(path.join(this.v.tlogDir, tlogFileName(n)), { force: true });
        }
        for (const n of item.scos) {
          await this.v.backend.deleteObject(ns, scoObjectName(n), this.v.epoch);
          this.v.uploadedScos.delete(n);
          await this.dropLocalSco(n);
        }
        this.v.state.garbage = {
          scos: this.v.state.garbage.scos.filter((n) => !item.scos.includes(n)),
          tlogs: this.v.state.garbage.tlogs.filter((n) => !item.tlogs.includes(n)),
        };
        await persistState(this.v);
        return;
      }
    }
  }

  private async deleteCheckpoint(ref: CheckpointRef): Promise<void> {
    for (let part = 0; part < ref.parts; part += 1) {
      await this.v.backend.deleteObject(
        this.v.config.namespace,
        checkpointObjectName(ref.id, part),
        this.v.epoch,
      );
    }
  }

  /** The root: the history as far as the backend holds it (an uploaded chain prefix). */
  private async putRoot(): Promise<void> {
    // A rewritten history goes into the root whole or not at all: a part of it is not a
    // state the vDisk ever had. Until then the old root (and its objects) stay.
    if (this.v.rootNeeds !== undefined) {
      for (const n of this.v.rootNeeds) if (!this.v.uploadedTlogs.has(n)) return;
      this.v.rootNeeds = undefined;
    }
    const chain: number[] = [];
    for (const n of this.v.state.chain) {
      if (!this.v.uploadedTlogs.has(n)) break;
      chain.push(n);
    }
    const checkpoint =
      this.v.rootCheckpoint !== undefined &&
      this.v.rootCheckpoint.generation === this.v.state.generation &&
      chain.includes(this.v.rootCheckpoint.tlogNumber)
        ? this.v.rootCheckpoint
        : undefined;
    const root: BackendRoot = {
      format: STATE_FORMAT,
      config: this.v.config,
      generation: this.v.state.generation,
      sizeBytes: this.v.state.sizeBytes,
      chain,
      snapshots: this.v.state.snapshots.filter((s) => chain.includes(s.tlogNumber)),
      nextSnapshotId: this.v.state.nextSnapshotId,
      checkpoint,
    };
    await this.v.backend.putObject(
      this.v.config.namespace,
      ROOT_OBJECT,
      Buffer.from(JSON.stringify(root)),
      this.v.epoch,
    );
    // A restore from the backend now has every write these TLogs hold.
    this.v.risk.inBackend(chain);
  }

  async evictScoCache(limitBytes = this.scoCacheBytes): Promise<void> {
    let cached = 0;
    for (const [n, size] of this.v.localScos) if (this.v.uploadedScos.has(n)) cached += size;
    for (const [n, size] of this.v.localScos) {
      if (cached <= limitBytes) return;
      if (!this.v.uploadedScos.has(n)) continue;
      await this.dropLocalSco(n);
      cached -= size;
    }
  }

  async dropLocalSco(n: number): Promise<void> {
    this.v.localScos.delete(n);
    const memory = this.v.sealedMemory.get(n);
    if (memory !== undefined) {
      // An upload may still be reading it: out of the pool, never reused.
      this.v.sealedMemory.delete(n);
      this.v.scoMemory.forget(memory);
    }
    const reader = this.v.readers.get(n);
    this.v.readers.delete(n);
    await fs.rm(scoFilePath(this.v.scoDir, scoNumber(n)), { force: true });
    if (reader !== undefined)
      setTimeout(() => void reader.close().catch(() => undefined), 1000).unref();
  }

  async waitUploadsDrained(): Promise<void> {
    for (;;) {
      const pending = this.uploads.map((u) => u.done);
      if (pending.length === 0 && this.uploadsRunning === 0 && !this.uploadBarrierRunning) return;
      if (this.v.fencedBy !== undefined) checkOpen(this.v);
      if (pending.length > 0) await Promise.all(pending);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** waitUploadsDrained, but gives up after `ms` (or on a failure) and says what is left. */
  async waitUploadsDrainedWithin(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), ms);
    });
    try {
      const outcome = await Promise.race([this.waitUploadsDrained().then(() => 'done'), timeout]);
      if (outcome === 'timeout') {
        this.v.log(`${this.v.name}: uploads still pending after ${ms} ms; left for the next open`);
      }
    } catch (err) {
      this.v.log(`${this.v.name}: uploads stopped: ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async waitUploadsSettled(): Promise<void> {
    // On close: what runs now finishes (or fails); what is queued is picked up at open.
    const closedError = vdError(
      VdErrorCode.Closed,
      `vDisk ${this.v.name} closed before the upload`,
    );
    for (const rest of this.uploads.splice(0)) rest.reject(closedError);
    while (this.uploadsRunning > 0 || this.uploadBarrierRunning) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** The entries of a TLog: the local file if present, else the backend's copy. */
  async readTlog(tlogNumber: number): Promise<TLogEntry[]> {
    if (tlogNumber === this.v.tlog.tlogNumber && !this.v.closed) {
      await Promise.all(this.v.tlogWrites);
    }
    const filePath = path.join(this.v.tlogDir, tlogFileName(tlogNumber));
    let buf: Buffer;
    try {
      buf = await fs.readFile(filePath);
    } catch {
      buf = await this.v.backend.getObject(this.v.config.namespace, tlogObjectName(tlogNumber));
    }
    if (tlogNumber === this.v.tlog.tlogNumber) {
      return parseClosedTLog(buf.subarray(0, this.v.tlog.entryCount * 32), `TLog ${tlogNumber}`);
    }
    return parseClosedTLog(buf, `TLog ${tlogNumber} of ${this.v.name}`);
  }
}
