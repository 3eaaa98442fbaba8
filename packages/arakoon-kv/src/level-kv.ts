import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { assert, errorMessage, systemErrorCode } from '@shale/common';
import { ClassicLevel } from 'classic-level';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_MAX_VALUE_BYTES,
  LEVEL_COMPACT_EVERY_REVISIONS,
  LEVEL_HISTORY_REVISIONS,
  LEVEL_LEASE_CHECK_INTERVAL_MS,
  LEVEL_WATCH_BATCH_REVISIONS,
} from './constants.js';
import { describeKey, KvErrorCode, kvError } from './errors.js';
import {
  inRange,
  keySuccessor,
  prefixEnd,
  type ResolvedRange,
  resolveRange,
  toBuffer,
} from './key-range.js';
import type {
  Bytes,
  CallOptions,
  Compare,
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
  WatchBatch,
  WatchEvent,
  Watcher,
  WatchHandler,
  WatchOptions,
  WriteResult,
} from './kv-store.js';
import { NO_LEASE } from './kv-store.js';
import {
  bindingKey,
  bindingPrefix,
  decodeEvent,
  decodeKv,
  encodeEvent,
  encodeKv,
  eventKey,
  eventKeyRevision,
  kvKey,
  leaseKey,
  META_COMPACTED,
  META_NEXT_LEASE,
  META_REVISION,
  readU64,
  SPACE_EVENT,
  SPACE_KV,
  SPACE_LEASE,
  u64,
} from './level-record.js';
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

/** The monotonic clock leases expire on; tests swap in a fake one. */
export interface MonotonicClock {
  nowMs(): number;
}

export const systemMonotonicClock: MonotonicClock = { nowMs: () => performance.now() };

export interface LevelKvOptions {
  /** The directory of the LevelDB; created if missing. One process at a time. */
  readonly dir: string;
  readonly maxValueBytes?: number;
  readonly maxRequestBytes?: number;
  /** Revisions of history kept for watchers (default 100 000). */
  readonly historyRevisions?: number;
  readonly clock?: MonotonicClock;
  /**
   * fsync every commit (default true). Durability: with true, a write is on stable storage
   * when its promise resolves; with false, it survives a process crash but not a power loss.
   */
  readonly sync?: boolean;
}

interface LiveLease {
  readonly ttlMs: number;
  expiresAtMs: number;
}

type Db = ClassicLevel<Buffer, Buffer>;
type BatchOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

/**
 * The embedded engine: classic-level (LevelDB) in one directory, for single-node clusters
 * and tests. Same semantics as EtcdKv: a global revision, atomic txns, leases (expiring on a
 * monotonic clock; after a restart every lease gets its full TTL again, as etcd does after
 * a leader change), watches from a revision (read from a compacted event log).
 *
 * Writes are serialized through one queue: each computes its changes against the current
 * state and commits them as one LevelDB batch, so a revision is all-or-nothing on disk.
 * LevelDB's LOCK file keeps a second process (or a second LevelKv) out: KV_DIR_LOCKED.
 */
export class LevelKv implements KvStore {
  readonly dir: string;
  private readonly db: Db;
  private readonly limits: RequestLimits;
  private readonly historyRevisions: number;
  private readonly clock: MonotonicClock;
  private readonly sync: boolean;
  private revision = 1;
  private compactedRevision = 0;
  private nextLeaseId = 1;
  private readonly leases = new Map<string, LiveLease>();
  private writeQueue: Promise<unknown> = Promise.resolve();
  private readonly watchers = new Set<LevelWatcher>();
  private leaseTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(dir: string, db: Db, options: LevelKvOptions) {
    this.dir = dir;
    this.db = db;
    this.limits = {
      maxValueBytes: options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES,
      maxRequestBytes: options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    };
    this.historyRevisions = options.historyRevisions ?? LEVEL_HISTORY_REVISIONS;
    this.clock = options.clock ?? systemMonotonicClock;
    this.sync = options.sync ?? true;
  }

  static async open(options: LevelKvOptions): Promise<LevelKv> {
    const dir = path.resolve(options.dir);
    await mkdir(dir, { recursive: true });
    const db: Db = new ClassicLevel<Buffer, Buffer>(dir, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    try {
      await db.open();
    } catch (err) {
      if (isLockedError(err)) {
        throw kvError(
          KvErrorCode.DirLocked,
          `${dir} is in use by another process (its LevelDB LOCK is held); one LevelKv per directory`,
          { cause: err },
        );
      }
      throw kvError(KvErrorCode.Internal, `cannot open LevelKv in ${dir}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const kv = new LevelKv(dir, db, options);
    await kv.load();
    return kv;
  }

  private async load(): Promise<void> {
    const [revision, compacted, nextLease] = await this.db.getMany([
      META_REVISION,
      META_COMPACTED,
      META_NEXT_LEASE,
    ]);
    this.revision = revision === undefined ? 1 : readU64(revision);
    this.compactedRevision = compacted === undefined ? 0 : readU64(compacted);
    this.nextLeaseId = nextLease === undefined ? 1 : readU64(nextLease);
    const now = this.clock.nowMs();
    for await (const [key, value] of this.db.iterator({
      gte: Buffer.of(SPACE_LEASE),
      lt: Buffer.of(SPACE_LEASE + 1),
    })) {
      const id = key.readBigUInt64BE(1).toString();
      const ttlMs = readU64(value);
      this.leases.set(id, { ttlMs, expiresAtMs: now + ttlMs });
    }
    this.leaseTimer = setInterval(() => this.expireLeases(), LEVEL_LEASE_CHECK_INTERVAL_MS);
    this.leaseTimer.unref();
  }

  /** The current revision (the last one committed). */
  get currentRevision(): number {
    return this.revision;
  }

  private checkOpen(): void {
    if (this.closed) throw kvError(KvErrorCode.Closed, 'LevelKv is closed');
  }

  /** Runs `fn` after every write queued before it: writes see each other's results in order. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writeQueue.then(fn);
    this.writeQueue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async get(key: Bytes, _options?: CallOptions): Promise<KeyValue | undefined> {
    this.checkOpen();
    validateKey(key);
    const k = toBuffer(key);
    const record = await this.db.get(kvKey(k));
    return record === undefined ? undefined : decodeKv(Buffer.from(k), record);
  }

  async getMany(keys: readonly Bytes[], _options?: CallOptions): Promise<(KeyValue | undefined)[]> {
    this.checkOpen();
    for (const key of keys) validateKey(key);
    const snapshot = this.db.snapshot();
    try {
      const records = await this.db.getMany(
        keys.map((key) => kvKey(toBuffer(key))),
        { snapshot },
      );
      return records.map((record, i) =>
        record === undefined ? undefined : decodeKv(Buffer.from(keys[i] as Bytes), record),
      );
    } finally {
      await snapshot.close();
    }
  }

  async put(key: Bytes, value: Bytes, options: PutOptions = {}): Promise<WriteResult> {
    const op: TxnOp =
      options.leaseId === undefined
        ? { type: 'put', key, value }
        : { type: 'put', key, value, leaseId: options.leaseId };
    const result = await this.txn({ compares: [], success: [op] });
    return { revision: result.revision };
  }

  async delete(key: Bytes, _options?: CallOptions): Promise<DeleteResult> {
    const result = await this.txn({ compares: [], success: [{ type: 'delete', key }] });
    const first = result.results[0];
    assert(first?.type === 'delete', 'delete txn returned no delete result');
    return { revision: result.revision, deleted: first.deletedCount > 0 };
  }

  async range(range: KeyRange, options: RangeOptions = {}): Promise<RangePage> {
    this.checkOpen();
    validateRange(range);
    const limit = resolveLimit(options.limit);
    const resolved = resolveRange(range);
    const start =
      options.continuation !== undefined && options.continuation.compare(resolved.start) >= 0
        ? options.continuation
        : resolved.start;
    const snapshot = this.db.snapshot();
    try {
      const revisionRecord = await this.db.get(META_REVISION, { snapshot });
      const items: KeyValue[] = [];
      let more = false;
      for await (const [key, value] of this.db.iterator({
        gte: kvKey(start),
        lt: resolved.end === undefined ? Buffer.of(SPACE_KV + 1) : kvKey(resolved.end),
        limit: limit + 1,
        snapshot,
      })) {
        if (items.length === limit) {
          more = true;
          break;
        }
        items.push(decodeKv(key.subarray(1), value));
      }
      const last = items[items.length - 1];
      return {
        items,
        revision: revisionRecord === undefined ? 1 : readU64(revisionRecord),
        ...(more && last !== undefined ? { continuation: keySuccessor(last.key) } : {}),
      };
    } finally {
      await snapshot.close();
    }
  }

  async txn(txn: Txn, _options?: CallOptions): Promise<TxnResult> {
    this.checkOpen();
    validateTxn(txn, this.limits);
    return this.exclusive(() => this.applyTxn(txn));
  }

  async allocate(key: Bytes, count = 1, options: CallOptions = {}): Promise<SequenceRange> {
    validateKey(key);
    return allocateSequence(this, key, count, options);
  }

  async grantLease(ttlMs: number, _options?: CallOptions): Promise<Lease> {
    this.checkOpen();
    validateTtl(ttlMs);
    return this.exclusive(async () => {
      const id = String(this.nextLeaseId) as LeaseId;
      await this.db.batch(
        [
          { type: 'put', key: leaseKey(id), value: u64(ttlMs) },
          { type: 'put', key: META_NEXT_LEASE, value: u64(this.nextLeaseId + 1) },
        ],
        { sync: this.sync },
      );
      this.nextLeaseId += 1;
      this.leases.set(id, { ttlMs, expiresAtMs: this.clock.nowMs() + ttlMs });
      return { id, ttlMs };
    });
  }

  async keepAlive(leaseId: LeaseId, _options?: CallOptions): Promise<Lease> {
    this.checkOpen();
    validateLeaseId(leaseId);
    const lease = this.leases.get(leaseId);
    if (lease === undefined || lease.expiresAtMs <= this.clock.nowMs()) {
      throw kvError(
        KvErrorCode.LeaseNotFound,
        `lease ${leaseId} does not exist (expired or revoked)`,
      );
    }
    lease.expiresAtMs = this.clock.nowMs() + lease.ttlMs;
    return { id: leaseId, ttlMs: lease.ttlMs };
  }

  async revokeLease(leaseId: LeaseId, _options?: CallOptions): Promise<void> {
    this.checkOpen();
    validateLeaseId(leaseId);
    await this.exclusive(async () => {
      if (!this.leases.has(leaseId)) {
        throw kvError(
          KvErrorCode.LeaseNotFound,
          `lease ${leaseId} does not exist (expired or revoked)`,
        );
      }
      await this.dropLease(leaseId);
    });
  }

  watch(options: WatchOptions, handler: WatchHandler): Watcher {
    this.checkOpen();
    if (!(options.prefix instanceof Uint8Array)) {
      throw kvError(KvErrorCode.BadRequest, 'watch prefix must be bytes');
    }
    const from = options.fromRevision ?? this.revision + 1;
    if (!Number.isSafeInteger(from) || from < 1) {
      throw kvError(
        KvErrorCode.BadRequest,
        `fromRevision must be a whole number >= 1, got ${from}`,
      );
    }
    const watcher = new LevelWatcher(
      this,
      resolveRange({ prefix: options.prefix }),
      from,
      handler,
      () => this.watchers.delete(watcher),
    );
    this.watchers.add(watcher);
    watcher.start();
    return watcher;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.leaseTimer !== undefined) clearInterval(this.leaseTimer);
    await Promise.all([...this.watchers].map((watcher) => watcher.close()));
    await this.writeQueue;
    await this.db.close();
  }

  // ---- internals used by LevelWatcher ----

  /** @internal Reads the events of revisions [from, from + batch) within the kept history. */
  async readEvents(
    from: number,
    range: ResolvedRange,
  ): Promise<{ events: WatchEvent[]; throughRevision: number } | 'compacted'> {
    const upTo = Math.min(this.revision, from + LEVEL_WATCH_BATCH_REVISIONS - 1);
    const events: WatchEvent[] = [];
    if (upTo >= from) {
      for await (const [key, value] of this.db.iterator({
        gte: eventKey(from, 0),
        lt: eventKey(upTo + 1, 0),
      })) {
        assert(eventKeyRevision(key) <= upTo, 'event past the read bound');
        const event = decodeEvent(value);
        if (inRange(event.key, range)) events.push(event);
      }
    }
    // Checked after reading: a compaction racing with the read may have removed part of it.
    if (from <= this.compactedRevision) return 'compacted';
    return { events, throughRevision: upTo };
  }

  /** @internal */
  get lastRevision(): number {
    return this.revision;
  }

  // ---- writes (always inside exclusive()) ----

  private async applyTxn(txn: Txn): Promise<TxnResult> {
    this.checkOpen();
    const overlay = new Map<string, KeyValue | null>();
    const read = async (key: Buffer): Promise<KeyValue | undefined> => {
      const hex = key.toString('hex');
      if (overlay.has(hex)) return overlay.get(hex) ?? undefined;
      const record = await this.db.get(kvKey(key));
      return record === undefined ? undefined : decodeKv(Buffer.from(key), record);
    };

    let succeeded = true;
    for (const compare of txn.compares) {
      if (!evaluateCompare(compare, await read(toBuffer(compare.key)))) {
        succeeded = false;
        break;
      }
    }
    const ops = succeeded ? txn.success : (txn.failure ?? []);
    const newRevision = this.revision + 1;
    const batch: BatchOp[] = [];
    const changed: { type: 'put' | 'delete'; item: KeyValue }[] = [];
    const results: TxnOpResult[] = [];

    const remove = (item: KeyValue): void => {
      overlay.set(item.key.toString('hex'), null);
      batch.push({ type: 'del', key: kvKey(item.key) });
      if (item.leaseId !== NO_LEASE)
        batch.push({ type: 'del', key: bindingKey(item.leaseId, item.key) });
      changed.push({
        type: 'delete',
        item: { ...item, value: Buffer.alloc(0), modRevision: newRevision, version: 0 },
      });
    };

    for (const op of ops) {
      switch (op.type) {
        case 'get':
          results.push({ type: 'get', item: await read(toBuffer(op.key)) });
          break;
        case 'put': {
          const key = Buffer.from(op.key);
          const leaseId = op.leaseId ?? NO_LEASE;
          if (leaseId !== NO_LEASE && !this.leases.has(leaseId)) {
            throw kvError(
              KvErrorCode.LeaseNotFound,
              `put ${describeKey(key)}: lease ${leaseId} does not exist; the txn changed nothing`,
            );
          }
          const existing = await read(key);
          const item: KeyValue = {
            key,
            value: Buffer.from(op.value),
            createRevision: existing?.createRevision ?? newRevision,
            modRevision: newRevision,
            version: (existing?.version ?? 0) + 1,
            leaseId,
          };
          overlay.set(key.toString('hex'), item);
          batch.push({ type: 'put', key: kvKey(key), value: encodeKv(item) });
          if (
            existing !== undefined &&
            existing.leaseId !== NO_LEASE &&
            existing.leaseId !== leaseId
          ) {
            batch.push({ type: 'del', key: bindingKey(existing.leaseId, key) });
          }
          if (leaseId !== NO_LEASE)
            batch.push({ type: 'put', key: bindingKey(leaseId, key), value: Buffer.alloc(0) });
          changed.push({ type: 'put', item });
          results.push({ type: 'put' });
          break;
        }
        case 'delete': {
          const existing = await read(toBuffer(op.key));
          if (existing !== undefined) remove(existing);
          results.push({ type: 'delete', deletedCount: existing === undefined ? 0 : 1 });
          break;
        }
        case 'deletePrefix': {
          const range = resolveRange({ prefix: op.prefix });
          const victims = new Map<string, KeyValue>();
          for await (const [key, value] of this.db.iterator({
            gte: kvKey(range.start),
            lt: range.end === undefined ? Buffer.of(SPACE_KV + 1) : kvKey(range.end),
          })) {
            const item = decodeKv(key.subarray(1), value);
            victims.set(item.key.toString('hex'), item);
          }
          for (const [hex, item] of overlay) {
            if (item === null) victims.delete(hex);
            else if (inRange(item.key, range)) victims.set(hex, item);
          }
          for (const item of victims.values()) remove(item);
          results.push({ type: 'delete', deletedCount: victims.size });
          break;
        }
      }
    }
    if (changed.length === 0) return { succeeded, revision: this.revision, results };
    await this.commit(newRevision, batch, changed);
    return { succeeded, revision: newRevision, results };
  }

  private async commit(
    newRevision: number,
    batch: BatchOp[],
    changed: { type: 'put' | 'delete'; item: KeyValue }[],
  ): Promise<void> {
    changed.forEach((change, index) => {
      batch.push({
        type: 'put',
        key: eventKey(newRevision, index),
        value: encodeEvent(change.type, change.item),
      });
    });
    batch.push({ type: 'put', key: META_REVISION, value: u64(newRevision) });
    const compactTo = newRevision - this.historyRevisions;
    const compact =
      newRevision % LEVEL_COMPACT_EVERY_REVISIONS === 0 && compactTo > this.compactedRevision;
    if (compact) batch.push({ type: 'put', key: META_COMPACTED, value: u64(compactTo) });
    // Durability: with sync (the default) the revision is on stable storage when this resolves.
    await this.db.batch(batch, { sync: this.sync });
    this.revision = newRevision;
    if (compact) {
      this.compactedRevision = compactTo;
      await this.db.clear({ gte: Buffer.of(SPACE_EVENT), lt: eventKey(compactTo + 1, 0) });
    }
    for (const watcher of this.watchers) watcher.wake();
  }

  /** Deletes a lease and every key bound to it, as one revision. Inside exclusive(). */
  private async dropLease(leaseId: LeaseId): Promise<void> {
    const prefix = bindingPrefix(leaseId);
    const keys: Buffer[] = [];
    for await (const key of this.db.keys({ gte: prefix, lt: prefixEnd(prefix) as Buffer })) {
      keys.push(key.subarray(prefix.length));
    }
    const batch: BatchOp[] = [{ type: 'del', key: leaseKey(leaseId) }];
    const changed: { type: 'put' | 'delete'; item: KeyValue }[] = [];
    const newRevision = this.revision + 1;
    for (const key of keys) {
      batch.push({ type: 'del', key: bindingKey(leaseId, key) });
      const record = await this.db.get(kvKey(key));
      if (record === undefined) continue;
      const item = decodeKv(Buffer.from(key), record);
      if (item.leaseId !== leaseId) continue;
      batch.push({ type: 'del', key: kvKey(key) });
      changed.push({
        type: 'delete',
        item: { ...item, value: Buffer.alloc(0), modRevision: newRevision, version: 0 },
      });
    }
    this.leases.delete(leaseId);
    if (changed.length === 0) {
      await this.db.batch(batch, { sync: this.sync });
      return;
    }
    await this.commit(newRevision, batch, changed);
  }

  private expireLeases(): void {
    if (this.closed) return;
    const now = this.clock.nowMs();
    for (const [id, lease] of this.leases) {
      if (lease.expiresAtMs > now) continue;
      const leaseId = id as LeaseId;
      this.exclusive(async () => {
        const current = this.leases.get(leaseId);
        // A keep-alive may have landed between the check and this turn of the queue.
        if (this.closed || current === undefined || current.expiresAtMs > this.clock.nowMs())
          return;
        await this.dropLease(leaseId);
      }).catch((err: unknown) => {
        // The store is unusable if it cannot delete: make that loud, not silent.
        process.emitWarning(`LevelKv: expiring lease ${leaseId} failed: ${errorMessage(err)}`);
      });
    }
  }
}

function compareNumbers(op: Compare['op'], actual: number, expected: number): boolean {
  switch (op) {
    case 'equal':
      return actual === expected;
    case 'notEqual':
      return actual !== expected;
    case 'greater':
      return actual > expected;
    case 'less':
      return actual < expected;
  }
}

/** etcd's rules: a missing key has version/createRevision/modRevision 0; value compares on it fail. */
export function evaluateCompare(compare: Compare, item: KeyValue | undefined): boolean {
  if (compare.target === 'value') {
    if (item === undefined) return false;
    return compareNumbers(compare.op, Buffer.compare(item.value, compare.value), 0);
  }
  const actual =
    item === undefined
      ? 0
      : compare.target === 'version'
        ? item.version
        : compare.target === 'createRevision'
          ? item.createRevision
          : item.modRevision;
  return compareNumbers(compare.op, actual, compare.number);
}

function isLockedError(err: unknown): boolean {
  for (let current: unknown = err; current !== undefined && current !== null; ) {
    if (systemErrorCode(current) === 'LEVEL_LOCKED') return true;
    const message = errorMessage(current);
    if (/lock/i.test(message) && /LOCK|held|unavailable/.test(message)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * A LevelKv watch: a loop that reads the event log from its next revision and hands whole
 * revisions to the handler, then sleeps until the next commit. It pulls from disk instead
 * of being pushed to, so a slow handler costs no memory and can never miss an event.
 */
class LevelWatcher implements Watcher {
  readonly ready: Promise<void> = Promise.resolve();
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private rejectDone!: (err: unknown) => void;
  private next: number;
  private closed = false;
  private wakeUp: (() => void) | undefined;

  constructor(
    private readonly kv: LevelKv,
    private readonly range: ResolvedRange,
    fromRevision: number,
    private readonly handler: WatchHandler,
    private readonly onEnd: () => void,
  ) {
    this.next = fromRevision;
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // A watch nobody awaits must not crash the process with an unhandled rejection.
    this.done.catch(() => undefined);
  }

  get deliveredRevision(): number {
    return this.next - 1;
  }

  start(): void {
    this.loop().then(
      () => {
        this.onEnd();
        this.resolveDone();
      },
      (err: unknown) => {
        this.closed = true;
        this.onEnd();
        this.rejectDone(err);
      },
    );
  }

  wake(): void {
    this.wakeUp?.();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake();
    await this.done.catch(() => undefined);
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      if (this.next > this.kv.lastRevision) {
        await new Promise<void>((resolve) => {
          this.wakeUp = resolve;
          if (this.closed || this.next <= this.kv.lastRevision) resolve();
        });
        this.wakeUp = undefined;
        continue;
      }
      const read = await this.kv.readEvents(this.next, this.range);
      if (read === 'compacted') {
        throw kvError(
          KvErrorCode.Compacted,
          `watch from revision ${this.next}: history before it was compacted; read the current state and watch from its revision + 1`,
        );
      }
      if (this.closed) break;
      if (read.events.length > 0) {
        const batch: WatchBatch = { events: read.events, revision: read.throughRevision };
        await this.handler(batch);
      }
      this.next = read.throughRevision + 1;
    }
  }
}
