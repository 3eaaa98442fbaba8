import { assert } from '@shale/common';
import { LBA_MAP_CLUSTER_OFFSET_LIMIT } from './constants.js';
import type { LogFile } from './lba-log-file.js';
import { decodeTable, isSet, RecordType } from './lba-log-format.js';

/** The smallest table allocation (slots); tables grow by doubling up to the offset limit. */
const TABLE_SLOTS_MIN = 64;

/** Where a table's records are: patches in order, in one log file. Never mutated. */
export interface TableLocation {
  readonly file: LogFile;
  readonly offsets: readonly number[];
  readonly lengths: readonly number[];
  /** Sum of the records' lengths. */
  readonly bytes: number;
}

/** CRC32Cs by slot (cluster offset), with a bitmap of the slots present. */
export interface CrcSlots {
  crcs: Uint32Array;
  present: Uint32Array;
}

/**
 * The CRC32C of every cluster of one SCO (of one layer) that the map points into, indexed
 * by cluster offset: the 4 B per cluster kept out of the map's 8 B entries. `refs` counts
 * the mapped entries that point into it (the map drops it at 0).
 *
 * In memory a table holds either everything it has (`complete`), or only the slots set
 * since it was evicted (the rest is in its `persisted` records, read back on demand).
 * Slots are only ever added: a (layer, SCO, cluster offset) names one immutable payload
 * (SCO numbers are never reused, a SCO is append-only), so its CRC32C never changes while
 * the table lives (a rebuild after clear() starts new tables). That is what lets
 * snapshots share tables without copying them. An apply that gives a slot a different
 * CRC32C anyway (a caller's bug: two payloads in one SCO slot) overwrites it: the last
 * writer wins, for every cluster pointing there and for snapshots already taken.
 */
export class CrcTable {
  readonly key: number;
  refs = 0;
  slots: CrcSlots | undefined;
  complete: boolean;
  persisted: TableLocation | undefined;
  /** Slots set since the last checkpoint took the table: [dirtyFrom, dirtyTo). */
  dirtyFrom = Number.POSITIVE_INFINITY;
  dirtyTo = 0;
  /** Taken by a checkpoint whose write has not landed: `persisted` lacks those slots yet. */
  inFlight = false;
  /** A read of `persisted` in flight (one at a time per location). */
  loading: { from: TableLocation; promise: Promise<CrcSlots> } | undefined;

  constructor(key: number, complete: boolean, persisted?: TableLocation) {
    this.key = key;
    this.complete = complete;
    this.persisted = persisted;
  }

  get dirty(): boolean {
    return this.dirtyTo > this.dirtyFrom;
  }

  memoryBytes(): number {
    return this.slots === undefined
      ? 0
      : this.slots.crcs.byteLength + this.slots.present.byteLength;
  }

  /** Sets slot `slot` (returns the change in memory bytes). */
  set(slot: number, crc: number): number {
    assert(Number.isInteger(slot) && slot >= 0 && slot < LBA_MAP_CLUSTER_OFFSET_LIMIT, 'slot');
    if (this.peek(slot) === crc) return 0; // a TLog replay re-applies what the map has
    const before = this.memoryBytes();
    this.slots = ensureSlots(this.slots, slot);
    this.slots.crcs[slot] = crc;
    this.slots.present[slot >>> 5] =
      ((this.slots.present[slot >>> 5] as number) | (1 << (slot & 31))) >>> 0;
    if (slot < this.dirtyFrom) this.dirtyFrom = slot;
    if (slot + 1 > this.dirtyTo) this.dirtyTo = slot + 1;
    return this.memoryBytes() - before;
  }

  /** The CRC32C of `slot` if memory has it. */
  peek(slot: number): number | undefined {
    const slots = this.slots;
    if (slots === undefined || slot >= slots.crcs.length || !isSet(slots.present, slot)) {
      return undefined;
    }
    return slots.crcs[slot];
  }

  markClean(): void {
    this.dirtyFrom = Number.POSITIVE_INFINITY;
    this.dirtyTo = 0;
  }
}

/** `slots` grown to hold `slot` (a new pair of arrays when it must grow). */
export function ensureSlots(slots: CrcSlots | undefined, slot: number): CrcSlots {
  if (slots !== undefined && slot < slots.crcs.length) return slots;
  let capacity = Math.max(TABLE_SLOTS_MIN, slots?.crcs.length ?? 0);
  while (capacity <= slot) capacity *= 2;
  capacity = Math.min(capacity, LBA_MAP_CLUSTER_OFFSET_LIMIT);
  const grown: CrcSlots = {
    crcs: new Uint32Array(capacity),
    present: new Uint32Array(Math.ceil(capacity / 32)),
  };
  if (slots !== undefined) {
    grown.crcs.set(slots.crcs);
    grown.present.set(slots.present);
  }
  return grown;
}

/** `over` laid on top of `under` (slots present in `over` win); `under` is reused. */
export function overlay(under: CrcSlots, over: CrcSlots | undefined): CrcSlots {
  if (over === undefined) return under;
  let out = under;
  for (let w = 0; w < over.present.length; w += 1) {
    let bits = over.present[w] as number;
    while (bits !== 0) {
      const bit = 31 - Math.clz32(bits);
      bits = (bits & ~(1 << bit)) >>> 0;
      const slot = w * 32 + bit;
      out = ensureSlots(out, slot);
      out.crcs[slot] = over.crcs[slot] as number;
      out.present[w] = ((out.present[w] as number) | (1 << bit)) >>> 0;
    }
  }
  return out;
}

/** Reads a table's records back from its log file (held by the caller). */
export async function readTable(location: TableLocation): Promise<CrcSlots> {
  let slots: CrcSlots = ensureSlots(undefined, 0);
  for (let i = 0; i < location.offsets.length; i += 1) {
    const body = await location.file.readRecord(
      location.offsets[i] as number,
      location.lengths[i] as number,
      RecordType.Table,
    );
    decodeTable(body, (slot, crc) => {
      slots = ensureSlots(slots, slot);
      slots.crcs[slot] = crc;
      slots.present[slot >>> 5] =
        ((slots.present[slot >>> 5] as number) | (1 << (slot & 31))) >>> 0;
    });
  }
  return slots;
}
