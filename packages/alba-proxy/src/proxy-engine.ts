import type { BackendRegistry } from './backend-registry.js';
import type { OsdState } from './fragment-placement.js';
import type { Manifest } from './manifest.js';
import type { NamespaceManager } from './namespace-manager.js';
import { ProxyEngineState } from './proxy-engine-state.js';
import { ProxyReader } from './proxy-read.js';
import type {
  ObjectListing,
  ObjectSlice,
  ProxyEngineOptions,
  ProxyStats,
  PutOptions,
  PutResult,
} from './proxy-types.js';
import { ProxyWriter } from './proxy-write.js';

export {
  type DamagedFragment,
  DEFAULT_PROXY_LIMITS,
  type ObjectListing,
  type ObjectSlice,
  type ProxyEngineOptions,
  type ProxyLimits,
  type ProxyStats,
  type PutOptions,
  type PutResult,
} from './proxy-types.js';

/**
 * The proxy engine: objects in namespaces of one backend. The write path, in order:
 *
 *   putObject: namespace + preset -> OSD states (cached, probed in the background) ->
 *              choosePolicy -> allocate version -> encodeObject -> write fragments (one
 *              putFragments per OSD per chunk, bounded) -> >= c durable per chunk ->
 *              commit manifest (txn: epoch == writerEpoch) -> ack -> [late fragments:
 *              manifest update] -> [old version's fragments deleted]
 *   getObject: manifest -> per chunk: k data fragments (cache, then OSDs; hedged: parity is
 *              fetched when a data fragment fails or is slow) -> CRC32C each -> decode ->
 *              object CRC32C
 *   readRanges: manifest (LRU cache) -> codec.readRange, fetch = one getFragmentRanges per
 *              OSD per round, hedged -> re-read the manifest once on a fragment 'not found'
 *
 * This class is the facade: it builds the parts and hands each call to the one that owns it.
 *
 *   proxy-write.ts        ProxyWriter: putObject, deleteObject
 *   proxy-read.ts         ProxyReader: objectInfo, listObjects, getObject, readRanges
 *   proxy-engine-state.ts ProxyEngineState: what both share (KV, OSD view, caches,
 *                         counters, background tasks), refreshOsdStates, drain, close
 *   proxy-types.ts        the options, limits, results and stats named below
 */
export class ProxyEngine {
  readonly registry: BackendRegistry;
  readonly namespaces: NamespaceManager;
  private readonly state: ProxyEngineState;
  private readonly writer: ProxyWriter;
  private readonly reader: ProxyReader;

  constructor(options: ProxyEngineOptions) {
    this.state = new ProxyEngineState(options);
    this.registry = this.state.registry;
    this.namespaces = this.state.namespaces;
    this.writer = new ProxyWriter(this.state);
    this.reader = new ProxyReader(this.state);
  }

  /**
   * Stores an object as a new version; resolves once every chunk has >= c fragments durable
   * and the manifest commit (epoch == writerEpoch) succeeded. See ProxyWriter.putObject.
   */
  putObject(nsId: string, name: string, data: Buffer, options: PutOptions): Promise<PutResult> {
    return this.writer.putObject(nsId, name, data, options);
  }

  /** Deletes an object (epoch-checked), then its fragments. See ProxyWriter.deleteObject. */
  deleteObject(nsId: string, name: string, options: PutOptions): Promise<{ deleted: boolean }> {
    return this.writer.deleteObject(nsId, name, options);
  }

  /** The decoded manifest, read from the KV (PROXY_OBJECT_NOT_FOUND). */
  objectInfo(nsId: string, name: string): Promise<Manifest> {
    return this.reader.objectInfo(nsId, name);
  }

  listObjects(
    nsId: string,
    options: { prefix?: string; limit?: number; continuation?: Buffer } = {},
  ): Promise<ObjectListing> {
    return this.reader.listObjects(nsId, options);
  }

  /** Reads a whole object; no byte that fails a checksum is returned. See ProxyReader.getObject. */
  getObject(nsId: string, name: string): Promise<Buffer> {
    return this.reader.getObject(nsId, name);
  }

  /** Reads byte ranges of objects, in the order asked. See ProxyReader.readRanges. */
  readRanges(nsId: string, slices: readonly ObjectSlice[]): Promise<Buffer[]> {
    return this.reader.readRanges(nsId, slices);
  }

  /** Re-probes every active OSD of the backend now (capacity, with a short deadline). */
  refreshOsdStates(): Promise<OsdState[]> {
    return this.state.refreshOsdStates();
  }

  /** Waits for every background task (late fragment writes, cleanups, cache fills). */
  drain(): Promise<void> {
    return this.state.drain();
  }

  /** Drains the background work and closes the OSD clients. */
  close(): Promise<void> {
    return this.state.close();
  }

  stats(): ProxyStats {
    return this.state.stats();
  }
}
