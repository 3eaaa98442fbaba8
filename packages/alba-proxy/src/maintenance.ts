import { ifAbsent, ifUnchanged, type KeyValue, type KvStore, type TxnOp } from '@shale/arakoon-kv';
import { AsdErrorCode } from '@shale/asd';
import { assert, crc32c, errorMessage, isShaleError } from '@shale/common';
import { BackendRegistry, type OsdRecord } from './backend-registry.js';
import { rebuildFragments } from './chunk-format.js';
import { mapWithConcurrency } from './concurrency.js';
import {
  FRAGMENT_READ_DEADLINE_MS,
  FRAGMENT_WRITE_DEADLINE_MS,
  MAINTENANCE_CAS_ATTEMPTS,
  MAINTENANCE_MANIFEST_PAGE,
  MAINTENANCE_MAX_REPORTED_UNRECOVERABLE,
  MAINTENANCE_ORPHAN_GRACE_MS,
  MAINTENANCE_ORPHAN_LIST_KEYS,
  MAINTENANCE_OSD_DOWN_GRACE_MS,
  MAINTENANCE_REPAIR_BYTES_PER_SEC,
  MAINTENANCE_REPAIR_CONCURRENCY,
  MAINTENANCE_SCAN_BATCH_OBJECTS,
  OSD_ADMIN_DEADLINE_MS,
  OSD_PROBE_DEADLINE_MS,
} from './constants.js';
import { ProxyErrorCode } from './errors.js';
import { decodeManifest, encodeManifest, type Manifest } from './manifest.js';
import { type NamespaceInfo, NamespaceManager } from './namespace-manager.js';
import { type ChunkInfo, chunkLayout } from './object-codec.js';
import { fragmentKey, nsKeys } from './object-keys.js';
import type { Osd } from './osd.js';
import { defaultOsdFactory, type OsdFactory, OsdPool } from './osd-pool.js';
import type { RandomSource } from './seeded-random.js';
import { TokenBucket } from './token-bucket.js';

/**
 * Maintenance of one backend: repair, completion and orphan collection. One pass:
 *
 *   probe OSDs -> scan (namespace by namespace, manifest by manifest, in key order, from the
 *   stored progress): classify every chunk's fragments (healthy / missing / lost / bad) ->
 *   per batch: repair the most endangered objects first (read k good fragments ->
 *   rebuildFragments -> write on live OSDs -> manifest txn conditional on the manifest being
 *   unchanged -> delete the old copies) -> save progress -> ... -> orphans (list each OSD's
 *   fragment keys; those in no current manifest for grace ms are deleted) -> done.
 *
 * Maintenance is not a writer: it never compares on the namespace epoch, only on the manifest
 * key (modRevision), so it can neither resurrect an overwritten or deleted object nor undo a
 * writer's commit. It needs no encryption key: it moves and rebuilds stored bytes only.
 * Run one maintenance process per backend.
 */

export interface MaintenanceLimits {
  /** Bytes read plus written per second (fragments; manifests are not counted). */
  readonly repairBytesPerSec: number;
  /** How long a fragment must stay in no manifest before it is deleted. */
  readonly orphanGraceMs: number;
  /** How long an active OSD must stay silent before its fragments count as lost. */
  readonly osdDownGraceMs: number;
  readonly repairConcurrency: number;
  readonly scanBatchObjects: number;
  readonly orphanListKeys: number;
  readonly osdProbeDeadlineMs: number;
  readonly fragmentReadDeadlineMs: number;
  readonly fragmentWriteDeadlineMs: number;
}

export const DEFAULT_MAINTENANCE_LIMITS: MaintenanceLimits = {
  repairBytesPerSec: MAINTENANCE_REPAIR_BYTES_PER_SEC,
  orphanGraceMs: MAINTENANCE_ORPHAN_GRACE_MS,
  osdDownGraceMs: MAINTENANCE_OSD_DOWN_GRACE_MS,
  repairConcurrency: MAINTENANCE_REPAIR_CONCURRENCY,
  scanBatchObjects: MAINTENANCE_SCAN_BATCH_OBJECTS,
  orphanListKeys: MAINTENANCE_ORPHAN_LIST_KEYS,
  osdProbeDeadlineMs: OSD_PROBE_DEADLINE_MS,
  fragmentReadDeadlineMs: FRAGMENT_READ_DEADLINE_MS,
  fragmentWriteDeadlineMs: FRAGMENT_WRITE_DEADLINE_MS,
};

export interface MaintenanceOptions {
  readonly kv: KvStore;
  readonly backendId: string;
  readonly osdFactory?: OsdFactory;
  /** Tie-breaks between equally free OSDs when placing rebuilt fragments. Default Math.random. */
  readonly random?: RandomSource;
  readonly limits?: Partial<MaintenanceLimits>;
  readonly log?: (line: string) => void;
  /** Wall clock for grace periods (first-seen times are stored in the KV). */
  readonly now?: () => number;
}

export interface PassOptions {
  /** Read every placed fragment and check its CRC32C (costly: reads all data). */
  readonly verify?: boolean;
  /** Stop the scan after this many objects (progress is saved; the next pass resumes). */
  readonly maxObjects?: number;
  /** Collect orphans once the scan is complete (default true). */
  readonly collectOrphans?: boolean;
}

export interface UnrecoverableObject {
  readonly nsId: string;
  readonly name: string;
  readonly version: number;
  readonly chunkIndex: number;
  readonly healthyFragments: number;
  readonly k: number;
}

export interface PassSummary {
  objectsScanned: number;
  /** Objects with at least one fragment to rebuild when scanned. */
  objectsDamaged: number;
  /** Fragments rebuilt that were lost (OSD gone), absent or corrupt. */
  fragmentsRepaired: number;
  /** Fragments rebuilt that the manifest recorded as missing (c < k + m at put time). */
  fragmentsCompleted: number;
  /** Fragments the verify pass found absent or failing their CRC32C. */
  fragmentsBad: number;
  orphansDeleted: number;
  /** Orphan candidates still inside their grace period. */
  orphansPending: number;
  unrecoverable: UnrecoverableObject[];
  unrecoverableCount: number;
  /** Fragment bytes read plus written. */
  bytesMoved: number;
  durationMs: number;
  /** False when the pass stopped early (maxObjects); the next pass resumes. */
  complete: boolean;
  /** Where this pass started, when it resumed a stored progress. */
  resumedFrom?: { nsId: string; name: string };
}

export interface MaintenanceStats {
  passes: number;
  objectsScanned: number;
  fragmentsRepaired: number;
  fragmentsCompleted: number;
  fragmentsBad: number;
  orphansDeleted: number;
  unrecoverable: number;
  bytesMoved: number;
  manifestUpdates: number;
  manifestConflicts: number;
}

/** Stored at /shale/maintenance/<backend>/progress. */
interface Progress {
  readonly phase: 'scan' | 'orphans';
  readonly nsId: string;
  /** Scan: the last object whose repair is done (resume after it). */
  readonly name: string;
  readonly verify: boolean;
}

interface OsdStatus {
  readonly record: OsdRecord;
  alive: boolean;
  freeBytes: number;
  /** Active and silent for at most osdDownGraceMs: fragments unavailable, not lost. */
  lost: boolean;
}

type FragmentHealth = 'healthy' | 'missing' | 'lost' | 'bad' | 'unavailable';

interface DamagedObject {
  readonly nsId: string;
  readonly name: string;
  readonly version: number;
  /** Lowest (healthy - k) over the chunks: repaired lowest first. */
  readonly danger: number;
  /** `${chunk}/${fragment}/${osd}` found bad by verify. */
  readonly bad: ReadonlySet<string>;
}

/** A rebuilt fragment written to an OSD, not yet in the manifest. */
interface RepairWrite {
  readonly chunkIndex: number;
  readonly fragmentIndex: number;
  readonly osdId: string;
  /** The manifest had it missing (completion) rather than placed (repair). */
  readonly completed: boolean;
}

const ORPHAN_KEY = /^([0-9a-f]{32})\/([0-9a-f]{16})\/(\d+)\/(\d+)$/;
const NS_PREFIX = /^([0-9a-f]{32})\//;
/** Transport failures: the OSD is treated as not answering for the rest of the pass. */
const OSD_DOWN_CODES: readonly string[] = [
  AsdErrorCode.Unavailable,
  AsdErrorCode.DeadlineExceeded,
  AsdErrorCode.RpcFailed,
  AsdErrorCode.Closed,
  AsdErrorCode.IoError,
];

export const maintenanceKeys = {
  prefix: (backendId: string) => Buffer.from(`/shale/maintenance/${backendId}/`),
  progress: (backendId: string) => Buffer.from(`/shale/maintenance/${backendId}/progress`),
  osdDown: (backendId: string, osdId: string) =>
    Buffer.from(`/shale/maintenance/${backendId}/osd-down/${osdId}`),
  /** First-seen time of an orphan: <fragment key>/<osd id> (so one namespace is one prefix). */
  orphan: (backendId: string, key: string, osdId: string) =>
    Buffer.from(`/shale/maintenance/${backendId}/orphans/${key}/${osdId}`, 'latin1'),
  orphansPrefix: (backendId: string, nsId?: string) =>
    Buffer.from(`/shale/maintenance/${backendId}/orphans/${nsId === undefined ? '' : `${nsId}/`}`),
};

export class Maintenance {
  private readonly kv: KvStore;
  private readonly backendId: string;
  private readonly pool: OsdPool;
  private readonly registry: BackendRegistry;
  private readonly namespaces: NamespaceManager;
  private readonly random: RandomSource;
  private readonly limits: MaintenanceLimits;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly bucket: TokenBucket;
  private osds = new Map<string, OsdStatus>();
  private running = false;
  private summary: PassSummary = emptySummary();
  private readonly counters: MaintenanceStats = {
    passes: 0,
    objectsScanned: 0,
    fragmentsRepaired: 0,
    fragmentsCompleted: 0,
    fragmentsBad: 0,
    orphansDeleted: 0,
    unrecoverable: 0,
    bytesMoved: 0,
    manifestUpdates: 0,
    manifestConflicts: 0,
  };

  constructor(options: MaintenanceOptions) {
    this.kv = options.kv;
    this.backendId = options.backendId;
    this.pool = new OsdPool(options.osdFactory ?? defaultOsdFactory);
    this.registry = new BackendRegistry(this.kv);
    this.namespaces = new NamespaceManager(this.kv, this.registry, {
      osdFor: (record) => this.pool.get(record),
    });
    this.random = options.random ?? Math.random;
    this.limits = { ...DEFAULT_MAINTENANCE_LIMITS, ...options.limits };
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.now = options.now ?? Date.now;
    this.bucket = new TokenBucket(this.limits.repairBytesPerSec);
  }

  stats(): MaintenanceStats {
    return { ...this.counters };
  }

  close(): void {
    this.pool.close();
    this.namespaces.close();
  }

  /** The stored progress of an unfinished pass, if any. */
  async progress(): Promise<Progress | undefined> {
    const item = await this.kv.get(maintenanceKeys.progress(this.backendId));
    return item === undefined ? undefined : decodeProgress(item.value);
  }

  /**
   * One pass: scan and repair (resuming a stored progress), then orphan collection. A pass
   * that stops early (maxObjects) saves its progress and reports complete: false.
   */
  async runPass(options: PassOptions = {}): Promise<PassSummary> {
    assert(!this.running, 'one maintenance pass at a time');
    this.running = true;
    const startMs = Date.now();
    this.summary = emptySummary();
    try {
      await this.probeOsds();
      const stored = await this.progress();
      const verify = stored?.verify ?? options.verify === true;
      if (stored !== undefined && stored.phase === 'scan')
        this.summary.resumedFrom = { nsId: stored.nsId, name: stored.name };
      let complete = true;
      if (stored === undefined || stored.phase === 'scan') {
        complete = await this.scanPhase(stored, verify, options.maxObjects ?? Infinity);
      }
      if (complete && options.collectOrphans !== false) {
        await this.saveProgress({ phase: 'orphans', nsId: '', name: '', verify });
        await this.orphanPhase();
      }
      if (complete) await this.kv.delete(maintenanceKeys.progress(this.backendId));
      this.summary.complete = complete;
      this.counters.passes += 1;
      return this.summary;
    } finally {
      this.summary.durationMs = Date.now() - startMs;
      this.running = false;
    }
  }

  // ---------------------------------------------------------------- OSD states

  private async probeOsds(): Promise<void> {
    const records = await this.registry.listOsds(this.backendId);
    const nowMs = this.now();
    const next = new Map<string, OsdStatus>();
    await Promise.all(
      records.map(async (record) => {
        let alive = false;
        let freeBytes = 0;
        try {
          const capacity = await this.pool
            .get(record)
            .capacity({ deadlineMs: this.limits.osdProbeDeadlineMs });
          alive = true;
          freeBytes = capacity.freeBytes;
        } catch (err) {
          if (record.state === 'active')
            this.log(`maintenance: OSD ${record.osdId} does not answer: ${errorMessage(err)}`);
        }
        let lost = record.state !== 'active';
        if (record.state === 'active') {
          // First-seen-down times live in the KV so that `--once` runs see the grace expire.
          const key = maintenanceKeys.osdDown(this.backendId, record.osdId);
          const item = await this.kv.get(key);
          if (alive) {
            if (item !== undefined) await this.kv.delete(key);
          } else {
            const since = item === undefined ? undefined : Number(item.value.toString('latin1'));
            if (since === undefined || !Number.isFinite(since))
              await this.kv.put(key, Buffer.from(String(nowMs)));
            lost = nowMs - (since ?? nowMs) >= this.limits.osdDownGraceMs;
          }
        }
        next.set(record.osdId, { record, alive, freeBytes, lost });
      }),
    );
    this.osds = next;
  }

  private osd(osdId: string): Osd | undefined {
    const status = this.osds.get(osdId);
    return status === undefined ? undefined : this.pool.get(status.record);
  }

  private noteOsdError(osdId: string, err: unknown): void {
    const code = isShaleError(err) ? err.code : undefined;
    const status = this.osds.get(osdId);
    if (status !== undefined && (code === undefined || OSD_DOWN_CODES.includes(code)))
      status.alive = false;
  }

  private health(
    manifest: Manifest,
    chunkIndex: number,
    fragmentIndex: number,
    bad: ReadonlySet<string>,
  ): FragmentHealth {
    const osdId = manifest.placement[chunkIndex]?.[fragmentIndex];
    if (osdId === undefined) return 'missing';
    if (bad.has(`${chunkIndex}/${fragmentIndex}/${osdId}`)) return 'bad';
    const status = this.osds.get(osdId);
    if (status === undefined || status.lost) return 'lost';
    return status.alive ? 'healthy' : 'unavailable';
  }

  // ---------------------------------------------------------------- scan and repair

  /** Returns whether the scan reached the end (false: stopped at maxObjects). */
  private async scanPhase(
    stored: Progress | undefined,
    verify: boolean,
    maxObjects: number,
  ): Promise<boolean> {
    const namespaces = (await this.allNamespaces()).filter(
      (ns) =>
        ns.backendId === this.backendId &&
        ns.state === 'active' &&
        (stored === undefined || ns.nsId >= stored.nsId),
    );
    let batch: DamagedObject[] = [];
    let batchScanned = 0;
    let last: { nsId: string; name: string } | undefined;
    const flush = async (): Promise<void> => {
      batch.sort((a, b) => a.danger - b.danger);
      const work = batch;
      batch = [];
      batchScanned = 0;
      await mapWithConcurrency(work, this.limits.repairConcurrency, (damaged) =>
        this.repairObject(damaged),
      );
      // Durability: every repair of the batch is committed (or given up); resume after `last`.
      if (last !== undefined) await this.saveProgress({ phase: 'scan', ...last, verify });
    };
    for (const ns of namespaces) {
      const after = stored !== undefined && ns.nsId === stored.nsId ? stored.name : undefined;
      const prefix = nsKeys.manifestsPrefix(ns.nsId);
      const end = Buffer.from(prefix);
      end[end.length - 1] = (end[end.length - 1] as number) + 1;
      let start =
        after === undefined
          ? prefix
          : Buffer.concat([nsKeys.manifest(ns.nsId, after), Buffer.from([0])]);
      for (;;) {
        const page = await this.kv.range({ start, end }, { limit: MAINTENANCE_MANIFEST_PAGE });
        for (const item of page.items) {
          if (this.summary.objectsScanned >= maxObjects) {
            await flush();
            return false;
          }
          const name = item.key.subarray(prefix.length).toString('latin1');
          const manifest = decodeOrLog(item, this.log);
          this.summary.objectsScanned += 1;
          this.counters.objectsScanned += 1;
          batchScanned += 1;
          last = { nsId: ns.nsId, name };
          if (manifest !== undefined) {
            const damaged = await this.classify(ns.nsId, manifest, verify);
            if (damaged !== undefined) batch.push(damaged);
          }
          if (batchScanned >= this.limits.scanBatchObjects) await flush();
        }
        const lastItem = page.items[page.items.length - 1];
        if (page.continuation === undefined || lastItem === undefined) break;
        start = Buffer.concat([lastItem.key, Buffer.from([0])]);
      }
    }
    await flush();
    return true;
  }

  /** Damage of one object, or undefined when every fragment is healthy (or only unavailable). */
  private async classify(
    nsId: string,
    manifest: Manifest,
    verify: boolean,
  ): Promise<DamagedObject | undefined> {
    const bad = new Set<string>();
    if (verify) await this.verifyObject(nsId, manifest, bad);
    const { k, m } = manifest.info;
    let danger = m;
    let damaged = false;
    for (let c = 0; c < manifest.info.chunks.length; c++) {
      let healthy = 0;
      let unavailable = 0;
      for (let f = 0; f < k + m; f++) {
        const h = this.health(manifest, c, f, bad);
        if (h === 'healthy') healthy += 1;
        else if (h === 'unavailable') unavailable += 1;
        else damaged = true;
      }
      danger = Math.min(danger, healthy - k);
      if (healthy < k && healthy + unavailable >= k)
        this.log(`maintenance: ${nsId}/${manifest.name} chunk ${c} waits for OSDs to return`);
    }
    if (!damaged) return undefined;
    this.summary.objectsDamaged += 1;
    return { nsId, name: manifest.name, version: manifest.version, danger, bad };
  }

  /** Reads every placed fragment of a live OSD whole and checks it; bad ones go to `bad`. */
  private async verifyObject(nsId: string, manifest: Manifest, bad: Set<string>): Promise<void> {
    for (let c = 0; c < manifest.info.chunks.length; c++) {
      const chunk = manifest.info.chunks[c] as ChunkInfo;
      const byOsd = new Map<string, number[]>();
      (manifest.placement[c] ?? []).forEach((osdId, f) => {
        if (osdId === undefined || this.health(manifest, c, f, bad) !== 'healthy') return;
        byOsd.set(osdId, [...(byOsd.get(osdId) ?? []), f]);
      });
      for (const [osdId, indices] of byOsd) {
        const got = await this.readFragments(nsId, manifest, c, osdId, indices);
        indices.forEach((f, j) => {
          const value = got[j];
          if (value === 'unavailable') return;
          if (value === undefined || !isGood(value, chunk, f)) {
            bad.add(`${c}/${f}/${osdId}`);
            this.summary.fragmentsBad += 1;
            this.counters.fragmentsBad += 1;
            this.log(
              `maintenance: ${nsId}/${manifest.name} v${manifest.version} chunk ${c} fragment ${f} on ${osdId} is bad`,
            );
          }
        });
      }
    }
  }

  /**
   * Whole fragments of one chunk from one OSD. Per index: the bytes, undefined when the OSD
   * says not found or corrupt (damage), 'unavailable' when the OSD did not answer.
   */
  private async readFragments(
    nsId: string,
    manifest: Manifest,
    chunkIndex: number,
    osdId: string,
    indices: readonly number[],
  ): Promise<(Buffer | undefined | 'unavailable')[]> {
    const osd = this.osd(osdId);
    if (osd === undefined) return indices.map(() => 'unavailable');
    const chunk = manifest.info.chunks[chunkIndex] as ChunkInfo;
    await this.bucket.take(chunk.fragmentSizeBytes * indices.length);
    this.addBytes(chunk.fragmentSizeBytes * indices.length);
    try {
      const results = await osd.getFragments(
        indices.map((f) => fragmentKey(nsId, manifest.version, chunkIndex, f)),
        { deadlineMs: this.limits.fragmentReadDeadlineMs },
      );
      return results.map((result) => {
        if (result.ok) return result.value;
        if (
          result.error.code === AsdErrorCode.NotFound ||
          result.error.code === AsdErrorCode.Corrupt
        )
          return undefined;
        return 'unavailable';
      });
    } catch (err) {
      this.noteOsdError(osdId, err);
      return indices.map(() => 'unavailable');
    }
  }

  /**
   * Repairs one object: per damaged chunk, k good fragments -> rebuild the others -> write
   * them on live OSDs -> one manifest update for the whole object, conditional on the
   * manifest being unchanged (merged and retried when only the placement changed).
   */
  private async repairObject(damaged: DamagedObject): Promise<void> {
    const { nsId, name } = damaged;
    const key = nsKeys.manifest(nsId, name);
    const item = await this.kv.get(key);
    const manifest = item === undefined ? undefined : decodeOrLog(item, this.log);
    if (item === undefined || manifest === undefined || manifest.version !== damaged.version)
      return; // overwritten or deleted since the scan: the new version is fresh
    const { k, m } = manifest.info;
    const bad = new Set(damaged.bad);
    const writes: RepairWrite[] = [];
    for (let c = 0; c < manifest.info.chunks.length; c++) {
      const chunk = manifest.info.chunks[c] as ChunkInfo;
      const healthOf = (f: number): FragmentHealth => this.health(manifest, c, f, bad);
      const needed = range(k + m).filter((f) => {
        const h = healthOf(f);
        return h === 'missing' || h === 'lost' || h === 'bad';
      });
      if (needed.length === 0) continue;
      // Read healthy fragments, data first, until k are good.
      const fragments: (Buffer | undefined)[] = new Array(k + m).fill(undefined);
      const candidates = range(k + m).filter((f) => healthOf(f) === 'healthy');
      let good = 0;
      let next = 0;
      while (good < k && next < candidates.length) {
        const wave = candidates.slice(next, next + (k - good));
        next += wave.length;
        const byOsd = new Map<string, number[]>();
        for (const f of wave) {
          const osdId = manifest.placement[c]?.[f] as string;
          byOsd.set(osdId, [...(byOsd.get(osdId) ?? []), f]);
        }
        for (const [osdId, indices] of byOsd) {
          const got = await this.readFragments(nsId, manifest, c, osdId, indices);
          indices.forEach((f, j) => {
            const value = got[j];
            if (value instanceof Buffer && isGood(value, chunk, f)) {
              fragments[f] = value;
              good += 1;
            } else if (value !== 'unavailable') {
              bad.add(`${c}/${f}/${osdId}`);
              needed.push(f);
              this.summary.fragmentsBad += 1;
              this.counters.fragmentsBad += 1;
            }
          });
        }
      }
      if (good < k) {
        this.reportUnrecoverable({
          nsId,
          name,
          version: manifest.version,
          chunkIndex: c,
          healthyFragments: good,
          k,
        });
        continue;
      }
      // Place what can be placed now; the rest waits for the next pass.
      const targets = this.placeTargets(manifest, c, needed, bad);
      if (targets.length === 0) continue;
      const { rebuilt } = await rebuildFragments(
        chunkLayout(manifest.info, c),
        fragments,
        chunk.fragmentCrcs,
        targets.map((t) => t.fragmentIndex),
      );
      const byOsd = new Map<string, { f: number; value: Buffer }[]>();
      targets.forEach((t, i) => {
        byOsd.set(t.osdId, [
          ...(byOsd.get(t.osdId) ?? []),
          { f: t.fragmentIndex, value: rebuilt[i] as Buffer },
        ]);
      });
      for (const [osdId, items] of byOsd) {
        const osd = this.osd(osdId) as Osd;
        const bytes = items.reduce((n, i) => n + i.value.length, 0);
        await this.bucket.take(bytes);
        this.addBytes(bytes);
        try {
          await osd.putFragments(
            items.map((i) => ({
              key: fragmentKey(nsId, manifest.version, c, i.f),
              value: i.value,
              crc32c: chunk.fragmentCrcs[i.f] as number,
            })),
            { deadlineMs: this.limits.fragmentWriteDeadlineMs },
          );
          for (const i of items)
            writes.push({
              chunkIndex: c,
              fragmentIndex: i.f,
              osdId,
              completed: manifest.placement[c]?.[i.f] === undefined,
            });
        } catch (err) {
          this.noteOsdError(osdId, err);
          this.log(
            `maintenance: writing ${items.length} fragment(s) to ${osdId} failed: ${errorMessage(err)}`,
          );
        }
      }
    }
    if (writes.length === 0) return;
    await this.commitRepair(nsId, manifest, item, writes);
  }

  /**
   * A live OSD per fragment to rebuild: distinct from every OSD of the chunk's other
   * fragments, at most x per node, most free space first (random among equals); the OSD of a
   * bad copy only as a last resort (then the good bytes overwrite it in place, same key).
   */
  private placeTargets(
    manifest: Manifest,
    chunkIndex: number,
    needed: readonly number[],
    bad: ReadonlySet<string>,
  ): { fragmentIndex: number; osdId: string }[] {
    const { k, m } = manifest.info;
    const row = manifest.placement[chunkIndex] ?? [];
    const used = new Set<string>();
    const perNode = new Map<string, number>();
    const neededSet = new Set(needed);
    for (let f = 0; f < k + m; f++) {
      const osdId = row[f];
      if (osdId === undefined || neededSet.has(f)) continue;
      used.add(osdId);
      const nodeId = this.osds.get(osdId)?.record.nodeId ?? '';
      perNode.set(nodeId, (perNode.get(nodeId) ?? 0) + 1);
    }
    const size = (manifest.info.chunks[chunkIndex] as ChunkInfo).fragmentSizeBytes;
    const out: { fragmentIndex: number; osdId: string }[] = [];
    for (const f of [...neededSet].sort((a, b) => a - b)) {
      const badOsd =
        row[f] !== undefined && bad.has(`${chunkIndex}/${f}/${row[f]}`) ? row[f] : undefined;
      let best: OsdStatus | undefined;
      let bestScore = -Infinity;
      for (const status of this.osds.values()) {
        const osdId = status.record.osdId;
        if (!status.alive || status.record.state !== 'active' || status.freeBytes < size) continue;
        if (used.has(osdId)) continue;
        if ((perNode.get(status.record.nodeId) ?? 0) >= manifest.policy.x) continue;
        // Prefer OSDs the chunk does not use at all; a bad copy's OSD last.
        const score = (osdId === badOsd ? 0 : 2 ** 52) + status.freeBytes + this.random();
        if (score > bestScore) {
          best = status;
          bestScore = score;
        }
      }
      if (best === undefined) {
        this.log(
          `maintenance: ${manifest.name} chunk ${chunkIndex} fragment ${f}: no live OSD fits (x = ${manifest.policy.x}); waiting`,
        );
        continue;
      }
      used.add(best.record.osdId);
      perNode.set(best.record.nodeId, (perNode.get(best.record.nodeId) ?? 0) + 1);
      best.freeBytes -= size;
      out.push({ fragmentIndex: f, osdId: best.record.osdId });
    }
    return out;
  }

  private async commitRepair(
    nsId: string,
    scanned: Manifest,
    scannedItem: KeyValue,
    writes: readonly RepairWrite[],
  ): Promise<void> {
    const key = nsKeys.manifest(nsId, scanned.name);
    let item: KeyValue | undefined = scannedItem;
    let current: Manifest | undefined = scanned;
    for (let attempt = 0; attempt < MAINTENANCE_CAS_ATTEMPTS; attempt++) {
      if (item === undefined || current === undefined || current.version !== scanned.version) break;
      const placement = current.placement.map((row) => [...row]);
      const recorded: RepairWrite[] = [];
      for (const w of writes) {
        const row = placement[w.chunkIndex] as (string | undefined)[];
        // Only where the fragment is still as scanned: a writer's late record wins.
        if (row[w.fragmentIndex] !== scanned.placement[w.chunkIndex]?.[w.fragmentIndex]) continue;
        row[w.fragmentIndex] = w.osdId;
        recorded.push(w);
      }
      const updated: Manifest = { ...current, placement };
      // The compare is on the manifest key only (modRevision): maintenance is not the writer,
      // and an overwrite or delete since the read makes it fail, so nothing is resurrected.
      const result = await this.kv.txn({
        compares: [ifUnchanged(key, item)],
        success: [{ type: 'put', key, value: encodeManifest(updated) }],
        failure: [{ type: 'get', key }],
      });
      if (result.succeeded) {
        // Durability: the manifest names the rebuilt fragments, each fsynced on its OSD.
        this.counters.manifestUpdates += 1;
        for (const w of recorded) {
          if (w.completed) {
            this.summary.fragmentsCompleted += 1;
            this.counters.fragmentsCompleted += 1;
          } else {
            this.summary.fragmentsRepaired += 1;
            this.counters.fragmentsRepaired += 1;
          }
        }
        const stale = writes.filter((w) => !recorded.includes(w));
        await this.deleteBestEffort(nsId, scanned.version, stale, updated);
        // The replaced copies (lost, bad) on OSDs that still answer: best effort; the rest
        // become orphans for the orphan phase.
        const replaced = recorded.flatMap((w) => {
          const old = scanned.placement[w.chunkIndex]?.[w.fragmentIndex];
          return old === undefined || old === w.osdId
            ? []
            : [{ chunkIndex: w.chunkIndex, fragmentIndex: w.fragmentIndex, osdId: old }];
        });
        await this.deleteBestEffort(nsId, scanned.version, replaced, updated);
        return;
      }
      this.counters.manifestConflicts += 1;
      const first = result.results[0];
      item = first?.type === 'get' ? first.item : undefined;
      current = item === undefined ? undefined : decodeOrLog(item, this.log);
    }
    // Overwritten, deleted, or contention: what we wrote is nobody's, unless the current
    // manifest (same version) names that very copy.
    await this.deleteBestEffort(
      nsId,
      scanned.version,
      writes,
      current?.version === scanned.version ? current : undefined,
    );
  }

  /** Deletes fragment copies unless `keep` (a manifest of the same version) names them. */
  private async deleteBestEffort(
    nsId: string,
    version: number,
    copies: readonly { chunkIndex: number; fragmentIndex: number; osdId: string }[],
    keep: Manifest | undefined,
  ): Promise<void> {
    const byOsd = new Map<string, Buffer[]>();
    for (const c of copies) {
      if (keep?.placement[c.chunkIndex]?.[c.fragmentIndex] === c.osdId) continue;
      if (this.osds.get(c.osdId)?.alive !== true) continue;
      byOsd.set(c.osdId, [
        ...(byOsd.get(c.osdId) ?? []),
        fragmentKey(nsId, version, c.chunkIndex, c.fragmentIndex),
      ]);
    }
    for (const [osdId, keys] of byOsd) {
      try {
        await (this.osd(osdId) as Osd).deleteFragments(keys, { deadlineMs: OSD_ADMIN_DEADLINE_MS });
      } catch (err) {
        this.noteOsdError(osdId, err);
        this.log(
          `maintenance: deleting ${keys.length} old copies on ${osdId} failed (orphans now): ${errorMessage(err)}`,
        );
      }
    }
  }

  private reportUnrecoverable(object: UnrecoverableObject): void {
    this.summary.unrecoverableCount += 1;
    this.counters.unrecoverable += 1;
    if (this.summary.unrecoverable.length < MAINTENANCE_MAX_REPORTED_UNRECOVERABLE)
      this.summary.unrecoverable.push(object);
    this.log(
      `maintenance: UNRECOVERABLE now: ${object.nsId}/${object.name} v${object.version} chunk ${object.chunkIndex} has ${object.healthyFragments} good fragments, needs k = ${object.k}; nothing written`,
    );
  }

  // ---------------------------------------------------------------- orphans

  /**
   * Orphans: a fragment key on an OSD that no current manifest names (with that OSD), in an
   * active namespace of the backend, or any fragment of a namespace that has no record. The
   * first time one is seen is stored in the KV; it is deleted once now - firstSeen >= grace.
   * Namespaces being deleted are left to namespace deletion.
   */
  private async orphanPhase(): Promise<void> {
    const all = await this.allNamespaces();
    const known = new Map(all.map((ns) => [ns.nsId, ns]));
    const confirmed = new Set<string>();
    for (const ns of all) {
      if (ns.backendId !== this.backendId || ns.state !== 'active') continue;
      await this.orphansOfNamespace(ns.nsId, confirmed);
    }
    await this.orphansOfUnknownNamespaces(known, confirmed);
    // First-seen records not confirmed this pass: the fragment became live or is gone.
    const prefix = maintenanceKeys.orphansPrefix(this.backendId);
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix },
        continuation === undefined ? {} : { continuation },
      );
      const stale = page.items.filter((i) => !confirmed.has(i.key.toString('latin1')));
      await this.kvDeleteMany(stale.map((i) => i.key));
      continuation = page.continuation;
    } while (continuation !== undefined);
  }

  private listableOsds(): OsdStatus[] {
    return [...this.osds.values()].filter((s) => s.alive);
  }

  private async orphansOfNamespace(nsId: string, confirmed: Set<string>): Promise<void> {
    const cursors = new Map<string, Buffer | undefined>(
      this.listableOsds().map((s) => [s.record.osdId, undefined]),
    );
    const prefix = Buffer.from(`${nsId}/`, 'latin1');
    while (cursors.size > 0) {
      // One window: a page of keys per OSD, then every manifest of the namespace.
      const candidates = new Map<string, { osdId: string; key: string }>();
      for (const [osdId, startAfter] of [...cursors]) {
        let page: { keys: Buffer[]; more: boolean };
        try {
          page = await (this.osd(osdId) as Osd).listFragments(
            prefix,
            startAfter,
            this.limits.orphanListKeys,
            {
              deadlineMs: OSD_ADMIN_DEADLINE_MS,
            },
          );
        } catch (err) {
          this.noteOsdError(osdId, err);
          cursors.delete(osdId);
          continue;
        }
        for (const k of page.keys) {
          const key = k.toString('latin1');
          if (ORPHAN_KEY.test(key)) candidates.set(`${key}/${osdId}`, { osdId, key });
        }
        const lastKey = page.keys[page.keys.length - 1];
        if (!page.more || lastKey === undefined) cursors.delete(osdId);
        else cursors.set(osdId, lastKey);
      }
      if (candidates.size === 0) continue;
      // Manifests are read after the listing: a fragment committed before its key was listed
      // is seen live here; one committed later is covered by the grace period.
      let continuation: Buffer | undefined;
      do {
        const page = await this.kv.range(
          { prefix: nsKeys.manifestsPrefix(nsId) },
          continuation === undefined
            ? { limit: MAINTENANCE_MANIFEST_PAGE }
            : { limit: MAINTENANCE_MANIFEST_PAGE, continuation },
        );
        for (const item of page.items) {
          const manifest = decodeOrLog(item, this.log);
          if (manifest === undefined) continue;
          manifest.placement.forEach((row, c) => {
            row.forEach((osdId, f) => {
              if (osdId === undefined) return;
              const key = fragmentKey(nsId, manifest.version, c, f).toString('latin1');
              candidates.delete(`${key}/${osdId}`);
            });
          });
        }
        continuation = page.continuation;
      } while (continuation !== undefined);
      await this.judgeOrphans(nsId, [...candidates.values()], confirmed, async () => true);
    }
  }

  /** Fragments of namespaces with no record at all (deleted, or never created). */
  private async orphansOfUnknownNamespaces(
    known: ReadonlyMap<string, NamespaceInfo>,
    confirmed: Set<string>,
  ): Promise<void> {
    for (const status of this.listableOsds()) {
      const osdId = status.record.osdId;
      let startAfter: Buffer | undefined;
      for (;;) {
        let page: { keys: Buffer[]; more: boolean };
        try {
          page = await (this.osd(osdId) as Osd).listFragments(
            Buffer.alloc(0),
            startAfter,
            this.limits.orphanListKeys,
            {
              deadlineMs: OSD_ADMIN_DEADLINE_MS,
            },
          );
        } catch (err) {
          this.noteOsdError(osdId, err);
          break;
        }
        const byNs = new Map<string, { osdId: string; key: string }[]>();
        let skipTo: Buffer | undefined;
        for (const k of page.keys) {
          const key = k.toString('latin1');
          const nsId = NS_PREFIX.exec(key)?.[1];
          if (nsId !== undefined && known.has(nsId)) {
            // A known namespace: jump past all of its keys ('\xff' sorts after them).
            skipTo = Buffer.from(`${nsId}/\xff`, 'latin1');
            break;
          }
          startAfter = k;
          if (nsId === undefined || !ORPHAN_KEY.test(key)) continue;
          byNs.set(nsId, [...(byNs.get(nsId) ?? []), { osdId, key }]);
        }
        for (const [nsId, candidates] of byNs) {
          // Re-checked before deleting: a namespace created since the phase began is not ours.
          await this.judgeOrphans(
            nsId,
            candidates,
            confirmed,
            async () => (await this.kv.get(nsKeys.record(nsId))) === undefined,
          );
        }
        if (skipTo !== undefined) {
          startAfter = skipTo;
          continue;
        }
        if (!page.more) break;
      }
    }
  }

  /** Records first-seen times, deletes candidates past the grace period. */
  private async judgeOrphans(
    nsId: string,
    candidates: readonly { osdId: string; key: string }[],
    confirmed: Set<string>,
    stillOrphan: () => Promise<boolean>,
  ): Promise<void> {
    if (candidates.length === 0) return;
    const nowMs = this.now();
    const records = new Map<string, number>();
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix: maintenanceKeys.orphansPrefix(this.backendId, nsId) },
        continuation === undefined ? {} : { continuation },
      );
      for (const item of page.items)
        records.set(item.key.toString('latin1'), Number(item.value.toString('latin1')));
      continuation = page.continuation;
    } while (continuation !== undefined);
    const due: { osdId: string; key: string; recordKey: Buffer }[] = [];
    const fresh: Buffer[] = [];
    for (const c of candidates) {
      const recordKey = maintenanceKeys.orphan(this.backendId, c.key, c.osdId);
      const id = recordKey.toString('latin1');
      const firstSeen = records.get(id);
      if (firstSeen === undefined && this.limits.orphanGraceMs > 0) {
        fresh.push(recordKey);
        confirmed.add(id);
        this.summary.orphansPending += 1;
      } else if (firstSeen !== undefined && nowMs - firstSeen < this.limits.orphanGraceMs) {
        confirmed.add(id);
        this.summary.orphansPending += 1;
      } else {
        due.push({ ...c, recordKey });
      }
    }
    for (let at = 0; at < fresh.length; at += 100) {
      const keys = fresh.slice(at, at + 100);
      const value = Buffer.from(String(nowMs));
      // ifAbsent: a record written meanwhile keeps its (earlier) first-seen time.
      await this.kv.txn({
        compares: keys.map((key) => ifAbsent(key)),
        success: keys.map((key): TxnOp => ({ type: 'put', key, value })),
        failure: [],
      });
    }
    if (due.length === 0) return;
    if (!(await stillOrphan())) {
      for (const d of due) confirmed.add(d.recordKey.toString('latin1'));
      return;
    }
    const byOsd = new Map<string, typeof due>();
    for (const d of due) byOsd.set(d.osdId, [...(byOsd.get(d.osdId) ?? []), d]);
    for (const [osdId, list] of byOsd) {
      try {
        await (this.osd(osdId) as Osd).deleteFragments(
          list.map((d) => Buffer.from(d.key, 'latin1')),
          { deadlineMs: OSD_ADMIN_DEADLINE_MS },
        );
        this.summary.orphansDeleted += list.length;
        this.counters.orphansDeleted += list.length;
        this.log(`maintenance: deleted ${list.length} orphan fragment(s) of ${nsId} on ${osdId}`);
      } catch (err) {
        this.noteOsdError(osdId, err);
        for (const d of list) confirmed.add(d.recordKey.toString('latin1'));
      }
    }
  }

  // ---------------------------------------------------------------- helpers

  private async allNamespaces(): Promise<NamespaceInfo[]> {
    const out: NamespaceInfo[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.namespaces.list(continuation === undefined ? {} : { continuation });
      out.push(...page.namespaces);
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out.sort((a, b) => (a.nsId < b.nsId ? -1 : a.nsId > b.nsId ? 1 : 0));
  }

  private async saveProgress(progress: Progress): Promise<void> {
    await this.kv.put(
      maintenanceKeys.progress(this.backendId),
      Buffer.from(JSON.stringify(progress)),
    );
  }

  private async kvDeleteMany(keys: readonly Buffer[]): Promise<void> {
    for (let at = 0; at < keys.length; at += 100) {
      await this.kv.txn({
        compares: [],
        success: keys.slice(at, at + 100).map((key) => ({ type: 'delete', key })),
        failure: [],
      });
    }
  }

  private addBytes(bytes: number): void {
    this.summary.bytesMoved += bytes;
    this.counters.bytesMoved += bytes;
  }
}

export interface MaintenanceLoopOptions {
  /** Pause between passes. */
  readonly intervalMs: number;
  /** A verify pass runs when the last one started at least this long ago. */
  readonly verifyIntervalMs: number;
  readonly signal: AbortSignal;
  readonly onPass?: (summary: PassSummary) => void;
  readonly log?: (line: string) => void;
}

/**
 * Runs passes until `signal` aborts: a failed pass is logged and retried after the interval
 * (its progress is stored, so it resumes). Resolves once the current pass has ended.
 */
export async function runMaintenanceLoop(
  maintenance: Maintenance,
  options: MaintenanceLoopOptions,
): Promise<void> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let lastVerifyMs = -Infinity;
  while (!options.signal.aborted) {
    const verify = Date.now() - lastVerifyMs >= options.verifyIntervalMs;
    if (verify) lastVerifyMs = Date.now();
    try {
      options.onPass?.(await maintenance.runPass({ verify }));
    } catch (err) {
      log(`maintenance pass failed (resumes next time): ${errorMessage(err)}`);
    }
    if (options.signal.aborted) break;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, options.intervalMs);
      function done(): void {
        clearTimeout(timer);
        options.signal.removeEventListener('abort', done);
        resolve();
      }
      options.signal.addEventListener('abort', done);
    });
  }
}

function emptySummary(): PassSummary {
  return {
    objectsScanned: 0,
    objectsDamaged: 0,
    fragmentsRepaired: 0,
    fragmentsCompleted: 0,
    fragmentsBad: 0,
    orphansDeleted: 0,
    orphansPending: 0,
    unrecoverable: [],
    unrecoverableCount: 0,
    bytesMoved: 0,
    durationMs: 0,
    complete: false,
  };
}

function decodeProgress(bytes: Uint8Array): Progress | undefined {
  try {
    const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
    if (
      (value.phase === 'scan' || value.phase === 'orphans') &&
      typeof value.nsId === 'string' &&
      typeof value.name === 'string' &&
      typeof value.verify === 'boolean'
    )
      return { phase: value.phase, nsId: value.nsId, name: value.name, verify: value.verify };
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
  }
  return undefined; // unreadable progress: start over (a full pass is always safe)
}

function decodeOrLog(item: KeyValue, log: (line: string) => void): Manifest | undefined {
  try {
    return decodeManifest(item.value);
  } catch (err) {
    if (!isShaleError(err, ProxyErrorCode.CorruptManifest)) throw err;
    log(
      `maintenance: manifest ${item.key.toString('latin1')} does not decode; skipped: ${errorMessage(err)}`,
    );
    return undefined;
  }
}

function isGood(value: Buffer, chunk: ChunkInfo, fragmentIndex: number): boolean {
  return (
    value.length === chunk.fragmentSizeBytes && crc32c(value) === chunk.fragmentCrcs[fragmentIndex]
  );
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
