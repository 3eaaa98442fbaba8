import * as grpc from '@grpc/grpc-js';
import { isShaleError, type ShaleError } from '@shale/common';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_MAX_VALUE_BYTES,
  KV_GRPC_MAX_MESSAGE_BYTES,
  REMOTE_DEFAULT_DEADLINE_MS,
  REMOTE_GET_MANY_MAX_KEYS,
  REMOTE_KEEPALIVE_TIME_MS,
  REMOTE_KEEPALIVE_TIMEOUT_MS,
  REMOTE_MIN_RETRY_WINDOW_MS,
  REMOTE_RECONNECT_INITIAL_BACKOFF_MS,
  REMOTE_RECONNECT_MAX_BACKOFF_MS,
} from './constants.js';
import { KvErrorCode, kvError } from './errors.js';
import { toBuffer } from './key-range.js';
import {
  compareToWire,
  type KvMethod,
  kvFromWire,
  kvMethods,
  leaseToWire,
  maybeKvFromWire,
  opResultFromWire,
  opToWire,
  rangeToWire,
  type WireAllocateReply,
  type WireDeleteReply,
  type WireGetManyReply,
  type WireGetReply,
  type WireLeaseReply,
  type WireRangeReply,
  type WireTxnReply,
  type WireWatchBatch,
  type WireWriteReply,
  wireNumber,
} from './kv-grpc.js';
import type {
  Bytes,
  CallOptions,
  DeleteResult,
  KeyRange,
  KeyValue,
  KvStore,
  Lease,
  LeaseId,
  PutOptions,
  RangeOptions,
  RangePage,
  SequenceRange,
  Txn,
  TxnOp,
  TxnResult,
  Watcher,
  WatchHandler,
  WatchOptions,
  WriteResult,
} from './kv-store.js';
import { classifyRemoteError, type Idempotence } from './remote-errors.js';
import { type ReconnectPolicy, RemoteWatcher } from './remote-watch.js';
import {
  type RequestLimits,
  resolveLimit,
  validateKey,
  validateLeaseId,
  validateRange,
  validateTtl,
  validateTxn,
} from './request-validation.js';

export interface RemoteKvOptions {
  /** The KvServer (`shale kv serve`): "HOST:PORT", "[v6]:PORT" or "kv://HOST:PORT". */
  readonly endpoint: string;
  /** Deadline of each call, retries included (default 5 s, as EtcdKv). */
  readonly deadlineMs?: number;
  /**
   * Pauses between connection attempts, watch re-opens and read retries (default 50 ms,
   * doubling up to 1 s).
   */
  readonly reconnect?: Partial<ReconnectPolicy>;
  /** Checked before sending; keep at or below the server's store limits (default 1 MiB / 1.5 MiB). */
  readonly maxValueBytes?: number;
  readonly maxRequestBytes?: number;
}

/**
 * A client of a KvServer: the KvStore of another process (a LevelKv that only one process
 * may open, shared by the daemons of one machine), over gRPC.
 *
 * - Input is checked here with the same rules as every engine, so bad input fails before
 *   anything is sent; the server's store checks it again with its own limits.
 * - Every call has a deadline; retries happen inside it, never past it. A call first waits
 *   for a connection: one that never gets one is KV_UNAVAILABLE, and nothing was sent.
 * - Reads, allocate, lease grant and keep-alive are sent again after a lost answer
 *   (allocate may then leave a gap, a grant an unused lease that expires by itself).
 *   Writes (put, delete, txns that write) are sent again only when they certainly did
 *   nothing (remote-errors.ts); a write sent without an answer is KV_OUTCOME_UNKNOWN.
 *   Errors the server's store answers (KV_LEASE_NOT_FOUND, KV_TXN_FAILED, ...) arrive with
 *   their own code.
 * - Watches re-open after a broken connection or a server restart from the revision after
 *   the last batch received: no event lost, none repeated (remote-watch.ts).
 */
export class RemoteKv implements KvStore {
  readonly endpoint: string;
  private readonly client: grpc.Client;
  private readonly deadlineMs: number;
  private readonly reconnect: ReconnectPolicy;
  private readonly limits: RequestLimits;
  private readonly watchers = new Set<RemoteWatcher>();
  private closed = false;

  constructor(options: RemoteKvOptions) {
    this.endpoint = parseEndpoint(options.endpoint);
    this.deadlineMs = options.deadlineMs ?? REMOTE_DEFAULT_DEADLINE_MS;
    this.reconnect = {
      initialBackoffMs: options.reconnect?.initialBackoffMs ?? REMOTE_RECONNECT_INITIAL_BACKOFF_MS,
      maxBackoffMs: options.reconnect?.maxBackoffMs ?? REMOTE_RECONNECT_MAX_BACKOFF_MS,
    };
    this.limits = {
      maxValueBytes: options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES,
      maxRequestBytes: options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    };
    checkPositive('deadlineMs', this.deadlineMs);
    checkPositive('reconnect.initialBackoffMs', this.reconnect.initialBackoffMs);
    checkPositive('reconnect.maxBackoffMs', this.reconnect.maxBackoffMs);
    // A request this client lets through must fit one gRPC message, with room for framing.
    if (this.limits.maxRequestBytes > KV_GRPC_MAX_MESSAGE_BYTES / 2) {
      throw kvError(
        KvErrorCode.BadRequest,
        `RemoteKv: maxRequestBytes ${this.limits.maxRequestBytes} is over ${KV_GRPC_MAX_MESSAGE_BYTES / 2}`,
      );
    }
    this.client = new grpc.Client(this.endpoint, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': KV_GRPC_MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': KV_GRPC_MAX_MESSAGE_BYTES,
      // Notice a server that vanished without closing the connection (watches are long-lived).
      'grpc.keepalive_time_ms': REMOTE_KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': REMOTE_KEEPALIVE_TIMEOUT_MS,
      'grpc.initial_reconnect_backoff_ms': this.reconnect.initialBackoffMs,
      'grpc.max_reconnect_backoff_ms': this.reconnect.maxBackoffMs,
      // Our own retry table (remote-errors.ts) decides what is resent; grpc-js resends nothing.
      'grpc.enable_retries': 0,
    });
  }

  // ---- KvStore ----

  async get(key: Bytes, options: CallOptions = {}): Promise<KeyValue | undefined> {
    this.checkOpen();
    validateKey(key);
    const reply = await this.call<WireGetReply>('get', { key: toBuffer(key) }, 'read', options);
    return maybeKvFromWire(reply.item);
  }

  async getMany(
    keys: readonly Bytes[],
    options: CallOptions = {},
  ): Promise<(KeyValue | undefined)[]> {
    this.checkOpen();
    for (const key of keys) validateKey(key);
    const results: (KeyValue | undefined)[] = [];
    // One call (one snapshot) per REMOTE_GET_MANY_MAX_KEYS keys, as EtcdKv does.
    for (let i = 0; i < keys.length; i += REMOTE_GET_MANY_MAX_KEYS) {
      const chunk = keys.slice(i, i + REMOTE_GET_MANY_MAX_KEYS);
      const reply = await this.call<WireGetManyReply>(
        'getMany',
        { keys: chunk.map(toBuffer) },
        'read',
        options,
      );
      if (reply.items.length !== chunk.length) {
        throw kvError(
          KvErrorCode.Internal,
          `getMany: asked for ${chunk.length} keys, the server answered ${reply.items.length}`,
        );
      }
      for (const item of reply.items) results.push(maybeKvFromWire(item.item));
    }
    return results;
  }

  async put(key: Bytes, value: Bytes, options: PutOptions = {}): Promise<WriteResult> {
    this.checkOpen();
    const op: TxnOp =
      options.leaseId === undefined
        ? { type: 'put', key, value }
        : { type: 'put', key, value, leaseId: options.leaseId };
    validateTxn({ compares: [], success: [op] }, this.limits);
    const reply = await this.call<WireWriteReply>(
      'put',
      { key: toBuffer(key), value: toBuffer(value), leaseId: leaseToWire(options.leaseId) },
      'write',
      options,
    );
    return { revision: wireNumber(reply.revision, 'revision') };
  }

  async delete(key: Bytes, options: CallOptions = {}): Promise<DeleteResult> {
    this.checkOpen();
    validateKey(key);
    const reply = await this.call<WireDeleteReply>(
      'delete',
      { key: toBuffer(key) },
      'write',
      options,
    );
    return { revision: wireNumber(reply.revision, 'revision'), deleted: reply.deleted };
  }

  async range(range: KeyRange, options: RangeOptions = {}): Promise<RangePage> {
    this.checkOpen();
    validateRange(range);
    const limit = resolveLimit(options.limit);
    const reply = await this.call<WireRangeReply>(
      'range',
      {
        range: rangeToWire(range),
        limit,
        continuation: options.continuation ?? Buffer.alloc(0),
      },
      'read',
      options,
    );
    return {
      items: reply.items.map(kvFromWire),
      revision: wireNumber(reply.revision, 'revision'),
      ...(reply.continuation.length > 0 ? { continuation: reply.continuation } : {}),
    };
  }

  async txn(txn: Txn, options: CallOptions = {}): Promise<TxnResult> {
    this.checkOpen();
    validateTxn(txn, this.limits);
    const failure = txn.failure ?? [];
    const writes = [...txn.success, ...failure].some((op) => op.type !== 'get');
    const reply = await this.call<WireTxnReply>(
      'txn',
      {
        compares: txn.compares.map(compareToWire),
        success: txn.success.map(opToWire),
        failure: failure.map(opToWire),
      },
      writes ? 'write' : 'read',
      options,
    );
    return {
      succeeded: reply.succeeded,
      revision: wireNumber(reply.revision, 'revision'),
      results: reply.results.map(opResultFromWire),
    };
  }

  async allocate(key: Bytes, count = 1, options: CallOptions = {}): Promise<SequenceRange> {
    this.checkOpen();
    validateKey(key);
    if (!Number.isSafeInteger(count) || count < 1) {
      throw kvError(
        KvErrorCode.BadRequest,
        `allocate count must be a whole number >= 1, got ${count}`,
      );
    }
    // Sent again after a lost answer: the lost allocation, if it happened, only leaves a
    // gap (numbers are never handed out twice), which the contract allows.
    const reply = await this.call<WireAllocateReply>(
      'allocate',
      { key: toBuffer(key), count },
      'read',
      options,
    );
    return { first: wireNumber(reply.first, 'first'), count: wireNumber(reply.count, 'count') };
  }

  async grantLease(ttlMs: number, options: CallOptions = {}): Promise<Lease> {
    this.checkOpen();
    validateTtl(ttlMs);
    // A grant sent again after a lost answer can leave an unused lease behind; it holds
    // no keys and expires by itself, so grant is safe to resend.
    const reply = await this.call<WireLeaseReply>('grantLease', { ttlMs }, 'read', options);
    return leaseFromReply(reply);
  }

  async keepAlive(leaseId: LeaseId, options: CallOptions = {}): Promise<Lease> {
    this.checkOpen();
    validateLeaseId(leaseId);
    const reply = await this.call<WireLeaseReply>('keepAlive', { leaseId }, 'read', options);
    return leaseFromReply(reply);
  }

  async revokeLease(leaseId: LeaseId, options: CallOptions = {}): Promise<void> {
    this.checkOpen();
    validateLeaseId(leaseId);
    try {
      await this.call('revokeLease', { leaseId }, 'write', options);
      return;
    } catch (err) {
      if (!isShaleError(err, KvErrorCode.OutcomeUnknown)) throw err;
    }
    // Revoke is idempotent in effect: try again; "not found" now means the first one landed.
    try {
      await this.call('revokeLease', { leaseId }, 'write', options);
    } catch (err) {
      if (!isShaleError(err, KvErrorCode.LeaseNotFound)) throw err;
    }
  }

  watch(options: WatchOptions, handler: WatchHandler): Watcher {
    this.checkOpen();
    if (!(options.prefix instanceof Uint8Array)) {
      throw kvError(KvErrorCode.BadRequest, 'watch prefix must be bytes');
    }
    if (
      options.fromRevision !== undefined &&
      (!Number.isSafeInteger(options.fromRevision) || options.fromRevision < 1)
    ) {
      throw kvError(
        KvErrorCode.BadRequest,
        `fromRevision must be a whole number >= 1, got ${options.fromRevision}`,
      );
    }
    const method = kvMethods.watch;
    const watcher = new RemoteWatcher({
      prefix: toBuffer(options.prefix),
      fromRevision: options.fromRevision,
      handler,
      reconnect: this.reconnect,
      what: `kv ${this.endpoint}`,
      openStream: (request) =>
        this.client.makeServerStreamRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize as (bytes: Buffer) => WireWatchBatch,
          request,
          new grpc.Metadata(),
          {},
        ),
      onEnd: () => this.watchers.delete(watcher),
    });
    this.watchers.add(watcher);
    watcher.start();
    return watcher;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watchers].map((watcher) => watcher.close()));
    this.client.close();
  }

  // ---- the call machinery ----

  private checkOpen(): void {
    if (this.closed) throw kvError(KvErrorCode.Closed, `RemoteKv (${this.endpoint}) is closed`);
  }

  /**
   * One KvService call: waits for a connection, sends, and sends again while the deadline
   * allows and the retry table (remote-errors.ts) says it is safe.
   */
  private async call<T>(
    method: KvMethod,
    request: object,
    idempotence: Idempotence,
    options: CallOptions,
  ): Promise<T> {
    const what = `kv ${this.endpoint}: ${method}`;
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlineMs);
    let backoffMs = this.reconnect.initialBackoffMs;
    let lastReason = NO_ATTEMPT;
    for (;;) {
      this.checkOpen();
      if (Date.now() >= deadline) throw unavailable(what, lastReason);
      // A request never sent is safe to send later; one that cannot get a connection
      // within the deadline was never sent.
      if (!(await waitForReady(this.client, deadline))) {
        this.checkOpen();
        const noConnection = `no connection to ${this.endpoint}`;
        throw unavailable(
          what,
          lastReason === NO_ATTEMPT ? noConnection : `${noConnection}; before: ${lastReason}`,
        );
      }
      try {
        return await unary<T>(this.client, method, request, deadline);
      } catch (err) {
        const failure = classifyRemoteError(err, what, idempotence);
        if (failure.kind === 'answer') throw failure.error;
        if (failure.kind === 'lost' && idempotence === 'write') {
          throw kvError(
            KvErrorCode.OutcomeUnknown,
            `${what}: sent, but no answer (${failure.reason}); it may have been applied: resolve with a txn or a read`,
            { cause: err, details: { endpoint: this.endpoint } },
          );
        }
        lastReason = failure.reason;
      }
      await pause(Math.min(backoffMs, Math.max(0, deadline - Date.now())));
      backoffMs = Math.min(backoffMs * 2, this.reconnect.maxBackoffMs);
      // Every attempt so far got a definite "not applied"; one sent now could only time out.
      if (deadline - Date.now() < REMOTE_MIN_RETRY_WINDOW_MS) throw unavailable(what, lastReason);
    }
  }
}

const NO_ATTEMPT = 'no attempt finished';

/** "kv://host:port" or "host:port" as grpc's "host:port"; anything else is KV_BAD_REQUEST. */
function parseEndpoint(endpoint: string): string {
  const address = endpoint.replace(/^kv:\/\//, '').replace(/\/+$/, '');
  if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):[0-9]{1,5}$/.test(address)) {
    throw kvError(
      KvErrorCode.BadRequest,
      `RemoteKv endpoint must look like HOST:PORT or kv://HOST:PORT, not ${JSON.stringify(endpoint)}`,
    );
  }
  return address;
}

function checkPositive(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) {
    throw kvError(KvErrorCode.BadRequest, `RemoteKv: ${name} must be > 0, got ${value}`);
  }
}

function leaseFromReply(reply: WireLeaseReply): Lease {
  return { id: reply.leaseId as LeaseId, ttlMs: wireNumber(reply.ttlMs, 'ttlMs') };
}

function unavailable(what: string, reason: string): ShaleError {
  return kvError(
    KvErrorCode.Unavailable,
    `${what}: the kv server was not reachable within the deadline (${reason}); nothing was applied`,
    { details: { lastError: reason } },
  );
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitForReady(client: grpc.Client, deadline: number): Promise<boolean> {
  return new Promise((resolve) => {
    client.waitForReady(deadline, (err) => resolve(err === undefined || err === null));
  });
}

function unary<T>(
  client: grpc.Client,
  method: KvMethod,
  request: object,
  deadline: number,
): Promise<T> {
  const definition = kvMethods[method];
  return new Promise<T>((resolve, reject) => {
    client.makeUnaryRequest(
      definition.path,
      definition.requestSerialize,
      definition.responseDeserialize,
      request,
      new grpc.Metadata(),
      { deadline },
      (err, response) => {
        if (err) reject(err);
        else resolve(response as T);
      },
    );
  });
}
