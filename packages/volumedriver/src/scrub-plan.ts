import type { TLogEntry } from './tlog-format.js';

/**
 * Which cluster versions of a vDisk's history are still needed, and which SCOs are worth
 * rewriting. A version (one WRITE entry: a cluster's payload at one place in one SCO) is
 * live when the current map points to it or when a snapshot sees it (a snapshot marker
 * lies between the write and the write that replaced it). It is pinned when a snapshot
 * that has clones sees it: clones read it in place, so it must not move.
 *
 * One pass over the entries, O(entries): for each version we remember where it was
 * written; when it is replaced we ask whether a (pinned) snapshot marker came after that.
 */

export interface ScoLiveness {
  readonly scoNumber: number;
  totalClusters: number;
  liveClusters: number;
  pinned: boolean;
}

export interface ScrubPlan {
  /** SCOs to rewrite (live clusters move to new SCOs) or simply drop (none live). */
  readonly candidates: Set<number>;
  /** Live versions in candidate SCOs, in history order: what to copy. */
  readonly moves: { scoNumber: number; clusterOffset: number; crc32c: number }[];
  readonly scos: Map<number, ScoLiveness>;
}

/** Versions are keyed by (SCO, cluster offset): each SCO slot is written exactly once. */
export function versionKey(scoNumber: number, clusterOffset: number): number {
  return scoNumber * 2 ** 20 + clusterOffset;
}

export function planScrub(
  tlogs: readonly (readonly TLogEntry[])[],
  options: {
    /** Snapshots that still exist (markers of deleted ones are ignored). */
    readonly snapshotIds: ReadonlySet<number>;
    /** Snapshots that have clones. */
    readonly pinnedSnapshotIds: ReadonlySet<number>;
    readonly liveFractionThreshold: number;
  },
): ScrubPlan {
  const scos = new Map<number, ScoLiveness>();
  const sco = (n: number): ScoLiveness => {
    let found = scos.get(n);
    if (found === undefined) {
      found = { scoNumber: n, totalClusters: 0, liveClusters: 0, pinned: false };
      scos.set(n, found);
    }
    return found;
  };
  const live = new Set<number>();
  const current = new Map<number, { key: number; scoNumber: number; at: number }>();
  let position = 0;
  let lastSnapshotAt = -1;
  let lastPinnedAt = -1;
  const retire = (version: { key: number; scoNumber: number; at: number }) => {
    if (lastSnapshotAt > version.at) {
      live.add(version.key);
      sco(version.scoNumber).liveClusters += 1;
    }
    if (lastPinnedAt > version.at) sco(version.scoNumber).pinned = true;
  };
  for (const entries of tlogs) {
    for (const entry of entries) {
      position += 1;
      if (entry.type === 'write') {
        sco(entry.scoNumber).totalClusters += 1;
        const previous = current.get(entry.clusterIndex);
        if (previous !== undefined) retire(previous);
        current.set(entry.clusterIndex, {
          key: versionKey(entry.scoNumber, entry.clusterOffset),
          scoNumber: entry.scoNumber,
          at: position,
        });
      } else if (entry.type === 'trim') {
        const end = entry.firstClusterIndex + entry.clusterCount;
        for (const [index, version] of current) {
          if (index >= entry.firstClusterIndex && index < end) {
            retire(version);
            current.delete(index);
          }
        }
      } else if (entry.type === 'snapshot' && options.snapshotIds.has(entry.snapshotId)) {
        lastSnapshotAt = position;
        if (options.pinnedSnapshotIds.has(entry.snapshotId)) lastPinnedAt = position;
      }
    }
  }
  // What the map points to now is live (and pinned if a cloned snapshot sees it).
  for (const version of current.values()) {
    if (!live.has(version.key)) {
      live.add(version.key);
      sco(version.scoNumber).liveClusters += 1;
    }
    if (lastPinnedAt > version.at) sco(version.scoNumber).pinned = true;
  }
  const candidates = new Set<number>();
  for (const s of scos.values()) {
    if (s.pinned || s.totalClusters === 0) continue;
    if (s.liveClusters / s.totalClusters < options.liveFractionThreshold)
      candidates.add(s.scoNumber);
  }
  const moves: ScrubPlan['moves'] = [];
  const moved = new Set<number>();
  for (const entries of tlogs) {
    for (const entry of entries) {
      if (entry.type !== 'write' || !candidates.has(entry.scoNumber)) continue;
      const key = versionKey(entry.scoNumber, entry.clusterOffset);
      if (!live.has(key) || moved.has(key)) continue;
      moved.add(key);
      moves.push({
        scoNumber: entry.scoNumber,
        clusterOffset: entry.clusterOffset,
        crc32c: entry.crc32c,
      });
    }
  }
  return { candidates, moves, scos };
}
