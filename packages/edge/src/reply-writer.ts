import type net from 'node:net';
import type { BudgetAccount } from './buffer-budget.js';
import { NBD_CONNECTION_MAX_UNSENT_BUFFERS, NBD_CONNECTION_MAX_UNSENT_BYTES } from './constants.js';

/**
 * The writing side of one connection's socket, and its reading switch: replies written in
 * one event-loop turn leave in one writev (corked until the next tick); replies the client
 * has not taken (NBD_CONNECTION_MAX_UNSENT_BYTES or _BUFFERS) make the connection stop
 * reading until the socket drains; the bytes waiting in the socket are counted in the
 * server's memory budget.
 */
export class ReplyWriter {
  private readPaused = false;
  private drainPending = false;
  private corked = false;
  private stopped = false;
  /** Buffers handed to socket.write whose callback has not run (queued, not yet sent). */
  private unsentBuffers = 0;
  /** socket.writableLength as last told to the budget. */
  private accountedBytes = 0;
  private readonly bufferWritten = (): void => {
    this.unsentBuffers -= 1;
    this.account();
  };

  constructor(
    private readonly socket: net.Socket,
    private readonly budget: BudgetAccount,
    /** The socket drained after replies piled up: reading may go on. */
    private readonly drained: () => void,
  ) {}

  /** Replies the client has not read are piled up: do not read more requests. */
  get waitingForDrain(): boolean {
    return this.drainPending;
  }

  send(buffer: Buffer): void {
    if (this.stopped) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.unsentBuffers += 1;
    this.socket.write(buffer, this.bufferWritten);
    this.account();
    if (
      !this.drainPending &&
      (this.socket.writableLength > NBD_CONNECTION_MAX_UNSENT_BYTES ||
        this.unsentBuffers > NBD_CONNECTION_MAX_UNSENT_BUFFERS)
    ) {
      // The client is not reading its replies: stop reading its requests until it does.
      this.drainPending = true;
      this.socket.once('drain', () => {
        this.drainPending = false;
        this.drained();
      });
    }
  }

  pauseReading(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.socket.pause();
  }

  resumeReading(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    this.socket.resume();
  }

  /** The socket is destroyed: what waited in it is gone, and given back to the budget. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.budget.release(this.accountedBytes);
    this.accountedBytes = 0;
  }

  /** Tells the budget how many reply bytes wait in the socket (Node's own count). */
  private account(): void {
    if (this.stopped) return;
    const unsentBytes = this.socket.writableLength;
    const grownBytes = unsentBytes - this.accountedBytes;
    if (grownBytes > 0) this.budget.acquire(grownBytes);
    else if (grownBytes < 0) this.budget.release(-grownBytes);
    this.accountedBytes = unsentBytes;
  }
}
