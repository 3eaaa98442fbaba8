import { FastHistogram, type FastHistogramChild } from '@shale/common';
import { Gauge, type Registry } from 'prom-client';
import type { LatencyOp, Volume } from './volume.js';

/**
 * Prometheus metrics of the open vDisks, read from each volume's counters when scraped
 * (no work on the data path). Counters are exported as gauges of monotonically growing
 * totals so a vDisk that closes simply disappears.
 */
export function registerVolumeMetrics(
  registry: Registry,
  volumes: () => Volume[],
  failedVdisks: () => number,
): (vdisk: string, op: LatencyOp, seconds: number) => void {
  const fields = [
    ['shale_vdisk_read_ops_total', 'Reads served', 'readOps'],
    ['shale_vdisk_write_ops_total', 'Writes (and write-zeroes) acknowledged', 'writeOps'],
    ['shale_vdisk_read_bytes_total', 'Bytes read', 'readBytes'],
    ['shale_vdisk_write_bytes_total', 'Bytes written', 'writeBytes'],
    ['shale_vdisk_flush_ops_total', 'FLUSH requests', 'flushOps'],
    ['shale_vdisk_trim_ops_total', 'TRIM requests', 'trimOps'],
    [
      'shale_vdisk_write_buffer_dirty_bytes',
      'SCO bytes not in the backend yet',
      'writeBufferDirtyBytes',
    ],
    [
      'shale_vdisk_upload_backlog_objects',
      'SCOs/TLogs/roots waiting for upload',
      'uploadBacklogObjects',
    ],
    ['shale_vdisk_scos_uploaded_total', 'SCOs uploaded', 'scosUploaded'],
    ['shale_vdisk_tlogs_uploaded_total', 'TLogs uploaded', 'tlogsUploaded'],
    ['shale_vdisk_uploaded_bytes_total', 'Bytes uploaded to the backend', 'bytesUploaded'],
    [
      'shale_vdisk_data_at_risk_bytes',
      'Acknowledged write bytes whose TLog is not in the backend yet (lost with the write buffer)',
      'dataAtRiskBytes',
    ],
  ] as const;
  for (const [name, help, field] of fields) {
    new Gauge({
      name,
      help,
      labelNames: ['vdisk'],
      registers: [registry],
      collect() {
        this.reset();
        for (const volume of volumes())
          this.set({ vdisk: volume.name }, volume.vdiskStats()[field]);
      },
    });
  }
  const cacheFields = [
    ['shale_vdisk_cluster_cache_hits_total', 'Clusters read from the cluster cache', 'hits'],
    [
      'shale_vdisk_cluster_cache_misses_total',
      'Mapped clusters the cluster cache did not hold (read from a SCO)',
      'misses',
    ],
    ['shale_vdisk_cluster_cache_bytes', "Memory of the vDisk's cluster cache", 'bytes'],
  ] as const;
  for (const [name, help, field] of cacheFields) {
    new Gauge({
      name,
      help,
      labelNames: ['vdisk'],
      registers: [registry],
      collect() {
        this.reset();
        for (const volume of volumes())
          this.set({ vdisk: volume.name }, volume.clusterCacheStats()[field]);
      },
    });
  }
  new Gauge({
    name: 'shale_vdisk_sco_memory_bytes',
    help: "Memory holding the vDisk's open SCO and its sealed SCOs waiting for upload",
    labelNames: ['vdisk'],
    registers: [registry],
    collect() {
      this.reset();
      for (const volume of volumes()) this.set({ vdisk: volume.name }, volume.scoMemoryBytes());
    },
  });
  new Gauge({
    name: 'shale_vdisk_data_at_risk_age_seconds',
    help: 'Age of the oldest acknowledged write not in the backend yet (0: none)',
    labelNames: ['vdisk'],
    registers: [registry],
    collect() {
      this.reset();
      for (const volume of volumes())
        this.set({ vdisk: volume.name }, volume.vdiskStats().dataAtRiskAgeMs / 1000);
    },
  });
  new Gauge({
    name: 'shale_volumedriver_vdisks_failed',
    help: 'vDisks this volumedriver owns but could not open (retried in the background)',
    registers: [registry],
    collect() {
      this.set(failedVdisks());
    },
  });
  // Observed on every request: label values are resolved once per vDisk and operation.
  const latency = new FastHistogram({
    name: 'shale_vdisk_request_seconds',
    help: 'Request latency inside the volumedriver, from queueing to the answer, per vDisk and operation',
    labelNames: ['vdisk', 'op'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [registry],
  });
  const children = new Map<string, Map<LatencyOp, FastHistogramChild>>();
  return (vdisk, op, seconds) => {
    let ops = children.get(vdisk);
    if (ops === undefined) {
      ops = new Map();
      children.set(vdisk, ops);
    }
    let child = ops.get(op);
    if (child === undefined) {
      child = latency.child(vdisk, op);
      ops.set(op, child);
    }
    child.observe(seconds);
  };
}
