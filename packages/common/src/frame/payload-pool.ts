import { assert } from '../assert.js';

/**
 * Reusable receive buffers for large frame payloads. A payload split over TCP chunks must
 * be joined into one buffer; allocating a fresh one per frame (2-33 MiB: an erasure-coded
 * fragment) costs page faults on first touch and, worse, counts as new external memory for
 * V8, which answers with full mark-compact collections: under uploads an ASD spent about a
 * quarter of its CPU in major GC. Buffers taken from here are given back when the request
 * that received them is answered, and reused.
 *
 * The contract is strict: whoever gets a pooled payload must not keep any view of it once
 * its request settles (copy what must outlive it). The frame server gives the payload back
 * only after the handler's promise settled and its reply was written.
 *
 * Buffers come in power-of-two capacities from minBytes up; at most maxFreeBytes wait in
 * the free lists (the rest are left to the garbage collector).
 */
export class PayloadPool {
  private readonly free = new Map<number, Buffer[]>();
  private freeBytes = 0;
  private taken = 0;
  private reused = 0;

  constructor(
    /** Payloads smaller than this are not pooled (a plain allocation is cheap). */
    readonly minBytes: number,
    readonly maxFreeBytes: number,
  ) {
    assert(Number.isInteger(minBytes) && minBytes > 0, 'pool minBytes must be a positive integer');
    assert(Number.isInteger(maxFreeBytes) && maxFreeBytes >= 0, 'pool maxFreeBytes must be >= 0');
  }

  /** A buffer of exactly `bytes` (a view of a pooled one), and its give-back. */
  take(bytes: number): { buffer: Buffer; release: () => void } {
    assert(bytes >= this.minBytes, `a pooled payload of ${bytes} B (minimum ${this.minBytes})`);
    const capacity = 2 ** Math.ceil(Math.log2(bytes));
    const list = this.free.get(capacity);
    let whole = list?.pop();
    if (whole !== undefined) {
      this.freeBytes -= capacity;
      this.reused += 1;
    } else {
      whole = Buffer.allocUnsafeSlow(capacity);
    }
    this.taken += 1;
    let released = false;
    const owned = whole;
    return {
      buffer: owned.subarray(0, bytes),
      release: () => {
        assert(!released, 'a pooled payload given back twice');
        released = true;
        if (this.freeBytes + capacity > this.maxFreeBytes) return;
        let bucket = this.free.get(capacity);
        if (bucket === undefined) {
          bucket = [];
          this.free.set(capacity, bucket);
        }
        bucket.push(owned);
        this.freeBytes += capacity;
      },
    };
  }

  /** For metrics and tests. */
  stats(): { taken: number; reused: number; freeBytes: number } {
    return { taken: this.taken, reused: this.reused, freeBytes: this.freeBytes };
  }
}
