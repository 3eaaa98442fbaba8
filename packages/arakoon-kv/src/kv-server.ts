import * as grpc from '@grpc/grpc-js';
import { bindGrpcServer, errorMessage, shutdownGrpcServer } from '@shale/common';
import {
  KV_GRPC_MAX_MESSAGE_BYTES,
  KV_SERVER_DEADLINE_MARGIN_MS,
  KV_SERVER_MAX_CONCURRENT_STREAMS,
  KV_SERVER_MAX_WATCHES,
  KV_SERVER_RANGE_REPLY_TARGET_BYTES,
  KV_SERVER_SHUTDOWN_GRACE_MS,
  KV_SERVER_WATCH_MESSAGE_TARGET_BYTES,
} from './constants.js';
import { KvErrorCode, kvError } from './errors.js';
import { keySuccessor } from './key-range.js';
import {
  compareFromWire,
  crashOnAssertion,
  eventBytes,
  eventToWire,
  kvServiceDefinition,
  kvToWire,
  leaseFromWire,
  opFromWire,
  opResultToWire,
  rangeFromWire,
  toGrpcError,
  type WireCompare,
  type WireGetReply,
  type WireKeyValue,
  type WireRangeReply,
  type WireRangeRequest,
  type WireTxnOp,
  type WireWatchBatch,
  type WireWatchEvent,
  type WireWatchRequest,
} from './kv-grpc.js';
import type {
  CallOptions,
  KeyValue,
  KvStore,
  LeaseId,
  RangePage,
  WatchBatch,
  Watcher,
} from './kv-store.js';

/** What the server counts; KvDaemon exports them as metrics, tests read them. */
export interface KvServiceCounters {
  /** Unary calls answered, and those answered with an error. */
  callsTotal: number;
  callErrorsTotal: number;
  watchesOpened: number;
  /** Watches refused because KV_SERVER_MAX_WATCHES were open or the server was stopping. */
  watchesRefused: number;
  watchMessagesSent: number;
  watchEventsSent: number;
  /** Times a watch stopped pulling from the store until its client read what was sent. */
  watchDrainWaits: number;
}

export function createKvServiceCounters(): KvServiceCounters {
  return {
    callsTotal: 0,
    callErrorsTotal: 0,
    watchesOpened: 0,
    watchesRefused: 0,
    watchMessagesSent: 0,
    watchEventsSent: 0,
    watchDrainWaits: 0,
  };
}

/** A KvService on a grpc.Server (not bound yet), and the handle on its open watches. */
export interface KvGrpcServer {
  readonly server: grpc.Server;
  readonly counters: KvServiceCounters;
  /** Watch streams open now. */
  openWatches(): number;
  /**
   * Refuses new watches and ends every open one with KV_UNAVAILABLE (clients resume from
   * their delivered revision once a server is back), closing their store watchers.
   */
  endWatches(reason: string): Promise<void>;
}

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': KV_GRPC_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': KV_GRPC_MAX_MESSAGE_BYTES,
  'grpc.max_concurrent_streams': KV_SERVER_MAX_CONCURRENT_STREAMS,
};

/**
 * Binds a KvStore to the KvService: decoding, the error table (kv-grpc.ts) and watch flow
 * control, nothing else. The store does all validation, so every ShaleError it throws
 * (KV_BAD_REQUEST, KV_LEASE_NOT_FOUND, KV_COMPACTED, ...) reaches the client with its code.
 * The store is the caller's: it is not closed here.
 */
export function createKvGrpcServer(
  store: KvStore,
  options: { readonly counters?: KvServiceCounters } = {},
): KvGrpcServer {
  const counters = options.counters ?? createKvServiceCounters();
  const sessions = new Set<WatchSession>();
  let stopping: string | undefined;
  const unary = <Req, Res>(
    handle: (request: Req, options: CallOptions) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> => unaryHandler(counters, handle);

  const handlers: grpc.UntypedServiceImplementation = {
    get: unary(
      async (req: { key: Buffer }, opts): Promise<WireGetReply> => ({
        item: maybeToWire(await store.get(req.key, opts)),
      }),
    ),
    getMany: unary(async (req: { keys: Buffer[] }, opts) => ({
      items: (await store.getMany(req.keys, opts)).map((item) => ({ item: maybeToWire(item) })),
    })),
    put: unary(async (req: { key: Buffer; value: Buffer; leaseId: string }, opts) => {
      const leaseId = leaseFromWire(req.leaseId);
      const result = await store.put(
        req.key,
        req.value,
        leaseId === undefined ? opts : { ...opts, leaseId },
      );
      // Durability: as the store's put (LevelKv: fsynced by default; EtcdKv: committed by
      // a quorum) before this answer is sent.
      return { revision: result.revision };
    }),
    delete: unary(async (req: { key: Buffer }, opts) => {
      const result = await store.delete(req.key, opts);
      // Durability: as the store's delete.
      return { revision: result.revision, deleted: result.deleted };
    }),
    range: unary(async (req: WireRangeRequest, opts) => {
      const page = await store.range(rangeFromWire(req.range), {
        ...opts,
        ...(req.limit === 0 ? {} : { limit: req.limit }),
        ...(req.continuation.length === 0 ? {} : { continuation: req.continuation }),
      });
      return rangePageToWire(page);
    }),
    txn: unary(
      async (
        req: { compares: WireCompare[]; success: WireTxnOp[]; failure: WireTxnOp[] },
        opts,
      ) => {
        const result = await store.txn(
          {
            compares: req.compares.map(compareFromWire),
            success: req.success.map(opFromWire),
            failure: req.failure.map(opFromWire),
          },
          opts,
        );
        // Durability: as the store's txn.
        return {
          succeeded: result.succeeded,
          revision: result.revision,
          results: result.results.map(opResultToWire),
        };
      },
    ),
    allocate: unary(async (req: { key: Buffer; count: number }, opts) => {
      const range = await store.allocate(req.key, req.count === 0 ? 1 : req.count, opts);
      return { first: range.first, count: range.count };
    }),
    grantLease: unary(async (req: { ttlMs: number }, opts) => {
      const lease = await store.grantLease(req.ttlMs, opts);
      return { leaseId: lease.id, ttlMs: lease.ttlMs };
    }),
    keepAlive: unary(async (req: { leaseId: string }, opts) => {
      const lease = await store.keepAlive(req.leaseId as LeaseId, opts);
      return { leaseId: lease.id, ttlMs: lease.ttlMs };
    }),
    revokeLease: unary(async (req: { leaseId: string }, opts) => {
      await store.revokeLease(req.leaseId as LeaseId, opts);
      return {};
    }),
    watch: (call: grpc.ServerWritableStream<WireWatchRequest, WireWatchBatch>) => {
      const refusal =
        stopping ??
        (sessions.size >= KV_SERVER_MAX_WATCHES
          ? `${sessions.size} watches are open; the limit is ${KV_SERVER_MAX_WATCHES}`
          : undefined);
      if (refusal !== undefined) {
        counters.watchesRefused++;
        call.emit('error', toGrpcError(kvError(KvErrorCode.Unavailable, `watch: ${refusal}`)));
        return;
      }
      counters.watchesOpened++;
      const session = new WatchSession(call, store, counters, () => sessions.delete(session));
      sessions.add(session);
      session.start();
    },
  };
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(kvServiceDefinition, handlers);
  return {
    server,
    counters,
    openWatches: () => sessions.size,
    async endWatches(reason: string): Promise<void> {
      stopping = reason;
      await Promise.all([...sessions].map((session) => session.end(reason)));
    },
  };
}

/** Wraps an async handler: answers with the result or the mapped error; crashes on a broken invariant. */
function unaryHandler<Req, Res>(
  counters: KvServiceCounters,
  handle: (request: Req, options: CallOptions) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let answer: Promise<Res>;
    try {
      answer = handle(call.request, storeCallOptions(call.getDeadline()));
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (response) => {
        counters.callsTotal++;
        callback(null, response);
      },
      (err: unknown) => {
        counters.callsTotal++;
        counters.callErrorsTotal++;
        callback(toGrpcError(err), null);
        crashOnAssertion(err);
      },
    );
  };
}

/** The client's deadline, less the time its answer needs to travel back, for the store. */
function storeCallOptions(deadline: grpc.Deadline): CallOptions {
  const deadlineAtMs = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(deadlineAtMs)) return {};
  return { deadlineMs: Math.max(1, deadlineAtMs - Date.now() - KV_SERVER_DEADLINE_MARGIN_MS) };
}

function maybeToWire(item: KeyValue | undefined): WireKeyValue | null {
  return item === undefined ? null : kvToWire(item);
}

/**
 * A range page on the wire, cut short (with a continuation) past
 * KV_SERVER_RANGE_REPLY_TARGET_BYTES: fewer keys than the limit is always allowed, and
 * the page stays one snapshot.
 */
function rangePageToWire(page: RangePage): WireRangeReply {
  let bytes = 0;
  let kept = 0;
  while (kept < page.items.length && (kept === 0 || bytes < KV_SERVER_RANGE_REPLY_TARGET_BYTES)) {
    const item = page.items[kept] as KeyValue;
    bytes += eventBytes(item);
    kept++;
  }
  const items = kept === page.items.length ? page.items : page.items.slice(0, kept);
  const last = items[items.length - 1];
  const continuation =
    kept < page.items.length && last !== undefined
      ? keySuccessor(last.key)
      : (page.continuation ?? Buffer.alloc(0));
  return { items: items.map(kvToWire), continuation, revision: page.revision };
}

/**
 * "Now" for a watch without a start revision: the revision of a one-key range read of
 * "\0", a key outside the project's keyspace (every key starts with "/"), so it costs
 * nothing. Watching from this revision + 1 loses nothing written after it.
 */
const NOW_PROBE = { start: Buffer.of(0), end: Buffer.of(0, 0) };
async function currentRevision(store: KvStore): Promise<number> {
  return (await store.range(NOW_PROBE, { limit: 1 })).revision;
}

/**
 * The server side of one Watch stream: one store watcher whose batches are written to the
 * client, never more than grpc's send buffer ahead of what the client has read.
 *
 *   request --("now" read)--> store.watch --ready--> created sent --> streaming
 *   streaming: store batch -> messages (split past the size target) -> write;
 *              write() false -> wait for 'drain' -> only then the store gets its answer
 *   ends:  client cancels           -> store watcher closed, nothing sent
 *          store watch fails        -> status with its code (KV_COMPACTED, ...)
 *          store watch ends / end() -> KV_UNAVAILABLE (the client resumes elsewhere or later)
 *
 * Because the store's handler resolves only once grpc accepted the batch, a slow client
 * holds back the store watcher (LevelKv then reads nothing more from disk; EtcdKv pauses
 * etcd's stream) instead of growing memory here.
 */
class WatchSession {
  private storeWatcher: Watcher | undefined;
  /** Cancelled by the client, failed, or ended by the server: nothing more is sent. */
  private ended = false;
  private wakeDrain: (() => void) | undefined;
  private markCreated!: () => void;
  private readonly created = new Promise<void>((resolve) => {
    this.markCreated = resolve;
  });
  private readonly finished: Promise<void>;
  private resolveFinished!: () => void;

  constructor(
    private readonly call: grpc.ServerWritableStream<WireWatchRequest, WireWatchBatch>,
    private readonly store: KvStore,
    private readonly counters: KvServiceCounters,
    private readonly onEnd: () => void,
  ) {
    this.finished = new Promise<void>((resolve) => {
      this.resolveFinished = resolve;
    });
  }

  start(): void {
    this.call.on('cancelled', () => this.stop());
    this.run().then(
      () => this.fail(kvError(KvErrorCode.Unavailable, 'the store ended this watch (closing)')),
      (err: unknown) => this.fail(err),
    );
  }

  /** The server is stopping: end the stream with KV_UNAVAILABLE and close the store watcher. */
  async end(reason: string): Promise<void> {
    this.fail(kvError(KvErrorCode.Unavailable, `watch: ${reason}`));
    await this.finished;
  }

  private async run(): Promise<void> {
    try {
      const request = this.call.request;
      const fromRevision =
        request.fromRevision === 0 ? (await currentRevision(this.store)) + 1 : request.fromRevision;
      if (this.ended) return;
      const watcher = this.store.watch({ prefix: request.prefix, fromRevision }, async (batch) => {
        await this.created;
        await this.send(batch);
      });
      this.storeWatcher = watcher;
      // Ended while the watch was being set up: close() below ends it at once.
      if (this.ended) await watcher.close();
      await watcher.ready;
      if (!this.ended) {
        await this.write({ events: [], revision: fromRevision - 1, more: false, created: true });
      }
      this.markCreated();
      await watcher.done;
    } finally {
      this.markCreated();
      this.onEnd();
      this.resolveFinished();
    }
  }

  /** One store batch, as one message or (past the size target) several with more = true. */
  private async send(batch: WatchBatch): Promise<void> {
    let events: WireWatchEvent[] = [];
    let bytes = 0;
    for (let i = 0; i < batch.events.length; i++) {
      const event = batch.events[i] as WatchBatch['events'][number];
      events.push(eventToWire(event));
      bytes += eventBytes(event);
      if (bytes >= KV_SERVER_WATCH_MESSAGE_TARGET_BYTES && i < batch.events.length - 1) {
        await this.write({ events, revision: batch.revision, more: true, created: false });
        if (this.ended) return;
        events = [];
        bytes = 0;
      }
    }
    await this.write({ events, revision: batch.revision, more: false, created: false });
  }

  private async write(message: WireWatchBatch): Promise<void> {
    if (this.ended) return;
    this.counters.watchMessagesSent++;
    this.counters.watchEventsSent += message.events.length;
    if (this.call.write(message)) return;
    // grpc's send buffer is full: the client does not read. Hold the store back.
    this.counters.watchDrainWaits++;
    await new Promise<void>((resolve) => {
      const onDrain = (): void => {
        this.wakeDrain = undefined;
        resolve();
      };
      this.call.once('drain', onDrain);
      this.wakeDrain = () => {
        this.call.off('drain', onDrain);
        this.wakeDrain = undefined;
        resolve();
      };
    });
  }

  /** The client went away (cancel, lost connection): close the store watcher, send nothing. */
  private stop(): void {
    if (this.ended) return;
    this.ended = true;
    this.release();
  }

  private fail(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.release();
    // grpc-js turns an 'error' on a server stream into its status (and the code trailer).
    this.call.emit('error', toGrpcError(err));
    crashOnAssertion(err);
  }

  private release(): void {
    this.wakeDrain?.();
    const watcher = this.storeWatcher;
    if (watcher !== undefined) {
      watcher.close().then(
        () => undefined,
        (err: unknown) => {
          process.stderr.write(`kv server: closing a store watcher failed: ${errorMessage(err)}\n`);
        },
      );
    }
  }
}

export interface KvServerOptions {
  /** The store to serve; opened by the caller, and closed by it after close(). */
  readonly store: KvStore;
  /** Address to listen on (default 127.0.0.1). */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Filled in as the server runs (default: a private set). */
  readonly counters?: KvServiceCounters;
}

/** A KvStore served over gRPC (the KvService of proto/kv.proto), for RemoteKv clients. */
export class KvServer {
  private closed = false;

  private constructor(
    private readonly kvGrpc: KvGrpcServer,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(options: KvServerOptions): Promise<KvServer> {
    const host = options.host ?? '127.0.0.1';
    const kvGrpc = createKvGrpcServer(
      options.store,
      options.counters === undefined ? {} : { counters: options.counters },
    );
    let port: number;
    try {
      port = await bindGrpcServer(kvGrpc.server, host, options.port);
    } catch (err) {
      kvGrpc.server.forceShutdown();
      throw kvError(
        KvErrorCode.ListenFailed,
        `kv server: cannot listen on ${host}:${options.port}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    return new KvServer(kvGrpc, host, port);
  }

  get address(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  get counters(): KvServiceCounters {
    return this.kvGrpc.counters;
  }

  /** Watch streams open now. */
  get openWatches(): number {
    return this.kvGrpc.openWatches();
  }

  /**
   * Ends every watch with KV_UNAVAILABLE (clients resume from their delivered revision
   * when a server is back), then stops taking calls and lets those in progress finish for
   * up to graceMs before cutting them off. The store stays open.
   */
  async close(graceMs = KV_SERVER_SHUTDOWN_GRACE_MS): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.kvGrpc.endWatches('the kv server is stopping');
    await shutdownGrpcServer(this.kvGrpc.server, graceMs);
  }
}
