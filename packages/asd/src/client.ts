import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { crc32c, isShaleError, type ShaleError } from '@shale/common';
import {
  CLIENT_DEFAULT_DEADLINE_MS,
  CLIENT_MAX_ATTEMPTS,
  CLIENT_RETRY_BACKOFF_MS,
  MAX_GRPC_MESSAGE_BYTES,
} from './constants.js';
import { AsdErrorCode, asdError, describeKey } from './errors.js';
import { fromGrpcError } from './grpc-errors.js';
import type { AsdStats, GetValue, ItemResult, ListEntry } from './object-store.js';
import {
  AsdServiceClient,
  type WireDeleteResponse,
  type WireGetRangesResponse,
  type WireGetResponse,
  type WireHealthResponse,
  type WireItemError,
  type WireListResponse,
  type WirePutResponse,
  type WireStatsResponse,
} from './proto-definition.js';
import type { PutItem, Slice } from './request-validation.js';

export interface AsdClientOptions {
  /** Deadline of each call, retries included. Default 10 s. */
  readonly deadlineMs?: number;
  /** Tries of an idempotent call (get, ranges, list, stats, health) on a transport failure. */
  readonly maxAttempts?: number;
}

export interface CallOptions {
  readonly deadlineMs?: number;
}

/**
 * A client of one ASD. One gRPC channel per client; grpc-js shares the underlying
 * connection between clients of the same address, so making many clients is cheap.
 *
 * Retries: reads (get, get-ranges, list, stats, health) are retried on UNAVAILABLE
 * within the deadline. Put and delete are not retried on transport failures (a put that
 * timed out may have committed; a retry could overwrite a newer value). Any call is
 * retried on ASD_BUSY, which the ASD answers before doing anything.
 */
export class AsdClient {
  readonly address: string;
  private readonly grpcClient: grpc.Client;
  private readonly deadlineMs: number;
  private readonly maxAttempts: number;

  constructor(address: string, options: AsdClientOptions = {}) {
    this.address = address;
    this.deadlineMs = options.deadlineMs ?? CLIENT_DEFAULT_DEADLINE_MS;
    this.maxAttempts = options.maxAttempts ?? CLIENT_MAX_ATTEMPTS;
    this.grpcClient = new AsdServiceClient(address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_GRPC_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_GRPC_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.enable_channelz': 0,
    });
  }

  /** Stores all items or none; resolves when they are durable. Returns each value's CRC32C. */
  async put(items: readonly PutItem[], options: CallOptions = {}): Promise<number[]> {
    const request = {
      items: items.map((item) => ({
        key: item.key,
        value: item.value,
        crc32c: item.crc32c ?? crc32c(item.value),
      })),
    };
    const response = await this.call<WirePutResponse>('put', request, false, options);
    return response.crc32c;
  }

  async get(
    keys: readonly Uint8Array[],
    options: CallOptions = {},
  ): Promise<ItemResult<GetValue>[]> {
    const response = await this.call<WireGetResponse>('get', { keys }, true, options);
    return response.results.map((result, index) => {
      if (result.error) return { ok: false, error: itemError(result.error) };
      // End to end: the ASD verified its disk; we verify the wire.
      if (crc32c(result.value) !== result.crc32c) {
        return {
          ok: false,
          error: asdError(
            AsdErrorCode.Corrupt,
            `value of ${describeKey(keys[index] ?? Buffer.alloc(0))} from ${this.address} fails its CRC32C in transit`,
          ),
        };
      }
      return { ok: true, value: { value: result.value, crc32c: result.crc32c } };
    });
  }

  /** One value, or the item's error thrown. */
  async getOne(key: Uint8Array, options: CallOptions = {}): Promise<Buffer> {
    const [result] = await this.get([key], options);
    if (result === undefined) throw asdError(AsdErrorCode.RpcFailed, 'get: empty answer');
    if (!result.ok) throw result.error;
    return result.value.value;
  }

  async getRanges(
    slices: readonly Slice[],
    options: CallOptions = {},
  ): Promise<ItemResult<Buffer>[]> {
    const response = await this.call<WireGetRangesResponse>('getRanges', { slices }, true, options);
    return response.results.map((result) =>
      result.error
        ? { ok: false, error: itemError(result.error) }
        : { ok: true, value: result.data },
    );
  }

  /** Deletes all keys in one atomic commit; returns whether each existed. */
  async delete(keys: readonly Uint8Array[], options: CallOptions = {}): Promise<boolean[]> {
    const response = await this.call<WireDeleteResponse>('delete', { keys }, false, options);
    return response.existed;
  }

  async list(
    query: { prefix?: Uint8Array; startAfter?: Uint8Array; limit?: number } = {},
    options: CallOptions = {},
  ): Promise<{ entries: ListEntry[]; more: boolean }> {
    return this.call<WireListResponse>(
      'list',
      {
        prefix: query.prefix ?? Buffer.alloc(0),
        startAfter: query.startAfter ?? Buffer.alloc(0),
        limit: query.limit ?? 0,
      },
      true,
      options,
    );
  }

  /** Every entry under a prefix, page by page. */
  async *listAll(prefix: Uint8Array = Buffer.alloc(0), pageSize = 1000): AsyncGenerator<ListEntry> {
    let startAfter: Uint8Array | undefined;
    for (;;) {
      const page = await this.list(
        startAfter === undefined
          ? { prefix, limit: pageSize }
          : { prefix, startAfter, limit: pageSize },
      );
      yield* page.entries;
      const last = page.entries.at(-1);
      if (!page.more || last === undefined) return;
      startAfter = last.key;
    }
  }

  /** `dataPort`: the ASD's data protocol port on the same host (0: none, use gRPC). */
  async stats(
    options: CallOptions = {},
  ): Promise<AsdStats & { version: string; dataPort: number }> {
    return this.call<WireStatsResponse>('stats', {}, true, options);
  }

  async health(options: CallOptions = {}): Promise<WireHealthResponse> {
    return this.call<WireHealthResponse>('health', {}, true, options);
  }

  close(): void {
    this.grpcClient.close();
  }

  private async call<Res>(
    method: string,
    request: unknown,
    idempotent: boolean,
    options: CallOptions,
  ): Promise<Res> {
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlineMs);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.callOnce<Res>(method, request, deadline);
      } catch (err) {
        const retryable =
          isShaleError(err, AsdErrorCode.Busy) ||
          (idempotent && isShaleError(err, AsdErrorCode.Unavailable));
        const backoffMs = CLIENT_RETRY_BACKOFF_MS * 2 ** (attempt - 1);
        if (!retryable || attempt >= this.maxAttempts || Date.now() + backoffMs >= deadline)
          throw err;
        await sleep(backoffMs);
      }
    }
  }

  private callOnce<Res>(method: string, request: unknown, deadline: number): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      type UnaryMethod = (
        request: unknown,
        options: grpc.CallOptions,
        callback: (err: grpc.ServiceError | null, response?: Res) => void,
      ) => void;
      const fn = (this.grpcClient as unknown as Record<string, UnaryMethod | undefined>)[method];
      if (fn === undefined) throw new Error(`unknown ASD method ${method}`);
      fn.call(this.grpcClient, request, { deadline }, (err, response) => {
        if (err) reject(fromGrpcError(err, this.address));
        else if (response === undefined)
          reject(asdError(AsdErrorCode.RpcFailed, `${method}: empty answer`));
        else resolve(response);
      });
    });
  }
}

function itemError(error: WireItemError): ShaleError {
  return asdError(error.code as AsdErrorCode, error.message);
}
