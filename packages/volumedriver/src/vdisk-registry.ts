import {
  ifAbsent,
  ifUnchanged,
  type KeyValue,
  type KvStore,
  requireSucceeded,
  type TxnOp,
} from '@shale/arakoon-kv';
import type { StorageRouterInfo, VdiskDataLoss, VdiskParent, VpoolInfo } from './api-types.js';
import { REGISTRY_LIST_PAGE_KEYS } from './constants.js';
import { VdErrorCode, vdError } from './errors.js';

/**
 * The cluster's registry of vPools, vDisks and storage routers in the metadata store, and
 * the compare-and-swap commits that keep a vDisk family's invariants true at commit time
 * (not only when a request was checked). Keys (see @shale/arakoon-kv's README):
 *
 *   /shale/vpools/<id>            VpoolInfo (JSON)
 *   /shale/names/vpools/<name>    vPool id (created with ifAbsent: names are unique)
 *   /shale/vdisks/<id>            VdiskRecord (JSON)
 *   /shale/names/vdisks/<name>    vDisk id
 *   /shale/storagerouters/<node>  StorageRouterInfo (JSON): written by each volumedriver at start
 *   /shale/at-risk/<vdisk id>     AtRiskMarker (JSON): the owner holds writes not in the backend
 *
 * The family rule: every commit that a clone's existence depends on (a clone's creation, a
 * parent's deletion, a rollback or snapshot deletion on a parent) rewrites the parent's record
 * conditionally on the revision it checked. Two such commits cannot both pass a check the other
 * invalidates: the second one's compare fails. Within one volumedriver the admin lock already
 * serializes them; the compare is what holds across processes.
 */

/** Where a vDisk is in its life. Absent: ready. */
export type VdiskLifecycle = 'creating' | 'deleting';

export interface VdiskRecord {
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
  /**
   * 'creating' from the claim until the volume exists; 'deleting' from the commit of a
   * delete until its records go. A volumedriver that finds either for a vDisk it owns at start
   * finishes the job (a create is undone, a delete completed).
   */
  readonly lifecycle?: VdiskLifecycle;
  /** Set by a restore from the backend that knew of writes it could not recover. */
  readonly dataLoss?: VdiskDataLoss;
}

/**
 * Written (and awaited) by the owner when a vDisk goes from "everything in the backend" to
 * "writes only in the write buffer", deleted when it is back. A restore that finds one learns
 * that writes were lost with the write buffer, and says so.
 */
export interface AtRiskMarker {
  readonly nodeId: string;
  readonly sinceMs: number;
  /** The backend history's generation when the marker was written. */
  readonly generation: number;
  /** The first TLog that held writes not yet in the backend. */
  readonly tlogNumber: number;
}

/** A record with the store's version of it, for a compare-and-swap commit. */
export interface VersionedRecord {
  readonly record: VdiskRecord;
  readonly item: KeyValue;
}

const enc = (text: string) => Buffer.from(text, 'utf8');
const json = (value: unknown) => enc(JSON.stringify(value));
const parse = <T>(item: KeyValue): T => JSON.parse(item.value.toString('utf8')) as T;

export const registryKeys = {
  vpool: (id: string) => enc(`/shale/vpools/${id}`),
  vpoolName: (name: string) => enc(`/shale/names/vpools/${name}`),
  vpools: enc('/shale/vpools/'),
  vdisk: (id: string) => enc(`/shale/vdisks/${id}`),
  vdiskName: (name: string) => enc(`/shale/names/vdisks/${name}`),
  vdisks: enc('/shale/vdisks/'),
  storageRouter: (nodeId: string) => enc(`/shale/storagerouters/${nodeId}`),
  storageRouters: enc('/shale/storagerouters/'),
  atRisk: (vdiskId: string) => enc(`/shale/at-risk/${vdiskId}`),
};
const keys = registryKeys;

export class VdiskRegistry {
  constructor(private readonly kv: KvStore) {}

  // vPools

  async createVpool(vpool: VpoolInfo): Promise<void> {
    const result = await this.kv.txn({
      compares: [ifAbsent(keys.vpoolName(vpool.name))],
      success: [
        { type: 'put', key: keys.vpoolName(vpool.name), value: enc(vpool.id) },
        { type: 'put', key: keys.vpool(vpool.id), value: json(vpool) },
      ],
    });
    if (!result.succeeded) {
      throw vdError(VdErrorCode.Exists, `a vPool named ${vpool.name} exists already`);
    }
  }

  async listVpools(): Promise<VpoolInfo[]> {
    return (await this.all(keys.vpools)).map((item) => parse<VpoolInfo>(item));
  }

  async vpoolByName(name: string): Promise<VpoolInfo> {
    const id = await this.kv.get(keys.vpoolName(name));
    const record =
      id === undefined ? undefined : await this.kv.get(keys.vpool(id.value.toString()));
    if (record === undefined) throw vdError(VdErrorCode.NotFound, `no vPool named ${name}`);
    return parse<VpoolInfo>(record);
  }

  // vDisks

  async records(): Promise<VdiskRecord[]> {
    return (await this.all(keys.vdisks)).map((item) => parse<VdiskRecord>(item));
  }

  /** The vDisk's record as the store holds it now (VD_NOT_FOUND when there is none). */
  async byName(name: string): Promise<VersionedRecord> {
    const id = await this.kv.get(keys.vdiskName(name));
    const item = id === undefined ? undefined : await this.kv.get(keys.vdisk(id.value.toString()));
    if (item === undefined) throw vdError(VdErrorCode.NotFound, `no vDisk named ${name}`);
    return { record: parse<VdiskRecord>(item), item };
  }

  async byId(id: string): Promise<VersionedRecord | undefined> {
    const item = await this.kv.get(keys.vdisk(id));
    return item === undefined ? undefined : { record: parse<VdiskRecord>(item), item };
  }

  /** Every vDisk whose parent is `parentId`, including clones still being created. */
  async clonesOf(parentId: string): Promise<VdiskRecord[]> {
    return (await this.records()).filter((r) => r.parent?.vdiskId === parentId);
  }

  /**
   * Claims the record's name, in lifecycle 'creating'. A clone passes its parent as checked:
   * the claim succeeds only if the parent's record is unchanged since (not deleted, no
   * rollback or snapshot delete committed meanwhile), and it rewrites the parent's record so
   * that such a commit racing with this one fails in turn.
   */
  async claim(record: VdiskRecord, parent?: VersionedRecord): Promise<void> {
    const claimed: VdiskRecord = { ...record, lifecycle: 'creating' };
    const success: TxnOp[] = [
      { type: 'put', key: keys.vdiskName(record.name), value: enc(record.id) },
      { type: 'put', key: keys.vdisk(record.id), value: json(claimed) },
    ];
    const compares = [ifAbsent(keys.vdiskName(record.name))];
    if (parent !== undefined) {
      const parentKey = keys.vdisk(parent.record.id);
      compares.push(ifUnchanged(parentKey, parent.item));
      success.push({ type: 'put', key: parentKey, value: parent.item.value });
    }
    const result = await this.kv.txn({ compares, success });
    if (result.succeeded) return;
    if ((await this.kv.get(keys.vdiskName(record.name))) !== undefined) {
      throw vdError(VdErrorCode.Exists, `a vDisk named ${record.name} exists already`);
    }
    throw this.changedUnder(parent?.record.name ?? record.name);
  }

  /** The end of a create: the record leaves 'creating'. */
  async markReady(record: VdiskRecord): Promise<void> {
    const { lifecycle: _, ...ready } = record;
    await this.kv.put(keys.vdisk(record.id), json(ready));
  }

  /**
   * Replaces the record if it is unchanged since `seen` was read (VD_BUSY otherwise: another
   * operation committed in between). Returns the new version.
   */
  async update(seen: VersionedRecord, next: VdiskRecord): Promise<VersionedRecord> {
    const key = keys.vdisk(seen.record.id);
    const result = await this.kv.txn({
      compares: [ifUnchanged(key, seen.item)],
      success: [
        { type: 'put', key, value: json(next) },
        { type: 'get', key },
      ],
    });
    if (!result.succeeded) throw this.changedUnder(seen.record.name);
    const got = result.results[1];
    if (got?.type !== 'get' || got.item === undefined) throw this.changedUnder(seen.record.name);
    return { record: next, item: got.item };
  }

  /** Removes the vDisk's name and record (and its at-risk marker). */
  async remove(record: VdiskRecord): Promise<void> {
    requireSucceeded(
      await this.kv.txn({
        compares: [],
        success: [
          { type: 'delete', key: keys.vdiskName(record.name) },
          { type: 'delete', key: keys.vdisk(record.id) },
          { type: 'delete', key: keys.atRisk(record.id) },
        ],
      }),
      `delete vDisk ${record.name}`,
    );
  }

  // data at risk

  async putAtRisk(vdiskId: string, marker: AtRiskMarker): Promise<void> {
    await this.kv.put(keys.atRisk(vdiskId), json(marker));
  }

  async clearAtRisk(vdiskId: string): Promise<void> {
    await this.kv.delete(keys.atRisk(vdiskId));
  }

  async atRisk(vdiskId: string): Promise<AtRiskMarker | undefined> {
    const item = await this.kv.get(keys.atRisk(vdiskId));
    return item === undefined ? undefined : parse<AtRiskMarker>(item);
  }

  // storage routers

  async registerStorageRouter(info: StorageRouterInfo): Promise<void> {
    await this.kv.put(keys.storageRouter(info.nodeId), json(info));
  }

  async listStorageRouters(): Promise<StorageRouterInfo[]> {
    return (await this.all(keys.storageRouters))
      .map((item) => parse<StorageRouterInfo>(item))
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  private changedUnder(name: string): Error {
    return vdError(
      VdErrorCode.Busy,
      `vDisk ${name} changed while the operation ran (another operation committed first); retry`,
    );
  }

  private async all(prefix: Buffer): Promise<KeyValue[]> {
    const out: KeyValue[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix },
        { limit: REGISTRY_LIST_PAGE_KEYS, ...(continuation === undefined ? {} : { continuation }) },
      );
      out.push(...page.items);
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out;
  }
}
