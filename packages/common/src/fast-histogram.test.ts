// Proves FastHistogram scrapes exactly like prom-client's Histogram for the same observations (buckets, +Inf, sum, count, labels).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from './fast-histogram.js';

const BUCKETS = [0.0001, 0.001, 0.01, 0.1, 1];

test('the exposition equals prom-client Histogram for the same observations', async () => {
  const reference = new Registry();
  const ours = new Registry();
  const slow = new Histogram({
    name: 'x_seconds',
    help: 'latency',
    labelNames: ['vdisk', 'op'],
    buckets: BUCKETS,
    registers: [reference],
  });
  const fast = new FastHistogram({
    name: 'x_seconds',
    help: 'latency',
    labelNames: ['vdisk', 'op'],
    buckets: BUCKETS,
    registers: [ours],
  });
  let seed = 7;
  const random = (): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const children = new Map<string, ReturnType<FastHistogram['child']>>();
  for (let i = 0; i < 5000; i += 1) {
    const vdisk = `v${Math.floor(random() * 3)}`;
    const op = random() < 0.5 ? 'read' : 'write';
    // Values on the bucket bounds too: `le` is inclusive.
    const value = random() < 0.1 ? (BUCKETS[i % BUCKETS.length] as number) : random() ** 4 * 3;
    slow.observe({ vdisk, op }, value);
    const key = `${vdisk}/${op}`;
    let child = children.get(key);
    if (child === undefined) {
      child = fast.child(vdisk, op);
      children.set(key, child);
    }
    child.observe(value);
  }
  const sortLines = (text: string): string[] => text.trim().split('\n').sort();
  const expected = sortLines(await reference.metrics());
  const actual = sortLines(await ours.metrics());
  // Sums are added in the same order, so even the floating-point text is identical.
  assert.deepEqual(actual, expected);
});

test('a second child of the same labels shares the series; bad buckets and label counts are refused', async () => {
  const registry = new Registry();
  const fast = new FastHistogram({
    name: 'y_seconds',
    help: 'h',
    labelNames: ['op'],
    buckets: [1, 2],
    registers: [registry],
  });
  fast.child('read').observe(1.5);
  fast.child('read').observe(3);
  const text = await registry.metrics();
  assert.match(text, /y_seconds_bucket\{le="2",op="read"\} 1/);
  assert.match(text, /y_seconds_bucket\{le="\+Inf",op="read"\} 2/);
  assert.match(text, /y_seconds_count\{op="read"\} 2/);
  assert.throws(() => fast.child(), /0 label values for 1 labels/);
  assert.throws(
    () => new FastHistogram({ name: 'z', help: 'h', labelNames: [], buckets: [2, 1] }),
    /must increase/,
  );
});
