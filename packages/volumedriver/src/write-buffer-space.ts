import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, SpaceReserve } from '@shale/common';
import type { WriteBufferSpaceStatus as SpaceStatus } from './api-types.js';
import {
  WRITE_BUFFER_CACHE_EVICT_MARGINS,
  WRITE_BUFFER_MARGIN_BYTES,
  WRITE_BUFFER_RESERVE_BYTES,
  WRITE_BUFFER_SPACE_POLL_MS,
  WRITE_BUFFER_SPACE_REFRESH_MS,
  WRITE_BUFFER_SPACE_WAIT_MS,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';

/**
 * The write buffer's file system, kept from filling up so that the volumedriver can always
 * open its metadata (LevelDB, state files) and drain its backlog:
 *
 * - A **reserve**: a file of `reserveBytes` in the write buffer, released before vDisks are
 *   opened (so a full file system still opens) and made again once they are, when there is
 *   room. A volumedriver without it says so (status, log).
 * - A **margin**: writes are refused with VD_NO_SPACE before they start, not half-way, once
 *   the file system's free space (refreshed every WRITE_BUFFER_SPACE_REFRESH_MS, minus what
 *   was admitted since) would drop below the margin. Nothing is written; the vDisk stays
 *   healthy; writes go through again when uploads (or an operator) free space. A batch
 *   of a vDisk that still has uploads queued first waits (at most spaceWaitMs) for them to
 *   give space back: with the ASDs on the same file system, an upload takes space for a
 *   while before its cached SCO is dropped, and that is no reason to fail a write.
 *
 *   free ──admit(bytes)──> free - bytes >= margin ? yes: the lane writes
 *                                                   : uploads queued and < spaceWaitMs ? wait, retry
 *                                                   : VD_NO_SPACE
 *     ^                                                                     │
 *     └────── statfs every WRITE_BUFFER_SPACE_REFRESH_MS (in the background) ┘
 */

export type { SpaceStatus };

/** What a vDisk's write lane asks of the guard. */
export type SpaceGuard = Pick<WriteBufferSpace, 'tryAdmit' | 'admitWaiting'>;

export interface WriteBufferSpaceOptions {
  readonly dir: string;
  readonly reserveBytes?: number;
  readonly marginBytes?: number;
  readonly log?: (message: string) => void;
  /**
   * Asked to free space (drop cached SCOs) when free space is within
   * WRITE_BUFFER_CACHE_EVICT_MARGINS margins, and on every refusal; cheap to call often.
   */
  readonly onLow?: () => void;
  /** How long a batch waits for space while uploads run (WRITE_BUFFER_SPACE_WAIT_MS). */
  readonly spaceWaitMs?: number;
  /** The file-system seam (tests). */
  readonly statfs?: (dir: string) => Promise<{ totalBytes: number; availableBytes: number }>;
}

const RESERVE_FILE = 'space-reserve';

async function nodeStatfs(dir: string): Promise<{ totalBytes: number; availableBytes: number }> {
  const s = await fs.statfs(dir);
  return { totalBytes: s.blocks * s.bsize, availableBytes: s.bavail * s.bsize };
}

export class WriteBufferSpace {
  readonly reserveBytes: number;
  readonly marginBytes: number;
  private readonly spaceWaitMs: number;
  private readonly dir: string;
  private readonly log: (message: string) => void;
  private readonly statfs: NonNullable<WriteBufferSpaceOptions['statfs']>;
  private readonly onLow: (() => void) | undefined;
  private totalBytes = 0;
  private availableBytes = Number.MAX_SAFE_INTEGER;
  /** Bytes admitted since the last refresh (not yet seen by statfs). */
  private admittedBytes = 0;
  private readonly reserve: SpaceReserve;
  private low = false;
  private refusedWrites = 0;
  private refreshing: Promise<void> | undefined;
  private restoring: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: WriteBufferSpaceOptions) {
    this.dir = options.dir;
    this.reserveBytes = options.reserveBytes ?? WRITE_BUFFER_RESERVE_BYTES;
    this.marginBytes = options.marginBytes ?? WRITE_BUFFER_MARGIN_BYTES;
    this.spaceWaitMs = options.spaceWaitMs ?? WRITE_BUFFER_SPACE_WAIT_MS;
    this.log = options.log ?? (() => undefined);
    this.statfs = options.statfs ?? nodeStatfs;
    this.onLow = options.onLow;
    this.reserve = new SpaceReserve({
      file: path.join(this.dir, RESERVE_FILE),
      bytes: this.reserveBytes,
      log: this.log,
      availableBytes: async () => (await this.statfs(this.dir)).availableBytes,
    });
  }

  /** Before opening vDisks: releases the reserve, so metadata can open on a full disk. */
  async releaseReserve(): Promise<void> {
    await this.reserve.release();
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), WRITE_BUFFER_SPACE_REFRESH_MS);
    this.timer.unref();
  }

  /** After opening: makes the reserve again if the space is there (else says so). */
  async restoreReserve(): Promise<void> {
    if (this.reserveBytes === 0 || this.reserve.held) return;
    await this.refresh();
    await this.reserve.make(this.marginBytes);
    await this.refresh();
  }

  /**
   * On the lane, before a batch that writes `bytes` of payload: throws VD_NO_SPACE (nothing
   * written) when the write buffer would drop below its margin.
   */
  admit(bytes: number): void {
    if (bytes === 0) return;
    if (!this.fits(bytes)) {
      this.refusedWrites += 1;
      if (!this.low) {
        this.low = true;
        this.log(
          `write buffer ${this.dir}: ${Math.max(0, this.availableBytes - this.admittedBytes)} B free (margin ${this.marginBytes} B): refusing writes with VD_NO_SPACE until uploads free space`,
        );
      }
      this.onLow?.();
      void this.refresh();
      throw vdError(
        VdErrorCode.NoSpace,
        `the write buffer's file system is full (${Math.max(0, this.availableBytes - this.admittedBytes)} B free, ${this.marginBytes} B kept for metadata); writes go through again once uploads free space`,
      );
    }
    this.admittedBytes += bytes;
  }

  /** admit without the refusal: whether `bytes` fit (and are then admitted). */
  tryAdmit(bytes: number): boolean {
    if (!this.fits(bytes)) return false;
    this.admittedBytes += bytes;
    return true;
  }

  /**
   * admit, but while `uploadsQueued()` says space may come back, waits for it (reading the
   * free space every WRITE_BUFFER_SPACE_POLL_MS, asking for cached SCOs to go) for at most
   * spaceWaitMs; then refuses as admit does.
   */
  async admitWaiting(bytes: number, uploadsQueued: () => boolean): Promise<void> {
    const deadline = Date.now() + this.spaceWaitMs;
    while (!this.tryAdmit(bytes)) {
      if (!uploadsQueued() || Date.now() >= deadline) {
        this.admit(bytes); // Refuses (VD_NO_SPACE), unless space came back just now.
        return;
      }
      this.onLow?.();
      await sleep(WRITE_BUFFER_SPACE_POLL_MS);
      await this.refresh();
    }
  }

  private fits(bytes: number): boolean {
    return this.availableBytes - this.admittedBytes - bytes >= this.marginBytes;
  }

  status(): SpaceStatus {
    return {
      totalBytes: this.totalBytes,
      availableBytes: Math.max(0, this.availableBytes - this.admittedBytes),
      reserveBytes: this.reserveBytes,
      reserveHeld: this.reserve.held,
      low: this.low,
      refusedWrites: this.refusedWrites,
    };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.restoring;
  }

  /** Reads the file system's free space (one at a time); the reserve is retried when low. */
  async refresh(): Promise<void> {
    if (this.refreshing !== undefined) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const admittedBefore = this.admittedBytes;
        const s = await this.statfs(this.dir);
        this.totalBytes = s.totalBytes;
        this.availableBytes = s.availableBytes;
        this.admittedBytes = Math.max(0, this.admittedBytes - admittedBefore);
        if (this.low && this.availableBytes - this.admittedBytes >= 2 * this.marginBytes) {
          this.low = false;
          this.log(
            `write buffer ${this.dir}: ${this.availableBytes} B free again; writes accepted`,
          );
        }
        // Near the margin, uploaded SCOs kept as a read cache go before any write is refused.
        if (
          this.availableBytes - this.admittedBytes <
          WRITE_BUFFER_CACHE_EVICT_MARGINS * this.marginBytes
        )
          this.onLow?.();
        // Space came back: make the reserve again (at most one attempt at a time).
        if (
          this.timer !== undefined &&
          !this.reserve.held &&
          this.restoring === undefined &&
          this.availableBytes - this.admittedBytes >= this.reserveBytes + 2 * this.marginBytes
        ) {
          this.restoring = this.restoreReserve().finally(() => {
            this.restoring = undefined;
          });
        }
      } catch (err) {
        this.log(`write buffer ${this.dir}: cannot read its free space: ${errorMessage(err)}`);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }
}
