/**
 * Transmission-phase replies: simple replies, and structured reply chunks (data, block
 * status, errors). The 64-bit handle is carried as two u32 halves so that no BigInt is
 * made per request.
 */
import type { Extent } from './block-export.js';
import {
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_HEADER_BYTES,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_HEADER_BYTES,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './nbd-protocol.js';

/** Longest error message sent in an error chunk (the protocol allows 4 KiB; keep it short). */
const ERROR_MESSAGE_MAX_BYTES = 512;

export function simpleReply(handleHi: number, handleLo: number, errno: number): Buffer {
  const out = Buffer.allocUnsafe(NBD_SIMPLE_REPLY_HEADER_BYTES);
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errno, 4);
  out.writeUInt32BE(handleHi, 8);
  out.writeUInt32BE(handleLo, 12);
  return out;
}

/** A structured chunk header, with `extraBytes` of room after it for the payload's start. */
function chunkHeader(
  handleHi: number,
  handleLo: number,
  type: number,
  payloadBytes: number,
  extraBytes: number,
): Buffer {
  const out = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_HEADER_BYTES + extraBytes);
  out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(NBD_REPLY_FLAG_DONE, 4);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(handleHi, 8);
  out.writeUInt32BE(handleLo, 12);
  out.writeUInt32BE(payloadBytes, 16);
  return out;
}

/**
 * The header of a one-chunk read reply (NBD_REPLY_TYPE_OFFSET_DATA, done): send it, then
 * the data itself (not copied).
 */
export function offsetDataHeader(
  handleHi: number,
  handleLo: number,
  offsetBytes: number,
  dataBytes: number,
): Buffer {
  const out = chunkHeader(handleHi, handleLo, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataBytes, 8);
  out.writeUInt32BE(Math.floor(offsetBytes / 0x1_0000_0000), 20);
  out.writeUInt32BE(offsetBytes >>> 0, 24);
  return out;
}

/** A done chunk without payload: success for a zero-length read. */
export function noneChunk(handleHi: number, handleLo: number): Buffer {
  return chunkHeader(handleHi, handleLo, NBD_REPLY_TYPE_NONE, 0, 0);
}

export function errorChunk(
  handleHi: number,
  handleLo: number,
  errno: number,
  message: string,
): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > ERROR_MESSAGE_MAX_BYTES) text = text.subarray(0, ERROR_MESSAGE_MAX_BYTES);
  const out = chunkHeader(
    handleHi,
    handleLo,
    NBD_REPLY_TYPE_ERROR,
    6 + text.length,
    6 + text.length,
  );
  out.writeUInt32BE(errno, 20);
  out.writeUInt16BE(text.length, 24);
  text.copy(out, 26);
  return out;
}

/**
 * The extents of an export's block-status answer as they are sent: at most maxExtents,
 * together no longer than the request (the last is cut to it). `broken` when the answer
 * breaks the block-export contract: an extent that is empty or not a whole number, or none.
 */
export function clipExtents(
  extents: readonly Extent[],
  maxExtents: number,
  lengthBytes: number,
): { readonly extents: Extent[] } | { readonly broken: string } {
  const sent: Extent[] = [];
  let totalBytes = 0;
  for (const extent of extents) {
    if (sent.length >= maxExtents || totalBytes >= lengthBytes) break;
    if (!Number.isSafeInteger(extent.lengthBytes) || extent.lengthBytes <= 0) {
      return { broken: `a block-status extent of length ${extent.lengthBytes}` };
    }
    const length = Math.min(extent.lengthBytes, lengthBytes - totalBytes);
    sent.push({ lengthBytes: length, hole: extent.hole });
    totalBytes += length;
  }
  if (sent.length === 0) return { broken: 'a block status without extents' };
  return { extents: sent };
}

/** A block-status chunk for one context: descriptors of (u32 length, u32 flags). */
export function blockStatusChunk(
  handleHi: number,
  handleLo: number,
  contextId: number,
  extents: readonly { readonly lengthBytes: number; readonly hole: boolean }[],
): Buffer {
  const payloadBytes = 4 + 8 * extents.length;
  const out = chunkHeader(
    handleHi,
    handleLo,
    NBD_REPLY_TYPE_BLOCK_STATUS,
    payloadBytes,
    payloadBytes,
  );
  out.writeUInt32BE(contextId, 20);
  let at = 24;
  for (const extent of extents) {
    out.writeUInt32BE(extent.lengthBytes, at);
    out.writeUInt32BE(extent.hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0, at + 4);
    at += 8;
  }
  return out;
}
