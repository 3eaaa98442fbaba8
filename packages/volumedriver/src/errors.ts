import { ShaleError } from '@shale/common';

/** The volumedriver's stable error codes. */
export const VdErrorCode = {
  /** Bad input (a SCO size out of range, a cluster of the wrong size): nothing changed. */
  InvalidArgument: 'VD_INVALID_ARGUMENT',
  /** Stored bytes fail their checksum, or a SCO is shorter than its TLog says. Never the bytes. */
  Corrupt: 'VD_CORRUPT',
  /** A SCO file the caller named does not exist in the write buffer. */
  ScoNotFound: 'VD_SCO_NOT_FOUND',
  /** A SCO file with that number already exists; SCO numbers are never reused. */
  ScoExists: 'VD_SCO_EXISTS',
  /** The write buffer's file system is full. */
  NoSpace: 'VD_NO_SPACE',
  /** The disk failed under us (EIO, a failed fsync). A SCO writer that saw one stays failed. */
  IoError: 'VD_IO_ERROR',
  /** Another process (or another LbaMap) holds the LBA map directory. */
  DirLocked: 'VD_DIR_LOCKED',
  /** The object was closed (or sealed) and cannot serve this call. */
  Closed: 'VD_CLOSED',
  /** No vPool, vDisk or snapshot of that name (or the vDisk is not open here). */
  NotFound: 'VD_NOT_FOUND',
  /** A vPool, vDisk or snapshot of that name exists already: nothing changed. */
  Exists: 'VD_EXISTS',
  /** A request reaches past the end of the vDisk. */
  OutOfRange: 'VD_OUT_OF_RANGE',
  /** The vDisk or snapshot has clones that read from it: delete (or rollback past) refused. */
  HasClones: 'VD_HAS_CLONES',
  /** Another volumedriver took the vDisk over (its namespace epoch moved on): writes refused. */
  Fenced: 'VD_FENCED',
  /** A conflicting administrative operation runs on this vDisk; retry later. */
  Busy: 'VD_BUSY',
  /** The backend (the ALBA proxy) failed a call that the operation needs. */
  BackendError: 'VD_BACKEND_ERROR',
  /** The vDisk's local state cannot be used (unknown format, missing files it names). */
  BadState: 'VD_BAD_STATE',
  /** The vDisk is owned by another volumedriver: ask it (LocateVdisk names it). */
  NotOwner: 'VD_NOT_OWNER',
  /**
   * The vDisk is owned here but could not be opened (its state is 'failed', with the reason);
   * it is retried in the background. Other vDisks are not affected.
   */
  OpenFailed: 'VD_OPEN_FAILED',
  /** The operation is not built yet; the README lists what is missing. */
  Unsupported: 'VD_UNSUPPORTED',
} as const;

export type VdErrorCode = (typeof VdErrorCode)[keyof typeof VdErrorCode];

export function vdError(
  code: VdErrorCode,
  message: string,
  options: { cause?: unknown; details?: Record<string, string> } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}
