import type { ClusterIndex, ClusterLocation } from './types.js';

/** One change to the map: a cluster now lives at `location`, or is unmapped (undefined). */
export interface LbaUpdate {
  readonly clusterIndex: ClusterIndex;
  readonly location: ClusterLocation | undefined;
}

export interface LbaMapOptions {
  /** The map's own directory (created if missing). One LbaMap per directory. */
  readonly dir: string;
  /** Most CRC32C tables (one per SCO) in memory; default LBA_MAP_CACHE_ENTRIES. */
  readonly cacheEntries?: number;
  /** Memory for CRC32C tables; default LBA_MAP_CRC_CACHE_BYTES. */
  readonly crcCacheBytes?: number;
  /**
   * Default for apply(): fdatasync the log after its checkpoint. Off by default: the map is
   * a cache of the TLogs, which are the durable truth and rebuild it after a crash.
   */
  readonly sync?: boolean;
  /** Where the map says what it repaired (a torn tail cut, a damaged log); default stderr. */
  readonly log?: (message: string) => void;
}

/** The map's figures, for metrics and tests. */
export interface LbaMapStats {
  /** CRC32C tables in memory (the map's cache now; the entries themselves are all in memory). */
  entries: number;
  /** CRC32C lookups answered from memory / that read a table back from the log. */
  hits: number;
  misses: number;
  /** Pages and CRC32C tables changed since the last checkpoint took them. */
  pending: number;
  mappedClusters: number;
  pages: number;
  /** CRC32C tables the map has (one per (layer, SCO) it points into), in memory or not. */
  crcTables: number;
  /** Typed arrays of the pages: LBA_MAP_ENTRY_SIZE_BYTES per cluster of every page. */
  mapBytes: number;
  /** Typed arrays of the CRC32C tables in memory (4 B + 1 bit per slot). */
  crcTableBytes: number;
  /** The log's size, and the bytes of its newest page records and table records. */
  logBytes: number;
  logPageBytes: number;
  logTableBytes: number;
}
