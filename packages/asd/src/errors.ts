import { ShaleError } from '@shale/common';

/**
 * The ASD's stable error codes. Request-level ones travel as gRPC errors with the code
 * in the "shale-code" trailer (see grpc-errors.ts); item-level ones as ItemError.
 */
export const AsdErrorCode = {
  /** Bad input: the call changed nothing. */
  KeyEmpty: 'ASD_KEY_EMPTY',
  KeyTooLarge: 'ASD_KEY_TOO_LARGE',
  ValueTooLarge: 'ASD_VALUE_TOO_LARGE',
  TooManyItems: 'ASD_TOO_MANY_ITEMS',
  CallTooLarge: 'ASD_CALL_TOO_LARGE',
  DuplicateKey: 'ASD_DUPLICATE_KEY',
  ChecksumMismatch: 'ASD_CHECKSUM_MISMATCH',
  BadRange: 'ASD_BAD_RANGE',
  InvalidArgument: 'ASD_INVALID_ARGUMENT',
  /** Item outcomes. */
  NotFound: 'ASD_NOT_FOUND',
  Corrupt: 'ASD_CORRUPT',
  /** Answer too big for one response; ask for the rest in another call. */
  ResponseTooLarge: 'ASD_RESPONSE_TOO_LARGE',
  /** Capacity and load. */
  NoSpace: 'ASD_NO_SPACE',
  Busy: 'ASD_BUSY',
  /** The disk failed under us. */
  IoError: 'ASD_IO_ERROR',
  /** Start-up refusals. */
  IdentityMismatch: 'ASD_IDENTITY_MISMATCH',
  DirNotEmpty: 'ASD_DIR_NOT_EMPTY',
  DirLocked: 'ASD_DIR_LOCKED',
  Closed: 'ASD_CLOSED',
  /** Client side. */
  Unavailable: 'ASD_UNAVAILABLE',
  DeadlineExceeded: 'ASD_DEADLINE_EXCEEDED',
  RpcFailed: 'ASD_RPC_FAILED',
} as const;

export type AsdErrorCode = (typeof AsdErrorCode)[keyof typeof AsdErrorCode];

export function asdError(
  code: AsdErrorCode,
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
