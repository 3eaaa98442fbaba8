/**
 * Thin provisioning, counted: what the vDisks promise (the sum of their sizes) against what
 * the backend has free. vDisks are thin, so promising more than is free is allowed, but the
 * answer that makes it so (a create, a resize) says it, in `warnings`.
 *
 * Free space is counted once per file system: ASDs whose directories share one (`shale up`
 * puts them all on the data dir's) each report that file system's capacity and free space,
 * and summing them would count it once per ASD. The grouping needs the ASD to say which
 * file system it is on (`filesystemId` in its stats: its node id and device). The ASD does
 * not report one yet; until it does, each ASD counts as its own file system (an
 * overstatement for ASDs that share one, by their number).
 */
import { formatBytes } from '@shale/common';
import type { Asd, Warning } from './schemas.js';

/** The stable codes of `warnings` (answers that succeeded, with something to know). */
export const ApiWarningCode = {
  /** The vDisks' sizes add up to more than the backend's free space. */
  Overcommitted: 'API_THIN_OVERCOMMITTED',
  /** The check could not be made: no ASD answered, or listing the vDisks failed. */
  CapacityUnknown: 'API_CAPACITY_UNKNOWN',
} as const;

export interface BackendCapacity {
  /** Active ASDs of every backend. */
  readonly asdCount: number;
  readonly asdsReachable: number;
  /** Distinct file systems the reachable ASDs are on (each ASD without a filesystemId is one). */
  readonly filesystemCount: number;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly freeBytes: number;
}

/**
 * Capacity over the active ASDs that answered, each file system counted once: its largest
 * capacity and largest free figure (the ASDs on it share that space), and the sum of their
 * used bytes (each counts only its own objects).
 */
export function backendCapacity(asds: readonly Asd[]): BackendCapacity {
  const active = asds.filter((asd) => asd.state === 'active');
  const reachable = active.filter(
    (asd) => asd.capacityBytes !== undefined && asd.freeBytes !== undefined,
  );
  const filesystems = new Map<string, { capacityBytes: number; freeBytes: number }>();
  let usedBytes = 0;
  for (const asd of reachable) {
    usedBytes += asd.usedBytes ?? 0;
    const key =
      asd.filesystemId === undefined
        ? `asd\u0000${asd.id}`
        : `fs\u0000${asd.nodeId}\u0000${asd.filesystemId}`;
    const seen = filesystems.get(key);
    filesystems.set(key, {
      capacityBytes: Math.max(seen?.capacityBytes ?? 0, asd.capacityBytes ?? 0),
      freeBytes: Math.max(seen?.freeBytes ?? 0, asd.freeBytes ?? 0),
    });
  }
  let capacityBytes = 0;
  let freeBytes = 0;
  for (const fs of filesystems.values()) {
    capacityBytes += fs.capacityBytes;
    freeBytes += fs.freeBytes;
  }
  return {
    asdCount: active.length,
    asdsReachable: reachable.length,
    filesystemCount: filesystems.size,
    capacityBytes,
    usedBytes,
    freeBytes,
  };
}

/**
 * Provisioned bytes per free byte; undefined when it has no finite value (nothing free, or
 * no ASD answered). Above 1: the vDisks could not all be filled.
 */
export function overcommitRatio(
  provisionedBytes: number,
  backend: BackendCapacity,
): number | undefined {
  if (backend.asdsReachable === 0 || backend.freeBytes === 0) return undefined;
  return provisionedBytes / backend.freeBytes;
}

/** What a create or a resize says about thin provisioning (nothing when all is well). */
export function thinProvisioningWarnings(
  provisionedBytes: number,
  vdiskCount: number,
  backend: BackendCapacity,
): Warning[] {
  if (backend.asdsReachable === 0) {
    return [
      {
        code: ApiWarningCode.CapacityUnknown,
        message: `thin provisioning could not be checked: none of the ${backend.asdCount} active ASDs answered`,
      },
    ];
  }
  if (provisionedBytes <= backend.freeBytes) return [];
  const ratio = overcommitRatio(provisionedBytes, backend);
  return [
    {
      code: ApiWarningCode.Overcommitted,
      message: `thin provisioning: ${vdiskCount} vDisks provision ${formatBytes(provisionedBytes)}, more than the ${formatBytes(backend.freeBytes)} free in the backend (${ratio === undefined ? 'nothing free' : `${ratio.toFixed(2)} x`}); writes start failing once the backend is full`,
    },
  ];
}
