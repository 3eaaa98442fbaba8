import type { Disk, ReadHandle } from './disk.js';

interface CachedHandle {
  readonly handle: Promise<ReadHandle>;
  refs: number;
  /** Set when the file was removed: close as soon as the last reader is done. */
  retired: boolean;
}

/**
 * Open read handles of value files, least recently used out first, so a read is one
 * pread instead of open + pread + close (three thread-pool round trips).
 *
 * A handle outlives an unlink (POSIX): a reader holding one still reads the value its
 * record named. The store retires a file's handle before removing the file.
 */
export class FileHandleCache {
  private readonly handles = new Map<number, CachedHandle>();

  constructor(
    private readonly disk: Disk,
    private readonly maxOpen: number,
  ) {}

  /** Runs `use` with an open handle of the file, opening it if needed. */
  async with<T>(fileId: number, path: string, use: (handle: ReadHandle) => Promise<T>): Promise<T> {
    let entry = this.handles.get(fileId);
    if (entry === undefined) {
      entry = { handle: this.disk.openForRead(path), refs: 0, retired: false };
      this.handles.set(fileId, entry);
      this.evictIdle();
    } else {
      this.handles.delete(fileId);
      this.handles.set(fileId, entry);
    }
    entry.refs += 1;
    try {
      return await use(await entry.handle);
    } catch (err) {
      // A failed open must not stay cached.
      if (this.handles.get(fileId) === entry) {
        this.handles.delete(fileId);
        entry.retired = true;
      }
      throw err;
    } finally {
      entry.refs -= 1;
      if (entry.refs === 0 && (entry.retired || !this.handles.has(fileId)))
        await closeQuietly(entry);
    }
  }

  /** The file is about to be removed (or was found damaged): stop handing out its handle. */
  async retire(fileId: number): Promise<void> {
    const entry = this.handles.get(fileId);
    if (entry === undefined) return;
    this.handles.delete(fileId);
    entry.retired = true;
    if (entry.refs === 0) await closeQuietly(entry);
  }

  async closeAll(): Promise<void> {
    const entries = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(entries.filter((entry) => entry.refs === 0).map(closeQuietly));
  }

  private evictIdle(): void {
    for (const [fileId, entry] of this.handles) {
      if (this.handles.size <= this.maxOpen) return;
      if (entry.refs > 0) continue;
      this.handles.delete(fileId);
      void closeQuietly(entry);
    }
  }
}

async function closeQuietly(entry: CachedHandle): Promise<void> {
  try {
    await (await entry.handle).close();
  } catch {
    // The open itself failed (the reader got that error) or the handle is already closed.
  }
}
