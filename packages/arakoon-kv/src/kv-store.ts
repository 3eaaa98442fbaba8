/**
 * The metadata store's contract. Two engines implement it (EtcdKv, LevelKv) and one
 * conformance suite (kv-conformance.ts) runs against both.
 *
 * The model is etcd's: one totally ordered history of revisions. Every write (put, delete,
 * successful or failed txn that writes, lease expiry) creates one new revision; each key
 * carries the revision that created it, the revision that last modified it, and a version
 * (1 on creation, +1 on every put, back to 0 when deleted). Keys and values are bytes.
 */

/** Bytes as given by callers; results are always Buffers. */
export type Bytes = Uint8Array;

/**
 * A lease id: a decimal string, because etcd's lease ids are 64-bit and do not fit a
 * JavaScript number. "0" means "no lease".
 */
export type LeaseId = string & { readonly __brand: 'LeaseId' };
export const NO_LEASE = '0' as LeaseId;

export interface KeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createRevision: number;
  readonly modRevision: number;
  /** 1 after creation, +1 per put. */
  readonly version: number;
  readonly leaseId: LeaseId;
}

export interface CallOptions {
  /** Deadline of this call. EtcdKv default: 5 s. LevelKv ignores it (local disk). */
  readonly deadlineMs?: number;
}

export interface PutOptions extends CallOptions {
  /** Bind the key to a lease: it is deleted when the lease expires or is revoked. */
  readonly leaseId?: LeaseId;
}

/** A key range: every key with a prefix, or `[start, end)` (no `end`: to the end of the keyspace). */
export type KeyRange = { readonly prefix: Bytes } | { readonly start: Bytes; readonly end?: Bytes };

export interface RangeOptions extends CallOptions {
  /** Most keys returned (default 1000, max 10 000). */
  readonly limit?: number;
  /** The `continuation` of the previous page. */
  readonly continuation?: Buffer;
}

export interface RangePage {
  readonly items: KeyValue[];
  /** Present when more keys follow: pass it back to get the next page. */
  readonly continuation?: Buffer;
  /** The store's revision when this page was read. Each page is a consistent snapshot. */
  readonly revision: number;
}

export type CompareOp = 'equal' | 'notEqual' | 'greater' | 'less';

/**
 * One condition of a txn. A missing key has version, createRevision and modRevision 0;
 * a value compare on a missing key is always false (as in etcd).
 */
export type Compare =
  | { readonly key: Bytes; readonly target: 'value'; readonly op: CompareOp; readonly value: Bytes }
  | {
      readonly key: Bytes;
      readonly target: 'version' | 'createRevision' | 'modRevision';
      readonly op: CompareOp;
      readonly number: number;
    };

export type TxnOp =
  | { readonly type: 'get'; readonly key: Bytes }
  | { readonly type: 'put'; readonly key: Bytes; readonly value: Bytes; readonly leaseId?: LeaseId }
  | { readonly type: 'delete'; readonly key: Bytes }
  | { readonly type: 'deletePrefix'; readonly prefix: Bytes };

export type TxnOpResult =
  | { readonly type: 'get'; readonly item: KeyValue | undefined }
  | { readonly type: 'put' }
  | { readonly type: 'delete'; readonly deletedCount: number };

export interface Txn {
  /** All must hold (a conjunction). Empty: the success branch runs. */
  readonly compares: readonly Compare[];
  readonly success: readonly TxnOp[];
  readonly failure?: readonly TxnOp[];
}

export interface TxnResult {
  /** True when every compare held and the success ops ran; false: the failure ops ran. */
  readonly succeeded: boolean;
  /** The revision after the txn (unchanged if it wrote nothing). */
  readonly revision: number;
  /** One result per op of the branch that ran, in order. */
  readonly results: TxnOpResult[];
}

export interface WriteResult {
  readonly revision: number;
}

export interface DeleteResult extends WriteResult {
  readonly deleted: boolean;
}

export interface Lease {
  readonly id: LeaseId;
  /** The TTL the store granted (etcd rounds up to whole seconds and to its minimum). */
  readonly ttlMs: number;
}

export interface SequenceRange {
  /** The first number allocated; the caller owns [first, first + count). */
  readonly first: number;
  readonly count: number;
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  readonly key: Buffer;
  /** Empty for a delete. */
  readonly value: Buffer;
  /** The revision of the write; for a delete, the revision of the delete. */
  readonly modRevision: number;
  readonly createRevision: number;
  readonly version: number;
}

/** All events of one or more whole revisions, in revision order. */
export interface WatchBatch {
  readonly events: WatchEvent[];
  /** Every event up to this revision has been delivered; resume from `revision + 1`. */
  readonly revision: number;
}

export interface WatchOptions {
  readonly prefix: Bytes;
  /** First revision to deliver (inclusive). Default: the next revision after now. */
  readonly fromRevision?: number;
}

export interface Watcher {
  /** Resolves once the watch is established (events from then on will be delivered). */
  readonly ready: Promise<void>;
  /** Resolves when closed by the caller; rejects (KV_COMPACTED, handler error, ...) if it failed. */
  readonly done: Promise<void>;
  /** Every event up to this revision has been handed to the handler. */
  readonly deliveredRevision: number;
  close(): Promise<void>;
}

/**
 * Called with each batch, one at a time: the next batch waits until the returned promise
 * settles. A handler that throws stops the watch (`done` rejects with its error).
 */
export type WatchHandler = (batch: WatchBatch) => void | Promise<void>;

export interface KvStore {
  get(key: Bytes, options?: CallOptions): Promise<KeyValue | undefined>;
  /** One consistent read of several keys; results in the same order as `keys`. */
  getMany(keys: readonly Bytes[], options?: CallOptions): Promise<(KeyValue | undefined)[]>;
  put(key: Bytes, value: Bytes, options?: PutOptions): Promise<WriteResult>;
  delete(key: Bytes, options?: CallOptions): Promise<DeleteResult>;
  range(range: KeyRange, options?: RangeOptions): Promise<RangePage>;
  /** Atomic: compares, then all of one branch, as one revision. */
  txn(txn: Txn, options?: CallOptions): Promise<TxnResult>;
  /**
   * Allocates `count` numbers from the counter at `key` (first allocation starts at 1).
   * Numbers are unique and increasing; a call whose outcome was unknown may leave a gap.
   */
  allocate(key: Bytes, count?: number, options?: CallOptions): Promise<SequenceRange>;
  grantLease(ttlMs: number, options?: CallOptions): Promise<Lease>;
  /** Renews the lease to its full TTL; KV_LEASE_NOT_FOUND if it already expired. */
  keepAlive(leaseId: LeaseId, options?: CallOptions): Promise<Lease>;
  /** Revokes the lease and deletes its keys. Revoking an unknown lease: KV_LEASE_NOT_FOUND. */
  revokeLease(leaseId: LeaseId, options?: CallOptions): Promise<void>;
  watch(options: WatchOptions, handler: WatchHandler): Watcher;
  close(): Promise<void>;
}
