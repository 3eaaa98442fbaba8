import { setTimeout as sleep } from 'node:timers/promises';
import {
  crc32c,
  type Frame,
  FrameClient,
  FrameErrorCode,
  FrameFlag,
  type FrameRequest,
  isShaleError,
  ShaleError,
} from '@shale/common';
import {
  CLIENT_DEFAULT_DEADLINE_MS,
  CLIENT_MAX_ATTEMPTS,
  CLIENT_RETRY_BACKOFF_MS,
  DATA_CLIENT_CONNECT_TIMEOUT_MS,
  DATA_CLIENT_MAX_IN_FLIGHT_BYTES,
  DATA_MAX_PAYLOAD_BYTES,
} from './constants.js';
import {
  AsdDataOp,
  decodeItemsReply,
  decodePutReply,
  encodeGetRequest,
  encodePutRequest,
  encodeRangesRequest,
} from './data-protocol.js';
import { AsdErrorCode, asdError, describeKey } from './errors.js';
import type { GetValue, ItemResult } from './object-store.js';
import type { PutItem, Slice } from './request-validation.js';

export interface AsdDataClientOptions {
  /** Deadline of each call, retries included. Default 10 s. */
  readonly deadlineMs?: number;
  readonly maxAttempts?: number;
}

/**
 * The bulk calls of one ASD (put, get, ranged get) over its data server: one frame
 * connection, many requests in flight, made on first use and again after it failed.
 * Same results and codes as AsdClient, and the same retry rules: any call on ASD_BUSY,
 * reads also on a lost connection; a put whose connection broke after it was sent is not
 * retried (it may have committed). A connection that cannot be made is not retried here:
 * the caller decides (AsdOsd goes over gRPC and asks the ASD for its data port again).
 *
 * Failures of the hop become ASD codes: no connection, a lost one or a GOAWAY is
 * ASD_UNAVAILABLE (details.sent "no" when the request never left: safe to send elsewhere;
 * so is a call refused because the client was closed, ASD_CLOSED),
 * a deadline ASD_DEADLINE_EXCEEDED. A request that timed out keeps its slot until its late
 * reply arrives or the connection dies (the frame layer has no cancel).
 */
export class AsdDataClient {
  readonly address: string;
  private connection: Promise<FrameClient> | undefined;
  private readonly deadlineMs: number;
  private readonly maxAttempts: number;
  private closed = false;

  constructor(
    private readonly host: string,
    readonly port: number,
    options: AsdDataClientOptions = {},
  ) {
    this.address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    this.deadlineMs = options.deadlineMs ?? CLIENT_DEFAULT_DEADLINE_MS;
    this.maxAttempts = options.maxAttempts ?? CLIENT_MAX_ATTEMPTS;
  }

  /** Stores all items or none; resolves when they are durable. Returns each value's CRC32C. */
  async put(items: readonly PutItem[], options: { deadlineMs?: number } = {}): Promise<number[]> {
    // The index, then the values as they are (a gathered write, no copy). No PAYLOAD_CRC:
    // each value's CRC32C is in the index (the ASD checks it while it computes its block
    // checksums) and the index has its own.
    const payloadParts = encodePutRequest(items);
    const reply = await this.call({ op: AsdDataOp.Put, payloadParts }, false, options);
    return decodePutReply(reply.payload, items.length);
  }

  async get(
    keys: readonly Uint8Array[],
    options: { deadlineMs?: number } = {},
  ): Promise<ItemResult<GetValue>[]> {
    const reply = await this.call(
      { op: AsdDataOp.Get, payload: encodeGetRequest(keys) },
      true,
      options,
    );
    return decodeItemsReply(reply.payload, keys.length, `GET reply from ${this.address}`).map(
      (result, index) => {
        if (!result.ok) return result;
        // End to end: the ASD verified its disk; we verify the wire.
        if (crc32c(result.value.value) === result.value.crc32c) return result;
        return {
          ok: false,
          error: asdError(
            AsdErrorCode.Corrupt,
            `value of ${describeKey(keys[index] ?? Buffer.alloc(0))} from ${this.address} fails its CRC32C in transit`,
          ),
        };
      },
    );
  }

  async getRanges(
    slices: readonly Slice[],
    options: { deadlineMs?: number } = {},
  ): Promise<ItemResult<Buffer>[]> {
    let replyBytes = 0;
    for (const slice of slices) replyBytes += slice.length;
    // Slices carry no CRC of their own: this request and its reply use the frame's.
    const reply = await this.call(
      {
        op: AsdDataOp.GetRanges,
        flags: FrameFlag.PayloadCrc,
        payload: encodeRangesRequest(slices),
        replyBytes,
      },
      true,
      options,
    );
    return decodeItemsReply(
      reply.payload,
      slices.length,
      `GET_RANGES reply from ${this.address}`,
    ).map((result) => (result.ok ? { ok: true, value: result.value.value } : result));
  }

  /**
   * No new calls (ASD_CLOSED, details.sent "no"); the connection closes once the requests
   * already sent are answered.
   */
  close(): void {
    this.closed = true;
    const connection = this.connection;
    this.connection = undefined;
    connection?.then(
      (client) => client.close(),
      () => undefined,
    );
  }

  private async call(
    request: FrameRequest,
    idempotent: boolean,
    options: { deadlineMs?: number },
  ): Promise<Frame> {
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlineMs);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.callOnce(request, deadline);
      } catch (err) {
        const retryable =
          isShaleError(err, AsdErrorCode.Busy) ||
          (idempotent && isShaleError(err, AsdErrorCode.Unavailable) && err.details.sent === 'yes');
        const backoffMs = CLIENT_RETRY_BACKOFF_MS * 2 ** (attempt - 1);
        if (!retryable || attempt >= this.maxAttempts || Date.now() + backoffMs >= deadline)
          throw err;
        await sleep(backoffMs);
      }
    }
  }

  private async callOnce(request: FrameRequest, deadline: number): Promise<Frame> {
    const client = await this.connect(deadline);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            asdError(
              AsdErrorCode.DeadlineExceeded,
              `ASD ${this.address}: no reply to op ${request.op} within the deadline`,
            ),
          ),
        Math.max(0, deadline - Date.now()),
      );
    });
    try {
      return await Promise.race([client.request(request), timeout]);
    } catch (err) {
      throw this.translate(err, 'yes');
    } finally {
      clearTimeout(timer);
    }
  }

  /** The connection, made if there is none (or the last one failed). */
  private async connect(deadline: number): Promise<FrameClient> {
    if (this.closed) {
      throw asdError(AsdErrorCode.Closed, `ASD data client ${this.address} closed`, {
        details: { sent: 'no' },
      });
    }
    const known = this.connection;
    if (known !== undefined) {
      const client = await known.catch(() => undefined);
      if (client !== undefined && client.failed === undefined) return client;
      // A failed attempt answered the calls that waited for it; this call tries again.
      if (this.connection === known) this.connection = undefined;
    }
    if (this.connection === undefined) {
      const attempt = FrameClient.connect({
        host: this.host,
        port: this.port,
        what: `ASD ${this.address}`,
        payloadCrc: false,
        maxInFlightBytes: DATA_CLIENT_MAX_IN_FLIGHT_BYTES,
        maxPayloadBytes: DATA_MAX_PAYLOAD_BYTES,
        // A backstop behind each call's own deadline (the race in callOnce, which answers
        // ASD_DEADLINE_EXCEEDED first): a request the ASD has held this long after it was
        // sent closes the connection (the ASD may be wedged; FrameClient's comment says why).
        requestTimeoutMs: this.deadlineMs,
        connectTimeoutMs: Math.max(
          1,
          Math.min(DATA_CLIENT_CONNECT_TIMEOUT_MS, deadline - Date.now()),
        ),
      });
      this.connection = attempt;
      attempt.then(
        (client) =>
          client.onClosed(() => {
            if (this.connection === attempt) this.connection = undefined;
          }),
        () => {
          if (this.connection === attempt) this.connection = undefined;
        },
      );
    }
    try {
      return await this.connection;
    } catch (err) {
      throw this.translate(err, 'no');
    }
  }

  /** The hop's failures as ASD codes; the ASD's own answers pass through unchanged. */
  private translate(err: unknown, sent: 'yes' | 'no'): unknown {
    if (!(err instanceof ShaleError) || !err.code.startsWith('FRAME_')) return err;
    const code =
      err.code === FrameErrorCode.Timeout && sent === 'yes'
        ? AsdErrorCode.DeadlineExceeded
        : err.code === FrameErrorCode.Closed || err.code === FrameErrorCode.Timeout || sent === 'no'
          ? AsdErrorCode.Unavailable
          : AsdErrorCode.RpcFailed;
    return asdError(code, `ASD ${this.address}: ${err.message}`, {
      cause: err,
      details: { sent, frameCode: err.code },
    });
  }
}
