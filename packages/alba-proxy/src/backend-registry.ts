import {
  type Compare,
  ifAbsent,
  ifExists,
  ifUnchanged,
  jsonCodec,
  type KeyValue,
  type KvStore,
  type TxnOp,
} from '@shale/arakoon-kv';
import { assert } from '@shale/common';
import { BACKEND_CREATE_MAX_OSDS, CAS_MAX_ATTEMPTS, REGISTRY_ID_MAX_BYTES } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { OsdAddress } from './osd.js';
import {
  DEFAULT_PRESET_MULTI_NODE,
  DEFAULT_PRESET_SINGLE_NODE,
  type Preset,
  type PresetJson,
  parsePreset,
  presetToJson,
} from './preset.js';

/**
 * Backends, their OSDs and their presets in the KV store (arakoon-kv's key layout):
 *
 *   /shale/backends/<backend-id>              BackendRecord (JSON)
 *   /shale/names/backends/<name>              backend id (ifAbsent: unique names)
 *   /shale/presets/<backend-id>/<preset-name> PresetJson
 *   /shale/osds/<osd-id>                      OsdRecord (JSON)
 *
 * `/shale/names/backends/` is the one key this file adds to the project layout; it follows
 * `/shale/names/vpools/` and `/shale/names/vdisks/`. Every write is one txn, so a backend
 * never exists without its OSDs, its name and its default preset.
 */

export type OsdRecordState = 'active' | 'decommissioned';

export interface BackendRecord {
  readonly backendId: string;
  readonly name: string;
  readonly type: 'local';
  /** Every OSD ever added, decommissioned ones included (old fragments may still be on them). */
  readonly osdIds: readonly string[];
  readonly defaultPresetName: string;
  readonly createdAtMs: number;
}

export interface OsdRecord extends OsdAddress {
  readonly kind: 'asd';
  readonly backendId: string;
  readonly state: OsdRecordState;
}

export interface CreateBackendInput {
  readonly backendId: string;
  readonly name: string;
  readonly osds: readonly OsdAddress[];
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Backend, OSD and preset ids/names: 1..128 of [A-Za-z0-9._-], not starting with . _ or -. */
export function checkRegistryId(value: string, what: string): void {
  if (value.length === 0 || value.length > REGISTRY_ID_MAX_BYTES || !ID_PATTERN.test(value)) {
    throw proxyError(
      ProxyErrorCode.BadId,
      `${what} ${JSON.stringify(value)} must be 1..${REGISTRY_ID_MAX_BYTES} characters of [A-Za-z0-9._-] starting with a letter or digit`,
      { details: { what } },
    );
  }
}

export const registryKeys = {
  backend: (backendId: string) => Buffer.from(`/shale/backends/${backendId}`),
  backendsPrefix: () => Buffer.from('/shale/backends/'),
  backendName: (name: string) => Buffer.from(`/shale/names/backends/${name}`),
  preset: (backendId: string, name: string) => Buffer.from(`/shale/presets/${backendId}/${name}`),
  presetsPrefix: (backendId: string) => Buffer.from(`/shale/presets/${backendId}/`),
  osd: (osdId: string) => Buffer.from(`/shale/osds/${osdId}`),
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field<T>(value: Record<string, unknown>, name: string, check: (v: unknown) => boolean): T {
  const v = value[name];
  if (!check(v)) throw new Error(`field ${name} is missing or has the wrong type`);
  return v as T;
}

const isString = (v: unknown): boolean => typeof v === 'string';
const isNumber = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v);

const backendCodec = jsonCodec<BackendRecord>((value) => {
  if (!isRecord(value)) throw new Error('not an object');
  const osdIds = field<unknown[]>(value, 'osdIds', Array.isArray);
  if (!osdIds.every((id) => typeof id === 'string')) throw new Error('osdIds must be strings');
  return {
    backendId: field<string>(value, 'backendId', isString),
    name: field<string>(value, 'name', isString),
    type: 'local',
    osdIds: osdIds as string[],
    defaultPresetName: field<string>(value, 'defaultPresetName', isString),
    createdAtMs: field<number>(value, 'createdAtMs', isNumber),
  };
});

const osdCodec = jsonCodec<OsdRecord>((value) => {
  if (!isRecord(value)) throw new Error('not an object');
  const state = field<string>(value, 'state', isString);
  if (state !== 'active' && state !== 'decommissioned') throw new Error(`bad state ${state}`);
  return {
    osdId: field<string>(value, 'osdId', isString),
    nodeId: field<string>(value, 'nodeId', isString),
    address: field<string>(value, 'address', isString),
    kind: 'asd',
    backendId: field<string>(value, 'backendId', isString),
    state,
  };
});

/** Stored as PresetJson (policies as tuples), validated with parsePreset when read. */
const presetJsonCodec = jsonCodec<PresetJson>((value) => presetToJson(parsePreset(value)));
const encodePreset = (preset: Preset): Buffer => presetJsonCodec.encode(presetToJson(preset));
const decodePreset = (bytes: Uint8Array): Preset => parsePreset(presetJsonCodec.decode(bytes));
const idCodec = jsonCodec<string>((value) => {
  if (typeof value !== 'string') throw new Error('not a string');
  return value;
});

export class BackendRegistry {
  constructor(private readonly kv: KvStore) {}

  /**
   * Creates a backend with its OSDs and its default preset (DEFAULT_PRESET_SINGLE_NODE when
   * every OSD is on one node, else DEFAULT_PRESET_MULTI_NODE), in one txn. The backend id,
   * its name and every OSD id must be new: PROXY_BACKEND_EXISTS / PROXY_OSD_EXISTS.
   */
  async createBackend(input: CreateBackendInput): Promise<BackendRecord> {
    checkRegistryId(input.backendId, 'backend id');
    checkRegistryId(input.name, 'backend name');
    if (input.osds.length > BACKEND_CREATE_MAX_OSDS) {
      throw proxyError(
        ProxyErrorCode.BadId,
        `a backend is created with at most ${BACKEND_CREATE_MAX_OSDS} OSDs; add the rest with addOsd`,
      );
    }
    const seen = new Set<string>();
    for (const osd of input.osds) {
      checkOsdAddress(osd);
      if (seen.has(osd.osdId))
        throw proxyError(ProxyErrorCode.BadId, `OSD ${osd.osdId} listed twice`);
      seen.add(osd.osdId);
    }
    const nodes = new Set(input.osds.map((osd) => osd.nodeId));
    const preset = nodes.size <= 1 ? DEFAULT_PRESET_SINGLE_NODE : DEFAULT_PRESET_MULTI_NODE;
    const record: BackendRecord = {
      backendId: input.backendId,
      name: input.name,
      type: 'local',
      osdIds: input.osds.map((osd) => osd.osdId),
      defaultPresetName: preset.name,
      createdAtMs: Date.now(),
    };
    const compares = [
      ifAbsent(registryKeys.backend(input.backendId)),
      ifAbsent(registryKeys.backendName(input.name)),
      ...input.osds.map((osd) => ifAbsent(registryKeys.osd(osd.osdId))),
    ];
    const success: TxnOp[] = [
      {
        type: 'put',
        key: registryKeys.backend(input.backendId),
        value: backendCodec.encode(record),
      },
      {
        type: 'put',
        key: registryKeys.backendName(input.name),
        value: idCodec.encode(input.backendId),
      },
      {
        type: 'put',
        key: registryKeys.preset(input.backendId, preset.name),
        value: encodePreset(preset),
      },
      ...input.osds.map(
        (osd): TxnOp => ({
          type: 'put',
          key: registryKeys.osd(osd.osdId),
          value: osdCodec.encode(osdRecord(osd, input.backendId)),
        }),
      ),
    ];
    const result = await this.kv.txn({ compares, success });
    if (!result.succeeded) {
      const [backend, name, ...osds] = await this.kv.getMany(compares.map((c) => c.key));
      if (backend !== undefined || name !== undefined) {
        throw proxyError(
          ProxyErrorCode.BackendExists,
          `backend ${input.backendId} or a backend named ${input.name} exists`,
          { details: { backendId: input.backendId, name: input.name } },
        );
      }
      const taken = input.osds.filter((_, i) => osds[i] !== undefined).map((o) => o.osdId);
      throw proxyError(
        ProxyErrorCode.OsdExists,
        `OSD(s) ${taken.join(', ')} already belong to a backend`,
        { details: { osdIds: taken.join(',') } },
      );
    }
    return record;
  }

  async getBackend(backendId: string): Promise<BackendRecord | undefined> {
    const item = await this.kv.get(registryKeys.backend(backendId));
    return item === undefined ? undefined : backendCodec.decode(item.value);
  }

  async requireBackend(backendId: string): Promise<BackendRecord> {
    const record = await this.getBackend(backendId);
    if (record === undefined) {
      throw proxyError(ProxyErrorCode.BackendNotFound, `no backend ${backendId}`, {
        details: { backendId },
      });
    }
    return record;
  }

  /** The backend id with this name, if any. */
  async backendIdByName(name: string): Promise<string | undefined> {
    const item = await this.kv.get(registryKeys.backendName(name));
    return item === undefined ? undefined : idCodec.decode(item.value);
  }

  async listBackends(): Promise<BackendRecord[]> {
    const out: BackendRecord[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix: registryKeys.backendsPrefix() },
        continuation === undefined ? {} : { continuation },
      );
      for (const item of page.items) out.push(backendCodec.decode(item.value));
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out;
  }

  /** Every OSD of the backend (decommissioned ones too), in the backend's order. */
  async listOsds(backendId: string): Promise<OsdRecord[]> {
    const backend = await this.requireBackend(backendId);
    const items = await this.kv.getMany(backend.osdIds.map((id) => registryKeys.osd(id)));
    return items.map((item, i) => {
      if (item === undefined) {
        throw proxyError(
          ProxyErrorCode.OsdNotFound,
          `backend ${backendId} lists OSD ${backend.osdIds[i]} but it has no record`,
        );
      }
      return osdCodec.decode(item.value);
    });
  }

  /** Adds an OSD to a backend (CAS on the backend record, ifAbsent on the OSD). */
  async addOsd(backendId: string, osd: OsdAddress): Promise<OsdRecord> {
    checkOsdAddress(osd);
    const record = osdRecord(osd, backendId);
    await this.casBackend(backendId, (backend, item) => {
      if (backend.osdIds.includes(osd.osdId)) {
        throw proxyError(ProxyErrorCode.OsdExists, `OSD ${osd.osdId} is already in ${backendId}`);
      }
      return {
        compares: [ifUnchanged(item.key, item), ifAbsent(registryKeys.osd(osd.osdId))],
        success: [
          {
            type: 'put',
            key: item.key,
            value: backendCodec.encode({ ...backend, osdIds: [...backend.osdIds, osd.osdId] }),
          },
          { type: 'put', key: registryKeys.osd(osd.osdId), value: osdCodec.encode(record) },
        ],
        onFailure: async () => {
          if ((await this.kv.get(registryKeys.osd(osd.osdId))) !== undefined) {
            throw proxyError(ProxyErrorCode.OsdExists, `OSD ${osd.osdId} already has a record`);
          }
        },
      };
    });
    return record;
  }

  /**
   * Marks an OSD decommissioned: no new fragments go to it. It stays in the backend's list
   * (reads of fragments still on it go on until repair has moved them).
   */
  async decommissionOsd(backendId: string, osdId: string): Promise<OsdRecord> {
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      const item = await this.kv.get(registryKeys.osd(osdId));
      const current = item === undefined ? undefined : osdCodec.decode(item.value);
      if (item === undefined || current === undefined || current.backendId !== backendId) {
        throw proxyError(ProxyErrorCode.OsdNotFound, `no OSD ${osdId} in backend ${backendId}`);
      }
      if (current.state === 'decommissioned') return current;
      const next: OsdRecord = { ...current, state: 'decommissioned' };
      const result = await this.kv.txn({
        compares: [ifUnchanged(item.key, item)],
        success: [{ type: 'put', key: item.key, value: osdCodec.encode(next) }],
      });
      if (result.succeeded) return next;
    }
    throw proxyError(ProxyErrorCode.Busy, `OSD ${osdId} changed ${CAS_MAX_ATTEMPTS} times`);
  }

  /** Adds a preset to a backend (validated with parsePreset; the name must be new). */
  async addPreset(backendId: string, presetJson: unknown): Promise<Preset> {
    const preset = parsePreset(presetJson);
    checkRegistryId(preset.name, 'preset name');
    const key = registryKeys.preset(backendId, preset.name);
    const result = await this.kv.txn({
      compares: [ifExists(registryKeys.backend(backendId)), ifAbsent(key)],
      success: [{ type: 'put', key, value: encodePreset(preset) }],
    });
    if (!result.succeeded) {
      await this.requireBackend(backendId);
      throw proxyError(
        ProxyErrorCode.PresetExists,
        `backend ${backendId} has a preset ${preset.name}`,
      );
    }
    return preset;
  }

  async getPreset(backendId: string, name: string): Promise<Preset | undefined> {
    const item = await this.kv.get(registryKeys.preset(backendId, name));
    return item === undefined ? undefined : decodePreset(item.value);
  }

  async requirePreset(backendId: string, name: string): Promise<Preset> {
    const preset = await this.getPreset(backendId, name);
    if (preset === undefined) {
      throw proxyError(
        ProxyErrorCode.PresetNotFound,
        `backend ${backendId} has no preset ${name}`,
        {
          details: { backendId, preset: name },
        },
      );
    }
    return preset;
  }

  async listPresets(backendId: string): Promise<Preset[]> {
    const page = await this.kv.range({ prefix: registryKeys.presetsPrefix(backendId) });
    return page.items.map((item) => decodePreset(item.value));
  }

  private async casBackend(
    backendId: string,
    build: (
      backend: BackendRecord,
      item: KeyValue,
    ) => {
      compares: Compare[];
      success: TxnOp[];
      onFailure: () => Promise<void>;
    },
  ): Promise<void> {
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      const item = await this.kv.get(registryKeys.backend(backendId));
      if (item === undefined) await this.requireBackend(backendId);
      assert(item !== undefined, 'requireBackend throws for a missing backend');
      const plan = build(backendCodec.decode(item.value), item);
      const result = await this.kv.txn({ compares: plan.compares, success: plan.success });
      if (result.succeeded) return;
      await plan.onFailure();
    }
    throw proxyError(ProxyErrorCode.Busy, `backend ${backendId} changed ${CAS_MAX_ATTEMPTS} times`);
  }
}

function checkOsdAddress(osd: OsdAddress): void {
  checkRegistryId(osd.osdId, 'OSD id');
  checkRegistryId(osd.nodeId, 'node id');
  if (!/^[^\s/]+:\d{1,5}$/.test(osd.address)) {
    throw proxyError(ProxyErrorCode.BadId, `OSD address ${osd.address} must be host:port`);
  }
}

function osdRecord(osd: OsdAddress, backendId: string): OsdRecord {
  return {
    osdId: osd.osdId,
    nodeId: osd.nodeId,
    address: osd.address,
    kind: 'asd',
    backendId,
    state: 'active',
  };
}
