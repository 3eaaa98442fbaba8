import { ProxyErrorCode, proxyError } from './errors.js';
import {
  type OsdState,
  type PlacementOptions,
  placeableFragmentCount,
  placeFragments,
  usableOsds,
} from './fragment-placement.js';
import type { Policy, Preset } from './preset.js';

export interface PolicyChoice {
  readonly policy: Policy;
  /** Index of the policy in preset.policies (0 = the preferred one). */
  readonly policyIndex: number;
  /** Per fragment index 0..k+m-1: the OSD id, or undefined when it cannot be placed now. */
  readonly placement: (string | undefined)[];
  /** Fragments placed now (>= c); the write is acknowledged once c of them are stored. */
  readonly placedCount: number;
}

/**
 * Open vStorage semantics: the first policy that the OSDs usable now can satisfy, i.e. at
 * least c of its k + m fragments fit on distinct live OSDs with at most x per node. The
 * fragments that do not fit now (k + m - placedCount) are completed later by maintenance.
 * Throws PROXY_NO_POLICY, saying what there is and what each policy needs.
 *
 * Duplicate OSD ids in `osds` are a programmer error (placement asserts on them).
 */
export function choosePolicy(
  preset: Preset,
  osds: readonly OsdState[],
  options: PlacementOptions,
): PolicyChoice {
  for (const [policyIndex, policy] of preset.policies.entries()) {
    const placeable = placeableFragmentCount(policy, osds, options.minFreeBytes ?? 0);
    if (placeable < policy.c) continue;
    const placement = placeFragments(policy, osds, options);
    const placedCount = placement.filter((osdId) => osdId !== undefined).length;
    return { policy, policyIndex, placement, placedCount };
  }
  const usable = usableOsds(osds, options.minFreeBytes ?? 0);
  const nodes = new Set(usable.map((osd) => osd.nodeId));
  const allNodes = new Set(osds.map((osd) => osd.nodeId));
  const needs = preset.policies
    .map(
      (p) =>
        `(${p.k},${p.m},${p.c},${p.x}) needs ${p.c} fragments on distinct live OSDs with at most ${p.x} per node, can place ${placeableFragmentCount(p, osds, options.minFreeBytes ?? 0)}`,
    )
    .join('; ');
  throw proxyError(
    ProxyErrorCode.NoPolicy,
    `no policy of preset ${preset.name} can be satisfied: ${usable.length} usable OSDs on ${nodes.size} nodes (of ${osds.length} OSDs on ${allNodes.size} nodes); ${needs}`,
    {
      details: {
        preset: preset.name,
        usableOsds: String(usable.length),
        usableNodes: String(nodes.size),
      },
    },
  );
}
