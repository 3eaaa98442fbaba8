/**
 * One administrative operation at a time per key (a vDisk id): later ones queue in arrival
 * order. A failed operation does not block the next. The queue per key is bounded only by
 * the callers (the gRPC server's concurrency); the map holds a key only while it is in use.
 */
export class AdminLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  async with<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(work);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Waits until every operation queued so far has finished (close). */
  async drain(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }
}
