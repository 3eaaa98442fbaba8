import * as grpc from '@grpc/grpc-js';
import { AssertionFailure, ShaleError } from '@shale/common';
import { ASD_VERSION, MAX_GRPC_MESSAGE_BYTES } from './constants.js';
import { toGrpcError } from './grpc-errors.js';
import type { AsdMetrics } from './metrics.js';
import type { AsdStore, ItemResult } from './object-store.js';
import {
  asdServiceDefinition,
  type WireDeleteRequest,
  type WireDeleteResponse,
  type WireGetRangesRequest,
  type WireGetRangesResponse,
  type WireGetRequest,
  type WireGetResponse,
  type WireHealthResponse,
  type WireItemError,
  type WireListRequest,
  type WireListResponse,
  type WirePutRequest,
  type WirePutResponse,
  type WireStatsResponse,
} from './proto-definition.js';

type Op = 'put' | 'get' | 'get_ranges' | 'delete' | 'list' | 'stats' | 'health';

/** Binds the store to the gRPC service: decoding, metrics and the error table, nothing else. */
export function createAsdGrpcServer(
  store: AsdStore,
  metrics: AsdMetrics,
  /** The data server's port, for stats (0: none). */
  dataPort: () => number = () => 0,
): grpc.Server {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_GRPC_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_GRPC_MESSAGE_BYTES,
    // channelz keeps per-call statistics nobody reads here; it costs CPU on every call.
    'grpc.enable_channelz': 0,
  });

  function unary<Req, Res>(
    op: Op,
    handle: (request: Req) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const stopTimer = metrics.latency.startTimer({ op });
      metrics.operations.inc({ op });
      handle(call.request).then(
        (response) => {
          stopTimer();
          callback(null, response);
        },
        (err: unknown) => {
          stopTimer();
          const status = toGrpcError(err);
          const code = err instanceof ShaleError ? err.code : 'ASD_IO_ERROR';
          metrics.errors.inc({ op, code });
          callback(status, null);
          // A broken invariant is a bug, not an operating error: answer, then crash loudly
          // rather than keep serving from a state we no longer understand.
          if (err instanceof AssertionFailure) {
            process.nextTick(() => {
              throw err;
            });
          }
        },
      );
    };
  }

  function itemError(op: Op, error: ShaleError): WireItemError {
    metrics.errors.inc({ op, code: error.code });
    return { code: error.code, message: error.message };
  }

  const handlers: grpc.UntypedServiceImplementation = {
    put: unary<WirePutRequest, WirePutResponse>('put', async (request) => {
      const items = request.items.map((item) => ({
        key: item.key,
        value: item.value,
        crc32c: item.crc32c,
      }));
      metrics.items.inc({ op: 'put' }, items.length);
      const crcs = await store.put(items);
      metrics.bytes.inc(
        { direction: 'in' },
        items.reduce((sum, item) => sum + item.value.length, 0),
      );
      return { crc32c: crcs };
    }),

    get: unary<WireGetRequest, WireGetResponse>('get', async (request) => {
      metrics.items.inc({ op: 'get' }, request.keys.length);
      const results = await store.get(request.keys);
      let bytesOut = 0;
      const response = {
        results: results.map((result) => {
          if (!result.ok)
            return { value: Buffer.alloc(0), crc32c: 0, error: itemError('get', result.error) };
          bytesOut += result.value.value.length;
          return { value: result.value.value, crc32c: result.value.crc32c, error: null };
        }),
      };
      metrics.bytes.inc({ direction: 'out' }, bytesOut);
      return response;
    }),

    getRanges: unary<WireGetRangesRequest, WireGetRangesResponse>('get_ranges', async (request) => {
      metrics.items.inc({ op: 'get_ranges' }, request.slices.length);
      const results: ItemResult<Buffer>[] = await store.getRanges(request.slices);
      let bytesOut = 0;
      const response = {
        results: results.map((result) => {
          if (!result.ok)
            return { data: Buffer.alloc(0), error: itemError('get_ranges', result.error) };
          bytesOut += result.value.length;
          return { data: result.value, error: null };
        }),
      };
      metrics.bytes.inc({ direction: 'out' }, bytesOut);
      return response;
    }),

    delete: unary<WireDeleteRequest, WireDeleteResponse>('delete', async (request) => {
      metrics.items.inc({ op: 'delete' }, request.keys.length);
      return { existed: await store.delete(request.keys) };
    }),

    list: unary<WireListRequest, WireListResponse>('list', async (request) => {
      const { entries, more } = await store.list({
        prefix: request.prefix,
        startAfter: request.startAfter.length > 0 ? request.startAfter : undefined,
        limit: request.limit,
      });
      return { entries, more };
    }),

    stats: unary<Record<string, never>, WireStatsResponse>('stats', async () => {
      const stats = await store.stats();
      return { ...stats, version: ASD_VERSION, dataPort: dataPort() };
    }),

    health: unary<Record<string, never>, WireHealthResponse>('health', async () => {
      const health = store.health();
      return { status: health.status, reason: health.reason, asdId: store.identity.asdId };
    }),
  };

  server.addService(asdServiceDefinition, handlers);
  return server;
}
