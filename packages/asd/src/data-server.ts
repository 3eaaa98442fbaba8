import net from 'node:net';
import {
  AssertionFailure,
  createFrameServerCounters,
  type Frame,
  FrameErrorCode,
  type FrameServerCounters,
  frameError,
  listenOn,
  PayloadPool,
  ShaleError,
  serveFrameConnection,
} from '@shale/common';
import {
  DATA_MAX_BUFFERED_BYTES,
  DATA_MAX_PAYLOAD_BYTES,
  DATA_PAYLOAD_POOL_FREE_MAX_BYTES,
  DATA_POOLED_PAYLOAD_MIN_BYTES,
} from './constants.js';
import {
  AsdDataOp,
  decodeGetRequest,
  decodePutRequest,
  decodeRangesRequest,
  encodeItemsReply,
  encodePutReply,
} from './data-protocol.js';
import { AsdErrorCode, asdError } from './errors.js';
import type { AsdMetrics } from './metrics.js';
import type { AsdStore } from './object-store.js';

export interface AsdDataServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly log?: ((line: string) => void) | undefined;
}

type MetricOp = 'put' | 'get' | 'get_ranges';

/**
 * The ASD's data server: the bulk calls (PUT, GET, GET_RANGES; data-protocol.ts) on Shale's
 * frame protocol, next to the gRPC server. It calls the same store methods as the gRPC
 * handlers (so the same checks and ASD_* codes), records the same metrics, and answers a
 * request's failure as an error reply carrying the ShaleError's code and message: this
 * boundary's whole error table is "the code travels as is" (a non-ShaleError becomes
 * ASD_IO_ERROR, as on gRPC). Protocol violations (an unknown op, lengths that do not add
 * up, an oversized frame) end only the offending connection, with a GOAWAY naming why.
 */
export class AsdDataServer {
  readonly counters: FrameServerCounters = createFrameServerCounters();
  /**
   * Receive buffers of fragment puts, shared by the connections. The store keeps no view
   * of a put's values once the put settles (inline values are copied), which the pool needs.
   */
  readonly payloadPool = new PayloadPool(
    DATA_POOLED_PAYLOAD_MIN_BYTES,
    DATA_PAYLOAD_POOL_FREE_MAX_BYTES,
  );
  private readonly sockets = new Set<net.Socket>();
  private requestsInFlight = 0;
  private idle: (() => void)[] = [];

  private constructor(
    private readonly store: AsdStore,
    private readonly metrics: AsdMetrics,
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(
    store: AsdStore,
    metrics: AsdMetrics,
    options: AsdDataServerOptions,
  ): Promise<AsdDataServer> {
    // Paused, so that serveFrameConnection can read it into a reused buffer.
    const server = net.createServer({ pauseOnConnect: true });
    const port = await listenOn(server, options.port, options.host);
    const dataServer = new AsdDataServer(store, metrics, server, port);
    server.on('connection', (socket) => dataServer.accept(socket, options.log));
    return dataServer;
  }

  /** Stops accepting, lets requests in progress finish (up to graceMs), then cuts the rest. */
  async stop(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.requestsInFlight > 0) {
      await Promise.race([
        new Promise<void>((resolve) => this.idle.push(resolve)),
        new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
      ]);
    }
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private accept(accepted: net.Socket, log: ((line: string) => void) | undefined): void {
    const socket = serveFrameConnection(
      accepted,
      { handle: (frame) => this.handle(frame) },
      {
        maxPayloadBytes: DATA_MAX_PAYLOAD_BYTES,
        maxBufferedBytes: DATA_MAX_BUFFERED_BYTES,
        counters: this.counters,
        payloadPool: this.payloadPool,
        ...(log === undefined ? {} : { log }),
      },
    );
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** Decodes synchronously (a malformed payload throws FRAME_*: the connection ends). */
  private handle(frame: Frame): Promise<Buffer | undefined> {
    switch (frame.op) {
      case AsdDataOp.Put: {
        const items = decodePutRequest(frame.payload);
        return this.run('put', async () => {
          this.metrics.items.inc({ op: 'put' }, items.length);
          const crcs = await this.store.put(items);
          // Durability: every value and its index record are on stable storage (the store's
          // put resolves after the fsync of its commit); only then the reply goes out.
          let bytesIn = 0;
          for (const item of items) bytesIn += item.value.length;
          this.metrics.bytes.inc({ direction: 'in' }, bytesIn);
          return encodePutReply(crcs);
        });
      }
      case AsdDataOp.Get: {
        const keys = decodeGetRequest(frame.payload);
        return this.run('get', async () => {
          this.metrics.items.inc({ op: 'get' }, keys.length);
          const results = await this.store.get(keys);
          return this.reply('get', results);
        });
      }
      case AsdDataOp.GetRanges: {
        const slices = decodeRangesRequest(frame.payload);
        return this.run('get_ranges', async () => {
          this.metrics.items.inc({ op: 'get_ranges' }, slices.length);
          const results = await this.store.getRanges(slices);
          return this.reply(
            'get_ranges',
            results.map((r) => (r.ok ? { ok: true, value: { value: r.value, crc32c: 0 } } : r)),
          );
        });
      }
      default:
        throw frameError(
          FrameErrorCode.UnknownOp,
          `op ${frame.op} is not in the ASD's op table (PUT 1, GET 2, GET_RANGES 3)`,
        );
    }
  }

  private reply(
    op: MetricOp,
    results: Parameters<typeof encodeItemsReply>[0],
  ): Buffer | Promise<Buffer> {
    let bytesOut = 0;
    for (const result of results) {
      if (result.ok) bytesOut += result.value.value.length;
      else this.metrics.errors.inc({ op, code: result.error.code });
    }
    this.metrics.bytes.inc({ direction: 'out' }, bytesOut);
    return encodeItemsReply(results);
  }

  /** Metrics and the error table around one request, as the gRPC server does. */
  private async run(op: MetricOp, body: () => Promise<Buffer>): Promise<Buffer> {
    const stopTimer = this.metrics.latency.startTimer({ op });
    this.metrics.operations.inc({ op });
    this.requestsInFlight += 1;
    try {
      return await body();
    } catch (err) {
      const error =
        err instanceof ShaleError
          ? err
          : asdError(AsdErrorCode.IoError, `internal error: ${String(err)}`, { cause: err });
      this.metrics.errors.inc({ op, code: error.code });
      // A broken invariant is a bug: answer, then crash loudly (as the gRPC server does).
      if (err instanceof AssertionFailure) {
        process.nextTick(() => {
          throw err;
        });
      }
      throw error;
    } finally {
      stopTimer();
      this.requestsInFlight -= 1;
      if (this.requestsInFlight === 0) for (const wake of this.idle.splice(0)) wake();
    }
  }
}
