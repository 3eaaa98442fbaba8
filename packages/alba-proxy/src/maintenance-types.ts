import type { KvStore } from '@shale/arakoon-kv';
import {
  FRAGMENT_READ_DEADLINE_MS,
  FRAGMENT_WRITE_DEADLINE_MS,
  MAINTENANCE_ORPHAN_GRACE_MS,
  MAINTENANCE_ORPHAN_LIST_KEYS,
  MAINTENANCE_OSD_DOWN_GRACE_MS,
  MAINTENANCE_REPAIR_BYTES_PER_SEC,
  MAINTENANCE_REPAIR_CONCURRENCY,
  MAINTENANCE_SCAN_BATCH_OBJECTS,
  OSD_PROBE_DEADLINE_MS,
} from './constants.js';
import type { OsdFactory } from './osd-pool.js';
import type { RandomSource } from './random-source.js';

/**
 * Maintenance's public types (its options and limits, what a pass is asked and answers, the
 * counters of `stats()`), the progress a pass stores, and the KV keys it stores under. The
 * pass itself is in maintenance.ts.
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
export interface Progress {
  readonly phase: 'scan' | 'orphans';
  readonly nsId: string;
  /** Scan: the last object whose repair is done (resume after it). */
  readonly name: string;
  readonly verify: boolean;
}

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

export function emptySummary(): PassSummary {
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
