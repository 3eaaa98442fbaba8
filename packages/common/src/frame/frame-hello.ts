import {
  decodeErrorPayload,
  FRAME_VERSION_MAX,
  FRAME_VERSION_MIN,
  type Frame,
  FrameErrorCode,
  FrameStatus,
  frameError,
} from './frame-format.js';

/**
 * HELLO, the first frame each way. The client's payload: u8 lowest version, u8 highest,
 * u16 0, u32 the largest payload it accepts. The server answers in the version it picked
 * (the highest both speak) with u32 the largest payload it accepts, or refuses with an
 * error reply (FRAME_VERSION) and closes.
 */
export const HELLO_PAYLOAD_BYTES = 8;

export function encodeHello(min: number, max: number, maxPayloadBytes: number): Buffer {
  const out = Buffer.alloc(HELLO_PAYLOAD_BYTES);
  out.writeUInt8(min, 0);
  out.writeUInt8(max, 1);
  out.writeUInt32LE(maxPayloadBytes, 4);
  return out;
}

/** The server's side: the version to speak and the client's payload limit. */
export function readHello(frame: Frame): { version: number; maxPayloadBytes: number } {
  if (frame.payload.length !== HELLO_PAYLOAD_BYTES) {
    throw frameError(
      FrameErrorCode.Malformed,
      `a HELLO of ${frame.payload.length} B, expected ${HELLO_PAYLOAD_BYTES}`,
    );
  }
  const min = frame.payload.readUInt8(0);
  const max = frame.payload.readUInt8(1);
  const version = Math.min(max, FRAME_VERSION_MAX);
  if (min > max || version < Math.max(min, FRAME_VERSION_MIN)) {
    throw frameError(
      FrameErrorCode.Version,
      `the client speaks versions ${min}..${max}, this server ${FRAME_VERSION_MIN}..${FRAME_VERSION_MAX}`,
    );
  }
  return { version, maxPayloadBytes: frame.payload.readUInt32LE(4) };
}

export function readHelloReply(
  frame: Frame,
  what: string,
): { version: number; maxPayloadBytes: number } {
  if (frame.status !== FrameStatus.Ok) {
    const err = decodeErrorPayload(frame.payload);
    throw frameError(err.code, `${what} refused the connection: ${err.message}`);
  }
  if (frame.payload.length !== 4) {
    throw frameError(
      FrameErrorCode.Malformed,
      `${what}: a HELLO reply of ${frame.payload.length} B`,
    );
  }
  return { version: frame.version, maxPayloadBytes: frame.payload.readUInt32LE(0) };
}
