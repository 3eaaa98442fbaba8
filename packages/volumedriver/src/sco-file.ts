import path from 'node:path';
import { systemErrorCode } from '@shale/common';
import {
  CLUSTER_SIZE_MAX_BYTES,
  CLUSTER_SIZE_MIN_BYTES,
  SCO_FILE_NAME_HEX_DIGITS,
  SCO_SIZE_MAX_BYTES,
  SCO_SIZE_MIN_BYTES,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { type ScoNumber, scoNumber } from './types.js';

/**
 * What SCO files share: their names in the write buffer, the size rules, and how a
 * file-system error becomes a VD_ error.
 */
const SCO_FILE_SUFFIX = '.sco';
const SCO_FILE_NAME = new RegExp(`^[0-9a-f]{${SCO_FILE_NAME_HEX_DIGITS}}\\.sco$`);

/** `0000002a.sco` for SCO 42: zero-padded hex, so names sort in SCO order. */
export function scoFileName(sco: ScoNumber): string {
  return `${sco.toString(16).padStart(SCO_FILE_NAME_HEX_DIGITS, '0')}${SCO_FILE_SUFFIX}`;
}

export function scoFilePath(dir: string, sco: ScoNumber): string {
  return path.join(dir, scoFileName(sco));
}

/** The SCO number a write-buffer file name stands for, or undefined for any other file. */
export function parseScoFileName(name: string): ScoNumber | undefined {
  if (!SCO_FILE_NAME.test(name)) return undefined;
  return scoNumber(Number.parseInt(name.slice(0, SCO_FILE_NAME_HEX_DIGITS), 16));
}

/** Refuses a cluster size that is not a power of two in range (VD_INVALID_ARGUMENT). */
export function checkClusterSize(clusterSizeBytes: number): void {
  const powerOfTwo =
    Number.isInteger(clusterSizeBytes) && (clusterSizeBytes & (clusterSizeBytes - 1)) === 0;
  if (
    !powerOfTwo ||
    clusterSizeBytes < CLUSTER_SIZE_MIN_BYTES ||
    clusterSizeBytes > CLUSTER_SIZE_MAX_BYTES
  ) {
    throw vdError(
      VdErrorCode.InvalidArgument,
      `cluster size ${clusterSizeBytes} B is not a power of two in ${CLUSTER_SIZE_MIN_BYTES}..${CLUSTER_SIZE_MAX_BYTES} B`,
    );
  }
}

/** Refuses a SCO size outside 4..128 MiB or not a whole number of clusters. */
export function checkScoSize(scoSizeBytes: number, clusterSizeBytes: number): void {
  checkClusterSize(clusterSizeBytes);
  if (
    !Number.isInteger(scoSizeBytes) ||
    scoSizeBytes < SCO_SIZE_MIN_BYTES ||
    scoSizeBytes > SCO_SIZE_MAX_BYTES ||
    scoSizeBytes % clusterSizeBytes !== 0
  ) {
    throw vdError(
      VdErrorCode.InvalidArgument,
      `SCO size ${scoSizeBytes} B is not a multiple of ${clusterSizeBytes} B in ${SCO_SIZE_MIN_BYTES}..${SCO_SIZE_MAX_BYTES} B`,
    );
  }
}

/** A file-system failure on a SCO file as a VD_ error, keeping the cause. */
export function scoIoError(err: unknown, what: string, filePath: string): Error {
  const code = systemErrorCode(err);
  const message = `${what} ${filePath}: ${code ?? 'error'}`;
  const details = { path: filePath, errno: code ?? '' };
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return vdError(VdErrorCode.NoSpace, message, { cause: err, details });
  }
  if (code === 'EEXIST') return vdError(VdErrorCode.ScoExists, message, { cause: err, details });
  if (code === 'ENOENT') return vdError(VdErrorCode.ScoNotFound, message, { cause: err, details });
  return vdError(VdErrorCode.IoError, message, { cause: err, details });
}
