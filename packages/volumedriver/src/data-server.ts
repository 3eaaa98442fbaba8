/**
 * The volumedriver's data server: Shale's data protocol (frames, data-protocol.ts's op
 * table) for edges on other hosts, next to the gRPC VolumeService that keeps the control
 * plane. Each connection opens one vDisk and serves its block requests from the same
 * VolumeIo the co-located NBD server and the gRPC Io stream use; memory per connection is
 * bounded (FrameServerOptions.maxBufferedBytes), and a peer that breaks the protocol loses
 * its own connection only.
 */
import net from 'node:net';
import {
  createFrameServerCounters,
  type Frame,
  FrameErrorCode,
  FrameFlag,
  type FrameServerCounters,
  frameError,
  listenOn,
  serveFrameConnection,
} from '@shale/common';
import type { VolumeIo, VolumeManagerApi } from './api-types.js';
import { DataOp, encodeOpenReply } from './data-protocol.js';
import { VdErrorCode, vdError } from './errors.js';
import { IO_REQUEST_MAX_BYTES, IO_SERVER_MAX_IN_FLIGHT_REQUESTS } from './service-constants.js';
import { encodeExtents } from './volume-grpc.js';

export interface VolumeDataServerOptions {
  readonly manager: Pick<VolumeManagerApi, 'io'>;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Bytes one connection may hold (request payloads, replies not yet sent). */
  readonly maxBufferedBytesPerConnection?: number;
  readonly log?: (line: string) => void;
}

const CONNECTION_BUFFERED_DEFAULT_BYTES = 64 * 1024 * 1024;
/** The largest frame payload: one WRITE of IO_REQUEST_MAX_BYTES. */
const DATA_MAX_PAYLOAD_BYTES = IO_REQUEST_MAX_BYTES;

export class VolumeDataServer {
  private constructor(
    private readonly server: net.Server,
    private readonly sockets: Set<net.Socket>,
    readonly counters: FrameServerCounters,
    readonly host: string,
    readonly port: number,
  ) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  static async start(options: VolumeDataServerOptions): Promise<VolumeDataServer> {
    const sockets = new Set<net.Socket>();
    const counters = createFrameServerCounters();
    // Paused, so that serveFrameConnection can read it into a reused buffer.
    const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
      const socket = serveFrameConnection(accepted, new DataSession(options.manager), {
        maxPayloadBytes: DATA_MAX_PAYLOAD_BYTES,
        maxBufferedBytes:
          options.maxBufferedBytesPerConnection ?? CONNECTION_BUFFERED_DEFAULT_BYTES,
        maxInFlightRequests: IO_SERVER_MAX_IN_FLIGHT_REQUESTS,
        replyBytesOf: (frame) => (frame.op === DataOp.Read ? frame.extent : 0),
        counters,
        ...(options.log === undefined ? {} : { log: options.log }),
      });
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    const port = await listenOn(server, options.port, options.host);
    return new VolumeDataServer(server, sockets, counters, options.host, port);
  }

  /** Stops listening; open connections get `graceMs` to finish, then are cut. */
  async close(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.end();
    const timer = setTimeout(() => {
      for (const socket of this.sockets) socket.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }
}

/** One connection: OPEN binds the vDisk, then block requests run on it. */
class DataSession {
  private io: VolumeIo | undefined;

  constructor(private readonly manager: Pick<VolumeManagerApi, 'io'>) {}

  handle(frame: Frame): Promise<Buffer | undefined> {
    if (frame.op === DataOp.Open) {
      if (this.io !== undefined) {
        throw frameError(
          FrameErrorCode.UnknownOp,
          `this connection serves ${this.io.name} already`,
        );
      }
      const name = frame.payload.toString('utf8');
      // VD_NOT_FOUND (not open here) is an error reply: the client locates it again.
      const io = this.manager.io(name);
      this.io = io;
      return Promise.resolve(encodeOpenReply(io.sizeBytes, io.clusterSizeBytes));
    }
    const io = this.io;
    if (io === undefined) {
      throw frameError(FrameErrorCode.UnknownOp, `op ${frame.op} before OPEN`);
    }
    const fua = (frame.flags & FrameFlag.Fua) !== 0;
    switch (frame.op) {
      case DataOp.Read:
        if (frame.extent > IO_REQUEST_MAX_BYTES) {
          return Promise.reject(
            vdError(
              VdErrorCode.InvalidArgument,
              `a read of ${frame.extent} B: at most ${IO_REQUEST_MAX_BYTES} B per request`,
            ),
          );
        }
        return io.read(frame.offset, frame.extent);
      case DataOp.Write:
        return io.write(frame.offset, frame.payload, { fua }).then(() => undefined);
      case DataOp.Flush:
        return io.flush().then(() => undefined);
      case DataOp.Trim:
        return io.trim(frame.offset, frame.extent, { fua }).then(() => undefined);
      case DataOp.WriteZeroes:
        return io.writeZeroes(frame.offset, frame.extent, { fua }).then(() => undefined);
      case DataOp.BlockStatus:
        return io.blockStatus(frame.offset, frame.extent).then(encodeExtents);
      default:
        throw frameError(FrameErrorCode.UnknownOp, `op ${frame.op} is not a volumedriver data op`);
    }
  }
}
