import {
  ifUnchanged,
  ifValueEquals,
  type KeyValue,
  KvErrorCode,
  type KvStore,
} from '@shale/arakoon-kv';
import { errorMessage, isShaleError } from '@shale/common';
import { chunkCount } from './chunking.js';
import { mapWithConcurrency } from './concurrency.js';
import {
  CAS_MAX_ATTEMPTS,
  CODEC_BLOCK_SIZE_BYTES,
  PUT_COMPLETE_GRACE_MAX_MS,
  PUT_COMPLETE_GRACE_RATIO,
  PUT_REROUTE_MAX_ATTEMPTS,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { OsdState } from './fragment-placement.js';
import { Limiter } from './limiter.js';
import { decodeManifest, encodeManifest, type Manifest } from './manifest.js';
import { ManifestCommitter } from './manifest-commit.js';
import type { NamespaceInfo } from './namespace-manager.js';
import { type ChunkInfo, encodeObject, objectInfoOf } from './object-codec.js';
import {
  checkNamespaceId,
  checkObjectName,
  decodeEpoch,
  encodeEpoch,
  fragmentKey,
  nsKeys,
} from './object-keys.js';
import { choosePolicy } from './policy.js';
import type { Policy } from './preset.js';
import { cacheKey, type OsdView, objectAad, type ProxyEngineState } from './proxy-engine-state.js';
import type { PutOptions, PutResult } from './proxy-types.js';

/**
 * The proxy engine's write path: putObject (encode, fragment writes with rerouting, the
 * manifest commit, late fragments recorded after the acknowledgement) and deleteObject.
 * State shared with the read path lives in ProxyEngineState (proxy-engine-state.ts); the
 * KV side of a commit in ManifestCommitter (manifest-commit.ts).
 */

type WriteState = 'queued' | 'sending' | 'durable' | 'failed';

interface WriteTask {
  readonly chunkIndex: number;
  /** Where the fragments go; changes when a failed write is rerouted. */
  osdId: string;
  readonly fragmentIndices: number[];
  values: Buffer[];
  state: WriteState;
}

export class ProxyWriter {
  private readonly putLimiter: Limiter;
  private readonly committer: ManifestCommitter;

  constructor(private readonly state: ProxyEngineState) {
    const { limits, kv, log } = state;
    this.putLimiter = new Limiter(limits.putMaxConcurrent, limits.putMaxQueued, 'puts');
    this.committer = new ManifestCommitter(kv, {
      knownMaxEntries: limits.manifestCacheMaxEntries,
      log,
      namespaceGone: async (nsId) => {
        this.state.nsCache.delete(nsId);
        await this.state.namespace(nsId, true); // throws NOT_FOUND or DELETING
        throw proxyError(ProxyErrorCode.Fenced, `namespace ${nsId} has no epoch`);
      },
    });
  }

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
    this.state.checkOpen();
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
        await this.state.refreshView();
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
    const { info: ns, preset } = await this.state.namespace(nsId, true);
    const view = await this.state.osdStates();
    const minK = Math.min(...preset.policies.map((p) => p.k));
    const chunks = chunkCount(data.length, minK, preset.fragmentSizeMaxBytes);
    const choice = choosePolicy(preset, this.state.placementStates(view), {
      random: this.state.random,
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
      ...(this.state.keyProvider === undefined ? {} : { keyProvider: this.state.keyProvider }),
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
    const allDone = mapWithConcurrency(
      tasks,
      this.state.limits.putWriteConcurrency,
      async (task) => {
        task.state = 'sending';
        for (let attempt = 0; ; attempt++) {
          const items = task.fragmentIndices.map((f, j) => ({
            key: fragmentKey(nsId, version, task.chunkIndex, f),
            value: task.values[j] as Buffer,
            crc32c: (info.chunks[task.chunkIndex] as ChunkInfo).fragmentCrcs[f] as number,
          }));
          try {
            await this.state.osdById(view, task.osdId).putFragments(items, {
              deadlineMs: this.state.limits.fragmentWriteDeadlineMs,
            });
            task.state = 'durable';
            this.state.counters.fragmentsWritten += items.length;
            break;
          } catch (err) {
            this.state.counters.fragmentWriteFailures += items.length;
            this.state.noteOsdError(task.osdId, err);
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
      },
    ).then(() => {
      wake();
    });
    for (;;) {
      const decision = decide();
      if (decision === 'fail') {
        // Durability: nothing acknowledged; what was written is deleted (best effort).
        await allDone;
        await this.state.deleteFragmentsBestEffort(view, nsId, version, writtenOf(tasks));
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
    const backgroundFull = this.state.background.size >= this.state.limits.backgroundMaxTasks;
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
      if (isShaleError(err, ProxyErrorCode.Fenced)) this.state.counters.fencedCommits += 1;
      // Durability: not acknowledged; our fragments are deleted now and as late writes land.
      this.state.track(
        allDone.then(() =>
          this.state.deleteFragmentsBestEffort(view, nsId, version, writtenOf(tasks)),
        ),
      );
      await this.state.deleteFragmentsBestEffort(view, nsId, version, writtenOf(tasks));
      throw err;
    }
    this.state.counters.puts += 1;
    this.state.counters.bytesIn += data.length;
    this.state.counters.manifestsCommitted += 1;
    this.state.counters.manifestBytesWritten += bytes.length;
    this.state.manifestCache.set(cacheKey(nsId, name), manifest);
    if (previous !== undefined && previous.version !== version) {
      const old = previous;
      this.state.track(this.state.deleteObjectFragments(ns, old));
    }
    if (lateTasks.length > 0) {
      this.state.track(
        allDone.then(() => this.completeManifest(ns, manifest, lateTasks, writerEpoch)),
      );
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
    const view = await this.state.osdStates();
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
      this.state.counters.manifestUpdates += 1;
      this.state.counters.manifestBytesWritten += result.bytes ?? 0;
      if (result.manifest !== undefined)
        this.state.manifestCache.set(cacheKey(ns.nsId, acked.name), result.manifest);
    } else if (result.outcome === 'contention') {
      this.state.log(`manifest ${ns.nsId}/${acked.name}: late fragments not recorded (contention)`);
    } else {
      // Superseded (nobody's fragments) or fenced since (the manifest keeps its gaps,
      // maintenance rewrites them): delete them.
      await this.state.deleteFragmentsBestEffort(view, ns.nsId, acked.version, writtenOf(late));
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
    this.state.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    const { info: ns } = await this.state.namespace(nsId, true);
    const key = nsKeys.manifest(nsId, name);
    const epochKey = nsKeys.epoch(nsId);
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      const item = await this.state.kv.get(key);
      const manifest = tryDecode(item);
      let result: Awaited<ReturnType<KvStore['txn']>>;
      try {
        result = await this.state.kv.txn({
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
        this.state.manifestCache.delete(cacheKey(nsId, name));
        this.committer.forgetObject(nsId, name);
        if (item === undefined) return { deleted: false };
        this.state.counters.deletes += 1;
        // Durability: the manifest delete is committed; the object is gone for readers.
        if (manifest !== undefined) await this.state.deleteObjectFragments(ns, manifest);
        return { deleted: true };
      }
      const first = result.results[0];
      const epochItem = first?.type === 'get' ? first.item : undefined;
      const epoch = epochItem === undefined ? undefined : decodeEpoch(epochItem.value);
      if (epoch !== options.writerEpoch) {
        this.state.counters.fencedCommits += 1;
        throw proxyError(
          ProxyErrorCode.Fenced,
          `namespace ${nsId} is at epoch ${epoch}, the writer holds ${options.writerEpoch}`,
          { details: { nsId, epoch: String(epoch) } },
        );
      }
    }
    throw proxyError(ProxyErrorCode.CommitUnknown, `delete ${nsId}/${name}: no definite outcome`);
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
    for (const state of this.state.placementStates(view)) {
      if (!state.alive || state.freeBytes <= 0 || used.has(state.osdId)) continue;
      if ((perNode.get(state.nodeId) ?? 0) + failed.fragmentIndices.length > policy.x) continue;
      if (best === undefined || state.freeBytes > best.freeBytes) best = state;
    }
    return best?.osdId;
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

function tryDecode(item: KeyValue | undefined): Manifest | undefined {
  if (item === undefined) return undefined;
  try {
    return decodeManifest(item.value);
  } catch (err) {
    if (isShaleError(err, ProxyErrorCode.CorruptManifest)) return undefined;
    throw err;
  }
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
