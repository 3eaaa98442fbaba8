import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ifAbsent, type KvStore, requireSucceeded } from '@shale/arakoon-kv';
import { errorMessage } from '@shale/common';
import type { Registry } from 'prom-client';
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
  VdiskParent,
  VolumeIo,
  VolumeManagerApi,
  VpoolInfo,
} from './api-types.js';
import {
  CLONE_DEPTH_MAX,
  CLUSTER_SIZE_BYTES,
  SCO_SIZE_DEFAULT_BYTES,
  SCRUB_LIVE_FRACTION_DEFAULT,
  TLOG_SCOS_PER_TLOG,
  WRITE_BUFFER_DEFAULT_BYTES,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import type { FoldedMap } from './history.js';
import { checkClusterSize, checkScoSize } from './sco-file.js';
import { foldVdiskFromBackend, Volume, type VolumeOptions } from './volume.js';
import type { VolumeBackend } from './volume-backend.js';
import { registerVolumeMetrics } from './volume-metrics.js';
import { type SnapshotRecord, STATE_FORMAT, type VolumeConfig } from './volume-state.js';

/**
 * The volumedriver's vDisks: the registry in the metadata store (vPools, vDisks, unique
 * names), the volumes open on this node, and the operations that span volumes
 * (consistency-group snapshots, clones). Keys (see @shale/arakoon-kv's README):
 *
 *   /shale/vpools/<id>            VpoolInfo (JSON)
 *   /shale/names/vpools/<name>    vPool id (created with ifAbsent: names are unique)
 *   /shale/vdisks/<id>            VdiskRecord (JSON)
 *   /shale/names/vdisks/<name>    vDisk id
 *   /shale/storagerouters/<node>  StorageRouterInfo (JSON): written by each volumedriver at start
 */

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

interface VdiskRecord {
  readonly id: string;
  readonly name: string;
  readonly vpoolId: string;
  readonly vpoolName: string;
  readonly sizeBytes: number;
  readonly clusterSizeBytes: number;
  readonly scoSizeBytes: number;
  readonly namespace: string;
  readonly parent: VdiskParent | undefined;
  readonly ownerNodeId: string;
  readonly createdAtMs: number;
}

const enc = (text: string) => Buffer.from(text, 'utf8');
const keys = {
  vpool: (id: string) => enc(`/shale/vpools/${id}`),
  vpoolName: (name: string) => enc(`/shale/names/vpools/${name}`),
  vpools: enc('/shale/vpools/'),
  vdisk: (id: string) => enc(`/shale/vdisks/${id}`),
  vdiskName: (name: string) => enc(`/shale/names/vdisks/${name}`),
  vdisks: enc('/shale/vdisks/'),
  storageRouter: (nodeId: string) => enc(`/shale/storagerouters/${nodeId}`),
  storageRouters: enc('/shale/storagerouters/'),
};

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
}

export class VolumeManager implements VolumeManagerApi {
  private readonly kv: KvStore;
  private readonly backend: VolumeBackend;
  private readonly dir: string;
  readonly nodeId: string;
  private readonly log: (message: string) => void;
  private readonly tlogScos: number;
  private observeLatency: VolumeOptions['observeLatency'];
  private readonly volumes = new Map<string, Volume>();
  /** One administrative operation at a time per vDisk (by id). */
  private readonly adminLocks = new Map<string, Promise<unknown>>();

  private constructor(options: VolumeManagerOptions) {
    this.kv = options.kv;
    this.backend = options.backend;
    this.dir = options.dir;
    this.nodeId = options.nodeId;
    this.log = options.log ?? (() => undefined);
    this.tlogScos = options.tlogScos ?? TLOG_SCOS_PER_TLOG;
  }

  /** Opens every vDisk this node owns: from its local directory, or from the backend. */
  static async open(options: VolumeManagerOptions): Promise<VolumeManager> {
    const manager = new VolumeManager(options);
    if (options.metricsRegistry !== undefined) {
      manager.observeLatency = registerVolumeMetrics(options.metricsRegistry, () =>
        manager.openVolumes(),
      );
    }
    await fs.mkdir(path.join(options.dir, 'vdisks'), { recursive: true });
    for (const record of await manager.vdiskRecords()) {
      if (record.ownerNodeId !== options.nodeId) continue;
      try {
        await manager.openVolume(record);
      } catch (err) {
        manager.log(`vDisk ${record.name}: cannot open: ${errorMessage(err)}`);
        await manager.close();
        throw err;
      }
    }
    return manager;
  }

  async close(): Promise<void> {
    for (const volume of this.volumes.values()) await volume.close();
    this.volumes.clear();
  }

  get openVdiskCount(): number {
    return this.volumes.size;
  }

  /** Open volumes, for metrics. */
  openVolumes(): Volume[] {
    return [...this.volumes.values()];
  }

  private vdiskDir(id: string): string {
    return path.join(this.dir, 'vdisks', id);
  }

  private volumeOptions(dir: string): VolumeOptions {
    return {
      dir,
      backend: this.backend,
      log: this.log,
      ...(this.observeLatency === undefined ? {} : { observeLatency: this.observeLatency }),
    };
  }

  private async openVolume(record: VdiskRecord): Promise<Volume> {
    const dir = this.vdiskDir(record.id);
    const options = this.volumeOptions(dir);
    const local = await fs
      .stat(path.join(dir, 'volume.json'))
      .then(() => true)
      .catch(() => false);
    let volume: Volume;
    if (local) {
      volume = await Volume.open(options);
    } else {
      // No local state (a new node, or a lost disk): the backend alone.
      await fs.rm(dir, { recursive: true, force: true });
      volume = await Volume.restore(options, record.namespace);
      this.log(`vDisk ${record.name}: restored from the backend`);
    }
    this.volumes.set(record.name, volume);
    return volume;
  }

  // ------------------------------------------------------------------ vPools

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
    const result = await this.kv.txn({
      compares: [ifAbsent(keys.vpoolName(vpool.name))],
      success: [
        { type: 'put', key: keys.vpoolName(vpool.name), value: enc(vpool.id) },
        { type: 'put', key: keys.vpool(vpool.id), value: enc(JSON.stringify(vpool)) },
      ],
    });
    if (!result.succeeded) {
      throw vdError(VdErrorCode.Exists, `a vPool named ${vpool.name} exists already`);
    }
    return vpool;
  }

  async listVpools(): Promise<VpoolInfo[]> {
    const page = await this.kv.range({ prefix: keys.vpools }, { limit: 10_000 });
    return page.items.map(
      (item) => JSON.parse(Buffer.from(item.value).toString('utf8')) as VpoolInfo,
    );
  }

  private async vpoolByName(name: string): Promise<VpoolInfo> {
    const id = await this.kv.get(keys.vpoolName(name));
    const record =
      id === undefined
        ? undefined
        : await this.kv.get(keys.vpool(Buffer.from(id.value).toString()));
    if (record === undefined) throw vdError(VdErrorCode.NotFound, `no vPool named ${name}`);
    return JSON.parse(Buffer.from(record.value).toString('utf8')) as VpoolInfo;
  }

  // ------------------------------------------------------------------ vDisks

  private async vdiskRecords(): Promise<VdiskRecord[]> {
    const out: VdiskRecord[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix: keys.vdisks },
        { limit: 1000, ...(continuation === undefined ? {} : { continuation }) },
      );
      for (const item of page.items) {
        out.push(JSON.parse(Buffer.from(item.value).toString('utf8')) as VdiskRecord);
      }
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out;
  }

  // ------------------------------------------------------------------ storage routers

  /**
   * Registers this volumedriver's VolumeService address (after it is bound), so that edges
   * and other routers can find the owner of a vDisk. Overwrites an earlier record.
   */
  async registerStorageRouter(address: string): Promise<StorageRouterInfo> {
    const info: StorageRouterInfo = { nodeId: this.nodeId, address, startedAtMs: Date.now() };
    await this.kv.put(keys.storageRouter(this.nodeId), enc(JSON.stringify(info)));
    return info;
  }

  async listStorageRouters(): Promise<StorageRouterInfo[]> {
    const page = await this.kv.range({ prefix: keys.storageRouters }, { limit: 1000 });
    return page.items
      .map((item) => JSON.parse(Buffer.from(item.value).toString('utf8')) as StorageRouterInfo)
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  async locateVdisk(name: string): Promise<VdiskLocation> {
    const record = await this.vdiskRecord(name);
    const routers = await this.listStorageRouters();
    return {
      vdiskName: record.name,
      vdiskId: record.id,
      sizeBytes: record.sizeBytes,
      clusterSizeBytes: record.clusterSizeBytes,
      ownerNodeId: record.ownerNodeId,
      ownerAddress: routers.find((r) => r.nodeId === record.ownerNodeId)?.address ?? '',
      failoverRouters: routers.filter((r) => r.nodeId !== record.ownerNodeId),
    };
  }

  private async vdiskRecord(name: string): Promise<VdiskRecord> {
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
      throw vdError(VdErrorCode.NotFound, `no vDisk named ${JSON.stringify(name)}`);
    }
    const id = await this.kv.get(keys.vdiskName(name));
    const record =
      id === undefined
        ? undefined
        : await this.kv.get(keys.vdisk(Buffer.from(id.value).toString()));
    if (record === undefined) throw vdError(VdErrorCode.NotFound, `no vDisk named ${name}`);
    return JSON.parse(Buffer.from(record.value).toString('utf8')) as VdiskRecord;
  }

  private volumeOf(name: string): Volume {
    const volume = this.volumes.get(name);
    if (volume === undefined) {
      throw vdError(
        VdErrorCode.NotFound,
        `vDisk ${name} is not open on volumedriver ${this.nodeId}`,
      );
    }
    return volume;
  }

  io(vdiskName: string): VolumeIo {
    return this.volumeOf(vdiskName);
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
    const vpool = await this.vpoolByName(input.vpoolName);
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
    await this.registerAndCreate(record, config, vpool.presetName, undefined);
    return this.vdiskInfo(input.name);
  }

  /** Claims the name in the store, then creates the volume; undoes the claim on failure. */
  private async registerAndCreate(
    record: VdiskRecord,
    config: VolumeConfig,
    presetName: string,
    base: FoldedMap | undefined,
  ): Promise<void> {
    const result = await this.kv.txn({
      compares: [ifAbsent(keys.vdiskName(record.name))],
      success: [
        { type: 'put', key: keys.vdiskName(record.name), value: enc(record.id) },
        { type: 'put', key: keys.vdisk(record.id), value: enc(JSON.stringify(record)) },
      ],
    });
    if (!result.succeeded)
      throw vdError(VdErrorCode.Exists, `a vDisk named ${record.name} exists already`);
    try {
      const volume = await Volume.create(this.volumeOptions(this.vdiskDir(record.id)), config, {
        sizeBytes: record.sizeBytes,
        presetName,
        ...(base === undefined ? {} : { base }),
      });
      this.volumes.set(record.name, volume);
    } catch (err) {
      await fs.rm(this.vdiskDir(record.id), { recursive: true, force: true });
      await this.kv
        .txn({
          compares: [],
          success: [
            { type: 'delete', key: keys.vdiskName(record.name) },
            { type: 'delete', key: keys.vdisk(record.id) },
          ],
        })
        .catch(() => undefined);
      throw err;
    }
  }

  async resizeVdisk(
    name: string,
    sizeBytes: number,
    options: { force?: boolean } = {},
  ): Promise<VdiskInfo> {
    const record = await this.vdiskRecord(name);
    const volume = this.volumeOf(name);
    this.checkSize(sizeBytes, record.clusterSizeBytes);
    await this.withAdminLock(record.id, async () => {
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
      await this.kv.put(keys.vdisk(record.id), enc(JSON.stringify({ ...record, sizeBytes })));
    });
    return this.vdiskInfo(name);
  }

  async deleteVdisk(name: string): Promise<void> {
    const record = await this.vdiskRecord(name);
    await this.withAdminLock(record.id, async () => {
      const clones = (await this.vdiskRecords()).filter((r) => r.parent?.vdiskId === record.id);
      if (clones.length > 0) {
        throw vdError(
          VdErrorCode.HasClones,
          `vDisk ${name} has clones (${clones.map((c) => c.name).join(', ')}); delete them first`,
        );
      }
      const volume = this.volumes.get(name);
      this.volumes.delete(name);
      await volume?.closeFiles();
      await this.backend.deleteNamespace(record.namespace);
      await fs.rm(this.vdiskDir(record.id), { recursive: true, force: true });
      requireSucceeded(
        await this.kv.txn({
          compares: [],
          success: [
            { type: 'delete', key: keys.vdiskName(name) },
            { type: 'delete', key: keys.vdisk(record.id) },
          ],
        }),
        `delete vDisk ${name}`,
      );
    });
  }

  async listVdisks(): Promise<VdiskInfo[]> {
    const records = await this.vdiskRecords();
    return Promise.all(records.map((r) => this.infoOf(r, records)));
  }

  async vdiskInfo(name: string): Promise<VdiskInfo> {
    const record = await this.vdiskRecord(name);
    return this.infoOf(record, await this.vdiskRecords());
  }

  private async infoOf(record: VdiskRecord, all: readonly VdiskRecord[]): Promise<VdiskInfo> {
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

  // ------------------------------------------------------------------ snapshots

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
    const record = await this.vdiskRecord(vdiskName);
    const volume = this.volumeOf(vdiskName);
    await this.withAdminLock(record.id, async () => {
      const snapshot = this.snapshotByName(volume, snapshotName);
      const clones = (await this.vdiskRecords()).filter(
        (r) => r.parent?.vdiskId === record.id && r.parent.snapshotId === snapshot.id,
      );
      if (clones.length > 0) {
        throw vdError(
          VdErrorCode.HasClones,
          `snapshot ${snapshotName} of ${vdiskName} has clones (${clones.map((c) => c.name).join(', ')})`,
        );
      }
      await volume.deleteSnapshot(snapshot.id);
    });
  }

  async rollback(vdiskName: string, snapshotName: string): Promise<void> {
    const record = await this.vdiskRecord(vdiskName);
    const volume = this.volumeOf(vdiskName);
    await this.withAdminLock(record.id, async () => {
      const snapshot = this.snapshotByName(volume, snapshotName);
      const clones = (await this.vdiskRecords()).filter(
        (r) => r.parent?.vdiskId === record.id && r.parent.snapshotId > snapshot.id,
      );
      if (clones.length > 0) {
        throw vdError(
          VdErrorCode.HasClones,
          `rolling ${vdiskName} back to ${snapshotName} would drop snapshots that clones read from (${clones.map((c) => c.name).join(', ')})`,
        );
      }
      await volume.rollback(snapshot.id);
    });
  }

  async cloneVdisk(input: CloneVdiskInput): Promise<VdiskInfo> {
    checkName(input.name, 'vDisk');
    const parentRecord = await this.vdiskRecord(input.parentName);
    const parent = this.volumeOf(input.parentName);
    if (parent.config.ancestors.length >= CLONE_DEPTH_MAX) {
      throw vdError(VdErrorCode.InvalidArgument, `clones may be ${CLONE_DEPTH_MAX} deep at most`);
    }
    const vpool = await this.vpoolByName(parentRecord.vpoolName);
    let base: FoldedMap = new Map();
    const snapshot = await this.withAdminLock(parentRecord.id, async () => {
      const found = this.snapshotByName(parent, input.snapshotName);
      // The clone reads the parent's data from the backend: get it there first.
      if (!parent.snapshotInBackend(found.id)) await parent.syncToBackend();
      base = new Map();
      await foldVdiskFromBackend(this.backend, parentRecord.namespace, found.id, 1, base);
      return found;
    });
    const id = randomUUID().replaceAll('-', '');
    const parentRef: VdiskParent = {
      vdiskId: parentRecord.id,
      vdiskName: parentRecord.name,
      snapshotId: snapshot.id,
      snapshotName: snapshot.name,
    };
    const record: VdiskRecord = {
      ...parentRecord,
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
    await this.registerAndCreate(record, config, vpool.presetName, base);
    return this.vdiskInfo(input.name);
  }

  async syncToBackend(vdiskName: string): Promise<void> {
    await this.volumeOf(vdiskName).syncToBackend();
  }

  async scrub(vdiskName: string, options: ScrubOptions = {}): Promise<ScrubReport> {
    const record = await this.vdiskRecord(vdiskName);
    const volume = this.volumeOf(vdiskName);
    const threshold = options.liveFractionThreshold ?? SCRUB_LIVE_FRACTION_DEFAULT;
    if (!(typeof threshold === 'number' && threshold > 0 && threshold <= 1)) {
      throw vdError(
        VdErrorCode.InvalidArgument,
        `live fraction threshold ${threshold} must be in (0, 1]`,
      );
    }
    // Under the vDisk's admin lock: no clone can start reading a version that moves.
    return this.withAdminLock(record.id, async () => {
      const pinned = new Set(
        (await this.vdiskRecords())
          .filter((r) => r.parent?.vdiskId === record.id)
          .map((r) => (r.parent as VdiskParent).snapshotId),
      );
      return volume.scrub({ liveFractionThreshold: threshold, pinnedSnapshotIds: pinned });
    });
  }

  private async withAdminLock<T>(vdiskId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.adminLocks.get(vdiskId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(work);
    const tail = run.catch(() => undefined);
    this.adminLocks.set(vdiskId, tail);
    try {
      return await run;
    } finally {
      if (this.adminLocks.get(vdiskId) === tail) this.adminLocks.delete(vdiskId);
    }
  }
}
