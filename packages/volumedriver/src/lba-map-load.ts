import { open, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { LBA_MAP_PAGE_CLUSTERS } from './constants.js';
import { CrcTable, type TableLocation } from './lba-crc-table.js';
import { LogFile } from './lba-log-file.js';
import {
  decodeDrop,
  decodeMarker,
  decodePage,
  decodeTable,
  LOG_FORMAT_VERSION,
  RecordType,
  tableKey,
  WORD1_OFFSET_MASK,
} from './lba-log-format.js';

/** The map's log, its new file while a compaction or clear() writes it, a damaged one kept. */
export const LOG_FILE = 'map.log';
export const NEW_LOG_FILE = 'map.log.new';
export const CORRUPT_LOG_FILE = 'map.log.corrupt';
const CLEAN = { shared: false, dirty: false, changed: undefined } as const;
/** Files of the LevelDB map that older versions kept in the same directory. */
const LEVELDB_FILE = /^(CURRENT|LOCK|LOG|LOG\.old|MANIFEST-\d+|\d+\.(log|ldb|sst))$/;

/** One page of the map: 2 words per cluster (see lba-log-format.ts). */
export interface Page {
  entries: Uint32Array;
  mapped: number;
  /** Held by a snapshot or a checkpoint in flight: the next write copies the page first. */
  shared: boolean;
  /** Changed since the last checkpoint took it (its index is in the dirty set). */
  dirty: boolean;
  /**
   * While dirty: the slots changed since the last checkpoint took it (a bitmap), so the
   * next one may write only those (a DELTA record); undefined: write the page whole.
   */
  changed: Uint32Array | undefined;
}

/** Bytes of a page's records in the log: its newest whole record, and with its deltas. */
export interface PageRecordBytes {
  readonly whole: Map<number, number>;
  readonly live: Map<number, number>;
}

export interface LoadedMap {
  readonly file: LogFile;
  readonly pages: Map<number, Page>;
  /** The log's live page bytes, by page (pages without a record are not there). */
  readonly pageRecordBytes: PageRecordBytes;
  readonly tables: Map<number, CrcTable>;
  readonly mappedClusters: number;
  readonly meta: Buffer | undefined;
}

/**
 * Reads the map's log in `dir` (creating an empty one when there is none): every
 * complete page record in order, the location of every CRC32C table's records (read back
 * on demand), and the newest complete marker. A torn tail (a record that is incomplete or
 * fails its CRC32C, with nothing valid after it) is cut. Damage in the middle of the log
 * (valid records follow the bad one) cannot be repaired from the log: the map starts
 * empty with no marker, so the volume rebuilds it from its TLogs; the damaged file is
 * kept as map.log.corrupt.
 *
 * Page records newer than the newest marker (a checkpoint torn before its marker record)
 * are applied too. That is safe: such a page holds the map at some instant after the
 * marker, so it differs from the map at the marker only in clusters that TLog entries
 * after the marker wrote or trimmed; the volume replays exactly those entries, and each
 * sets its cluster absolutely (WRITE maps it, TRIM unmaps it), whatever it held before.
 */
export async function loadMap(dir: string, log: (message: string) => void): Promise<LoadedMap> {
  const logPath = path.join(dir, LOG_FILE);
  // A compaction or clear() that crashed before its rename: the old log is still whole.
  await rm(path.join(dir, NEW_LOG_FILE), { force: true });
  const names = await readdir(dir);
  if (!names.includes(LOG_FILE)) {
    const legacy = names.filter((name) => LEVELDB_FILE.test(name));
    if (legacy.length > 0) {
      log(
        `LBA map ${dir}: LevelDB files of an older version (${legacy.length}); they are deleted and the map starts empty with no marker (the volume rebuilds it from its TLogs)`,
      );
      await Promise.all(legacy.map((name) => rm(path.join(dir, name), { force: true })));
    }
    return emptyMap(await createLog(dir));
  }
  const file = await LogFile.open(logPath);
  const pages = new Map<number, Page>();
  const pageRecordBytes: PageRecordBytes = { whole: new Map(), live: new Map() };
  const locations = new Map<number, { offsets: number[]; lengths: number[]; bytes: number }>();
  let meta: Buffer | undefined;
  let first = true;
  const { validBytes, damage } = await file.scan((type, body, offsetBytes, recordBytes) => {
    if (first) {
      if (type !== RecordType.Header || body.readUInt32LE(0) !== LOG_FORMAT_VERSION) {
        throw new Error('the log does not start with a header of format 1');
      }
      first = false;
      return;
    }
    switch (type) {
      case RecordType.Page: {
        const { pageIndex, entries, delta } = decodePage(body);
        if (delta !== undefined) {
          const live = pageRecordBytes.live.get(pageIndex);
          if (live === undefined) throw new Error(`a delta of page ${pageIndex} without its page`);
          pageRecordBytes.live.set(pageIndex, live + recordBytes);
          let page = pages.get(pageIndex);
          if (page === undefined) {
            page = { entries: new Uint32Array(2 * LBA_MAP_PAGE_CLUSTERS), mapped: 0, ...CLEAN };
            pages.set(pageIndex, page);
          }
          for (let k = 0; k < delta.length; k += 3) {
            const at = 2 * (delta[k] as number);
            if (page.entries[at + 1] !== 0) page.mapped -= 1;
            if (delta[k + 2] !== 0) page.mapped += 1;
            page.entries[at] = delta[k + 1] as number;
            page.entries[at + 1] = delta[k + 2] as number;
          }
          break;
        }
        if (entries === undefined) {
          pages.delete(pageIndex);
          pageRecordBytes.whole.delete(pageIndex);
          pageRecordBytes.live.delete(pageIndex);
          break;
        }
        let mapped = 0;
        for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
          if (entries[2 * slot + 1] !== 0) mapped += 1;
        }
        pages.set(pageIndex, { entries, mapped, ...CLEAN });
        pageRecordBytes.whole.set(pageIndex, recordBytes);
        pageRecordBytes.live.set(pageIndex, recordBytes);
        break;
      }
      case RecordType.Table: {
        const key = decodeTable(body);
        const location = locations.get(key) ?? { offsets: [], lengths: [], bytes: 0 };
        location.offsets.push(offsetBytes);
        location.lengths.push(recordBytes);
        location.bytes += recordBytes;
        locations.set(key, location);
        break;
      }
      case RecordType.Drop:
        locations.delete(decodeDrop(body));
        break;
      case RecordType.Marker:
        meta = decodeMarker(body);
        break;
      default:
        throw new Error(`unexpected record type ${type}`);
    }
  });
  if (damage?.inTheMiddle === true) {
    return startOver(
      dir,
      file,
      log,
      `the record at byte ${damage.offsetBytes} of ${LOG_FILE} is damaged (${damage.reason}) and valid records follow it, so this is not a torn tail`,
    );
  }
  if (damage !== undefined) {
    log(
      `LBA map ${dir}: cut a torn tail of ${file.sizeBytes - validBytes} B at byte ${validBytes} (${damage.reason})`,
    );
    await file.truncate(validBytes);
  }
  if (first) {
    // Not even a whole header survived: the file was being created.
    await file.close();
    return emptyMap(await createLog(dir));
  }
  for (const [pageIndex, page] of pages) if (page.mapped === 0) pages.delete(pageIndex);
  // Reference counts, from the entries; a table with records but no entry is dropped at
  // the next checkpoint, an entry without a table fails loudly when it is read.
  const tables = new Map<number, CrcTable>();
  let mappedClusters = 0;
  for (const page of pages.values()) {
    mappedClusters += page.mapped;
    const entries = page.entries;
    for (let slot = 0; slot < LBA_MAP_PAGE_CLUSTERS; slot += 1) {
      const word1 = entries[2 * slot + 1] as number;
      if (word1 === 0) continue;
      if ((word1 & WORD1_OFFSET_MASK) === 0) throw new Error('unreachable: checked by decodePage');
      const key = tableKey(word1 >>> 24, entries[2 * slot] as number);
      let table = tables.get(key);
      if (table === undefined) {
        const location = locations.get(key);
        table = new CrcTable(key, location === undefined, toLocation(file, location));
        tables.set(key, table);
      }
      table.refs += 1;
    }
  }
  for (const [key, location] of locations) {
    if (!tables.has(key)) tables.set(key, new CrcTable(key, false, toLocation(file, location)));
  }
  // Checkpoints write a table before any page that points into it: a page naming a table the
  // log does not have means the log lost records it should have. Reads of those clusters
  // would fail, and so would the volume's replay (its trims read the map): start over.
  for (const [key, table] of tables) {
    if (table.persisted === undefined) {
      return startOver(
        dir,
        file,
        log,
        `entries point into the CRC32C table of SCO ${key % 2 ** 32} (layer ${Math.floor(key / 2 ** 32)}), which the log does not hold`,
      );
    }
  }
  return { file, pages, pageRecordBytes, tables, mappedClusters, meta };
}

/** A log that cannot be trusted: kept aside, and the map starts empty with no marker. */
async function startOver(
  dir: string,
  file: LogFile,
  log: (message: string) => void,
  why: string,
): Promise<LoadedMap> {
  log(
    `LBA map ${dir}: VD_CORRUPT: ${why}; the map starts empty with no marker (the volume rebuilds it from its TLogs); the damaged log is kept as ${CORRUPT_LOG_FILE}`,
  );
  await file.close();
  await rename(path.join(dir, LOG_FILE), path.join(dir, CORRUPT_LOG_FILE));
  return emptyMap(await createLog(dir));
}

function toLocation(
  file: LogFile,
  location: { offsets: number[]; lengths: number[]; bytes: number } | undefined,
): TableLocation | undefined {
  return location === undefined ? undefined : { file, ...location };
}

function emptyMap(file: LogFile): LoadedMap {
  return {
    file,
    pages: new Map(),
    pageRecordBytes: { whole: new Map(), live: new Map() },
    tables: new Map(),
    mappedClusters: 0,
    meta: undefined,
  };
}

/**
 * A new log holding only its header, put in place atomically (written to map.log.new,
 * synced, renamed over map.log, the directory synced): after it returns, a reopen finds
 * nothing of what the directory held before.
 */
export async function createLog(dir: string): Promise<LogFile> {
  const file = await LogFile.create(path.join(dir, NEW_LOG_FILE));
  try {
    await file.datasync();
    await installLog(dir, file);
  } catch (err) {
    await file.close();
    throw err;
  }
  return file;
}

/** Renames `file` (synced, at map.log.new) over map.log and syncs the directory. */
export async function installLog(dir: string, file: LogFile): Promise<void> {
  const logPath = path.join(dir, LOG_FILE);
  await rename(file.path, logPath);
  file.path = logPath;
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
