import { type FileHandle, open } from 'node:fs/promises';
import { assert, errorMessage } from '@shale/common';
import { LBA_MAP_LOG_IO_MAX_BYTES } from './constants.js';
import {
  encodeHeader,
  RECORD_HEADER_BYTES,
  RECORD_MAGIC,
  RecordType,
  recordCrc,
} from './lba-log-format.js';

/** Larger than any record the map writes (a whole CRC32C table is ~1.1 MiB). */
const RECORD_BODY_MAX_BYTES = 4 * 1024 * 1024;
const MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(RECORD_MAGIC, 0);
  return b;
})();

/** Where a damaged log stops being trusted. */
export interface LogDamage {
  readonly offsetBytes: number;
  readonly reason: string;
  /**
   * A complete, valid record follows the damaged one: not a torn tail (which only ever
   * loses the end of the file) but damage in the middle of the log.
   */
  readonly inTheMiddle: boolean;
}

/**
 * One file of the LBA map's log, opened for reading and appending. The map appends
 * checkpoints at the end; the file is replaced (a new file renamed over it) by compaction
 * and clear(). Readers of persisted CRC32C tables (a snapshot iterating, a getMany that
 * missed) may still need a replaced file: each holds it (hold/release) and the handle is
 * closed when the last hold goes.
 */
export class LogFile {
  /** Where it is (a compaction renames its new file over the old one, then sets this). */
  path: string;
  private readonly handle: FileHandle;
  /** Where the next append goes: the end of the valid records. */
  sizeBytes: number;
  /** Bytes appended since the last datasync. */
  unsyncedBytes = 0;
  private holds = 1;
  private closing: Promise<void> | undefined;

  private constructor(filePath: string, handle: FileHandle, sizeBytes: number) {
    this.path = filePath;
    this.handle = handle;
    this.sizeBytes = sizeBytes;
  }

  /** A new file holding only the HEADER record (truncating any file at that path). */
  static async create(filePath: string): Promise<LogFile> {
    const handle = await open(filePath, 'w+');
    const file = new LogFile(filePath, handle, 0);
    await file.append([encodeHeader()]);
    return file;
  }

  /** An existing file, for scan() and then truncate() to where its valid records end. */
  static async open(filePath: string): Promise<LogFile> {
    const handle = await open(filePath, 'r+');
    const { size } = await handle.stat();
    return new LogFile(filePath, handle, size);
  }

  /** Cuts everything from `validBytes` on (a torn tail); appends go there. */
  async truncate(validBytes: number): Promise<void> {
    await this.handle.truncate(validBytes);
    await this.handle.datasync();
    this.sizeBytes = validBytes;
  }

  /** Appends records in order; resolves with the offset of each. Page cache only. */
  async append(records: readonly Buffer[]): Promise<number[]> {
    assert(this.closing === undefined, 'append to a closed LBA map log');
    const offsets: number[] = new Array(records.length);
    let i = 0;
    while (i < records.length) {
      const batch: Buffer[] = [];
      let batchBytes = 0;
      const at = this.sizeBytes;
      while (i < records.length) {
        const record = records[i] as Buffer;
        if (batch.length > 0 && batchBytes + record.length > LBA_MAP_LOG_IO_MAX_BYTES) break;
        offsets[i] = at + batchBytes;
        batch.push(record);
        batchBytes += record.length;
        i += 1;
      }
      let written = 0;
      while (written < batchBytes) {
        const { bytesWritten } = await this.handle.writev(
          written === 0 ? batch : [Buffer.concat(batch).subarray(written)],
          at + written,
        );
        written += bytesWritten;
      }
      this.sizeBytes += batchBytes;
      this.unsyncedBytes += batchBytes;
    }
    return offsets;
  }

  async datasync(): Promise<void> {
    await this.handle.datasync();
    this.unsyncedBytes = 0;
  }

  /** The body of the record at `offsetBytes`, checked against its CRC32C (throws if bad). */
  async readRecord(offsetBytes: number, recordBytes: number, type: RecordType): Promise<Buffer> {
    const record = Buffer.allocUnsafe(recordBytes);
    let got = 0;
    while (got < recordBytes) {
      const { bytesRead } = await this.handle.read(
        record,
        got,
        recordBytes - got,
        offsetBytes + got,
      );
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    const problem = got === recordBytes ? checkRecord(record, 0) : 'past the end of the file';
    if (problem !== undefined || record.readUInt8(4) !== type) {
      throw new Error(`record at byte ${offsetBytes} of ${this.path}: ${problem ?? 'wrong type'}`);
    }
    return record.subarray(RECORD_HEADER_BYTES);
  }

  /**
   * Reads every record in order, calling `onRecord` with each body (a view, valid during
   * the call). Stops at the first record that is incomplete or fails its CRC32C (or that
   * `onRecord` rejects by throwing) and says whether valid records follow it.
   */
  async scan(
    onRecord: (type: number, body: Buffer, offsetBytes: number, recordBytes: number) => void,
  ): Promise<{ validBytes: number; damage: LogDamage | undefined }> {
    const { size } = await this.handle.stat();
    let chunk = Buffer.alloc(0);
    let chunkAt = 0;
    /** The bytes [at, at + n), or undefined past the end of the file. */
    const bytesAt = async (at: number, n: number): Promise<Buffer | undefined> => {
      if (at + n > size) return undefined;
      if (at < chunkAt || at + n > chunkAt + chunk.length) {
        const want = Math.min(size - at, Math.max(n, LBA_MAP_LOG_IO_MAX_BYTES));
        chunk = Buffer.allocUnsafe(want);
        let got = 0;
        while (got < want) {
          const { bytesRead } = await this.handle.read(chunk, got, want - got, at + got);
          if (bytesRead === 0) return undefined;
          got += bytesRead;
        }
        chunkAt = at;
      }
      return chunk.subarray(at - chunkAt, at - chunkAt + n);
    };
    let at = 0;
    while (at < size) {
      const header = await bytesAt(at, RECORD_HEADER_BYTES);
      let problem: string | undefined;
      let record: Buffer | undefined;
      if (header === undefined) problem = 'incomplete header';
      else {
        problem = checkHeader(header);
        if (problem === undefined) {
          record = await bytesAt(at, RECORD_HEADER_BYTES + header.readUInt32LE(8));
          problem = record === undefined ? 'past the end of the file' : checkRecord(record, 0);
        }
      }
      if (problem === undefined && record !== undefined) {
        try {
          onRecord(record.readUInt8(4), record.subarray(RECORD_HEADER_BYTES), at, record.length);
        } catch (err) {
          // It passed its CRC32C: it is what was written, and it makes no sense.
          return {
            validBytes: at,
            damage: { offsetBytes: at, reason: errorMessage(err), inTheMiddle: true },
          };
        }
        at += record.length;
        continue;
      }
      const inTheMiddle = await this.validRecordAfter(at + 1, size);
      return {
        validBytes: at,
        damage: { offsetBytes: at, reason: problem ?? 'bad record', inTheMiddle },
      };
    }
    return { validBytes: at, damage: undefined };
  }

  /** Whether a complete record with a valid CRC32C starts anywhere in [from, size). */
  private async validRecordAfter(from: number, size: number): Promise<boolean> {
    for (let at = from; at < size; at += LBA_MAP_LOG_IO_MAX_BYTES) {
      const want = Math.min(size - at, LBA_MAP_LOG_IO_MAX_BYTES + MAGIC_BYTES.length - 1);
      const window = Buffer.allocUnsafe(want);
      const { bytesRead } = await this.handle.read(window, 0, want, at);
      for (let k = window.subarray(0, bytesRead).indexOf(MAGIC_BYTES); k >= 0; ) {
        const candidateAt = at + k;
        const header = Buffer.alloc(RECORD_HEADER_BYTES);
        await this.handle.read(header, 0, RECORD_HEADER_BYTES, candidateAt);
        if (checkHeader(header) === undefined) {
          const length = RECORD_HEADER_BYTES + header.readUInt32LE(8);
          if (candidateAt + length <= size) {
            const record = Buffer.alloc(length);
            await this.handle.read(record, 0, length, candidateAt);
            if (checkRecord(record, 0) === undefined) return true;
          }
        }
        k = window.subarray(0, bytesRead).indexOf(MAGIC_BYTES, k + 1);
      }
    }
    return false;
  }

  hold(): void {
    assert(this.holds > 0, 'hold of a closed LBA map log');
    this.holds += 1;
  }

  /** Drops one hold; the last one closes the handle. */
  release(): void {
    // The map closed it already (a snapshot or a read outlived the map): nothing to do.
    if (this.closing !== undefined) return;
    assert(this.holds > 0, 'LBA map log released more often than held');
    this.holds -= 1;
    if (this.holds === 0) void this.close();
  }

  /** Closes the handle now, whatever holds remain (the map is closing). */
  close(): Promise<void> {
    this.holds = 0;
    this.closing ??= this.handle.close().catch(() => undefined);
    return this.closing;
  }
}

function checkHeader(header: Buffer): string | undefined {
  if (header.readUInt32LE(0) !== RECORD_MAGIC) return 'no record magic';
  const type = header.readUInt8(4);
  if (type < RecordType.Header || type > RecordType.Marker || header.readUIntLE(5, 3) !== 0) {
    return 'unknown record type';
  }
  if (header.readUInt32LE(8) > RECORD_BODY_MAX_BYTES) return 'record length out of range';
  return undefined;
}

/** undefined when the record at `at` of `buf` (complete in it) is valid. */
function checkRecord(buf: Buffer, at: number): string | undefined {
  const header = buf.subarray(at, at + RECORD_HEADER_BYTES);
  const headerProblem = checkHeader(header);
  if (headerProblem !== undefined) return headerProblem;
  const body = buf.subarray(
    at + RECORD_HEADER_BYTES,
    at + RECORD_HEADER_BYTES + header.readUInt32LE(8),
  );
  if (recordCrc(header.subarray(4, 12), body) !== header.readUInt32LE(12)) return 'CRC32C mismatch';
  return undefined;
}
