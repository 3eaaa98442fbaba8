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
} as const;

export type VdErrorCode = (typeof VdErrorCode)[keyof typeof VdErrorCode];

export function vdError(
  code: VdErrorCode,
  message: string,
  options: { cause?: unknown; details?: Record<string, string> } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}
