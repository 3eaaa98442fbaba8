import type net from 'node:net';
import { GatheredWriter } from '@shale/common';
import type { BudgetAccount } from './buffer-budget.js';
import { NBD_CONNECTION_MAX_UNSENT_BUFFERS, NBD_CONNECTION_MAX_UNSENT_BYTES } from './constants.js';

/**
 * The writing side of one connection's socket, and its reading switch: replies written in
 * one event-loop turn leave in one writev (@shale/common's GatheredWriter, which also
 * counts the buffers not written out yet); replies the client has not taken
 * (NBD_CONNECTION_MAX_UNSENT_BYTES or _BUFFERS) make the connection stop reading until the
 * socket drains; the bytes waiting in the socket are counted in the server's memory budget.
 */
export class ReplyWriter {
  private readPaused = false;
  private drainPending = false;
  private stopped = false;
  /** socket.writableLength as last told to the budget. */
  private accountedBytes = 0;
  /** Corks per turn; counts the buffers handed to the socket and not written out yet. */
  private readonly gathered: GatheredWriter;

  constructor(
    private readonly socket: net.Socket,
    private readonly budget: BudgetAccount,
    /** The socket drained after replies piled up: reading may go on. */
    private readonly drained: () => void,
  ) {
    this.gathered = new GatheredWriter(socket, { written: () => this.account() });
  }

  /** Replies the client has not read are piled up: do not read more requests. */
  get waitingForDrain(): boolean {
    return this.drainPending;
  }

  send(buffer: Buffer): void {
    if (this.stopped) return;
    this.gathered.write(buffer, undefined);
    this.account();
    if (
      !this.drainPending &&
      (this.socket.writableLength > NBD_CONNECTION_MAX_UNSENT_BYTES ||
        this.gathered.unsentBuffers > NBD_CONNECTION_MAX_UNSENT_BUFFERS)
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
