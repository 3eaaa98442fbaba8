import type net from 'node:net';

export interface GatheredWriterOptions {
  /**
   * Called after each buffer this writer handed to the socket has been written out (the
   * callback of socket.write), once `unsentBuffers` counts it no more. With it the writer
   * counts its unsent buffers (the NBD edge stops reading a client that piles them up);
   * without it socket.write gets no callback (the frame client and server need none).
   */
  readonly written?: () => void;
}

/**
 * Writes frames to a socket gathered per event-loop turn: the first write of a turn corks
 * the socket, the next tick uncorks it, so everything sent in one turn leaves in one
 * writev. Payloads are written as they are (no concatenation copy).
 */
export class GatheredWriter {
  private corked = false;
  private unsent = 0;
  private readonly bufferWritten: (() => void) | undefined;

  constructor(
    private readonly socket: net.Socket,
    options: GatheredWriterOptions = {},
  ) {
    const written = options.written;
    if (written !== undefined) {
      this.bufferWritten = () => {
        this.unsent -= 1;
        written();
      };
    }
  }

  /**
   * Buffers handed to socket.write whose callback has not run (queued, not yet sent);
   * counted only with the `written` option (else 0).
   */
  get unsentBuffers(): number {
    return this.unsent;
  }

  write(header: Buffer, payload: Buffer | readonly Buffer[] | undefined): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.put(header);
    if (payload === undefined) return;
    if (Buffer.isBuffer(payload)) {
      if (payload.length > 0) this.put(payload);
      return;
    }
    for (const part of payload) if (part.length > 0) this.put(part);
  }

  private put(buffer: Buffer): void {
    if (this.bufferWritten === undefined) {
      this.socket.write(buffer);
      return;
    }
    this.unsent += 1;
    this.socket.write(buffer, this.bufferWritten);
  }
}
