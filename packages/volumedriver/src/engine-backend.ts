/**
 * The ALBA proxy's engine inside the volumedriver process, as a volume backend: the same
 * calls ProxyVolumeBackend makes over gRPC, without the socket. A sealed SCO goes from the
 * write buffer to erasure coding and the ASDs with no copy through grpc-js (about 3 ms of
 * CPU per MiB on the volumedriver's side and as much again on the proxy's, measured with
 * 8 MiB objects), and a read from the backend decodes here.
 *
 * It is one more proxy of the backend, like `shale proxy serve`: several engines over one
 * backend is the normal case (placement, manifests and fencing live in the metadata
 * store). It shares the volumedriver's metadata store and never creates backends.
 */

import {
  FileKeyProvider,
  FragmentCache,
  type KeyProvider,
  ProxyEngine,
  ProxyErrorCode,
} from '@shale/alba-proxy';
import type { KvStore } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';
import {
  type BackendSlice,
  backendError,
  listAllObjects,
  type VolumeBackend,
} from './volume-backend.js';

export interface EngineBackendOptions {
  readonly kv: KvStore;
  /** The backend (its id) whose OSDs hold the SCOs and TLogs; it must exist. */
  readonly backendId: string;
  /** A fragment cache of its own (never a directory another proxy uses). */
  readonly cacheDir?: string | undefined;
  readonly cacheBytes?: number | undefined;
  /** Encryption keys; needed when the preset encrypts (the same file as the proxies'). */
  readonly keyFile?: string | undefined;
  readonly log?: (line: string) => void;
}

/** Default fragment cache of an embedded engine (when it has a directory). */
export const ENGINE_CACHE_DEFAULT_BYTES = 256 * 1024 * 1024;

export class EngineVolumeBackend implements VolumeBackend {
  private constructor(
    readonly engine: ProxyEngine,
    private readonly backendId: string,
  ) {}

  static async open(options: EngineBackendOptions): Promise<EngineVolumeBackend> {
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    const fragmentCache =
      options.cacheDir === undefined
        ? undefined
        : await FragmentCache.open({
            dir: options.cacheDir,
            quotaBytes: options.cacheBytes ?? ENGINE_CACHE_DEFAULT_BYTES,
            log,
          });
    let keyProvider: KeyProvider | undefined;
    if (options.keyFile !== undefined)
      keyProvider = await FileKeyProvider.open(options.keyFile, { create: false });
    const engine = new ProxyEngine({
      kv: options.kv,
      backendId: options.backendId,
      ...(fragmentCache === undefined ? {} : { fragmentCache }),
      ...(keyProvider === undefined ? {} : { keyProvider }),
      log,
    });
    try {
      if ((await engine.registry.getBackend(options.backendId)) === undefined) {
        throw vdError(
          VdErrorCode.BackendError,
          `backend ${options.backendId} does not exist (a proxy creates it: shale proxy serve --backend ${options.backendId} --asd HOST:PORT ...)`,
        );
      }
    } catch (err) {
      await engine.close();
      throw err;
    }
    return new EngineVolumeBackend(engine, options.backendId);
  }

  async createNamespace(ns: string, presetName: string): Promise<void> {
    try {
      const backend = await this.engine.registry.requireBackend(this.backendId);
      await this.engine.namespaces.create(
        ns,
        this.backendId,
        presetName.length > 0 ? presetName : backend.defaultPresetName,
      );
    } catch (err) {
      throw backendError(err, `create namespace ${ns}`);
    }
  }

  async deleteNamespace(ns: string): Promise<void> {
    try {
      await this.engine.namespaces.delete(ns);
    } catch (err) {
      if (isShaleError(err, ProxyErrorCode.NamespaceNotFound)) return;
      throw backendError(err, `delete namespace ${ns}`);
    }
  }

  async bumpEpoch(ns: string): Promise<number> {
    try {
      return await this.engine.namespaces.bumpEpoch(ns);
    } catch (err) {
      throw backendError(err, `bump the epoch of namespace ${ns}`);
    }
  }

  async putObject(ns: string, name: string, data: Buffer, writerEpoch: number): Promise<void> {
    try {
      // Durability: resolved = every chunk has >= c fragments durable on OSDs and the
      // manifest is committed (conditional on the writer epoch) in the metadata store.
      await this.engine.putObject(ns, name, data, { writerEpoch });
    } catch (err) {
      throw backendError(err, `put ${ns}/${name}`);
    }
  }

  async getObject(ns: string, name: string): Promise<Buffer> {
    try {
      return await this.engine.getObject(ns, name);
    } catch (err) {
      throw backendError(err, `get ${ns}/${name}`);
    }
  }

  async readRanges(ns: string, slices: readonly BackendSlice[]): Promise<Buffer[]> {
    try {
      return await this.engine.readRanges(ns, slices);
    } catch (err) {
      throw backendError(err, `read ${slices.length} ranges of namespace ${ns}`);
    }
  }

  async deleteObject(ns: string, name: string, writerEpoch: number): Promise<boolean> {
    try {
      return (await this.engine.deleteObject(ns, name, { writerEpoch })).deleted;
    } catch (err) {
      if (isShaleError(err, ProxyErrorCode.ObjectNotFound)) return false;
      throw backendError(err, `delete ${ns}/${name}`);
    }
  }

  listObjects(ns: string, prefix: string): Promise<{ name: string; sizeBytes: number }[]> {
    return listAllObjects(ns, prefix, async (options) => {
      const page = await this.engine.listObjects(ns, options);
      return { objects: page.objects, continuation: page.continuation };
    });
  }

  /** Finishes the engine's background fragment writes, then closes its OSD connections. */
  async drainAndClose(): Promise<void> {
    await this.engine.close();
  }

  close(): void {
    void this.engine.close();
  }
}
