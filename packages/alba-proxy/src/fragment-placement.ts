import { assert } from '@shale/common';
import type { Policy } from './preset.js';
import type { RandomSource } from './random-source.js';

/** What placement knows of an OSD (an ASD, or a whole backend in a global backend). */
export interface OsdState {
  readonly osdId: string;
  readonly nodeId: string;
  readonly alive: boolean;
  readonly freeBytes: number;
}

export interface PlacementOptions {
  /** Seeded in tests; Math.random in production. */
  readonly random: RandomSource;
  /** An OSD with less free space than this is not used (the fragment would not fit). */
  readonly minFreeBytes?: number;
}

/** The OSDs a fragment may go to now: alive and with room. */
export function usableOsds(osds: readonly OsdState[], minFreeBytes = 0): OsdState[] {
  return osds.filter((osd) => osd.alive && osd.freeBytes >= minFreeBytes && osd.freeBytes > 0);
}

/**
 * How many fragments of one chunk can be placed now on distinct usable OSDs with at most
 * x per node: the sum over nodes of min(x, usable OSDs of the node), capped at k + m.
 */
export function placeableFragmentCount(
  policy: Policy,
  osds: readonly OsdState[],
  minFreeBytes = 0,
): number {
  const perNode = new Map<string, number>();
  for (const osd of usableOsds(osds, minFreeBytes)) {
    perNode.set(osd.nodeId, (perNode.get(osd.nodeId) ?? 0) + 1);
  }
  let total = 0;
  for (const count of perNode.values()) total += Math.min(policy.x, count);
  return Math.min(policy.k + policy.m, total);
}

function weightedPick<T>(
  items: readonly T[],
  weight: (item: T) => number,
  random: RandomSource,
): T {
  assert(items.length > 0, 'weightedPick needs at least one item');
  const total = items.reduce((sum, item) => sum + weight(item), 0);
  let point = random() * total;
  for (const item of items) {
    point -= weight(item);
    if (point < 0) return item;
  }
  return items[items.length - 1] as T;
}

/**
 * Places the fragments of one chunk: returns, for fragment index 0..k+m-1, the OSD id it
 * goes to, or undefined when it cannot be placed now (maintenance completes it later).
 *
 * - Distinct OSDs, at most x fragments per node.
 * - Spread over nodes first: each fragment goes to a node holding the fewest fragments so far.
 * - Then free space: among those nodes, and then among a node's OSDs, the choice is random,
 *   weighted by free bytes. Weighted rather than "always the emptiest" so that many proxies
 *   placing at once do not all pile onto the same OSD between two capacity refreshes.
 * - Data fragments first (index order): when not everything fits, the parity is what waits
 *   for maintenance, so reads of the new object need no decoding.
 *
 * Deterministic for a given `random` sequence and OSD list order.
 */
export function placeFragments(
  policy: Policy,
  osds: readonly OsdState[],
  options: PlacementOptions,
): (string | undefined)[] {
  const fragmentCount = policy.k + policy.m;
  const freeOsdsByNode = new Map<string, OsdState[]>();
  for (const osd of usableOsds(osds, options.minFreeBytes ?? 0)) {
    const list = freeOsdsByNode.get(osd.nodeId) ?? [];
    list.push(osd);
    freeOsdsByNode.set(osd.nodeId, list);
  }
  const placedPerNode = new Map<string, number>();
  const seen = new Set<string>();
  const result: (string | undefined)[] = [];
  for (let index = 0; index < fragmentCount; index++) {
    const candidates = [...freeOsdsByNode.entries()].filter(
      ([nodeId, list]) => list.length > 0 && (placedPerNode.get(nodeId) ?? 0) < policy.x,
    );
    if (candidates.length === 0) {
      result.push(undefined);
      continue;
    }
    const fewest = Math.min(...candidates.map(([nodeId]) => placedPerNode.get(nodeId) ?? 0));
    const tier = candidates.filter(([nodeId]) => (placedPerNode.get(nodeId) ?? 0) === fewest);
    const [nodeId, list] = weightedPick(
      tier,
      ([, nodeOsds]) => nodeOsds.reduce((sum, osd) => sum + osd.freeBytes, 0),
      options.random,
    );
    const osd = weightedPick(list, (o) => o.freeBytes, options.random);
    list.splice(list.indexOf(osd), 1);
    assert(!seen.has(osd.osdId), `OSD ${osd.osdId} listed twice`);
    seen.add(osd.osdId);
    placedPerNode.set(nodeId, fewest + 1);
    result.push(osd.osdId);
  }
  return result;
}
