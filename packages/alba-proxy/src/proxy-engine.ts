import {
  ifUnchanged,
  ifValueEquals,
  type KeyValue,
  KvErrorCode,
  type KvStore,
} from '@shale/arakoon-kv';
import { AsdErrorCode } from '@shale/asd';
import { assert, crc32c, errorMessage, isShaleError, type ShaleError } from '@shale/common';
import { BackendRegistry, type OsdRecord } from './backend-registry.js';
import { chunkCount } from './chunking.js';
import { mapWithConcurrency } from './concurrency.js';
import {
  BACKGROUND_MAX_TASKS,
  CACHE_FILL_MAX_IN_FLIGHT,
  CAS_MAX_ATTEMPTS,
  CODEC_BLOCK_SIZE_BYTES,
  CODEC_CHUNK_CONCURRENCY,
  FRAGMENT_READ_DEADLINE_MS,
  FRAGMENT_WRITE_DEADLINE_MS,
  LIST_OBJECTS_MAX_LIMIT,
  MANIFEST_CACHE_MAX_ENTRIES,
  NAMESPACE_CACHE_TTL_MS,
  OSD_ADMIN_DEADLINE_MS,
  OSD_PROBE_DEADLINE_MS,
  OSD_STATE_TTL_MS,
  PUT_COMPLETE_GRACE_MAX_MS,
  PUT_COMPLETE_GRACE_RATIO,
  PUT_MAX_CONCURRENT,
  PUT_MAX_QUEUED,
  PUT_REROUTE_MAX_ATTEMPTS,
  PUT_WRITE_CONCURRENCY,
  READ_HEDGE_BASE_MS,
  READ_HEDGE_BYTES_PER_MS,
  READ_MAX_SLICES,
  READ_MAX_TOTAL_BYTES,
  READ_SLICE_CONCURRENCY,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { FragmentCache } from './fragment-cache.js';
import type { OsdState } from './fragment-placement.js';
import type { KeyProvider } from './key-provider.js';
import { Limiter } from './limiter.js';
import { LruMap } from './lru-map.js';
import { decodeManifest, encodeManifest, type Manifest } from './manifest.js';
import { ManifestCommitter } from './manifest-commit.js';
import { type NamespaceInfo, NamespaceManager } from './namespace-manager.js';
import {
  type ChunkInfo,
  decodeChunk,
  encodeObject,
  type FragmentRead,
  objectInfoOf,
  readRange,
} from './object-codec.js';
import {
  checkNamespaceId,
  checkObjectName,
  decodeEpoch,
  encodeEpoch,
  fragmentKey,
  nsKeys,
} from './object-keys.js';
import type { Osd } from './osd.js';
import { defaultOsdFactory, type OsdFactory, OsdPool } from './osd-pool.js';
import { choosePolicy } from './policy.js';
import type { Policy, Preset } from './preset.js';
import type { RandomSource } from './seeded-random.js';

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
 */

export interface ProxyLimits {
  readonly osdStateTtlMs: number;
  readonly osdProbeDeadlineMs: number;
  readonly namespaceCacheTtlMs: number;
  readonly fragmentWriteDeadlineMs: number;
  readonly fragmentReadDeadlineMs: number;
  readonly readHedgeBaseMs: number;
  readonly readHedgeBytesPerMs: number;
  readonly putWriteConcurrency: number;
  readonly putMaxConcurrent: number;
  readonly putMaxQueued: number;
  readonly backgroundMaxTasks: number;
  readonly readSliceConcurrency: number;
  readonly manifestCacheMaxEntries: number;
}

export const DEFAULT_PROXY_LIMITS: ProxyLimits = {
  osdStateTtlMs: OSD_STATE_TTL_MS,
  osdProbeDeadlineMs: OSD_PROBE_DEADLINE_MS,
  namespaceCacheTtlMs: NAMESPACE_CACHE_TTL_MS,
  fragmentWriteDeadlineMs: FRAGMENT_WRITE_DEADLINE_MS,
  fragmentReadDeadlineMs: FRAGMENT_READ_DEADLINE_MS,
  readHedgeBaseMs: READ_HEDGE_BASE_MS,
  readHedgeBytesPerMs: READ_HEDGE_BYTES_PER_MS,
  putWriteConcurrency: PUT_WRITE_CONCURRENCY,
  putMaxConcurrent: PUT_MAX_CONCURRENT,
  putMaxQueued: PUT_MAX_QUEUED,
  backgroundMaxTasks: BACKGROUND_MAX_TASKS,
  readSliceConcurrency: READ_SLICE_CONCURRENCY,
  manifestCacheMaxEntries: MANIFEST_CACHE_MAX_ENTRIES,
};

/** A fragment found damaged or lost while reading: repair should rewrite it. */
export interface DamagedFragment {
  readonly nsId: string;
  readonly name: string;
  readonly version: number;
  readonly chunkIndex: number;
  readonly fragmentIndex: number;
  readonly osdId: string;
  /** checksum: wrong bytes or size; corrupt: the ASD said ASD_CORRUPT; not-found: gone. */
  readonly reason: 'checksum' | 'corrupt' | 'not-found';
}

export interface ProxyEngineOptions {
  readonly kv: KvStore;
  readonly backendId: string;
  readonly osdFactory?: OsdFactory;
  readonly keyProvider?: KeyProvider;
  readonly fragmentCache?: FragmentCache;
  /** Placement randomness (seeded in tests). Default Math.random. */
  readonly random?: RandomSource;
  readonly limits?: Partial<ProxyLimits>;
  /** Called for every damaged fragment a read found (after the read, with a current manifest). */
  readonly onDamaged?: (damage: DamagedFragment) => void;
  readonly log?: (line: string) => void;
}

export interface PutOptions {
  /** The namespace epoch the caller holds; the manifest commits only if it is still current. */
  readonly writerEpoch: number;
}

export interface PutResult {
  readonly version: number;
  readonly policy: Policy;
  /** Fragments durable at acknowledgement, per chunk (>= c each). */
  readonly placedAtAck: readonly number[];
  readonly manifestBytes: number;
}

export interface ObjectSlice {
  readonly name: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export interface ObjectListing {
  readonly objects: { name: string; sizeBytes: number; version: number }[];
  readonly continuation?: Buffer;
}

export interface ProxyStats {
  bytesIn: number;
  bytesOut: number;
  puts: number;
  gets: number;
  rangeReads: number;
  deletes: number;
  fragmentsWritten: number;
  fragmentWriteFailures: number;
  fragmentsRead: number;
  fragmentReadFailures: number;
  /** Chunk decodes (getObject) and ranged reads that needed parity. */
  parityDecodes: number;
  hedgedReads: number;
  cacheHits: number;
  cacheMisses: number;
  manifestsCommitted: number;
  manifestBytesWritten: number;
  manifestUpdates: number;
  fencedCommits: number;
  damagedFragments: number;
  backgroundTasks: number;
  backgroundFailures: number;
}

interface NamespaceEntry {
  readonly info: NamespaceInfo;
  readonly preset: Preset;
  readonly loadedAtMs: number;
}

interface OsdView {
  readonly loadedAtMs: number;
  readonly records: ReadonlyMap<string, OsdRecord>;
  /** Active (not decommissioned) OSDs, for placement. */
  readonly states: OsdState[];
}

type WriteState = 'queued' | 'sending' | 'durable' | 'failed';

interface WriteTask {
  readonly chunkIndex: number;
  /** Where the fragments go; changes when a failed write is rerouted. */
  osdId: string;
  readonly fragmentIndices: number[];
  values: Buffer[];
  state: WriteState;
}

/** Per-read bookkeeping: damage found and whether a fragment was missing (overwritten object?). */
interface ReadContext {
  readonly ns: NamespaceInfo;
  readonly manifest: Manifest;
  sawNotFound: boolean;
  usedParity: boolean;
  readonly damaged: DamagedFragment[];
  /** `${chunk}/${fragment}` given up on during this read (failed or hedged). */
  readonly unavailable: Set<string>;
  /** Whether slow OSDs may be given up on (hedged), and how many calls were. */
  readonly hedging: boolean;
  hedged: number;
}

/** Transport-level failures: the OSD is treated as down until the next successful probe. */
const OSD_DOWN_CODES: readonly string[] = [
  AsdErrorCode.Unavailable,
  AsdErrorCode.DeadlineExceeded,
  AsdErrorCode.RpcFailed,
  AsdErrorCode.Closed,
  AsdErrorCode.IoError,
];

export class ProxyEngine {
  readonly registry: BackendRegistry;
  readonly namespaces: NamespaceManager;
  private readonly kv: KvStore;
  private readonly backendId: string;
  private readonly pool: OsdPool;
  private readonly keyProvider: KeyProvider | undefined;
  private readonly cache: FragmentCache | undefined;
  private readonly random: RandomSource;
  private readonly limits: ProxyLimits;
  private readonly onDamaged: ((damage: DamagedFragment) => void) | undefined;
  private readonly log: (line: string) => void;
  private readonly putLimiter: Limiter;
  private readonly committer: ManifestCommitter;
  private readonly nsCache = new LruMap<string, NamespaceEntry>(MANIFEST_CACHE_MAX_ENTRIES);
  private readonly manifestCache: LruMap<string, Manifest>;
  private readonly background = new Set<Promise<void>>();
  private cacheFills = 0;
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
  private readonly counters: ProxyStats = {
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
    this.putLimiter = new Limiter(this.limits.putMaxConcurrent, this.limits.putMaxQueued, 'puts');
    this.manifestCache = new LruMap(this.limits.manifestCacheMaxEntries);
    this.committer = new ManifestCommitter(this.kv, {
      knownMaxEntries: this.limits.manifestCacheMaxEntries,
      log: this.log,
      namespaceGone: async (nsId) => {
        this.nsCache.delete(nsId);
        await this.namespace(nsId, true); // throws NOT_FOUND or DELETING
        throw proxyError(ProxyErrorCode.Fenced, `namespace ${nsId} has no epoch`);
      },
    });
  }

  // ---------------------------------------------------------------- write path

  /**
   * Stores an object (a new version; an existing object of that name is replaced and its old
   * fragments deleted after the commit). Resolves once every chunk has >= c fragments durable
   * and the manifest commit (conditional on the namespace epoch == writerEpoch) succeeded.
   * `data` may be reused once this resolves (fragments still to be written are copied).
   *
   * Errors: PROXY_FENCED (stale writerEpoch; fragments written are deleted best effort),
   * PROXY_NO_POLICY, PROXY_NOT_ENOUGH_OSDS (fewer than c fragments of a chunk stored),
   * PROXY_NAMESPACE_NOT_FOUND / _DELETING, PROXY_BUSY, PROXY_COMMIT_UNKNOWN.
   *
   * KV_OUTCOME_UNKNOWN on the commit is resolved before answering: the manifest is re-read
   * (is our version there? then it committed) and otherwise the same conditional txn is
   * retried: if the lost attempt lands later, the retry's compare fails and the next re-read
   * shows it.
   */
  async putObject(
    nsId: string,
    name: string,
    data: Buffer,
    options: PutOptions,
  ): Promise<PutResult> {
    this.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    if (!Number.isSafeInteger(options.writerEpoch) || options.writerEpoch < 1) {
      throw proxyError(ProxyErrorCode.BadArgument, `writerEpoch must be a positive integer`);
    }
    const release = await this.putLimiter.acquire();
    try {
      try {
        return await this.put(nsId, name, data, options.writerEpoch);
      } catch (err) {
        if (!isShaleError(err, ProxyErrorCode.NotEnoughOsds)) throw err;
        // The OSD view was stale: OSDs died since it was taken (what was written is already
        // deleted). Probe again and choose the first policy the OSDs alive now satisfy.
        await this.refreshView();
        return await this.put(nsId, name, data, options.writerEpoch);
      }
    } finally {
      release();
    }
  }

  private async put(
    nsId: string,
    name: string,
    data: Buffer,
    writerEpoch: number,
  ): Promise<PutResult> {
    const { info: ns, preset } = await this.namespace(nsId, true);
    const view = await this.osdStates();
    const minK = Math.min(...preset.policies.map((p) => p.k));
    const chunks = chunkCount(data.length, minK, preset.fragmentSizeMaxBytes);
    const choice = choosePolicy(preset, this.placementStates(view), {
      random: this.random,
      minFreeBytes: Math.ceil(data.length / minK) + chunks * CODEC_BLOCK_SIZE_BYTES,
    });
    const { policy } = choice;
    const lease = await this.committer.nextVersion(ns);
    const version = lease.version;
    const encoded = await encodeObject(data, {
      k: policy.k,
      m: policy.m,
      fragmentSizeMaxBytes: preset.fragmentSizeMaxBytes,
      compression: preset.compression,
      encryption: preset.encryption,
      ...(this.keyProvider === undefined ? {} : { keyProvider: this.keyProvider }),
      aad: objectAad(nsId, name),
    });
    const info = objectInfoOf(encoded);
    const total = policy.k + policy.m;

    // One task per (chunk, OSD), chunk-major so the first chunks complete first.
    const tasks: WriteTask[] = [];
    encoded.chunks.forEach((chunk, chunkIndex) => {
      const byOsd = new Map<string, WriteTask>();
      choice.placement.forEach((osdId, fragmentIndex) => {
        if (osdId === undefined) return;
        let task = byOsd.get(osdId);
        if (task === undefined) {
          task = { chunkIndex, osdId, fragmentIndices: [], values: [], state: 'queued' };
          byOsd.set(osdId, task);
          tasks.push(task);
        }
        task.fragmentIndices.push(fragmentIndex);
        task.values.push(chunk.fragments[fragmentIndex] as Buffer);
      });
    });
    const durableOf = (chunkIndex: number): number =>
      tasks
        .filter((t) => t.chunkIndex === chunkIndex && t.state === 'durable')
        .reduce((n, t) => n + t.fragmentIndices.length, 0);
    const possibleOf = (chunkIndex: number): number =>
      tasks
        .filter((t) => t.chunkIndex === chunkIndex && t.state !== 'failed')
        .reduce((n, t) => n + t.fragmentIndices.length, 0);
    const decide = (): 'ack' | 'fail' | undefined => {
      let ack = true;
      for (let i = 0; i < info.chunks.length; i++) {
        if (possibleOf(i) < policy.c) return 'fail';
        if (durableOf(i) < policy.c) ack = false;
      }
      return ack ? 'ack' : undefined;
    };
    let signal: (() => void) | undefined;
    const wake = (): void => {
      const s = signal;
      signal = undefined;
      s?.();
    };
    const failures: string[] = [];
    const tried = new Map<number, Set<string>>(); // per chunk: OSDs written to or tried
    for (const task of tasks) {
      const set = tried.get(task.chunkIndex) ?? new Set<string>();
      set.add(task.osdId);
      tried.set(task.chunkIndex, set);
    }
    const writesStartMs = performance.now();
    const allDone = mapWithConcurrency(tasks, this.limits.putWriteConcurrency, async (task) => {
      task.state = 'sending';
      for (let attempt = 0; ; attempt++) {
        const items = task.fragmentIndices.map((f, j) => ({
          key: fragmentKey(nsId, version, task.chunkIndex, f),
          value: task.values[j] as Buffer,
          crc32c: (info.chunks[task.chunkIndex] as ChunkInfo).fragmentCrcs[f] as number,
        }));
        try {
          await this.osdById(view, task.osdId).putFragments(items, {
            deadlineMs: this.limits.fragmentWriteDeadlineMs,
          });
          task.state = 'durable';
          this.counters.fragmentsWritten += items.length;
          break;
        } catch (err) {
          this.counters.fragmentWriteFailures += items.length;
          this.noteOsdError(task.osdId, err);
          if (failures.length < 8) failures.push(`${task.osdId}: ${errorMessage(err)}`);
          // The view was stale (or the OSD just failed): try another OSD of the backend
          // that this chunk does not use yet, within x per node.
          const replacement =
            attempt < PUT_REROUTE_MAX_ATTEMPTS
              ? this.replacementOsd(view, policy, tasks, task, tried)
              : undefined;
          if (replacement === undefined) {
            task.state = 'failed';
            break;
          }
          tried.get(task.chunkIndex)?.add(replacement);
          task.osdId = replacement;
        }
      }
      task.values = [];
      wake();
    }).then(() => {
      wake();
    });
    for (;;) {
      const decision = decide();
      if (decision === 'fail') {
        // Durability: nothing acknowledged; what was written is deleted (best effort).
        await allDone;
        await this.deleteFragmentsBestEffort(view, nsId, version, writtenOf(tasks));
        throw proxyError(
          ProxyErrorCode.NotEnoughOsds,
          `put ${nsId}/${name}: fewer than c = ${policy.c} fragments of a chunk could be stored (${failures.join('; ')})`,
          { details: { nsId, name } },
        );
      }
      if (decision === 'ack') break;
      if (tasks.every((t) => t.state === 'durable' || t.state === 'failed')) continue;
      await new Promise<void>((resolve) => {
        signal = resolve;
      });
    }

    // Enough is durable. If the background is full, finish every write before acknowledging;
    // otherwise give the rest a short grace, so that one commit records them all.
    const backgroundFull = this.background.size >= this.limits.backgroundMaxTasks;
    if (backgroundFull) await allDone;
    else if (tasks.some((t) => t.state === 'queued' || t.state === 'sending')) {
      const graceMs = Math.min(
        PUT_COMPLETE_GRACE_MAX_MS,
        PUT_COMPLETE_GRACE_RATIO * (performance.now() - writesStartMs),
      );
      await settledWithin(allDone, graceMs);
    }
    for (const task of tasks) {
      // Writes still to be sent (or re-sent elsewhere after a failure) outlive this call:
      // they must not read the caller's buffer.
      if (task.state === 'queued' || task.state === 'sending')
        task.values = task.values.map((v) => (v.buffer === data.buffer ? Buffer.from(v) : v));
    }
    const placement = placementOf(tasks, info.chunks.length, total);
    // Writes not durable now are recorded later (completeManifest), even if they land
    // before the commit below returns.
    const lateTasks = tasks.filter((t) => t.state === 'queued' || t.state === 'sending');
    const manifest: Manifest = {
      name,
      version,
      writerEpoch,
      createdAtMs: Date.now(),
      policy,
      info,
      placement,
    };
    const bytes = encodeManifest(manifest);
    let previous: Manifest | undefined;
    try {
      ({ previous } = await this.committer.commit(ns, manifest, bytes, lease));
    } catch (err) {
      if (isShaleError(err, ProxyErrorCode.Fenced)) this.counters.fencedCommits += 1;
      // Durability: not acknowledged; our fragments are deleted now and as late writes land.
      this.track(
        allDone.then(() => this.deleteFragmentsBestEffort(view, nsId, version, writtenOf(tasks))),
      );
      await this.deleteFragmentsBestEffort(view, nsId, version, writtenOf(tasks));
      throw err;
    }
    this.counters.puts += 1;
    this.counters.bytesIn += data.length;
    this.counters.manifestsCommitted += 1;
    this.counters.manifestBytesWritten += bytes.length;
    this.manifestCache.set(cacheKey(nsId, name), manifest);
    if (previous !== undefined && previous.version !== version) {
      const old = previous;
      this.track(this.deleteObjectFragments(ns, old));
    }
    if (lateTasks.length > 0) {
      this.track(allDone.then(() => this.completeManifest(ns, manifest, lateTasks, writerEpoch)));
    }
    // Durability: the manifest is committed in the KV (epoch-checked) and every chunk has at
    // least c fragments fsynced on distinct OSDs; the rest are being written in the background.
    return {
      version,
      policy,
      placedAtAck: placement.map((p) => p.filter((o) => o !== undefined).length),
      manifestBytes: bytes.length,
    };
  }

  /**
   * After the last fragment writes of an acknowledged put (`tasks`: those not durable at
   * acknowledgement): record the newly durable
   * fragments in the manifest, if it is still this version and the epoch still the writer's.
   * Otherwise those fragments are nobody's: delete them.
   */
  private async completeManifest(
    ns: NamespaceInfo,
    acked: Manifest,
    tasks: readonly WriteTask[],
    writerEpoch: number,
  ): Promise<void> {
    const view = await this.osdStates();
    const late = tasks.filter((t) => t.state === 'durable');
    if (late.length === 0) return;
    const result = await this.committer.recordLate(ns, acked, writerEpoch, (current) => {
      const placement = current.placement.map((p) => [...p]);
      for (const task of late) {
        for (const f of task.fragmentIndices) {
          const row = placement[task.chunkIndex] as (string | undefined)[];
          row[f] ??= task.osdId;
        }
      }
      return { ...current, placement };
    });
    if (result.outcome === 'recorded') {
      this.counters.manifestUpdates += 1;
      this.counters.manifestBytesWritten += result.bytes ?? 0;
      if (result.manifest !== undefined)
        this.manifestCache.set(cacheKey(ns.nsId, acked.name), result.manifest);
    } else if (result.outcome === 'contention') {
      this.log(`manifest ${ns.nsId}/${acked.name}: late fragments not recorded (contention)`);
    } else {
      // Superseded (nobody's fragments) or fenced since (the manifest keeps its gaps,
      // maintenance rewrites them): delete them.
      await this.deleteFragmentsBestEffort(view, ns.nsId, acked.version, writtenOf(late));
    }
  }

  /**
   * Deletes an object: the manifest, by a txn conditional on the epoch (PROXY_FENCED), then
   * its fragments (best effort: fragments on OSDs that are down stay until maintenance
   * collects them). Returns whether there was an object.
   */
  async deleteObject(
    nsId: string,
    name: string,
    options: PutOptions,
  ): Promise<{ deleted: boolean }> {
    this.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    const { info: ns } = await this.namespace(nsId, true);
    const key = nsKeys.manifest(nsId, name);
    const epochKey = nsKeys.epoch(nsId);
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      const item = await this.kv.get(key);
      const manifest = tryDecode(item);
      let result: Awaited<ReturnType<KvStore['txn']>>;
      try {
        result = await this.kv.txn({
          compares: [
            ifValueEquals(epochKey, encodeEpoch(options.writerEpoch)),
            ifUnchanged(key, item),
          ],
          success: item === undefined ? [] : [{ type: 'delete', key }],
          failure: [{ type: 'get', key: epochKey }],
        });
      } catch (err) {
        if (!isShaleError(err, KvErrorCode.OutcomeUnknown)) throw err;
        // Re-read: gone (or replaced) means some delete or put won; the next turn decides.
        continue;
      }
      if (result.succeeded) {
        this.manifestCache.delete(cacheKey(nsId, name));
        this.committer.forgetObject(nsId, name);
        if (item === undefined) return { deleted: false };
        this.counters.deletes += 1;
        // Durability: the manifest delete is committed; the object is gone for readers.
        if (manifest !== undefined) await this.deleteObjectFragments(ns, manifest);
        return { deleted: true };
      }
      const first = result.results[0];
      const epochItem = first?.type === 'get' ? first.item : undefined;
      const epoch = epochItem === undefined ? undefined : decodeEpoch(epochItem.value);
      if (epoch !== options.writerEpoch) {
        this.counters.fencedCommits += 1;
        throw proxyError(
          ProxyErrorCode.Fenced,
          `namespace ${nsId} is at epoch ${epoch}, the writer holds ${options.writerEpoch}`,
          { details: { nsId, epoch: String(epoch) } },
        );
      }
    }
    throw proxyError(ProxyErrorCode.CommitUnknown, `delete ${nsId}/${name}: no definite outcome`);
  }

  // ---------------------------------------------------------------- read path

  /** The decoded manifest, read from the KV (PROXY_OBJECT_NOT_FOUND). */
  async objectInfo(nsId: string, name: string): Promise<Manifest> {
    this.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    return this.loadManifest(nsId, name);
  }

  async listObjects(
    nsId: string,
    options: { prefix?: string; limit?: number; continuation?: Buffer } = {},
  ): Promise<ObjectListing> {
    this.checkOpen();
    checkNamespaceId(nsId);
    const base = nsKeys.manifestsPrefix(nsId);
    const prefix = Buffer.concat([base, Buffer.from(options.prefix ?? '', 'latin1')]);
    const limit = Math.min(options.limit ?? LIST_OBJECTS_MAX_LIMIT, LIST_OBJECTS_MAX_LIMIT);
    const page = await this.kv.range(
      { prefix },
      options.continuation === undefined
        ? { limit }
        : { limit, continuation: options.continuation },
    );
    const objects = page.items.map((item) => {
      const manifest = decodeManifest(item.value);
      return {
        name: item.key.subarray(base.length).toString('latin1'),
        sizeBytes: manifest.info.sizeBytes,
        version: manifest.version,
      };
    });
    return page.continuation === undefined
      ? { objects }
      : { objects, continuation: page.continuation };
  }

  /**
   * Reads a whole object. Per chunk the k data fragments are fetched (fragment cache first);
   * a data fragment that fails, is missing, fails its CRC32C or has not arrived after the
   * hedge delay makes the parity fragments be fetched too, and any k good ones decode.
   * The object's CRC32C is checked last: no byte that fails a checksum is ever returned.
   */
  async getObject(nsId: string, name: string): Promise<Buffer> {
    this.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    const { info: ns } = await this.namespace(nsId, false);
    let manifest = await this.loadManifest(nsId, name);
    for (let attempt = 0; ; attempt++) {
      const ctx = newReadContext(ns, manifest);
      try {
        const data = await this.readWhole(ctx);
        this.reportDamage(ctx);
        this.counters.gets += 1;
        this.counters.bytesOut += data.length;
        return data;
      } catch (err) {
        if (attempt > 0 || !ctx.sawNotFound) throw err;
        const fresh = await this.loadManifest(nsId, name);
        if (fresh.version === manifest.version) {
          this.reportDamage(ctx);
          throw err;
        }
        manifest = fresh; // overwritten while we read: read the new version
      }
    }
  }

  /**
   * Reads byte ranges of objects; answers in the order asked. Each slice is a codec
   * readRange whose fetch sends one getFragmentRanges per OSD per round, hedged. Manifests
   * come from an in-memory LRU; a fragment 'not found' re-reads the manifest once (the object
   * may have been overwritten) and reads again if it changed. PROXY_BAD_RANGE for a slice
   * past the object's end.
   */
  async readRanges(nsId: string, slices: readonly ObjectSlice[]): Promise<Buffer[]> {
    this.checkOpen();
    checkNamespaceId(nsId);
    if (slices.length > READ_MAX_SLICES) {
      throw proxyError(ProxyErrorCode.BadRange, `at most ${READ_MAX_SLICES} slices per call`);
    }
    let totalBytes = 0;
    for (const slice of slices) {
      checkObjectName(slice.name);
      if (
        !Number.isSafeInteger(slice.offsetBytes) ||
        !Number.isSafeInteger(slice.lengthBytes) ||
        slice.offsetBytes < 0 ||
        slice.lengthBytes < 0
      ) {
        throw proxyError(
          ProxyErrorCode.BadRange,
          `slice ${slice.offsetBytes}+${slice.lengthBytes} of ${slice.name} is not a range`,
        );
      }
      totalBytes += slice.lengthBytes;
    }
    if (totalBytes > READ_MAX_TOTAL_BYTES) {
      throw proxyError(
        ProxyErrorCode.BadRange,
        `${totalBytes} bytes asked; at most ${READ_MAX_TOTAL_BYTES} per call`,
      );
    }
    const { info: ns } = await this.namespace(nsId, false);
    return mapWithConcurrency(slices, this.limits.readSliceConcurrency, (slice) =>
      this.readSlice(ns, slice),
    );
  }

  private async readSlice(ns: NamespaceInfo, slice: ObjectSlice): Promise<Buffer> {
    const cached = this.manifestCache.get(cacheKey(ns.nsId, slice.name));
    let manifest = cached ?? (await this.loadManifest(ns.nsId, slice.name));
    let fresh = cached === undefined;
    let reloaded = false;
    let hedging = true;
    for (;;) {
      if (slice.offsetBytes + slice.lengthBytes > manifest.info.sizeBytes) {
        if (!fresh) {
          manifest = await this.loadManifest(ns.nsId, slice.name);
          fresh = true;
          continue;
        }
        throw proxyError(
          ProxyErrorCode.BadRange,
          `slice ${slice.offsetBytes}+${slice.lengthBytes} is past the end of ${slice.name} (${manifest.info.sizeBytes} bytes)`,
          { details: { name: slice.name } },
        );
      }
      const ctx = newReadContext(ns, manifest, hedging);
      const read = ctx.manifest;
      let bytes: Buffer | undefined;
      let failure: unknown;
      try {
        bytes = await readRange(read.info, slice.offsetBytes, slice.lengthBytes, {
          fetch: (reads) => this.fetchRanges(ctx, reads),
          isAvailable: (chunkIndex, fragmentIndex) =>
            this.fragmentReadable(read, chunkIndex, fragmentIndex),
          ...(this.keyProvider === undefined ? {} : { keyProvider: this.keyProvider }),
          aad: objectAad(ns.nsId, slice.name),
        });
      } catch (err) {
        failure = err;
      }
      if (ctx.sawNotFound && !reloaded) {
        // The object may have been overwritten (its old fragments deleted): look again.
        reloaded = true;
        const latest = await this.loadManifest(ns.nsId, slice.name);
        if (latest.version !== manifest.version) {
          manifest = latest;
          fresh = true;
          continue;
        }
      }
      if (
        bytes === undefined &&
        ctx.hedged > 0 &&
        isShaleError(failure, ProxyErrorCode.NotEnoughFragments)
      ) {
        // Hedging gave up on slow fragments that were needed after all (on top of failed
        // ones): read again and wait for every answer. Hedging only ever costs time.
        hedging = false;
        continue;
      }
      this.reportDamage(ctx);
      if (bytes === undefined) throw failure;
      if (ctx.usedParity) this.counters.parityDecodes += 1;
      this.counters.rangeReads += 1;
      this.counters.bytesOut += bytes.length;
      return bytes;
    }
  }

  /** The fetch of readRange: one getFragmentRanges per OSD, hedged. */
  private async fetchRanges(
    ctx: ReadContext,
    reads: readonly FragmentRead[],
  ): Promise<(Buffer | undefined)[]> {
    const { manifest } = ctx;
    const view = await this.osdStates();
    const answers: (Buffer | undefined)[] = new Array(reads.length).fill(undefined);
    const groups = new Map<string, number[]>();
    reads.forEach((read, i) => {
      const osdId = manifest.placement[read.chunkIndex]?.[read.fragmentIndex];
      if (osdId === undefined) return;
      const list = groups.get(osdId) ?? [];
      list.push(i);
      groups.set(osdId, list);
    });
    // Spare fragments per chunk: how many more may be given up on and still leave k.
    const spare = new Map<number, number>();
    for (const read of reads) {
      if (spare.has(read.chunkIndex)) continue;
      let available = 0;
      for (let f = 0; f < manifest.info.k + manifest.info.m; f++) {
        if (
          this.fragmentReadable(manifest, read.chunkIndex, f) &&
          !ctx.unavailable.has(`${read.chunkIndex}/${f}`)
        )
          available += 1;
      }
      spare.set(read.chunkIndex, available - manifest.info.k);
    }
    await Promise.all(
      [...groups.entries()].map(async ([osdId, indices]) => {
        const mine = indices.map((i) => reads[i] as FragmentRead);
        // Hedge only when every chunk touched keeps k fragments without these.
        const perChunk = new Map<number, number>();
        for (const r of mine) perChunk.set(r.chunkIndex, (perChunk.get(r.chunkIndex) ?? 0) + 1);
        const canHedge = ctx.hedging && [...perChunk].every(([c, n]) => (spare.get(c) ?? 0) >= n);
        if (canHedge) for (const [c, n] of perChunk) spare.set(c, (spare.get(c) ?? 0) - n);
        const bytes = mine.reduce((n, r) => n + r.lengthBytes, 0);
        const hedgeMs = this.limits.readHedgeBaseMs + bytes / this.limits.readHedgeBytesPerMs;
        const results = await this.callWithHedge(
          osdId,
          (osd) =>
            osd.getFragmentRanges(
              mine.map((r) => ({
                key: fragmentKey(ctx.ns.nsId, manifest.version, r.chunkIndex, r.fragmentIndex),
                offset: r.offsetBytes,
                length: r.lengthBytes,
              })),
              { deadlineMs: this.limits.fragmentReadDeadlineMs },
            ),
          view,
          canHedge ? hedgeMs : undefined,
        );
        if (results === 'hedged') ctx.hedged += 1;
        mine.forEach((read, j) => {
          const result = results === 'hedged' ? undefined : results?.[j];
          let value: Buffer | undefined;
          if (result === undefined) value = undefined;
          else if (result.ok) {
            value = result.value.length === read.lengthBytes ? result.value : undefined;
            if (value === undefined) this.noteDamage(ctx, read, osdId, 'checksum');
          } else this.noteItemError(ctx, read, osdId, result.error);
          if (value === undefined) {
            ctx.unavailable.add(`${read.chunkIndex}/${read.fragmentIndex}`);
            this.counters.fragmentReadFailures += 1;
          } else {
            this.counters.fragmentsRead += 1;
            if (read.fragmentIndex >= manifest.info.k) ctx.usedParity = true;
          }
          answers[indices[j] as number] = value;
        });
      }),
    );
    return answers;
  }

  /**
   * Calls an OSD; undefined when it fails at the call level, 'hedged' when (with a hedge
   * delay) it has not answered in time. A hedged call is not cancelled: it ends by its own
   * deadline and its answer is dropped.
   */
  private async callWithHedge<T>(
    osdId: string,
    call: (osd: Osd) => Promise<T>,
    view: OsdView,
    hedgeMs: number | undefined,
  ): Promise<T | 'hedged' | undefined> {
    const settled = call(this.osdById(view, osdId)).then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    let timer: NodeJS.Timeout | undefined;
    const hedge =
      hedgeMs === undefined
        ? undefined
        : new Promise<'hedge'>((resolve) => {
            timer = setTimeout(() => resolve('hedge'), hedgeMs);
            timer.unref();
          });
    const outcome = hedge === undefined ? await settled : await Promise.race([settled, hedge]);
    if (timer !== undefined) clearTimeout(timer);
    if (outcome === 'hedge') {
      this.counters.hedgedReads += 1;
      return 'hedged';
    }
    if (!outcome.ok) {
      this.noteOsdError(osdId, outcome.error);
      return undefined;
    }
    return outcome.value;
  }

  private async readWhole(ctx: ReadContext): Promise<Buffer> {
    const { info } = ctx.manifest;
    const view = await this.osdStates();
    const parts = await mapWithConcurrency(info.chunks, CODEC_CHUNK_CONCURRENCY, (_, i) =>
      this.readChunk(ctx, view, i),
    );
    const data = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, info.sizeBytes);
    if (data.length !== info.sizeBytes || crc32c(data) !== info.objectCrc32c) {
      throw proxyError(
        ProxyErrorCode.Corrupt,
        `${ctx.ns.nsId}/${ctx.manifest.name}: decoded object fails its size or CRC32C`,
      );
    }
    return data;
  }

  /** One chunk: data fragments first; parity when one fails or is slow; decode. */
  private async readChunk(ctx: ReadContext, view: OsdView, chunkIndex: number): Promise<Buffer> {
    const { manifest } = ctx;
    const { k, m } = manifest.info;
    const chunk = manifest.info.chunks[chunkIndex] as ChunkInfo;
    const fragments: (Buffer | undefined)[] = new Array(k + m).fill(undefined);
    const settled: boolean[] = new Array(k + m).fill(false);
    const launched: boolean[] = new Array(k + m).fill(false);
    let signal: (() => void) | undefined;
    const wake = (): void => {
      const s = signal;
      signal = undefined;
      s?.();
    };
    const launch = (indices: number[]): void => {
      const byOsd = new Map<string, number[]>();
      for (const f of indices) {
        if (launched[f]) continue;
        launched[f] = true;
        const osdId = manifest.placement[chunkIndex]?.[f];
        if (osdId === undefined || !this.fragmentReadable(manifest, chunkIndex, f)) {
          settled[f] = true;
          continue;
        }
        const list = byOsd.get(osdId) ?? [];
        list.push(f);
        byOsd.set(osdId, list);
      }
      for (const [osdId, list] of byOsd) {
        // Settles exactly once, never rejects: a failure is "these fragments are unavailable".
        this.fetchWholeFragments(ctx, view, chunkIndex, osdId, list)
          .catch((err: unknown): undefined[] => {
            this.log(`read of ${osdId} failed: ${errorMessage(err)}`);
            return list.map(() => undefined);
          })
          .then((got) => {
            list.forEach((f, j) => {
              fragments[f] = got[j];
              settled[f] = true;
            });
            wake();
          }, wake);
      }
      wake();
    };
    const dataIndices = Array.from({ length: k }, (_, i) => i);
    const parityIndices = Array.from({ length: m }, (_, i) => k + i);
    launch(dataIndices);
    const hedgeMs =
      this.limits.readHedgeBaseMs + chunk.fragmentSizeBytes / this.limits.readHedgeBytesPerMs;
    const timer = setTimeout(() => launch(parityIndices), hedgeMs);
    timer.unref();
    try {
      for (;;) {
        const good = fragments.filter((f) => f !== undefined).length;
        const dataGood = dataIndices.every((f) => fragments[f] !== undefined);
        if (dataGood) break;
        const parityLaunched = parityIndices.every((f) => launched[f]);
        if (parityLaunched && good >= k) break;
        if (dataIndices.some((f) => settled[f] && fragments[f] === undefined)) {
          if (!parityLaunched) {
            launch(parityIndices);
            continue;
          }
        }
        if (settled.every(Boolean)) {
          if (!parityLaunched) {
            launch(parityIndices);
            continue;
          }
          throw proxyError(
            ProxyErrorCode.NotEnoughFragments,
            `${ctx.ns.nsId}/${manifest.name} chunk ${chunkIndex}: ${good} good fragments of ${k} needed`,
            { details: { nsId: ctx.ns.nsId, name: manifest.name } },
          );
        }
        await new Promise<void>((resolve) => {
          signal = resolve;
        });
      }
    } finally {
      clearTimeout(timer);
    }
    const usedParity = dataIndices.some((f) => fragments[f] === undefined);
    // Use exactly k fragments (data first); late answers are ignored.
    const chosen: (Buffer | undefined)[] = new Array(k + m).fill(undefined);
    let taken = 0;
    for (let f = 0; f < k + m && taken < k; f++) {
      if (fragments[f] !== undefined) {
        chosen[f] = fragments[f];
        taken += 1;
      }
    }
    const decoded = await decodeChunk(manifest.info, chunkIndex, chosen, {
      ...(this.keyProvider === undefined ? {} : { keyProvider: this.keyProvider }),
      aad: objectAad(ctx.ns.nsId, manifest.name),
    });
    // Our own CRC check ran first, so the codec finds nothing bad; assert that.
    assert(decoded.badFragments.length === 0, 'fragments were verified before decoding');
    if (usedParity) this.counters.parityDecodes += 1;
    return decoded.plaintext;
  }

  /**
   * Whole fragments of one chunk from one OSD (cache first), each checked against its
   * CRC32C and size. Undefined where unavailable or bad (bad ones are noted as damage).
   */
  private async fetchWholeFragments(
    ctx: ReadContext,
    view: OsdView,
    chunkIndex: number,
    osdId: string,
    indices: readonly number[],
  ): Promise<(Buffer | undefined)[]> {
    const { manifest } = ctx;
    const chunk = manifest.info.chunks[chunkIndex] as ChunkInfo;
    const out: (Buffer | undefined)[] = new Array(indices.length).fill(undefined);
    const keys = indices.map((f) => fragmentKey(ctx.ns.nsId, manifest.version, chunkIndex, f));
    const cacheKeys = keys.map((key) => `${ctx.ns.createRevision}:${key.toString('latin1')}`);
    const wanted: number[] = [];
    for (let j = 0; j < indices.length; j++) {
      const f = indices[j] as number;
      const cached = await this.cache?.get(cacheKeys[j] as string);
      if (cached !== undefined && isGoodFragment(cached, chunk, f)) {
        out[j] = cached;
        this.counters.cacheHits += 1;
        if (f >= manifest.info.k) ctx.usedParity = true;
        continue;
      }
      if (cached !== undefined) await this.cache?.drop(cacheKeys[j] as string);
      if (this.cache !== undefined) this.counters.cacheMisses += 1;
      wanted.push(j);
    }
    if (wanted.length === 0) return out;
    const results = await this.callWithHedge(
      osdId,
      (osd) =>
        osd.getFragments(
          wanted.map((j) => keys[j] as Buffer),
          { deadlineMs: this.limits.fragmentReadDeadlineMs },
        ),
      view,
      undefined,
    );
    wanted.forEach((j, w) => {
      const f = indices[j] as number;
      const read = { chunkIndex, fragmentIndex: f, offsetBytes: 0, lengthBytes: 0 };
      const result = results === 'hedged' ? undefined : results?.[w];
      if (result === undefined) {
        this.counters.fragmentReadFailures += 1;
        return;
      }
      if (!result.ok) {
        this.noteItemError(ctx, read, osdId, result.error);
        this.counters.fragmentReadFailures += 1;
        return;
      }
      if (!isGoodFragment(result.value, chunk, f)) {
        this.noteDamage(ctx, read, osdId, 'checksum');
        this.counters.fragmentReadFailures += 1;
        return;
      }
      this.counters.fragmentsRead += 1;
      out[j] = result.value;
      this.fillCache(cacheKeys[j] as string, result.value);
    });
    return out;
  }

  // ---------------------------------------------------------------- state and helpers

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

  private checkOpen(): void {
    if (this.closed) throw proxyError(ProxyErrorCode.Closed, 'the proxy engine is closed');
  }

  private async namespace(nsId: string, forWrite: boolean): Promise<NamespaceEntry> {
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

  private async loadManifest(nsId: string, name: string): Promise<Manifest> {
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
  private async osdStates(): Promise<OsdView> {
    const view = this.osdView;
    if (view === undefined) return this.refreshView();
    if (Date.now() - view.loadedAtMs > this.limits.osdStateTtlMs && this.osdRefresh === undefined)
      this.track(this.refreshView());
    return view;
  }

  private refreshView(): Promise<OsdView> {
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

  /** A live OSD this chunk does not use (nor tried), keeping at most x per node: most free. */
  private replacementOsd(
    view: OsdView,
    policy: Policy,
    tasks: readonly WriteTask[],
    failed: WriteTask,
    tried: ReadonlyMap<number, ReadonlySet<string>>,
  ): string | undefined {
    const used = tried.get(failed.chunkIndex) ?? new Set<string>();
    const perNode = new Map<string, number>();
    for (const t of tasks) {
      if (t === failed || t.chunkIndex !== failed.chunkIndex || t.state === 'failed') continue;
      const nodeId = view.records.get(t.osdId)?.nodeId ?? '';
      perNode.set(nodeId, (perNode.get(nodeId) ?? 0) + t.fragmentIndices.length);
    }
    let best: OsdState | undefined;
    for (const state of this.placementStates(view)) {
      if (!state.alive || state.freeBytes <= 0 || used.has(state.osdId)) continue;
      if ((perNode.get(state.nodeId) ?? 0) + failed.fragmentIndices.length > policy.x) continue;
      if (best === undefined || state.freeBytes > best.freeBytes) best = state;
    }
    return best?.osdId;
  }

  private placementStates(view: OsdView): OsdState[] {
    return view.states.map((s) =>
      this.downOsds.has(s.osdId)
        ? { ...s, alive: false }
        : this.fullOsds.has(s.osdId)
          ? { ...s, freeBytes: 0 }
          : s,
    );
  }

  private osdById(view: OsdView, osdId: string): Osd {
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
  private fragmentReadable(manifest: Manifest, chunkIndex: number, fragmentIndex: number): boolean {
    const osdId = manifest.placement[chunkIndex]?.[fragmentIndex];
    return osdId !== undefined && !this.downOsds.has(osdId);
  }

  private noteOsdError(osdId: string, err: unknown): void {
    const code = isShaleError(err) ? err.code : undefined;
    if (code === AsdErrorCode.NoSpace) this.fullOsds.add(osdId);
    else if (code === undefined || OSD_DOWN_CODES.includes(code)) this.downOsds.add(osdId);
  }

  private noteItemError(
    ctx: ReadContext,
    read: { chunkIndex: number; fragmentIndex: number },
    osdId: string,
    error: ShaleError,
  ): void {
    if (error.code === AsdErrorCode.NotFound) {
      ctx.sawNotFound = true;
      this.noteDamage(ctx, read, osdId, 'not-found');
    } else if (error.code === AsdErrorCode.Corrupt) {
      this.noteDamage(ctx, read, osdId, 'corrupt');
    }
  }

  private noteDamage(
    ctx: ReadContext,
    read: { chunkIndex: number; fragmentIndex: number },
    osdId: string,
    reason: DamagedFragment['reason'],
  ): void {
    if (ctx.damaged.length >= 1024) return;
    ctx.damaged.push({
      nsId: ctx.ns.nsId,
      name: ctx.manifest.name,
      version: ctx.manifest.version,
      chunkIndex: read.chunkIndex,
      fragmentIndex: read.fragmentIndex,
      osdId,
      reason,
    });
  }

  private reportDamage(ctx: ReadContext): void {
    const seen = new Set<string>();
    for (const damage of ctx.damaged) {
      const id = `${damage.chunkIndex}/${damage.fragmentIndex}`;
      if (seen.has(id)) continue;
      seen.add(id);
      this.counters.damagedFragments += 1;
      this.onDamaged?.(damage);
    }
  }

  private fillCache(key: string, value: Buffer): void {
    const cache = this.cache;
    if (cache === undefined || this.cacheFills >= CACHE_FILL_MAX_IN_FLIGHT) return;
    this.cacheFills += 1;
    this.track(
      cache.put(key, value).finally(() => {
        this.cacheFills -= 1;
      }),
    );
  }

  /** Deletes every placed fragment of a manifest's version, then drops them from the cache. */
  private async deleteObjectFragments(ns: NamespaceInfo, manifest: Manifest): Promise<number> {
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
  private async deleteFragmentsBestEffort(
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
  private track(task: Promise<unknown>): void {
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

/** Resolves when `work` settles or after `ms`, whichever is first (never rejects). */
async function settledWithin(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

function objectAad(nsId: string, name: string): Buffer {
  return Buffer.from(`${nsId}/${name}`, 'latin1');
}

function cacheKey(nsId: string, name: string): string {
  return `${nsId}/${name}`;
}

function newReadContext(ns: NamespaceInfo, manifest: Manifest, hedging = true): ReadContext {
  return {
    hedging,
    hedged: 0,
    ns,
    manifest,
    sawNotFound: false,
    usedParity: false,
    damaged: [],
    unavailable: new Set(),
  };
}

function tryDecode(item: KeyValue | undefined): Manifest | undefined {
  if (item === undefined) return undefined;
  try {
    return decodeManifest(item.value);
  } catch (err) {
    if (isShaleError(err, ProxyErrorCode.CorruptManifest)) return undefined;
    throw err;
  }
}

function isGoodFragment(value: Buffer, chunk: ChunkInfo, fragmentIndex: number): boolean {
  return (
    value.length === chunk.fragmentSizeBytes && crc32c(value) === chunk.fragmentCrcs[fragmentIndex]
  );
}

function placementOf(
  tasks: readonly WriteTask[],
  chunks: number,
  total: number,
): (string | undefined)[][] {
  const placement = Array.from({ length: chunks }, () =>
    new Array<string | undefined>(total).fill(undefined),
  );
  for (const task of tasks) {
    if (task.state !== 'durable') continue;
    for (const f of task.fragmentIndices)
      (placement[task.chunkIndex] as (string | undefined)[])[f] = task.osdId;
  }
  return placement;
}

function writtenOf(
  tasks: readonly WriteTask[],
): { chunkIndex: number; fragmentIndex: number; osdId: string }[] {
  return tasks
    .filter((t) => t.state === 'durable')
    .flatMap((t) =>
      t.fragmentIndices.map((fragmentIndex) => ({
        chunkIndex: t.chunkIndex,
        fragmentIndex,
        osdId: t.osdId,
      })),
    );
}
