import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { assert, errorMessage, isShaleError, type ShaleError } from '@shale/common';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_MAX_VALUE_BYTES,
  ETCD_CONNECT_ATTEMPT_MS,
  ETCD_DEFAULT_DEADLINE_MS,
  ETCD_MAX_RECEIVE_MESSAGE_BYTES,
  ETCD_RETRY_BACKOFF_MAX_MS,
  ETCD_RETRY_BACKOFF_MS,
} from './constants.js';
import { KvErrorCode, kvError } from './errors.js';
import { classifyEtcdError } from './etcd-errors.js';
import {
  type EtcdMethod,
  etcdMethods,
  type WireAuthenticateResponse,
  type WireDeleteRangeResponse,
  type WireLeaseGrantResponse,
  type WireLeaseKeepAliveResponse,
  type WirePutResponse,
  type WireRangeResponse,
  type WireResponseOp,
  type WireStatusResponse,
  type WireTxnResponse,
  type WireWatchResponse,
} from './etcd-proto.js';
import { EtcdWatcher } from './etcd-watch.js';
import { compareToWire, fromWire, opToWire, RANGE_END_ALL, toRevision } from './etcd-wire.js';
import { keySuccessor, resolveRange, toBuffer } from './key-range.js';
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
  TxnOpResult,
  TxnResult,
  Watcher,
  WatchHandler,
  WatchOptions,
  WriteResult,
} from './kv-store.js';
import { NO_LEASE } from './kv-store.js';
import {
  type RequestLimits,
  resolveLimit,
  validateKey,
  validateLeaseId,
  validateRange,
  validateTtl,
  validateTxn,
} from './request-validation.js';
import { allocateSequence } from './sequence.js';

export interface EtcdTlsOptions {
  /** PEM of the CA that signed the etcd members' certificates. */
  readonly caPem: Buffer;
  /** Client certificate and key, when etcd asks for client-certificate auth. */
  readonly certPem?: Buffer;
  readonly keyPem?: Buffer;
}

export interface EtcdKvOptions {
  /** Client URLs of the members: "127.0.0.1:2379", "http://host:2379", "https://host:2379". */
  readonly endpoints: readonly string[];
  readonly tls?: EtcdTlsOptions;
  /** etcd user and password (etcd auth enabled). */
  readonly user?: string;
  readonly password?: string;
  /** Deadline of each call, retries included (default 5 s). */
  readonly deadlineMs?: number;
  /** Keep below etcd's --max-request-bytes (1.5 MiB by default). */
  readonly maxValueBytes?: number;
  readonly maxRequestBytes?: number;
}

/** Whether a call may be sent again after an answer that leaves its outcome unknown. */
type Idempotence = 'read' | 'write';

interface Endpoint {
  readonly address: string;
  readonly client: grpc.Client;
}

/**
 * The etcd engine: speaks etcd's v3 gRPC API directly (grpc-js), one channel per member.
 *
 * - Every call has a deadline; retries happen inside it, never past it.
 * - Calls go to one preferred member; on a transport failure or a member without a leader
 *   the client moves to the next member (so it rides through the loss of the leader or of
 *   a minority). Every call carries etcd's "hasleader" requirement, so a member cut off
 *   from the quorum refuses at once instead of hanging.
 * - Reads (range, get, read-only txns), lease grant, keep-alive and revoke are retried.
 *   Writes are retried only when etcd says it did not propose them; a write that was sent
 *   and got no definite answer is KV_OUTCOME_UNKNOWN (etcd 3.4 can commit it later).
 *   Nothing that cannot reach a member is ever reported as anything but KV_UNAVAILABLE.
 */
export class EtcdKv implements KvStore {
  private readonly endpoints: Endpoint[];
  private readonly deadlineMs: number;
  private readonly limits: RequestLimits;
  private readonly credentials?: { readonly user: string; readonly password: string };
  private token: string | undefined;
  private preferred = 0;
  private closed = false;
  private readonly watchers = new Set<EtcdWatcher>();

  constructor(options: EtcdKvOptions) {
    if (options.endpoints.length === 0) {
      throw kvError(KvErrorCode.BadRequest, 'EtcdKv needs at least one endpoint');
    }
    if ((options.user === undefined) !== (options.password === undefined)) {
      throw kvError(KvErrorCode.BadRequest, 'EtcdKv: give both user and password, or neither');
    }
    const credentials =
      options.tls === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(
            options.tls.caPem,
            options.tls.keyPem ?? null,
            options.tls.certPem ?? null,
          );
    this.endpoints = options.endpoints.map((endpoint) => {
      const address = endpoint.replace(/^(https?|grpcs?):\/\//, '').replace(/\/+$/, '');
      return {
        address,
        client: new grpc.Client(address, credentials, {
          'grpc.max_receive_message_length': ETCD_MAX_RECEIVE_MESSAGE_BYTES,
          'grpc.keepalive_time_ms': 10_000,
          'grpc.keepalive_timeout_ms': 5_000,
          // Fail over quickly: reconnect attempts to a dead member back off to 1 s at most.
          'grpc.initial_reconnect_backoff_ms': 100,
          'grpc.max_reconnect_backoff_ms': 1000,
          // Our own retry table decides what is resent; grpc-js must not resend anything.
          'grpc.enable_retries': 0,
        }),
      };
    });
    this.deadlineMs = options.deadlineMs ?? ETCD_DEFAULT_DEADLINE_MS;
    this.limits = {
      maxValueBytes: options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES,
      maxRequestBytes: options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    };
    if (options.user !== undefined && options.password !== undefined) {
      this.credentials = { user: options.user, password: options.password };
    }
  }

  // ---- KvStore ----

  async get(key: Bytes, options: CallOptions = {}): Promise<KeyValue | undefined> {
    this.checkOpen();
    validateKey(key);
    const response = await this.call<WireRangeResponse>(
      'range',
      { key: toBuffer(key) },
      'read',
      options,
    );
    const first = response.kvs[0];
    return first === undefined ? undefined : fromWire(first);
  }

  async getMany(
    keys: readonly Bytes[],
    options: CallOptions = {},
  ): Promise<(KeyValue | undefined)[]> {
    this.checkOpen();
    for (const key of keys) validateKey(key);
    if (keys.length === 0) return [];
    const results: (KeyValue | undefined)[] = [];
    // One read-only txn per 128 keys: each chunk is one consistent snapshot.
    for (let i = 0; i < keys.length; i += 128) {
      const chunk = keys.slice(i, i + 128);
      const response = await this.call<WireTxnResponse>(
        'txn',
        {
          compare: [],
          success: chunk.map((key) => ({ requestRange: { key: toBuffer(key) } })),
          failure: [],
        },
        'read',
        options,
      );
      for (const op of response.responses) {
        const first = op.responseRange?.kvs[0];
        results.push(first === undefined ? undefined : fromWire(first));
      }
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
    const response = await this.call<WirePutResponse>(
      'put',
      { key: toBuffer(key), value: toBuffer(value), lease: options.leaseId ?? NO_LEASE },
      'write',
      options,
    );
    return { revision: toRevision(response.header.revision) };
  }

  async delete(key: Bytes, options: CallOptions = {}): Promise<DeleteResult> {
    this.checkOpen();
    validateKey(key);
    const response = await this.call<WireDeleteRangeResponse>(
      'deleteRange',
      { key: toBuffer(key) },
      'write',
      options,
    );
    return {
      revision: toRevision(response.header.revision),
      deleted: Number(response.deleted) > 0,
    };
  }

  async range(range: KeyRange, options: RangeOptions = {}): Promise<RangePage> {
    this.checkOpen();
    validateRange(range);
    const limit = resolveLimit(options.limit);
    const resolved = resolveRange(range);
    let start =
      options.continuation !== undefined && options.continuation.compare(resolved.start) >= 0
        ? options.continuation
        : resolved.start;
    if (start.length === 0) start = Buffer.of(0);
    const response = await this.call<WireRangeResponse>(
      'range',
      { key: start, rangeEnd: resolved.end ?? RANGE_END_ALL, limit },
      'read',
      options,
    );
    const items = response.kvs.map(fromWire);
    const last = items[items.length - 1];
    return {
      items,
      revision: toRevision(response.header.revision),
      ...(response.more && last !== undefined ? { continuation: keySuccessor(last.key) } : {}),
    };
  }

  async txn(txn: Txn, options: CallOptions = {}): Promise<TxnResult> {
    this.checkOpen();
    validateTxn(txn, this.limits);
    const failure = txn.failure ?? [];
    const writes = [...txn.success, ...failure].some((op) => op.type !== 'get');
    const response = await this.call<WireTxnResponse>(
      'txn',
      {
        compare: txn.compares.map(compareToWire),
        success: txn.success.map(opToWire),
        failure: failure.map(opToWire),
      },
      writes ? 'write' : 'read',
      options,
    );
    const ops = response.succeeded ? txn.success : failure;
    const results: TxnOpResult[] = ops.map((op, i) => opResultFromWire(op, response.responses[i]));
    return {
      succeeded: response.succeeded,
      revision: toRevision(response.header.revision),
      results,
    };
  }

  async allocate(key: Bytes, count = 1, options: CallOptions = {}): Promise<SequenceRange> {
    validateKey(key);
    return allocateSequence(this, key, count, options);
  }

  async grantLease(ttlMs: number, options: CallOptions = {}): Promise<Lease> {
    this.checkOpen();
    validateTtl(ttlMs);
    // A retried grant after an unknown outcome can leave an unused lease behind; it holds
    // no keys and expires by itself, so grant is safe to retry.
    const response = await this.call<WireLeaseGrantResponse>(
      'leaseGrant',
      { TTL: String(Math.ceil(ttlMs / 1000)), ID: '0' },
      'read',
      options,
    );
    if (response.error !== '') {
      throw kvError(KvErrorCode.Internal, `etcd refused the lease: ${response.error}`);
    }
    return { id: response.ID as LeaseId, ttlMs: Number(response.TTL) * 1000 };
  }

  async keepAlive(leaseId: LeaseId, options: CallOptions = {}): Promise<Lease> {
    this.checkOpen();
    validateLeaseId(leaseId);
    const response = await this.withRetries(
      'keep-alive',
      'read',
      options,
      (endpoint, deadline, metadata) => keepAliveOnce(endpoint.client, leaseId, deadline, metadata),
    );
    const ttlSeconds = Number(response.TTL);
    if (ttlSeconds <= 0) {
      throw kvError(
        KvErrorCode.LeaseNotFound,
        `lease ${leaseId} does not exist (expired or revoked)`,
      );
    }
    return { id: leaseId, ttlMs: ttlSeconds * 1000 };
  }

  async revokeLease(leaseId: LeaseId, options: CallOptions = {}): Promise<void> {
    this.checkOpen();
    validateLeaseId(leaseId);
    let unknownBefore = false;
    try {
      await this.call('leaseRevoke', { ID: leaseId }, 'write', options);
    } catch (err) {
      if (!isShaleError(err, KvErrorCode.OutcomeUnknown)) throw err;
      unknownBefore = true;
    }
    if (!unknownBefore) return;
    // Revoke is idempotent in effect: try again; "not found" now means the first one landed.
    try {
      await this.call('leaseRevoke', { ID: leaseId }, 'write', options);
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
    const range = resolveRange({ prefix: options.prefix });
    const watcher = new EtcdWatcher({
      start: range.start.length === 0 ? Buffer.of(0) : range.start,
      end: range.end ?? RANGE_END_ALL,
      fromRevision: options.fromRevision,
      handler,
      openStream: async () => {
        const endpoint = this.endpoints[this.preferred] as Endpoint;
        const metadata = await this.metadata({ deadlineMs: this.deadlineMs });
        const method = etcdMethods.watch;
        return endpoint.client.makeBidiStreamRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize as (bytes: Buffer) => WireWatchResponse,
          metadata,
          {},
        );
      },
      onStreamFailed: () => this.rotate(),
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
    for (const endpoint of this.endpoints) endpoint.client.close();
  }

  /** The member status of one endpoint (its id and the leader it follows), for operators and tests. */
  async memberStatus(
    endpointIndex: number,
    options: CallOptions = {},
  ): Promise<{ memberId: string; leaderId: string }> {
    const endpoint = this.endpoints[endpointIndex];
    assert(endpoint !== undefined, `no endpoint ${endpointIndex}`);
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlineMs);
    const response = await unary<WireStatusResponse>(
      endpoint.client,
      'status',
      {},
      deadline,
      new grpc.Metadata(),
    );
    return { memberId: response.header.memberId, leaderId: response.leader };
  }

  // ---- the call machinery ----

  private checkOpen(): void {
    if (this.closed) throw kvError(KvErrorCode.Closed, 'EtcdKv is closed');
  }

  private rotate(): void {
    this.preferred = (this.preferred + 1) % this.endpoints.length;
  }

  private async metadata(options: CallOptions): Promise<grpc.Metadata> {
    const metadata = new grpc.Metadata();
    // etcd's WithRequireLeader: a member without a leader answers "no leader" at once.
    metadata.set('hasleader', 'true');
    if (this.credentials !== undefined) {
      if (this.token === undefined) this.token = await this.authenticate(options);
      metadata.set('token', this.token);
    }
    return metadata;
  }

  private async authenticate(options: CallOptions): Promise<string> {
    const credentials = this.credentials;
    assert(credentials !== undefined, 'authenticate without credentials');
    const response = await this.withRetries('authenticate', 'read', options, (endpoint, deadline) =>
      unary<WireAuthenticateResponse>(
        endpoint.client,
        'authenticate',
        { name: credentials.user, password: credentials.password },
        deadline,
        new grpc.Metadata(),
      ),
    );
    return response.token;
  }

  private call<T>(
    method: EtcdMethod,
    request: object,
    idempotence: Idempotence,
    options: CallOptions,
  ): Promise<T> {
    return this.withRetries(method, idempotence, options, (endpoint, deadline, metadata) =>
      unary<T>(endpoint.client, method, request, deadline, metadata),
    );
  }

  /**
   * Runs `attempt` against the preferred member, moving to the next member and trying again
   * while the deadline allows and the retry table (etcd-errors.ts) says it is safe.
   */
  private async withRetries<T>(
    what: string,
    idempotence: Idempotence,
    options: CallOptions,
    attempt: (_endpoint: Endpoint, _deadline: number, _metadata: grpc.Metadata) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlineMs);
    let backoffMs = ETCD_RETRY_BACKOFF_MS;
    let lastReason = 'no attempt finished';
    for (;;) {
      this.checkOpen();
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) {
        throw kvError(
          KvErrorCode.Unavailable,
          `${what}: etcd unavailable within the deadline (${this.endpoints.map((e) => e.address).join(', ')}): ${lastReason}`,
          { details: { lastError: lastReason } },
        );
      }
      const endpoint = this.endpoints[this.preferred] as Endpoint;
      // Wait for a connection first: a request never sent is safe to send elsewhere.
      const connected = await waitForReady(
        endpoint.client,
        Date.now() + Math.min(remainingMs, ETCD_CONNECT_ATTEMPT_MS),
      );
      if (!connected) {
        lastReason = `no connection to ${endpoint.address}`;
        this.rotate();
        continue;
      }
      let metadata: grpc.Metadata;
      try {
        metadata = await this.metadata({ deadlineMs: deadline - Date.now() });
      } catch (err) {
        if (isShaleError(err, KvErrorCode.Unavailable)) {
          lastReason = errorMessage(err);
          continue;
        }
        throw err;
      }
      try {
        return await attempt(endpoint, deadline, metadata);
      } catch (err) {
        const failure = classifyEtcdError(err, what);
        if (failure.kind === 'definite-fatal') throw failure.error;
        if (failure.kind === 'indeterminate' && idempotence === 'write') {
          throw outcomeUnknown(what, endpoint.address, failure.reason, err);
        }
        lastReason = `${endpoint.address}: ${failure.kind === 'definite-retry' ? failure.reason : failure.reason}`;
        if (failure.kind === 'definite-retry' && failure.authExpired) this.token = undefined;
        this.rotate();
        await sleep(Math.min(backoffMs, Math.max(0, deadline - Date.now())));
        backoffMs = Math.min(backoffMs * 2, ETCD_RETRY_BACKOFF_MAX_MS);
      }
    }
  }
}

function opResultFromWire(op: TxnOp, wire: WireResponseOp | undefined): TxnOpResult {
  if (op.type === 'get') {
    const first = wire?.responseRange?.kvs[0];
    return { type: 'get', item: first === undefined ? undefined : fromWire(first) };
  }
  if (op.type === 'put') return { type: 'put' };
  return { type: 'delete', deletedCount: Number(wire?.responseDeleteRange?.deleted ?? 0) };
}

function outcomeUnknown(what: string, address: string, reason: string, cause: unknown): ShaleError {
  return kvError(
    KvErrorCode.OutcomeUnknown,
    `${what}: sent to ${address} but no answer (${reason}); it may still be applied: resolve with a txn or a read`,
    { cause, details: { endpoint: address } },
  );
}

function waitForReady(client: grpc.Client, deadline: number): Promise<boolean> {
  return new Promise((resolve) => {
    client.waitForReady(deadline, (err) => resolve(err === undefined || err === null));
  });
}

function unary<T>(
  client: grpc.Client,
  method: EtcdMethod,
  request: object,
  deadline: number,
  metadata: grpc.Metadata,
): Promise<T> {
  const definition = etcdMethods[method];
  return new Promise<T>((resolve, reject) => {
    client.makeUnaryRequest(
      definition.path,
      definition.requestSerialize,
      definition.responseDeserialize,
      request,
      metadata,
      { deadline },
      (err, response) => {
        if (err) reject(err);
        else resolve(response as T);
      },
    );
  });
}

/** One keep-alive round trip on its own short stream. */
function keepAliveOnce(
  client: grpc.Client,
  leaseId: LeaseId,
  deadline: number,
  metadata: grpc.Metadata,
): Promise<WireLeaseKeepAliveResponse> {
  const definition = etcdMethods.leaseKeepAlive;
  return new Promise((resolve, reject) => {
    const stream = client.makeBidiStreamRequest(
      definition.path,
      definition.requestSerialize,
      definition.responseDeserialize,
      metadata,
      { deadline },
    );
    let settled = false;
    stream.on('data', (response: WireLeaseKeepAliveResponse) => {
      if (settled) return;
      settled = true;
      resolve(response);
      stream.cancel();
    });
    stream.on('error', (err: Error) => {
      if (settled) return;
      settled = true;
      reject(err);
    });
    stream.on('end', () => {
      if (settled) return;
      settled = true;
      reject(new Error('keep-alive stream ended without an answer'));
    });
    stream.write({ ID: leaseId });
  });
}
