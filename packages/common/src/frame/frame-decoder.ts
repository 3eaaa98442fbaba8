import {
  checkFramePayload,
  decodeFrameHeader,
  FRAME_HEADER_BYTES,
  type Frame,
  type FrameHeader,
} from './frame-format.js';
import type { PayloadPool } from './payload-pool.js';

const EMPTY = Buffer.alloc(0);
/**
 * Payloads below this are carved from a shared slab (one allocation per SLAB_BYTES instead
 * of one per frame); larger ones get their own buffer. A carved payload keeps its slab alive
 * while any view of it lives: at most SLAB_BYTES per slab.
 */
const SLAB_PAYLOAD_MAX_BYTES = 64 * 1024;
const SLAB_BYTES = 256 * 1024;
/** Carved payloads start on 8-byte boundaries (typed-array views of them stay legal). */
const SLAB_ALIGN_BYTES = 8;

export interface FrameDecoderLimits {
  /** Frames announcing a larger payload fail with FRAME_TOO_LARGE before it is buffered. */
  readonly maxPayloadBytes: number;
  readonly versionMin?: number;
  readonly versionMax?: number;
  /**
   * Payloads of at least pool.minBytes are received into pooled buffers; such a frame
   * carries `release`, which its consumer calls once nothing uses the payload.
   */
  readonly pool?: PayloadPool;
}

/**
 * Cuts a byte stream (TCP chunks of any size) into frames, copying every byte it keeps: no
 * view of a pushed chunk outlives push(), so the socket may be read into one buffer that is
 * reused for every read (socket-reader.ts) instead of a fresh allocation per read, which V8
 * counts as external memory and answers with full collections. A payload is copied once,
 * into its own buffer (pooled, carved from a slab, or allocated), as its bytes arrive.
 *
 *   header: bytes into a 40-byte scratch -> decoded and checked (a bad one throws)
 *   -> payload: bytes into the payload's buffer -> whole: CRC checked -> onFrame
 *
 * Holds at most one header and one payload of at most maxPayloadBytes. The first violation
 * throws a FrameError from push(), and the decoder is dead from then on: the caller closes
 * the connection.
 */
export class FrameDecoder {
  private readonly headerScratch = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  private headerFill = 0;
  /** The header of the frame whose payload is being received. */
  private header: FrameHeader | undefined;
  private payload: Buffer = EMPTY;
  private payloadFill = 0;
  private release: (() => void) | undefined;
  private slab: Buffer = EMPTY;
  private slabAt = 0;
  private failed: Error | undefined;

  constructor(
    private readonly limits: FrameDecoderLimits,
    private readonly onFrame: (frame: Frame) => void,
  ) {}

  /** Bytes received and not yet handed out as frames. */
  get bufferedBytes(): number {
    return this.headerFill + this.payloadFill;
  }

  /** Takes what `chunk` holds; the chunk may be reused by the caller once this returns. */
  push(chunk: Buffer): void {
    if (this.failed !== undefined) throw this.failed;
    try {
      this.cut(chunk);
    } catch (err) {
      this.failed = err as Error;
      this.release?.();
      this.release = undefined;
      this.header = undefined;
      this.payload = EMPTY;
      this.headerFill = 0;
      this.payloadFill = 0;
      throw err;
    }
  }

  private cut(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.header === undefined) {
        const part = Math.min(FRAME_HEADER_BYTES - this.headerFill, chunk.length - at);
        chunk.copy(this.headerScratch, this.headerFill, at, at + part);
        this.headerFill += part;
        at += part;
        if (this.headerFill < FRAME_HEADER_BYTES) return;
        this.header = decodeFrameHeader(this.headerScratch, 0, this.limits);
        this.headerFill = 0;
        this.startPayload(this.header.payloadBytes);
      } else {
        const part = Math.min(this.payload.length - this.payloadFill, chunk.length - at);
        chunk.copy(this.payload, this.payloadFill, at, at + part);
        this.payloadFill += part;
        at += part;
      }
      if (this.payloadFill === this.payload.length) {
        this.finishFrame();
        if (this.failed !== undefined) return;
      }
    }
  }

  private startPayload(bytes: number): void {
    this.payloadFill = 0;
    const pool = this.limits.pool;
    if (bytes === 0) {
      this.payload = EMPTY;
    } else if (pool !== undefined && bytes >= pool.minBytes) {
      const taken = pool.take(bytes);
      this.payload = taken.buffer;
      this.release = taken.release;
    } else if (bytes < SLAB_PAYLOAD_MAX_BYTES) {
      if (this.slabAt + bytes > this.slab.length) {
        this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
        this.slabAt = 0;
      }
      this.payload = this.slab.subarray(this.slabAt, this.slabAt + bytes);
      this.slabAt += Math.ceil(bytes / SLAB_ALIGN_BYTES) * SLAB_ALIGN_BYTES;
    } else {
      this.payload = Buffer.allocUnsafeSlow(bytes);
    }
  }

  private finishFrame(): void {
    const header = this.header as FrameHeader;
    const payload = this.payload;
    const release = this.release;
    this.header = undefined;
    this.payload = EMPTY;
    this.payloadFill = 0;
    this.release = undefined;
    try {
      checkFramePayload(header, payload);
    } catch (err) {
      release?.();
      throw err;
    }
    this.onFrame(release === undefined ? { ...header, payload } : { ...header, payload, release });
  }
}
