import {
  ifAbsent,
  ifExists,
  ifUnchanged,
  jsonCodec,
  KvErrorCode,
  type KvStore,
} from '@shale/arakoon-kv';
import { errorMessage, isShaleError } from '@shale/common';
import type { BackendRegistry, OsdRecord } from './backend-registry.js';
import { CAS_MAX_ATTEMPTS, OSD_ADMIN_DEADLINE_MS, OSD_LIST_PAGE_KEYS } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import {
  checkNamespaceId,
  decodeEpoch,
  encodeEpoch,
  namespaceFragmentPrefix,
  nsKeys,
} from './object-keys.js';
import type { Osd } from './osd.js';
import { OsdPool } from './osd-pool.js';

/**
 * Namespaces: a set of objects in one backend with one preset, and a writer epoch for
 * fencing (one namespace per vDisk).
 *
 *   active --delete()--> deleting --(fragments, manifests, keys gone)--> (no record)
 *                          ^   |
 *                          +---+  delete() again resumes after a crash or an OSD failure
 */

export type NamespaceState = 'active' | 'deleting';

export interface NamespaceRecord {
  readonly nsId: string;
  readonly backendId: string;
  readonly presetName: string;
  readonly state: NamespaceState;
  readonly createdAtMs: number;
}

/** A namespace record with the KV revision that created it (one per incarnation of the id). */
export interface NamespaceInfo extends NamespaceRecord {
  readonly createRevision: number;
}

export interface DeleteNamespaceReport {
  /** Fragments deleted from OSDs by this call. */
  readonly fragmentsDeleted: number;
  /** Decommissioned OSDs that did not answer (their leftovers are maintenance's job). */
  readonly skippedOsds: readonly string[];
}

export interface NamespaceManagerOptions {
  /** How to reach OSDs when deleting a namespace (default: an own pool of AsdOsd clients). */
  readonly osdFor?: (record: OsdRecord) => Osd;
  readonly log?: (line: string) => void;
}

const recordCodec = jsonCodec<Omit<NamespaceRecord, 'nsId'>>((value) => {
  if (typeof value !== 'object' || value === null) throw new Error('not an object');
  const v = value as Record<string, unknown>;
  if (typeof v.backendId !== 'string' || typeof v.presetName !== 'string')
    throw new Error('backendId and presetName must be strings');
  if (v.state !== 'active' && v.state !== 'deleting') throw new Error(`bad state ${v.state}`);
  if (typeof v.createdAtMs !== 'number') throw new Error('createdAtMs must be a number');
  return {
    backendId: v.backendId,
    presetName: v.presetName,
    state: v.state,
    createdAtMs: v.createdAtMs,
  };
});

function encodeRecord(record: NamespaceRecord): Buffer {
  return recordCodec.encode({
    backendId: record.backendId,
    presetName: record.presetName,
    state: record.state,
    createdAtMs: record.createdAtMs,
  });
}

export class NamespaceManager {
  private readonly osdFor: (record: OsdRecord) => Osd;
  private readonly ownPool: OsdPool | undefined;
  private readonly log: (line: string) => void;

  constructor(
    private readonly kv: KvStore,
    private readonly registry: BackendRegistry,
    options: NamespaceManagerOptions = {},
  ) {
    if (options.osdFor === undefined) {
      const pool = new OsdPool();
      this.ownPool = pool;
      this.osdFor = (record) => pool.get(record);
    } else {
      this.ownPool = undefined;
      this.osdFor = options.osdFor;
    }
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
  }

  /**
   * Creates a namespace: its record and its epoch ("1") in one txn. The backend and the
   * preset must exist; PROXY_NAMESPACE_EXISTS if the namespace (or a stray epoch) exists.
   */
  async create(nsId: string, backendId: string, presetName: string): Promise<NamespaceInfo> {
    checkNamespaceId(nsId);
    await this.registry.requirePreset(backendId, presetName);
    const record: NamespaceRecord = {
      nsId,
      backendId,
      presetName,
      state: 'active',
      createdAtMs: Date.now(),
    };
    const presetKey = Buffer.from(`/shale/presets/${backendId}/${presetName}`);
    const result = await this.kv.txn({
      compares: [ifAbsent(nsKeys.record(nsId)), ifAbsent(nsKeys.epoch(nsId)), ifExists(presetKey)],
      success: [
        { type: 'put', key: nsKeys.record(nsId), value: encodeRecord(record) },
        { type: 'put', key: nsKeys.epoch(nsId), value: encodeEpoch(1) },
      ],
    });
    if (!result.succeeded) {
      if ((await this.kv.get(presetKey)) === undefined)
        await this.registry.requirePreset(backendId, presetName);
      throw proxyError(ProxyErrorCode.NamespaceExists, `namespace ${nsId} exists`, {
        details: { nsId },
      });
    }
    const created = await this.get(nsId);
    if (created === undefined) {
      throw proxyError(ProxyErrorCode.NamespaceNotFound, `namespace ${nsId} vanished at creation`);
    }
    return created;
  }

  async get(nsId: string): Promise<NamespaceInfo | undefined> {
    checkNamespaceId(nsId);
    const item = await this.kv.get(nsKeys.record(nsId));
    if (item === undefined) return undefined;
    return { nsId, ...recordCodec.decode(item.value), createRevision: item.createRevision };
  }

  async require(nsId: string): Promise<NamespaceInfo> {
    const info = await this.get(nsId);
    if (info === undefined) {
      throw proxyError(ProxyErrorCode.NamespaceNotFound, `no namespace ${nsId}`, {
        details: { nsId },
      });
    }
    return info;
  }

  /** One page of namespaces, in id order. */
  async list(
    options: { limit?: number; continuation?: Buffer } = {},
  ): Promise<{ namespaces: NamespaceInfo[]; continuation?: Buffer }> {
    const prefix = nsKeys.recordsPrefix();
    const page = await this.kv.range({ prefix }, options);
    const namespaces = page.items.map((item) => ({
      nsId: item.key.subarray(prefix.length).toString('latin1'),
      ...recordCodec.decode(item.value),
      createRevision: item.createRevision,
    }));
    return page.continuation === undefined
      ? { namespaces }
      : { namespaces, continuation: page.continuation };
  }

  /** The current writer epoch. */
  async epoch(nsId: string): Promise<number> {
    checkNamespaceId(nsId);
    const item = await this.kv.get(nsKeys.epoch(nsId));
    const epoch = item === undefined ? undefined : decodeEpoch(item.value);
    if (epoch === undefined) {
      await this.requireActive(nsId);
      throw proxyError(ProxyErrorCode.CorruptManifest, `namespace ${nsId} has no valid epoch`);
    }
    return epoch;
  }

  /**
   * Bumps the writer epoch by compare-and-swap and returns the new one: this is how a new
   * owner fences the old one (every manifest commit compares the epoch). A bump whose
   * outcome is unknown (KV_OUTCOME_UNKNOWN) is simply tried again: bumping twice is harmless,
   * and the epoch returned is one this call set.
   */
  async bumpEpoch(nsId: string): Promise<number> {
    checkNamespaceId(nsId);
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      const [record, item] = await this.kv.getMany([nsKeys.record(nsId), nsKeys.epoch(nsId)]);
      if (record === undefined) await this.requireActive(nsId);
      if (record !== undefined && recordCodec.decode(record.value).state !== 'active')
        await this.requireActive(nsId);
      const current = item === undefined ? undefined : decodeEpoch(item.value);
      if (record === undefined || item === undefined || current === undefined) {
        throw proxyError(ProxyErrorCode.CorruptManifest, `namespace ${nsId} has no valid epoch`);
      }
      const next = current + 1;
      try {
        const result = await this.kv.txn({
          compares: [ifUnchanged(item.key, item), ifUnchanged(record.key, record)],
          success: [{ type: 'put', key: item.key, value: encodeEpoch(next) }],
        });
        if (result.succeeded) return next;
      } catch (err) {
        if (!isShaleError(err, KvErrorCode.OutcomeUnknown)) throw err;
        this.log(`namespace ${nsId}: epoch bump outcome unknown, bumping again`);
      }
    }
    throw proxyError(ProxyErrorCode.Busy, `epoch of ${nsId} changed ${CAS_MAX_ATTEMPTS} times`);
  }

  /**
   * Deletes a namespace and everything in it:
   *   1. state 'deleting' and the epoch key removed, in one txn (durable): from here no
   *      manifest commit can succeed (they compare the epoch) and the deletion is resumable;
   *   2. every OSD of the backend is listed under "<ns>/" and everything found is deleted,
   *      so fragments of crashed or fenced writers go too, not only those in manifests;
   *   3. the manifests, sequences, owner and the record go in one txn.
   * An active OSD that does not answer: PROXY_OSD_UNAVAILABLE, the namespace stays
   * 'deleting', call again. A decommissioned one that does not answer is skipped (reported).
   */
  async delete(nsId: string, attempt = 0): Promise<DeleteNamespaceReport> {
    const info = await this.require(nsId);
    if (info.state === 'active') {
      const item = await this.kv.get(nsKeys.record(nsId));
      const result = await this.kv.txn({
        compares: [ifUnchanged(nsKeys.record(nsId), item)],
        success: [
          {
            type: 'put',
            key: nsKeys.record(nsId),
            value: encodeRecord({ ...info, state: 'deleting' }),
          },
          { type: 'delete', key: nsKeys.epoch(nsId) },
        ],
      });
      // Durability: the 'deleting' state is in the KV; a crash from here on resumes.
      if (!result.succeeded) {
        if (attempt >= CAS_MAX_ATTEMPTS)
          throw proxyError(ProxyErrorCode.Busy, `namespace ${nsId} keeps changing`);
        return this.delete(nsId, attempt + 1);
      }
    }
    const osds = await this.registry.listOsds(info.backendId);
    const prefix = namespaceFragmentPrefix(nsId);
    let fragmentsDeleted = 0;
    const skippedOsds: string[] = [];
    const failures: string[] = [];
    await Promise.all(
      osds.map(async (record) => {
        try {
          const count = await deleteUnderPrefix(this.osdFor(record), prefix);
          fragmentsDeleted += count;
        } catch (err) {
          if (record.state === 'decommissioned') {
            skippedOsds.push(record.osdId);
            this.log(
              `namespace ${nsId}: skipping decommissioned OSD ${record.osdId}: ${errorMessage(err)}`,
            );
          } else {
            failures.push(`${record.osdId}: ${errorMessage(err)}`);
          }
        }
      }),
    );
    if (failures.length > 0) {
      throw proxyError(
        ProxyErrorCode.OsdUnavailable,
        `namespace ${nsId} stays 'deleting': cannot clear OSD(s) ${failures.join('; ')}`,
        { details: { nsId } },
      );
    }
    await this.kv.txn({
      compares: [],
      success: [
        { type: 'deletePrefix', prefix: nsKeys.prefix(nsId) },
        { type: 'delete', key: nsKeys.record(nsId) },
      ],
    });
    // Durability: the record, epoch, manifests and counters are gone from the KV, and every
    // fragment found on every active OSD was deleted durably before.
    return { fragmentsDeleted, skippedOsds };
  }

  close(): void {
    this.ownPool?.close();
  }

  private async requireActive(nsId: string): Promise<NamespaceInfo> {
    const info = await this.require(nsId);
    if (info.state !== 'active') {
      throw proxyError(ProxyErrorCode.NamespaceDeleting, `namespace ${nsId} is being deleted`, {
        details: { nsId },
      });
    }
    return info;
  }
}

/** Lists and deletes every key under `prefix` on one OSD, page by page; returns the count. */
export async function deleteUnderPrefix(osd: Osd, prefix: Uint8Array): Promise<number> {
  let deleted = 0;
  for (;;) {
    const page = await osd.listFragments(prefix, undefined, OSD_LIST_PAGE_KEYS, {
      deadlineMs: OSD_ADMIN_DEADLINE_MS,
    });
    if (page.keys.length === 0) return deleted;
    await osd.deleteFragments(page.keys, { deadlineMs: OSD_ADMIN_DEADLINE_MS });
    deleted += page.keys.length;
  }
}
