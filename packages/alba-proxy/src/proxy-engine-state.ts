import type { KvStore } from '@shale/arakoon-kv';
import { AsdErrorCode } from '@shale/asd';
import { errorMessage, isShaleError } from '@shale/common';
import { BackendRegistry, type OsdRecord } from './backend-registry.js';
import { MANIFEST_CACHE_MAX_ENTRIES, OSD_ADMIN_DEADLINE_MS } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { FragmentCache } from './fragment-cache.js';
import type { OsdState } from './fragment-placement.js';
import type { KeyProvider } from './key-provider.js';
import { LruMap } from './lru-map.js';
import { decodeManifest, type Manifest } from './manifest.js';
import { type NamespaceInfo, NamespaceManager } from './namespace-manager.js';
import { fragmentKey, nsKeys } from './object-keys.js';
import type { Osd } from './osd.js';
import { defaultOsdFactory, OsdPool } from './osd-pool.js';
import type { Preset } from './preset.js';
import {
  type DamagedFragment,
  DEFAULT_PROXY_LIMITS,
  type ProxyEngineOptions,
  type ProxyLimits,
  type ProxyStats,
} from './proxy-types.js';
import type { RandomSource } from './random-source.js';

/**
 * What the parts of the proxy engine share (proxy-engine.ts is the facade, proxy-write.ts
 * the write path, proxy-read.ts the read path): the KV, the OSD pool, the caches, the
 * counters and the background tasks, plus the helpers both paths use. Namespaces and
 * presets are cached for namespaceCacheTtlMs; the OSD view for osdStateTtlMs, refreshed
 * in the background when stale:
 *
 *   no view --first call waits for the probes--> view --older than osdStateTtlMs-->
 *   view in use + one refresh in the background --probes answered--> new view
 *
 * An OSD that failed a call since the last probe is left out of placement and reads
 * (downOsds); one that refused a put for lack of space gets no new fragments (fullOsds).
 */

export interface NamespaceEntry {
  readonly info: NamespaceInfo;
  readonly preset: Preset;
  readonly loadedAtMs: number;
}

export interface OsdView {
  readonly loadedAtMs: number;
  readonly records: ReadonlyMap<string, OsdRecord>;
  /** Active (not decommissioned) OSDs, for placement. */
  readonly states: OsdState[];
}

/** Transport-level failures: the OSD is treated as down until the next successful probe. */
const OSD_DOWN_CODES: readonly string[] = [
  AsdErrorCode.Unavailable,
  AsdErrorCode.DeadlineExceeded,
  AsdErrorCode.RpcFailed,
  AsdErrorCode.Closed,
  AsdErrorCode.IoError,
];

export class ProxyEngineState {
  readonly registry: BackendRegistry;
  readonly namespaces: NamespaceManager;
  readonly kv: KvStore;
  private readonly backendId: string;
  private readonly pool: OsdPool;
  readonly keyProvider: KeyProvider | undefined;
  readonly cache: FragmentCache | undefined;
  readonly random: RandomSource;
  readonly limits: ProxyLimits;
  readonly onDamaged: ((damage: DamagedFragment) => void) | undefined;
  readonly log: (line: string) => void;
  readonly nsCache = new LruMap<string, NamespaceEntry>(MANIFEST_CACHE_MAX_ENTRIES);
  readonly manifestCache: LruMap<string, Manifest>;
  readonly background = new Set<Promise<void>>();
  private osdView: OsdView | undefined;
  private osdRefresh: Promise<OsdView> | undefined;
  /** OSDs that failed a call since the last probe: not used for placement or reads. */
  private readonly downOsds = new Set<string>();
  /**
   * OSDs that refused a put for lack of space since the last probe: no new fragments go
   * there, but they are read as usual (a full disk still holds its data).
   */
  private readonly fullOsds = new Set<string>();
  private closed = false;
  readonly counters: ProxyStats = {
    bytesIn: 0,
    bytesOut: 0,
    puts: 0,
    gets: 0,
    rangeReads: 0,
    deletes: 0,
    fragmentsWritten: 0,
    fragmentWriteFailures: 0,
    fragmentsRead: 0,
    fragmentReadFailures: 0,
    parityDecodes: 0,
    hedgedReads: 0,
    cacheHits: 0,
    cacheMisses: 0,
    manifestsCommitted: 0,
    manifestBytesWritten: 0,
    manifestUpdates: 0,
    fencedCommits: 0,
    damagedFragments: 0,
    backgroundTasks: 0,
    backgroundFailures: 0,
  };

  constructor(options: ProxyEngineOptions) {
    this.kv = options.kv;
    this.backendId = options.backendId;
    this.pool = new OsdPool(options.osdFactory ?? defaultOsdFactory);
    this.keyProvider = options.keyProvider;
    this.cache = options.fragmentCache;
    this.random = options.random ?? Math.random;
    this.limits = { ...DEFAULT_PROXY_LIMITS, ...options.limits };
    this.onDamaged = options.onDamaged;
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.registry = new BackendRegistry(this.kv);
    this.namespaces = new NamespaceManager(this.kv, this.registry, {
      osdFor: (record) => this.pool.get(record),
      log: this.log,
    });
    this.manifestCache = new LruMap(this.limits.manifestCacheMaxEntries);
  }

  /** Re-probes every active OSD of the backend now (capacity, with a short deadline). */
  async refreshOsdStates(): Promise<OsdState[]> {
    const view = await this.refreshView();
    return this.placementStates(view);
  }

  /** Waits for every background task (late fragment writes, cleanups, cache fills). */
  async drain(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  /** Drains the background work and closes the OSD clients. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.drain();
    if (this.osdRefresh !== undefined) await this.osdRefresh.catch(() => undefined);
    this.pool.close();
    this.namespaces.close();
  }

  stats(): ProxyStats {
    return { ...this.counters, backgroundTasks: this.background.size };
  }

  checkOpen(): void {
    if (this.closed) throw proxyError(ProxyErrorCode.Closed, 'the proxy engine is closed');
  }

  async namespace(nsId: string, forWrite: boolean): Promise<NamespaceEntry> {
    const cached = this.nsCache.get(nsId);
    let entry = cached;
    if (entry === undefined || Date.now() - entry.loadedAtMs > this.limits.namespaceCacheTtlMs) {
      const info = await this.namespaces.require(nsId);
      const preset = await this.registry.requirePreset(info.backendId, info.presetName);
      entry = { info, preset, loadedAtMs: Date.now() };
      this.nsCache.set(nsId, entry);
    }
    if (entry.info.backendId !== this.backendId) {
      throw proxyError(
        ProxyErrorCode.WrongBackend,
        `namespace ${nsId} is in backend ${entry.info.backendId}, this engine serves ${this.backendId}`,
      );
    }
    if (forWrite && entry.info.state !== 'active') {
      throw proxyError(ProxyErrorCode.NamespaceDeleting, `namespace ${nsId} is being deleted`);
    }
    return entry;
  }

  async loadManifest(nsId: string, name: string): Promise<Manifest> {
    const item = await this.kv.get(nsKeys.manifest(nsId, name));
    if (item === undefined) {
      this.manifestCache.delete(cacheKey(nsId, name));
      throw proxyError(ProxyErrorCode.ObjectNotFound, `no object ${name} in namespace ${nsId}`, {
        details: { nsId, name },
      });
    }
    const manifest = decodeManifest(item.value);
    this.manifestCache.set(cacheKey(nsId, name), manifest);
    return manifest;
  }

  /**
   * OSD states for placement: cached for osdStateTtlMs; when stale the cached view is used
   * and a refresh runs in the background, so a dead OSD (probe deadline) never stalls puts.
   * Only the very first call waits for the probes.
   */
  async osdStates(): Promise<OsdView> {
    const view = this.osdView;
    if (view === undefined) return this.refreshView();
    if (Date.now() - view.loadedAtMs > this.limits.osdStateTtlMs && this.osdRefresh === undefined)
      this.track(this.refreshView());
    return view;
  }

  refreshView(): Promise<OsdView> {
    if (this.osdRefresh !== undefined) return this.osdRefresh;
    const refresh = (async (): Promise<OsdView> => {
      const records = await this.registry.listOsds(this.backendId);
      const probed = await Promise.all(
        records.map(async (record): Promise<OsdState> => {
          if (record.state !== 'active')
            return { osdId: record.osdId, nodeId: record.nodeId, alive: false, freeBytes: 0 };
          try {
            const capacity = await this.pool
              .get(record)
              .capacity({ deadlineMs: this.limits.osdProbeDeadlineMs });
            return {
              osdId: record.osdId,
              nodeId: record.nodeId,
              alive: true,
              freeBytes: capacity.freeBytes,
            };
          } catch (err) {
            if (!this.osdDownLogged(record.osdId))
              this.log(`OSD ${record.osdId} (${record.address}) is down: ${errorMessage(err)}`);
            return { osdId: record.osdId, nodeId: record.nodeId, alive: false, freeBytes: 0 };
          }
        }),
      );
      const view: OsdView = {
        loadedAtMs: Date.now(),
        records: new Map(records.map((r) => [r.osdId, r])),
        states: probed.filter((_, i) => records[i]?.state === 'active'),
      };
      this.downOsds.clear();
      this.fullOsds.clear();
      for (const state of view.states) if (!state.alive) this.downOsds.add(state.osdId);
      this.osdView = view;
      return view;
    })();
    this.osdRefresh = refresh;
    const clear = (): void => {
      if (this.osdRefresh === refresh) this.osdRefresh = undefined;
    };
    refresh.then(clear, clear);
    return refresh;
  }

  private readonly loggedDown = new Set<string>();
  private osdDownLogged(osdId: string): boolean {
    if (this.loggedDown.has(osdId)) return true;
    if (this.loggedDown.size < 1024) this.loggedDown.add(osdId);
    return false;
  }

  placementStates(view: OsdView): OsdState[] {
    return view.states.map((s) =>
      this.downOsds.has(s.osdId)
        ? { ...s, alive: false }
        : this.fullOsds.has(s.osdId)
          ? { ...s, freeBytes: 0 }
          : s,
    );
  }

  osdById(view: OsdView, osdId: string): Osd {
    const record = view.records.get(osdId) ?? this.osdView?.records.get(osdId);
    if (record === undefined) {
      throw proxyError(
        ProxyErrorCode.OsdNotFound,
        `OSD ${osdId} is not in backend ${this.backendId}`,
      );
    }
    return this.pool.get(record);
  }

  /** Placed, known to the backend, and not down since the last probe. */
  fragmentReadable(manifest: Manifest, chunkIndex: number, fragmentIndex: number): boolean {
    const osdId = manifest.placement[chunkIndex]?.[fragmentIndex];
    return osdId !== undefined && !this.downOsds.has(osdId);
  }

  noteOsdError(osdId: string, err: unknown): void {
    const code = isShaleError(err) ? err.code : undefined;
    if (code === AsdErrorCode.NoSpace) this.fullOsds.add(osdId);
    else if (code === undefined || OSD_DOWN_CODES.includes(code)) this.downOsds.add(osdId);
  }

  /** Deletes every placed fragment of a manifest's version, then drops them from the cache. */
  async deleteObjectFragments(ns: NamespaceInfo, manifest: Manifest): Promise<number> {
    const view = await this.osdStates();
    const written: { chunkIndex: number; fragmentIndex: number; osdId: string }[] = [];
    manifest.placement.forEach((row, chunkIndex) => {
      row.forEach((osdId, fragmentIndex) => {
        if (osdId !== undefined) written.push({ chunkIndex, fragmentIndex, osdId });
      });
    });
    const count = await this.deleteFragmentsBestEffort(view, ns.nsId, manifest.version, written);
    if (this.cache !== undefined) {
      for (const w of written) {
        const key = fragmentKey(ns.nsId, manifest.version, w.chunkIndex, w.fragmentIndex);
        await this.cache.drop(`${ns.createRevision}:${key.toString('latin1')}`);
      }
    }
    return count;
  }

  /** One deleteFragments per OSD; failures are logged (maintenance collects leftovers). */
  async deleteFragmentsBestEffort(
    view: OsdView,
    nsId: string,
    version: number,
    written: readonly { chunkIndex: number; fragmentIndex: number; osdId: string }[],
  ): Promise<number> {
    const byOsd = new Map<string, Buffer[]>();
    for (const w of written) {
      const list = byOsd.get(w.osdId) ?? [];
      list.push(fragmentKey(nsId, version, w.chunkIndex, w.fragmentIndex));
      byOsd.set(w.osdId, list);
    }
    let deleted = 0;
    await Promise.all(
      [...byOsd].map(async ([osdId, keys]) => {
        try {
          await this.osdById(view, osdId).deleteFragments(keys, {
            deadlineMs: OSD_ADMIN_DEADLINE_MS,
          });
          deleted += keys.length;
        } catch (err) {
          this.log(
            `delete of ${keys.length} fragment(s) of ${nsId} v${version} on ${osdId} failed (left to maintenance): ${errorMessage(err)}`,
          );
        }
      }),
    );
    return deleted;
  }

  /** Runs a background task: bounded by callers (see backgroundMaxTasks), errors logged. */
  track(task: Promise<unknown>): void {
    const tracked = task.then(
      () => {
        this.background.delete(tracked);
      },
      (err: unknown) => {
        this.background.delete(tracked);
        this.counters.backgroundFailures += 1;
        this.log(`proxy background task failed: ${errorMessage(err)}`);
      },
    );
    this.background.add(tracked);
  }
}

export function objectAad(nsId: string, name: string): Buffer {
  return Buffer.from(`${nsId}/${name}`, 'latin1');
}

export function cacheKey(nsId: string, name: string): string {
  return `${nsId}/${name}`;
}
