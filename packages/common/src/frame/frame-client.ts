import type net from 'node:net';
import { assert } from '../assert.js';
import { ShaleError } from '../errors.js';
import { FrameDecoder } from './frame-decoder.js';
import {
  decodeErrorPayload,
  encodeFrameHeader,
  FRAME_MAX_PAYLOAD_DEFAULT_BYTES,
  FRAME_VERSION_MAX,
  FRAME_VERSION_MIN,
  type Frame,
  FrameErrorCode,
  FrameFlag,
  FrameOp,
  FrameStatus,
  frameError,
} from './frame-format.js';
import { encodeHello, readHelloReply } from './frame-hello.js';
import { GatheredWriter } from './gathered-writer.js';
import { connectReading } from './socket-reader.js';

export interface FrameClientOptions {
  readonly host: string;
  readonly port: number;
  /** Request and expected reply bytes in flight at most; later requests wait (default 64 MiB). */
  readonly maxInFlightBytes?: number;
  readonly maxPayloadBytes?: number;
  readonly connectTimeoutMs?: number;
  /** Checksum every payload sent (and ask for checksummed replies); default true. */
  readonly payloadCrc?: boolean;
  /** Names the peer in error messages ("volumedriver 127.0.0.1:4000"). */
  readonly what?: string;
  /** A request's deadline when it names none (FrameRequest.timeoutMs); default 60 s. */
  readonly requestTimeoutMs?: number;
}

export interface FrameRequest {
  readonly op: number;
  readonly flags?: number;
  readonly offset?: number;
  readonly extent?: number;
  readonly payload?: Buffer;
  /**
   * Instead of `payload`: the payload as pieces sent back to back in the same gathered
   * write (no copy into one buffer; e.g. an index, then fragments as they are).
   */
  readonly payloadParts?: readonly Buffer[];
  /** The reply's expected payload (a read's length): counted against the in-flight budget. */
  readonly replyBytes?: number;
  /**
   * How long the peer has to answer once the request is sent, and how long it may wait for
   * room (maxInFlightBytes) before that; default the client's requestTimeoutMs. See the
   * class comment for what a timeout does.
   */
  readonly timeoutMs?: number;
}

interface Pending {
  readonly resolve: (frame: Frame) => void;
  readonly reject: (err: ShaleError) => void;
  readonly bytes: number;
  readonly op: number;
  readonly timeoutMs: number;
  /** performance.now() past which sweep() expires it. */
  readonly deadline: number;
}

interface Waiter {
  readonly bytes: number;
  /** Lets it go (room reserved, or the client failed); clears its deadline. */
  readonly go: () => void;
}

/** Where bytes go while nobody decodes them (the server sends nothing unasked then). */
function ignoreChunk(_chunk: Buffer): void {
  // nothing: between HELLO and attach() the socket is paused
}

const IN_FLIGHT_DEFAULT_BYTES = 64 * 1024 * 1024;
const CONNECT_TIMEOUT_DEFAULT_MS = 5000;
/**
 * The longest deadline of the gRPC calls beside these hops (VolumeService's unary calls,
 * the proxy client's: 60 s), long enough for any request they carry; callers with a
 * deadline of their own pass it (the ASD data client 10 s, the edge 30 s).
 */
const REQUEST_TIMEOUT_DEFAULT_MS = 60_000;
/** setTimeout's largest delay; a longer one would fire at once. */
const TIMEOUT_MAX_MS = 0x7fff_ffff;
const HANDLE_MAX = 0xffff_ffff;
/**
 * Sent requests' deadlines are checked by one sweep timer, not a timer per request (a
 * setTimeout and clearTimeout per request is a measurable share of a 4 KiB request's
 * CPU): every quarter of the shortest timeout seen, within these bounds. So a deadline
 * fires up to a quarter late.
 */
const SWEEP_MIN_MS = 10;
const SWEEP_MAX_MS = 1000;

/**
 * One connection of the data protocol, client side: requests go out as they are made
 * (those of one event-loop turn in one gathered write: the socket is corked until the
 * next tick), many in flight, replies matched by handle in any order. At most
 * maxInFlightBytes (request payloads plus expected reply payloads) are outstanding; a
 * request over it waits, in order, for replies to free room (one request always fits).
 * When the connection fails or the peer sends GOAWAY, every pending and waiting request
 * rejects with that error and the client is dead: make a new one.
 *
 * Deadlines (timeoutMs, per request or the client's requestTimeoutMs): a request waiting
 * for room that does not get it in time rejects FRAME_TIMEOUT (details.sent "no": it never
 * left; the connection goes on). A sent request whose reply does not come in time rejects
 * FRAME_TIMEOUT (details.sent "yes": the peer may still do it) and the connection is
 * closed: the protocol has no cancel, a peer that missed a deadline may be wedged, and its
 * handle could be reused only after a late reply that may never come. So every other
 * request in flight rejects at once with FRAME_CLOSED (it may have been done: a caller
 * retries what is idempotent on a new connection, as after any lost connection), waiting
 * ones with the same error, and no late reply can reach a later request.
 */
export class FrameClient {
  private readonly pending = new Map<number, Pending>();
  private readonly waiting: Waiter[] = [];
  private nextHandle = 1;
  private inFlightBytes = 0;
  private readonly writer: GatheredWriter;
  private failure: ShaleError | undefined;
  private readonly closedHandlers: ((err: ShaleError) => void)[] = [];
  /** close() calls waiting for the last reply (or the failure). */
  private readonly idleWaiters: (() => void)[] = [];
  private readonly payloadCrc: boolean;
  private readonly maxInFlightBytes: number;
  private readonly requestTimeoutMs: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepEveryMs = SWEEP_MAX_MS;

  private constructor(
    private readonly socket: net.Socket,
    readonly version: number,
    /** What the server accepts in one frame. */
    readonly serverMaxPayloadBytes: number,
    options: FrameClientOptions,
    readonly what: string,
  ) {
    this.writer = new GatheredWriter(socket);
    this.payloadCrc = options.payloadCrc ?? true;
    this.maxInFlightBytes = options.maxInFlightBytes ?? IN_FLIGHT_DEFAULT_BYTES;
    this.requestTimeoutMs = checkTimeout(options.requestTimeoutMs ?? REQUEST_TIMEOUT_DEFAULT_MS);
  }

  /** Connects and negotiates the version (HELLO); FRAME_VERSION when none is common. */
  static async connect(options: FrameClientOptions): Promise<FrameClient> {
    const what = options.what ?? `${options.host}:${options.port}`;
    const maxPayloadBytes = options.maxPayloadBytes ?? FRAME_MAX_PAYLOAD_DEFAULT_BYTES;
    // Reads land in one reused buffer (socket-reader.ts); `route.sink` takes them: the
    // HELLO decoder first, then the client's.
    const route = { sink: ignoreChunk };
    const socket = connectReading(
      { host: options.host, port: options.port, noDelay: true },
      (chunk) => route.sink(chunk),
    );
    let decoder: FrameDecoder | undefined;
    const hello = await new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(frameError(FrameErrorCode.Timeout, `${what}: no HELLO within the connect timeout`));
      }, options.connectTimeoutMs ?? CONNECT_TIMEOUT_DEFAULT_MS);
      const fail = (err: unknown): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(
          err instanceof ShaleError
            ? err
            : frameError(FrameErrorCode.Closed, `${what}: cannot connect: ${String(err)}`, err),
        );
      };
      socket.once('error', fail);
      socket.once('close', () => fail(new Error('the connection closed during HELLO')));
      decoder = new FrameDecoder({ maxPayloadBytes }, (frame) => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.removeAllListeners('close');
        route.sink = ignoreChunk;
        socket.pause();
        resolve(frame);
      });
      route.sink = (chunk: Buffer) => {
        try {
          decoder?.push(chunk);
        } catch (err) {
          fail(err);
        }
      };
      socket.once('connect', () => {
        const hello = encodeHello(FRAME_VERSION_MIN, FRAME_VERSION_MAX, maxPayloadBytes);
        socket.write(encodeFrameHeader({ op: FrameOp.Hello, handle: 0 }, hello));
        socket.write(hello);
      });
    });
    const { version, maxPayloadBytes: serverMax } = readHelloReply(hello, what);
    const client = new FrameClient(socket, version, serverMax, options, what);
    route.sink = client.attach(maxPayloadBytes);
    return client;
  }

  /** Set once the connection carries no more requests. */
  get failed(): ShaleError | undefined {
    return this.failure;
  }

  get pendingRequests(): number {
    return this.pending.size + this.waiting.length;
  }

  /** Called once, when the connection fails or closes (with why). */
  onClosed(handler: (err: ShaleError) => void): void {
    if (this.failure !== undefined) handler(this.failure);
    else this.closedHandlers.push(handler);
  }

  /** Sends a request; resolves with its OK reply, rejects with its error reply's code. */
  async request(request: FrameRequest): Promise<Frame> {
    if (this.failure !== undefined) throw this.failure;
    const parts = request.payloadParts ?? (request.payload === undefined ? [] : [request.payload]);
    let payloadBytes = 0;
    for (const part of parts) payloadBytes += part.length;
    if (payloadBytes > this.serverMaxPayloadBytes) {
      throw frameError(
        FrameErrorCode.TooLarge,
        `${this.what}: a payload of ${payloadBytes} B, the server takes at most ${this.serverMaxPayloadBytes} B`,
      );
    }
    const timeoutMs = checkTimeout(request.timeoutMs ?? this.requestTimeoutMs);
    const bytes = payloadBytes + (request.replyBytes ?? 0);
    if (this.waiting.length > 0 || !this.fits(bytes)) {
      // admit() reserves the room before it lets this one go.
      await this.waitForRoom(bytes, request.op, timeoutMs);
      if (this.failure !== undefined) throw this.failure;
    } else {
      this.inFlightBytes += bytes;
    }
    return new Promise<Frame>((resolve, reject) => {
      let handle = this.nextHandle;
      while (this.pending.has(handle)) handle = handle === HANDLE_MAX ? 1 : handle + 1;
      this.nextHandle = handle === HANDLE_MAX ? 1 : handle + 1;
      const deadline = performance.now() + timeoutMs;
      this.pending.set(handle, { resolve, reject, bytes, op: request.op, timeoutMs, deadline });
      this.armSweep(timeoutMs);
      const flags = (request.flags ?? 0) | (this.payloadCrc ? FrameFlag.PayloadCrc : 0);
      const header = encodeFrameHeader(
        {
          version: this.version,
          op: request.op,
          flags,
          handle,
          offset: request.offset ?? 0,
          extent: request.extent ?? 0,
        },
        parts,
      );
      this.writer.write(header, parts);
    });
  }

  /** Closes after every pending request is answered. */
  async close(): Promise<void> {
    while (this.failure === undefined && this.pendingRequests > 0) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    if (this.failure === undefined) {
      this.fail(frameError(FrameErrorCode.Closed, `${this.what}: closed`));
    }
  }

  /** Cuts the connection: every pending request rejects with FRAME_CLOSED. */
  destroy(): void {
    this.fail(frameError(FrameErrorCode.Closed, `${this.what}: the connection was cut`));
  }

  /** Listens for the connection's end; returns where its received bytes go. */
  private attach(maxPayloadBytes: number): (chunk: Buffer) => void {
    const decoder = new FrameDecoder({ maxPayloadBytes }, (frame) => this.onFrame(frame));
    this.socket.on('error', (err) =>
      this.fail(frameError(FrameErrorCode.Closed, `${this.what}: ${err.message}`, err)),
    );
    this.socket.on('close', () =>
      this.fail(frameError(FrameErrorCode.Closed, `${this.what}: the connection closed`)),
    );
    this.socket.resume();
    return (chunk: Buffer) => {
      try {
        decoder.push(chunk);
      } catch (err) {
        this.fail(err as ShaleError);
      }
    };
  }

  private onFrame(frame: Frame): void {
    if (this.failure !== undefined) return;
    if (frame.op === FrameOp.GoAway) {
      const why = decodeErrorPayload(frame.payload);
      this.fail(new ShaleError(why.code, `${this.what} said goodbye: ${why.message}`));
      return;
    }
    const pending = this.pending.get(frame.handle);
    if ((frame.flags & FrameFlag.Reply) === 0 || pending === undefined) {
      this.fail(
        frameError(
          FrameErrorCode.Malformed,
          `${this.what}: ${pending === undefined ? `a reply to unknown handle ${frame.handle}` : 'a request from the server'}`,
        ),
      );
      return;
    }
    this.pending.delete(frame.handle);
    this.inFlightBytes -= pending.bytes;
    if (frame.status === FrameStatus.Ok) pending.resolve(frame);
    else pending.reject(decodeErrorPayload(frame.payload));
    this.admit();
  }

  /**
   * Waits, in order, until `bytes` fit (admit() reserves them and lets it go). Past
   * timeoutMs it leaves the line unsent: FRAME_TIMEOUT, and the connection goes on.
   */
  private waitForRoom(bytes: number, op: number, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        bytes,
        go: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      timer = setTimeout(() => {
        const at = this.waiting.indexOf(waiter);
        if (at < 0) return;
        this.waiting.splice(at, 1);
        reject(
          new ShaleError(
            FrameErrorCode.Timeout,
            `${this.what}: op ${op} waited ${timeoutMs} ms for room (${this.inFlightBytes} B in flight, at most ${this.maxInFlightBytes} B); not sent`,
            { details: { sent: 'no' } },
          ),
        );
        this.admit(); // those behind it may fit now
      }, timeoutMs);
      this.waiting.push(waiter);
    });
  }

  /**
   * A sent request got no reply within its deadline: it rejects FRAME_TIMEOUT, and the
   * connection is closed (the class comment says why), failing every other request.
   */
  private expire(handle: number, pending: Pending): void {
    const { op, timeoutMs } = pending;
    if (this.failure !== undefined) return;
    this.pending.delete(handle);
    pending.reject(
      new ShaleError(
        FrameErrorCode.Timeout,
        `${this.what}: no reply to op ${op} (handle ${handle}) within ${timeoutMs} ms`,
        { details: { sent: 'yes' } },
      ),
    );
    this.fail(
      frameError(
        FrameErrorCode.Closed,
        `${this.what}: closed because op ${op} (handle ${handle}) got no reply within ${timeoutMs} ms (the peer may be wedged)`,
      ),
    );
  }

  /** Makes sure a sweep runs often enough for a deadline of timeoutMs. */
  private armSweep(timeoutMs: number): void {
    const every = Math.min(SWEEP_MAX_MS, Math.max(SWEEP_MIN_MS, Math.floor(timeoutMs / 4)));
    if (this.sweepTimer !== undefined && every >= this.sweepEveryMs) return;
    this.stopSweep();
    this.sweepEveryMs = every;
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
  }

  private stopSweep(): void {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.sweepEveryMs = SWEEP_MAX_MS;
  }

  /** Expires the first sent request past its deadline (which closes the connection). */
  private sweep(): void {
    if (this.pending.size === 0) {
      this.stopSweep();
      return;
    }
    const now = performance.now();
    for (const [handle, pending] of this.pending) {
      if (pending.deadline <= now) {
        this.expire(handle, pending);
        return;
      }
    }
  }

  /** One request always fits when nothing is outstanding. */
  private fits(bytes: number): boolean {
    return this.inFlightBytes === 0 || this.inFlightBytes + bytes <= this.maxInFlightBytes;
  }

  /** Lets waiting requests go while they fit. */
  private admit(): void {
    while (this.waiting.length > 0) {
      const next = this.waiting[0] as Waiter;
      if (!this.fits(next.bytes)) break;
      this.waiting.shift();
      this.inFlightBytes += next.bytes; // reserved now: it sends on its next turn
      next.go();
    }
    if (this.pendingRequests === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private fail(err: ShaleError): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.inFlightBytes = 0;
    this.stopSweep();
    for (const p of pending) p.reject(err);
    for (const w of this.waiting.splice(0)) w.go();
    for (const wake of this.idleWaiters.splice(0)) wake();
    for (const handler of this.closedHandlers.splice(0)) handler(err);
  }
}

/** A deadline setTimeout can keep: positive, finite, at most ~24.8 days. */
function checkTimeout(timeoutMs: number): number {
  assert(
    Number.isFinite(timeoutMs) && timeoutMs > 0 && timeoutMs <= TIMEOUT_MAX_MS,
    `a frame request timeout of ${timeoutMs} ms (1..${TIMEOUT_MAX_MS})`,
  );
  return timeoutMs;
}
