import { ShaleError } from '@shale/common';

/** The stable error codes of the metadata store. Both engines throw the same codes. */
export const KvErrorCode = {
  /** Bad input: the call changed nothing. */
  BadRequest: 'KV_BAD_REQUEST',
  KeyTooLarge: 'KV_KEY_TOO_LARGE',
  ValueTooLarge: 'KV_VALUE_TOO_LARGE',
  TooManyOps: 'KV_TOO_MANY_OPS',
  /** A value helper could not decode what it read. */
  BadValue: 'KV_BAD_VALUE',
  /** The store could not be reached (or has no quorum) within the deadline; nothing was written. */
  Unavailable: 'KV_UNAVAILABLE',
  /**
   * A write was sent but no answer came back (deadline, lost connection, leader loss):
   * it may or may not have been applied, now or later. Resolve it with a txn or a read.
   */
  OutcomeUnknown: 'KV_OUTCOME_UNKNOWN',
  /** A txn's compares did not hold where the caller required them to (see requireSucceeded). */
  TxnFailed: 'KV_TXN_FAILED',
  /** The lease does not exist (never did, expired or revoked). */
  LeaseNotFound: 'KV_LEASE_NOT_FOUND',
  /** A watch asked for history that was compacted away; start again from a fresh read. */
  Compacted: 'KV_COMPACTED',
  /** The store is out of space (etcd quota alarm). */
  NoSpace: 'KV_NO_SPACE',
  /** Authentication or authorization failed. */
  PermissionDenied: 'KV_PERMISSION_DENIED',
  /** LevelKv: another process holds the directory. */
  DirLocked: 'KV_DIR_LOCKED',
  /** KvServer: the port to serve on could not be bound (in use, bad address). */
  ListenFailed: 'KV_LISTEN_FAILED',
  /** The store was closed. */
  Closed: 'KV_CLOSED',
  /** The server answered with something we do not understand. */
  Internal: 'KV_INTERNAL',
} as const;

export type KvErrorCode = (typeof KvErrorCode)[keyof typeof KvErrorCode];

export function kvError(
  code: KvErrorCode,
  message: string,
  options: { cause?: unknown; details?: Record<string, string> } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}

/** How a key is named in messages: printable ASCII as is, anything else as hex. */
export function describeKey(key: Uint8Array): string {
  const buf = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  const shown = buf.subarray(0, 128);
  const printable = shown.every((byte) => byte >= 0x20 && byte < 0x7f);
  const text = printable ? JSON.stringify(shown.toString('latin1')) : `0x${shown.toString('hex')}`;
  return buf.length > shown.length ? `${text}... (${buf.length} bytes)` : text;
}
