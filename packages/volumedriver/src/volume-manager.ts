import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { KvStore } from '@shale/arakoon-kv';
import { errorMessage, isShaleError, ShaleError } from '@shale/common';
import type { Registry } from 'prom-client';
import { AdminLocks } from './admin-locks.js';
import type {
  CloneVdiskInput,
  CreateVdiskInput,
  CreateVpoolInput,
  ScrubOptions,
  ScrubReport,
  SnapshotInfo,
  StorageRouterInfo,
  VdiskInfo,
  VdiskLocation,
  VdiskOpenError,
  VdiskParent,
  VdiskState,
  VolumeIo,
  VolumeManagerApi,
  VpoolInfo,
} from './api-types.js';
import { ClusterCacheBudget } from './cluster-cache.js';
import {
  CLONE_DEPTH_MAX,
  CLUSTER_CACHE_DEFAULT_BYTES,
  CLUSTER_SIZE_BYTES,
  DATA_AT_RISK_MAX_MS,
  FAMILY_COMMIT_ATTEMPTS,
  OPEN_RETRY_MS,
  SCO_MEMORY_DEFAULT_BYTES,
  SCO_SIZE_DEFAULT_BYTES,
  SCRUB_LIVE_FRACTION_DEFAULT,
  TLOG_SCOS_PER_TLOG,
  WRITE_BUFFER_DEFAULT_BYTES,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import type { FoldedMap } from './history.js';
import { checkClusterSize, checkScoSize } from './sco-file.js';
import { ScoMemoryPool } from './sco-memory.js';
import { type VdiskRecord, VdiskRegistry, type VersionedRecord } from './vdisk-registry.js';
import {
  type DataAtRiskMarker,
  foldVdiskFromBackend,
  Volume,
  type VolumeOptions,
} from './volume.js';
import type { VolumeBackend } from './volume-backend.js';
import { registerVolumeMetrics } from './volume-metrics.js';
import { type SnapshotRecord, STATE_FORMAT, type VolumeConfig } from './volume-state.js';
import {
  type SpaceStatus,
  WriteBufferSpace,
  type WriteBufferSpaceOptions,
} from './write-buffer-space.js';

/**
 * The volumedriver's vDisks: the registry (vdisk-registry.ts), the volumes open on this
 * node, the ones it owns but could not open, and the operations that span volumes
 * (consistency-group snapshots, clones).
 *
 * Operations on one vDisk family that a clone depends on (create a clone, delete, rollback,
 * snapshot delete, resize, scrub) run one at a time under the vDisk's admin lock, and each
 * commits in the metadata store with a compare-and-swap on the record it checked
 * (VdiskRegistry's family rule): every invariant (VD_HAS_CLONES; a clone's parent snapshot
 * exists and is in the backend) holds when the operation commits, not only when it was asked.
 *
 * Opening is per vDisk: one that cannot be opened (its backend namespace is gone, its local
 * state unreadable, the backend down) is reported (state 'failed', the log, a metric) and
 * retried every OPEN_RETRY_MS; the others open and serve.
 */

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function checkName(name: string, what: string): void {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw vdError(
      VdErrorCode.InvalidArgument,
      `${what} name ${JSON.stringify(name)} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit`,
    );
  }
}

export interface VolumeManagerOptions {
  readonly kv: KvStore;
  readonly backend: VolumeBackend;
  /** The write buffer: one directory per vDisk under it. */
  readonly dir: string;
  /** This storage router's id: vDisks whose owner it is are opened here. */
  readonly nodeId: string;
  readonly log?: (message: string) => void;
  /** Where the per-vDisk metrics go (volume-metrics.ts); none when absent. */
  readonly metricsRegistry?: Registry;
  /** SCOs per TLog for vDisks created here (default TLOG_SCOS_PER_TLOG; tests use 1-2). */
  readonly tlogScos?: number;
  /** The bound on data at risk (see Volume); default DATA_AT_RISK_MAX_MS. */
  readonly dataAtRiskMaxMs?: number;
  /** How often vDisks that failed to open are tried again; default OPEN_RETRY_MS. */
  readonly openRetryMs?: number;
  /** The write buffer's reserve file and free-space margin (write-buffer-space.ts). */
  readonly writeBufferReserveBytes?: number;
  readonly writeBufferMarginBytes?: number;
  /** The file-system seam of the space guard (tests: a disk that fills up on demand). */
  readonly writeBufferStatfs?: WriteBufferSpaceOptions['statfs'];
  /** How long a write waits for space while its vDisk's uploads run (tests shorten it). */
  readonly writeBufferSpaceWaitMs?: number;
  /** Memory for the cluster caches of all vDisks; default CLUSTER_CACHE_DEFAULT_BYTES. */
  readonly clusterCacheBytes?: number;
  /** Memory for SCOs kept whole until uploaded; default SCO_MEMORY_DEFAULT_BYTES. */
  readonly scoMemoryBytes?: number;
}

interface FailedOpen {
  readonly record: VdiskRecord;
  readonly error: VdiskOpenError;
}

export class VolumeManager implements VolumeManagerApi {
  private readonly registry: VdiskRegistry;
  private readonly backend: VolumeBackend;
  private readonly dir: string;
  readonly nodeId: string;
  private readonly log: (message: string) => void;
  private readonly tlogScos: number;
  private readonly dataAtRiskMaxMs: number;
  private readonly openRetryMs: number;
  private observeLatency: VolumeOptions['observeLatency'];
  private readonly volumes = new Map<string, Volume>();
  /** vDisks this node owns that could not be opened, by name. */
  private readonly failed = new Map<string, FailedOpen>();
  private readonly locks = new AdminLocks();
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly space: WriteBufferSpace;
  readonly clusterCache: ClusterCacheBudget;
  readonly scoMemory: ScoMemoryPool;

  private constructor(options: VolumeManagerOptions) {
    this.clusterCache = new ClusterCacheBudget(
      options.clusterCacheBytes ?? CLUSTER_CACHE_DEFAULT_BYTES,
    );
    this.scoMemory = new ScoMemoryPool(options.scoMemoryBytes ?? SCO_MEMORY_DEFAULT_BYTES);
    this.registry = new VdiskRegistry(options.kv);
    this.backend = options.backend;
    this.dir = options.dir;
    this.nodeId = options.nodeId;
    this.log = options.log ?? (() => undefined);
    this.tlogScos = options.tlogScos ?? TLOG_SCOS_PER_TLOG;
    this.dataAtRiskMaxMs = options.dataAtRiskMaxMs ?? DATA_AT_RISK_MAX_MS;
    this.openRetryMs = options.openRetryMs ?? OPEN_RETRY_MS;
    this.space = new WriteBufferSpace({
      dir: options.dir,
      log: this.log,
      onLow: () => {
        for (const volume of this.volumes.values()) void volume.dropCachedScos();
      },
      ...(options.writeBufferReserveBytes === undefined
        ? {}
        : { reserveBytes: options.writeBufferReserveBytes }),
      ...(options.writeBufferMarginBytes === undefined
        ? {}
        : { marginBytes: options.writeBufferMarginBytes }),
      ...(options.writeBufferStatfs === undefined ? {} : { statfs: options.writeBufferStatfs }),
      ...(options.writeBufferSpaceWaitMs === undefined
        ? {}
        : { spaceWaitMs: options.writeBufferSpaceWaitMs }),
    });
  }

  /**
   * Opens every vDisk this node owns (from its local directory, or from the backend),
   * finishes creates and deletes a crash interrupted, and reports the ones it cannot open.
   * Fails only when the registry itself cannot be read.
   */
  static async open(options: VolumeManagerOptions): Promise<VolumeManager> {
    const manager = new VolumeManager(options);
    if (options.metricsRegistry !== undefined) {
      manager.observeLatency = registerVolumeMetrics(
        options.metricsRegistry,
        () => manager.openVolumes(),
        () => manager.failed.size,
      );
    }
    await fs.mkdir(path.join(options.dir, 'vdisks'), { recursive: true });
    // The reserve makes room for the metadata of a write buffer that filled its disk.
    await manager.space.releaseReserve();
    for (const record of await manager.registry.records()) {
      if (record.ownerNodeId !== options.nodeId) continue;
      await manager.openOwned(record);
    }
    await manager.space.restoreReserve();
    manager.scheduleRetry();
    return manager;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    await this.locks.drain();
    await Promise.all([...this.volumes.values()].map((volume) => volume.close()));
    this.volumes.clear();
    await this.space.close();
  }

  /** The write buffer's file system: free space, the reserve, whether writes are refused. */
  spaceStatus(): SpaceStatus {
    return this.space.status();
  }

  get openVdiskCount(): number {
    return this.volumes.size;
  }

  /** vDisks this node owns but could not open. */
  get failedVdiskCount(): number {
    return this.failed.size;
  }

  /** Open volumes, for metrics. */
  openVolumes(): Volume[] {
    return [...this.volumes.values()];
  }

  private vdiskDir(id: string): string {
    return path.join(this.dir, 'vdisks', id);
  }

  private volumeOptions(record: VdiskRecord): VolumeOptions {
    return {
      dir: this.vdiskDir(record.id),
      backend: this.backend,
      log: this.log,
      dataAtRiskMaxMs: this.dataAtRiskMaxMs,
      space: this.space,
      clusterCache: this.clusterCache,
      scoMemory: this.scoMemory,
      onDataAtRisk: (marker) => this.reportAtRisk(record, marker),
      ...(this.observeLatency === undefined ? {} : { observeLatency: this.observeLatency }),
    };
  }

  /** Keeps the metadata store's at-risk marker in step with the volume (see AtRiskMarker). */
  private async reportAtRisk(record: VdiskRecord, marker: DataAtRiskMarker | undefined) {
    try {
      if (marker === undefined) await this.registry.clearAtRisk(record.id);
      else await this.registry.putAtRisk(record.id, { nodeId: this.nodeId, ...marker });
    } catch (err) {
      // The data is as safe either way; only a later restore's report would be wrong.
      this.log(`vDisk ${record.name}: cannot record data at risk: ${errorMessage(err)}`);
    }
  }

  // lifecycle of owned vDisks

  private async openOwned(record: VdiskRecord): Promise<void> {
    try {
      if (record.lifecycle === 'creating') {
        this.log(`vDisk ${record.name}: its creation was interrupted; undoing it`);
        await this.undoCreate(record);
      } else if (record.lifecycle === 'deleting') {
        this.log(`vDisk ${record.name}: its deletion was interrupted; finishing it`);
        await this.finishDelete(record);
      } else {
        await this.openVolume(record);
      }
      this.failed.delete(record.name);
    } catch (err) {
      const code = err instanceof ShaleError ? err.code : 'VD_INTERNAL';
      const previous = this.failed.get(record.name);
      this.failed.set(record.name, {
        record,
        error: { code, message: errorMessage(err), atMs: Date.now() },
      });
      if (previous?.error.message !== errorMessage(err)) {
        this.log(
          `vDisk ${record.name}: cannot open (${code}): ${errorMessage(err)}; the other vDisks are served, this one is retried every ${this.openRetryMs} ms`,
        );
      }
    }
  }

  private scheduleRetry(): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => {
      void this.retryFailedOpens().finally(() => this.scheduleRetry());
    }, this.openRetryMs);
    this.retryTimer.unref();
  }

  /**
   * Tries again every vDisk that failed to open, and reopens the ones whose write lane
   * stopped for lack of space once there is space again (also on a timer).
   */
  async retryFailedOpens(): Promise<void> {
    for (const [name, volume] of [...this.volumes]) {
      if (volume.laneFailureCode !== VdErrorCode.NoSpace || this.space.status().low) continue;
      const current = await this.registry.byName(name).catch(() => undefined);
      if (current === undefined) continue;
      await this.locks.with(current.record.id, async () => {
        if (this.volumes.get(name) !== volume) return;
        this.log(`vDisk ${name}: space is back; reopening it to recover its write lane`);
        this.volumes.delete(name);
        await volume.closeFiles();
        await this.openOwned(current.record);
      });
    }
    for (const { record } of [...this.failed.values()]) {
      if (this.closed) return;
      await this.locks.with(record.id, async () => {
        const current = await this.registry.byId(record.id);
        if (current === undefined || current.record.ownerNodeId !== this.nodeId) {
          this.failed.delete(record.name);
          return;
        }
        if (!this.volumes.has(record.name)) await this.openOwned(current.record);
      });
    }
  }

  private async openVolume(record: VdiskRecord): Promise<Volume> {
    const options = this.volumeOptions(record);
    const local = await fs
      .stat(path.join(options.dir, 'volume.json'))
      .then(() => true)
      .catch(() => false);
    let volume: Volume;
    if (local) {
      volume = await Volume.open(options);
    } else {
      // No local state (a new node, or a lost disk): the backend alone.
      await fs.rm(options.dir, { recursive: true, force: true });
      const marker = await this.registry.atRisk(record.id);
      volume = await Volume.restore(options, record.namespace);
      if (marker !== undefined) await this.reportLoss(record, marker.sinceMs, marker.nodeId);
      this.log(`vDisk ${record.name}: restored from the backend`);
    }
    this.volumes.set(record.name, volume);
    return volume;
  }

  /** A restore knew of writes that were only in a lost write buffer: say so, and keep it. */
  private async reportLoss(record: VdiskRecord, sinceMs: number, nodeId: string): Promise<void> {
    const lost = { sinceMs, nodeId, detectedAtMs: Date.now() };
    this.log(
      `DATA LOSS: vDisk ${record.name} was restored from the backend, but writes made on node ${nodeId} since ${new Date(sinceMs).toISOString()} were not in the backend and are lost`,
    );
    const current = await this.registry.byId(record.id);
    if (current !== undefined) {
      await this.registry.update(current, { ...current.record, dataLoss: lost });
    }
    await this.registry.clearAtRisk(record.id);
  }

  private async undoCreate(record: VdiskRecord): Promise<void> {
    const volume = this.volumes.get(record.name);
    this.volumes.delete(record.name);
    await volume?.closeFiles();
    await this.backend.deleteNamespace(record.namespace);
    await fs.rm(this.vdiskDir(record.id), { recursive: true, force: true });
    await this.registry.remove(record);
  }

  private async finishDelete(record: VdiskRecord): Promise<void> {
    const volume = this.volumes.get(record.name);
    this.volumes.delete(record.name);
    this.failed.delete(record.name);
    await volume?.closeFiles();
    await this.backend.deleteNamespace(record.namespace);
    await fs.rm(this.vdiskDir(record.id), { recursive: true, force: true });
    await this.registry.remove(record);
  }

  // vPools

  async createVpool(input: CreateVpoolInput): Promise<VpoolInfo> {
    checkName(input.name, 'vPool');
    if (typeof input.backendId !== 'string' || input.backendId.length === 0) {
      throw vdError(VdErrorCode.InvalidArgument, 'a vPool needs a backend id');
    }
    const clusterSizeBytes = input.clusterSizeBytes ?? CLUSTER_SIZE_BYTES;
    const scoSizeBytes = input.scoSizeBytes ?? SCO_SIZE_DEFAULT_BYTES;
    checkClusterSize(clusterSizeBytes);
    checkScoSize(scoSizeBytes, clusterSizeBytes);
    const writeBufferBytes =
      input.writeBufferBytes ?? Math.max(WRITE_BUFFER_DEFAULT_BYTES, 2 * scoSizeBytes);
    if (!Number.isSafeInteger(writeBufferBytes) || writeBufferBytes < 2 * scoSizeBytes) {
      throw vdError(
        VdErrorCode.InvalidArgument,
        `write buffer ${writeBufferBytes} B must hold at least two SCOs (${2 * scoSizeBytes} B)`,
      );
    }
    const vpool: VpoolInfo = {
      id: randomUUID().replaceAll('-', ''),
      name: input.name,
      backendId: input.backendId,
      presetName: input.presetName ?? '',
      clusterSizeBytes,
      scoSizeBytes,
      writeBufferBytes,
      createdAtMs: Date.now(),
    };
    await this.registry.createVpool(vpool);
    return vpool;
  }

  listVpools(): Promise<VpoolInfo[]> {
    return this.registry.listVpools();
  }

  // storage routers

  /**
   * Registers this volumedriver's VolumeService address (after it is bound), so that edges
   * and other routers can find the owner of a vDisk. Overwrites an earlier record.
   */
  async registerStorageRouter(address: string, dataAddress?: string): Promise<StorageRouterInfo> {
    const info: StorageRouterInfo = {
      nodeId: this.nodeId,
      address,
      startedAtMs: Date.now(),
      ...(dataAddress === undefined ? {} : { dataAddress }),
    };
    await this.registry.registerStorageRouter(info);
    return info;
  }

  listStorageRouters(): Promise<StorageRouterInfo[]> {
    return this.registry.listStorageRouters();
  }

  async locateVdisk(name: string): Promise<VdiskLocation> {
    const { record } = await this.versioned(name);
    const routers = await this.registry.listStorageRouters();
    const owner = routers.find((r) => r.nodeId === record.ownerNodeId);
    return {
      vdiskName: record.name,
      vdiskId: record.id,
      sizeBytes: record.sizeBytes,
      clusterSizeBytes: record.clusterSizeBytes,
      ownerNodeId: record.ownerNodeId,
      ownerAddress: owner?.address ?? '',
      ownerDataAddress: owner?.dataAddress ?? '',
      failoverRouters: routers.filter((r) => r.nodeId !== record.ownerNodeId),
    };
  }

  // vDisks

  private versioned(name: string): Promise<VersionedRecord> {
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
      throw vdError(VdErrorCode.NotFound, `no vDisk named ${JSON.stringify(name)}`);
    }
    return this.registry.byName(name);
  }

  private volumeOf(name: string): Volume {
    const volume = this.volumes.get(name);
    if (volume !== undefined) return volume;
    const failed = this.failed.get(name);
    if (failed !== undefined) {
      throw vdError(
        VdErrorCode.OpenFailed,
        `vDisk ${name} could not be opened on volumedriver ${this.nodeId} (${failed.error.code}: ${failed.error.message}); retried every ${this.openRetryMs} ms`,
      );
    }
    throw vdError(VdErrorCode.NotFound, `vDisk ${name} is not open on volumedriver ${this.nodeId}`);
  }

  io(vdiskName: string): VolumeIo {
    return this.volumeOf(vdiskName);
  }

  /**
   * Runs `work` under the vDisk's admin lock with its record as the store holds it then:
   * what was checked before the lock may have changed while waiting for it.
   */
  private async locked<T>(
    name: string,
    work: (seen: VersionedRecord) => Promise<T>,
    options: { readonly allowDeleting?: boolean } = {},
  ): Promise<T> {
    const first = await this.versioned(name);
    return this.locks.with(first.record.id, async () => {
      const seen = await this.versioned(name);
      if (seen.record.id !== first.record.id) {
        throw vdError(VdErrorCode.NotFound, `vDisk ${name} was deleted meanwhile`);
      }
      const lifecycle = seen.record.lifecycle;
      if (
        lifecycle === 'creating' ||
        (lifecycle === 'deleting' && options.allowDeleting !== true)
      ) {
        throw vdError(
          VdErrorCode.Busy,
          `vDisk ${name} is being ${lifecycle === 'creating' ? 'created' : 'deleted'}`,
        );
      }
      return work(seen);
    });
  }

  /**
   * Commits a change that clones depend on: `check` (which throws when clones forbid it)
   * runs on the record as read, and the commit is a compare-and-swap on that record; when
   * another commit came in between, the check runs again on the new record.
   */
  private async commitFamilyChange(
    seen: VersionedRecord,
    check: (clones: readonly VdiskRecord[]) => void,
    next?: (record: VdiskRecord) => VdiskRecord,
  ): Promise<VersionedRecord> {
    let current = seen;
    for (let attempt = 1; ; attempt += 1) {
      check(await this.registry.clonesOf(current.record.id));
      try {
        return await this.registry.update(current, next?.(current.record) ?? current.record);
      } catch (err) {
        if (!isShaleError(err, VdErrorCode.Busy) || attempt >= FAMILY_COMMIT_ATTEMPTS) throw err;
        const again = await this.registry.byId(current.record.id);
        if (again === undefined)
          throw vdError(VdErrorCode.NotFound, `vDisk ${seen.record.name} was deleted meanwhile`);
        current = again;
      }
    }
  }

  private checkSize(sizeBytes: number, clusterSizeBytes: number): void {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % clusterSizeBytes !== 0) {
      throw vdError(
        VdErrorCode.InvalidArgument,
        `size ${sizeBytes} B must be a positive multiple of the cluster size (${clusterSizeBytes} B)`,
      );
    }
  }

  async createVdisk(input: CreateVdiskInput): Promise<VdiskInfo> {
    checkName(input.name, 'vDisk');
    const vpool = await this.registry.vpoolByName(input.vpoolName);
    this.checkSize(input.sizeBytes, vpool.clusterSizeBytes);
    const id = randomUUID().replaceAll('-', '');
    const record: VdiskRecord = {
      id,
      name: input.name,
      vpoolId: vpool.id,
      vpoolName: vpool.name,
      sizeBytes: input.sizeBytes,
      clusterSizeBytes: vpool.clusterSizeBytes,
      scoSizeBytes: vpool.scoSizeBytes,
      namespace: id,
      parent: undefined,
      ownerNodeId: this.nodeId,
      createdAtMs: Date.now(),
    };
    const config: VolumeConfig = {
      format: STATE_FORMAT,
      id,
      name: input.name,
      namespace: id,
      clusterSizeBytes: vpool.clusterSizeBytes,
      scoSizeBytes: vpool.scoSizeBytes,
      writeBufferBytes: vpool.writeBufferBytes,
      tlogScos: this.tlogScos,
      ancestors: [],
      parent: undefined,
      createdAtMs: record.createdAtMs,
    };
    await this.registry.claim(record);
    await this.createVolume(record, config, vpool.presetName, undefined);
    return this.vdiskInfo(input.name);
  }

  /** After the claim: creates the volume and marks the record ready; undoes all on failure. */
  private async createVolume(
    record: VdiskRecord,
    config: VolumeConfig,
    presetName: string,
    base: FoldedMap | undefined,
  ): Promise<void> {
    try {
      const volume = await Volume.create(this.volumeOptions(record), config, {
        sizeBytes: record.sizeBytes,
        presetName,
        ...(base === undefined ? {} : { base }),
      });
      this.volumes.set(record.name, volume);
      await this.registry.markReady(record);
    } catch (err) {
      await this.undoCreate(record).catch((undoErr: unknown) =>
        this.log(
          `vDisk ${record.name}: undoing a failed create failed too (retried at the next start): ${errorMessage(undoErr)}`,
        ),
      );
      throw err;
    }
  }

  async resizeVdisk(
    name: string,
    sizeBytes: number,
    options: { force?: boolean } = {},
  ): Promise<VdiskInfo> {
    await this.locked(name, async (seen) => {
      const volume = this.volumeOf(name);
      this.checkSize(sizeBytes, seen.record.clusterSizeBytes);
      if (sizeBytes < volume.sizeBytes) {
        if (options.force !== true) {
          throw vdError(
            VdErrorCode.InvalidArgument,
            `shrinking vDisk ${name} from ${volume.sizeBytes} B to ${sizeBytes} B discards data; pass force to do it`,
          );
        }
        await volume.trim(sizeBytes, volume.sizeBytes - sizeBytes);
        await volume.flush();
      }
      await volume.setSize(sizeBytes);
      await this.registry.update(seen, { ...seen.record, sizeBytes });
    });
    return this.vdiskInfo(name);
  }

  async deleteVdisk(name: string): Promise<void> {
    await this.locked(
      name,
      async (seen) => {
        // Only the owner deletes: it holds the vDisk open, its uploads would fail under it.
        if (seen.record.ownerNodeId !== this.nodeId) {
          throw vdError(
            VdErrorCode.NotOwner,
            `vDisk ${name} is owned by volumedriver ${seen.record.ownerNodeId}; delete it there`,
          );
        }
        // A delete interrupted earlier (the backend was down) is finished, not checked again.
        if (seen.record.lifecycle === 'deleting') return this.finishDelete(seen.record);
        const deleting = await this.commitFamilyChange(
          seen,
          (clones) => {
            if (clones.length > 0) {
              throw vdError(
                VdErrorCode.HasClones,
                `vDisk ${name} has clones (${clones.map((c) => c.name).join(', ')}); delete them first`,
              );
            }
          },
          (record) => ({ ...record, lifecycle: 'deleting' }),
        );
        // Commit point: the record says 'deleting', so no clone can be claimed on it any more.
        await this.finishDelete(deleting.record);
      },
      { allowDeleting: true },
    );
  }

  async listVdisks(): Promise<VdiskInfo[]> {
    const records = await this.registry.records();
    return records.map((r) => this.infoOf(r, records));
  }

  async vdiskInfo(name: string): Promise<VdiskInfo> {
    const { record } = await this.versioned(name);
    return this.infoOf(record, await this.registry.records());
  }

  private stateOf(record: VdiskRecord): VdiskState {
    if (record.lifecycle !== undefined) return record.lifecycle;
    if (this.volumes.has(record.name)) return 'open';
    if (this.failed.has(record.name)) return 'failed';
    return record.ownerNodeId === this.nodeId ? 'closed' : 'elsewhere';
  }

  private infoOf(record: VdiskRecord, all: readonly VdiskRecord[]): VdiskInfo {
    const volume = this.volumes.get(record.name);
    return {
      id: record.id,
      name: record.name,
      vpoolName: record.vpoolName,
      sizeBytes: volume?.sizeBytes ?? record.sizeBytes,
      clusterSizeBytes: record.clusterSizeBytes,
      scoSizeBytes: record.scoSizeBytes,
      namespace: record.namespace,
      parent: record.parent,
      ownerNodeId: record.ownerNodeId,
      createdAtMs: record.createdAtMs,
      snapshots: volume === undefined ? [] : this.snapshotInfos(volume, record, all),
      stats: volume?.vdiskStats(),
      state: this.stateOf(record),
      openError: this.failed.get(record.name)?.error,
      dataLoss: record.dataLoss,
    };
  }

  private snapshotInfos(
    volume: Volume,
    record: VdiskRecord,
    all: readonly VdiskRecord[],
  ): SnapshotInfo[] {
    return volume.snapshots().map((s) => ({
      id: s.id,
      name: s.name,
      createdAtMs: s.createdAtMs,
      inBackend: volume.snapshotInBackend(s.id),
      clones: all
        .filter((r) => r.parent?.vdiskId === record.id && r.parent.snapshotId === s.id)
        .map((r) => r.name),
    }));
  }

  // snapshots

  async createSnapshot(vdiskName: string, snapshotName: string): Promise<SnapshotInfo> {
    const [info] = await this.createGroupSnapshot([vdiskName], snapshotName);
    return info as SnapshotInfo;
  }

  async createGroupSnapshot(
    vdiskNames: readonly string[],
    snapshotName: string,
  ): Promise<SnapshotInfo[]> {
    checkName(snapshotName, 'snapshot');
    if (vdiskNames.length === 0 || new Set(vdiskNames).size !== vdiskNames.length) {
      throw vdError(
        VdErrorCode.InvalidArgument,
        'a group snapshot needs one or more distinct vDisks',
      );
    }
    const volumes = vdiskNames.map((name) => this.volumeOf(name));
    for (const volume of volumes) {
      if (volume.snapshots().some((s) => s.name === snapshotName)) {
        throw vdError(
          VdErrorCode.Exists,
          `vDisk ${volume.name} has a snapshot named ${snapshotName} already`,
        );
      }
    }
    // Hold every volume's write lane at once: writes acknowledged before are in every
    // snapshot, writes that arrive meanwhile wait and are in none. Holds are taken in
    // name order so two group snapshots cannot wait on each other.
    const ordered = [...volumes].sort((a, b) => (a.name < b.name ? -1 : 1));
    const releases: (() => void)[] = [];
    const createdAtMs = Date.now();
    const records: SnapshotRecord[] = [];
    try {
      for (const volume of ordered) releases.push(await volume.hold());
      for (const volume of volumes)
        records.push(await volume.snapshotHeld(snapshotName, createdAtMs));
    } finally {
      for (const release of releases) release();
    }
    return records.map((r, i) => ({
      id: r.id,
      name: r.name,
      createdAtMs: r.createdAtMs,
      inBackend: (volumes[i] as Volume).snapshotInBackend(r.id),
      clones: [],
    }));
  }

  async listSnapshots(vdiskName: string): Promise<SnapshotInfo[]> {
    return [...(await this.vdiskInfo(vdiskName)).snapshots];
  }

  private snapshotByName(volume: Volume, snapshotName: string): SnapshotRecord {
    const record = volume.snapshots().find((s) => s.name === snapshotName);
    if (record === undefined) {
      throw vdError(
        VdErrorCode.NotFound,
        `vDisk ${volume.name} has no snapshot named ${snapshotName}`,
      );
    }
    return record;
  }

  async deleteSnapshot(vdiskName: string, snapshotName: string): Promise<void> {
    await this.locked(vdiskName, async (seen) => {
      const volume = this.volumeOf(vdiskName);
      const snapshot = this.snapshotByName(volume, snapshotName);
      await this.commitFamilyChange(seen, (all) => {
        const clones = all.filter((r) => r.parent?.snapshotId === snapshot.id);
        if (clones.length > 0) {
          throw vdError(
            VdErrorCode.HasClones,
            `snapshot ${snapshotName} of ${vdiskName} has clones (${clones.map((c) => c.name).join(', ')})`,
          );
        }
      });
      await volume.deleteSnapshot(snapshot.id);
    });
  }

  async rollback(vdiskName: string, snapshotName: string): Promise<void> {
    await this.locked(vdiskName, async (seen) => {
      const volume = this.volumeOf(vdiskName);
      const snapshot = this.snapshotByName(volume, snapshotName);
      await this.commitFamilyChange(seen, (all) => {
        const clones = all.filter((r) => (r.parent?.snapshotId ?? 0) > snapshot.id);
        if (clones.length > 0) {
          throw vdError(
            VdErrorCode.HasClones,
            `rolling ${vdiskName} back to ${snapshotName} would drop snapshots that clones read from (${clones.map((c) => c.name).join(', ')})`,
          );
        }
      });
      await volume.rollback(snapshot.id);
    });
  }

  /**
   * Under the parent's admin lock from start to commit: its snapshot is made durable in the
   * backend, the clone's base map folded from there, and the clone claimed with a compare on
   * the parent's record, so no delete, rollback or snapshot delete can slip in between.
   */
  async cloneVdisk(input: CloneVdiskInput): Promise<VdiskInfo> {
    checkName(input.name, 'vDisk');
    this.volumeOf(input.parentName);
    await this.locked(input.parentName, async (parentSeen) => {
      const parentRecord = parentSeen.record;
      const parent = this.volumeOf(input.parentName);
      if (parent.config.ancestors.length >= CLONE_DEPTH_MAX) {
        throw vdError(VdErrorCode.InvalidArgument, `clones may be ${CLONE_DEPTH_MAX} deep at most`);
      }
      const vpool = await this.registry.vpoolByName(parentRecord.vpoolName);
      const snapshot = this.snapshotByName(parent, input.snapshotName);
      // The clone reads the parent's data from the backend: get it there first.
      if (!parent.snapshotInBackend(snapshot.id)) await parent.syncToBackend();
      const base: FoldedMap = new Map();
      await foldVdiskFromBackend(this.backend, parentRecord.namespace, snapshot.id, 1, base);
      const id = randomUUID().replaceAll('-', '');
      const parentRef: VdiskParent = {
        vdiskId: parentRecord.id,
        vdiskName: parentRecord.name,
        snapshotId: snapshot.id,
        snapshotName: snapshot.name,
      };
      const { dataLoss: _, ...inherited } = parentRecord;
      const record: VdiskRecord = {
        ...inherited,
        id,
        name: input.name,
        sizeBytes: parent.sizeBytes,
        namespace: id,
        parent: parentRef,
        ownerNodeId: this.nodeId,
        createdAtMs: Date.now(),
      };
      const config: VolumeConfig = {
        ...parent.config,
        id,
        name: input.name,
        namespace: id,
        ancestors: [
          { vdiskId: parentRecord.id, namespace: parentRecord.namespace },
          ...parent.config.ancestors,
        ],
        parent: parentRef,
        createdAtMs: record.createdAtMs,
      };
      // Commit point of the family: fails if the parent's record moved since it was read.
      await this.registry.claim(record, parentSeen);
      await this.createVolume(record, config, vpool.presetName, base);
    });
    return this.vdiskInfo(input.name);
  }

  async syncToBackend(vdiskName: string): Promise<void> {
    await this.volumeOf(vdiskName).syncToBackend();
  }

  async scrub(vdiskName: string, options: ScrubOptions = {}): Promise<ScrubReport> {
    const threshold = options.liveFractionThreshold ?? SCRUB_LIVE_FRACTION_DEFAULT;
    if (!(typeof threshold === 'number' && threshold > 0 && threshold <= 1)) {
      throw vdError(
        VdErrorCode.InvalidArgument,
        `live fraction threshold ${threshold} must be in (0, 1]`,
      );
    }
    // Under the vDisk's admin lock: no clone can start reading a version that moves.
    return this.locked(vdiskName, async (seen) => {
      const volume = this.volumeOf(vdiskName);
      const pinned = new Set(
        (await this.registry.clonesOf(seen.record.id)).map(
          (r) => (r.parent as VdiskParent).snapshotId,
        ),
      );
      return volume.scrub({ liveFractionThreshold: threshold, pinnedSnapshotIds: pinned });
    });
  }
}
