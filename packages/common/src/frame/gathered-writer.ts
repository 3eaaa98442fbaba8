import type net from 'node:net';

/**
 * Writes frames to a socket gathered per event-loop turn: the first write of a turn corks
 * the socket, the next tick uncorks it, so everything sent in one turn leaves in one
 * writev. Payloads are written as they are (no concatenation copy).
 */
export class GatheredWriter {
  private corked = false;

  constructor(private readonly socket: net.Socket) {}

  write(header: Buffer, payload: Buffer | readonly Buffer[] | undefined): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(header);
    if (payload === undefined) return;
    if (Buffer.isBuffer(payload)) {
      if (payload.length > 0) this.socket.write(payload);
      return;
    }
    for (const part of payload) if (part.length > 0) this.socket.write(part);
  }
}
