import { assert } from '@shale/common';
import { CLUSTER_INDEX_MAX, SCO_NUMBER_MAX } from './constants.js';

/** A SCO's number: monotonically increasing per vDisk, never reused. */
export type ScoNumber = number & { readonly __brand: 'ScoNumber' };
/** A cluster's index in the vDisk (its LBA divided by the cluster size). */
export type ClusterIndex = number & { readonly __brand: 'ClusterIndex' };

export function scoNumber(value: number): ScoNumber {
  assert(
    Number.isInteger(value) && value >= 0 && value <= SCO_NUMBER_MAX,
    `SCO number ${value} out of range 0..${SCO_NUMBER_MAX}`,
  );
  return value as ScoNumber;
}

export function clusterIndex(value: number): ClusterIndex {
  assert(
    Number.isInteger(value) && value >= 0 && value <= CLUSTER_INDEX_MAX,
    `cluster index ${value} out of range 0..${CLUSTER_INDEX_MAX}`,
  );
  return value as ClusterIndex;
}

/**
 * Where a cluster's payload lives: cluster `clusterOffset` (not a byte offset) of SCO
 * `scoNumber`, with the CRC32C of its payload, checked on every read.
 */
export interface ClusterLocation {
  readonly scoNumber: ScoNumber;
  readonly clusterOffset: number;
  readonly crc32c: number;
  /**
   * Whose namespace holds the SCO: 0 or absent = this vDisk's own; k > 0 = its k-th
   * ancestor (a clone reads its parent's data as of the snapshot it was cloned from).
   */
  readonly layer?: number;
}
