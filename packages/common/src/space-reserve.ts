import fs from 'node:fs/promises';
import path from 'node:path';
import { errorMessage } from './errors.js';

/**
 * A reserve of disk space: a file of `bytes` allocated for real, released when its owner
 * needs the room (before opening metadata on a full disk) and made again once there is room.
 * The classic ballast: whatever fills the disk meanwhile, the release gives the owner back
 * that much space.
 */

const WRITE_CHUNK_BYTES = 1024 * 1024;

export interface SpaceReserveOptions {
  readonly file: string;
  readonly bytes: number;
  readonly log?: (message: string) => void;
  /** Free bytes on the file system of `file` (tests); default statfs. */
  readonly availableBytes?: () => Promise<number>;
}

export class SpaceReserve {
  readonly file: string;
  readonly bytes: number;
  private readonly log: (message: string) => void;
  private readonly availableBytes: () => Promise<number>;
  private heldNow = false;

  constructor(options: SpaceReserveOptions) {
    this.file = options.file;
    this.bytes = options.bytes;
    this.log = options.log ?? (() => undefined);
    this.availableBytes =
      options.availableBytes ??
      (async () => {
        const s = await fs.statfs(path.dirname(this.file));
        return s.bavail * s.bsize;
      });
  }

  get held(): boolean {
    return this.heldNow;
  }

  /** Removes the reserve file (if any): its space is free for whoever needs it now. */
  async release(): Promise<void> {
    await fs.rm(this.file, { force: true });
    this.heldNow = false;
  }

  /**
   * Makes the reserve file when at least `bytes + keepFreeBytes` are free; false (and a log
   * line) when there is not the room. Never leaves a partial file.
   */
  async make(keepFreeBytes = 0): Promise<boolean> {
    if (this.bytes === 0 || this.heldNow) return this.heldNow;
    const free = await this.availableBytes();
    if (free < this.bytes + keepFreeBytes) {
      this.log(
        `${this.file}: ${free} B free, too little for the ${this.bytes} B reserve; running without it until space is freed`,
      );
      return false;
    }
    const handle = await fs.open(this.file, 'w', 0o600);
    try {
      const zeros = Buffer.alloc(Math.min(WRITE_CHUNK_BYTES, this.bytes));
      for (let at = 0; at < this.bytes; at += zeros.length) {
        await handle.write(zeros, 0, Math.min(zeros.length, this.bytes - at), at);
      }
      await handle.sync();
      this.heldNow = true;
    } catch (err) {
      this.log(`${this.file}: cannot make the reserve: ${errorMessage(err)}`);
    } finally {
      await handle.close();
      if (!this.heldNow) await fs.rm(this.file, { force: true });
    }
    return this.heldNow;
  }
}
