// Proves policy choice and placement on simulated OSD sets: one node, three nodes, dead OSDs, nothing satisfiable; x per node, distinct OSDs, node spread, free-space preference and seeded determinism.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { seededRandom, throwsWith } from '@shale/testing';
import { type OsdState, placeFragments } from './fragment-placement.js';
import { choosePolicy } from './policy.js';
import { DEFAULT_PRESET_MULTI_NODE, DEFAULT_PRESET_SINGLE_NODE, parsePreset } from './preset.js';

const GiB = 1024 ** 3;

function osds(nodes: number, perNode: number, dead: string[] = []): OsdState[] {
  const out: OsdState[] = [];
  for (let n = 0; n < nodes; n++) {
    for (let d = 0; d < perNode; d++) {
      const osdId = `n${n}-d${d}`;
      out.push({ osdId, nodeId: `n${n}`, alive: !dead.includes(osdId), freeBytes: 100 * GiB });
    }
  }
  return out;
}

function perNode(placement: (string | undefined)[], all: OsdState[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of placement) {
    if (id === undefined) continue;
    const node = all.find((o) => o.osdId === id)?.nodeId ?? '?';
    counts.set(node, (counts.get(node) ?? 0) + 1);
  }
  return counts;
}

function checkPlacement(placement: (string | undefined)[], all: OsdState[], x: number): void {
  const placed = placement.filter((id): id is string => id !== undefined);
  assert.equal(new Set(placed).size, placed.length, 'distinct OSDs');
  for (const id of placed) assert.ok(all.find((o) => o.osdId === id)?.alive, `${id} is alive`);
  for (const [node, count] of perNode(placement, all))
    assert.ok(count <= x, `${node} holds ${count} > x = ${x}`);
}

describe('policy choice', () => {
  test('single node, 6 ASDs: (4,2,5,6) with all 6 placed', () => {
    const all = osds(1, 6);
    const choice = choosePolicy(DEFAULT_PRESET_SINGLE_NODE, all, { random: seededRandom(1) });
    assert.deepEqual([choice.policy.k, choice.policy.m, choice.policyIndex], [4, 2, 0]);
    assert.equal(choice.placedCount, 6);
    checkPlacement(choice.placement, all, 6);
  });

  test('single node with dead ASDs falls back, keeping one fragment of redundancy at ack', () => {
    const one = osds(1, 6, ['n0-d0']);
    const a = choosePolicy(DEFAULT_PRESET_SINGLE_NODE, one, { random: seededRandom(2) });
    assert.deepEqual([a.policyIndex, a.placedCount], [0, 5]);
    assert.equal(a.placement[5], undefined, 'the last parity fragment waits for maintenance');
    checkPlacement(a.placement, one, 6);
    const two = osds(1, 6, ['n0-d0', 'n0-d1']);
    const b = choosePolicy(DEFAULT_PRESET_SINGLE_NODE, two, { random: seededRandom(3) });
    assert.deepEqual([b.policy.k, b.policy.m, b.placedCount], [3, 2, 4]);
    const three = osds(1, 6, ['n0-d0', 'n0-d1', 'n0-d2']);
    const c = choosePolicy(DEFAULT_PRESET_SINGLE_NODE, three, { random: seededRandom(4) });
    assert.deepEqual([c.policy.k, c.policy.m, c.placedCount], [2, 1, 3]);
  });

  test('nothing satisfiable: PROXY_NO_POLICY says what there is and what is needed', () => {
    const all = osds(1, 6, ['n0-d0', 'n0-d1', 'n0-d2', 'n0-d3']);
    const err = throwsWith(
      () => choosePolicy(DEFAULT_PRESET_SINGLE_NODE, all, { random: seededRandom(5) }),
      'PROXY_NO_POLICY',
    );
    assert.match(err.message, /2 usable OSDs on 1 nodes/);
    assert.match(err.message, /\(4,2,5,6\) needs 5 fragments/);
    assert.match(err.message, /\(2,1,3,6\) needs 3 fragments/);
    throwsWith(
      () => choosePolicy(DEFAULT_PRESET_MULTI_NODE, [], { random: seededRandom(5) }),
      'PROXY_NO_POLICY',
    );
  });

  test('three nodes: (4,2,5,2) spread 2/2/2; one node down: (2,2,3,2) on the two left', () => {
    const all = osds(3, 4);
    const choice = choosePolicy(DEFAULT_PRESET_MULTI_NODE, all, { random: seededRandom(6) });
    assert.deepEqual([choice.policy.k, choice.policy.m, choice.placedCount], [4, 2, 6]);
    assert.deepEqual([...perNode(choice.placement, all).values()], [2, 2, 2]);
    const nodeDown = osds(3, 4, ['n2-d0', 'n2-d1', 'n2-d2', 'n2-d3']);
    const fallback = choosePolicy(DEFAULT_PRESET_MULTI_NODE, nodeDown, { random: seededRandom(7) });
    assert.deepEqual([fallback.policy.k, fallback.policy.m, fallback.placedCount], [2, 2, 4]);
    checkPlacement(fallback.placement, nodeDown, 2);
  });

  test('three nodes with one ASD each: only 3 fragments fit, so (2,2,3,2) places 3 of 4', () => {
    const all = osds(3, 1);
    const choice = choosePolicy(DEFAULT_PRESET_MULTI_NODE, all, { random: seededRandom(8) });
    assert.deepEqual([choice.policy.k, choice.policy.m, choice.placedCount], [2, 2, 3]);
    assert.equal(choice.placement[3], undefined);
  });
});

describe('placement', () => {
  test('x per node holds and nodes fill evenly, over many seeds and shapes', () => {
    const preset = parsePreset({
      name: 'wide',
      policies: [[8, 3, 8, 3]],
      fragmentSizeMaxBytes: 1024 * 1024,
      compression: 'none',
      encryption: 'none',
      checksum: 'crc32c',
    });
    for (let seed = 0; seed < 200; seed++) {
      const random = seededRandom(seed);
      const nodes = 3 + Math.floor(random() * 5);
      const all = osds(nodes, 1 + Math.floor(random() * 6)).map((o) => ({
        ...o,
        alive: random() > 0.15,
        freeBytes: Math.floor(random() * 100 * GiB) + 1,
      }));
      const policy = preset.policies[0] as (typeof preset.policies)[0];
      const placement = placeFragments(policy, all, { random });
      checkPlacement(placement, all, policy.x);
      const counts = [...perNode(placement, all).values()];
      // Spread: no node gets a second fragment while another usable node has none, etc.
      const usableNodes = new Set(all.filter((o) => o.alive).map((o) => o.nodeId));
      if (counts.length > 0 && placement.every((id) => id !== undefined)) {
        assert.ok(
          counts.length === Math.min(usableNodes.size, 11),
          `seed ${seed}: uses every node it can`,
        );
      }
    }
  });

  test('deterministic for a seed; more free space attracts more fragments', () => {
    const all = osds(1, 6).map((o, i) => ({ ...o, freeBytes: i === 0 ? 1000 * GiB : GiB }));
    const policy = { k: 1, m: 0, c: 1, x: 1 };
    const a = placeFragments(policy, all, { random: seededRandom(42) });
    const b = placeFragments(policy, all, { random: seededRandom(42) });
    assert.deepEqual(a, b);
    const random = seededRandom(9);
    let onBig = 0;
    for (let i = 0; i < 1000; i++)
      if (placeFragments(policy, all, { random })[0] === 'n0-d0') onBig++;
    assert.ok(onBig > 900, `the OSD with 1000x the space got ${onBig} of 1000`);
  });

  test('full OSDs (below minFreeBytes) are not used', () => {
    const all = osds(1, 3).map((o, i) => ({ ...o, freeBytes: i === 0 ? 10 : GiB }));
    const placement = placeFragments({ k: 2, m: 1, c: 2, x: 3 }, all, {
      random: seededRandom(1),
      minFreeBytes: 1024,
    });
    assert.equal(placement.filter((id) => id === 'n0-d0').length, 0);
    assert.equal(placement[2], undefined);
  });
});
