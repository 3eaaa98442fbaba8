/**
 * The frame of Shale's data protocol: what every data-plane hop between processes speaks
 * (remote edge -> volumedriver today; DTL, proxy -> ASD and HPRM reads next). A fixed
 * 40-byte header, then `payloadBytes` of raw payload. Little-endian, except the magic:
 *
 *    0  u32  magic "SHLF" (0x53 0x48 0x4c 0x46)
 *    4  u8   version (1)
 *    5  u8   op         (0 = HELLO, 255 = GOAWAY; the rest is the service's op table)
 *    6  u16  flags      (REPLY 0x1, FUA 0x2, PAYLOAD_CRC 0x4)
 *    8  u32  handle     (the request's id on this connection; a reply carries its request's)
 *   12  u32  status     (replies: 0 = OK, 1 = error with "CODE\nmessage" as payload)
 *   16  u64  offset     (bytes; < 2^53)
 *   24  u32  extent     (bytes the request covers when it carries no payload: read, trim, ...)
 *   28  u32  payload bytes that follow the header
 *   32  u32  payload CRC32C (with PAYLOAD_CRC; else 0)
 *   36  u32  header CRC32C (of bytes 0..35)
 *
 * Requests and replies share the header; many requests may be in flight on a connection and
 * replies come back in any order, matched by handle. Every violation of this format, of the
 * limits or of the connection's state is a FrameError and ends that connection only.
 */
import { crc32c } from '../crc32c.js';
import { ShaleError } from '../errors.js';

export const FRAME_MAGIC = 0x53484c46;
export const FRAME_HEADER_BYTES = 40;
/** Versions this code speaks; HELLO picks the highest both sides do. */
export const FRAME_VERSION_MIN = 1;
export const FRAME_VERSION_MAX = 1;
/** Default payload limit of a frame (a 32 MiB NBD request plus room). */
export const FRAME_MAX_PAYLOAD_DEFAULT_BYTES = 33 * 1024 * 1024;

export const FrameOp = { Hello: 0, GoAway: 255 } as const;
export const FrameFlag = { Reply: 0x1, Fua: 0x2, PayloadCrc: 0x4 } as const;
export const FrameStatus = { Ok: 0, Error: 1 } as const;

/** The codes of this boundary: what a peer did wrong, or what became of the connection. */
export const FrameErrorCode = {
  /** Bad magic, header checksum, payload checksum, or a field out of range. */
  Malformed: 'FRAME_MALFORMED',
  /** A version outside what both sides speak. */
  Version: 'FRAME_VERSION',
  /** A payload over the connection's limit. */
  TooLarge: 'FRAME_TOO_LARGE',
  /** An op the service does not have, or one not allowed in the connection's state. */
  UnknownOp: 'FRAME_UNKNOWN_OP',
  /** A request whose handle is already in flight. */
  HandleInUse: 'FRAME_HANDLE_IN_USE',
  /** The peer said goodbye (GOAWAY) or the connection closed. */
  Closed: 'FRAME_CLOSED',
  /** A request did not get its reply in time. */
  Timeout: 'FRAME_TIMEOUT',
} as const;

export function frameError(code: string, message: string, cause?: unknown): ShaleError {
  return new ShaleError(code, message, cause === undefined ? {} : { cause });
}

export interface FrameHeader {
  readonly version: number;
  readonly op: number;
  readonly flags: number;
  readonly handle: number;
  readonly status: number;
  readonly offset: number;
  readonly extent: number;
  readonly payloadBytes: number;
  readonly payloadCrc: number;
}

export interface Frame extends FrameHeader {
  /** A view of the received bytes when they arrived in one chunk, else a copy. */
  readonly payload: Buffer;
  /**
   * Set when the payload is a pooled buffer (FrameDecoderLimits.pool): gives it back for
   * reuse. After it, nothing may read or keep the payload.
   */
  readonly release?: () => void;
}

/** The fields a sender sets; the rest (payload length, checksums) come from the payload. */
export interface FrameFields {
  readonly version?: number;
  readonly op: number;
  readonly flags?: number;
  readonly handle: number;
  readonly status?: number;
  readonly offset?: number;
  readonly extent?: number;
}

const U32_MAX = 0xffff_ffff;
const TWO_32 = 2 ** 32;

/**
 * Encodes a header for `payload` into a new 40-byte Buffer. With the PAYLOAD_CRC flag the
 * payload's CRC32C is computed here. Fields out of range are a programmer error (thrown).
 */
export function encodeFrameHeader(
  fields: FrameFields,
  payload?: Uint8Array | readonly Uint8Array[],
): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  writeFrameHeader(header, fields, payload);
  return header;
}

/** `payload` may be pieces sent back to back (a gathered write): length and CRC of them all. */
export function writeFrameHeader(
  header: Buffer,
  fields: FrameFields,
  payload?: Uint8Array | readonly Uint8Array[],
): void {
  const flags = fields.flags ?? 0;
  const offset = fields.offset ?? 0;
  const parts: readonly Uint8Array[] =
    payload === undefined ? [] : payload instanceof Uint8Array ? [payload] : payload;
  let payloadBytes = 0;
  for (const part of parts) payloadBytes += part.length;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`frame offset ${offset}`);
  for (const [name, value] of [
    ['handle', fields.handle],
    ['status', fields.status ?? 0],
    ['extent', fields.extent ?? 0],
  ] as const) {
    if (!Number.isInteger(value) || value < 0 || value > U32_MAX)
      throw new RangeError(`frame ${name} ${value}`);
  }
  header.writeUInt32BE(FRAME_MAGIC, 0);
  header.writeUInt8(fields.version ?? FRAME_VERSION_MAX, 4);
  header.writeUInt8(fields.op, 5);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(fields.handle, 8);
  header.writeUInt32LE(fields.status ?? 0, 12);
  header.writeUInt32LE(offset % TWO_32, 16);
  header.writeUInt32LE(Math.floor(offset / TWO_32), 20);
  header.writeUInt32LE(fields.extent ?? 0, 24);
  header.writeUInt32LE(payloadBytes, 28);
  let payloadCrc = 0;
  if ((flags & FrameFlag.PayloadCrc) !== 0)
    for (const part of parts) payloadCrc = crc32c(part, payloadCrc);
  header.writeUInt32LE(payloadCrc, 32);
  header.writeUInt32LE(crc32c(header.subarray(0, 36)), 36);
}

/**
 * Decodes and checks a header (40 bytes at `at`). Throws FrameError: FRAME_MALFORMED (magic,
 * header checksum, offset), FRAME_VERSION (outside min..max), FRAME_TOO_LARGE (payload over
 * `maxPayloadBytes`).
 */
export function decodeFrameHeader(
  buf: Buffer,
  at: number,
  limits: {
    readonly maxPayloadBytes: number;
    readonly versionMin?: number;
    readonly versionMax?: number;
  },
): FrameHeader {
  if (buf.readUInt32BE(at) !== FRAME_MAGIC) {
    throw frameError(
      FrameErrorCode.Malformed,
      `not a Shale data frame (magic 0x${buf.readUInt32BE(at).toString(16).padStart(8, '0')})`,
    );
  }
  const crc = buf.readUInt32LE(at + 36);
  if (crc32c(buf.subarray(at, at + 36)) !== crc) {
    throw frameError(FrameErrorCode.Malformed, 'frame header checksum mismatch');
  }
  const version = buf.readUInt8(at + 4);
  const min = limits.versionMin ?? FRAME_VERSION_MIN;
  const max = limits.versionMax ?? FRAME_VERSION_MAX;
  if (version < min || version > max) {
    throw frameError(
      FrameErrorCode.Version,
      `frame version ${version}: this side speaks ${min}..${max}`,
    );
  }
  const high = buf.readUInt32LE(at + 20);
  if (high >= 2 ** 21) throw frameError(FrameErrorCode.Malformed, 'frame offset over 2^53');
  const payloadBytes = buf.readUInt32LE(at + 28);
  if (payloadBytes > limits.maxPayloadBytes) {
    throw frameError(
      FrameErrorCode.TooLarge,
      `frame payload of ${payloadBytes} B: at most ${limits.maxPayloadBytes} B on this connection`,
    );
  }
  const flags = buf.readUInt16LE(at + 6);
  const payloadCrc = buf.readUInt32LE(at + 32);
  if ((flags & FrameFlag.PayloadCrc) === 0 && payloadCrc !== 0) {
    throw frameError(FrameErrorCode.Malformed, 'payload checksum set without its flag');
  }
  return {
    version,
    op: buf.readUInt8(at + 5),
    flags,
    handle: buf.readUInt32LE(at + 8),
    status: buf.readUInt32LE(at + 12),
    offset: high * TWO_32 + buf.readUInt32LE(at + 16),
    extent: buf.readUInt32LE(at + 24),
    payloadBytes,
    payloadCrc,
  };
}

/** Checks a payload against its header's checksum (FRAME_MALFORMED when it differs). */
export function checkFramePayload(header: FrameHeader, payload: Buffer): void {
  if ((header.flags & FrameFlag.PayloadCrc) !== 0 && crc32c(payload) !== header.payloadCrc) {
    throw frameError(
      FrameErrorCode.Malformed,
      `payload checksum mismatch (op ${header.op}, handle ${header.handle})`,
    );
  }
}

/** The payload of an error reply: the error's stable code, a newline, its message. */
export function encodeErrorPayload(code: string, message: string): Buffer {
  return Buffer.from(`${code}\n${message}`, 'utf8');
}

export function decodeErrorPayload(payload: Buffer): ShaleError {
  const text = payload.toString('utf8');
  const cut = text.indexOf('\n');
  if (cut <= 0)
    return frameError(
      FrameErrorCode.Malformed,
      `an error reply without a code: ${text.slice(0, 200)}`,
    );
  return new ShaleError(text.slice(0, cut), text.slice(cut + 1));
}
