import type { KeyValue, KvStore } from '@shale/arakoon-kv';
import { AsdErrorCode } from '@shale/asd';
import { errorMessage, isShaleError } from '@shale/common';
import { BackendRegistry, type OsdRecord } from './backend-registry.js';
import { ProxyErrorCode } from './errors.js';
import {
  DEFAULT_MAINTENANCE_LIMITS,
  emptySummary,
  type MaintenanceLimits,
  type MaintenanceOptions,
  type MaintenanceStats,
  maintenanceKeys,
  type PassSummary,
  type Progress,
} from './maintenance-types.js';
import { decodeManifest, type Manifest } from './manifest.js';
import { type NamespaceInfo, NamespaceManager } from './namespace-manager.js';
import type { Osd } from './osd.js';
import { defaultOsdFactory, OsdPool } from './osd-pool.js';
import type { RandomSource } from './random-source.js';
import { TokenBucket } from './token-bucket.js';

/**
 * What the parts of one maintenance pass share (maintenance.ts runs the pass,
 * maintenance-repair.ts scans and repairs, maintenance-orphans.ts collects orphans): the KV,
 * the OSD pool and the OSD states of this pass, the repair token bucket, the pass summary
 * and the counters, plus the helpers every phase uses.
 *
 * What an OSD's fragments count as (health()), from its probe at the start of the pass:
 *
 *   active, answers ---------------------------------------> healthy
 *   active, silent for < osdDownGraceMs (first seen: KV) ---> unavailable: waited for
 *   active, silent for >= osdDownGraceMs, or decommissioned -> lost: rebuilt elsewhere
 *
 * A transport failure during the pass (noteOsdError) turns healthy into unavailable until
 * the next probe.
 */

export interface OsdStatus {
  readonly record: OsdRecord;
  alive: boolean;
  freeBytes: number;
  /**
   * Its fragments are lost (rebuilt elsewhere): decommissioned, or active and silent for
   * osdDownGraceMs or longer. Silent for less is not lost, only unavailable.
   */
  lost: boolean;
}

export type FragmentHealth = 'healthy' | 'missing' | 'lost' | 'bad' | 'unavailable';

/** Transport failures: the OSD is treated as not answering for the rest of the pass. */
const OSD_DOWN_CODES: readonly string[] = [
  AsdErrorCode.Unavailable,
  AsdErrorCode.DeadlineExceeded,
  AsdErrorCode.RpcFailed,
  AsdErrorCode.Closed,
  AsdErrorCode.IoError,
];

export class MaintenanceState {
  readonly kv: KvStore;
  readonly backendId: string;
  readonly pool: OsdPool;
  private readonly registry: BackendRegistry;
  readonly namespaces: NamespaceManager;
  readonly random: RandomSource;
  readonly limits: MaintenanceLimits;
  readonly log: (line: string) => void;
  readonly now: () => number;
  readonly bucket: TokenBucket;
  osds = new Map<string, OsdStatus>();
  summary: PassSummary = emptySummary();
  readonly counters: MaintenanceStats = {
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

  async probeOsds(): Promise<void> {
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

  osd(osdId: string): Osd | undefined {
    const status = this.osds.get(osdId);
    return status === undefined ? undefined : this.pool.get(status.record);
  }

  noteOsdError(osdId: string, err: unknown): void {
    const code = isShaleError(err) ? err.code : undefined;
    const status = this.osds.get(osdId);
    if (status !== undefined && (code === undefined || OSD_DOWN_CODES.includes(code)))
      status.alive = false;
  }

  health(
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

  async allNamespaces(): Promise<NamespaceInfo[]> {
    const out: NamespaceInfo[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.namespaces.list(continuation === undefined ? {} : { continuation });
      out.push(...page.namespaces);
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out.sort((a, b) => (a.nsId < b.nsId ? -1 : a.nsId > b.nsId ? 1 : 0));
  }

  async saveProgress(progress: Progress): Promise<void> {
    await this.kv.put(
      maintenanceKeys.progress(this.backendId),
      Buffer.from(JSON.stringify(progress)),
    );
  }

  async kvDeleteMany(keys: readonly Buffer[]): Promise<void> {
    for (let at = 0; at < keys.length; at += 100) {
      await this.kv.txn({
        compares: [],
        success: keys.slice(at, at + 100).map((key) => ({ type: 'delete', key })),
        failure: [],
      });
    }
  }

  addBytes(bytes: number): void {
    this.summary.bytesMoved += bytes;
    this.counters.bytesMoved += bytes;
  }
}

export function decodeOrLog(item: KeyValue, log: (line: string) => void): Manifest | undefined {
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
