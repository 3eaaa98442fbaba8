import { LBA_MAP_PAGE_CLUSTERS } from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import type { CrcTables } from './lba-crc-cache.js';
import type { CrcSlots, CrcTable } from './lba-crc-table.js';
import { isSet, tableKey, WORD1_OFFSET_MASK } from './lba-log-format.js';
import type { Page } from './lba-map-load.js';
import type { ClusterIndex, ClusterLocation, ScoNumber } from './types.js';

/** Tables a snapshot keeps read back for itself (it iterates in cluster order, SCOs repeat). */
const SNAPSHOT_TABLES_KEPT = 2;

/** What a range() or snapshotEntries() took when it was called. */
export interface Snapshot {
  /** The pages of its range, in order; held (copy-on-write) for as long as it runs. */
  readonly pages: readonly [number, Page][];
  readonly from: number;
  readonly to: number;
  /** snapshotEntries: the marker, yielded last when there is one. */
  readonly withMeta: { meta: Buffer | undefined } | undefined;
  /** The table directory as of the call. */
  readonly tables: ReadonlyMap<number, CrcTable>;
  readonly crc: CrcTables;
  readonly dir: string;
  readonly isClosed: () => boolean;
  /** Lets go of the log files it held; called once, when it ends. */
  readonly release: () => void;
}

/**
 * The mapped clusters of a snapshot in cluster order, each with its CRC32C (from memory, or
 * read back from the log: the files a snapshot may read stay open until it ends).
 */
export async function* iterateSnapshot(
  snapshot: Snapshot,
): AsyncGenerator<[ClusterIndex, ClusterLocation] | Buffer> {
  const { pages, from, to, withMeta, tables, crc: crcTables, release } = snapshot;
  const kept = new Map<CrcTable, CrcSlots>();
  try {
    for (const [pageIndex, page] of pages) {
      const base = pageIndex * LBA_MAP_PAGE_CLUSTERS;
      const end = Math.min(LBA_MAP_PAGE_CLUSTERS, to - base);
      const entries = page.entries;
      for (let slot = Math.max(0, from - base); slot < end; slot += 1) {
        const word1 = entries[2 * slot + 1] as number;
        if (word1 === 0) continue;
        const sco = entries[2 * slot] as number;
        const offset = (word1 & WORD1_OFFSET_MASK) - 1;
        const table = tables.get(tableKey(word1 >>> 24, sco));
        let crc = table?.peek(offset);
        if (crc === undefined && table !== undefined) {
          const slots = kept.get(table);
          if (slots !== undefined) crc = crcIn(slots, offset);
        }
        if (crc === undefined) {
          if (snapshot.isClosed())
            throw vdError(VdErrorCode.Closed, `LBA map ${snapshot.dir} is closed`);
          const location = crcTables.persistedPart(table, base + slot, sco, word1);
          location.file.hold();
          let slots: CrcSlots;
          try {
            slots = await crcTables.load(table as CrcTable, location);
          } finally {
            location.file.release();
          }
          kept.set(table as CrcTable, slots);
          if (kept.size > SNAPSHOT_TABLES_KEPT) kept.delete(kept.keys().next().value as CrcTable);
          crc = crcIn(slots, offset);
          if (crc === undefined) throw crcTables.missingCrc(base + slot, sco, word1);
        }
        yield [(base + slot) as ClusterIndex, makeLocation(sco, word1, crc)];
      }
    }
    if (withMeta?.meta !== undefined) yield withMeta.meta;
  } finally {
    release();
  }
}

export function makeLocation(sco: number, word1: number, crc32c: number): ClusterLocation {
  const layer = word1 >>> 24;
  const clusterOffset = (word1 & WORD1_OFFSET_MASK) - 1;
  return layer === 0
    ? { scoNumber: sco as ScoNumber, clusterOffset, crc32c }
    : { scoNumber: sco as ScoNumber, clusterOffset, crc32c, layer };
}

export function crcIn(slots: CrcSlots, slot: number): number | undefined {
  if (slot >= slots.crcs.length || !isSet(slots.present, slot)) return undefined;
  return slots.crcs[slot];
}
