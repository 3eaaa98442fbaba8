import * as grpc from '@grpc/grpc-js';
import { ShaleError } from '@shale/common';
import type {
  BlockExtent,
  CloneVdiskInput,
  CreateVdiskInput,
  CreateVpoolInput,
  IoRequest,
  ScrubOptions,
  ScrubReport,
  SnapshotInfo,
  StorageRouterInfo,
  VdiskInfo,
  VdiskLocation,
  VolumeIo,
  VolumeManagerApi,
  VpoolInfo,
  WriteBufferSpaceStatus,
} from './api-types.js';
import { VdErrorCode, vdError } from './errors.js';
import {
  IO_BATCH_MAX_BYTES,
  IO_BATCH_MAX_REQUESTS,
  IO_CLIENT_MAX_IN_FLIGHT_REQUESTS,
  IO_SERVER_MAX_IN_FLIGHT_REQUESTS,
  VOLUME_CALL_DEADLINE_MS,
  VOLUME_MAX_MESSAGE_BYTES,
} from './service-constants.js';
import {
  asShaleError,
  crashOnAssertion,
  decodeExtents,
  encodeExtents,
  fromGrpcError,
  ioRequestFromProto,
  ioRequestToProto,
  locationCopy,
  type ProtoHealthReply,
  type ProtoIoBatch,
  type ProtoIoReply,
  type ProtoIoReplyBatch,
  type ProtoIoRequest,
  type ProtoVdiskInfo,
  routerCopy,
  scrubReportCopy,
  snapshotFromProto,
  snapshotToProto,
  toGrpcError,
  unary,
  VolumeServiceClient,
  vdiskFromProto,
  vdiskToProto,
  volumeServiceDefinition,
  vpoolFromProto,
  vpoolToProto,
} from './volume-grpc.js';

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': VOLUME_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': VOLUME_MAX_MESSAGE_BYTES,
  'grpc.enable_channelz': 0,
};

const EMPTY = Buffer.alloc(0);

/** What the server counts; the daemon exports them as metrics, tests read them. */
export interface VolumeServiceCounters {
  ioStreamsOpened: number;
  ioStreamsFailed: number;
  /** IoBatch messages received, and the requests in them. */
  ioBatchesReceived: number;
  ioRequestsReceived: number;
  /** IoReplyBatch messages sent, and the replies in them. */
  ioReplyBatchesSent: number;
  ioRepliesSent: number;
  ioErrorReplies: number;
  /** Times a stream stopped being read because IO_SERVER_MAX_IN_FLIGHT_REQUESTS was reached. */
  ioStreamPauses: number;
}

export function createVolumeServiceCounters(): VolumeServiceCounters {
  return {
    ioStreamsOpened: 0,
    ioStreamsFailed: 0,
    ioBatchesReceived: 0,
    ioRequestsReceived: 0,
    ioReplyBatchesSent: 0,
    ioRepliesSent: 0,
    ioErrorReplies: 0,
    ioStreamPauses: 0,
  };
}

export interface VolumeHealth {
  readonly ok: boolean;
  readonly nodeId: string;
  readonly vdisksOpen: number;
  /** vDisks owned there that could not be opened (state 'failed'; retried). */
  readonly vdisksFailed: number;
  /** The write buffer's file system (absent from a service that does not say). */
  readonly writeBuffer?: WriteBufferSpaceStatus;
}

export interface VolumeServiceOptions {
  /** The storage router this volumedriver runs on (answered by Health). */
  readonly nodeId: string;
  /** Filled in as the service runs (default: a private set). */
  readonly counters?: VolumeServiceCounters;
  /**
   * How many vDisks are open here. Default: the listed vDisks that carry stats (the api
   * types say stats are present exactly when the vDisk is open on the answering node).
   */
  readonly vdisksOpen?: () => Promise<number>;
  /** How many vDisks owned here could not be opened. Default: the listed ones in state 'failed'. */
  readonly vdisksFailed?: () => Promise<number>;
  /** The write buffer's space, for Health (absent: not reported). */
  readonly writeBufferSpace?: () => WriteBufferSpaceStatus;
}

/** Binds a VolumeManagerApi to the VolumeService: decoding and the error table, nothing else. */
export function createVolumeGrpcServer(
  manager: VolumeManagerApi,
  options: VolumeServiceOptions,
): grpc.Server {
  const server = new grpc.Server(CHANNEL_OPTIONS);
  const counters = options.counters ?? createVolumeServiceCounters();
  const vdisksOpen =
    options.vdisksOpen ??
    (async () => (await manager.listVdisks()).filter((info) => info.stats !== undefined).length);
  const vdisksFailed =
    options.vdisksFailed ??
    (async () => (await manager.listVdisks()).filter((info) => info.state === 'failed').length);
  const handlers: grpc.UntypedServiceImplementation = {
    createVpool: unary(
      async (req: {
        name: string;
        backendId: string;
        presetName: string;
        clusterSizeBytes: number;
        scoSizeBytes: number;
        writeBufferBytes: number;
      }) =>
        vpoolToProto(
          await manager.createVpool({
            name: req.name,
            backendId: req.backendId,
            ...(req.presetName === '' ? {} : { presetName: req.presetName }),
            ...(req.clusterSizeBytes === 0 ? {} : { clusterSizeBytes: req.clusterSizeBytes }),
            ...(req.scoSizeBytes === 0 ? {} : { scoSizeBytes: req.scoSizeBytes }),
            ...(req.writeBufferBytes === 0 ? {} : { writeBufferBytes: req.writeBufferBytes }),
          }),
        ),
    ),
    listVpools: unary(async () => ({ vpools: (await manager.listVpools()).map(vpoolToProto) })),
    createVdisk: unary(async (req: { name: string; vpoolName: string; sizeBytes: number }) =>
      vdiskToProto(
        await manager.createVdisk({
          name: req.name,
          vpoolName: req.vpoolName,
          sizeBytes: req.sizeBytes,
        }),
      ),
    ),
    resizeVdisk: unary(async (req: { name: string; sizeBytes: number; force: boolean }) =>
      vdiskToProto(await manager.resizeVdisk(req.name, req.sizeBytes, { force: req.force })),
    ),
    deleteVdisk: unary(async (req: { name: string }) => {
      await manager.deleteVdisk(req.name);
      return {};
    }),
    listVdisks: unary(async () => ({ vdisks: (await manager.listVdisks()).map(vdiskToProto) })),
    vdiskInfo: unary(async (req: { name: string }) =>
      vdiskToProto(await manager.vdiskInfo(req.name)),
    ),
    createSnapshot: unary(async (req: { vdiskName: string; snapshotName: string }) =>
      snapshotToProto(await manager.createSnapshot(req.vdiskName, req.snapshotName)),
    ),
    createGroupSnapshot: unary(async (req: { vdiskNames: string[]; snapshotName: string }) => ({
      snapshots: (await manager.createGroupSnapshot(req.vdiskNames, req.snapshotName)).map(
        snapshotToProto,
      ),
    })),
    listSnapshots: unary(async (req: { name: string }) => ({
      snapshots: (await manager.listSnapshots(req.name)).map(snapshotToProto),
    })),
    deleteSnapshot: unary(async (req: { vdiskName: string; snapshotName: string }) => {
      await manager.deleteSnapshot(req.vdiskName, req.snapshotName);
      return {};
    }),
    cloneVdisk: unary(async (req: { name: string; parentName: string; snapshotName: string }) =>
      vdiskToProto(
        await manager.cloneVdisk({
          name: req.name,
          parentName: req.parentName,
          snapshotName: req.snapshotName,
        }),
      ),
    ),
    rollback: unary(async (req: { vdiskName: string; snapshotName: string }) => {
      await manager.rollback(req.vdiskName, req.snapshotName);
      return {};
    }),
    syncToBackend: unary(async (req: { name: string }) => {
      // Durability: answered = every SCO and TLog written before the call, and a
      // checkpoint, are in the backend.
      await manager.syncToBackend(req.name);
      return {};
    }),
    scrub: unary(async (req: { vdiskName: string; liveFractionThreshold: number }) =>
      scrubReportCopy(
        await manager.scrub(
          req.vdiskName,
          req.liveFractionThreshold === 0
            ? {}
            : { liveFractionThreshold: req.liveFractionThreshold },
        ),
      ),
    ),
    health: unary(
      async (): Promise<ProtoHealthReply> => ({
        ok: true,
        nodeId: options.nodeId,
        vdisksOpen: await vdisksOpen(),
        vdisksFailed: await vdisksFailed(),
        writeBuffer: options.writeBufferSpace?.() ?? null,
      }),
    ),
    listStorageRouters: unary(async () => ({
      routers: (await manager.listStorageRouters()).map(routerCopy),
    })),
    locateVdisk: unary(async (req: { name: string }) =>
      locationCopy(await manager.locateVdisk(req.name)),
    ),
    io: (call: grpc.ServerDuplexStream<ProtoIoBatch, ProtoIoReplyBatch>) => {
      counters.ioStreamsOpened++;
      new IoSession(call, manager, counters).start();
    },
  };
  server.addService(volumeServiceDefinition, handlers);
  return server;
}

/**
 * The server side of one Io stream.
 *
 *   first IoBatch --name ok--> serving --client half-close, all answered--> ended (OK)
 *        |                       |
 *        +--no name / not open---+--another name, too many requests--> failed (status)
 *   (cancelled by the client at any point: replies still due are dropped)
 *
 * Requests start in arrival order, at most IO_SERVER_MAX_IN_FLIGHT_REQUESTS at once; the
 * rest of a batch waits in `queue` and the stream is not read meanwhile (nor while grpc's
 * send buffer is full), so a stream holds at most a couple of batches in memory. Replies
 * go out as their requests complete, all those completed in one event-loop turn in one
 * IoReplyBatch. A bad request fails alone (its own error reply); only a broken stream
 * protocol fails the stream, and never another stream.
 */
class IoSession {
  private io: VolumeIo | undefined;
  private vdiskName = '';
  private readonly queue: ProtoIoRequest[] = [];
  private queueHead = 0;
  private inFlight = 0;
  private replies: ProtoIoReply[] = [];
  private replyBytes = 0;
  private flushScheduled = false;
  private paused = false;
  private sendBlocked = false;
  private clientEnded = false;
  /** Failed, cancelled or ended: nothing more is read, started or sent. */
  private finished = false;

  constructor(
    private readonly call: grpc.ServerDuplexStream<ProtoIoBatch, ProtoIoReplyBatch>,
    private readonly manager: VolumeManagerApi,
    private readonly counters: VolumeServiceCounters,
  ) {}

  start(): void {
    this.call.on('data', (batch: ProtoIoBatch) => this.onBatch(batch));
    this.call.on('end', () => {
      this.clientEnded = true;
      this.maybeEnd();
    });
    this.call.on('cancelled', () => {
      this.finished = true;
    });
    // Also emitted by fail() itself; grpc-js turns it into the stream's status.
    this.call.on('error', () => {
      this.finished = true;
    });
  }

  private onBatch(batch: ProtoIoBatch): void {
    if (this.finished) return;
    this.counters.ioBatchesReceived++;
    this.counters.ioRequestsReceived += batch.requests.length;
    if (this.io === undefined) {
      if (batch.vdiskName === '') {
        this.fail(vdError(VdErrorCode.InvalidArgument, 'the first IoBatch must name the vDisk'));
        return;
      }
      try {
        // VD_NOT_FOUND when it is not open here: the stream fails with that status.
        this.io = this.manager.io(batch.vdiskName);
      } catch (err) {
        this.fail(err);
        return;
      }
      this.vdiskName = batch.vdiskName;
    } else if (batch.vdiskName !== '' && batch.vdiskName !== this.vdiskName) {
      this.fail(
        vdError(
          VdErrorCode.InvalidArgument,
          `this Io stream serves vDisk ${this.vdiskName}, not ${batch.vdiskName}`,
        ),
      );
      return;
    }
    if (batch.requests.length > IO_BATCH_MAX_REQUESTS) {
      this.fail(
        vdError(
          VdErrorCode.InvalidArgument,
          `an IoBatch of ${batch.requests.length} requests: at most ${IO_BATCH_MAX_REQUESTS}`,
        ),
      );
      return;
    }
    for (const request of batch.requests) this.queue.push(request);
    this.pump();
  }

  /** Starts queued requests up to the in-flight limit, then pauses or resumes reading. */
  private pump(): void {
    while (
      !this.finished &&
      this.inFlight < IO_SERVER_MAX_IN_FLIGHT_REQUESTS &&
      this.queueHead < this.queue.length
    ) {
      const request = this.queue[this.queueHead++] as ProtoIoRequest;
      this.run(request);
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
    const shouldPause =
      !this.finished &&
      (this.inFlight >= IO_SERVER_MAX_IN_FLIGHT_REQUESTS ||
        this.queue.length > 0 ||
        this.sendBlocked);
    if (shouldPause && !this.paused) {
      this.paused = true;
      this.counters.ioStreamPauses++;
      this.call.pause();
    } else if (!shouldPause && this.paused) {
      this.paused = false;
      this.call.resume();
    }
  }

  private run(request: ProtoIoRequest): void {
    const io = this.io as VolumeIo;
    this.inFlight++;
    let answer: Promise<Buffer | undefined>;
    try {
      answer = perform(io, ioRequestFromProto(request));
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (data) =>
        this.complete({ id: request.id, data: data ?? EMPTY, errorCode: '', errorMessage: '' }),
      (err: unknown) => {
        const error = asShaleError(err);
        this.counters.ioErrorReplies++;
        this.complete({
          id: request.id,
          data: EMPTY,
          errorCode: error.code,
          errorMessage: error.message,
        });
        crashOnAssertion(err);
      },
    );
  }

  private complete(reply: ProtoIoReply): void {
    this.inFlight--;
    if (!this.finished) {
      this.replies.push(reply);
      this.replyBytes += reply.data.length;
      if (this.replies.length >= IO_BATCH_MAX_REQUESTS || this.replyBytes >= IO_BATCH_MAX_BYTES)
        this.sendReplies();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => {
          this.flushScheduled = false;
          this.sendReplies();
          this.maybeEnd();
        });
      }
    }
    this.pump();
    this.maybeEnd();
  }

  private sendReplies(): void {
    if (this.finished || this.replies.length === 0) return;
    const replies = this.replies;
    this.replies = [];
    this.replyBytes = 0;
    this.counters.ioReplyBatchesSent++;
    this.counters.ioRepliesSent += replies.length;
    // Durability: each reply acknowledges what its VolumeIo call resolved with (see VolumeIo).
    const more = this.call.write({ replies });
    if (!more && !this.sendBlocked) {
      // The client does not read: stop reading it too until grpc's buffer drains.
      this.sendBlocked = true;
      this.call.once('drain', () => {
        this.sendBlocked = false;
        this.pump();
      });
      this.pump();
    }
  }

  /** After the client's half-close: end with OK once every request has its reply. */
  private maybeEnd(): void {
    if (this.finished || !this.clientEnded || this.inFlight > 0 || this.queue.length > 0) return;
    this.sendReplies();
    this.finished = true;
    this.call.end();
  }

  private fail(err: unknown): void {
    if (this.finished) return;
    this.sendReplies();
    this.finished = true;
    this.counters.ioStreamsFailed++;
    this.call.emit('error', toGrpcError(err));
    crashOnAssertion(err);
  }
}

/** One request on a vDisk: a read's bytes, or undefined. */
function perform(io: VolumeIo, request: IoRequest): Promise<Buffer | undefined> {
  switch (request.op) {
    case 'read':
      return io.read(request.offsetBytes, request.lengthBytes);
    case 'write':
      return io
        .write(request.offsetBytes, request.data, { fua: request.fua })
        .then(() => undefined);
    case 'flush':
      return io.flush().then(() => undefined);
    case 'trim':
      return io
        .trim(request.offsetBytes, request.lengthBytes, { fua: request.fua })
        .then(() => undefined);
    case 'writeZeroes':
      return io
        .writeZeroes(request.offsetBytes, request.lengthBytes, { fua: request.fua })
        .then(() => undefined);
    case 'blockStatus':
      return io.blockStatus(request.offsetBytes, request.lengthBytes).then(encodeExtents);
  }
}

/**
 * A client of one volumedriver, with a deadline on every unary call. Nothing is retried.
 * Errors are ShaleErrors with the server's code (VD_NOT_FOUND, ...), or VD_UNAVAILABLE,
 * VD_DEADLINE_EXCEEDED, VD_RPC_FAILED when the call itself failed.
 */
export class VolumeClient {
  private readonly client: grpc.Client;

  constructor(
    readonly address: string,
    private readonly deadlineMs = VOLUME_CALL_DEADLINE_MS,
  ) {
    this.client = new VolumeServiceClient(
      address,
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
  }

  async createVpool(input: CreateVpoolInput): Promise<VpoolInfo> {
    return vpoolFromProto(
      await this.call<VpoolInfo>('createVpool', {
        name: input.name,
        backendId: input.backendId,
        presetName: input.presetName ?? '',
        clusterSizeBytes: input.clusterSizeBytes ?? 0,
        scoSizeBytes: input.scoSizeBytes ?? 0,
        writeBufferBytes: input.writeBufferBytes ?? 0,
      }),
    );
  }
  async listVpools(): Promise<VpoolInfo[]> {
    return (await this.call<{ vpools: VpoolInfo[] }>('listVpools', {})).vpools.map(vpoolFromProto);
  }
  async createVdisk(input: CreateVdiskInput): Promise<VdiskInfo> {
    return vdiskFromProto(
      await this.call<ProtoVdiskInfo>('createVdisk', {
        name: input.name,
        vpoolName: input.vpoolName,
        sizeBytes: input.sizeBytes,
      }),
    );
  }
  async resizeVdisk(
    name: string,
    sizeBytes: number,
    options: { force?: boolean } = {},
  ): Promise<VdiskInfo> {
    return vdiskFromProto(
      await this.call<ProtoVdiskInfo>('resizeVdisk', {
        name,
        sizeBytes,
        force: options.force ?? false,
      }),
    );
  }
  async deleteVdisk(name: string): Promise<void> {
    await this.call('deleteVdisk', { name });
  }
  async listVdisks(): Promise<VdiskInfo[]> {
    return (await this.call<{ vdisks: ProtoVdiskInfo[] }>('listVdisks', {})).vdisks.map(
      vdiskFromProto,
    );
  }
  async vdiskInfo(name: string): Promise<VdiskInfo> {
    return vdiskFromProto(await this.call<ProtoVdiskInfo>('vdiskInfo', { name }));
  }
  async createSnapshot(vdiskName: string, snapshotName: string): Promise<SnapshotInfo> {
    return snapshotFromProto(
      await this.call<SnapshotInfo>('createSnapshot', { vdiskName, snapshotName }),
    );
  }
  async createGroupSnapshot(
    vdiskNames: readonly string[],
    snapshotName: string,
  ): Promise<SnapshotInfo[]> {
    const reply = await this.call<{ snapshots: SnapshotInfo[] }>('createGroupSnapshot', {
      vdiskNames: [...vdiskNames],
      snapshotName,
    });
    return reply.snapshots.map(snapshotFromProto);
  }
  async listSnapshots(vdiskName: string): Promise<SnapshotInfo[]> {
    const reply = await this.call<{ snapshots: SnapshotInfo[] }>('listSnapshots', {
      name: vdiskName,
    });
    return reply.snapshots.map(snapshotFromProto);
  }
  async deleteSnapshot(vdiskName: string, snapshotName: string): Promise<void> {
    await this.call('deleteSnapshot', { vdiskName, snapshotName });
  }
  async cloneVdisk(input: CloneVdiskInput): Promise<VdiskInfo> {
    return vdiskFromProto(
      await this.call<ProtoVdiskInfo>('cloneVdisk', {
        name: input.name,
        parentName: input.parentName,
        snapshotName: input.snapshotName,
      }),
    );
  }
  async rollback(vdiskName: string, snapshotName: string): Promise<void> {
    await this.call('rollback', { vdiskName, snapshotName });
  }
  /** Durability: resolved = everything written before the call is in the backend. */
  async syncToBackend(vdiskName: string): Promise<void> {
    await this.call('syncToBackend', { name: vdiskName });
  }
  async scrub(vdiskName: string, options: ScrubOptions = {}): Promise<ScrubReport> {
    return scrubReportCopy(
      await this.call<ScrubReport>('scrub', {
        vdiskName,
        liveFractionThreshold: options.liveFractionThreshold ?? 0,
      }),
    );
  }
  async health(): Promise<VolumeHealth> {
    const reply = await this.call<ProtoHealthReply>('health', {});
    return {
      ok: reply.ok,
      nodeId: reply.nodeId,
      vdisksOpen: reply.vdisksOpen,
      vdisksFailed: reply.vdisksFailed,
      ...(reply.writeBuffer === null ? {} : { writeBuffer: { ...reply.writeBuffer } }),
    };
  }

  async listStorageRouters(): Promise<StorageRouterInfo[]> {
    const reply = await this.call<{ routers: StorageRouterInfo[] }>('listStorageRouters', {});
    return reply.routers.map(routerCopy);
  }
  async locateVdisk(name: string): Promise<VdiskLocation> {
    return locationCopy(await this.call<VdiskLocation>('locateVdisk', { name }));
  }

  /** The data path of an open vDisk over one Io stream (see VolumeIoStream). */
  openIo(vdiskName: string): VolumeIoStream {
    const open = (this.client as unknown as Record<string, unknown>).io as (
      options: grpc.CallOptions,
    ) => grpc.ClientDuplexStream<ProtoIoBatch, ProtoIoReplyBatch>;
    return new VolumeIoStream(
      vdiskName,
      `volumedriver ${this.address}`,
      open.call(this.client, {}),
    );
  }

  close(): void {
    this.client.close();
  }

  private call<Res>(method: string, request: unknown): Promise<Res> {
    type UnaryMethod = (
      request: unknown,
      options: grpc.CallOptions,
      callback: (err: grpc.ServiceError | null, response?: Res) => void,
    ) => void;
    const fn = (this.client as unknown as Record<string, UnaryMethod | undefined>)[method];
    if (fn === undefined) throw new Error(`unknown volumedriver method ${method}`);
    return new Promise<Res>((resolve, reject) => {
      fn.call(this.client, request, { deadline: Date.now() + this.deadlineMs }, (err, response) => {
        if (err) reject(fromGrpcError(err, `volumedriver ${this.address}`));
        else if (response === undefined) reject(new Error(`${method}: empty answer`));
        else resolve(response);
      });
    });
  }
}

interface PendingRequest {
  resolve(data: Buffer): void;
  reject(err: ShaleError): void;
}

/**
 * The client side of one Io stream: the VolumeIo calls of one vDisk, as promises.
 *
 * Requests issued in one event-loop turn go out as one IoBatch (a new batch starts past
 * IO_BATCH_MAX_BYTES of payload or IO_BATCH_MAX_REQUESTS requests). At most
 * IO_CLIENT_MAX_IN_FLIGHT_REQUESTS are unanswered; later calls wait for a slot, in order.
 * A reply with an error code rejects with a ShaleError of that code. When the stream ends
 * or fails, every unanswered and every waiting call rejects: with the stream's status code
 * (VD_NOT_FOUND when the vDisk is not open on the server, VD_UNAVAILABLE when the server
 * went away) or VD_CLOSED after cancel() or an early end.
 */
export class VolumeIoStream {
  private readonly pending = new Map<number, PendingRequest>();
  private nextId = 1;
  /** Slots taken: unanswered requests, plus slots handed to a waiter that has not sent yet. */
  private slotsTaken = 0;
  private readonly slotWaiters: (() => void)[] = [];
  /** close() calls waiting for every request to be answered. */
  private readonly drainWaiters: (() => void)[] = [];
  private outgoing: ProtoIoRequest[] = [];
  private outgoingBytes = 0;
  private flushScheduled = false;
  private nameSent = false;
  private failure: ShaleError | undefined;
  private readonly ended: Promise<void>;
  /** IoBatch messages written so far (for tests and benchmarks). */
  batchesSent = 0;

  constructor(
    readonly name: string,
    private readonly what: string,
    private readonly call: grpc.ClientDuplexStream<ProtoIoBatch, ProtoIoReplyBatch>,
  ) {
    call.on('data', (batch: ProtoIoReplyBatch) => this.onReplies(batch));
    this.ended = new Promise<void>((resolve) => {
      call.on('error', (err: grpc.ServiceError) => {
        this.failAll(
          err.code === grpc.status.CANCELLED && this.failure !== undefined
            ? this.failure
            : fromGrpcError(err, `${what} Io stream of ${name}`),
        );
        resolve();
      });
      call.on('status', () => resolve());
      call.on('end', () => {
        this.failAll(vdError(VdErrorCode.Closed, `${what}: the Io stream of ${name} ended`));
        resolve();
      });
    });
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.submit({ op: 'read', offsetBytes, lengthBytes });
  }
  /** Durability: as VolumeIo.write (in the server's write buffer; with fua, on stable storage). */
  async write(offsetBytes: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    await this.submit({ op: 'write', offsetBytes, data, fua: options.fua ?? false });
  }
  /** Durability: every write acknowledged before this call is on stable storage. */
  async flush(): Promise<void> {
    await this.submit({ op: 'flush' });
  }
  async trim(
    offsetBytes: number,
    lengthBytes: number,
    options: { fua?: boolean } = {},
  ): Promise<void> {
    await this.submit({ op: 'trim', offsetBytes, lengthBytes, fua: options.fua ?? false });
  }
  async writeZeroes(
    offsetBytes: number,
    lengthBytes: number,
    options: { fua?: boolean } = {},
  ): Promise<void> {
    await this.submit({ op: 'writeZeroes', offsetBytes, lengthBytes, fua: options.fua ?? false });
  }
  /** Allocation of a range, as VolumeIo.blockStatus. */
  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]> {
    const data = await this.submit({ op: 'blockStatus', offsetBytes, lengthBytes });
    return decodeExtents(data, `${this.what}: block status of ${this.name}`);
  }

  /**
   * Set once the stream carries no more requests (it failed or ended, or was closed or
   * cancelled): a rejection while this is set came from the stream, not from the vDisk.
   */
  get failed(): ShaleError | undefined {
    return this.failure;
  }

  /** Requests not answered yet (sent, queued, or waiting for a slot). */
  get pendingRequests(): number {
    return this.slotsTaken + this.slotWaiters.length;
  }

  /** Waits for every request issued so far, then half-closes and waits for the server's end. */
  async close(): Promise<void> {
    if (this.failure === undefined && this.pendingRequests > 0) {
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    }
    if (this.failure === undefined) {
      this.failure = vdError(
        VdErrorCode.Closed,
        `${this.what}: the Io stream of ${this.name} is closed`,
      );
      this.call.end();
    }
    await this.ended;
  }

  /** Cuts the stream: every unanswered request rejects with VD_CLOSED. */
  cancel(): void {
    if (this.failure !== undefined) return;
    this.failAll(
      vdError(VdErrorCode.Closed, `${this.what}: the Io stream of ${this.name} was cancelled`),
    );
    this.call.cancel();
  }

  private async submit(request: IoRequest): Promise<Buffer> {
    if (this.failure !== undefined) throw this.failure;
    if (this.slotsTaken >= IO_CLIENT_MAX_IN_FLIGHT_REQUESTS || this.slotWaiters.length > 0) {
      // The slot is handed over by the reply that frees it (slotsTaken stays the same).
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      if (this.failure !== undefined) throw this.failure;
    } else {
      this.slotsTaken++;
    }
    return new Promise<Buffer>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.enqueue(ioRequestToProto(id, request));
    });
  }

  private enqueue(message: ProtoIoRequest): void {
    if (
      this.outgoing.length > 0 &&
      (this.outgoing.length >= IO_BATCH_MAX_REQUESTS ||
        this.outgoingBytes + message.data.length > IO_BATCH_MAX_BYTES)
    ) {
      this.sendBatch();
    }
    this.outgoing.push(message);
    this.outgoingBytes += message.data.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.sendBatch();
      });
    }
  }

  private sendBatch(): void {
    if (this.outgoing.length === 0 || this.failure !== undefined) return;
    const requests = this.outgoing;
    this.outgoing = [];
    this.outgoingBytes = 0;
    const vdiskName = this.nameSent ? '' : this.name;
    this.nameSent = true;
    this.batchesSent++;
    // The in-flight limit bounds what grpc buffers, so write()'s backpressure flag is not needed.
    this.call.write({ vdiskName, requests });
  }

  private onReplies(batch: ProtoIoReplyBatch): void {
    for (const reply of batch.replies) {
      const request = this.pending.get(reply.id);
      if (request === undefined) {
        this.failAll(
          vdError(
            VdErrorCode.InvalidArgument,
            `${this.what}: a reply to unknown request ${reply.id}`,
          ),
        );
        this.call.cancel();
        return;
      }
      this.pending.delete(reply.id);
      this.releaseSlot();
      if (reply.errorCode === '') request.resolve(reply.data);
      else request.reject(new ShaleError(reply.errorCode, reply.errorMessage));
    }
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next === undefined) this.slotsTaken--;
    else next();
    if (this.pendingRequests === 0) this.wakeDrainWaiters();
  }

  private wakeDrainWaiters(): void {
    for (const wake of this.drainWaiters.splice(0)) wake();
  }

  private failAll(error: ShaleError): void {
    if (this.failure === undefined || this.pending.size > 0 || this.slotWaiters.length > 0) {
      this.failure ??= error;
      const pending = [...this.pending.values()];
      this.pending.clear();
      this.outgoing = [];
      this.outgoingBytes = 0;
      for (const request of pending) request.reject(error);
      const waiters = this.slotWaiters.splice(0);
      for (const wake of waiters) wake();
      this.slotsTaken = 0;
    }
    this.wakeDrainWaiters();
  }
}
