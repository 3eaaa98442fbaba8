import * as grpc from '@grpc/grpc-js';
import { encodeManifest } from './manifest.js';
import type { ProxyEngine } from './proxy-engine.js';
import { fromGrpcError, ProxyServiceClient, proxyServiceDefinition, unary } from './proxy-grpc.js';

/** gRPC message ceiling: a 64 MiB SCO (the largest SCO is 128 MiB) plus framing. */
export const PROXY_MAX_MESSAGE_BYTES = 132 * 1024 * 1024;

interface NamespaceReply {
  nsId: string;
  backendId: string;
  presetName: string;
  state: string;
  createdAtMs: number;
  epoch: number;
}

/** Binds a ProxyEngine to the ProxyService: decoding and the error table, nothing else. */
export function createProxyGrpcServer(engine: ProxyEngine, backendId: string): grpc.Server {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': PROXY_MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': PROXY_MAX_MESSAGE_BYTES,
    'grpc.enable_channelz': 0,
  });
  const namespaceReply = async (nsId: string): Promise<NamespaceReply> => {
    const info = await engine.namespaces.require(nsId);
    return {
      nsId: info.nsId,
      backendId: info.backendId,
      presetName: info.presetName,
      state: info.state,
      createdAtMs: info.createdAtMs,
      epoch: await engine.namespaces.epoch(nsId),
    };
  };
  const handlers: grpc.UntypedServiceImplementation = {
    createNamespace: unary(async (req: { nsId: string; presetName: string }) => {
      const backend = await engine.registry.requireBackend(backendId);
      await engine.namespaces.create(
        req.nsId,
        backendId,
        req.presetName || backend.defaultPresetName,
      );
      return namespaceReply(req.nsId);
    }),
    getNamespace: unary(async (req: { nsId: string }) => namespaceReply(req.nsId)),
    listNamespaces: unary(async (req: { limit: number; continuation: Buffer }) => {
      const page = await engine.namespaces.list({
        ...(req.limit > 0 ? { limit: req.limit } : {}),
        ...(req.continuation.length > 0 ? { continuation: req.continuation } : {}),
      });
      return {
        namespaces: await Promise.all(
          page.namespaces.map(async (info) => ({
            nsId: info.nsId,
            backendId: info.backendId,
            presetName: info.presetName,
            state: info.state,
            createdAtMs: info.createdAtMs,
            epoch: await engine.namespaces.epoch(info.nsId),
          })),
        ),
        continuation: page.continuation ?? Buffer.alloc(0),
      };
    }),
    deleteNamespace: unary(async (req: { nsId: string }) => {
      const report = await engine.namespaces.delete(req.nsId);
      return { fragmentsDeleted: report.fragmentsDeleted, skippedOsds: [...report.skippedOsds] };
    }),
    bumpEpoch: unary(async (req: { nsId: string }) => ({
      epoch: await engine.namespaces.bumpEpoch(req.nsId),
    })),
    putObject: unary(
      async (req: { nsId: string; name: string; data: Buffer; writerEpoch: number }) => {
        const result = await engine.putObject(req.nsId, req.name, req.data, {
          writerEpoch: req.writerEpoch,
        });
        // Durability: putObject resolved, so every chunk has >= c fragments durable on OSDs and
        // the manifest is committed (conditional on the writer epoch) in the metadata store.
        return {
          version: result.version,
          policy: [result.policy.k, result.policy.m, result.policy.c, result.policy.x],
          placedAtAck: [...result.placedAtAck],
          manifestBytes: result.manifestBytes,
        };
      },
    ),
    getObject: unary(async (req: { nsId: string; name: string }) => ({
      data: await engine.getObject(req.nsId, req.name),
    })),
    readRanges: unary(
      async (req: {
        nsId: string;
        slices: { name: string; offset: number; length: number }[];
      }) => ({
        data: await engine.readRanges(
          req.nsId,
          req.slices.map((slice) => ({
            name: slice.name,
            offsetBytes: slice.offset,
            lengthBytes: slice.length,
          })),
        ),
      }),
    ),
    deleteObject: unary(async (req: { nsId: string; name: string; writerEpoch: number }) =>
      engine.deleteObject(req.nsId, req.name, { writerEpoch: req.writerEpoch }),
    ),
    listObjects: unary(
      async (req: { nsId: string; prefix: string; limit: number; continuation: Buffer }) => {
        const page = await engine.listObjects(req.nsId, {
          ...(req.prefix.length > 0 ? { prefix: req.prefix } : {}),
          ...(req.limit > 0 ? { limit: req.limit } : {}),
          ...(req.continuation.length > 0 ? { continuation: req.continuation } : {}),
        });
        return { objects: page.objects, continuation: page.continuation ?? Buffer.alloc(0) };
      },
    ),
    objectInfo: unary(async (req: { nsId: string; name: string }) => ({
      manifest: encodeManifest(await engine.objectInfo(req.nsId, req.name)),
    })),
    health: unary(async () => {
      const states = await engine.refreshOsdStates();
      const alive = states.filter((state) => state.alive).length;
      return {
        status: alive > 0 ? 'ok' : 'degraded',
        backendId,
        osdsTotal: states.length,
        osdsAlive: alive,
        reason: alive > 0 ? '' : 'no OSD answers',
      };
    }),
  };
  server.addService(proxyServiceDefinition, handlers);
  return server;
}

export interface ProxyHealth {
  status: string;
  backendId: string;
  osdsTotal: number;
  osdsAlive: number;
  reason: string;
}

/** A client of one proxy, with a deadline on every call. Nothing is retried: puts carry epochs. */
export class ProxyClient {
  private readonly client: grpc.Client;

  constructor(
    readonly address: string,
    private readonly deadlineMs = 60_000,
  ) {
    this.client = new ProxyServiceClient(address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': PROXY_MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': PROXY_MAX_MESSAGE_BYTES,
      'grpc.enable_channelz': 0,
    });
  }

  createNamespace(nsId: string, presetName = ''): Promise<NamespaceReply> {
    return this.call('createNamespace', { nsId, presetName });
  }
  getNamespace(nsId: string): Promise<NamespaceReply> {
    return this.call('getNamespace', { nsId });
  }
  deleteNamespace(nsId: string): Promise<{ fragmentsDeleted: number; skippedOsds: string[] }> {
    return this.call('deleteNamespace', { nsId });
  }
  async bumpEpoch(nsId: string): Promise<number> {
    return (await this.call<{ epoch: number }>('bumpEpoch', { nsId })).epoch;
  }
  putObject(
    nsId: string,
    name: string,
    data: Uint8Array,
    writerEpoch: number,
  ): Promise<{ version: number; policy: number[]; placedAtAck: number[]; manifestBytes: number }> {
    return this.call('putObject', { nsId, name, data, writerEpoch });
  }
  async getObject(nsId: string, name: string): Promise<Buffer> {
    return (await this.call<{ data: Buffer }>('getObject', { nsId, name })).data;
  }
  async readRanges(
    nsId: string,
    slices: { name: string; offset: number; length: number }[],
  ): Promise<Buffer[]> {
    return (await this.call<{ data: Buffer[] }>('readRanges', { nsId, slices })).data;
  }
  async deleteObject(nsId: string, name: string, writerEpoch: number): Promise<boolean> {
    return (await this.call<{ deleted: boolean }>('deleteObject', { nsId, name, writerEpoch }))
      .deleted;
  }
  listObjects(
    nsId: string,
    options: { prefix?: string; limit?: number; continuation?: Buffer } = {},
  ): Promise<{
    objects: { name: string; sizeBytes: number; version: number }[];
    continuation: Buffer;
  }> {
    return this.call('listObjects', {
      nsId,
      prefix: options.prefix ?? '',
      limit: options.limit ?? 0,
      continuation: options.continuation ?? Buffer.alloc(0),
    });
  }
  async objectInfo(nsId: string, name: string): Promise<Buffer> {
    return (await this.call<{ manifest: Buffer }>('objectInfo', { nsId, name })).manifest;
  }
  health(): Promise<ProxyHealth> {
    return this.call('health', {});
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
    if (fn === undefined) throw new Error(`unknown proxy method ${method}`);
    return new Promise<Res>((resolve, reject) => {
      fn.call(this.client, request, { deadline: Date.now() + this.deadlineMs }, (err, response) => {
        if (err) reject(fromGrpcError(err, this.address));
        else if (response === undefined) reject(new Error(`${method}: empty answer`));
        else resolve(response);
      });
    });
  }
}
