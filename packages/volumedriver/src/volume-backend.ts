import { ProxyClient, ProxyErrorCode } from '@shale/alba-proxy';
import { errorMessage, isShaleError } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';

/** A byte range of one object, for a batched ranged read. */
export interface BackendSlice {
  readonly name: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/**
 * The seam between volumes and the backend: the few ALBA proxy calls a volume makes.
 * The real one is the proxy over gRPC (ProxyVolumeBackend); unit tests use
 * MemoryVolumeBackend. Object names: `sco/<16 hex>`, `tlog/<16 hex>`,
 * `checkpoint/<16 hex>/<4 hex part>`, `root` (see volume-layout.ts).
 *
 * Errors: a missing object is VD_NOT_FOUND; a stale writer epoch is VD_FENCED; anything
 * else the backend says is VD_BACKEND_ERROR with the proxy's error as the cause.
 */
export interface VolumeBackend {
  createNamespace(ns: string, presetName: string): Promise<void>;
  /** Deletes every object of the namespace and the namespace; a missing one is fine. */
  deleteNamespace(ns: string): Promise<void>;
  /** Fences every earlier writer; returns the epoch the caller must write with. */
  bumpEpoch(ns: string): Promise<number>;
  putObject(ns: string, name: string, data: Buffer, writerEpoch: number): Promise<void>;
  getObject(ns: string, name: string): Promise<Buffer>;
  readRanges(ns: string, slices: readonly BackendSlice[]): Promise<Buffer[]>;
  /** false when there was no such object. */
  deleteObject(ns: string, name: string, writerEpoch: number): Promise<boolean>;
  listObjects(ns: string, prefix: string): Promise<{ name: string; sizeBytes: number }[]>;
  close(): void;
}

/** The one map from proxy errors to volume errors (ProxyVolumeBackend and EngineVolumeBackend). */
export function backendError(err: unknown, what: string): Error {
  if (isShaleError(err, ProxyErrorCode.ObjectNotFound)) {
    return vdError(VdErrorCode.NotFound, `${what}: not in the backend`, { cause: err });
  }
  if (isShaleError(err, ProxyErrorCode.Fenced)) {
    return vdError(
      VdErrorCode.Fenced,
      `${what}: fenced, another volumedriver owns this vDisk now`,
      { cause: err },
    );
  }
  return vdError(VdErrorCode.BackendError, `${what}: ${errorMessage(err)}`, { cause: err });
}

const LIST_PAGE_OBJECTS = 1000;

/** One page of a listing: its objects and where the next starts (undefined: the last). */
export interface ObjectPage {
  readonly objects: readonly { name: string; sizeBytes: number | bigint | string }[];
  readonly continuation: Buffer | undefined;
}

/** Every object of `ns` under `prefix`, page after page (for both kinds of proxy backend). */
export async function listAllObjects(
  ns: string,
  prefix: string,
  page: (options: { prefix: string; limit: number; continuation?: Buffer }) => Promise<ObjectPage>,
): Promise<{ name: string; sizeBytes: number }[]> {
  const out: { name: string; sizeBytes: number }[] = [];
  let continuation: Buffer | undefined;
  try {
    for (;;) {
      const next = await page({
        prefix,
        limit: LIST_PAGE_OBJECTS,
        ...(continuation === undefined ? {} : { continuation }),
      });
      for (const o of next.objects) out.push({ name: o.name, sizeBytes: Number(o.sizeBytes) });
      if (next.continuation === undefined) return out;
      continuation = next.continuation;
    }
  } catch (err) {
    throw backendError(err, `list ${ns}/${prefix}*`);
  }
}

/** The ALBA proxy as a volume backend (one proxy serves one backend). */
export class ProxyVolumeBackend implements VolumeBackend {
  private readonly client: ProxyClient;

  constructor(readonly proxyAddress: string) {
    this.client = new ProxyClient(proxyAddress);
  }

  async createNamespace(ns: string, presetName: string): Promise<void> {
    try {
      await this.client.createNamespace(ns, presetName);
    } catch (err) {
      throw backendError(err, `create namespace ${ns}`);
    }
  }

  async deleteNamespace(ns: string): Promise<void> {
    try {
      await this.client.deleteNamespace(ns);
    } catch (err) {
      if (isShaleError(err, ProxyErrorCode.NamespaceNotFound)) return;
      throw backendError(err, `delete namespace ${ns}`);
    }
  }

  async bumpEpoch(ns: string): Promise<number> {
    try {
      return await this.client.bumpEpoch(ns);
    } catch (err) {
      throw backendError(err, `bump the epoch of namespace ${ns}`);
    }
  }

  async putObject(ns: string, name: string, data: Buffer, writerEpoch: number): Promise<void> {
    try {
      await this.client.putObject(ns, name, data, writerEpoch);
    } catch (err) {
      throw backendError(err, `put ${ns}/${name}`);
    }
  }

  async getObject(ns: string, name: string): Promise<Buffer> {
    try {
      return await this.client.getObject(ns, name);
    } catch (err) {
      throw backendError(err, `get ${ns}/${name}`);
    }
  }

  async readRanges(ns: string, slices: readonly BackendSlice[]): Promise<Buffer[]> {
    try {
      return await this.client.readRanges(
        ns,
        slices.map((s) => ({ name: s.name, offset: s.offsetBytes, length: s.lengthBytes })),
      );
    } catch (err) {
      throw backendError(err, `read ${slices.length} ranges of namespace ${ns}`);
    }
  }

  async deleteObject(ns: string, name: string, writerEpoch: number): Promise<boolean> {
    try {
      return await this.client.deleteObject(ns, name, writerEpoch);
    } catch (err) {
      if (isShaleError(err, ProxyErrorCode.ObjectNotFound)) return false;
      throw backendError(err, `delete ${ns}/${name}`);
    }
  }

  listObjects(ns: string, prefix: string): Promise<{ name: string; sizeBytes: number }[]> {
    return listAllObjects(ns, prefix, async (options) => {
      const page = await this.client.listObjects(ns, options);
      // The gRPC reply says "last page" with an empty continuation.
      return {
        objects: page.objects,
        continuation: page.continuation.length === 0 ? undefined : page.continuation,
      };
    });
  }

  close(): void {
    this.client.close();
  }
}

/**
 * A backend in memory, for unit tests of the volume logic: the same contract (not-found,
 * fencing by epoch, ranges checked), no erasure coding. Counts calls so tests can check
 * that reads were served locally or remotely by outcome, and can fail calls on demand.
 */
export class MemoryVolumeBackend implements VolumeBackend {
  readonly namespaces = new Map<string, { epoch: number; objects: Map<string, Buffer> }>();
  /** When set, every call rejects with VD_BACKEND_ERROR (a dead proxy). */
  down = false;
  /** When above 0, every call first waits this long (a slow backend: widens race windows). */
  latencyMs = 0;
  calls = { put: 0, get: 0, readRanges: 0, delete: 0 };

  private async delay(): Promise<void> {
    if (this.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, this.latencyMs));
  }

  private ns(ns: string): { epoch: number; objects: Map<string, Buffer> } {
    if (this.down) throw vdError(VdErrorCode.BackendError, 'memory backend is down');
    const found = this.namespaces.get(ns);
    if (found === undefined) {
      throw vdError(VdErrorCode.BackendError, `namespace ${ns} does not exist`);
    }
    return found;
  }

  async createNamespace(ns: string): Promise<void> {
    await this.delay();
    if (this.down) throw vdError(VdErrorCode.BackendError, 'memory backend is down');
    if (!this.namespaces.has(ns)) this.namespaces.set(ns, { epoch: 0, objects: new Map() });
  }
  async deleteNamespace(ns: string): Promise<void> {
    await this.delay();
    if (this.down) throw vdError(VdErrorCode.BackendError, 'memory backend is down');
    this.namespaces.delete(ns);
  }
  async bumpEpoch(ns: string): Promise<number> {
    await this.delay();
    const found = this.ns(ns);
    found.epoch += 1;
    return found.epoch;
  }
  async putObject(ns: string, name: string, data: Buffer, writerEpoch: number): Promise<void> {
    await this.delay();
    const found = this.ns(ns);
    if (writerEpoch !== found.epoch) throw vdError(VdErrorCode.Fenced, `put ${name}: fenced`);
    this.calls.put += 1;
    found.objects.set(name, Buffer.from(data));
  }
  async getObject(ns: string, name: string): Promise<Buffer> {
    await this.delay();
    const data = this.ns(ns).objects.get(name);
    this.calls.get += 1;
    if (data === undefined) throw vdError(VdErrorCode.NotFound, `${ns}/${name} not found`);
    return Buffer.from(data);
  }
  async readRanges(ns: string, slices: readonly BackendSlice[]): Promise<Buffer[]> {
    await this.delay();
    const found = this.ns(ns);
    this.calls.readRanges += 1;
    return slices.map((s) => {
      const data = found.objects.get(s.name);
      if (data === undefined) throw vdError(VdErrorCode.NotFound, `${ns}/${s.name} not found`);
      if (s.offsetBytes + s.lengthBytes > data.length) {
        throw vdError(VdErrorCode.BackendError, `range past the end of ${s.name}`);
      }
      return Buffer.from(data.subarray(s.offsetBytes, s.offsetBytes + s.lengthBytes));
    });
  }
  async deleteObject(ns: string, name: string, writerEpoch: number): Promise<boolean> {
    await this.delay();
    const found = this.ns(ns);
    if (writerEpoch !== found.epoch) throw vdError(VdErrorCode.Fenced, `delete ${name}: fenced`);
    this.calls.delete += 1;
    return found.objects.delete(name);
  }
  async listObjects(ns: string, prefix: string): Promise<{ name: string; sizeBytes: number }[]> {
    await this.delay();
    return [...this.ns(ns).objects.entries()]
      .filter(([name]) => name.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, data]) => ({ name, sizeBytes: data.length }));
  }
  /** Bytes stored in a namespace (what scrubbing must bring down). */
  bytesIn(ns: string): number {
    let total = 0;
    for (const data of this.namespaces.get(ns)?.objects.values() ?? []) total += data.length;
    return total;
  }
  close(): void {
    this.down = true;
  }
}
