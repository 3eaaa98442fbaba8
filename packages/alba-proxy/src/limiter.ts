import { assert } from '@shale/common';
import { ProxyErrorCode, proxyError } from './errors.js';

/**
 * A counting semaphore with a bounded wait queue: at most `max` holders, at most
 * `maxQueued` waiters; one more is refused with PROXY_BUSY (backpressure, not memory).
 */
export class Limiter {
  private held = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly max: number,
    private readonly maxQueued: number,
    private readonly what: string,
  ) {
    assert(max >= 1 && maxQueued >= 0, 'limiter bounds are positive');
  }

  /** Resolves with a release function, called exactly once when done. */
  async acquire(): Promise<() => void> {
    if (this.held >= this.max) {
      if (this.waiters.length >= this.maxQueued) {
        throw proxyError(
          ProxyErrorCode.Busy,
          `${this.what}: ${this.held} in progress and ${this.waiters.length} queued; retry later`,
        );
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    } else {
      this.held += 1;
    }
    let released = false;
    return () => {
      assert(!released, 'a limiter slot is released once');
      released = true;
      const next = this.waiters.shift();
      // The slot passes straight to the next waiter (held stays the same).
      if (next === undefined) this.held -= 1;
      else next();
    };
  }

  get inUse(): number {
    return this.held;
  }
}
