import { assert } from '@shale/common';

/**
 * Bytes received from a socket, consumed from the front in exact amounts. A message that
 * lies inside one received chunk is handed out as a view of it (no copy); only a message
 * that spans chunks is copied into a buffer of its own.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Bytes of chunks[0] already consumed. */
  private headOffset = 0;
  private lengthBytes = 0;

  get length(): number {
    return this.lengthBytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.lengthBytes += chunk.length;
  }

  /** Consumes n bytes (n <= length): a view when they lie in one chunk, else a copy. */
  take(n: number): Buffer {
    assert(n <= this.lengthBytes, `take(${n}) with ${this.lengthBytes} bytes queued`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0] as Buffer;
    const available = first.length - this.headOffset;
    if (n <= available) {
      const view = first.subarray(this.headOffset, this.headOffset + n);
      this.consumeFront(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let copied = 0;
    while (copied < n) {
      const chunk = this.chunks[0] as Buffer;
      const count = Math.min(n - copied, chunk.length - this.headOffset);
      chunk.copy(out, copied, this.headOffset, this.headOffset + count);
      copied += count;
      this.consumeFront(count);
    }
    return out;
  }

  /** The first n bytes (n <= length), not consumed: a view when in one chunk, else a copy. */
  peek(n: number): Buffer {
    assert(n <= this.lengthBytes, `peek(${n}) with ${this.lengthBytes} bytes queued`);
    const first = this.chunks[0] as Buffer;
    if (n <= first.length - this.headOffset) {
      return first.subarray(this.headOffset, this.headOffset + n);
    }
    const out = Buffer.allocUnsafe(n);
    let copied = 0;
    let at = this.headOffset;
    for (const chunk of this.chunks) {
      if (copied === n) break;
      const count = Math.min(n - copied, chunk.length - at);
      chunk.copy(out, copied, at, at + count);
      copied += count;
      at = 0;
    }
    return out;
  }

  /** Discards up to n bytes; returns how many were discarded. */
  skip(n: number): number {
    let skipped = 0;
    while (skipped < n && this.lengthBytes > 0) {
      const chunk = this.chunks[0] as Buffer;
      const count = Math.min(n - skipped, chunk.length - this.headOffset);
      skipped += count;
      this.consumeFront(count);
    }
    return skipped;
  }

  /** Drops everything queued (the connection is closing). */
  clear(): void {
    this.chunks = [];
    this.headOffset = 0;
    this.lengthBytes = 0;
  }

  private consumeFront(n: number): void {
    this.headOffset += n;
    this.lengthBytes -= n;
    const first = this.chunks[0] as Buffer;
    if (this.headOffset === first.length) {
      this.chunks.shift();
      this.headOffset = 0;
    }
  }
}
