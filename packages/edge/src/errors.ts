import { ShaleError } from '@shale/common';
import { NbdErrno } from './nbd-protocol.js';

/** The edge's stable error codes. */
export const EdgeErrorCode = {
  /** No export (vDisk) of that name. */
  NotFound: 'EDGE_NOT_FOUND',
  /** A request reaches past the end of the export. */
  OutOfRange: 'EDGE_OUT_OF_RANGE',
  /** A write, trim or write-zeroes on a read-only export. */
  ReadOnly: 'EDGE_READ_ONLY',
  /** A request the protocol or this server does not allow (bad flags, too long, empty). */
  InvalidRequest: 'EDGE_INVALID_REQUEST',
  /** A fast zero that cannot be fast (with NO_HOLE): the client should write instead. */
  NotSupported: 'EDGE_NOT_SUPPORTED',
  /** No volumedriver could be reached (or it did not answer in time). */
  Unavailable: 'EDGE_UNAVAILABLE',
  /** The request was not answered within EDGE_REQUEST_TIMEOUT_MS. */
  Timeout: 'EDGE_TIMEOUT',
  /** The export was closed under the request (the edge is stopping). */
  Closed: 'EDGE_CLOSED',
} as const;
export type EdgeErrorCode = (typeof EdgeErrorCode)[keyof typeof EdgeErrorCode];

export function edgeError(
  code: EdgeErrorCode,
  message: string,
  options: { cause?: unknown } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}

/**
 * The one table from error codes to NBD error values (STYLE rule 10). Codes from the
 * volumedriver arrive unchanged over the Io stream. Anything not listed is EIO: the client
 * learns the request failed, and the edge's log says why.
 */
const NBD_ERRNO_OF_CODE: Readonly<Record<string, NbdErrno>> = {
  [EdgeErrorCode.OutOfRange]: NbdErrno.EINVAL,
  [EdgeErrorCode.InvalidRequest]: NbdErrno.EINVAL,
  [EdgeErrorCode.ReadOnly]: NbdErrno.EPERM,
  [EdgeErrorCode.NotSupported]: NbdErrno.ENOTSUP,
  [EdgeErrorCode.Closed]: NbdErrno.ESHUTDOWN,
  [EdgeErrorCode.Unavailable]: NbdErrno.EIO,
  [EdgeErrorCode.Timeout]: NbdErrno.EIO,
  VD_INVALID_ARGUMENT: NbdErrno.EINVAL,
  VD_OUT_OF_RANGE: NbdErrno.EINVAL,
  VD_NO_SPACE: NbdErrno.ENOSPC,
  VD_CORRUPT: NbdErrno.EIO,
  VD_IO_ERROR: NbdErrno.EIO,
  VD_FENCED: NbdErrno.EIO,
  VD_BACKEND_ERROR: NbdErrno.EIO,
};

/**
 * Where writes differ: past the end of the export a WRITE or WRITE_ZEROES is ENOSPC, and
 * anything else EINVAL (the NBD spec's rule, nbdkit's too). The edge checks ranges against
 * the size the connection was given; a vDisk shrunk under an open connection is refused by
 * the volumedriver (VD_OUT_OF_RANGE), and the client gets the same answer.
 */
const NBD_ERRNO_OF_CODE_WRITING: Readonly<Record<string, NbdErrno>> = {
  [EdgeErrorCode.OutOfRange]: NbdErrno.ENOSPC,
  VD_OUT_OF_RANGE: NbdErrno.ENOSPC,
};

/** The NBD error value for a failed request; `writing`: a WRITE or WRITE_ZEROES. */
export function nbdErrnoOf(err: unknown, writing = false): NbdErrno {
  if (!(err instanceof ShaleError)) return NbdErrno.EIO;
  const forWrite = writing ? NBD_ERRNO_OF_CODE_WRITING[err.code] : undefined;
  return forWrite ?? NBD_ERRNO_OF_CODE[err.code] ?? NbdErrno.EIO;
}
