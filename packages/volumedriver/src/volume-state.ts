import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, systemErrorCode } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';
import { fsyncDir } from './tlog-file.js';

/**
 * What a volume keeps on local disk besides SCOs, TLogs and the LBA map, and what it
 * writes to the backend as its `root` object. Local layout of one vDisk:
 *
 *   <dir>/volume.json   VolumeConfig: fixed at creation
 *   <dir>/state.json    VolumeState: the TLog chain, counters, snapshots (atomic replace)
 *   <dir>/scos/         SCO files (0000002a.sco)
 *   <dir>/tlogs/        TLog files (00000007.tlog)
 *   <dir>/lba/          the LBA map's checkpoint log (map.log) and lock (map.lock)
 *
 * Backend objects of a vDisk (its namespace): `sco/<16 hex>`, `tlog/<16 hex>`,
 * `checkpoint/<16 hex id>/<4 hex part>`, and `root` (BackendRoot, JSON), rewritten after
 * every TLog upload: the history as far as the backend holds it.
 */

export const STATE_FORMAT = 1;

export interface AncestorRef {
  readonly vdiskId: string;
  readonly namespace: string;
}

export interface VolumeConfig {
  readonly format: number;
  readonly id: string;
  readonly name: string;
  readonly namespace: string;
  readonly clusterSizeBytes: number;
  readonly scoSizeBytes: number;
  readonly writeBufferBytes: number;
  /** A TLog is closed after this many sealed SCOs. */
  readonly tlogScos: number;
  /** Nearest first: layer k of a location is ancestors[k - 1]. */
  readonly ancestors: readonly AncestorRef[];
  /** For a clone: the parent and the snapshot it was cloned from. */
  readonly parent:
    | { vdiskId: string; vdiskName: string; snapshotId: number; snapshotName: string }
    | undefined;
  readonly createdAtMs: number;
}

export interface SnapshotRecord {
  readonly id: number;
  readonly name: string;
  readonly createdAtMs: number;
  /** The TLog that holds the snapshot's marker. */
  readonly tlogNumber: number;
}

export interface VolumeState {
  readonly format: number;
  /** Bumped whenever the history is rewritten (rollback, scrubbing). */
  readonly generation: number;
  readonly sizeBytes: number;
  /** Closed TLogs, oldest first. */
  readonly chain: readonly number[];
  /** The TLog being appended to (not in chain). */
  readonly currentTlog: number;
  readonly nextScoNumber: number;
  readonly nextTlogNumber: number;
  readonly nextSnapshotId: number;
  readonly snapshots: readonly SnapshotRecord[];
  /** Objects no longer in the history, deleted once the backend root stops naming them. */
  readonly garbage: { readonly scos: readonly number[]; readonly tlogs: readonly number[] };
}

export interface CheckpointRef {
  readonly id: number;
  readonly parts: number;
  /** The map as of entry `entryCount` of TLog `tlogNumber` (a TLog of the chain). */
  readonly tlogNumber: number;
  readonly entryCount: number;
  readonly generation: number;
}

export interface BackendRoot {
  readonly format: number;
  readonly config: VolumeConfig;
  readonly generation: number;
  readonly sizeBytes: number;
  /** The TLogs in the backend, oldest first: a prefix of the local chain. */
  readonly chain: readonly number[];
  /** Snapshots whose markers are in those TLogs. */
  readonly snapshots: readonly SnapshotRecord[];
  readonly nextSnapshotId: number;
  readonly checkpoint: CheckpointRef | undefined;
}

export const ROOT_OBJECT = 'root';

export function scoObjectName(scoNumber: number): string {
  return `sco/${scoNumber.toString(16).padStart(16, '0')}`;
}
export function tlogObjectName(tlogNumber: number): string {
  return `tlog/${tlogNumber.toString(16).padStart(16, '0')}`;
}
export function checkpointObjectName(id: number, part: number): string {
  return `checkpoint/${id.toString(16).padStart(16, '0')}/${part.toString(16).padStart(4, '0')}`;
}
/** The number in `sco/…`, `tlog/…` or `checkpoint/…/…` names, or undefined. */
export function objectNumber(
  name: string,
  kind: 'sco' | 'tlog' | 'checkpoint',
): number | undefined {
  const match = new RegExp(`^${kind}/([0-9a-f]{16})(/[0-9a-f]{4})?$`).exec(name);
  return match?.[1] === undefined ? undefined : Number.parseInt(match[1], 16);
}

/** Writes JSON atomically: temp file, fsync, rename, fsync of the directory. */
export async function writeJsonAtomic(filePath: string, value: unknown): Promise<void> {
  const tmp = `${filePath}.tmp`;
  try {
    const handle = await fs.open(
      tmp,
      fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC,
      0o640,
    );
    try {
      await handle.writeFile(`${JSON.stringify(value, null, 1)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, filePath);
    await fsyncDir(path.dirname(filePath));
  } catch (err) {
    const code = systemErrorCode(err);
    throw vdError(
      code === 'ENOSPC' ? VdErrorCode.NoSpace : VdErrorCode.IoError,
      `cannot write ${filePath}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

export async function readJson<T>(filePath: string): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(filePath, 'utf8');
  } catch (err) {
    throw vdError(VdErrorCode.BadState, `cannot read ${filePath}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw vdError(VdErrorCode.BadState, `${filePath} is not JSON: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  if (
    typeof value !== 'object' ||
    value === null ||
    (value as { format?: unknown }).format !== STATE_FORMAT
  ) {
    throw vdError(VdErrorCode.BadState, `${filePath}: unknown format (want ${STATE_FORMAT})`);
  }
  return value as T;
}
