import { registerStatsCounters } from '@shale/common';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { FragmentCache } from './fragment-cache.js';
import type { ProxyEngine, ProxyStats } from './proxy-engine.js';

/** Engine counters exported as Prometheus counters: name suffix, help, the stats field. */
const COUNTERS: readonly [string, string, keyof ProxyStats][] = [
  ['bytes_in_total', 'Object bytes stored through this proxy', 'bytesIn'],
  ['bytes_out_total', 'Object bytes returned by this proxy', 'bytesOut'],
  ['puts_total', 'Objects stored', 'puts'],
  ['gets_total', 'Whole-object reads', 'gets'],
  ['range_reads_total', 'Ranged-read slices served', 'rangeReads'],
  ['deletes_total', 'Objects deleted', 'deletes'],
  ['fragments_written_total', 'Fragments written to OSDs', 'fragmentsWritten'],
  ['fragment_write_failures_total', 'Fragment writes that failed', 'fragmentWriteFailures'],
  ['fragments_read_total', 'Fragments (or fragment slices) read from OSDs', 'fragmentsRead'],
  ['fragment_read_failures_total', 'Fragment reads that failed', 'fragmentReadFailures'],
  [
    'parity_decodes_total',
    'Reads that needed parity (a data fragment missing, slow or bad)',
    'parityDecodes',
  ],
  ['hedged_reads_total', 'Reads that gave up on a slow OSD', 'hedgedReads'],
  ['cache_hits_total', 'Fragment cache hits', 'cacheHits'],
  ['cache_misses_total', 'Fragment cache misses', 'cacheMisses'],
  ['manifests_committed_total', 'Manifests committed', 'manifestsCommitted'],
  [
    'manifest_bytes_written_total',
    'Manifest bytes written to the metadata store',
    'manifestBytesWritten',
  ],
  ['manifest_updates_total', 'Manifests updated after late fragments landed', 'manifestUpdates'],
  ['fenced_commits_total', 'Commits refused because the writer epoch was stale', 'fencedCommits'],
  ['damaged_fragments_total', 'Damaged or lost fragments found by reads', 'damagedFragments'],
  [
    'background_failures_total',
    'Background tasks (late writes, cleanups) that failed',
    'backgroundFailures',
  ],
];

/** The proxy's Prometheus metrics, read from the engine's counters at scrape time. */
export function createProxyMetrics(
  engine: ProxyEngine,
  cache: FragmentCache | undefined,
): Registry {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry, prefix: 'shale_proxy_process_' });
  registerStatsCounters(
    registry,
    COUNTERS.map(([suffix, help, field]) => [`shale_proxy_${suffix}`, help, field] as const),
    () => engine.stats(),
  );
  new Gauge({
    name: 'shale_proxy_background_tasks',
    help: 'Background tasks in flight (late fragment writes, cleanups, cache fills)',
    registers,
    collect() {
      this.set(engine.stats().backgroundTasks);
    },
  });
  new Gauge({
    name: 'shale_proxy_cache_hit_ratio',
    help: 'Fragment cache hits / (hits + misses) since start',
    registers,
    collect() {
      const stats = engine.stats();
      const total = stats.cacheHits + stats.cacheMisses;
      this.set(total === 0 ? 0 : stats.cacheHits / total);
    },
  });
  if (cache !== undefined) {
    new Gauge({
      name: 'shale_proxy_cache_bytes',
      help: 'Bytes in the fragment cache',
      registers,
      collect() {
        this.set(cache.stats().bytes);
      },
    });
  }
  return registry;
}
