// Proves the shared seeded PRNGs still produce the sequences the replaced per-test copies did (first draws pinned for seeds 0 and 42), so recorded seeds and SHALE_SEED / VD_TEST_SEED / VOLUME_SERVICE_SEED replays keep replaying the same runs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Random, seededRandom, xorshift32Random } from './seeded-random.js';

const draws = (random: Random): number[] =>
  Array.from({ length: 3 }, () => Math.floor(random() * 2 ** 32));

test('seededRandom is mulberry32: the first draws of seeds 0 and 42', () => {
  assert.deepEqual(draws(seededRandom(0)), [1144304738, 1416247, 958946056]);
  assert.deepEqual(draws(seededRandom(42)), [2581720956, 1925393290, 3661312704]);
});

test('xorshift32Random is xorshift32 (13, 17, 5), seed 0 taken as 1', () => {
  assert.deepEqual(draws(xorshift32Random(0)), [270369, 67634689, 2647435461]);
  assert.deepEqual(draws(xorshift32Random(1)), [270369, 67634689, 2647435461]);
  assert.deepEqual(draws(xorshift32Random(42)), [11355432, 2836018348, 476557059]);
});

test('every draw is in [0, 1)', () => {
  for (const random of [seededRandom(7), xorshift32Random(7)]) {
    for (let i = 0; i < 10_000; i += 1) {
      const value = random();
      assert.ok(value >= 0 && value < 1, `draw ${i}: ${value}`);
    }
  }
});
