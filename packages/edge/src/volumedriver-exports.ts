/**
 * Exports backed by vDisks: each export name is a vDisk name, served by the volumedriver
 * that owns it. The edge asks any volumedriver it was given where a vDisk lives
 * (LocateVdisk: the owner's address and the fail-over routers), opens one data channel per
 * open vDisk to the owner — a connection of the data protocol to the owner's data server
 * (framed binary, @shale/volumedriver/client's VolumeDataStream), or the gRPC Io stream when
 * the owner announces no data address — and shares it between every connection to that
 * export (below, "stream" is that channel). Each
 * connection that opens the export asks where it lives again, so it is told the vDisk's size
 * of now even when the stream is older than a resize.
 *
 * When the stream fails (the volumedriver restarted, the network dropped), every request
 * that was pending on it is retried on a new stream: the owner is located again (asking
 * the last known owner, then the fail-over routers, then the configured volumedrivers),
 * a new stream is opened, and the request is sent again. Retrying is safe: a block write
 * of the same bytes to the same place is idempotent, and NBD gives no order among requests
 * in flight. A request not answered within the request timeout fails with EIO.
 */
import { errorMessage, formatBytes, isShaleError, ShaleError } from '@shale/common';
import {
  type VdiskInfo,
  type VdiskLocation,
  VolumeClient,
  VolumeDataStream,
  type VolumeIoChannel,
} from '@shale/volumedriver/client';
import type { BlockExport, ExportInfo, ExportProvider, Extent } from './block-export.js';
import {
  EDGE_CONTROL_CALL_DEADLINE_MS,
  EDGE_RECONNECT_MAX_MS,
  EDGE_RECONNECT_MIN_MS,
  EDGE_REQUEST_TIMEOUT_MS,
  EDGE_TIMEOUT_SWEEP_MS,
  EDGE_ZERO_WRITE_CHUNK_BYTES,
} from './constants.js';
import { EdgeErrorCode, edgeError } from './errors.js';

export interface VolumedriverExportsOptions {
  /** VolumeService addresses (host:port) to ask where vDisks live; at least one. */
  readonly volumedrivers: readonly string[];
  /** Serve every export read-only. */
  readonly readOnly?: boolean;
  readonly requestTimeoutMs?: number;
  readonly log?: (line: string) => void;
}

/** What the edge learnt about one vDisk's routing, for status and tests. */
export interface ExportRoute {
  readonly name: string;
  readonly ownerNodeId: string;
  readonly ownerAddress: string;
  readonly failoverRouters: readonly string[];
  readonly connections: number;
  readonly streamsOpened: number;
  readonly requestsRetried: number;
}

/** Codes that say "this volumedriver could not be reached", not "it answered no". */
const UNREACHABLE = new Set(['VD_UNAVAILABLE', 'VD_DEADLINE_EXCEEDED', 'VD_RPC_FAILED']);
/** Per-request codes that mean the vDisk went away under the stream: retry elsewhere. */
const RETRY_ON_NEW_STREAM = new Set(['VD_CLOSED', 'VD_NOT_FOUND']);
const ZEROS = Buffer.alloc(EDGE_ZERO_WRITE_CHUNK_BYTES);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class VolumedriverExports implements ExportProvider {
  private readonly clients = new Map<string, VolumeClient>();
  private readonly links = new Map<string, VdiskLink>();
  private readonly addresses: readonly string[];
  /** The configured volumedriver that answered last: asked first next time. */
  private preferred = 0;
  private closed = false;
  readonly readOnly: boolean;
  readonly requestTimeoutMs: number;
  readonly log: (line: string) => void;

  constructor(options: VolumedriverExportsOptions) {
    if (options.volumedrivers.length === 0) {
      throw edgeError(EdgeErrorCode.InvalidRequest, 'the edge needs at least one volumedriver');
    }
    this.addresses = [...options.volumedrivers];
    this.readOnly = options.readOnly ?? false;
    this.requestTimeoutMs = options.requestTimeoutMs ?? EDGE_REQUEST_TIMEOUT_MS;
    this.log = options.log ?? (() => undefined);
  }

  /** A cached client of one volumedriver. */
  client(address: string): VolumeClient {
    let client = this.clients.get(address);
    if (client === undefined) {
      client = new VolumeClient(address, EDGE_CONTROL_CALL_DEADLINE_MS);
      this.clients.set(address, client);
    }
    return client;
  }

  /**
   * Forgets a client whose channel failed: the next call makes a fresh one (grpc-js backs
   * off reconnecting a failed channel for up to minutes; a new channel tries at once).
   */
  dropClient(address: string, client: VolumeClient): void {
    if (this.clients.get(address) !== client) return;
    this.clients.delete(address);
    client.close();
  }

  /**
   * Runs a control call on the first volumedriver in `order` (default: the configured ones,
   * the last that answered first) that can be reached. An answer (even an error such as
   * VD_NOT_FOUND) ends the search; EDGE_UNAVAILABLE when none could be reached.
   */
  async ask<T>(
    what: string,
    call: (client: VolumeClient) => Promise<T>,
    order?: readonly string[],
  ): Promise<T> {
    if (this.closed) throw edgeError(EdgeErrorCode.Closed, 'the edge is stopping');
    const configured = this.addresses.map(
      (_, i) => this.addresses[(this.preferred + i) % this.addresses.length] as string,
    );
    const candidates = [...new Set([...(order ?? []), ...configured])];
    const failures: string[] = [];
    for (const address of candidates) {
      const client = this.client(address);
      try {
        const result = await call(client);
        const index = this.addresses.indexOf(address);
        if (index >= 0) this.preferred = index;
        return result;
      } catch (err) {
        if (!(err instanceof ShaleError) || !UNREACHABLE.has(err.code)) throw err;
        this.dropClient(address, client);
        failures.push(`${address}: ${err.message}`);
      }
    }
    throw edgeError(
      EdgeErrorCode.Unavailable,
      `${what}: no volumedriver could be reached (${failures.join('; ')})`,
    );
  }

  private exportInfo(vdisk: VdiskInfo): ExportInfo {
    return {
      name: vdisk.name,
      sizeBytes: vdisk.sizeBytes,
      readOnly: this.readOnly,
      description: `vDisk ${vdisk.name}: ${formatBytes(vdisk.sizeBytes)}, vPool ${vdisk.vpoolName}, owner ${vdisk.ownerNodeId}${vdisk.parent === undefined ? '' : `, clone of ${vdisk.parent.vdiskName}@${vdisk.parent.snapshotName}`}`,
    };
  }

  async list(): Promise<ExportInfo[]> {
    const vdisks = await this.ask('list vDisks', (c) => c.listVdisks());
    return vdisks.map((v) => this.exportInfo(v));
  }

  async info(name: string): Promise<ExportInfo> {
    try {
      return this.exportInfo(await this.ask(`vDisk ${name}`, (c) => c.vdiskInfo(name)));
    } catch (err) {
      throw notFoundAsEdge(err, name);
    }
  }

  async open(name: string): Promise<BlockExport> {
    if (this.closed) throw edgeError(EdgeErrorCode.Closed, 'the edge is stopping');
    let link = this.links.get(name);
    if (link === undefined) {
      link = new VdiskLink(this, name);
      this.links.set(name, link);
    }
    return link.acquire();
  }

  /** Called by a link whose last connection left. */
  forget(link: VdiskLink): void {
    if (this.links.get(link.name) === link) this.links.delete(link.name);
  }

  routes(): ExportRoute[] {
    return [...this.links.values()].map((link) => link.route());
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.links.values()].map((link) => link.shutdown()));
    this.links.clear();
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

function notFoundAsEdge(err: unknown, name: string): unknown {
  if (isShaleError(err, 'VD_NOT_FOUND')) {
    return edgeError(EdgeErrorCode.NotFound, `no vDisk named ${name}`, { cause: err });
  }
  return err;
}

interface Pending {
  readonly deadlineMs: number;
  done: boolean;
  reject(err: unknown): void;
}

/**
 * One open vDisk: its location, the Io stream to its owner, and the connections using it.
 *
 *   (no stream) --connect: locate + openIo--> streaming --stream fails--> (no stream)
 *        ^                                                                   |
 *        +-----------------retry pending requests, backoff-------------------+
 */
class VdiskLink {
  private refs = 0;
  private location: VdiskLocation | undefined;
  private stream: VolumeIoChannel | undefined;
  private streamAddress = '';
  private streamClient: VolumeClient | undefined;
  private connecting: Promise<VolumeIoChannel> | undefined;
  private readonly pending = new Set<Pending>();
  private sweep: NodeJS.Timeout | undefined;
  private streamsOpened = 0;
  private requestsRetried = 0;
  private closed = false;

  constructor(
    private readonly provider: VolumedriverExports,
    readonly name: string,
  ) {}

  async acquire(): Promise<BlockExport> {
    this.refs += 1;
    let location: VdiskLocation;
    try {
      const streamsBefore = this.streamsOpened;
      await this.connected(Date.now() + this.provider.requestTimeoutMs);
      // A new stream was opened after a fresh LocateVdisk; a shared one was located when it
      // opened, maybe long ago, and the vDisk may have been resized since: ask again, so a
      // new client sees the size of now.
      location =
        this.streamsOpened !== streamsBefore
          ? (this.location as VdiskLocation)
          : await this.relocate();
    } catch (err) {
      this.release();
      throw notFoundAsEdge(err, this.name);
    }
    const info: ExportInfo = {
      name: this.name,
      sizeBytes: location.sizeBytes,
      readOnly: this.provider.readOnly,
      description: `vDisk ${this.name} on ${location.ownerNodeId}`,
    };
    let released = false;
    return {
      info,
      read: (offsetBytes, lengthBytes) => this.run((s) => s.read(offsetBytes, lengthBytes)),
      write: (offsetBytes, data, fua) => this.run((s) => s.write(offsetBytes, data, { fua })),
      flush: () => this.run((s) => s.flush()),
      trim: (offsetBytes, lengthBytes, fua) =>
        this.run((s) => s.trim(offsetBytes, lengthBytes, { fua })),
      writeZeroes: (offsetBytes, lengthBytes, { fua, noHole }) =>
        noHole
          ? this.writeRealZeros(offsetBytes, lengthBytes, fua)
          : this.run((s) => s.writeZeroes(offsetBytes, lengthBytes, { fua })),
      blockStatus: (offsetBytes, lengthBytes): Promise<Extent[]> =>
        this.run((s) => s.blockStatus(offsetBytes, lengthBytes)),
      release: () => {
        if (released) return;
        released = true;
        this.release();
      },
    };
  }

  /**
   * The vDisk's location (size, owner) of now, for a connection opening it while a stream is
   * shared. The stream is left as it is (it follows the owner when it fails). When no
   * volumedriver answers, the size last known is used: the stream works, and the owner
   * still checks every request's range.
   */
  private async relocate(): Promise<VdiskLocation> {
    try {
      this.location = await this.provider.ask(
        `locate vDisk ${this.name}`,
        (c) => c.locateVdisk(this.name),
        this.knownAddresses(),
      );
    } catch (err) {
      if (!isShaleError(err, EdgeErrorCode.Unavailable)) throw err;
      this.provider.log(`vDisk ${this.name}: ${errorMessage(err)}; serving the size last known`);
    }
    return this.location as VdiskLocation;
  }

  /** The last known owner, then its fail-over routers: asked first where the vDisk is. */
  private knownAddresses(): string[] {
    return [
      ...(this.location?.ownerAddress ? [this.location.ownerAddress] : []),
      ...(this.location?.failoverRouters ?? []).map((r) => r.address),
    ];
  }

  route(): ExportRoute {
    return {
      name: this.name,
      ownerNodeId: this.location?.ownerNodeId ?? '',
      ownerAddress: this.streamAddress,
      failoverRouters: (this.location?.failoverRouters ?? []).map(
        (r) => `${r.nodeId}@${r.address}`,
      ),
      connections: this.refs,
      streamsOpened: this.streamsOpened,
      requestsRetried: this.requestsRetried,
    };
  }

  private release(): void {
    this.refs -= 1;
    if (this.refs > 0) return;
    this.provider.forget(this);
    void this.shutdown();
  }

  /** Closes the stream once its requests are answered; pending retries fail with EDGE_CLOSED. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweep !== undefined) clearInterval(this.sweep);
    const stream = this.stream;
    this.stream = undefined;
    await stream?.close().catch(() => undefined);
    for (const entry of this.pending) {
      entry.done = true;
      entry.reject(edgeError(EdgeErrorCode.Closed, `vDisk ${this.name}: the export was closed`));
    }
    this.pending.clear();
  }

  /** NO_HOLE: allocate, by writing real zeros in chunks (all in flight at once). */
  private async writeRealZeros(
    offsetBytes: number,
    lengthBytes: number,
    fua: boolean,
  ): Promise<void> {
    const writes: Promise<void>[] = [];
    for (let at = offsetBytes; at < offsetBytes + lengthBytes; at += EDGE_ZERO_WRITE_CHUNK_BYTES) {
      const count = Math.min(EDGE_ZERO_WRITE_CHUNK_BYTES, offsetBytes + lengthBytes - at);
      writes.push(this.run((s) => s.write(at, ZEROS.subarray(0, count), { fua })));
    }
    await Promise.all(writes);
  }

  /** The current stream, or a new one (one connect at a time; callers share it). */
  private connected(deadlineMs: number): Promise<VolumeIoChannel> {
    const current = this.stream;
    if (current !== undefined && current.failed === undefined) return Promise.resolve(current);
    if (current !== undefined) {
      this.stream = undefined;
      this.provider.log(
        `vDisk ${this.name}: stream to ${this.streamAddress} lost (${current.failed?.message}); reconnecting`,
      );
      if (isShaleError(current.failed, 'VD_UNAVAILABLE') && this.streamClient !== undefined) {
        this.provider.dropClient(this.streamAddress, this.streamClient);
      }
    }
    if (this.connecting === undefined) {
      this.connecting = this.connect(deadlineMs).finally(() => {
        this.connecting = undefined;
      });
    }
    return this.connecting;
  }

  private async connect(deadlineMs: number): Promise<VolumeIoChannel> {
    let backoffMs = EDGE_RECONNECT_MIN_MS;
    for (;;) {
      if (this.closed) throw edgeError(EdgeErrorCode.Closed, `vDisk ${this.name}: closed`);
      try {
        // Ask the last known owner first, then its fail-over routers, then the configured.
        const location = await this.provider.ask(
          `locate vDisk ${this.name}`,
          (c) => c.locateVdisk(this.name),
          this.knownAddresses(),
        );
        if (location.ownerAddress === '') {
          throw edgeError(
            EdgeErrorCode.Unavailable,
            `vDisk ${this.name}: its owner ${location.ownerNodeId} has not registered an address`,
          );
        }
        const moved =
          this.location !== undefined && this.location.ownerAddress !== location.ownerAddress;
        this.location = location;
        const client = this.provider.client(location.ownerAddress);
        // The owner's data server when it has one (the data protocol: framed binary, no
        // gRPC per request); the gRPC Io stream otherwise.
        const stream: VolumeIoChannel =
          location.ownerDataAddress !== ''
            ? await VolumeDataStream.open(location.ownerDataAddress, this.name, {
                // Behind the edge's own deadline (expire(): EIO first), a request the owner
                // has held this long closes the stream: its other requests are retried on
                // a new one, as after any lost stream.
                requestTimeoutMs: this.provider.requestTimeoutMs,
              })
            : client.openIo(this.name);
        this.stream = stream;
        this.streamClient = client;
        this.streamAddress = location.ownerAddress;
        this.streamsOpened += 1;
        if (this.streamsOpened > 1 || moved) {
          this.provider.log(
            `vDisk ${this.name}: stream ${this.streamsOpened} to ${location.ownerNodeId} at ${location.ownerAddress}`,
          );
        }
        if (this.sweep === undefined) {
          this.sweep = setInterval(() => this.expire(), EDGE_TIMEOUT_SWEEP_MS);
          this.sweep.unref();
        }
        return stream;
      } catch (err) {
        // No such vDisk is an answer; anything else is worth another try until the deadline.
        if (isShaleError(err, 'VD_NOT_FOUND') || isShaleError(err, EdgeErrorCode.Closed)) throw err;
        if (Date.now() + backoffMs > deadlineMs) throw err;
        await sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, EDGE_RECONNECT_MAX_MS);
      }
    }
  }

  /** Runs one request, on a new stream as often as needed, until the request deadline. */
  private run<T>(op: (stream: VolumeIoChannel) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Pending = {
        deadlineMs: Date.now() + this.provider.requestTimeoutMs,
        done: false,
        reject,
      };
      this.pending.add(entry);
      this.attempt(op, entry).then(
        (value) => {
          if (entry.done) return;
          entry.done = true;
          this.pending.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          if (entry.done) return;
          entry.done = true;
          this.pending.delete(entry);
          reject(err);
        },
      );
    });
  }

  private async attempt<T>(
    op: (stream: VolumeIoChannel) => Promise<T>,
    entry: Pending,
  ): Promise<T> {
    let backoffMs = EDGE_RECONNECT_MIN_MS;
    for (let tries = 0; ; tries += 1) {
      if (tries > 0) this.requestsRetried += 1;
      const stream = await this.connected(entry.deadlineMs);
      try {
        return await op(stream);
      } catch (err) {
        const fromStream = stream.failed !== undefined;
        const retry =
          fromStream || (err instanceof ShaleError && RETRY_ON_NEW_STREAM.has(err.code));
        if (!retry || entry.done || this.closed) throw err;
        if (!fromStream) stream.cancel();
        if (!fromStream) {
          this.provider.log(`vDisk ${this.name}: ${errorMessage(err)}; retrying on a new stream`);
        }
        if (Date.now() + backoffMs > entry.deadlineMs) throw err;
        if (tries > 0) {
          await sleep(backoffMs);
          backoffMs = Math.min(backoffMs * 2, EDGE_RECONNECT_MAX_MS);
        }
      }
    }
  }

  /** Fails requests past their deadline with EDGE_TIMEOUT (their late answers are dropped). */
  private expire(): void {
    const now = Date.now();
    for (const entry of this.pending) {
      if (entry.done || now < entry.deadlineMs) continue;
      entry.done = true;
      this.pending.delete(entry);
      entry.reject(
        edgeError(
          EdgeErrorCode.Timeout,
          `vDisk ${this.name}: no answer within ${this.provider.requestTimeoutMs} ms`,
        ),
      );
    }
  }
}
