/**
 * One NBD client connection: the fixed newstyle handshake, then the transmission phase.
 *
 *   greeting --client flags--> options --GO / EXPORT_NAME ok--> transmission
 *      |                         |  \--ABORT--> closed               |  \--DISC, all answered--> closed
 *      +--bad flags, timeout-----+--bad magic, too many options------+--bad magic, socket error--> closed
 *
 * Every byte from the client is parsed once: options by nbd-handshake.ts, requests by
 * nbd-request-parser.ts, which hands checked requests to nbd-transmission.ts (run on the
 * export, answered as they complete: replies out of order, as NBD allows); an export
 * (block-export.ts) only ever sees checked requests. This class is the connection's life:
 * it starts it, moves it from handshake to transmission, decides when the socket is read,
 * and ends it. A client that breaks the protocol loses its own connection and nothing else.
 *
 * Backpressure: past NBD_CONNECTION_MAX_IN_FLIGHT requests, or
 * NBD_CONNECTION_MAX_IN_FLIGHT_BYTES of payload, or NBD_CONNECTION_MAX_UNSENT_BYTES (or
 * _BUFFERS) of replies the client has not read (reply-writer.ts), the socket is not read
 * until that drains; and before each request is taken, the server's memory budget
 * (buffer-budget.ts) is asked.
 */
import type net from 'node:net';
import { assert } from '@shale/common';
import type { BlockExport, ExportProvider } from './block-export.js';
import type { BudgetAccount, BufferBudget } from './buffer-budget.js';
import type { ConnectionObserver, ProtocolErrorKind } from './connection-observer.js';
import { NBD_CONNECTION_MAX_IN_FLIGHT, NBD_CONNECTION_MAX_IN_FLIGHT_BYTES } from './constants.js';
import { type HandshakeHost, NbdHandshake, type Negotiated } from './nbd-handshake.js';
import {
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_IHAVEOPT,
  NBD_MAGIC,
} from './nbd-protocol.js';
import { RequestParser } from './nbd-request-parser.js';
import { Transmission } from './nbd-transmission.js';
import { ReplyWriter } from './reply-writer.js';

export interface NbdConnectionOptions {
  readonly provider: ExportProvider;
  readonly observer: ConnectionObserver;
  /** Export served for an empty export name; none: an empty name is an unknown export. */
  readonly defaultExport?: string | undefined;
  readonly log?: (line: string) => void;
  /** Handshake deadlines (nbd-handshake.ts; defaults in constants.ts). */
  readonly handshakeIdleTimeoutMs?: number;
  readonly handshakeMaxMs?: number;
  /** The server's memory budget, shared by all its connections. */
  readonly budget: BufferBudget;
}

export class NbdConnection {
  private readonly log: (line: string) => void;
  private readonly handshake: NbdHandshake;
  /** The read state and the request parser (nbd-request-parser.ts). */
  private readonly parser: RequestParser;
  /** The requests running on the export and their replies (nbd-transmission.ts). */
  private readonly transmission: Transmission;
  /** This connection's part of the server's buffer budget (buffer-budget.ts). */
  private readonly account: BudgetAccount;
  private readonly writer: ReplyWriter;
  private closedPromiseResolve: (() => void) | undefined;
  /** Resolves when the connection is closed and its export released. */
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    private readonly options: NbdConnectionOptions,
  ) {
    this.log = options.log ?? (() => undefined);
    this.handshake = new NbdHandshake(this.handshakeHost(), options);
    this.account = options.budget.account(() => this.maybeResume());
    this.writer = new ReplyWriter(socket, this.account, () => this.maybeResume());
    this.transmission = new Transmission(
      {
        isClosed: () => this.parser.state.kind === 'closed',
        send: (buffer) => this.send(buffer),
        log: this.log,
        settled: () => this.requestSettled(),
      },
      this.account,
      options.observer,
    );
    this.parser = new RequestParser(this.handshake, this.transmission, {
      mustPause: () => this.mustPause(),
      pauseReading: () => this.pauseReading(),
      admit: (payloadBytes) => this.account.admit(payloadBytes),
      disconnect: () => this.finishDisconnect(),
      protocolFailure: (reason) => this.protocolFailure(reason),
    });
    this.closed = new Promise<void>((resolve) => {
      this.closedPromiseResolve = resolve;
    });
  }

  /** Sends the greeting and starts reading. */
  start(): void {
    const socket = this.socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.parser.received(chunk));
    socket.on('end', () => this.clientEnded());
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    socket.on('close', () => this.close('socket closed'));
    this.handshake.start();
    const greeting = Buffer.allocUnsafe(18);
    greeting.writeBigUInt64BE(NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(NBD_IHAVEOPT, 8);
    greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
    this.send(greeting);
  }

  /** Stops the connection at once (the edge is stopping): in-flight replies are dropped. */
  destroy(): void {
    this.close('the edge is stopping');
  }

  /** The export this connection serves (after the handshake). */
  get servedExport(): string | undefined {
    return this.transmission.export?.info.name;
  }

  // ------------------------------------------------------------------ handshake to transmission

  private enterTransmission(opened: BlockExport, negotiated: Negotiated): void {
    this.handshake.stop();
    this.transmission.begin(opened, negotiated);
    this.parser.enterTransmission();
    this.log(`connection entered transmission on export ${opened.info.name}`);
  }

  /** What the handshake may do to this connection. */
  private handshakeHost(): HandshakeHost {
    return {
      isClosed: () => this.parser.state.kind === 'closed',
      send: (buffer) => this.send(buffer),
      pauseReading: () => this.pauseReading(),
      resumeReading: () => this.maybeResume(),
      endAfterReplies: () => this.endAfterReplies(),
      protocolFailure: (reason, kind) => this.protocolFailure(reason, kind),
      close: (reason) => this.close(reason),
      enterTransmission: (opened, negotiated) => this.enterTransmission(opened, negotiated),
    };
  }

  // ------------------------------------------------------------------ flow control

  private mustPause(): boolean {
    return (
      this.transmission.inFlight >= NBD_CONNECTION_MAX_IN_FLIGHT ||
      this.transmission.inFlightBytes >= NBD_CONNECTION_MAX_IN_FLIGHT_BYTES ||
      this.writer.waitingForDrain
    );
  }

  private pauseReading(): void {
    this.writer.pauseReading();
  }

  private maybeResume(): void {
    const kind = this.parser.state.kind;
    const reading =
      kind === 'request-header' ||
      kind === 'write-payload' ||
      (kind === 'handshake' && this.handshake.reading);
    if (!reading) return;
    if (this.mustPause()) return;
    if (kind === 'request-header' && !this.parser.admitNext()) return;
    this.writer.resumeReading();
    this.parser.process();
  }

  /** Writes to the socket (reply-writer.ts: one writev per tick, counted, drain watched). */
  private send(buffer: Buffer): void {
    if (this.parser.state.kind === 'closed') return;
    this.writer.send(buffer);
  }

  /** A request settled: release after the close, finish a disconnect, or read on. */
  private requestSettled(): void {
    const kind = this.parser.state.kind;
    if (kind === 'closed') {
      if (this.transmission.inFlight === 0) this.release();
    } else if (kind === 'disconnecting') this.finishDisconnect();
    else this.maybeResume();
  }

  // ------------------------------------------------------------------ ending

  private clientEnded(): void {
    // A half-close without NBD_CMD_DISC: answer what is in flight, then close.
    if (this.parser.state.kind === 'closed') return;
    if (this.transmission.export === undefined) {
      this.close('client closed during the handshake');
      return;
    }
    this.parser.toDisconnecting();
    this.finishDisconnect();
  }

  private finishDisconnect(): void {
    if (this.transmission.inFlight > 0) return;
    this.endAfterReplies();
  }

  /** Ends the socket once queued replies are written, then releases the export. */
  private endAfterReplies(): void {
    if (this.parser.state.kind === 'closed') return;
    this.parser.toDisconnecting();
    this.socket.end(() => this.close('disconnected'));
  }

  /** A client broke the protocol: its connection goes, nothing else does. */
  private protocolFailure(reason: string, kind: ProtocolErrorKind = 'violation'): void {
    if (this.parser.state.kind === 'closed') return;
    this.options.observer.protocolError(kind);
    this.log(`closing connection: ${reason}`);
    this.close(reason);
  }

  private close(reason: string): void {
    if (this.parser.state.kind === 'closed') return;
    this.parser.toClosed(); // and what was received and not parsed is dropped
    this.handshake.stop();
    this.socket.destroy();
    // Queued replies went with the socket, a payload not received will not come; requests
    // still running hold their bytes until they settle.
    this.writer.stop();
    this.account.stopWaiting();
    this.transmission.dropReservedPayload();
    // The export is released once requests already running on it have settled.
    if (this.transmission.inFlight === 0) this.release();
    if (reason !== 'disconnected' && reason !== 'socket closed')
      this.log(`connection closed: ${reason}`);
  }

  private release(): void {
    assert(
      this.account.heldBytes === 0,
      `a closed connection still holds ${this.account.heldBytes} buffer bytes`,
    );
    this.transmission.releaseExport();
    this.closedPromiseResolve?.();
  }
}
