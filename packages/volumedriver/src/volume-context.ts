import path from 'node:path';
import type { ClusterCache } from './cluster-cache.js';
import type { DataAtRisk } from './data-at-risk.js';
import { VdErrorCode, vdError } from './errors.js';
import type { LbaMap } from './lba-map.js';
import type { ScoDisk } from './sco-disk.js';
import type { ScoMemoryPool } from './sco-memory.js';
import type { ScoReader } from './sco-reader.js';
import type { ScoWriter } from './sco-writer.js';
import type { TLogWriter } from './tlog-file.js';
import type { VolumeBackend } from './volume-backend.js';
import {
  type CheckpointRef,
  type SnapshotRecord,
  STATE_FORMAT,
  type VolumeConfig,
  type VolumeState,
  writeJsonAtomic,
} from './volume-state.js';

/**
 * What the parts of one vDisk share: its files (the LBA map, the current TLog and SCO),
 * its state (the chain, the counters, the snapshots, which SCOs and TLogs are local and
 * which are in the backend) and the few helpers every part needs (is the vDisk still
 * usable, write state.json).
 *
 * volume.ts builds one `VolumeContext` per vDisk and hands the same object to each part:
 * the write lane (volume-write-lane.ts), the read path (volume-read-path.ts), snapshots
 * and rollback (volume-snapshots.ts), scrubbing (volume-scrub.ts), the upload pipeline
 * (volume-uploads.ts) and recovery (volume-recovery.ts). A part's own bookkeeping (the
 * lane's queue, the upload queue) stays in the part; what more than one part reads or
 * changes is here, so that a reader sees in one place everything a vDisk is made of.
 */

/** The vDisk's state as state.json holds it (less the format), changed in place. */
export interface MutableState {
  generation: number;
  sizeBytes: number;
  chain: number[];
  currentTlog: number;
  nextScoNumber: number;
  nextTlogNumber: number;
  nextSnapshotId: number;
  snapshots: SnapshotRecord[];
  garbage: { scos: number[]; tlogs: number[] };
}

export function newStats() {
  return {
    readOps: 0,
    writeOps: 0,
    readBytes: 0,
    writeBytes: 0,
    flushOps: 0,
    trimOps: 0,
    scosUploaded: 0,
    tlogsUploaded: 0,
    bytesUploaded: 0,
  };
}

export type VolumeStats = ReturnType<typeof newStats>;

export interface VolumeContext {
  readonly config: VolumeConfig;
  readonly name: string;
  readonly dir: string;
  readonly scoDir: string;
  readonly tlogDir: string;
  readonly backend: VolumeBackend;
  readonly log: (message: string) => void;
  readonly stats: VolumeStats;
  state: MutableState;
  readonly lba: LbaMap;
  tlog: TLogWriter;
  sco: ScoWriter | undefined;
  /** Where SCO files are written (undefined: the real disk). */
  readonly scoDisk: ScoDisk | undefined;
  /** SCOs sealed into the current TLog (it rolls at config.tlogScos). */
  scosInTlog: number;
  epoch: number;
  fencedBy: Error | undefined;
  closed: boolean;
  stateWrites: Promise<void>;
  /** SCO and TLog writes of the batch in progress (awaited before the map and any sync). */
  tlogWrites: Promise<unknown>[];

  // local SCOs
  /** Sealed SCO files in the write buffer -> size in bytes. */
  readonly localScos: Map<number, number>;
  readonly readers: Map<number, ScoReader>;
  /** Clusters last written or read, in memory (cluster-cache.ts). */
  readonly clusterCache: ClusterCache;
  readonly scoMemory: ScoMemoryPool;
  /** Sealed SCOs still in memory (until uploaded), by SCO number. */
  readonly sealedMemory: Map<number, Buffer>;
  readonly uploadedScos: Set<number>;
  readonly uploadedTlogs: Set<number>;
  dirtyScoBytes: number;

  // the backend's view
  rootCheckpoint: CheckpointRef | undefined;
  /** TLogs of a rewritten history that must all be uploaded before the next root. */
  rootNeeds: Set<number> | undefined;
  nextCheckpointId: number;
  readonly risk: DataAtRisk;
}

export function volumeDirs(dir: string): { scoDir: string; tlogDir: string } {
  return { scoDir: path.join(dir, 'scos'), tlogDir: path.join(dir, 'tlogs') };
}

export function checkOpen(v: VolumeContext): void {
  if (v.closed) throw vdError(VdErrorCode.Closed, `vDisk ${v.name} is closed`);
  if (v.fencedBy !== undefined) {
    throw vdError(VdErrorCode.Fenced, `vDisk ${v.name}: ${v.fencedBy.message}`, {
      cause: v.fencedBy,
    });
  }
}

export function stateFile(v: VolumeContext): VolumeState {
  return { format: STATE_FORMAT, ...v.state };
}

/** Writes state.json; calls are serialized, each writes the state as of its turn. */
export function persistState(v: VolumeContext): Promise<void> {
  const run = v.stateWrites.then(() =>
    writeJsonAtomic(path.join(v.dir, 'state.json'), stateFile(v)),
  );
  v.stateWrites = run.catch(() => undefined);
  return run;
}
