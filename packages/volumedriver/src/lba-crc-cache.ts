import { assert, errorMessage } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';
import {
  type CrcSlots,
  CrcTable,
  overlay,
  readTable,
  type TableLocation,
} from './lba-crc-table.js';
import { tableKey, WORD1_OFFSET_MASK } from './lba-log-format.js';

/**
 * The CRC32C tables of one LBA map: the directory by (layer, SCO), their reference counts,
 * which are dirty or unused since the last checkpoint, and the memory they take: tables
 * beyond `budgetBytes` or `budgetTables` are evicted (least recently used first) once their
 * slots are in the log, and read back on a miss.
 */
export class CrcTables {
  private tables = new Map<number, CrcTable>();
  /** A snapshot holds `tables`: the next change to the directory copies it. */
  private shared = false;
  dirty = new Set<CrcTable>();
  /** Tables whose count reached 0: dropped by the next checkpoint unless used again. */
  unused = new Set<CrcTable>();
  /** Tables with slots in memory, least recently used first. */
  private lru = new Map<CrcTable, true>();
  private lruLast: CrcTable | undefined;
  private memoryBytes = 0;
  hits = 0;
  misses = 0;

  constructor(
    private readonly dir: string,
    private readonly budgetBytes: number,
    private readonly budgetTables: number,
    private readonly isClosed: () => boolean,
  ) {
    assert(Number.isInteger(budgetBytes) && budgetBytes >= 0, 'crcCacheBytes');
    assert(Number.isInteger(budgetTables) && budgetTables >= 0, 'cacheEntries');
  }

  /** Starts over with `tables` (at open) or none (clear). */
  reset(tables: Map<number, CrcTable> = new Map()): void {
    this.tables = tables;
    this.shared = false;
    this.dirty = new Set();
    this.unused = new Set();
    for (const table of tables.values()) if (table.refs === 0) this.unused.add(table);
    this.lru = new Map();
    this.lruLast = undefined;
    this.memoryBytes = 0;
  }

  get size(): number {
    return this.tables.size;
  }

  get inMemory(): number {
    return this.lru.size;
  }

  get bytesInMemory(): number {
    return this.memoryBytes;
  }

  /** The directory as of now, for a snapshot (the next change copies it). */
  share(): ReadonlyMap<number, CrcTable> {
    this.shared = true;
    return this.tables;
  }

  /** The directory, writable (a checkpoint removes the unused tables from it). */
  writable(): Map<number, CrcTable> {
    if (this.shared) {
      this.tables = new Map(this.tables);
      this.shared = false;
    }
    return this.tables;
  }

  /** The tables a checkpoint took are gone from the directory: stop counting them. */
  forget(dropped: readonly CrcTable[]): void {
    for (const table of dropped) {
      this.memoryBytes -= table.memoryBytes();
      this.lru.delete(table);
      if (this.lruLast === table) this.lruLast = undefined;
    }
  }

  /** A new entry points at (layer, SCO, offset) with this CRC32C. */
  ref(layer: number, sco: number, offset: number, crc: number): void {
    const key = tableKey(layer, sco);
    let table = this.tables.get(key);
    if (table === undefined) {
      table = new CrcTable(key, true);
      this.writable().set(key, table);
    }
    table.refs += 1;
    const grewBytes = table.set(offset, crc);
    if (table.dirty) this.dirty.add(table);
    if (grewBytes !== 0) this.memoryBytes += grewBytes;
    if (table.slots !== undefined) this.touch(table);
  }

  /** An entry (word0 `sco`, `word1`) stops pointing into its table. */
  unref(sco: number, word1: number): void {
    const table = this.tables.get(tableKey(word1 >>> 24, sco));
    assert(table !== undefined && table.refs > 0, 'a mapped entry without its CRC32C table');
    table.refs -= 1;
    if (table.refs === 0) this.unused.add(table);
  }

  /** The table of an entry, and its CRC32C if memory has it (counted as a hit). */
  lookup(sco: number, word1: number): { table: CrcTable | undefined; crc: number | undefined } {
    const table = this.tables.get(tableKey(word1 >>> 24, sco));
    const crc = table?.peek((word1 & WORD1_OFFSET_MASK) - 1);
    if (crc !== undefined) {
      this.hits += 1;
      this.touch(table as CrcTable);
    }
    return { table, crc };
  }

  /** Where the rest of `table` is, for a slot memory does not have; VD_CORRUPT if nowhere. */
  persistedPart(
    table: CrcTable | undefined,
    index: number,
    sco: number,
    word1: number,
  ): TableLocation {
    if (table === undefined || table.complete || table.persisted === undefined) {
      throw this.missingCrc(index, sco, word1);
    }
    this.misses += 1;
    return table.persisted;
  }

  /**
   * Reads `location` back (the caller holds its file) and keeps it in `table` when that is
   * still the table's current state.
   */
  async load(table: CrcTable, location: TableLocation): Promise<CrcSlots> {
    let loading = table.loading;
    if (loading === undefined || loading.from !== location) {
      loading = { from: location, promise: readTable(location) };
      table.loading = loading;
    }
    let slots: CrcSlots;
    try {
      slots = await loading.promise;
    } catch (err) {
      if (this.isClosed()) throw vdError(VdErrorCode.Closed, `LBA map ${this.dir} is closed`);
      throw vdError(
        VdErrorCode.Corrupt,
        `LBA map ${this.dir}: cannot read the CRC32C table of SCO ${table.key % 2 ** 32} back from the log: ${errorMessage(err)}`,
        { cause: err, details: { dir: this.dir } },
      );
    } finally {
      if (table.loading === loading) table.loading = undefined;
    }
    if (
      !this.isClosed() &&
      this.tables.get(table.key) === table &&
      !table.complete &&
      table.persisted === location
    ) {
      const before = table.memoryBytes();
      table.slots = overlay(slots, table.slots);
      table.complete = true;
      this.memoryBytes += table.memoryBytes() - before;
      this.touch(table);
      this.evict();
    }
    return slots;
  }

  /** Drops clean tables from memory, least recently used first, down to the budget. */
  evict(): void {
    if (this.memoryBytes <= this.budgetBytes && this.lru.size <= this.budgetTables) return;
    for (const table of this.lru.keys()) {
      if (this.memoryBytes <= this.budgetBytes && this.lru.size <= this.budgetTables) break;
      if (table.dirty || table.inFlight || table.persisted === undefined) continue;
      this.memoryBytes -= table.memoryBytes();
      table.slots = undefined;
      table.complete = false;
      this.lru.delete(table);
      if (this.lruLast === table) this.lruLast = undefined;
    }
  }

  /** Bytes of every table's records in the log. */
  logBytes(): number {
    let bytes = 0;
    for (const table of this.tables.values()) bytes += table.persisted?.bytes ?? 0;
    return bytes;
  }

  missingCrc(index: number, sco: number, word1: number): Error {
    return vdError(
      VdErrorCode.Corrupt,
      `LBA map ${this.dir}: no CRC32C for cluster ${index} (SCO ${sco}, cluster offset ${(word1 & WORD1_OFFSET_MASK) - 1}, layer ${word1 >>> 24}): the map's log is damaged; rebuild the map from the TLogs`,
      { details: { dir: this.dir, clusterIndex: String(index) } },
    );
  }

  private touch(table: CrcTable): void {
    if (this.lruLast === table) return;
    this.lru.delete(table);
    this.lru.set(table, true);
    this.lruLast = table;
  }
}
