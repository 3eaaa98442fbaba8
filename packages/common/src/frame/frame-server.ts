import type net from 'node:net';
import { isShaleError, ShaleError } from '../errors.js';
import { FrameDecoder } from './frame-decoder.js';
import {
  encodeErrorPayload,
  encodeFrameHeader,
  FRAME_MAX_PAYLOAD_DEFAULT_BYTES,
  type Frame,
  FrameErrorCode,
  FrameFlag,
  FrameOp,
  FrameStatus,
  frameError,
} from './frame-format.js';
import { readHello } from './frame-hello.js';
import { GatheredWriter } from './gathered-writer.js';
import type { PayloadPool } from './payload-pool.js';
import { adoptReading } from './socket-reader.js';

/**
 * What a service does with the requests of one connection. `handle` answers one request:
 * its reply payload (or undefined), or a thrown/rejected ShaleError, sent back as an error
 * reply. A FrameError (code FRAME_*) thrown synchronously — an unknown op, an op the
 * connection's state does not allow — ends the connection instead.
 */
export interface FrameSession {
  handle(frame: Frame): Promise<Buffer | undefined>;
  /** The connection is gone (after its last reply or when it failed). */
  closed?(): void;
}

export interface FrameServerOptions {
  readonly maxPayloadBytes?: number;
  /**
   * Bytes one connection may hold: payloads of its requests being served plus replies the
   * socket has not sent. Past it the connection is not read until it drains, so a client
   * that stops reading its replies holds at most this much (default 64 MiB).
   */
  readonly maxBufferedBytes?: number;
  /**
   * The reply payload a request will get (a read's length), counted against
   * maxBufferedBytes from when it starts; default 0 (only request payloads count).
   */
  readonly replyBytesOf?: (frame: Frame) => number;
  /** Requests served at once per connection; the rest wait in arrival order (default 256). */
  readonly maxInFlightRequests?: number;
  readonly log?: (line: string) => void;
  /** Counters of this boundary (shared by all connections of a server). */
  readonly counters?: FrameServerCounters;
  /**
   * Large request payloads are received into these reusable buffers (payload-pool.ts) and
   * given back once the handler has settled and its reply is written: the handler must not
   * keep any view of a request's payload past its promise.
   */
  readonly payloadPool?: PayloadPool;
}

export interface FrameServerCounters {
  connections: number;
  requests: number;
  errorReplies: number;
  protocolErrors: number;
  pauses: number;
}

export function createFrameServerCounters(): FrameServerCounters {
  return { connections: 0, requests: 0, errorReplies: 0, protocolErrors: 0, pauses: 0 };
}

const BUFFERED_DEFAULT_BYTES = 64 * 1024 * 1024;
const IN_FLIGHT_REQUESTS_DEFAULT = 256;
/** How long a connection that broke the protocol gets to read its GOAWAY before it is cut. */
const GOAWAY_LINGER_MS = 1000;

/**
 * Serves the data protocol on one accepted socket: HELLO first, then requests in any
 * number, each answered when its handler settles (replies in any order, those of one turn
 * in one gathered write). A protocol violation sends GOAWAY with the reason and closes
 * this connection only. Accept with net.createServer({ pauseOnConnect: true }): the
 * connection is then read into one reused buffer (socket-reader.ts). Returns the socket it
 * serves on, which the caller tracks and closes (it may not be `accepted`).
 */
export function serveFrameConnection(
  accepted: net.Socket,
  session: FrameSession,
  options: FrameServerOptions = {},
): net.Socket {
  return new FrameServerConnection(session, options).start(accepted);
}

class FrameServerConnection {
  /** Handles of requests received and not answered (queued or started): bytes each holds. */
  private readonly inFlight = new Map<number, number>();
  /** Requests received but not started (the budget is full). */
  private readonly queue: Frame[] = [];
  private started = 0;
  private heldBytes = 0;
  private version = 0;
  private paused = false;
  private done = false;
  private readonly maxBuffered: number;
  private readonly maxPayload: number;
  private readonly counters: FrameServerCounters;

  private socket!: net.Socket;
  private writer!: GatheredWriter;

  constructor(
    private readonly session: FrameSession,
    private readonly options: FrameServerOptions,
  ) {
    this.maxBuffered = options.maxBufferedBytes ?? BUFFERED_DEFAULT_BYTES;
    this.maxPayload = options.maxPayloadBytes ?? FRAME_MAX_PAYLOAD_DEFAULT_BYTES;
    this.counters = options.counters ?? createFrameServerCounters();
  }

  /** Serves `accepted` (adopted into a socket reading into a reused buffer) and returns that. */
  start(accepted: net.Socket): net.Socket {
    this.counters.connections += 1;
    const decoder = new FrameDecoder(
      {
        maxPayloadBytes: this.maxPayload,
        ...(this.options.payloadPool === undefined ? {} : { pool: this.options.payloadPool }),
      },
      (frame) => this.onFrame(frame),
    );
    this.socket = adoptReading(accepted, (chunk: Buffer) => {
      if (this.done) return;
      try {
        decoder.push(chunk);
      } catch (err) {
        this.protocolError(err);
      }
    });
    this.writer = new GatheredWriter(this.socket);
    this.socket.setNoDelay(true);
    this.socket.on('drain', () => this.pump());
    this.socket.on('error', () => this.finish());
    this.socket.on('close', () => this.finish());
    return this.socket;
  }

  private onFrame(frame: Frame): void {
    if (this.done) return;
    if ((frame.flags & FrameFlag.Reply) !== 0) {
      throw frameError(
        FrameErrorCode.Malformed,
        `a reply (handle ${frame.handle}) sent to the server`,
      );
    }
    if (this.version === 0) {
      if (frame.op !== FrameOp.Hello) {
        throw frameError(FrameErrorCode.UnknownOp, `op ${frame.op} before HELLO`);
      }
      const hello = readHello(frame);
      this.version = hello.version;
      const reply = Buffer.alloc(4);
      reply.writeUInt32LE(this.maxPayload, 0);
      this.reply(frame, FrameStatus.Ok, reply);
      return;
    }
    if (frame.op === FrameOp.Hello) throw frameError(FrameErrorCode.UnknownOp, 'a second HELLO');
    if (this.inFlight.has(frame.handle)) {
      throw frameError(FrameErrorCode.HandleInUse, `handle ${frame.handle} is already in flight`);
    }
    this.inFlight.set(frame.handle, frame.payload.length);
    this.heldBytes += frame.payload.length;
    this.queue.push(frame);
    this.pump();
  }

  /** Starts queued requests while the budget has room, then pauses or resumes reading. */
  private pump(): void {
    const maxRequests = this.options.maxInFlightRequests ?? IN_FLIGHT_REQUESTS_DEFAULT;
    while (this.queue.length > 0 && !this.done) {
      // Replies the peer has not taken hold everything back; otherwise one request always
      // starts when none runs, whatever its size.
      if (this.socket.writableLength > this.maxBuffered) break;
      if (this.started > 0 && (this.started >= maxRequests || this.held() > this.maxBuffered))
        break;
      this.begin(this.queue.shift() as Frame);
    }
    this.flowControl();
  }

  private held(): number {
    return this.heldBytes + this.socket.writableLength;
  }

  private begin(frame: Frame): void {
    this.counters.requests += 1;
    this.started += 1;
    const replyBytes = this.options.replyBytesOf?.(frame) ?? 0;
    this.heldBytes += replyBytes;
    this.inFlight.set(frame.handle, frame.payload.length + replyBytes);
    let answer: Promise<Buffer | undefined>;
    try {
      answer = this.session.handle(frame);
    } catch (err) {
      if (isShaleError(err) && err.code.startsWith('FRAME_')) {
        this.protocolError(err);
        return;
      }
      answer = Promise.reject(err);
    }
    answer.then(
      (payload) => this.complete(frame, FrameStatus.Ok, payload),
      (err: unknown) => {
        this.counters.errorReplies += 1;
        const error = err instanceof ShaleError ? err : new ShaleError('INTERNAL', String(err));
        this.complete(frame, FrameStatus.Error, encodeErrorPayload(error.code, error.message));
      },
    );
  }

  private complete(frame: Frame, status: number, payload: Buffer | undefined): void {
    const held = this.inFlight.get(frame.handle) ?? 0;
    this.inFlight.delete(frame.handle);
    this.heldBytes -= held;
    this.started -= 1;
    if (!this.done) this.reply(frame, status, payload);
    // The handler has settled and the reply is written: the request's payload is free.
    frame.release?.();
    this.pump();
    if (this.done && this.started === 0) this.session.closed?.();
  }

  private reply(request: Frame, status: number, payload: Buffer | undefined): void {
    const flags =
      FrameFlag.Reply |
      (request.flags & FrameFlag.PayloadCrc && payload ? FrameFlag.PayloadCrc : 0);
    const header = encodeFrameHeader(
      { version: this.version || 1, op: request.op, flags, handle: request.handle, status },
      payload,
    );
    this.writer.write(header, payload);
  }

  /** Stops reading while the connection holds too much; reads again once it drained. */
  private flowControl(): void {
    if (this.done) return;
    const held = this.held();
    if (!this.paused && (held > this.maxBuffered || this.queue.length > 0)) {
      this.paused = true;
      this.counters.pauses += 1;
      this.socket.pause();
    } else if (this.paused && this.queue.length === 0 && held <= this.maxBuffered / 2) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private protocolError(err: unknown): void {
    if (this.done) return;
    this.counters.protocolErrors += 1;
    const error =
      err instanceof ShaleError ? err : frameError(FrameErrorCode.Malformed, String(err));
    this.options.log?.(
      `data connection from ${this.socket.remoteAddress}:${this.socket.remotePort}: ${error.code}: ${error.message}; closed`,
    );
    const payload = encodeErrorPayload(error.code, error.message);
    this.socket.write(
      encodeFrameHeader(
        {
          version: this.version || 1,
          op: FrameOp.GoAway,
          flags: FrameFlag.Reply,
          handle: 0,
          status: FrameStatus.Error,
        },
        payload,
      ),
    );
    this.socket.write(payload);
    this.socket.end();
    this.finish();
    setTimeout(() => this.socket.destroy(), GOAWAY_LINGER_MS).unref();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    for (const frame of this.queue.splice(0)) this.inFlight.delete(frame.handle);
    this.socket.resume(); // nothing more is read into the decoder; let the socket close
    if (this.started === 0) this.session.closed?.();
  }
}
