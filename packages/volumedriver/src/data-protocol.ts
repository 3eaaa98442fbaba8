/**
 * The volumedriver's op table on Shale's data protocol (the frame: @shale/common's
 * frame-format.ts). One connection serves one vDisk: OPEN names it, then any number of
 * block requests, many in flight, answered in any order.
 *
 *   op  name          request                                   OK reply payload
 *   1   OPEN          payload: the vDisk name (UTF-8)           u64 size, u32 cluster size
 *   2   READ          offset, extent = length                   the bytes
 *   3   WRITE         offset, payload = the bytes; FUA flag     -
 *   4   FLUSH         -                                         -
 *   5   TRIM          offset, extent = length; FUA flag         -
 *   6   WRITE_ZEROES  offset, extent = length; FUA flag         -
 *   7   BLOCK_STATUS  offset, extent = length                   extents (encodeExtents)
 *
 * An error reply carries the volume's code (VD_NOT_FOUND, VD_INVALID_ARGUMENT, VD_FENCED,
 * ...) and message, as the gRPC Io stream does. A block op before OPEN, a second OPEN or
 * an op not in this table end the connection (GOAWAY FRAME_UNKNOWN_OP).
 */
export const DataOp = {
  Open: 1,
  Read: 2,
  Write: 3,
  Flush: 4,
  Trim: 5,
  WriteZeroes: 6,
  BlockStatus: 7,
} as const;

export const OPEN_REPLY_BYTES = 12;

export function encodeOpenReply(sizeBytes: number, clusterSizeBytes: number): Buffer {
  const out = Buffer.alloc(OPEN_REPLY_BYTES);
  out.writeBigUInt64LE(BigInt(sizeBytes), 0);
  out.writeUInt32LE(clusterSizeBytes, 8);
  return out;
}

export function decodeOpenReply(payload: Buffer): { sizeBytes: number; clusterSizeBytes: number } {
  if (payload.length !== OPEN_REPLY_BYTES) {
    throw new RangeError(`an OPEN reply of ${payload.length} B, expected ${OPEN_REPLY_BYTES}`);
  }
  return {
    sizeBytes: Number(payload.readBigUInt64LE(0)),
    clusterSizeBytes: payload.readUInt32LE(8),
  };
}
