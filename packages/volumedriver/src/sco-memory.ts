import { assert } from '@shale/common';

/**
 * Buffers that hold whole SCOs from their first append until they are uploaded, so an
 * upload hands the backend bytes already in memory instead of reading the SCO file back
 * (and the erasure coder's data fragments are views of them). One pool per volumedriver,
 * bounded; buffers are recycled (on these VMs first touching fresh memory costs about ten
 * times a copy), and a SCO that finds the pool empty is written to disk only and read
 * back for its upload, as before.
 *
 *   take() ──> lent ──give()──> free (reused by the next take of that size)
 *                 └──forget()──> dropped (an upload might still read it: never reused)
 */
export class ScoMemoryPool {
  private readonly free = new Map<number, Buffer[]>();
  private lentBytes = 0;
  private freeBytes = 0;
  /** SCOs started with memory / without (the pool was full): the second are read back. */
  readonly stats = { taken: 0, refused: 0 };

  constructor(readonly capacityBytes: number) {
    assert(Number.isSafeInteger(capacityBytes) && capacityBytes >= 0, 'SCO memory in bytes');
  }

  get lentBytesNow(): number {
    return this.lentBytes;
  }

  /** A buffer of exactly `sizeBytes` (contents undefined), or undefined when none fits. */
  take(sizeBytes: number): Buffer | undefined {
    const reusable = this.free.get(sizeBytes)?.pop();
    if (reusable !== undefined) {
      this.freeBytes -= sizeBytes;
      this.lentBytes += sizeBytes;
      this.stats.taken += 1;
      return reusable;
    }
    // Free buffers of other sizes (another vPool's SCO size) make room first.
    for (const [size, buffers] of this.free) {
      while (this.lentBytes + this.freeBytes + sizeBytes > this.capacityBytes && buffers.length) {
        buffers.pop();
        this.freeBytes -= size;
      }
    }
    if (this.lentBytes + this.freeBytes + sizeBytes > this.capacityBytes) {
      this.stats.refused += 1;
      return undefined;
    }
    this.lentBytes += sizeBytes;
    this.stats.taken += 1;
    return Buffer.allocUnsafeSlow(sizeBytes);
  }

  /** The buffer is no longer read by anyone: the next take() of its size may reuse it. */
  give(buffer: Buffer): void {
    this.lentBytes -= buffer.length;
    assert(this.lentBytes >= 0, 'SCO memory given back more than it lent');
    const list = this.free.get(buffer.length) ?? [];
    list.push(buffer);
    this.free.set(buffer.length, list);
    this.freeBytes += buffer.length;
  }

  /** The buffer leaves the pool's accounting without being reused (it may still be read). */
  forget(buffer: Buffer): void {
    this.lentBytes -= buffer.length;
    assert(this.lentBytes >= 0, 'SCO memory forgotten more than it lent');
  }
}
