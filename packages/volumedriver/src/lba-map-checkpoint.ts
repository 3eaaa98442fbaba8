import { rm } from 'node:fs/promises';
import path from 'node:path';
import {
  LBA_MAP_COMPACT_MIN_BYTES,
  LBA_MAP_COMPACT_RATIO,
  LBA_MAP_CRC_TABLE_RECORDS_MAX,
  LBA_MAP_LOG_IO_MAX_BYTES,
} from './constants.js';
import { type CrcSlots, type CrcTable, overlay, readTable } from './lba-crc-table.js';
import { LogFile } from './lba-log-file.js';
import {
  countBits,
  encodeDrop,
  encodeMarker,
  encodePage,
  encodePageDelta,
  encodeTable,
  pageDeltaRecordBytes,
} from './lba-log-format.js';
import { installLog, NEW_LOG_FILE, type Page, type PageRecordBytes } from './lba-map-load.js';

/** The parts of an LbaMap a checkpoint takes (the live objects; taken synchronously). */
export interface CheckpointSource {
  readonly dir: string;
  readonly file: LogFile;
  readonly pages: Map<number, Page>;
  readonly dirtyPages: ReadonlySet<number>;
  readonly pageRecordBytes: PageRecordBytes;
  /** The table directory, writable (not shared with a snapshot). */
  readonly tables: Map<number, CrcTable>;
  readonly dirtyTables: ReadonlySet<CrcTable>;
  readonly unusedTables: ReadonlySet<CrcTable>;
  readonly meta: Buffer | undefined;
}

export interface CheckpointResult {
  /** A compaction's new log (installed as map.log), with the sizes of its page records. */
  readonly newFile?: LogFile;
  readonly pageRecordBytes: PageRecordBytes;
  readonly pageBytesDelta: number;
  readonly tableBytesDelta: number;
  readonly synced: boolean;
}

export interface CheckpointWrite {
  /** Tables removed from the directory by this checkpoint (their count was 0). */
  readonly dropped: readonly CrcTable[];
  readonly done: Promise<CheckpointResult>;
}

interface TablePart {
  readonly table: CrcTable;
  readonly from: number;
  readonly to: number;
  readonly slots: CrcSlots | undefined;
  readonly complete: boolean;
  readonly persisted: CrcTable['persisted'];
}

/** Whether a log of `logBytes` with `liveBytes` of newest records is worth rewriting. */
export function compactionDue(logBytes: number, liveBytes: number): boolean {
  return logBytes > LBA_MAP_COMPACT_MIN_BYTES && logBytes > LBA_MAP_COMPACT_RATIO * liveBytes;
}

/**
 * An incremental checkpoint: takes (now) the dirty tables' new slots, the dirty pages (they
 * become copy-on-write), the unused tables and the marker, then appends
 * [TABLE patches][PAGES][DROPS][MARKER] to the log, and fdatasyncs it with `sync`.
 * Durability: when `done` resolves, the records are in the page cache (with sync: on
 * stable storage); a crash before loses at most this checkpoint, whose marker is then
 * not in the log either.
 */
export function writeCheckpoint(source: CheckpointSource, sync: boolean): CheckpointWrite {
  const dropped = takeUnused(source);
  const parts: TablePart[] = [];
  for (const table of source.dirtyTables) {
    if (source.tables.get(table.key) !== table || !table.dirty) continue;
    parts.push(takeTable(table, table.dirtyFrom, table.dirtyTo));
  }
  // Each dirty page: whole, or only its changed slots when that is smaller (and its deltas
  // stay under its whole size, so a page's live bytes never pass twice that).
  const pageRecords: [number, Buffer | undefined, boolean][] = [];
  for (const index of source.dirtyPages) {
    const page = source.pages.get(index);
    if (page === undefined) {
      if (source.pageRecordBytes.live.has(index)) pageRecords.push([index, undefined, false]);
      continue;
    }
    const { entries, changed } = takePage(page);
    const whole = source.pageRecordBytes.whole.get(index);
    const live = source.pageRecordBytes.live.get(index);
    if (changed !== undefined && whole !== undefined && live !== undefined) {
      const changedSlots = countBits(changed);
      const deltaBytes = pageDeltaRecordBytes(changedSlots);
      if (deltaBytes < whole && live + deltaBytes <= 2 * whole) {
        pageRecords.push([index, encodePageDelta(index, entries, changed, changedSlots), true]);
        continue;
      }
    }
    pageRecords.push([index, encodePage(index, entries), false]);
  }
  const { file, meta, pageRecordBytes } = source;
  const done = (async (): Promise<CheckpointResult> => {
    const records: Buffer[] = [];
    const full: boolean[] = [];
    for (const part of parts) {
      const whole = (part.persisted?.offsets.length ?? 0) >= LBA_MAP_CRC_TABLE_RECORDS_MAX;
      full.push(whole);
      records.push(whole ? encodeWhole(part, await wholeSlots(part)) : encodePatch(part));
    }
    for (const [index, record] of pageRecords) records.push(record ?? encodePage(index, undefined));
    for (const table of dropped) {
      if (table.persisted !== undefined) records.push(encodeDrop(table.key));
    }
    records.push(encodeMarker(meta));
    const offsets = await file.append(records);
    let tableBytesDelta = 0;
    for (let i = 0; i < parts.length; i += 1) {
      const part = parts[i] as TablePart;
      const offset = offsets[i] as number;
      const length = (records[i] as Buffer).length;
      const before = part.persisted;
      const location =
        full[i] === true || before === undefined
          ? { file, offsets: [offset], lengths: [length], bytes: length }
          : {
              file,
              offsets: [...before.offsets, offset],
              lengths: [...before.lengths, length],
              bytes: before.bytes + length,
            };
      tableBytesDelta += location.bytes - (before?.bytes ?? 0);
      part.table.persisted = location;
      part.table.inFlight = false;
    }
    let pageBytesDelta = 0;
    for (let j = 0; j < pageRecords.length; j += 1) {
      const [index, record, delta] = pageRecords[j] as [number, Buffer | undefined, boolean];
      const before = pageRecordBytes.live.get(index) ?? 0;
      const length = (records[parts.length + j] as Buffer).length;
      if (record === undefined) {
        pageRecordBytes.whole.delete(index);
        pageRecordBytes.live.delete(index);
      } else if (delta) {
        pageRecordBytes.live.set(index, before + length);
      } else {
        pageRecordBytes.whole.set(index, length);
        pageRecordBytes.live.set(index, length);
      }
      pageBytesDelta += (pageRecordBytes.live.get(index) ?? 0) - before;
    }
    if (sync) await file.datasync();
    return { pageRecordBytes, pageBytesDelta, tableBytesDelta, synced: sync };
  })();
  return { dropped, done };
}

/**
 * A compaction: takes (now) every page and table and the marker, writes them to a new
 * file (map.log.new), fdatasyncs it, renames it over map.log and syncs the directory.
 * Durability: when `done` resolves, the new log is on stable storage and in place; a
 * crash before leaves the old log whole (the new file is deleted at the next open).
 */
export function writeCompaction(source: CheckpointSource): CheckpointWrite {
  const dropped = takeUnused(source);
  const parts: TablePart[] = [];
  for (const table of source.tables.values()) parts.push(takeTable(table, 0, 0));
  const pages: [number, Uint32Array][] = [];
  for (const [index, page] of source.pages) pages.push([index, takePage(page).entries]);
  const { dir, meta } = source;
  const done = (async (): Promise<CheckpointResult> => {
    const file = await LogFile.create(path.join(dir, NEW_LOG_FILE));
    try {
      const located: [TablePart, number, number][] = [];
      const pageRecordBytes: PageRecordBytes = { whole: new Map(), live: new Map() };
      let batch: Buffer[] = [];
      let batchBytes = 0;
      const flush = async (): Promise<number[]> => {
        const offsets = await file.append(batch);
        batch = [];
        batchBytes = 0;
        return offsets;
      };
      let pendingTables: TablePart[] = [];
      for (const part of parts) {
        if (part.slots === undefined && part.persisted === undefined) continue; // nothing known
        const record = encodeWhole(part, await wholeSlots(part));
        batch.push(record);
        batchBytes += record.length;
        pendingTables.push(part);
        if (batchBytes >= LBA_MAP_LOG_IO_MAX_BYTES) {
          const lengths = batch.map((r) => r.length);
          const offsets = await flush();
          pendingTables.forEach((p, k) => {
            located.push([p, offsets[k] as number, lengths[k] as number]);
          });
          pendingTables = [];
        }
      }
      const lengths = batch.map((r) => r.length);
      const offsets = await flush();
      pendingTables.forEach((p, k) => {
        located.push([p, offsets[k] as number, lengths[k] as number]);
      });
      for (const [index, entries] of pages) {
        const record = encodePage(index, entries);
        pageRecordBytes.whole.set(index, record.length);
        pageRecordBytes.live.set(index, record.length);
        batch.push(record);
        batchBytes += record.length;
        if (batchBytes >= LBA_MAP_LOG_IO_MAX_BYTES) await flush();
      }
      batch.push(encodeMarker(meta));
      await flush();
      await file.datasync();
      await installLog(dir, file);
      for (const [part, offset, length] of located) {
        part.table.persisted = { file, offsets: [offset], lengths: [length], bytes: length };
      }
      return {
        newFile: file,
        pageRecordBytes,
        pageBytesDelta: 0,
        tableBytesDelta: 0,
        synced: true,
      };
    } catch (err) {
      await file.close();
      await rm(path.join(dir, NEW_LOG_FILE), { force: true });
      throw err;
    } finally {
      for (const part of parts) part.table.inFlight = false;
    }
  })();
  return { dropped, done };
}

/** Removes the tables still unused from the directory (they get a DROP record). */
function takeUnused(source: CheckpointSource): CrcTable[] {
  const dropped: CrcTable[] = [];
  for (const table of source.unusedTables) {
    if (table.refs !== 0 || source.tables.get(table.key) !== table) continue;
    source.tables.delete(table.key);
    dropped.push(table);
  }
  return dropped;
}

/**
 * A table's slots [from, to) as of now. Until the write lands, the table stays in memory
 * (`inFlight`): its location in the log does not have these slots yet.
 */
function takeTable(table: CrcTable, from: number, to: number): TablePart {
  const part = {
    table,
    from,
    to,
    slots: table.slots,
    complete: table.complete,
    persisted: table.persisted,
  };
  table.markClean();
  table.inFlight = true;
  return part;
}

/** A page's entries as of now (later writes copy the page), and what changed since the last. */
function takePage(page: Page): { entries: Uint32Array; changed: Uint32Array | undefined } {
  const changed = page.changed;
  page.shared = true;
  page.dirty = false;
  page.changed = undefined;
  return { entries: page.entries, changed };
}

function encodePatch(part: TablePart): Buffer {
  const slots = part.slots as CrcSlots; // a dirty table has its new slots in memory
  return encodeTable({
    key: part.table.key,
    firstSlot: part.from,
    slotCount: part.to - part.from,
    present: slots.present,
    crcs: slots.crcs,
  });
}

function encodeWhole(part: TablePart, slots: CrcSlots): Buffer {
  return encodeTable({
    key: part.table.key,
    firstSlot: 0,
    slotCount: slots.crcs.length,
    present: slots.present,
    crcs: slots.crcs,
  });
}

/** Everything a table holds: memory, under it what its records in the log hold. */
async function wholeSlots(part: TablePart): Promise<CrcSlots> {
  if (part.complete && part.slots !== undefined) return part.slots;
  if (part.persisted === undefined)
    return part.slots ?? { crcs: new Uint32Array(0), present: new Uint32Array(0) };
  return overlay(await readTable(part.persisted), part.slots);
}
