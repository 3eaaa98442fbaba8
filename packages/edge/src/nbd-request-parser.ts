/**
 * The request parser: the bytes one client sends, cut into requests. It owns the
 * connection's receive queue and its read state:
 *
 *   handshake --GO / EXPORT_NAME--> request-header <----- payload read or skipped ----+
 *       |                             |  \--WRITE, checks pass--> write-payload -------+
 *       |                             |   \-WRITE refused-------> payload-skip --------+
 *       +--ABORT----------------------+--DISC, half-close--> disconnecting
 *   (any) --socket error or gone, protocol failure, the edge stopping--> closed
 *
 * Option haggling reads its own bytes (nbd-handshake.ts); from transmission on, each
 * 28-byte header is parsed once, in place, and checked (nbd-request-checks.ts) before the
 * request goes to nbd-transmission.ts. A WRITE's payload is read whatever the verdict, so
 * the stream stays in step. Before each header is taken the connection's limits and the
 * server's memory budget are asked (the payload is what a request costs); when they say no
 * the socket is paused, and the connection calls process() again once there is room.
 */
import { ByteQueue } from './byte-queue.js';
import { NBD_MAX_PAYLOAD_BYTES } from './constants.js';
import type { NbdHandshake } from './nbd-handshake.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_REQUEST_HEADER_BYTES,
  NBD_REQUEST_MAGIC,
  type NbdErrno,
} from './nbd-protocol.js';
import { checkRequest, type RequestContext } from './nbd-request-checks.js';
import type { Transmission } from './nbd-transmission.js';

/** Where the connection is in the client's byte stream (and in its life: see above). */
export type ParserState =
  | { readonly kind: 'handshake' }
  | { readonly kind: 'request-header' }
  | {
      readonly kind: 'write-payload';
      readonly flags: number;
      readonly handleHi: number;
      readonly handleLo: number;
      readonly offsetBytes: number;
      readonly lengthBytes: number;
    }
  | {
      readonly kind: 'payload-skip';
      readonly handleHi: number;
      readonly handleLo: number;
      readonly errno: NbdErrno;
      readonly message: string;
      remainingBytes: number;
    }
  | { readonly kind: 'disconnecting' }
  | { readonly kind: 'closed' };

/** What the parser asks of its connection (nbd-connection.ts). */
export interface RequestParserHost {
  /** A per-connection limit is reached (in flight, unsent replies): take no request now. */
  mustPause(): boolean;
  pauseReading(): void;
  /** Asks the server's memory budget for a request's payload bytes (buffer-budget.ts). */
  admit(payloadBytes: number): boolean;
  /** NBD_CMD_DISC: answer what is in flight, then close. */
  disconnect(): void;
  /** Bad request magic: the connection goes. */
  protocolFailure(reason: string): void;
}

export class RequestParser {
  private readonly queue = new ByteQueue();
  private current: ParserState = { kind: 'handshake' };

  constructor(
    private readonly handshake: NbdHandshake,
    private readonly transmission: Transmission,
    private readonly host: RequestParserHost,
  ) {}

  get state(): ParserState {
    return this.current;
  }

  /** Bytes from the socket; nothing more is read once disconnecting or closed. */
  received(chunk: Buffer): void {
    if (this.current.kind === 'closed' || this.current.kind === 'disconnecting') return;
    this.queue.push(chunk);
    this.process();
  }

  /** The handshake opened an export: requests from now on. */
  enterTransmission(): void {
    this.current = { kind: 'request-header' };
  }

  /** No more requests are read (DISC, a half-close, or the end after the handshake). */
  toDisconnecting(): void {
    this.current = { kind: 'disconnecting' };
  }

  /** The connection is closed: what was received and not parsed is dropped. */
  toClosed(): void {
    this.current = { kind: 'closed' };
    this.queue.clear();
  }

  /** Consumes queued bytes for as long as the current state can make progress. */
  process(): void {
    for (;;) {
      const state = this.current;
      switch (state.kind) {
        case 'handshake':
          // Option haggling reads its own bytes (nbd-handshake.ts); transmission starts
          // from the connection's maybeResume() once GO or EXPORT_NAME opened an export.
          this.handshake.process(this.queue);
          return;
        case 'request-header': {
          if (this.host.mustPause()) {
            this.host.pauseReading();
            return;
          }
          if (this.queue.length < NBD_REQUEST_HEADER_BYTES) return;
          if (!this.admitNext()) {
            this.host.pauseReading();
            return;
          }
          this.parseRequest(this.queue.take(NBD_REQUEST_HEADER_BYTES));
          break;
        }
        case 'write-payload': {
          if (this.queue.length < state.lengthBytes) return;
          const data = this.queue.take(state.lengthBytes);
          this.transmission.payloadReceived();
          this.current = { kind: 'request-header' };
          this.transmission.runWrite(
            state.flags,
            state.handleHi,
            state.handleLo,
            state.offsetBytes,
            data,
          );
          break;
        }
        case 'payload-skip': {
          state.remainingBytes -= this.queue.skip(state.remainingBytes);
          if (state.remainingBytes > 0) return;
          this.current = { kind: 'request-header' };
          this.transmission.refuse(
            state.handleHi,
            state.handleLo,
            NBD_CMD_WRITE,
            state.errno,
            state.message,
          );
          break;
        }
        case 'disconnecting':
        case 'closed':
          return;
      }
    }
  }

  /**
   * Asks the server's budget whether the request whose header is queued may be read (its
   * payload is what it costs). DISC, and a header that will fail, need no room.
   */
  admitNext(): boolean {
    if (this.queue.length < NBD_REQUEST_HEADER_BYTES) return true;
    const header = this.queue.peek(NBD_REQUEST_HEADER_BYTES);
    if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) return true;
    const command = header.readUInt16BE(6);
    if (command === NBD_CMD_DISC) return true;
    const lengthBytes = header.readUInt32BE(24);
    const payload =
      (command === NBD_CMD_READ || command === NBD_CMD_WRITE) &&
      lengthBytes <= NBD_MAX_PAYLOAD_BYTES;
    return this.host.admit(payload ? lengthBytes : 0);
  }

  private parseRequest(header: Buffer): void {
    if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
      this.host.protocolFailure('bad request magic');
      return;
    }
    const flags = header.readUInt16BE(4);
    const command = header.readUInt16BE(6);
    const handleHi = header.readUInt32BE(8);
    const handleLo = header.readUInt32BE(12);
    const offsetHi = header.readUInt32BE(16);
    // Offsets at or above 2^53 are past the end of every export: make them Infinity.
    const offsetBytes =
      offsetHi >= 0x20_0000
        ? Number.POSITIVE_INFINITY
        : offsetHi * 0x1_0000_0000 + header.readUInt32BE(20);
    const lengthBytes = header.readUInt32BE(24);
    const context = this.transmission.context as RequestContext;

    if (command === NBD_CMD_DISC) {
      this.current = { kind: 'disconnecting' };
      this.queue.clear();
      this.host.disconnect();
      return;
    }
    const refusal = checkRequest(command, flags, offsetBytes, lengthBytes, context);
    if (command === NBD_CMD_WRITE) {
      // The payload follows the header whatever the verdict: consume it to stay in step.
      if (refusal !== undefined) {
        this.current = {
          kind: 'payload-skip',
          handleHi,
          handleLo,
          errno: refusal.errno,
          message: refusal.message,
          remainingBytes: lengthBytes,
        };
      } else {
        this.current = {
          kind: 'write-payload',
          flags,
          handleHi,
          handleLo,
          offsetBytes,
          lengthBytes,
        };
        // Counted from now, so the payload being received holds back further reading.
        this.transmission.reservePayload(lengthBytes);
      }
      return;
    }
    if (refusal !== undefined) {
      this.transmission.refuse(handleHi, handleLo, command, refusal.errno, refusal.message);
      return;
    }
    this.transmission.run(command, flags, handleHi, handleLo, offsetBytes, lengthBytes);
  }
}
