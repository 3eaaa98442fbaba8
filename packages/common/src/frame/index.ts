export { FrameClient, type FrameClientOptions, type FrameRequest } from './frame-client.js';
export { FrameDecoder, type FrameDecoderLimits } from './frame-decoder.js';
export {
  checkFramePayload,
  decodeErrorPayload,
  decodeFrameHeader,
  encodeErrorPayload,
  encodeFrameHeader,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  FRAME_MAX_PAYLOAD_DEFAULT_BYTES,
  FRAME_VERSION_MAX,
  FRAME_VERSION_MIN,
  type Frame,
  FrameErrorCode,
  type FrameFields,
  FrameFlag,
  type FrameHeader,
  FrameOp,
  FrameStatus,
  frameError,
  writeFrameHeader,
} from './frame-format.js';
export { encodeHello, HELLO_PAYLOAD_BYTES } from './frame-hello.js';
export {
  createFrameServerCounters,
  type FrameServerCounters,
  type FrameServerOptions,
  type FrameSession,
  serveFrameConnection,
} from './frame-server.js';
export { GatheredWriter, type GatheredWriterOptions } from './gathered-writer.js';
export { PayloadPool } from './payload-pool.js';
export {
  adoptReading,
  connectReading,
  SOCKET_READ_BUFFER_BYTES,
  socketReadCounts,
} from './socket-reader.js';
