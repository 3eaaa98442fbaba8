import { constants as fsConstants, writevSync } from 'node:fs';
import fs from 'node:fs/promises';

/**
 * The narrow seam between SCO files and the real disk: every file-system call the SCO
 * writer and reader make goes through here, so tests can inject faults (EIO on
 * fdatasync, ENOSPC on write, a short read) without a broken disk.
 */
export interface ScoDisk {
  /** Creates `path` exclusively (EEXIST if it exists) for appending with positioned writes. */
  createExclusive(path: string): Promise<ScoWriteHandle>;
  /** Opens an existing file for positioned reads (ENOENT if missing). */
  openForRead(path: string): Promise<ScoReadHandle>;
  /** fsync of a directory, so a file created in it survives a crash. */
  fsyncDir(path: string): Promise<void>;
}

export interface ScoWriteHandle {
  /** One gathered write of `buffers` at `position`; may write fewer bytes than asked. */
  writev(buffers: readonly Buffer[], position: number): Promise<{ bytesWritten: number }>;
  /** fdatasync: the data and the file size are on stable storage. */
  datasync(): Promise<void>;
  /** fsync: data and all metadata on stable storage. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface ScoReadHandle {
  read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

export const nodeScoDisk: ScoDisk = {
  async createExclusive(path) {
    const handle = await fs.open(
      path,
      fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL,
      0o640,
    );
    return {
      // A synchronous pwritev: the bytes go to the page cache in one system call. Through
      // the thread pool the same write costs ~30 µs more CPU on these VMs than the write
      // itself (a futex wake-up and two thread switches), more than a 4 KiB request's whole
      // budget. The price: when the kernel throttles dirty pages, the event loop waits.
      writev: (buffers, position) => {
        try {
          return Promise.resolve({
            bytesWritten: writevSync(handle.fd, buffers as Buffer[], position),
          });
        } catch (err) {
          return Promise.reject(err);
        }
      },
      datasync: () => handle.datasync(),
      sync: () => handle.sync(),
      close: () => handle.close(),
    };
  },

  openForRead: (path) => fs.open(path, fsConstants.O_RDONLY),

  async fsyncDir(path) {
    const handle = await fs.open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
};
