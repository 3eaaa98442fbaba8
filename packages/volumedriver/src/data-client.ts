/**
 * The client side of the volumedriver's data server (data-protocol.ts): the VolumeIo calls
 * of one vDisk over one connection of Shale's data protocol. What a remote edge uses; the
 * gRPC Io stream (VolumeIoStream) stays for owners that announce no data address.
 */
import { FrameClient, FrameFlag, isShaleError, ShaleError } from '@shale/common';
import type { BlockExtent } from './api-types.js';
import { DataOp, decodeOpenReply } from './data-protocol.js';
import { VdErrorCode } from './errors.js';
import { IO_REQUEST_MAX_BYTES } from './service-constants.js';
import { decodeExtents } from './volume-grpc.js';

/** The data path of one open vDisk, whichever transport carries it. */
export interface VolumeIoChannel {
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  write(offsetBytes: number, data: Buffer, options?: { fua?: boolean }): Promise<void>;
  flush(): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, options?: { fua?: boolean }): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, options?: { fua?: boolean }): Promise<void>;
  blockStatus(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]>;
  /** Set once the channel carries no more requests: a rejection then came from it. */
  readonly failed: ShaleError | undefined;
  readonly pendingRequests: number;
  close(): Promise<void>;
  cancel(): void;
}

/** The transport code the gRPC client uses for an unreachable server (edges retry on it). */
const UNAVAILABLE = 'VD_UNAVAILABLE';

export interface VolumeDataStreamOptions {
  /** Request and reply bytes in flight at most (default 64 MiB). */
  readonly maxInFlightBytes?: number;
  readonly connectTimeoutMs?: number;
  /**
   * How long the owner has to answer a request once it is sent (FrameClient's
   * requestTimeoutMs: past it the request fails FRAME_TIMEOUT and the connection closes,
   * failing the others with FRAME_CLOSED; default FrameClient's, 60 s).
   */
  readonly requestTimeoutMs?: number;
}

export class VolumeDataStream implements VolumeIoChannel {
  private constructor(
    private readonly client: FrameClient,
    readonly name: string,
    readonly sizeBytes: number,
    readonly clusterSizeBytes: number,
  ) {}

  /**
   * Connects to `dataAddress` (host:port) and opens `vdiskName` there. VD_UNAVAILABLE when
   * the server cannot be reached or does not have the vDisk open (yet: it may be starting
   * or taking over), so that a caller retries after locating it again.
   */
  static async open(
    dataAddress: string,
    vdiskName: string,
    options: VolumeDataStreamOptions = {},
  ): Promise<VolumeDataStream> {
    const cut = dataAddress.lastIndexOf(':');
    const host = dataAddress.slice(0, cut);
    const port = Number(dataAddress.slice(cut + 1));
    const what = `volumedriver data ${dataAddress}`;
    let client: FrameClient;
    try {
      client = await FrameClient.connect({
        host,
        port,
        what,
        maxPayloadBytes: IO_REQUEST_MAX_BYTES,
        ...(options.maxInFlightBytes === undefined
          ? {}
          : { maxInFlightBytes: options.maxInFlightBytes }),
        ...(options.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: options.connectTimeoutMs }),
        ...(options.requestTimeoutMs === undefined
          ? {}
          : { requestTimeoutMs: options.requestTimeoutMs }),
      });
    } catch (err) {
      throw new ShaleError(UNAVAILABLE, `${what}: ${String(err)}`, { cause: err });
    }
    try {
      const reply = await client.request({ op: DataOp.Open, payload: Buffer.from(vdiskName) });
      const { sizeBytes, clusterSizeBytes } = decodeOpenReply(reply.payload);
      return new VolumeDataStream(client, vdiskName, sizeBytes, clusterSizeBytes);
    } catch (err) {
      client.destroy();
      if (isShaleError(err, VdErrorCode.NotFound)) {
        throw new ShaleError(UNAVAILABLE, `${what}: vDisk ${vdiskName} is not open there`, {
          cause: err,
        });
      }
      throw err;
    }
  }

  get failed(): ShaleError | undefined {
    return this.client.failed;
  }

  get pendingRequests(): number {
    return this.client.pendingRequests;
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const reply = await this.client.request({
      op: DataOp.Read,
      offset: offsetBytes,
      extent: lengthBytes,
      replyBytes: lengthBytes,
    });
    return reply.payload;
  }

  /** Durability: as VolumeIo.write (in the owner's write buffer; with fua, on stable storage). */
  async write(offsetBytes: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    await this.client.request({
      op: DataOp.Write,
      flags: options.fua ? FrameFlag.Fua : 0,
      offset: offsetBytes,
      payload: data,
    });
  }

  /** Durability: every write acknowledged before this call is on stable storage. */
  async flush(): Promise<void> {
    await this.client.request({ op: DataOp.Flush });
  }

  async trim(offsetBytes: number, lengthBytes: number, options: { fua?: boolean } = {}) {
    await this.client.request({
      op: DataOp.Trim,
      flags: options.fua ? FrameFlag.Fua : 0,
      offset: offsetBytes,
      extent: lengthBytes,
    });
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua?: boolean } = {}) {
    await this.client.request({
      op: DataOp.WriteZeroes,
      flags: options.fua ? FrameFlag.Fua : 0,
      offset: offsetBytes,
      extent: lengthBytes,
    });
  }

  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]> {
    const reply = await this.client.request({
      op: DataOp.BlockStatus,
      offset: offsetBytes,
      extent: lengthBytes,
    });
    return decodeExtents(reply.payload, `block status of ${this.name}`);
  }

  /** Waits for every request issued so far, then closes. */
  close(): Promise<void> {
    return this.client.close();
  }

  /** Cuts the connection: every unanswered request rejects. */
  cancel(): void {
    this.client.destroy();
  }
}
