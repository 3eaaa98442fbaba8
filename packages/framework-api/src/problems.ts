/**
 * What an operator should look at, from what the components report: one list, one rule per
 * code, so that `GET /api/v1/stats`, `shale status` and the web UI agree. 'degraded' means
 * the cluster does not serve as it should (data at risk past its bound, a vDisk that cannot
 * be opened, a full ASD or write buffer); 'warning' is worth knowing (a restore lost writes,
 * thin over-commitment, a write buffer without its reserve).
 */
import { API_ASD_FULL_FRACTION, API_ASD_FULL_RECENT_MS } from './constants.js';
import type { Asd, Problem, StorageRouter, Vdisk } from './schemas.js';

export interface ProblemInputs {
  readonly vdisks: readonly Vdisk[];
  readonly asds: readonly Asd[];
  readonly storageRouters: readonly StorageRouter[];
  readonly overcommitRatio: number | undefined;
  /** Now, for "recently" (ms since the epoch). */
  readonly nowMs: number;
}

const MiB = 1024 * 1024;
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

export function clusterProblems(input: ProblemInputs): Problem[] {
  const out: Problem[] = [];
  const add = (
    code: Problem['code'],
    severity: Problem['severity'],
    subject: string,
    message: string,
  ) => out.push({ code, severity, subject, message: message.slice(0, 4096) });

  for (const v of input.vdisks) {
    const subject = `vdisk ${v.name}`;
    if (v.state === 'failed') {
      add(
        'VDISK_OPEN_FAILED',
        'degraded',
        subject,
        `its owner ${v.ownerNodeId} cannot open it (${v.openError?.code ?? 'unknown'}: ${v.openError?.message ?? 'no reason given'}); retried in the background`,
      );
    }
    if (v.dataLoss !== undefined) {
      add(
        'VDISK_DATA_LOST',
        'warning',
        subject,
        `restored from the backend at ${new Date(v.dataLoss.detectedAtMs).toISOString()}: writes made on ${v.dataLoss.nodeId} since ${new Date(v.dataLoss.sinceMs).toISOString()} were only in a lost write buffer and are gone`,
      );
    }
    const stats = v.stats;
    if (stats === undefined) continue;
    if (stats.writeLaneError !== '') {
      add(
        'VDISK_WRITES_STOPPED',
        'degraded',
        subject,
        `writes fail until it is reopened: ${stats.writeLaneError}`,
      );
    }
    if (stats.uploadError !== '') {
      add(
        'VDISK_UPLOADS_FAILING',
        'degraded',
        subject,
        `uploads to the backend fail (retried): ${stats.uploadError}`,
      );
    }
    if (stats.dataAtRiskAgeMs > stats.dataAtRiskBoundMs) {
      add(
        'VDISK_DATA_AT_RISK_OVERDUE',
        'degraded',
        subject,
        `${mib(stats.dataAtRiskBytes)} of acknowledged writes have not reached the backend for ${seconds(stats.dataAtRiskAgeMs)} (bound ${seconds(stats.dataAtRiskBoundMs)}): they would be lost with the write buffer`,
      );
    }
  }

  for (const asd of input.asds) {
    if (asd.state !== 'active') continue;
    const subject = `asd ${asd.id}`;
    if (!asd.healthy) {
      add('ASD_UNHEALTHY', 'degraded', subject, asd.detail ?? 'not healthy');
      continue;
    }
    const nearlyFull =
      asd.freeBytes !== undefined &&
      asd.capacityBytes !== undefined &&
      asd.freeBytes < asd.capacityBytes * API_ASD_FULL_FRACTION;
    const refusing =
      asd.lastNoSpaceAtMs !== undefined &&
      input.nowMs - asd.lastNoSpaceAtMs < API_ASD_FULL_RECENT_MS;
    if (nearlyFull || refusing) {
      add(
        'ASD_FULL',
        'degraded',
        subject,
        `${mib(asd.freeBytes ?? 0)} free of ${mib(asd.capacityBytes ?? 0)}${refusing ? ', refusing puts for lack of space' : ''}: uploads stall; add space or ASDs, or delete vDisks or snapshots`,
      );
    }
  }

  for (const router of input.storageRouters) {
    const subject = `volumedriver ${router.nodeId}`;
    if (!router.healthy) {
      add('STORAGE_ROUTER_UNHEALTHY', 'degraded', subject, router.detail ?? 'not healthy');
      continue;
    }
    const wb = router.writeBuffer;
    if (wb === undefined) continue;
    if (wb.low) {
      add(
        'WRITE_BUFFER_FULL',
        'degraded',
        subject,
        `its write buffer has ${mib(wb.availableBytes)} free: writes are refused (ENOSPC) until uploads or an operator free space (${wb.refusedWrites} refused so far)`,
      );
    }
    if (!wb.reserveHeld && wb.reserveBytes > 0) {
      add(
        'WRITE_BUFFER_NO_RESERVE',
        'warning',
        subject,
        `its write buffer runs without its ${mib(wb.reserveBytes)} reserve (no room to make it again)`,
      );
    }
  }

  if (input.overcommitRatio !== undefined && input.overcommitRatio > 1) {
    add(
      'THIN_OVERCOMMITTED',
      'warning',
      'cluster',
      `the vDisks provision ${input.overcommitRatio.toFixed(2)} x the backend's free space: writes fail once it is full`,
    );
  }
  return out;
}

export function isDegraded(problems: readonly Problem[]): boolean {
  return problems.some((p) => p.severity === 'degraded');
}
