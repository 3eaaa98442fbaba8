/**
 * Transmission: the checked requests of one connection, run on its export and answered.
 * The parser (nbd-request-parser.ts) hands over only requests that passed the checks;
 * here each becomes one BlockExport call (block-export.ts), counted in flight until it
 * settles, and its reply is built (nbd-replies.ts) as soon as it does: replies go out of
 * order, as NBD allows. What an export answers is checked too before it is sent (a read of
 * the wrong length, bad extents: EIO, and the bug is logged). A failed call is answered
 * with the errno of its error code (errors.ts); the connection goes on.
 *
 * Payload bytes are held from when they are known (a write's header, a read's admission)
 * until the request settles, in `inFlightBytes` and in the connection's part of the
 * server's memory budget; the connection reads those counts for its flow control.
 */
import { errorMessage } from '@shale/common';
import type { BlockExport, Extent } from './block-export.js';
import type { BudgetAccount } from './buffer-budget.js';
import type { ConnectionObserver, ExportObserver, RequestKind } from './connection-observer.js';
import { NBD_BLOCK_STATUS_MAX_EXTENTS } from './constants.js';
import { nbdErrnoOf } from './errors.js';
import { BASE_ALLOCATION_ID, type Negotiated } from './nbd-handshake.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
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
import { commandName, type RequestContext } from './nbd-request-checks.js';

const KIND: Readonly<Record<number, RequestKind>> = {
  [NBD_CMD_READ]: 'read',
  [NBD_CMD_WRITE]: 'write',
  [NBD_CMD_FLUSH]: 'flush',
  [NBD_CMD_TRIM]: 'trim',
  [NBD_CMD_WRITE_ZEROES]: 'write_zeroes',
  [NBD_CMD_BLOCK_STATUS]: 'block_status',
};

/** What transmission asks of its connection (nbd-connection.ts). */
export interface TransmissionHost {
  /** Closed: nothing is sent any more (requests still running settle unanswered). */
  isClosed(): boolean;
  /** Writes to the socket (reply-writer.ts). */
  send(buffer: Buffer): void;
  log(line: string): void;
  /** A request settled: the connection may read on, finish disconnecting, or release. */
  settled(): void;
}

export class Transmission {
  private exp: BlockExport | undefined;
  private observer: ExportObserver | undefined;
  private requestContext: RequestContext | undefined;
  /** Structured replies negotiated (known once in transmission). */
  private structured = false;
  private running = 0;
  /** Payload bytes held: write payloads from their header on, reads until answered. */
  private heldBytes = 0;
  /** Of heldBytes, the write payload announced by a header and not yet received. */
  private payloadReservedBytes = 0;

  constructor(
    private readonly host: TransmissionHost,
    /** This connection's part of the server's buffer budget (buffer-budget.ts). */
    private readonly account: BudgetAccount,
    private readonly connectionObserver: ConnectionObserver,
  ) {}

  /** The handshake opened `opened` with what was negotiated: requests may come. */
  begin(opened: BlockExport, negotiated: Negotiated): void {
    this.exp = opened;
    this.observer = this.connectionObserver.forExport(opened.info.name);
    this.structured = negotiated.structured;
    this.requestContext = {
      sizeBytes: opened.info.sizeBytes,
      readOnly: opened.info.readOnly,
      structured: negotiated.structured,
      blockStatus: negotiated.blockStatus,
    };
  }

  /** The export served (after the handshake, until released). */
  get export(): BlockExport | undefined {
    return this.exp;
  }

  /** What the request checks need to know (after the handshake). */
  get context(): RequestContext | undefined {
    return this.requestContext;
  }

  /** Requests running on the export, not settled yet. */
  get inFlight(): number {
    return this.running;
  }

  /** Payload bytes held by this connection's requests (see the header comment). */
  get inFlightBytes(): number {
    return this.heldBytes;
  }

  /** The export's last request settled after the close: let it go. */
  releaseExport(): void {
    this.exp?.release();
    this.exp = undefined;
  }

  /** A write header was taken: its payload counts from now on, while it is received. */
  reservePayload(lengthBytes: number): void {
    this.hold(lengthBytes);
    this.payloadReservedBytes = lengthBytes;
  }

  /** The reserved payload has arrived (the write runs now and holds it until settled). */
  payloadReceived(): void {
    this.payloadReservedBytes = 0;
  }

  /** The connection closed: a payload not received will not come; its bytes go back. */
  dropReservedPayload(): void {
    this.account.release(this.payloadReservedBytes);
    this.heldBytes -= this.payloadReservedBytes;
    this.payloadReservedBytes = 0;
  }

  /** Runs a checked request other than WRITE (and DISC, which the parser handles). */
  run(
    command: number,
    flags: number,
    handleHi: number,
    handleLo: number,
    offsetBytes: number,
    lengthBytes: number,
  ): void {
    const exp = this.exp as BlockExport;
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

  /** Runs a checked WRITE whose payload has arrived (held since reservePayload). */
  runWrite(
    flags: number,
    handleHi: number,
    handleLo: number,
    offsetBytes: number,
    data: Buffer,
  ): void {
    const exp = this.exp as BlockExport;
    const work =
      data.length === 0
        ? Promise.resolve()
        : exp.write(offsetBytes, data, (flags & NBD_CMD_FLAG_FUA) !== 0);
    this.track(handleHi, handleLo, NBD_CMD_WRITE, data.length, work, 0);
  }

  /** Answers a request with an error (structured when negotiated: it carries the message). */
  refuse(
    handleHi: number,
    handleLo: number,
    command: number,
    errno: NbdErrno,
    message: string,
    count = true,
  ): void {
    if (this.host.isClosed()) return;
    if (count) this.connectionObserver.protocolError('refused');
    if (count) this.host.log(`refused ${commandName(command)}: ${message}`);
    if (this.structured) this.host.send(errorChunk(handleHi, handleLo, errno, message));
    else this.host.send(simpleReply(handleHi, handleLo, errno));
  }

  /** Payload bytes from now until the request is settled (the limits count them). */
  private hold(bytes: number): void {
    this.heldBytes += bytes;
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
    this.running += 1;
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
    this.running -= 1;
    this.heldBytes -= bytes;
    this.account.release(bytes);
    (this.observer as ExportObserver).requestDone(
      KIND[command] as RequestKind,
      (performance.now() - started) / 1000,
      bytes,
      failed,
    );
    this.host.settled();
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
    if (this.host.isClosed()) return true;
    const broken = (what: string): false => {
      this.host.log(`export ${this.exp?.info.name}: ${what} (a bug in the export); answered EIO`);
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
        this.host.send(simpleReply(handleHi, handleLo, 0));
        this.host.send(data);
      } else if (data.length === 0) {
        this.host.send(noneChunk(handleHi, handleLo));
      } else {
        this.host.send(offsetDataHeader(handleHi, handleLo, arg, data.length));
        this.host.send(data);
      }
      return true;
    }
    if (command === NBD_CMD_BLOCK_STATUS) {
      const clipped = clipExtents(result as readonly Extent[], arg, lengthBytes);
      if ('broken' in clipped) return broken(clipped.broken);
      this.host.send(blockStatusChunk(handleHi, handleLo, BASE_ALLOCATION_ID, clipped.extents));
      return true;
    }
    // Durability: as BlockExport says for the command (write: visible, FUA: stable;
    // flush: everything answered before it is stable).
    this.host.send(simpleReply(handleHi, handleLo, 0));
    return true;
  }
}
