/**
 * What each route does: the API's resources on top of the volumedrivers, the backend
 * registry, the ASDs and the operation list. Answers are API views (api-views.ts); errors
 * are ShaleErrors whose codes go through the one table (error-table.ts).
 */
import type { BackendRegistry } from '@shale/alba-proxy';
import type { KvStore } from '@shale/arakoon-kv';
import { errorMessage, isShaleError, ShaleError } from '@shale/common';
import type { VdiskInfo } from '@shale/volumedriver';
import {
  backendView,
  presetView,
  scrubReportView,
  snapshotView,
  vdiskView,
  vpoolView,
} from './api-views.js';
import type { AsdProbe } from './asd-probe.js';
import { mapBounded } from './bounded-map.js';
import {
  ApiWarningCode,
  type BackendCapacity,
  backendCapacity,
  overcommitRatio,
  thinProvisioningWarnings,
} from './capacity.js';
import { API_PROBE_CONCURRENCY, API_PROBE_DEADLINE_MS, API_TEXT_MAX_CHARS } from './constants.js';
import { ApiErrorCode, apiError } from './errors.js';
import {
  type IscsiTargetRecord,
  type IscsiTargetRecords,
  targetView,
} from './iscsi/iscsi-records.js';
import type { SecretBox } from './iscsi/iscsi-secrets.js';
import { IscsiErrorCode, iqnProblem, validateTargetRequest } from './iscsi/iscsi-target-spec.js';
import type { OperationStore } from './operations.js';
import { clusterProblems } from './problems.js';
import type {
  Asd,
  Backend,
  CloneBody,
  CreateIscsiTargetBody,
  CreateVdiskBody,
  CreateVpoolBody,
  Health,
  IscsiTarget,
  Operation,
  Preset,
  ResizeVdiskBody,
  ScrubBody,
  Snapshot,
  Stats,
  StorageRouter,
  Vdisk,
  VdiskChange,
  Vpool,
  Warning,
} from './schemas.js';
import type { VolumedriverPool } from './volumedriver-pool.js';

/** Errors of a call that did not reach its volumedriver (as opposed to an answer). */
const UNREACHABLE = new Set(['VD_UNAVAILABLE', 'VD_DEADLINE_EXCEEDED', 'VD_RPC_FAILED']);

/** The key read by the health probe of the metadata store (any read proves it answers). */
const KV_PROBE_KEY = Buffer.from('/shale/backends/');

function detailOf(err: unknown): string {
  const text = isShaleError(err) ? `${err.code}: ${err.message}` : errorMessage(err);
  return text.slice(0, API_TEXT_MAX_CHARS);
}

function notFound(message: string): ShaleError {
  return new ShaleError('VD_NOT_FOUND', message);
}

/** The model's secret-free view, as the API's schema types it. */
function iscsiTargetView(record: IscsiTargetRecord): IscsiTarget {
  const view = targetView(record);
  return { ...view, initiators: [...view.initiators] };
}

/** A path's IQN, refused (400 ISCSI_BAD_IQN) before the store is asked when it is none. */
function checkedIqn(iqn: string): string {
  const problem = iqnProblem(iqn);
  if (problem !== undefined) {
    throw new ShaleError(
      IscsiErrorCode.BadIqn,
      `${JSON.stringify(iqn)} is not a valid IQN: ${problem}`,
    );
  }
  return iqn;
}

/** Rejects after `ms` if `work` has not settled (LevelKv ignores call deadlines). */
async function withinMs<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface ApiResourcesOptions {
  readonly volumedrivers: VolumedriverPool;
  readonly registry: BackendRegistry;
  readonly asds: AsdProbe;
  readonly operations: OperationStore;
  readonly kv: KvStore;
  /** iSCSI targets in the metadata store, and the key their CHAP secrets are sealed with. */
  readonly iscsiTargets: IscsiTargetRecords;
  readonly secrets: SecretBox;
  readonly probeDeadlineMs?: number;
}

export class ApiResources {
  private readonly pool: VolumedriverPool;
  private readonly registry: BackendRegistry;
  private readonly asds: AsdProbe;
  readonly operations: OperationStore;
  private readonly kv: KvStore;
  private readonly iscsiTargets: IscsiTargetRecords;
  private readonly secrets: SecretBox;
  private readonly probeDeadlineMs: number;

  constructor(options: ApiResourcesOptions) {
    this.pool = options.volumedrivers;
    this.registry = options.registry;
    this.asds = options.asds;
    this.operations = options.operations;
    this.kv = options.kv;
    this.iscsiTargets = options.iscsiTargets;
    this.secrets = options.secrets;
    this.probeDeadlineMs = options.probeDeadlineMs ?? API_PROBE_DEADLINE_MS;
  }

  // ------------------------------------------------------------------ health

  /** ok when the metadata store answers a read and every configured volumedriver is ok. */
  async health(): Promise<Health> {
    const kvProbe = async (): Promise<Health['components'][number]> => {
      const startedMs = Date.now();
      try {
        await withinMs(
          this.kv.get(KV_PROBE_KEY, { deadlineMs: this.probeDeadlineMs }),
          this.probeDeadlineMs,
          'metadata store read',
        );
        return { name: 'kv', ok: true, detail: `read in ${Date.now() - startedMs} ms` };
      } catch (err) {
        return { name: 'kv', ok: false, detail: detailOf(err) };
      }
    };
    const volumedriverProbe = async (address: string): Promise<Health['components'][number]> => {
      const name = `volumedriver ${address}`;
      try {
        const reply = await this.pool.at(address, (c) => c.health(), 'probe');
        return {
          name,
          ok: reply.ok,
          detail: `node ${reply.nodeId}, ${reply.vdisksOpen} vDisks open`,
        };
      } catch (err) {
        return { name, ok: false, detail: detailOf(err) };
      }
    };
    const components = await Promise.all([
      kvProbe(),
      ...this.pool.addresses.map((address) => volumedriverProbe(address)),
    ]);
    return { status: components.every((c) => c.ok) ? 'ok' : 'degraded', components };
  }

  // ------------------------------------------------------------------ vPools

  async listVpools(): Promise<Vpool[]> {
    const vpools = await this.pool.ask('list vPools', (c) => c.listVpools());
    return vpools.map(vpoolView).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The backend (and the preset, when named) must exist in the registry. */
  async createVpool(body: CreateVpoolBody): Promise<Vpool> {
    const backend = await this.registry.requireBackend(body.backend);
    if (body.preset !== undefined)
      await this.registry.requirePreset(backend.backendId, body.preset);
    const info = await this.pool.ask(
      `create vPool ${body.name}`,
      (c) =>
        c.createVpool({
          name: body.name,
          backendId: backend.backendId,
          ...(body.preset === undefined ? {} : { presetName: body.preset }),
          ...(body.clusterSizeBytes === undefined
            ? {}
            : { clusterSizeBytes: body.clusterSizeBytes }),
          ...(body.scoSizeBytes === undefined ? {} : { scoSizeBytes: body.scoSizeBytes }),
          ...(body.writeBufferBytes === undefined
            ? {}
            : { writeBufferBytes: body.writeBufferBytes }),
        }),
      { mutation: true },
    );
    return vpoolView(info);
  }

  async getVpool(name: string): Promise<Vpool> {
    const found = (await this.listVpools()).find((vpool) => vpool.name === name);
    if (found === undefined) throw notFound(`no vPool named ${name}`);
    return found;
  }

  // ------------------------------------------------------------------ vDisks

  /**
   * Every vDisk in the registry, each as its owner sees it (snapshots, stats). The list
   * comes from any volumedriver; the vDisks it does not have open are asked of their
   * owners (one list call per owner). An owner that cannot be reached leaves its vDisks
   * with `open: false`.
   */
  async listVdisks(): Promise<Vdisk[]> {
    const all = await this.pool.ask('list vDisks', (c) => c.listVdisks());
    // The answering volumedriver knows its own vDisks; each other owner is asked for its own.
    const missing = new Set(all.filter((v) => v.state === 'elsewhere').map((v) => v.ownerNodeId));
    const fromOwners = new Map<string, VdiskInfo>();
    if (missing.size > 0) {
      const routers = await this.pool.ask('list storage routers', (c) => c.listStorageRouters());
      const owners = routers.filter((r) => missing.has(r.nodeId) && r.address !== '');
      await mapBounded(owners, API_PROBE_CONCURRENCY, async (router) => {
        try {
          const list = await this.pool.at(router.address, (c) => c.listVdisks());
          for (const info of list) {
            if (info.ownerNodeId === router.nodeId && info.state !== 'elsewhere')
              fromOwners.set(info.name, info);
          }
        } catch (err) {
          if (!(err instanceof ShaleError) || !UNREACHABLE.has(err.code)) throw err;
        }
      });
    }
    return all
      .map((info) =>
        vdiskView(info.state === 'elsewhere' ? (fromOwners.get(info.name) ?? info) : info),
      )
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Without a vpool: the only vPool, or API_VPOOL_REQUIRED. Owned by the answering node.
   * Thin: it may provision more than the backend has free; the answer's warnings say so.
   */
  async createVdisk(body: CreateVdiskBody): Promise<VdiskChange> {
    let vpoolName = body.vpool;
    if (vpoolName === undefined) {
      const vpools = await this.listVpools();
      const only = vpools.length === 1 ? vpools[0] : undefined;
      if (only === undefined) {
        throw apiError(
          ApiErrorCode.VpoolRequired,
          vpools.length === 0
            ? 'body.vpool: there is no vPool yet; create one first (POST /api/v1/vpools)'
            : `body.vpool is required: there are ${vpools.length} vPools (${vpools.map((v) => v.name).join(', ')})`,
        );
      }
      vpoolName = only.name;
    }
    const vpool = vpoolName;
    const info = await this.pool.ask(
      `create vDisk ${body.name}`,
      (c) => c.createVdisk({ name: body.name, vpoolName: vpool, sizeBytes: body.sizeBytes }),
      { mutation: true },
    );
    return this.withWarnings(vdiskView(info));
  }

  async getVdisk(name: string): Promise<Vdisk> {
    return vdiskView(await this.pool.onOwner(name, (c) => c.vdiskInfo(name)));
  }

  async resizeVdisk(name: string, body: ResizeVdiskBody): Promise<VdiskChange> {
    const info = await this.pool.onOwner(name, (c) =>
      c.resizeVdisk(name, body.sizeBytes, { force: body.force ?? false }),
    );
    return this.withWarnings(vdiskView(info));
  }

  /** The vDisk with what to know about thin provisioning now that it exists at its size. */
  private async withWarnings(vdisk: Vdisk): Promise<VdiskChange> {
    const warnings = await this.thinProvisioningWarnings();
    return warnings.length === 0 ? vdisk : { ...vdisk, warnings };
  }

  /**
   * Never fails the request that made the change (it is done): a failed check is itself a
   * warning.
   */
  private async thinProvisioningWarnings(): Promise<Warning[]> {
    try {
      const { provisionedBytes, vdiskCount, backend } = await this.capacity();
      return thinProvisioningWarnings(provisionedBytes, vdiskCount, backend);
    } catch (err) {
      return [
        {
          code: ApiWarningCode.CapacityUnknown,
          message: `thin provisioning could not be checked: ${detailOf(err)}`.slice(
            0,
            API_TEXT_MAX_CHARS,
          ),
        },
      ];
    }
  }

  /**
   * The sum of every vDisk's size (one list call: the registry knows every size, open or
   * not) and the backend's capacity (one probe of each ASD), for warnings and metrics.
   */
  async capacity(): Promise<{
    provisionedBytes: number;
    vdiskCount: number;
    backend: BackendCapacity;
    overcommitRatio: number | undefined;
  }> {
    const [vdisks, asds] = await Promise.all([
      this.pool.ask('list vDisks', (c) => c.listVdisks()),
      this.asds.probeAll(),
    ]);
    const provisionedBytes = vdisks.reduce((sum, v) => sum + v.sizeBytes, 0);
    const backend = backendCapacity(asds);
    return {
      provisionedBytes,
      vdiskCount: vdisks.length,
      backend,
      overcommitRatio: overcommitRatio(provisionedBytes, backend),
    };
  }

  /**
   * Refused at once while an iSCSI target exports it (409 ISCSI_VDISK_EXPORTED: initiators
   * would lose their disk under them) or clones read from it (409 VD_HAS_CLONES); the deletion itself
   * (the backend namespace goes too) is an operation. A clone made between the check and
   * the deletion fails the operation with VD_HAS_CLONES.
   */
  async deleteVdisk(name: string): Promise<Operation> {
    this.operations.checkCapacity();
    const owner = await this.pool.ownerOf(name);
    const exportedBy = await this.iscsiTargets.forVdisk(name);
    if (exportedBy !== undefined) {
      throw new ShaleError(
        IscsiErrorCode.VdiskExported,
        `vDisk ${name} is exported by iSCSI target ${exportedBy}; delete the target first (shale iscsi delete ${exportedBy})`,
      );
    }
    const info = await this.pool.at(owner, (c) => c.vdiskInfo(name));
    const clones = info.snapshots.flatMap((snapshot) => snapshot.clones);
    if (clones.length > 0) {
      throw new ShaleError(
        'VD_HAS_CLONES',
        `vDisk ${name} has clones (${clones.join(', ')}); delete them first`,
      );
    }
    return this.operations.start('vdisk.delete', name, async () => {
      await this.pool.at(owner, (c) => c.deleteVdisk(name), 'operation');
      return undefined;
    });
  }

  async listSnapshots(name: string): Promise<Snapshot[]> {
    const snapshots = await this.pool.onOwner(name, (c) => c.listSnapshots(name));
    return snapshots.map(snapshotView);
  }

  async createSnapshot(name: string, snapshotName: string): Promise<Snapshot> {
    return snapshotView(await this.pool.onOwner(name, (c) => c.createSnapshot(name, snapshotName)));
  }

  async deleteSnapshot(name: string, snapshotName: string): Promise<void> {
    await this.pool.onOwner(name, (c) => c.deleteSnapshot(name, snapshotName));
  }

  /**
   * Checked at once: the parent and its snapshot exist (404), the new name is free (409).
   * The clone is made by the parent's owner, which then owns it; its result is the new vDisk.
   */
  async cloneVdisk(name: string, body: CloneBody): Promise<Operation> {
    this.operations.checkCapacity();
    const owner = await this.pool.ownerOf(name);
    await this.requireSnapshot(owner, name, body.snapshot);
    const taken = await this.pool.locate(body.name).then(
      () => true,
      (err: unknown) => {
        if (isShaleError(err, 'VD_NOT_FOUND')) return false;
        throw err;
      },
    );
    if (taken) throw new ShaleError('VD_EXISTS', `a vDisk named ${body.name} exists already`);
    return this.operations.start('vdisk.clone', name, async () =>
      vdiskView(
        await this.pool.at(
          owner,
          (c) => c.cloneVdisk({ name: body.name, parentName: name, snapshotName: body.snapshot }),
          'operation',
        ),
      ),
    );
  }

  /** Checked at once: the vDisk and its snapshot exist. The result is the rolled-back vDisk. */
  async rollbackVdisk(name: string, snapshotName: string): Promise<Operation> {
    this.operations.checkCapacity();
    const owner = await this.pool.ownerOf(name);
    await this.requireSnapshot(owner, name, snapshotName);
    return this.operations.start('vdisk.rollback', name, async () => {
      await this.pool.at(owner, (c) => c.rollback(name, snapshotName), 'operation');
      return vdiskView(await this.pool.at(owner, (c) => c.vdiskInfo(name)));
    });
  }

  /** Durability: the operation succeeds once everything written before it is in the backend. */
  async syncVdisk(name: string): Promise<Operation> {
    this.operations.checkCapacity();
    const owner = await this.reachableOwner(name);
    return this.operations.start('vdisk.sync', name, async () => {
      await this.pool.at(owner, (c) => c.syncToBackend(name), 'operation');
      return undefined;
    });
  }

  async scrubVdisk(name: string, body: ScrubBody): Promise<Operation> {
    this.operations.checkCapacity();
    const owner = await this.reachableOwner(name);
    const options =
      body.liveFractionThreshold === undefined
        ? {}
        : { liveFractionThreshold: body.liveFractionThreshold };
    return this.operations.start('vdisk.scrub', name, async () =>
      scrubReportView(await this.pool.at(owner, (c) => c.scrub(name, options), 'operation')),
    );
  }

  /**
   * The owner's address, once it has answered for the vDisk: an owner that cannot be
   * reached is a 503 for the request, not an operation that fails later.
   */
  private async reachableOwner(name: string): Promise<string> {
    const owner = await this.pool.ownerOf(name);
    await this.pool.at(owner, (c) => c.vdiskInfo(name));
    return owner;
  }

  private async requireSnapshot(owner: string, name: string, snapshotName: string): Promise<void> {
    const snapshots = await this.pool.at(owner, (c) => c.listSnapshots(name));
    if (!snapshots.some((snapshot) => snapshot.name === snapshotName))
      throw notFound(`vDisk ${name} has no snapshot named ${snapshotName}`);
  }

  // ------------------------------------------------------------------ iSCSI targets

  /** Every iSCSI target, by IQN, without its secrets. */
  async listIscsiTargets(): Promise<IscsiTarget[]> {
    return (await this.iscsiTargets.list()).map(iscsiTargetView);
  }

  /**
   * Checked in this order, each before anything is stored: the request itself (400 ISCSI_*),
   * the vDisk (404 VD_NOT_FOUND, asked of the volumedrivers), then the IQN, the vDisk's one
   * target and the CHAP users in the store's txn (409 ISCSI_*). The secrets are sealed with
   * the iSCSI key before they are stored and never come back out of the API.
   */
  async createIscsiTarget(body: CreateIscsiTargetBody): Promise<IscsiTarget> {
    const spec = validateTargetRequest(body);
    await this.pool.locate(spec.vdisk);
    return iscsiTargetView(await this.iscsiTargets.create(spec, this.secrets));
  }

  async getIscsiTarget(iqn: string): Promise<IscsiTarget> {
    return iscsiTargetView(await this.iscsiTargets.require(checkedIqn(iqn)));
  }

  async deleteIscsiTarget(iqn: string): Promise<void> {
    await this.iscsiTargets.delete(checkedIqn(iqn));
  }

  // ------------------------------------------------------------------ backends, presets, ASDs

  async listBackends(): Promise<Backend[]> {
    const records = await this.registry.listBackends();
    return Promise.all(
      records.map(async (record) =>
        backendView(record, await this.registry.listOsds(record.backendId)),
      ),
    );
  }

  async getBackend(id: string): Promise<Backend> {
    const record = await this.registry.requireBackend(id);
    return backendView(record, await this.registry.listOsds(id));
  }

  /** The presets of one backend (PROXY_BACKEND_NOT_FOUND when it does not exist), or of all. */
  async listPresets(backendId: string | undefined): Promise<Preset[]> {
    const backends =
      backendId === undefined
        ? await this.registry.listBackends()
        : [await this.registry.requireBackend(backendId)];
    const lists = await Promise.all(
      backends.map(async (backend) =>
        (await this.registry.listPresets(backend.backendId)).map((preset) =>
          presetView(backend, preset),
        ),
      ),
    );
    return lists.flat();
  }

  listAsds(): Promise<Asd[]> {
    return this.asds.probeAll();
  }

  /** Every registered storage router, each asked for its health (short deadline). */
  async listStorageRouters(): Promise<StorageRouter[]> {
    const routers = await this.pool.ask('list storage routers', (c) => c.listStorageRouters());
    return mapBounded(routers, API_PROBE_CONCURRENCY, async (router): Promise<StorageRouter> => {
      const base = {
        nodeId: router.nodeId,
        address: router.address,
        startedAtMs: router.startedAtMs,
      };
      if (router.address === '')
        return { ...base, healthy: false, detail: 'no address registered' };
      try {
        const health = await this.pool.at(router.address, (c) => c.health(), 'probe');
        return {
          ...base,
          healthy: health.ok,
          vdisksOpen: health.vdisksOpen,
          vdisksFailed: health.vdisksFailed,
          ...(health.writeBuffer === undefined ? {} : { writeBuffer: { ...health.writeBuffer } }),
        };
      } catch (err) {
        return { ...base, healthy: false, detail: detailOf(err) };
      }
    });
  }

  // ------------------------------------------------------------------ stats

  /**
   * Per vDisk its owner's stats; totals over them, with the over-commit ratio; backend
   * capacity over the active ASDs, once per file system.
   */
  async stats(): Promise<Stats> {
    const [vdisks, asds, storageRouters] = await Promise.all([
      this.listVdisks(),
      this.asds.probeAll(),
      this.listStorageRouters(),
    ]);
    const entries = vdisks.map((v) => ({
      name: v.name,
      vpool: v.vpool,
      ownerNodeId: v.ownerNodeId,
      sizeBytes: v.sizeBytes,
      open: v.open,
      state: v.state,
      ...(v.stats === undefined ? {} : { stats: v.stats }),
    }));
    const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);
    const provisionedBytes = sum(vdisks.map((v) => v.sizeBytes));
    const backend = backendCapacity(asds);
    const ratio = overcommitRatio(provisionedBytes, backend);
    return {
      vdisks: entries,
      totals: {
        vdiskCount: vdisks.length,
        vdisksOpen: vdisks.filter((v) => v.stats !== undefined).length,
        provisionedBytes,
        writeBufferDirtyBytes: sum(vdisks.map((v) => v.stats?.writeBufferDirtyBytes ?? 0)),
        uploadBacklogObjects: sum(vdisks.map((v) => v.stats?.uploadBacklogObjects ?? 0)),
        dataAtRiskBytes: sum(vdisks.map((v) => v.stats?.dataAtRiskBytes ?? 0)),
        dataAtRiskMaxAgeMs: Math.max(0, ...vdisks.map((v) => v.stats?.dataAtRiskAgeMs ?? 0)),
        vdisksFailed: vdisks.filter((v) => v.state === 'failed').length,
        ...(ratio === undefined ? {} : { overcommitRatio: ratio }),
      },
      backend,
      problems: clusterProblems({
        vdisks,
        asds,
        storageRouters,
        overcommitRatio: ratio,
        nowMs: Date.now(),
      }),
    };
  }
}
