import { assert } from '@shale/common';

/**
 * A token bucket on bytes: `take(n)` spends n tokens and, when the bucket is in debt, waits
 * until the debt is paid back at `ratePerSec`. The burst is one second's worth. A request
 * larger than the burst is allowed (a whole fragment is one request) and paid for by waiting
 * afterwards, so the long-run rate holds and no request is refused.
 */
export class TokenBucket {
  private tokens: number;
  private lastMs: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly now: () => number = Date.now,
    private readonly sleep: (ms: number) => Promise<void> = defaultSleep,
  ) {
    assert(Number.isFinite(ratePerSec) && ratePerSec > 0, 'token bucket rate must be > 0');
    this.tokens = ratePerSec;
    this.lastMs = now();
  }

  async take(amount: number): Promise<void> {
    assert(amount >= 0, 'token bucket: negative amount');
    const nowMs = this.now();
    this.tokens = Math.min(
      this.ratePerSec,
      this.tokens + ((nowMs - this.lastMs) * this.ratePerSec) / 1000,
    );
    this.lastMs = nowMs;
    this.tokens -= amount;
    if (this.tokens < 0) await this.sleep(Math.ceil((-this.tokens * 1000) / this.ratePerSec));
  }
}

function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
