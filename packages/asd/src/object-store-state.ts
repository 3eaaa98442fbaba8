import path from 'node:path';
import { errorMessage, ShaleError, systemErrorCode } from '@shale/common';
import type { ClassicLevel } from 'classic-level';
import {
  FAN_OUT_DIRS,
  FILE_ID_RESTART_GAP,
  OPEN_FILES_MAX,
  RECORD_CACHE_ENTRIES,
  RESERVE_FRACTION,
  RESERVE_MAX_BYTES,
  RESERVE_MIN_BYTES,
} from './constants.js';
import type { Disk } from './disk.js';
import { AsdErrorCode, asdError } from './errors.js';
import { FileHandleCache } from './file-handle-cache.js';
import type { AsdIdentity } from './identity.js';
import { metaKey } from './index-keys.js';
import type { AsdMetrics } from './metrics.js';
import { RecordCache } from './record-cache.js';

/**
 * What the parts of the ASD's object store share (object-store.ts is the facade and its
 * lifecycle, object-store-write.ts puts, deletes and the group commit, object-store-read.ts
 * gets and lists, object-store-space.ts space and garbage): the disk and the index, the
 * object count and used bytes as last committed, the file-id counters, the bytes of puts in
 * flight, the record and file-handle caches, the background tasks, and the run's state:
 *
 *   open --close()--> closing (new calls: ASD_CLOSED; calls in progress finish)
 *     \--a failed directory fsync or index write--> degraded (reads only, until restarted)
 */

export interface AsdStoreOptions {
  readonly dir: string;
  readonly nodeId: string;
  /** The ASD id the caller expects; a directory with another id is refused unless `claim`. */
  readonly asdId?: string | undefined;
  readonly claim?: boolean | undefined;
  /** At most this many value bytes are stored; default: no limit but the file system. */
  readonly capacityBytes?: number | undefined;
  /** File-system bytes kept free for the index and deletes; default 1% (32 MiB..4 GiB). */
  readonly reserveBytes?: number | undefined;
  readonly disk?: Disk | undefined;
  readonly log?: ((line: string) => void) | undefined;
}

/** What AsdStore.open found on disk, for the constructor. */
export interface StoreInit {
  options: AsdStoreOptions;
  identity: AsdIdentity;
  db: ClassicLevel<Buffer, Buffer>;
  disk: Disk;
  fsTotalBytes: number;
  filesystemId: string;
  stats: { objectCount: number; usedBytes: number };
  fileIdHigh: number;
}

export const META_STATS = metaKey('stats');
export const META_FILE_ID_HIGH = metaKey('file-id-high');
export const META_STATE = metaKey('state');
export const STATE_RUNNING = Buffer.from('running');
export const STATE_CLEAN = Buffer.from('clean');

export class StoreState {
  readonly identity: AsdIdentity;
  readonly dir: string;
  metrics: AsdMetrics | undefined;

  readonly disk: Disk;
  readonly db: ClassicLevel<Buffer, Buffer>;
  readonly log: (line: string) => void;
  readonly capacityLimitBytes: number | undefined;
  readonly reserveBytes: number;
  fsTotalBytes: number;
  readonly filesystemId: string;
  lastNoSpaceAtMs = 0;

  objectCount: number;
  usedBytes: number;
  fileIdHigh: number;
  nextFileId: number;
  /** Files with ids from here on belong to this run; the orphan sweep leaves them alone. */
  readonly firstFileIdOfRun: number;

  inflightPutBytes = 0;
  readonly background = new Set<Promise<void>>();
  readonly records = new RecordCache(RECORD_CACHE_ENTRIES);
  readonly fileHandles: FileHandleCache;
  closing = false;
  /** True until an orphan sweep owed by an unclean shutdown has finished. */
  sweepOwed = false;
  /** Set when the index refused a write: the store keeps serving reads, refuses writes. */
  degradedReason: string | undefined;

  constructor(init: StoreInit) {
    this.identity = init.identity;
    this.dir = init.options.dir;
    this.disk = init.disk;
    this.db = init.db;
    this.log = init.options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.capacityLimitBytes = init.options.capacityBytes;
    this.fsTotalBytes = init.fsTotalBytes;
    this.filesystemId = init.options.capacityBytes === undefined ? init.filesystemId : '';
    this.reserveBytes =
      init.options.reserveBytes ??
      Math.min(
        RESERVE_MAX_BYTES,
        Math.max(RESERVE_MIN_BYTES, Math.floor(init.fsTotalBytes * RESERVE_FRACTION)),
      );
    this.objectCount = init.stats.objectCount;
    this.usedBytes = init.stats.usedBytes;
    this.fileIdHigh = init.fileIdHigh;
    this.firstFileIdOfRun = init.fileIdHigh + 1 + FILE_ID_RESTART_GAP;
    this.nextFileId = this.firstFileIdOfRun;
    this.fileHandles = new FileHandleCache(this.disk, OPEN_FILES_MAX);
  }

  track(work: Promise<void>): void {
    const tracked = work.catch((err: unknown) => {
      this.log(`asd ${this.identity.asdId}: background work failed: ${errorMessage(err)}`);
    });
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }

  /** Where a value file lives. Test hook too: the corruption tests flip bits in it. */
  filePath(fileId: number): string {
    return path.join(
      fanDir(this.dir, fileId % FAN_OUT_DIRS),
      fileId.toString(16).padStart(12, '0'),
    );
  }
}

export function fanDir(dir: string, index: number): string {
  return path.join(dir, 'objects', index.toString(16).padStart(2, '0'));
}

export function encodeStats(stats: { objectCount: number; usedBytes: number }): Buffer {
  const out = Buffer.alloc(16);
  out.writeDoubleBE(stats.objectCount, 0);
  out.writeDoubleBE(stats.usedBytes, 8);
  return out;
}

export function decodeStats(buf: Buffer): { objectCount: number; usedBytes: number } {
  return { objectCount: buf.readDoubleBE(0), usedBytes: buf.readDoubleBE(8) };
}

export function fsError(err: unknown, doing: string): ShaleError {
  if (err instanceof ShaleError) return err;
  const code = systemErrorCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return asdError(AsdErrorCode.NoSpace, `no space left on the disk while ${doing}`, {
      cause: err,
    });
  }
  return asdError(AsdErrorCode.IoError, `disk error while ${doing}: ${errorMessage(err)}`, {
    cause: err,
  });
}
