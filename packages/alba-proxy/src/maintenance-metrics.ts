import { registerStatsCounters } from '@shale/common';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Maintenance, MaintenanceStats } from './maintenance.js';

const COUNTERS: readonly [string, string, keyof MaintenanceStats][] = [
  ['passes_total', 'Maintenance passes finished', 'passes'],
  ['objects_scanned_total', 'Objects whose manifests were examined', 'objectsScanned'],
  ['fragments_repaired_total', 'Lost or damaged fragments rebuilt and placed', 'fragmentsRepaired'],
  [
    'fragments_completed_total',
    'Fragments added to objects stored with fewer than k+m',
    'fragmentsCompleted',
  ],
  [
    'fragments_bad_total',
    'Fragments found missing or failing their CRC32C by a verify pass',
    'fragmentsBad',
  ],
  [
    'orphans_deleted_total',
    'Fragments in no manifest deleted after the grace period',
    'orphansDeleted',
  ],
  ['unrecoverable_total', 'Chunk findings with fewer than k good fragments', 'unrecoverable'],
  ['bytes_moved_total', 'Fragment bytes read and written by repair', 'bytesMoved'],
  ['manifest_updates_total', 'Manifests rewritten by repair', 'manifestUpdates'],
  [
    'manifest_conflicts_total',
    'Repairs dropped because the object changed meanwhile',
    'manifestConflicts',
  ],
];

/** Maintenance counters as Prometheus metrics, read at scrape time. */
export function createMaintenanceMetrics(maintenance: Maintenance): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'shale_maintenance_process_' });
  registerStatsCounters(
    registry,
    COUNTERS.map(([suffix, help, field]) => [`shale_maintenance_${suffix}`, help, field] as const),
    () => maintenance.stats(),
  );
  return registry;
}
