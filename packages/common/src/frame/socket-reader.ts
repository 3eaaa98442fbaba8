import net from 'node:net';

/**
 * Reading a socket into one reused buffer. By default Node allocates a fresh 64 KiB buffer
 * for every read; V8 counts each as new external memory and answers with full mark-compact
 * collections (measured: 47% of an ASD's CPU under uploads went to the collector). With
 * `onread` the kernel copies into one buffer per connection and the consumer (a
 * FrameDecoder, which copies what it keeps) sees a view of it that is valid only during its
 * callback.
 *
 * Client sockets get it from net.connect's documented `onread` option. Accepted sockets
 * cannot (net.Server has no such option): the server must accept with pauseOnConnect, and
 * adoptReading() moves the accepted socket's handle into a new net.Socket created with
 * `onread`. That uses Node's `handle` option and `_handle` field, which are not documented;
 * when they are not there (another Node), the socket is served as it is, with 'data' events,
 * and socketReadCounts() says so.
 */

/** The reused read buffer of one connection; the kernel fills up to this much per read. */
export const SOCKET_READ_BUFFER_BYTES = 256 * 1024;

const counts = { userBuffer: 0, dataEvents: 0 };

/** How many connections were read each way since the process started (tests, metrics). */
export function socketReadCounts(): { userBuffer: number; dataEvents: number } {
  return { ...counts };
}

/** A net.connect whose reads land in one reused buffer, handed to onChunk as views. */
export function connectReading(
  options: { host: string; port: number; noDelay?: boolean },
  onChunk: (chunk: Buffer) => void,
): net.Socket {
  counts.userBuffer += 1;
  // Flowing, so that the end of the stream is emitted ('end', then 'close') with no
  // 'data' listener.
  return net.connect({ ...options, onread: readInto(onChunk) }).resume();
}

function readInto(onChunk: (chunk: Buffer) => void) {
  return {
    buffer: Buffer.allocUnsafeSlow(SOCKET_READ_BUFFER_BYTES),
    callback: (bytes: number, buffer: Uint8Array) => {
      onChunk((buffer as Buffer).subarray(0, bytes));
      return true;
    },
  };
}

interface HandleCarrier {
  _handle: { reading?: boolean; useUserBuffer?: unknown } | null;
}

/**
 * The socket to serve `accepted` on: a new one reading into a reused buffer when `accepted`
 * was accepted paused (net.createServer({ pauseOnConnect: true })) and Node lets its handle
 * move, else `accepted` itself with its 'data' events routed to onChunk. Serve, track and
 * close the returned socket, not `accepted`.
 */
export function adoptReading(accepted: net.Socket, onChunk: (chunk: Buffer) => void): net.Socket {
  const carrier = accepted as unknown as HandleCarrier;
  const handle = carrier._handle;
  if (
    handle === null ||
    handle === undefined ||
    handle.reading !== false ||
    typeof handle.useUserBuffer !== 'function'
  ) {
    counts.dataEvents += 1;
    accepted.on('data', onChunk);
    accepted.resume();
    return accepted;
  }
  carrier._handle = null;
  // The accepted socket owns nothing now; destroying it settles the server's connection
  // count, so server.close() does not wait for the adopted socket: its owner (the caller)
  // tracks and closes it.
  accepted.destroy();
  counts.userBuffer += 1;
  const options = { handle, readable: true, writable: true, onread: readInto(onChunk) };
  return new net.Socket(options as unknown as net.SocketConstructorOpts).resume();
}
