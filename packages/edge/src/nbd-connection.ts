/**
 * One NBD client connection: the fixed newstyle handshake, then the transmission phase.
 *
 *   greeting --client flags--> options --GO / EXPORT_NAME ok--> transmission
 *      |                         |  \--ABORT--> closed               |  \--DISC, all answered--> closed
 *      +--bad flags, timeout-----+--bad magic, too many options------+--bad magic, socket error--> closed
 *
 * Every byte from the client is parsed once: options by nbd-handshake.ts, requests here;
 * an export (block-export.ts) only ever sees checked requests. A client that breaks the protocol loses its own connection and
 * nothing else. Requests run concurrently and are answered as they complete (replies out
 * of order, as NBD allows). Backpressure: past NBD_CONNECTION_MAX_IN_FLIGHT requests, or
 * NBD_CONNECTION_MAX_IN_FLIGHT_BYTES of payload, or NBD_CONNECTION_MAX_UNSENT_BYTES (or
 * _BUFFERS) of replies the client has not read, the socket is not read until that drains;
 * and before each request is taken, the server's memory budget (buffer-budget.ts) is asked.
 */
import type net from 'node:net';
import { assert, errorMessage } from '@shale/common';
import type { BlockExport, ExportProvider, Extent } from './block-export.js';
import type { BudgetAccount, BufferBudget } from './buffer-budget.js';
import { ByteQueue } from './byte-queue.js';
import type {
  ConnectionObserver,
  ExportObserver,
  ProtocolErrorKind,
  RequestKind,
} from './connection-observer.js';
import {
  NBD_BLOCK_STATUS_MAX_EXTENTS,
  NBD_CONNECTION_MAX_IN_FLIGHT,
  NBD_CONNECTION_MAX_IN_FLIGHT_BYTES,
  NBD_MAX_PAYLOAD_BYTES,
} from './constants.js';
import { nbdErrnoOf } from './errors.js';
import {
  BASE_ALLOCATION_ID,
  type HandshakeHost,
  NbdHandshake,
  type Negotiated,
} from './nbd-handshake.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_REQUEST_HEADER_BYTES,
  NBD_REQUEST_MAGIC,
  NbdErrno,
} from './nbd-protocol.js';
import {
  blockStatusChunk,
  clipExtents,
  errorChunk,
  noneChunk,
  offsetDataHeader,
  simpleReply,
} from './nbd-replies.js';
import { checkRequest, commandName, type RequestContext } from './nbd-request-checks.js';
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

const KIND: Readonly<Record<number, RequestKind>> = {
  [NBD_CMD_READ]: 'read',
  [NBD_CMD_WRITE]: 'write',
  [NBD_CMD_FLUSH]: 'flush',
  [NBD_CMD_TRIM]: 'trim',
  [NBD_CMD_WRITE_ZEROES]: 'write_zeroes',
  [NBD_CMD_BLOCK_STATUS]: 'block_status',
};

type State =
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

export class NbdConnection {
  private readonly queue = new ByteQueue();
  private state: State = { kind: 'handshake' };
  private readonly log: (line: string) => void;
  private readonly handshake: NbdHandshake;
  /** Structured replies negotiated (known once in transmission). */
  private structured = false;

  private export: BlockExport | undefined;
  private observer: ExportObserver | undefined;
  private context: RequestContext | undefined;
  private inFlight = 0;
  /** Payload bytes held: write payloads from their header on, reads until answered. */
  private inFlightBytes = 0;
  /** Of inFlightBytes, the write payload announced by a header and not yet received. */
  private payloadReservedBytes = 0;
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
    this.closed = new Promise<void>((resolve) => {
      this.closedPromiseResolve = resolve;
    });
  }

  /** Sends the greeting and starts reading. */
  start(): void {
    const socket = this.socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      if (this.state.kind === 'closed' || this.state.kind === 'disconnecting') return;
      this.queue.push(chunk);
      this.process();
    });
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
    return this.export?.info.name;
  }

  // ------------------------------------------------------------------ the parser

  /** Consumes queued bytes for as long as the current state can make progress. */
  private process(): void {
    for (;;) {
      const state = this.state;
      switch (state.kind) {
        case 'handshake':
          // Option haggling reads its own bytes (nbd-handshake.ts); transmission starts
          // from maybeResume() once GO or EXPORT_NAME opened an export.
          this.handshake.process(this.queue);
          return;
        case 'request-header': {
          if (this.mustPause()) {
            this.pauseReading();
            return;
          }
          if (this.queue.length < NBD_REQUEST_HEADER_BYTES) return;
          if (!this.admitNext()) {
            this.pauseReading();
            return;
          }
          this.parseRequest(this.queue.take(NBD_REQUEST_HEADER_BYTES));
          break;
        }
        case 'write-payload': {
          if (this.queue.length < state.lengthBytes) return;
          const data = this.queue.take(state.lengthBytes);
          this.payloadReservedBytes = 0;
          this.state = { kind: 'request-header' };
          this.runWrite(state.flags, state.handleHi, state.handleLo, state.offsetBytes, data);
          break;
        }
        case 'payload-skip': {
          state.remainingBytes -= this.queue.skip(state.remainingBytes);
          if (state.remainingBytes > 0) return;
          this.state = { kind: 'request-header' };
          this.refuse(state.handleHi, state.handleLo, NBD_CMD_WRITE, state.errno, state.message);
          break;
        }
        case 'disconnecting':
        case 'closed':
          return;
      }
    }
  }

  private enterTransmission(opened: BlockExport, negotiated: Negotiated): void {
    this.handshake.stop();
    this.export = opened;
    this.observer = this.options.observer.forExport(opened.info.name);
    this.structured = negotiated.structured;
    this.context = {
      sizeBytes: opened.info.sizeBytes,
      readOnly: opened.info.readOnly,
      structured: negotiated.structured,
      blockStatus: negotiated.blockStatus,
    };
    this.state = { kind: 'request-header' };
    this.log(`connection entered transmission on export ${opened.info.name}`);
  }

  /** What the handshake may do to this connection. */
  private handshakeHost(): HandshakeHost {
    return {
      isClosed: () => this.state.kind === 'closed',
      send: (buffer) => this.send(buffer),
      pauseReading: () => this.pauseReading(),
      resumeReading: () => this.maybeResume(),
      endAfterReplies: () => this.endAfterReplies(),
      protocolFailure: (reason, kind) => this.protocolFailure(reason, kind),
      close: (reason) => this.close(reason),
      enterTransmission: (opened, negotiated) => this.enterTransmission(opened, negotiated),
    };
  }

  // ------------------------------------------------------------------ transmission

  private parseRequest(header: Buffer): void {
    if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
      this.protocolFailure('bad request magic');
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
    const context = this.context as RequestContext;

    if (command === NBD_CMD_DISC) {
      this.state = { kind: 'disconnecting' };
      this.queue.clear();
      this.finishDisconnect();
      return;
    }
    const refusal = checkRequest(command, flags, offsetBytes, lengthBytes, context);
    if (command === NBD_CMD_WRITE) {
      // The payload follows the header whatever the verdict: consume it to stay in step.
      if (refusal !== undefined) {
        this.state = {
          kind: 'payload-skip',
          handleHi,
          handleLo,
          errno: refusal.errno,
          message: refusal.message,
          remainingBytes: lengthBytes,
        };
      } else {
        this.state = { kind: 'write-payload', flags, handleHi, handleLo, offsetBytes, lengthBytes };
        // Counted from now, so the payload being received holds back further reading.
        this.hold(lengthBytes);
        this.payloadReservedBytes = lengthBytes;
      }
      return;
    }
    if (refusal !== undefined) {
      this.refuse(handleHi, handleLo, command, refusal.errno, refusal.message);
      return;
    }
    const exp = this.export as BlockExport;
    const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (command) {
      case NBD_CMD_READ:
        this.hold(lengthBytes);
        this.track(
          handleHi,
          handleLo,
          command,
          lengthBytes,
          exp.read(offsetBytes, lengthBytes),
          offsetBytes,
        );
        return;
      case NBD_CMD_FLUSH:
        this.track(handleHi, handleLo, command, 0, exp.flush(), 0);
        return;
      case NBD_CMD_TRIM:
        this.track(
          handleHi,
          handleLo,
          command,
          0,
          lengthBytes === 0 ? Promise.resolve() : exp.trim(offsetBytes, lengthBytes, fua),
          0,
        );
        return;
      case NBD_CMD_WRITE_ZEROES:
        this.track(
          handleHi,
          handleLo,
          command,
          0,
          lengthBytes === 0
            ? Promise.resolve()
            : exp.writeZeroes(offsetBytes, lengthBytes, {
                fua,
                noHole: (flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
              }),
          0,
        );
        return;
      case NBD_CMD_BLOCK_STATUS:
        this.track(
          handleHi,
          handleLo,
          command,
          0,
          exp.blockStatus(offsetBytes, lengthBytes),
          (flags & NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : NBD_BLOCK_STATUS_MAX_EXTENTS,
          lengthBytes,
        );
        return;
    }
  }

  private runWrite(
    flags: number,
    handleHi: number,
    handleLo: number,
    offsetBytes: number,
    data: Buffer,
  ): void {
    const exp = this.export as BlockExport;
    const work =
      data.length === 0
        ? Promise.resolve()
        : exp.write(offsetBytes, data, (flags & NBD_CMD_FLAG_FUA) !== 0);
    this.track(handleHi, handleLo, NBD_CMD_WRITE, data.length, work, 0);
  }

  /** Payload bytes from now until the request is settled (the limits count them). */
  private hold(bytes: number): void {
    this.inFlightBytes += bytes;
    this.account.acquire(bytes);
  }

  /**
   * Runs one admitted request and answers it. `bytes` are its payload bytes, held (hold())
   * until it is settled; `arg` is the read's offset, or the block-status extent limit.
   */
  private track(
    handleHi: number,
    handleLo: number,
    command: number,
    bytes: number,
    work: Promise<unknown>,
    arg: number,
    lengthBytes = bytes,
  ): void {
    const observer = this.observer as ExportObserver;
    const started = performance.now();
    this.inFlight += 1;
    observer.requestStarted();
    work.then(
      (result) => {
        const ok = this.answer(handleHi, handleLo, command, result, arg, lengthBytes);
        this.settled(command, bytes, started, !ok);
      },
      (err: unknown) => {
        const writing = command === NBD_CMD_WRITE || command === NBD_CMD_WRITE_ZEROES;
        const errno = nbdErrnoOf(err, writing);
        this.refuse(handleHi, handleLo, command, errno, errorMessage(err), false);
        this.settled(command, bytes, started, true);
      },
    );
  }

  private settled(command: number, bytes: number, started: number, failed: boolean): void {
    this.inFlight -= 1;
    this.inFlightBytes -= bytes;
    this.account.release(bytes);
    (this.observer as ExportObserver).requestDone(
      KIND[command] as RequestKind,
      (performance.now() - started) / 1000,
      bytes,
      failed,
    );
    if (this.state.kind === 'closed') {
      if (this.inFlight === 0) this.release();
    } else if (this.state.kind === 'disconnecting') this.finishDisconnect();
    else this.maybeResume();
  }

  /**
   * Sends the reply of a request its export completed; false when the export's answer
   * broke the block-export contract (an EIO is sent instead, and the bug is logged).
   */
  private answer(
    handleHi: number,
    handleLo: number,
    command: number,
    result: unknown,
    arg: number,
    lengthBytes: number,
  ): boolean {
    if (this.state.kind === 'closed') return true;
    const broken = (what: string): false => {
      this.log(`export ${this.export?.info.name}: ${what} (a bug in the export); answered EIO`);
      this.refuse(handleHi, handleLo, command, NbdErrno.EIO, `internal error: ${what}`, false);
      return false;
    };
    if (command === NBD_CMD_READ) {
      const data = result as Buffer;
      if (!Buffer.isBuffer(data) || data.length !== lengthBytes) {
        return broken(
          `a read of ${lengthBytes} bytes returned ${Buffer.isBuffer(data) ? data.length : typeof data}`,
        );
      }
      // Durability: not a write; the bytes are what every earlier acknowledged write left.
      if (!this.structured) {
        this.send(simpleReply(handleHi, handleLo, 0));
        this.send(data);
      } else if (data.length === 0) {
        this.send(noneChunk(handleHi, handleLo));
      } else {
        this.send(offsetDataHeader(handleHi, handleLo, arg, data.length));
        this.send(data);
      }
      return true;
    }
    if (command === NBD_CMD_BLOCK_STATUS) {
      const clipped = clipExtents(result as readonly Extent[], arg, lengthBytes);
      if ('broken' in clipped) return broken(clipped.broken);
      this.send(blockStatusChunk(handleHi, handleLo, BASE_ALLOCATION_ID, clipped.extents));
      return true;
    }
    // Durability: as BlockExport says for the command (write: visible, FUA: stable;
    // flush: everything answered before it is stable).
    this.send(simpleReply(handleHi, handleLo, 0));
    return true;
  }

  /** Answers a request with an error (structured when negotiated: it carries the message). */
  private refuse(
    handleHi: number,
    handleLo: number,
    command: number,
    errno: NbdErrno,
    message: string,
    count = true,
  ): void {
    if (this.state.kind === 'closed') return;
    if (count) this.options.observer.protocolError('refused');
    if (count) this.log(`refused ${commandName(command)}: ${message}`);
    if (this.structured) this.send(errorChunk(handleHi, handleLo, errno, message));
    else this.send(simpleReply(handleHi, handleLo, errno));
  }

  // ------------------------------------------------------------------ flow control

  /**
   * Asks the server's budget whether the request whose header is queued may be read (its
   * payload is what it costs). DISC, and a header that will fail, need no room.
   */
  private admitNext(): boolean {
    if (this.queue.length < NBD_REQUEST_HEADER_BYTES) return true;
    const header = this.queue.peek(NBD_REQUEST_HEADER_BYTES);
    if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) return true;
    const command = header.readUInt16BE(6);
    if (command === NBD_CMD_DISC) return true;
    const lengthBytes = header.readUInt32BE(24);
    const payload =
      (command === NBD_CMD_READ || command === NBD_CMD_WRITE) &&
      lengthBytes <= NBD_MAX_PAYLOAD_BYTES;
    return this.account.admit(payload ? lengthBytes : 0);
  }

  private mustPause(): boolean {
    return (
      this.inFlight >= NBD_CONNECTION_MAX_IN_FLIGHT ||
      this.inFlightBytes >= NBD_CONNECTION_MAX_IN_FLIGHT_BYTES ||
      this.writer.waitingForDrain
    );
  }

  private pauseReading(): void {
    this.writer.pauseReading();
  }

  private maybeResume(): void {
    const kind = this.state.kind;
    const reading =
      kind === 'request-header' ||
      kind === 'write-payload' ||
      (kind === 'handshake' && this.handshake.reading);
    if (!reading) return;
    if (this.mustPause()) return;
    if (kind === 'request-header' && !this.admitNext()) return;
    this.writer.resumeReading();
    this.process();
  }

  /** Writes to the socket (reply-writer.ts: one writev per tick, counted, drain watched). */
  private send(buffer: Buffer): void {
    if (this.state.kind === 'closed') return;
    this.writer.send(buffer);
  }

  // ------------------------------------------------------------------ ending

  private clientEnded(): void {
    // A half-close without NBD_CMD_DISC: answer what is in flight, then close.
    if (this.state.kind === 'closed') return;
    if (this.export === undefined) {
      this.close('client closed during the handshake');
      return;
    }
    this.state = { kind: 'disconnecting' };
    this.finishDisconnect();
  }

  private finishDisconnect(): void {
    if (this.inFlight > 0) return;
    this.endAfterReplies();
  }

  /** Ends the socket once queued replies are written, then releases the export. */
  private endAfterReplies(): void {
    if (this.state.kind === 'closed') return;
    this.state = { kind: 'disconnecting' };
    this.socket.end(() => this.close('disconnected'));
  }

  /** A client broke the protocol: its connection goes, nothing else does. */
  private protocolFailure(reason: string, kind: ProtocolErrorKind = 'violation'): void {
    if (this.state.kind === 'closed') return;
    this.options.observer.protocolError(kind);
    this.log(`closing connection: ${reason}`);
    this.close(reason);
  }

  private close(reason: string): void {
    if (this.state.kind === 'closed') return;
    this.state = { kind: 'closed' };
    this.handshake.stop();
    this.queue.clear();
    this.socket.destroy();
    // Queued replies went with the socket, a payload not received will not come; requests
    // still running hold their bytes until they settle.
    this.writer.stop();
    this.account.stopWaiting();
    this.account.release(this.payloadReservedBytes);
    this.inFlightBytes -= this.payloadReservedBytes;
    this.payloadReservedBytes = 0;
    // The export is released once requests already running on it have settled.
    if (this.inFlight === 0) this.release();
    if (reason !== 'disconnected' && reason !== 'socket closed')
      this.log(`connection closed: ${reason}`);
  }

  private release(): void {
    assert(
      this.account.heldBytes === 0,
      `a closed connection still holds ${this.account.heldBytes} buffer bytes`,
    );
    this.export?.release();
    this.export = undefined;
    this.closedPromiseResolve?.();
  }
}
