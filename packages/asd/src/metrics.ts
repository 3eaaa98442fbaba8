import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** The ASD's Prometheus metrics, on a registry of its own (one per daemon). */
export class AsdMetrics {
  readonly registry = new Registry();
  readonly operations: Counter<'op'>;
  readonly items: Counter<'op'>;
  readonly bytes: Counter<'direction'>;
  readonly errors: Counter<'op' | 'code'>;
  readonly latency: Histogram<'op'>;
  readonly commitJobs: Histogram;
  readonly commits: Counter;
  readonly garbageFilesRemoved: Counter;
  readonly orphanFilesRemoved: Counter;

  constructor(gauges: {
    usedBytes: () => number;
    objectCount: () => number;
    capacityBytes: () => number;
    inflightPutBytes: () => number;
  }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'shale_asd_process_' });
    this.operations = new Counter({
      name: 'shale_asd_operations_total',
      help: 'Calls served, by operation',
      labelNames: ['op'],
      registers,
    });
    this.items = new Counter({
      name: 'shale_asd_items_total',
      help: 'Objects, keys or slices handled, by operation',
      labelNames: ['op'],
      registers,
    });
    this.bytes = new Counter({
      name: 'shale_asd_bytes_total',
      help: 'Value bytes received (in) and sent (out)',
      labelNames: ['direction'],
      registers,
    });
    this.errors = new Counter({
      name: 'shale_asd_errors_total',
      help: 'Failed calls and failed items, by operation and stable error code',
      labelNames: ['op', 'code'],
      registers,
    });
    this.latency = new Histogram({
      name: 'shale_asd_operation_seconds',
      help: 'Call latency, by operation',
      labelNames: ['op'],
      buckets: [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
      ],
      registers,
    });
    this.commitJobs = new Histogram({
      name: 'shale_asd_commit_jobs',
      help: 'Put/Delete calls sharing one index fsync (group commit)',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    });
    this.commits = new Counter({
      name: 'shale_asd_commits_total',
      help: 'Index commits (each one LevelDB fsync)',
      registers,
    });
    this.garbageFilesRemoved = new Counter({
      name: 'shale_asd_garbage_files_removed_total',
      help: 'Value files removed after their object was overwritten or deleted',
      registers,
    });
    this.orphanFilesRemoved = new Counter({
      name: 'shale_asd_orphan_files_removed_total',
      help: 'Value files of never-committed puts removed after an unclean shutdown',
      registers,
    });
    new Gauge({
      name: 'shale_asd_used_bytes',
      help: 'Sum of stored value sizes',
      registers,
      collect() {
        this.set(gauges.usedBytes());
      },
    });
    new Gauge({
      name: 'shale_asd_objects',
      help: 'Objects stored',
      registers,
      collect() {
        this.set(gauges.objectCount());
      },
    });
    new Gauge({
      name: 'shale_asd_capacity_bytes',
      help: 'Bytes this ASD may use',
      registers,
      collect() {
        this.set(gauges.capacityBytes());
      },
    });
    new Gauge({
      name: 'shale_asd_inflight_put_bytes',
      help: 'Put bytes being written now',
      registers,
      collect() {
        this.set(gauges.inflightPutBytes());
      },
    });
  }
}
