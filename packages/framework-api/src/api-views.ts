/**
 * The API's view of the components' records: the volumedriver's VpoolInfo, VdiskInfo,
 * SnapshotInfo and ScrubReport, the backend registry's records and presets, renamed to the
 * API's fields (`backend`, `vpool`, `preset`, `vdisk`, `snapshot`). Plain copies: nothing
 * here calls anything.
 */
import type { BackendRecord, OsdRecord, Preset as RegistryPreset } from '@shale/alba-proxy';
import type {
  SnapshotInfo,
  VdiskInfo,
  ScrubReport as VdScrubReport,
  VpoolInfo,
} from '@shale/volumedriver';
import type { Backend, Preset, ScrubReport, Snapshot, Vdisk, Vpool } from './schemas.js';

export function vpoolView(info: VpoolInfo): Vpool {
  return {
    id: info.id,
    name: info.name,
    backend: info.backendId,
    preset: info.presetName,
    clusterSizeBytes: info.clusterSizeBytes,
    scoSizeBytes: info.scoSizeBytes,
    writeBufferBytes: info.writeBufferBytes,
    createdAtMs: info.createdAtMs,
  };
}

export function snapshotView(info: SnapshotInfo): Snapshot {
  return {
    id: info.id,
    name: info.name,
    createdAtMs: info.createdAtMs,
    inBackend: info.inBackend,
    clones: [...info.clones],
  };
}

/** `open`: the answer came from the owner, which has the vDisk open (stats are present). */
export function vdiskView(info: VdiskInfo): Vdisk {
  return {
    id: info.id,
    name: info.name,
    vpool: info.vpoolName,
    sizeBytes: info.sizeBytes,
    clusterSizeBytes: info.clusterSizeBytes,
    scoSizeBytes: info.scoSizeBytes,
    namespace: info.namespace,
    ownerNodeId: info.ownerNodeId,
    createdAtMs: info.createdAtMs,
    open: info.stats !== undefined,
    state: info.state,
    snapshots: info.snapshots.map(snapshotView),
    ...(info.parent === undefined
      ? {}
      : {
          parent: {
            vdiskId: info.parent.vdiskId,
            vdisk: info.parent.vdiskName,
            snapshotId: info.parent.snapshotId,
            snapshot: info.parent.snapshotName,
          },
        }),
    ...(info.stats === undefined ? {} : { stats: { ...info.stats } }),
    ...(info.openError === undefined ? {} : { openError: { ...info.openError } }),
    ...(info.dataLoss === undefined ? {} : { dataLoss: { ...info.dataLoss } }),
  };
}

export function scrubReportView(report: VdScrubReport): ScrubReport {
  return {
    scosExamined: report.scosExamined,
    scosRewritten: report.scosRewritten,
    clustersMoved: report.clustersMoved,
    scosCreated: report.scosCreated,
    backendBytesBefore: report.backendBytesBefore,
    backendBytesAfter: report.backendBytesAfter,
    aborted: report.aborted,
  };
}

export function backendView(record: BackendRecord, osds: readonly OsdRecord[]): Backend {
  const active = osds.filter((osd) => osd.state === 'active').length;
  return {
    id: record.backendId,
    name: record.name,
    type: record.type,
    osdCount: active,
    decommissionedOsdCount: osds.length - active,
    defaultPreset: record.defaultPresetName,
    createdAtMs: record.createdAtMs,
  };
}

export function presetView(backend: BackendRecord, preset: RegistryPreset): Preset {
  return {
    backend: backend.backendId,
    name: preset.name,
    isDefault: preset.name === backend.defaultPresetName,
    policies: preset.policies.map((p) => ({ k: p.k, m: p.m, c: p.c, x: p.x })),
    fragmentSizeMaxBytes: preset.fragmentSizeMaxBytes,
    compression: preset.compression,
    encryption: preset.encryption,
    checksum: preset.checksum,
  };
}
