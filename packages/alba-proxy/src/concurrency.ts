import { assert } from '@shale/common';

/**
 * Runs fn over items with at most `limit` calls in flight, results in item order. The
 * codec's native work (coder, compression) runs on libuv's thread pool; the limit keeps one
 * large object from filling the pool and starving every other request of the process.
 */
export async function mapWithConcurrency<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  assert(limit >= 1, 'concurrency limit must be >= 1');
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T, index);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, () => worker()));
  return results;
}
