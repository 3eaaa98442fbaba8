/**
 * The volumedriver's public model: what the VolumeService (gRPC), the CLI and the
 * framework API see. One vPool binds vDisks to a backend and a preset; a vDisk is a
 * thin-provisioned block device whose data is a log of SCOs in its backend namespace.
 */

/** A pool of vDisks bound to one backend and one preset, with the volume defaults. */
export interface VpoolInfo {
  /** 32 lowercase hex. */
  readonly id: string;
  /** Unique in the cluster: [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
  readonly name: string;
  readonly backendId: string;
  /** Empty: the backend's default preset. */
  readonly presetName: string;
  readonly clusterSizeBytes: number;
  readonly scoSizeBytes: number;
  /** SCO bytes not yet in the backend before writes are slowed down (backpressure). */
  readonly writeBufferBytes: number;
  readonly createdAtMs: number;
}

export interface CreateVpoolInput {
  readonly name: string;
  readonly backendId: string;
  readonly presetName?: string;
  readonly clusterSizeBytes?: number;
  readonly scoSizeBytes?: number;
  readonly writeBufferBytes?: number;
}

export interface SnapshotInfo {
  /** Per vDisk, increasing, never reused. */
  readonly id: number;
  readonly name: string;
  readonly createdAtMs: number;
  /** Every TLog up to the snapshot (and every SCO they name) is in the backend. */
  readonly inBackend: boolean;
  /** Names of the vDisks cloned from this snapshot. */
  readonly clones: readonly string[];
}

export interface VdiskParent {
  readonly vdiskId: string;
  readonly vdiskName: string;
  readonly snapshotId: number;
  readonly snapshotName: string;
}

export interface VdiskStats {
  readonly readOps: number;
  readonly writeOps: number;
  readonly readBytes: number;
  readonly writeBytes: number;
  readonly flushOps: number;
  readonly trimOps: number;
  /** SCO bytes in the write buffer that are not in the backend yet. */
  readonly writeBufferDirtyBytes: number;
  /** SCOs and TLogs waiting for (or in) upload. */
  readonly uploadBacklogObjects: number;
  readonly scosUploaded: number;
  readonly tlogsUploaded: number;
  readonly bytesUploaded: number;
  readonly currentScoNumber: number;
  /** TLogs in the vDisk's history (closed and current). */
  readonly tlogCount: number;
  /**
   * Data at risk: payload bytes of writes acknowledged here whose TLog is not in the backend
   * yet (lost if this node's write buffer is lost), and the age of the oldest such write
   * (0 when there is none). Bounded by the volumedriver's data-at-risk bound.
   */
  readonly dataAtRiskBytes: number;
  readonly dataAtRiskAgeMs: number;
  /** The bound on dataAtRiskAgeMs this volumedriver keeps (when the backend keeps up). */
  readonly dataAtRiskBoundMs: number;
  /** Why the last upload failed (retried with backoff); empty when uploads go through. */
  readonly uploadError: string;
  /** Why the write lane stopped (a disk error: writes fail until reopened); empty: fine. */
  readonly writeLaneError: string;
}

/** A volumedriver's write buffer file system, as Health reports it. */
export interface WriteBufferSpaceStatus {
  readonly totalBytes: number;
  readonly availableBytes: number;
  readonly reserveBytes: number;
  /** The reserve file is in place (false: it could not be made again: the disk is full). */
  readonly reserveHeld: boolean;
  /** Writes are being refused for lack of space. */
  readonly low: boolean;
  /** Writes refused for lack of space since start. */
  readonly refusedWrites: number;
}

/**
 * A vDisk as the answering volumedriver knows it: 'open' here; 'failed' (owned here, could
 * not be opened: see openError; retried in the background); 'closed' (owned here, not open
 * yet or any more); 'elsewhere' (owned by another volumedriver: ask it); 'creating' and
 * 'deleting' while those operations run (or were interrupted and will be finished).
 */
export const VDISK_STATES = [
  'open',
  'failed',
  'closed',
  'elsewhere',
  'creating',
  'deleting',
] as const;
export type VdiskState = (typeof VDISK_STATES)[number];

export interface VdiskOpenError {
  readonly code: string;
  readonly message: string;
  readonly atMs: number;
}

/** A restore from the backend found that writes held only in a lost write buffer are gone. */
export interface VdiskDataLoss {
  /** The oldest write that was not in the backend. */
  readonly sinceMs: number;
  /** The node whose write buffer held them. */
  readonly nodeId: string;
  readonly detectedAtMs: number;
}

export interface VdiskInfo {
  /** 32 lowercase hex; also the backend namespace of its data. */
  readonly id: string;
  readonly name: string;
  readonly vpoolName: string;
  readonly sizeBytes: number;
  readonly clusterSizeBytes: number;
  readonly scoSizeBytes: number;
  readonly namespace: string;
  /** Set for a clone: the vDisk and snapshot it was cloned from. */
  readonly parent: VdiskParent | undefined;
  /** The storage router that owns it. */
  readonly ownerNodeId: string;
  readonly createdAtMs: number;
  readonly snapshots: readonly SnapshotInfo[];
  /** Present when the vDisk is open on the answering volumedriver. */
  readonly stats: VdiskStats | undefined;
  readonly state: VdiskState;
  /** Set when state is 'failed'. */
  readonly openError: VdiskOpenError | undefined;
  /** Set once a restore lost writes; stays until the vDisk is deleted. */
  readonly dataLoss: VdiskDataLoss | undefined;
}

export interface CreateVdiskInput {
  readonly name: string;
  readonly vpoolName: string;
  readonly sizeBytes: number;
}

export interface CloneVdiskInput {
  readonly name: string;
  readonly parentName: string;
  readonly snapshotName: string;
}

export interface ScrubOptions {
  /** SCOs whose live fraction is below this are rewritten (0 < x <= 1; default 0.5). */
  readonly liveFractionThreshold?: number;
}

export interface ScrubReport {
  readonly scosExamined: number;
  readonly scosRewritten: number;
  readonly clustersMoved: number;
  readonly scosCreated: number;
  readonly backendBytesBefore: number;
  readonly backendBytesAfter: number;
  /** True when a concurrent rollback or clone made the scrub give up (nothing changed). */
  readonly aborted: boolean;
}

/** A volumedriver, as it registered itself in the metadata store when it started. */
export interface StorageRouterInfo {
  readonly nodeId: string;
  /** host:port of its VolumeService. */
  readonly address: string;
  readonly startedAtMs: number;
  /** host:port of its data server (data-protocol.ts); absent or empty: none. */
  readonly dataAddress?: string;
}

/** Where a vDisk is served: its owner, and the other storage routers to try if it is silent. */
export interface VdiskLocation {
  readonly vdiskName: string;
  readonly vdiskId: string;
  readonly sizeBytes: number;
  readonly clusterSizeBytes: number;
  readonly ownerNodeId: string;
  /** The owner's VolumeService; empty when the owner never registered. */
  readonly ownerAddress: string;
  /** The owner's data server (the data protocol); empty: only the gRPC Io stream. */
  readonly ownerDataAddress: string;
  /** Every other registered storage router (the fail-over candidates), by node id. */
  readonly failoverRouters: readonly StorageRouterInfo[];
}

/** One block request on an open vDisk. Offsets and lengths are in bytes. */
export type IoRequest =
  | { readonly op: 'read'; readonly offsetBytes: number; readonly lengthBytes: number }
  | {
      readonly op: 'write';
      readonly offsetBytes: number;
      readonly data: Buffer;
      /** Force unit access: durable in the write buffer before the answer. */
      readonly fua: boolean;
    }
  | { readonly op: 'flush' }
  | {
      /** Unmap: the range reads as zeros afterwards (no zero payload is written). */
      readonly op: 'trim';
      readonly offsetBytes: number;
      readonly lengthBytes: number;
      readonly fua: boolean;
    }
  | {
      /** Same effect as trim in Shale: clusters wholly inside are unmapped, edges zeroed. */
      readonly op: 'writeZeroes';
      readonly offsetBytes: number;
      readonly lengthBytes: number;
      readonly fua: boolean;
    }
  | {
      /** Which parts of the range hold data and which are holes (read as zeros). */
      readonly op: 'blockStatus';
      readonly offsetBytes: number;
      readonly lengthBytes: number;
    };

/**
 * One run of a block-status answer. Runs are consecutive from the requested offset; a hole
 * is a range no write (or a trim, or write-zeroes) left mapped: it reads as zeros.
 */
export interface BlockExtent {
  readonly lengthBytes: number;
  readonly hole: boolean;
}

/** The data path of one open vDisk. */
export interface VolumeIo {
  readonly name: string;
  readonly sizeBytes: number;
  readonly clusterSizeBytes: number;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /**
   * Durability: resolved = the bytes are in the write buffer (page cache) and visible to
   * every later read; with fua, also on stable storage.
   */
  write(offsetBytes: number, data: Buffer, options?: { fua?: boolean }): Promise<void>;
  /** Durability: every write acknowledged before this call is on stable storage. */
  flush(): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, options?: { fua?: boolean }): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, options?: { fua?: boolean }): Promise<void>;
  /**
   * Allocation of [offset, offset + length): consecutive extents from offsetBytes, at most
   * lengthBytes in all and at least one. The answer may stop short of the end (a long range
   * is answered in parts: ask again from where it stopped). Cluster-granular inside.
   */
  blockStatus(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]>;
}

/**
 * Everything the volumedriver serves, by vDisk name. Errors are ShaleErrors with the VD_
 * codes of errors.ts (VD_NOT_FOUND, VD_EXISTS, VD_INVALID_ARGUMENT, VD_OUT_OF_RANGE,
 * VD_HAS_CLONES, VD_FENCED, VD_BUSY, ...; a missing snapshot is VD_NOT_FOUND).
 */
export interface VolumeManagerApi {
  createVpool(input: CreateVpoolInput): Promise<VpoolInfo>;
  listVpools(): Promise<VpoolInfo[]>;
  createVdisk(input: CreateVdiskInput): Promise<VdiskInfo>;
  /** Grows; a shrink is refused (VD_INVALID_ARGUMENT) unless force (the tail is trimmed). */
  resizeVdisk(name: string, sizeBytes: number, options?: { force?: boolean }): Promise<VdiskInfo>;
  /** Removes the vDisk and its backend namespace; VD_HAS_CLONES while clones depend on it. */
  deleteVdisk(name: string): Promise<void>;
  listVdisks(): Promise<VdiskInfo[]>;
  vdiskInfo(name: string): Promise<VdiskInfo>;
  createSnapshot(vdiskName: string, snapshotName: string): Promise<SnapshotInfo>;
  /** One instant for all: writes to every listed vDisk are held while the markers go in. */
  createGroupSnapshot(vdiskNames: readonly string[], snapshotName: string): Promise<SnapshotInfo[]>;
  listSnapshots(vdiskName: string): Promise<SnapshotInfo[]>;
  deleteSnapshot(vdiskName: string, snapshotName: string): Promise<void>;
  cloneVdisk(input: CloneVdiskInput): Promise<VdiskInfo>;
  rollback(vdiskName: string, snapshotName: string): Promise<void>;
  /** Seals the current SCO and waits until every SCO, TLog and a checkpoint are in the backend. */
  syncToBackend(vdiskName: string): Promise<void>;
  scrub(vdiskName: string, options?: ScrubOptions): Promise<ScrubReport>;
  /** The storage routers registered in the metadata store, by node id. */
  listStorageRouters(): Promise<StorageRouterInfo[]>;
  /** Where the vDisk is served (VD_NOT_FOUND if there is no such vDisk). */
  locateVdisk(name: string): Promise<VdiskLocation>;
  /** The data path of an open vDisk (VD_NOT_FOUND if it is not open here). */
  io(vdiskName: string): VolumeIo;
}
