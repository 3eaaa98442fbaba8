import {
  checkFramePayload,
  decodeFrameHeader,
  FRAME_HEADER_BYTES,
  type Frame,
  type FrameHeader,
} from './frame-format.js';
import type { PayloadPool } from './payload-pool.js';

const EMPTY = Buffer.alloc(0);

export interface FrameDecoderLimits {
  /** Frames announcing a larger payload fail with FRAME_TOO_LARGE before it is buffered. */
  readonly maxPayloadBytes: number;
  readonly versionMin?: number;
  readonly versionMax?: number;
  /**
   * Joins payloads of at least pool.minBytes that span chunks into pooled buffers; such a
   * frame carries `release`, which its consumer calls once nothing uses the payload.
   */
  readonly pool?: PayloadPool;
}

/**
 * Cuts a byte stream (TCP chunks of any size) into frames. A payload that arrived in one
 * chunk is handed out as a view of it (no copy); one split over chunks is joined once.
 * Never holds more than one header plus one payload of at most maxPayloadBytes (plus the
 * chunk being cut). The first violation throws a FrameError from push(), and the decoder
 * is dead from then on: the caller closes the connection.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private chunkBytes = 0;
  /** The header of the frame whose payload is awaited. */
  private header: FrameHeader | undefined;
  private failed: Error | undefined;

  constructor(
    private readonly limits: FrameDecoderLimits,
    private readonly onFrame: (frame: Frame) => void,
  ) {}

  /** Bytes received and not yet handed out as frames. */
  get bufferedBytes(): number {
    return this.chunkBytes;
  }

  push(chunk: Buffer): void {
    if (this.failed !== undefined) throw this.failed;
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.chunkBytes += chunk.length;
    try {
      this.cut();
    } catch (err) {
      this.failed = err as Error;
      this.chunks = [];
      this.chunkBytes = 0;
      throw err;
    }
  }

  private cut(): void {
    for (;;) {
      if (this.header === undefined) {
        if (this.chunkBytes < FRAME_HEADER_BYTES) return;
        // Decoded before it is consumed: a bad header leaves nothing half taken.
        this.header = decodeFrameHeader(this.peek(FRAME_HEADER_BYTES), 0, this.limits);
        this.consume(FRAME_HEADER_BYTES);
      }
      const header = this.header;
      if (this.chunkBytes < header.payloadBytes) return;
      this.header = undefined;
      const pooled = this.takePooled(header.payloadBytes);
      const payload = pooled?.buffer ?? this.take(header.payloadBytes);
      try {
        checkFramePayload(header, payload);
      } catch (err) {
        pooled?.release();
        throw err;
      }
      this.onFrame(
        pooled === undefined
          ? { ...header, payload }
          : { ...header, payload, release: pooled.release },
      );
      if (this.failed !== undefined) return;
    }
  }

  /** The next `n` bytes (n <= bufferedBytes), left in place: a view when in one chunk. */
  private peek(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (const chunk of this.chunks) {
      const part = Math.min(chunk.length, n - at);
      chunk.copy(out, at, 0, part);
      at += part;
      if (at === n) break;
    }
    return out;
  }

  /** The next `n` bytes, removed, in a pooled buffer: when pooled and they span chunks. */
  private takePooled(n: number): { buffer: Buffer; release: () => void } | undefined {
    const pool = this.limits.pool;
    if (pool === undefined || n < pool.minBytes || (this.chunks[0] as Buffer).length >= n) {
      return undefined;
    }
    const taken = pool.take(n);
    let at = 0;
    for (const chunk of this.chunks) {
      const part = Math.min(chunk.length, n - at);
      chunk.copy(taken.buffer, at, 0, part);
      at += part;
      if (at === n) break;
    }
    this.consume(n);
    return taken;
  }

  /** The next `n` bytes, removed. */
  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const out = this.peek(n);
    this.consume(n);
    return out;
  }

  private consume(n: number): void {
    this.chunkBytes -= n;
    let left = n;
    while (left > 0) {
      const first = this.chunks[0] as Buffer;
      if (first.length <= left) {
        this.chunks.shift();
        left -= first.length;
      } else {
        this.chunks[0] = first.subarray(left);
        left = 0;
      }
    }
  }
}
