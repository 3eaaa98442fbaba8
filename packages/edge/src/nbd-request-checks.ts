/**
 * The transmission phase's checks, in the order they apply: one list, so a reader sees
 * every reason a request is refused before it reaches an export. The first failing
 * check answers the request; nothing is changed.
 */
import { NBD_MAX_PAYLOAD_BYTES } from './constants.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NbdErrno,
} from './nbd-protocol.js';

export interface RequestContext {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Structured replies negotiated (DF is valid only then). */
  readonly structured: boolean;
  /** base:allocation selected with NBD_OPT_SET_META_CONTEXT. */
  readonly blockStatus: boolean;
}

export interface Refusal {
  readonly errno: NbdErrno;
  readonly message: string;
}

/** The flags each command may carry. FUA is valid on every command (the spec says so). */
function allowedFlags(command: number, context: RequestContext): number {
  switch (command) {
    case NBD_CMD_READ:
      return NBD_CMD_FLAG_FUA | (context.structured ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE:
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
      return NBD_CMD_FLAG_FUA;
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return 0;
  }
}

const NAMES: Readonly<Record<number, string>> = {
  [NBD_CMD_READ]: 'read',
  [NBD_CMD_WRITE]: 'write',
  [NBD_CMD_FLUSH]: 'flush',
  [NBD_CMD_TRIM]: 'trim',
  [NBD_CMD_WRITE_ZEROES]: 'write-zeroes',
  [NBD_CMD_BLOCK_STATUS]: 'block-status',
};

export function commandName(command: number): string {
  return NAMES[command] ?? `command ${command}`;
}

const modifies = (command: number): boolean =>
  command === NBD_CMD_WRITE || command === NBD_CMD_TRIM || command === NBD_CMD_WRITE_ZEROES;

/**
 * Checks one request. `offsetBytes` is exact below 2^53 and Infinity above (then it is past
 * the end of any export). Returns undefined when the request may run.
 */
export function checkRequest(
  command: number,
  flags: number,
  offsetBytes: number,
  lengthBytes: number,
  context: RequestContext,
): Refusal | undefined {
  const name = commandName(command);
  // 1. A command this server knows and advertised.
  if (NAMES[command] === undefined) {
    return { errno: NbdErrno.EINVAL, message: `unknown or unsupported command ${command}` };
  }
  // 2. Only the flags documented for the command.
  const extra = flags & ~allowedFlags(command, context);
  if (extra !== 0) {
    return {
      errno: NbdErrno.EINVAL,
      message: `${name}: flags 0x${extra.toString(16)} not allowed`,
    };
  }
  // 3. Block status needs a negotiated metadata context.
  if (command === NBD_CMD_BLOCK_STATUS && !context.blockStatus) {
    return { errno: NbdErrno.EINVAL, message: 'block-status without base:allocation negotiated' };
  }
  // 4. Nothing may change a read-only export.
  if (context.readOnly && modifies(command)) {
    return { errno: NbdErrno.EPERM, message: `${name} on a read-only export` };
  }
  // 5. Lengths: payloads up to the advertised maximum; block status of a non-empty range.
  if (
    (command === NBD_CMD_READ || command === NBD_CMD_WRITE) &&
    lengthBytes > NBD_MAX_PAYLOAD_BYTES
  ) {
    return {
      errno: NbdErrno.EINVAL,
      message: `${name} of ${lengthBytes} bytes: at most ${NBD_MAX_PAYLOAD_BYTES}`,
    };
  }
  if (command === NBD_CMD_FLUSH && (offsetBytes !== 0 || lengthBytes !== 0)) {
    return { errno: NbdErrno.EINVAL, message: 'flush with a non-zero offset or length' };
  }
  if (command === NBD_CMD_BLOCK_STATUS && lengthBytes === 0) {
    return { errno: NbdErrno.EINVAL, message: 'block-status of an empty range' };
  }
  // 6. The range lies inside the export (the spec: ENOSPC for writes and write-zeroes,
  // EINVAL otherwise, trim included).
  if (command !== NBD_CMD_FLUSH && offsetBytes + lengthBytes > context.sizeBytes) {
    return {
      errno:
        command === NBD_CMD_WRITE || command === NBD_CMD_WRITE_ZEROES
          ? NbdErrno.ENOSPC
          : NbdErrno.EINVAL,
      message: `${name} at ${offsetBytes}+${lengthBytes} reaches past the end (${context.sizeBytes} B)`,
    };
  }
  // 7. A fast zero that must allocate cannot be fast: the client should write zeros itself.
  if (
    command === NBD_CMD_WRITE_ZEROES &&
    (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0 &&
    (flags & NBD_CMD_FLAG_NO_HOLE) !== 0
  ) {
    return { errno: NbdErrno.ENOTSUP, message: 'write-zeroes with NO_HOLE is not fast here' };
  }
  return undefined;
}
