import { AsdClient, AsdDataClient, AsdErrorCode, type ItemResult, type Slice } from '@shale/asd';
import { isShaleError } from '@shale/common';
import { OSD_DATA_DISCOVER_DEADLINE_MS, OSD_DATA_REDISCOVER_MS } from './constants.js';

/**
 * An OSD: something that stores fragments. Today an ASD; the contract is shaped so that a
 * whole backend can later stand in for one (a global backend erasure-codes over local
 * backends) without its callers changing: keys are opaque bytes, every call is a batch,
 * and every item answers for itself.
 */
export interface Osd {
  readonly osdId: string;
  readonly nodeId: string;
  /** Stores all fragments or none; durable when it resolves. */
  putFragments(items: readonly FragmentWrite[], options?: OsdCallOptions): Promise<void>;
  getFragments(
    keys: readonly Uint8Array[],
    options?: OsdCallOptions,
  ): Promise<ItemResult<Buffer>[]>;
  getFragmentRanges(
    slices: readonly Slice[],
    options?: OsdCallOptions,
  ): Promise<ItemResult<Buffer>[]>;
  deleteFragments(keys: readonly Uint8Array[], options?: OsdCallOptions): Promise<void>;
  listFragments(
    prefix: Uint8Array,
    startAfter: Uint8Array | undefined,
    limit: number,
    options?: OsdCallOptions,
  ): Promise<{ keys: Buffer[]; more: boolean }>;
  capacity(options?: OsdCallOptions): Promise<OsdCapacity>;
  close(): void;
}

export interface FragmentWrite {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** CRC32C of the value: the OSD checks it before storing (damage in transit). */
  readonly crc32c: number;
}

export interface OsdCallOptions {
  readonly deadlineMs?: number;
}

export interface OsdCapacity {
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly freeBytes: number;
}

/** Where an OSD lives, as the backend registry records it. */
export interface OsdAddress {
  readonly osdId: string;
  readonly nodeId: string;
  /** host:port of the ASD's gRPC service. */
  readonly address: string;
}

/**
 * An ASD as an OSD. The bulk calls (put, get, ranged get) go over the ASD's data server
 * (Shale's frame protocol: no protobuf, no HTTP/2, fragments sent as one frame) when its
 * gRPC stats name a `dataPort`; everything else, and every call to an ASD that names none
 * (an older version), goes over gRPC. The data port is asked once, and again after the
 * data connection could not be made (a restarted ASD may listen on another port); while
 * it is unknown the calls use gRPC.
 */
export class AsdOsd implements Osd {
  readonly osdId: string;
  readonly nodeId: string;
  private readonly client: AsdClient;
  private readonly host: string;
  private readonly deadlineMs: number;
  /** The data client, undefined when the ASD has none; pending while stats are asked. */
  private data: Promise<AsdDataClient | undefined> | undefined;
  private dataAskedAtMs = 0;
  private closed = false;

  constructor(address: OsdAddress, options: { deadlineMs?: number } = {}) {
    this.osdId = address.osdId;
    this.nodeId = address.nodeId;
    this.deadlineMs = options.deadlineMs ?? 10_000;
    this.client = new AsdClient(address.address, { deadlineMs: this.deadlineMs });
    this.host = hostOf(address.address);
  }

  async putFragments(items: readonly FragmentWrite[], options: OsdCallOptions = {}): Promise<void> {
    await this.bulk(
      options,
      (data, left) => data.put(items, left),
      (left) => this.client.put(items, left),
    );
  }

  async getFragments(
    keys: readonly Uint8Array[],
    options: OsdCallOptions = {},
  ): Promise<ItemResult<Buffer>[]> {
    const results = await this.bulk(
      options,
      (data, left) => data.get(keys, left),
      (left) => this.client.get(keys, left),
    );
    return results.map((result) => (result.ok ? { ok: true, value: result.value.value } : result));
  }

  getFragmentRanges(
    slices: readonly Slice[],
    options: OsdCallOptions = {},
  ): Promise<ItemResult<Buffer>[]> {
    return this.bulk(
      options,
      (data, left) => data.getRanges(slices, left),
      (left) => this.client.getRanges(slices, left),
    );
  }

  /**
   * One bulk call: over the data client when there is one, else gRPC. A data call that
   * could not be sent (no connection: the port may have changed) forgets the port and
   * goes over gRPC instead; any other failure is the call's answer. One deadline covers
   * it all (asking for the port, the data call, the gRPC call).
   */
  private async bulk<T>(
    options: OsdCallOptions,
    overData: (data: AsdDataClient, left: OsdCallOptions) => Promise<T>,
    overGrpc: (left: OsdCallOptions) => Promise<T>,
  ): Promise<T> {
    const deadlineAt = Date.now() + (options.deadlineMs ?? this.deadlineMs);
    const left = (): OsdCallOptions => ({ deadlineMs: Math.max(1, deadlineAt - Date.now()) });
    const data = await this.dataClient(left().deadlineMs as number);
    if (data === undefined) return overGrpc(left());
    try {
      return await overData(data, left());
    } catch (err) {
      // Not sent: no connection (the port may have changed), or the client was closed
      // under a call waiting to retry (another call forgot it).
      const unsent =
        (isShaleError(err, AsdErrorCode.Unavailable) || isShaleError(err, AsdErrorCode.Closed)) &&
        err.details.sent === 'no';
      if (!unsent) throw err;
      this.forgetData(data);
      return overGrpc(left());
    }
  }

  private dataClient(deadlineMs: number): Promise<AsdDataClient | undefined> {
    const now = Date.now();
    if (
      this.data === undefined &&
      !this.closed &&
      now - this.dataAskedAtMs >= OSD_DATA_REDISCOVER_MS
    ) {
      this.dataAskedAtMs = now;
      const asked = this.client
        .stats({ deadlineMs: Math.min(deadlineMs, OSD_DATA_DISCOVER_DEADLINE_MS) })
        .then(
          (stats) => {
            if (stats.dataPort > 0 && !this.closed)
              return new AsdDataClient(this.host, stats.dataPort, { deadlineMs: this.deadlineMs });
            // No data server (an older ASD): gRPC; ask again later, it may be upgraded.
            if (this.data === asked) this.data = undefined;
            return undefined;
          },
          () => {
            // Not reachable now: gRPC answers this call (with its own error); ask again later.
            if (this.data === asked) this.data = undefined;
            return undefined;
          },
        );
      this.data = asked;
    }
    return this.data ?? Promise.resolve(undefined);
  }

  private forgetData(data: AsdDataClient): void {
    data.close();
    // Only the data client of now: a call that failed on an older one changes nothing.
    void this.data?.then((current) => {
      if (current === data) {
        this.data = undefined;
        this.dataAskedAtMs = 0;
      }
    });
  }

  async deleteFragments(keys: readonly Uint8Array[], options: OsdCallOptions = {}): Promise<void> {
    await this.client.delete(keys, options);
  }

  async listFragments(
    prefix: Uint8Array,
    startAfter: Uint8Array | undefined,
    limit: number,
    options: OsdCallOptions = {},
  ): Promise<{ keys: Buffer[]; more: boolean }> {
    const page = await this.client.list(
      startAfter === undefined ? { prefix, limit } : { prefix, startAfter, limit },
      options,
    );
    return { keys: page.entries.map((entry) => entry.key), more: page.more };
  }

  async capacity(options: OsdCallOptions = {}): Promise<OsdCapacity> {
    const stats = await this.client.stats(options);
    return {
      capacityBytes: stats.capacityBytes,
      usedBytes: stats.usedBytes,
      freeBytes: stats.freeBytes,
    };
  }

  close(): void {
    this.closed = true;
    this.client.close();
    void this.data?.then((data) => data?.close());
    this.data = undefined;
  }
}

/** The host of a gRPC address "host:port" or "[v6]:port". */
function hostOf(address: string): string {
  const cut = address.lastIndexOf(':');
  const host = cut < 0 ? address : address.slice(0, cut);
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}
