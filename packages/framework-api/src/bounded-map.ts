/**
 * `fn` over every item with at most `limit` calls in flight (probes of many ASDs or
 * storage routers must not open a connection to each at once). Results keep the order of
 * `items`; the first rejection rejects the whole (callers that want per-item failures
 * catch inside `fn`).
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
