import { AsdClient, type ItemResult, type Slice } from '@shale/asd';

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

/** An ASD as an OSD. */
export class AsdOsd implements Osd {
  readonly osdId: string;
  readonly nodeId: string;
  private readonly client: AsdClient;

  constructor(address: OsdAddress, options: { deadlineMs?: number } = {}) {
    this.osdId = address.osdId;
    this.nodeId = address.nodeId;
    this.client = new AsdClient(address.address, { deadlineMs: options.deadlineMs ?? 10_000 });
  }

  async putFragments(items: readonly FragmentWrite[], options: OsdCallOptions = {}): Promise<void> {
    await this.client.put(items, options);
  }

  async getFragments(
    keys: readonly Uint8Array[],
    options: OsdCallOptions = {},
  ): Promise<ItemResult<Buffer>[]> {
    const results = await this.client.get(keys, options);
    return results.map((result) => (result.ok ? { ok: true, value: result.value.value } : result));
  }

  getFragmentRanges(
    slices: readonly Slice[],
    options: OsdCallOptions = {},
  ): Promise<ItemResult<Buffer>[]> {
    return this.client.getRanges(slices, options);
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
    this.client.close();
  }
}
