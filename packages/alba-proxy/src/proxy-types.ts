import type { KvStore } from '@shale/arakoon-kv';
import {
  BACKGROUND_MAX_TASKS,
  FRAGMENT_READ_DEADLINE_MS,
  FRAGMENT_WRITE_DEADLINE_MS,
  MANIFEST_CACHE_MAX_ENTRIES,
  NAMESPACE_CACHE_TTL_MS,
  OSD_PROBE_DEADLINE_MS,
  OSD_STATE_TTL_MS,
  PUT_MAX_CONCURRENT,
  PUT_MAX_QUEUED,
  PUT_WRITE_CONCURRENCY,
  READ_HEDGE_BASE_MS,
  READ_HEDGE_BYTES_PER_MS,
  READ_SLICE_CONCURRENCY,
} from './constants.js';
import type { FragmentCache } from './fragment-cache.js';
import type { KeyProvider } from './key-provider.js';
import type { OsdFactory } from './osd-pool.js';
import type { Policy } from './preset.js';
import type { RandomSource } from './random-source.js';

/**
 * The proxy engine's public types: its options and limits, what a put answers, what a
 * ranged read asks for, a listing page, the damage a read reports, and the counters of
 * `stats()`. The engine itself is in proxy-engine.ts.
 */

export interface ProxyLimits {
  readonly osdStateTtlMs: number;
  readonly osdProbeDeadlineMs: number;
  readonly namespaceCacheTtlMs: number;
  readonly fragmentWriteDeadlineMs: number;
  readonly fragmentReadDeadlineMs: number;
  readonly readHedgeBaseMs: number;
  readonly readHedgeBytesPerMs: number;
  readonly putWriteConcurrency: number;
  readonly putMaxConcurrent: number;
  readonly putMaxQueued: number;
  readonly backgroundMaxTasks: number;
  readonly readSliceConcurrency: number;
  readonly manifestCacheMaxEntries: number;
}

export const DEFAULT_PROXY_LIMITS: ProxyLimits = {
  osdStateTtlMs: OSD_STATE_TTL_MS,
  osdProbeDeadlineMs: OSD_PROBE_DEADLINE_MS,
  namespaceCacheTtlMs: NAMESPACE_CACHE_TTL_MS,
  fragmentWriteDeadlineMs: FRAGMENT_WRITE_DEADLINE_MS,
  fragmentReadDeadlineMs: FRAGMENT_READ_DEADLINE_MS,
  readHedgeBaseMs: READ_HEDGE_BASE_MS,
  readHedgeBytesPerMs: READ_HEDGE_BYTES_PER_MS,
  putWriteConcurrency: PUT_WRITE_CONCURRENCY,
  putMaxConcurrent: PUT_MAX_CONCURRENT,
  putMaxQueued: PUT_MAX_QUEUED,
  backgroundMaxTasks: BACKGROUND_MAX_TASKS,
  readSliceConcurrency: READ_SLICE_CONCURRENCY,
  manifestCacheMaxEntries: MANIFEST_CACHE_MAX_ENTRIES,
};

/** A fragment found damaged or lost while reading: repair should rewrite it. */
export interface DamagedFragment {
  readonly nsId: string;
  readonly name: string;
  readonly version: number;
  readonly chunkIndex: number;
  readonly fragmentIndex: number;
  readonly osdId: string;
  /** checksum: wrong bytes or size; corrupt: the ASD said ASD_CORRUPT; not-found: gone. */
  readonly reason: 'checksum' | 'corrupt' | 'not-found';
}

export interface ProxyEngineOptions {
  readonly kv: KvStore;
  readonly backendId: string;
  readonly osdFactory?: OsdFactory;
  readonly keyProvider?: KeyProvider;
  readonly fragmentCache?: FragmentCache;
  /** Placement randomness (seeded in tests). Default Math.random. */
  readonly random?: RandomSource;
  readonly limits?: Partial<ProxyLimits>;
  /** Called for every damaged fragment a read found (after the read, with a current manifest). */
  readonly onDamaged?: (damage: DamagedFragment) => void;
  readonly log?: (line: string) => void;
}

export interface PutOptions {
  /** The namespace epoch the caller holds; the manifest commits only if it is still current. */
  readonly writerEpoch: number;
}

export interface PutResult {
  readonly version: number;
  readonly policy: Policy;
  /** Fragments durable at acknowledgement, per chunk (>= c each). */
  readonly placedAtAck: readonly number[];
  readonly manifestBytes: number;
}

export interface ObjectSlice {
  readonly name: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export interface ObjectListing {
  readonly objects: { name: string; sizeBytes: number; version: number }[];
  readonly continuation?: Buffer;
}

export interface ProxyStats {
  bytesIn: number;
  bytesOut: number;
  puts: number;
  gets: number;
  rangeReads: number;
  deletes: number;
  fragmentsWritten: number;
  fragmentWriteFailures: number;
  fragmentsRead: number;
  fragmentReadFailures: number;
  /** Chunk decodes (getObject) and ranged reads that needed parity. */
  parityDecodes: number;
  hedgedReads: number;
  cacheHits: number;
  cacheMisses: number;
  manifestsCommitted: number;
  manifestBytesWritten: number;
  manifestUpdates: number;
  fencedCommits: number;
  damagedFragments: number;
  backgroundTasks: number;
  backgroundFailures: number;
}
