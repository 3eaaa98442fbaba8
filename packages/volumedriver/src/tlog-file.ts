import { constants as fsConstants, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { assert, errorMessage, systemErrorCode } from '@shale/common';
import { TLOG_ENTRY_SIZE_BYTES } from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { encodeTLogEntryInto, readTLog, type TLogEntry } from './tlog-format.js';

/** `00000007.tlog`: zero-padded hex, so names sort in TLog order. */
export function tlogFileName(tlogNumber: number): string {
  return `${tlogNumber.toString(16).padStart(8, '0')}.tlog`;
}

function ioError(err: unknown, what: string, filePath: string): Error {
  const code = systemErrorCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return vdError(VdErrorCode.NoSpace, `${what} ${filePath}: the write buffer is full`, {
      cause: err,
    });
  }
  return vdError(VdErrorCode.IoError, `${what} ${filePath}: ${errorMessage(err)}`, {
    cause: err,
  });
}

/**
 * Appends entries to one TLog file. Entries are numbered by their position (the format's
 * sequence), encoded into one buffer per append and written with one positioned write.
 * Calls run in order (one queue). After a failed write or sync the writer stays failed:
 * the file's tail is unknown, and the volume must not acknowledge anything more on it.
 *
 *   create/openAt ──append/sync──> open ──close──> closed
 *                         └──(disk error)──> failed
 */
export class TLogWriter {
  readonly tlogNumber: number;
  readonly path: string;
  private entries: number;
  private queue: Promise<unknown> = Promise.resolve();
  private failure: Error | undefined;
  private closed = false;
  private dirSynced: boolean;

  private constructor(
    tlogNumber: number,
    filePath: string,
    private readonly handle: fs.FileHandle,
    entryCount: number,
    dirSynced: boolean,
  ) {
    this.tlogNumber = tlogNumber;
    this.path = filePath;
    this.entries = entryCount;
    this.dirSynced = dirSynced;
  }

  /** A new, empty TLog file (VD_EXISTS... as VD_BAD_STATE: TLog numbers are never reused). */
  static async create(dir: string, tlogNumber: number): Promise<TLogWriter> {
    const filePath = path.join(dir, tlogFileName(tlogNumber));
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(
        filePath,
        fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL,
        0o640,
      );
    } catch (err) {
      if (systemErrorCode(err) === 'EEXIST') {
        throw vdError(VdErrorCode.BadState, `TLog ${filePath} exists already`, { cause: err });
      }
      throw ioError(err, 'cannot create TLog', filePath);
    }
    return new TLogWriter(tlogNumber, filePath, handle, 0, false);
  }

  /**
   * Opens an existing TLog to go on appending after a restart: its torn or damaged tail
   * (an interrupted append) is cut off first. Returns the writer and the trusted entries.
   */
  static async reopen(
    dir: string,
    tlogNumber: number,
  ): Promise<{ writer: TLogWriter; entries: TLogEntry[]; cutBytes: number }> {
    const filePath = path.join(dir, tlogFileName(tlogNumber));
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(filePath, fsConstants.O_RDWR);
    } catch (err) {
      throw ioError(err, 'cannot open TLog', filePath);
    }
    try {
      const buf = await handle.readFile();
      const read = readTLog(buf);
      const cutBytes = buf.length - read.validBytes;
      if (cutBytes > 0) {
        await handle.truncate(read.validBytes);
        await handle.sync();
      }
      return {
        writer: new TLogWriter(tlogNumber, filePath, handle, read.entries.length, true),
        entries: read.entries,
        cutBytes,
      };
    } catch (err) {
      await handle.close();
      throw ioError(err, 'cannot recover TLog', filePath);
    }
  }

  get entryCount(): number {
    return this.entries;
  }

  /**
   * Appends entries (one positioned write). Durability: resolved = in the page cache;
   * sync() makes them durable. Returns the sequence of the first entry.
   */
  append(entries: readonly TLogEntry[]): Promise<number> {
    this.checkUsable();
    const first = this.entries;
    if (entries.length === 0) return Promise.resolve(first);
    const buf = Buffer.allocUnsafe(entries.length * TLOG_ENTRY_SIZE_BYTES);
    for (let i = 0; i < entries.length; i += 1) {
      encodeTLogEntryInto(entries[i] as TLogEntry, first + i, buf, i * TLOG_ENTRY_SIZE_BYTES);
    }
    this.entries += entries.length;
    return this.enqueue(async () => {
      let written = 0;
      while (written < buf.length) {
        // Synchronous: a page-cache write in one system call (see sco-disk.ts for why).
        const bytesWritten = writeSync(
          this.handle.fd,
          buf,
          written,
          buf.length - written,
          first * TLOG_ENTRY_SIZE_BYTES + written,
        );
        assert(bytesWritten > 0, 'TLog write wrote nothing');
        written += bytesWritten;
      }
      return first;
    }, 'append to');
  }

  /** Durability: resolved = every entry appended before this call is on stable storage. */
  sync(): Promise<void> {
    this.checkUsable();
    return this.enqueue(async () => {
      await this.handle.datasync();
      if (!this.dirSynced) {
        await fsyncDir(path.dirname(this.path));
        this.dirSynced = true;
      }
    }, 'sync');
  }

  /** Syncs and closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.failure === undefined) await this.sync();
    this.closed = true;
    await this.queue.catch(() => undefined);
    await this.handle.close();
  }

  /** Closes without syncing (after a failure, or on a crash-like shutdown in tests). */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    await this.handle.close();
  }

  private checkUsable(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw vdError(VdErrorCode.Closed, `TLog ${this.path} is closed`);
  }

  private enqueue<T>(work: () => Promise<T>, what: string): Promise<T> {
    const run = this.queue.then(async () => {
      if (this.failure !== undefined) throw this.failure;
      try {
        return await work();
      } catch (err) {
        this.failure = ioError(err, `cannot ${what} TLog`, this.path);
        throw this.failure;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Reads a closed TLog: every entry must be intact (a closed TLog was synced whole). */
export function parseClosedTLog(buf: Buffer, what: string): TLogEntry[] {
  const read = readTLog(buf);
  if (read.stop !== 'end') {
    throw vdError(VdErrorCode.Corrupt, `${what}: ${read.reason ?? read.stop}`);
  }
  return read.entries;
}

/** Writes a whole TLog file at once (a rewritten TLog: rollback, scrubbing) and syncs it. */
export async function writeTLogFile(
  dir: string,
  tlogNumber: number,
  entries: readonly TLogEntry[],
): Promise<Buffer> {
  const buf = encodeTLog(entries);
  const filePath = path.join(dir, tlogFileName(tlogNumber));
  try {
    const handle = await fs.open(
      filePath,
      fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL,
      0o640,
    );
    try {
      await handle.writeFile(buf);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsyncDir(dir);
  } catch (err) {
    throw ioError(err, 'cannot write TLog', filePath);
  }
  return buf;
}

export function encodeTLog(entries: readonly TLogEntry[]): Buffer {
  const buf = Buffer.allocUnsafe(entries.length * TLOG_ENTRY_SIZE_BYTES);
  for (let i = 0; i < entries.length; i += 1) {
    encodeTLogEntryInto(entries[i] as TLogEntry, i, buf, i * TLOG_ENTRY_SIZE_BYTES);
  }
  return buf;
}
