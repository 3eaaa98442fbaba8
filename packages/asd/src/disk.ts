import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import { writeFileDurably } from './direct-write.js';

/**
 * The narrow seam between the ASD and the real disk: every file-system call the store
 * makes goes through here, so tests can inject faults (EIO on fsync, ENOSPC on write)
 * at named points without a real broken disk.
 */
export interface Disk {
  /**
   * Creates or truncates `path`, writes `data`, fsyncs and closes it (the real disk: large
   * values with O_DIRECT, see direct-write.ts).
   */
  writeFileDurably(path: string, data: Uint8Array): Promise<void>;
  /** Reads exactly `length` bytes at `offset`; fails with ESHORTREAD on a short file. */
  readRange(path: string, offset: number, length: number): Promise<Buffer>;
  /** Opens a file for positioned reads (the store caches these handles). */
  openForRead(path: string): Promise<ReadHandle>;
  unlink(path: string): Promise<void>;
  /** fsync of a directory, so the entries created in it survive a crash. */
  fsyncDir(path: string): Promise<void>;
  mkdir(path: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  statfs(path: string): Promise<{ totalBytes: number; availableBytes: number }>;
}

export interface ReadHandle {
  read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

/** Fills `into[0, length)` from `position`; ESHORTREAD if the file ends first. */
export async function readExactly(
  handle: ReadHandle,
  into: Buffer,
  length: number,
  position: number,
  path: string,
): Promise<void> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(into, got, length - got, position + got);
    if (bytesRead === 0) throw new ShortReadError(path, length, got);
    got += bytesRead;
  }
}

export class ShortReadError extends Error {
  readonly code = 'ESHORTREAD';
  constructor(path: string, wanted: number, got: number) {
    super(`short read of ${path}: wanted ${wanted} bytes, got ${got}`);
  }
}

export const nodeDisk: Disk = {
  writeFileDurably,

  async readRange(path, offset, length) {
    const handle = await fs.open(path, fsConstants.O_RDONLY);
    try {
      const out = Buffer.allocUnsafe(length);
      await readExactly(handle, out, length, offset, path);
      return out;
    } finally {
      await handle.close();
    }
  },

  openForRead: (path) => fs.open(path, fsConstants.O_RDONLY),

  unlink: (path) => fs.unlink(path),

  async fsyncDir(path) {
    const handle = await fs.open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },

  async mkdir(path) {
    await fs.mkdir(path, { recursive: true });
  },

  readdir: (path) => fs.readdir(path),

  async statfs(path) {
    const stats = await fs.statfs(path);
    return { totalBytes: stats.blocks * stats.bsize, availableBytes: stats.bavail * stats.bsize };
  },
};
