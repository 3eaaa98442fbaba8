import fs from 'node:fs/promises';
import path from 'node:path';
import { assert, errorMessage } from '@shale/common';
import type { BlockExtent, ScrubReport, VdiskStats, VolumeIo } from './api-types.js';
import { ClusterCache, ClusterCacheBudget } from './cluster-cache.js';
import {
  CLUSTER_CACHE_DEFAULT_BYTES,
  DATA_AT_RISK_MAX_MS,
  DATA_AT_RISK_MIN_MS,
  SCO_CACHE_DEFAULT_BYTES,
  SCO_MEMORY_DEFAULT_BYTES,
  VOLUME_CLOSE_UPLOAD_WAIT_MS,
} from './constants.js';
import { DataAtRisk, type DataAtRiskMarker } from './data-at-risk.js';
import { VdErrorCode, vdError } from './errors.js';
import type { FoldedMap } from './history.js';
import { LbaMap } from './lba-map.js';
import type { ScoDisk } from './sco-disk.js';
import { ScoMemoryPool } from './sco-memory.js';
import { encodeTLog, TLogWriter } from './tlog-file.js';
import type { TLogEntry } from './tlog-format.js';
import type { VolumeBackend } from './volume-backend.js';
import {
  checkOpen,
  type MutableState,
  newStats,
  persistState,
  stateFile,
  type VolumeContext,
  type VolumeStats,
  volumeDirs,
} from './volume-context.js';
import { ReadPath } from './volume-read-path.js';
import { parseRoot, Recovery } from './volume-recovery.js';
import { Scrubber } from './volume-scrub.js';
import { VolumeSnapshots } from './volume-snapshots.js';
import {
  objectNumber,
  ROOT_OBJECT,
  readJson,
  type SnapshotRecord,
  type VolumeConfig,
  type VolumeState,
  writeJsonAtomic,
} from './volume-state.js';
import { UploadPipeline } from './volume-uploads.js';
import { WriteLane } from './volume-write-lane.js';
import type { SpaceGuard } from './write-buffer-space.js';

export { foldVdiskFromBackend } from './volume-recovery.js';

/**
 * One vDisk on this volumedriver. `Volume` is its public face (the VolumeIo the edge and
 * the data server call, plus what VolumeManager needs) and its lifecycle: create, open
 * (a clean restart or recovery after a crash), restore from the backend, close. The
 * work is done by its parts, which share one VolumeContext (volume-context.ts):
 *
 *   volume-write-lane.ts   writes, trims, flushes, markers: batched into SCOs and TLogs
 *   volume-read-path.ts    reads: SCO memory, cluster cache, SCO files, the backend
 *   volume-snapshots.ts    snapshot markers, snapshot deletes, rollback
 *   volume-scrub.ts        rewriting SCOs with little live data
 *   volume-uploads.ts      the upload queue: SCOs, TLogs, checkpoints, the root, garbage
 *   volume-recovery.ts     the open SCO and the LBA map after a crash; map rebuilds
 */

export interface VolumeOptions {
  readonly dir: string;
  readonly backend: VolumeBackend;
  /** Uploaded SCOs kept locally as a read cache (bytes). */
  readonly scoCacheBytes?: number;
  readonly log?: (message: string) => void;
  /** Called once per request with its latency (metrics); not per cluster. */
  readonly observeLatency?: (vdisk: string, op: LatencyOp, seconds: number) => void;
  /** The bound on data at risk (data-at-risk.ts); default DATA_AT_RISK_MAX_MS. */
  readonly dataAtRiskMaxMs?: number;
  /**
   * Told when writes start being at risk (awaited before the first of them is acknowledged)
   * and when none are any more; must not reject.
   */
  readonly onDataAtRisk?: (marker: DataAtRiskMarker | undefined) => Promise<void>;
  /** How long a clean close waits for the last uploads; default VOLUME_CLOSE_UPLOAD_WAIT_MS. */
  readonly closeUploadWaitMs?: number;
  /** The write buffer's space guard (write-buffer-space.ts): throws VD_NO_SPACE to refuse. */
  readonly space?: SpaceGuard;
  /**
   * The memory the vDisk's cluster cache draws from, shared by every vDisk of the
   * volumedriver (default: a budget of CLUSTER_CACHE_DEFAULT_BYTES of its own).
   */
  readonly clusterCache?: ClusterCacheBudget;
  /**
   * Where SCOs are kept whole until uploaded, shared by every vDisk of the volumedriver
   * (default: a pool of SCO_MEMORY_DEFAULT_BYTES of its own).
   */
  readonly scoMemory?: ScoMemoryPool;
  /** The file-system seam of SCO files (sco-disk.ts), for fault injection; default the disk. */
  readonly scoDisk?: ScoDisk;
}

export type { DataAtRiskMarker } from './data-at-risk.js';

export type LatencyOp = 'read' | 'write' | 'flush' | 'trim';

export class Volume implements VolumeIo {
  readonly config: VolumeConfig;
  readonly dir: string;
  readonly stats: VolumeStats;
  /** What the parts of this vDisk share (volume-context.ts). */
  private readonly v: VolumeContext;
  private readonly observeLatency: VolumeOptions['observeLatency'];
  private readonly closeUploadWaitMs: number;
  // the parts, each in its own file, built in this order (each gets the earlier ones it calls)
  private readonly reads: ReadPath;
  private readonly uploads: UploadPipeline;
  private readonly lane: WriteLane;
  private readonly recovery: Recovery;
  private readonly snaps: VolumeSnapshots;
  private readonly scrubber: Scrubber;

  private constructor(
    options: VolumeOptions,
    config: VolumeConfig,
    state: MutableState,
    lba: LbaMap,
    tlog: TLogWriter,
  ) {
    this.dir = options.dir;
    this.config = config;
    this.observeLatency = options.observeLatency;
    this.closeUploadWaitMs = options.closeUploadWaitMs ?? VOLUME_CLOSE_UPLOAD_WAIT_MS;
    const log = options.log ?? (() => undefined);
    const maxMs = options.dataAtRiskMaxMs ?? DATA_AT_RISK_MAX_MS;
    assert(
      Number.isFinite(maxMs) && maxMs >= DATA_AT_RISK_MIN_MS,
      `data-at-risk bound ${maxMs} ms is below ${DATA_AT_RISK_MIN_MS} ms`,
    );
    const v: VolumeContext = {
      config,
      name: config.name,
      dir: options.dir,
      ...volumeDirs(options.dir),
      backend: options.backend,
      log,
      stats: newStats(),
      state,
      lba,
      tlog,
      sco: undefined,
      scoDisk: options.scoDisk,
      scosInTlog: 0,
      epoch: 0,
      fencedBy: undefined,
      closed: false,
      stateWrites: Promise.resolve(),
      tlogWrites: [],
      localScos: new Map(),
      readers: new Map(),
      clusterCache: new ClusterCache(
        config.clusterSizeBytes,
        config.scoSizeBytes / config.clusterSizeBytes,
        options.clusterCache ?? new ClusterCacheBudget(CLUSTER_CACHE_DEFAULT_BYTES),
      ),
      scoMemory: options.scoMemory ?? new ScoMemoryPool(SCO_MEMORY_DEFAULT_BYTES),
      sealedMemory: new Map(),
      uploadedScos: new Set(),
      uploadedTlogs: new Set(),
      dirtyScoBytes: 0,
      rootCheckpoint: undefined,
      rootNeeds: undefined,
      nextCheckpointId: 1,
      risk: new DataAtRisk({
        maxMs,
        name: config.name,
        current: () => ({ tlogNumber: v.tlog.tlogNumber, generation: v.state.generation }),
        seal: (tlogNumber) => this.lane.enqueue({ kind: 'seal', tlogNumber }),
        report: options.onDataAtRisk,
        log,
      }),
    };
    this.v = v;
    this.stats = v.stats;
    this.reads = new ReadPath(v);
    this.uploads = new UploadPipeline(v, options.scoCacheBytes ?? SCO_CACHE_DEFAULT_BYTES, () =>
      this.lane.enqueue({ kind: 'checkpoint' }),
    );
    this.lane = new WriteLane(v, this.reads, this.uploads, options.space);
    this.recovery = new Recovery(v, this.lane, this.uploads);
    this.snaps = new VolumeSnapshots(v, this.lane, this.uploads, this.recovery);
    this.scrubber = new Scrubber(v, this.lane, this.reads, this.uploads);
  }

  get name(): string {
    return this.config.name;
  }
  get sizeBytes(): number {
    return this.v.state.sizeBytes;
  }
  get clusterSizeBytes(): number {
    return this.config.clusterSizeBytes;
  }
  get generation(): number {
    return this.v.state.generation;
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Creates a new vDisk in `dir` (which must not hold one) and its backend namespace. A
   * clone passes `base`: its parent's map as of the snapshot, already layer-shifted.
   */
  static async create(
    options: VolumeOptions,
    config: VolumeConfig,
    init: { sizeBytes: number; presetName: string; base?: FoldedMap },
  ): Promise<Volume> {
    await fs.mkdir(path.join(options.dir, 'scos'), { recursive: true });
    await fs.mkdir(path.join(options.dir, 'tlogs'), { recursive: true });
    const state: MutableState = {
      generation: 1,
      sizeBytes: init.sizeBytes,
      chain: [],
      currentTlog: 1,
      nextScoNumber: 1,
      nextTlogNumber: 2,
      nextSnapshotId: 1,
      snapshots: [],
      garbage: { scos: [], tlogs: [] },
    };
    await options.backend.createNamespace(config.namespace, init.presetName);
    const tlog = await TLogWriter.create(path.join(options.dir, 'tlogs'), state.currentTlog);
    const lba = await LbaMap.open({ dir: path.join(options.dir, 'lba') });
    const volume = new Volume(options, config, state, lba, tlog);
    try {
      await volume.recovery.writeMapBase(init.base ?? new Map(), {
        generation: 1,
        tlogNumber: state.currentTlog,
        entryCount: 0,
      });
      await writeJsonAtomic(path.join(options.dir, 'state.json'), stateFile(volume.v));
      // volume.json last: its presence marks a complete local vDisk.
      await writeJsonAtomic(path.join(options.dir, 'volume.json'), config);
      volume.v.epoch = await options.backend.bumpEpoch(config.namespace);
      // The root goes up at once, so that even an empty vDisk restores from the backend;
      // a clone's base goes up as its first checkpoint.
      void volume.uploads.enqueueUpload({ kind: 'root' });
    } catch (err) {
      await volume.closeFiles();
      throw err;
    }
    return volume;
  }

  /** Opens a vDisk from its local directory: a clean restart, or recovery after a crash. */
  static async open(options: VolumeOptions): Promise<Volume> {
    const config = await readJson<VolumeConfig>(path.join(options.dir, 'volume.json'));
    const saved = await readJson<VolumeState>(path.join(options.dir, 'state.json'));
    const state: MutableState = {
      generation: saved.generation,
      sizeBytes: saved.sizeBytes,
      chain: [...saved.chain],
      currentTlog: saved.currentTlog,
      nextScoNumber: saved.nextScoNumber,
      nextTlogNumber: saved.nextTlogNumber,
      nextSnapshotId: saved.nextSnapshotId,
      snapshots: [...saved.snapshots],
      garbage: { scos: [...saved.garbage.scos], tlogs: [...saved.garbage.tlogs] },
    };
    const tlogDir = path.join(options.dir, 'tlogs');
    // A TLog created by a roll that crashed before state.json named it: never used.
    for (const name of await fs.readdir(tlogDir)) {
      const number = Number.parseInt(name.slice(0, 8), 16);
      if (name.endsWith('.tlog') && number >= state.nextTlogNumber) {
        await fs.rm(path.join(tlogDir, name), { force: true });
      }
    }
    const reopened = await TLogWriter.reopen(tlogDir, state.currentTlog);
    const lba = await LbaMap.open({ dir: path.join(options.dir, 'lba') });
    const volume = new Volume(options, config, state, lba, reopened.writer);
    try {
      if (reopened.cutBytes > 0) {
        volume.v.log(`${config.name}: cut a torn TLog tail of ${reopened.cutBytes} B`);
      }
      await volume.recovery.recoverLocal(reopened.entries);
      await volume.recovery.resumeUploads();
    } catch (err) {
      await volume.closeFiles();
      throw err;
    }
    return volume;
  }

  /**
   * Rebuilds a vDisk in an empty `dir` from its backend namespace alone: the root, the
   * latest checkpoint, the TLogs after it. Writes acknowledged after the last TLog upload
   * of the previous owner are not in the backend and are not here (the DTL's job).
   */
  static async restore(options: VolumeOptions, namespace: string): Promise<Volume> {
    const root = parseRoot(await options.backend.getObject(namespace, ROOT_OBJECT));
    const listed = await options.backend.listObjects(namespace, '');
    let maxSco = 0;
    let maxTlog = 0;
    for (const o of listed) {
      maxSco = Math.max(maxSco, objectNumber(o.name, 'sco') ?? 0);
      maxTlog = Math.max(maxTlog, objectNumber(o.name, 'tlog') ?? 0);
    }
    await fs.mkdir(path.join(options.dir, 'scos'), { recursive: true });
    await fs.mkdir(path.join(options.dir, 'tlogs'), { recursive: true });
    const currentTlog = Math.max(maxTlog, ...root.chain, 0) + 1;
    const state: MutableState = {
      generation: root.generation,
      sizeBytes: root.sizeBytes,
      chain: [...root.chain],
      currentTlog,
      nextScoNumber: maxSco + 1,
      nextTlogNumber: currentTlog + 1,
      nextSnapshotId: root.nextSnapshotId,
      snapshots: [...root.snapshots],
      garbage: { scos: [], tlogs: [] },
    };
    const tlog = await TLogWriter.create(path.join(options.dir, 'tlogs'), currentTlog);
    const lba = await LbaMap.open({ dir: path.join(options.dir, 'lba') });
    const volume = new Volume(options, root.config, state, lba, tlog);
    try {
      for (const n of root.chain) volume.v.uploadedTlogs.add(n);
      for (const o of listed) {
        const n = objectNumber(o.name, 'sco');
        if (n !== undefined) volume.v.uploadedScos.add(n);
      }
      volume.v.rootCheckpoint = root.checkpoint;
      if (root.checkpoint !== undefined) volume.v.nextCheckpointId = root.checkpoint.id + 1;
      volume.v.epoch = await options.backend.bumpEpoch(namespace);
      await volume.recovery.rebuildMap();
      await writeJsonAtomic(path.join(options.dir, 'state.json'), stateFile(volume.v));
      await writeJsonAtomic(path.join(options.dir, 'volume.json'), root.config);
    } catch (err) {
      await volume.closeFiles();
      throw err;
    }
    return volume;
  }

  /**
   * Clean shutdown: seals the open SCO and rolls the TLog, drains the lane, syncs, and waits
   * up to closeUploadWaitMs for the uploads, so that a clean stop leaves nothing at risk when
   * the backend is up. What does not make it goes up at the next open.
   */
  async close(): Promise<void> {
    if (this.v.closed) return;
    if (this.v.fencedBy === undefined && this.lane.laneFailure === undefined) {
      await this.lane
        .enqueue({ kind: 'seal', tlogNumber: this.v.tlog.tlogNumber })
        .catch((err: unknown) =>
          this.v.log(`${this.v.name}: seal on close failed: ${errorMessage(err)}`),
        );
    }
    await this.lane.laneIdle();
    this.v.closed = true;
    try {
      await this.v.sco?.sync();
      await this.v.tlog.sync();
    } catch (err) {
      this.v.log(`${this.v.name}: sync on close failed: ${errorMessage(err)}`);
    }
    await this.uploads.waitUploadsDrainedWithin(this.closeUploadWaitMs);
    if (this.v.risk.bytes > 0 || this.v.risk.ageMs() > 0) {
      this.v.log(
        `${this.v.name}: closed with ${this.v.risk.bytes} B of writes not in the backend yet (oldest ${this.v.risk.ageMs()} ms); they go up when the vDisk opens again`,
      );
    }
    await this.uploads.waitUploadsSettled();
    await this.closeFiles();
  }

  /** Closes every file without syncing: what a crash leaves (tests). */
  async closeFiles(): Promise<void> {
    this.v.closed = true;
    this.v.risk.stop();
    for (const reader of this.v.readers.values()) await reader.close();
    this.v.readers.clear();
    await this.lane.sealsSettled();
    await this.lane.discardPreparedSco();
    const memory = this.v.sco?.memory;
    await this.v.sco?.abort().catch(() => undefined);
    this.v.sco = undefined;
    // An upload may still be reading these: they leave the pool, never to be reused.
    if (memory !== undefined) this.v.scoMemory.forget(memory);
    for (const buffer of this.v.sealedMemory.values()) this.v.scoMemory.forget(buffer);
    this.v.sealedMemory.clear();
    await this.v.tlog.abort().catch(() => undefined);
    await this.v.lba.close().catch(() => undefined);
    this.v.clusterCache.close();
  }

  // ------------------------------------------------------------------ the data path

  // async: a refused request is a rejected promise, never a synchronous throw.
  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkRange(offsetBytes, lengthBytes);
    this.v.stats.readOps += 1;
    this.v.stats.readBytes += lengthBytes;
    return this.timed('read', this.reads.readRange(offsetBytes, lengthBytes));
  }

  private timed<T>(op: LatencyOp, work: Promise<T>): Promise<T> {
    const observe = this.observeLatency;
    if (observe === undefined) return work;
    const started = process.hrtime.bigint();
    return work.finally(() =>
      observe(this.v.name, op, Number(process.hrtime.bigint() - started) / 1e9),
    );
  }

  async write(offsetBytes: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    this.checkRange(offsetBytes, data.length);
    this.v.stats.writeOps += 1;
    this.v.stats.writeBytes += data.length;
    return this.timed(
      'write',
      this.lane.enqueue({ kind: 'write', offsetBytes, data, fua: options.fua ?? false }),
    );
  }

  async flush(): Promise<void> {
    checkOpen(this.v);
    this.v.stats.flushOps += 1;
    return this.timed('flush', this.lane.enqueue({ kind: 'flush' }));
  }

  async trim(
    offsetBytes: number,
    lengthBytes: number,
    options: { fua?: boolean } = {},
  ): Promise<void> {
    this.checkRange(offsetBytes, lengthBytes);
    this.v.stats.trimOps += 1;
    return this.timed(
      'trim',
      this.lane.enqueue({
        kind: 'trim',
        offsetBytes,
        lengthBytes,
        fua: options.fua ?? false,
        zeroEdges: false,
      }),
    );
  }

  async writeZeroes(
    offsetBytes: number,
    lengthBytes: number,
    options: { fua?: boolean } = {},
  ): Promise<void> {
    this.checkRange(offsetBytes, lengthBytes);
    this.v.stats.writeOps += 1;
    return this.lane.enqueue({
      kind: 'trim',
      offsetBytes,
      lengthBytes,
      fua: options.fua ?? false,
      zeroEdges: true,
    });
  }

  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]> {
    this.checkRange(offsetBytes, lengthBytes);
    return this.reads.blockStatus(offsetBytes, lengthBytes);
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    checkOpen(this.v);
    this.checkRangeOnly(offsetBytes, lengthBytes);
  }

  private checkRangeOnly(offsetBytes: number, lengthBytes: number): void {
    if (
      !Number.isSafeInteger(offsetBytes) ||
      !Number.isSafeInteger(lengthBytes) ||
      offsetBytes < 0 ||
      lengthBytes < 0
    ) {
      throw vdError(
        VdErrorCode.InvalidArgument,
        `offset ${offsetBytes} and length ${lengthBytes} must be whole numbers >= 0`,
      );
    }
    if (offsetBytes + lengthBytes > this.v.state.sizeBytes) {
      throw vdError(
        VdErrorCode.OutOfRange,
        `${offsetBytes}+${lengthBytes} reaches past the end of vDisk ${this.v.name} (${this.v.state.sizeBytes} B)`,
        { details: { vdisk: this.v.name } },
      );
    }
  }

  /** Waits until no batch runs and holds new ones back; returns the release. */
  hold(): Promise<() => void> {
    return this.lane.hold();
  }

  // ------------------------------------------------------------------ snapshots

  snapshots(): readonly SnapshotRecord[] {
    return this.snaps.snapshots();
  }

  /** Every TLog up to the snapshot's marker is in the backend. */
  snapshotInBackend(id: number): boolean {
    return this.snaps.snapshotInBackend(id);
  }

  /** A snapshot marker, durable with everything before it; the caller holds the lane. */
  snapshotHeld(name: string, createdAtMs: number): Promise<SnapshotRecord> {
    return this.snaps.snapshotHeld(name, createdAtMs);
  }

  deleteSnapshot(id: number): Promise<void> {
    return this.snaps.deleteSnapshot(id);
  }

  /** Rolls the vDisk back to snapshot `id`: later writes and snapshots are gone. */
  rollback(id: number): Promise<void> {
    return this.snaps.rollback(id);
  }

  // ------------------------------------------------------------------ scrubbing

  /** Rewrites SCOs with less live data than the threshold (volume-scrub.ts). */
  scrub(options: {
    liveFractionThreshold: number;
    pinnedSnapshotIds: ReadonlySet<number>;
  }): Promise<ScrubReport> {
    return this.scrubber.scrub(options);
  }

  // ------------------------------------------------------------------ backend

  /** Seals and rolls, then waits until every SCO, TLog, a checkpoint and the root are up. */
  async syncToBackend(): Promise<void> {
    await this.lane.enqueue({ kind: 'checkpoint' });
    await this.uploads.waitUploadsDrained();
  }

  /** Bytes of this vDisk's objects in the backend. */
  backendBytes(): Promise<number> {
    return this.uploads.backendBytes();
  }

  /** The entries of a TLog: the local file if present, else the backend's copy. */
  readTlog(tlogNumber: number): Promise<TLogEntry[]> {
    return this.uploads.readTlog(tlogNumber);
  }

  /** The last upload failure while uploads retry; undefined once one succeeds. */
  get lastUploadError(): string | undefined {
    return this.uploads.lastUploadError;
  }

  /** Resizes (the caller validated); the new size is durable and in the next root. */
  async setSize(sizeBytes: number): Promise<void> {
    this.v.state.sizeBytes = sizeBytes;
    await persistState(this.v);
    void this.uploads.enqueueUpload({ kind: 'root' });
  }

  /** The write buffer is short of space: uploaded SCOs kept as a read cache go first. */
  async dropCachedScos(): Promise<void> {
    if (!this.v.closed) await this.uploads.evictScoCache(0);
  }

  /** The write lane stopped on a disk failure (IO or space); reads still work. */
  get laneFailureCode(): string | undefined {
    return this.lane.laneFailure === undefined
      ? undefined
      : ((this.lane.laneFailure as { code?: string }).code ?? 'VD_IO_ERROR');
  }

  clusterCacheStats(): { hits: number; misses: number; bytes: number } {
    return this.v.clusterCache.stats();
  }

  /** Sealed SCOs of this vDisk waiting for upload in memory (their bytes). */
  scoMemoryBytes(): number {
    let bytes = 0;
    for (const buffer of this.v.sealedMemory.values()) bytes += buffer.length;
    return bytes + (this.v.sco?.memory?.length ?? 0);
  }

  vdiskStats(): VdiskStats {
    return {
      ...this.v.stats,
      writeBufferDirtyBytes: this.v.dirtyScoBytes,
      uploadBacklogObjects: this.uploads.backlogObjects,
      currentScoNumber: this.v.sco?.scoNumber ?? 0,
      tlogCount: this.v.state.chain.length + 1,
      dataAtRiskBytes: this.v.risk.bytes,
      dataAtRiskAgeMs: this.v.risk.ageMs(),
      dataAtRiskBoundMs: this.v.risk.boundMs,
      uploadError: this.uploads.lastUploadError ?? '',
      writeLaneError: this.lane.laneFailure?.message ?? '',
    };
  }

  /** Raw TLog bytes for tests of the format cost. */
  static encodeTLog(entries: readonly TLogEntry[]): Buffer {
    return encodeTLog(entries);
  }
}
