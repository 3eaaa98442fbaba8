/**
 * A whole small cluster in one process for the API's tests: a LevelKv metadata store, a
 * real VolumeManager (in-memory backend) behind a real VolumeService on 127.0.0.1, a
 * backend in the registry whose OSD records point at ports where nothing listens, and
 * ApiDaemons in front. Every HTTP answer a test receives is recorded, so a test can check
 * all of them against the OpenAPI document at the end.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BackendRegistry } from '@shale/alba-proxy';
import { LevelKv } from '@shale/arakoon-kv';
import { AsdDaemon } from '@shale/asd';
import { bindGrpcServer } from '@shale/common';
import { freePort, TcpRelay } from '@shale/testing';
import { createVolumeGrpcServer, MemoryVolumeBackend, VolumeManager } from '@shale/volumedriver';
import { ApiClient } from '../api-client.js';
import { ApiDaemon, type ApiDaemonOptions } from '../api-daemon.js';

export const MiB = 1024 * 1024;
export const NODE_ID = 'node-a';
export const BACKEND_ID = 'local';

export interface RecordedResponse {
  readonly method: string;
  /** The path without the query. */
  readonly path: string;
  readonly status: number;
  readonly contentType: string;
  readonly text: string;
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Headers;
  /** Parsed JSON when the answer is JSON, else the text. */
  readonly body: unknown;
  readonly text: string;
}

export interface RawRequest {
  /** Default: the daemon's token; null: no Authorization header. */
  readonly token?: string | null;
  /** Sent as JSON. */
  readonly json?: unknown;
  /** Sent as is (with `contentType`, default application/json). */
  readonly raw?: string | Buffer;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** A port nothing listens on (bound, then released): `freePort` of `@shale/testing`. */
export const deadPort = freePort;

export interface TestNode {
  readonly nodeId: string;
  readonly manager: VolumeManager;
  readonly address: string;
  /** Cuts its connections, stops its VolumeService and closes its manager (idempotent). */
  stop(): Promise<void>;
}

export class TestApi {
  constructor(
    readonly daemon: ApiDaemon,
    readonly token: string,
    readonly client: ApiClient,
    private readonly fetcher: typeof fetch,
  ) {}

  /** One request with full control over token, body and headers. */
  async request(method: string, urlPath: string, options: RawRequest = {}): Promise<RawResponse> {
    const token = options.token === undefined ? this.token : options.token;
    const body =
      options.raw !== undefined
        ? options.raw
        : options.json === undefined
          ? undefined
          : JSON.stringify(options.json);
    const response = await this.fetcher(`${this.daemon.url}${urlPath}`, {
      method,
      headers: {
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        ...(body === undefined
          ? {}
          : { 'content-type': options.contentType ?? 'application/json' }),
        ...(options.headers ?? {}),
      },
      ...(body === undefined ? {} : { body }),
    });
    const text = await response.text();
    const isJson = (response.headers.get('content-type') ?? '').startsWith('application/json');
    return {
      status: response.status,
      headers: response.headers,
      body: isJson && text.length > 0 ? (JSON.parse(text) as unknown) : text,
      text,
    };
  }
}

export class ApiTestCluster {
  /** Every answer received through any TestApi of this cluster. */
  readonly seen: RecordedResponse[] = [];
  readonly apis: TestApi[] = [];
  readonly logs: string[] = [];
  readonly nodes: TestNode[] = [];
  /** Real ASDs started by startRealAsds (stopped by close()). */
  readonly asds: AsdDaemon[] = [];

  private constructor(
    readonly dir: string,
    readonly kv: LevelKv,
    readonly manager: VolumeManager,
    private readonly grpcServer: ReturnType<typeof createVolumeGrpcServer>,
    readonly volumedriverAddress: string,
    readonly registry: BackendRegistry,
    readonly deadAsdAddresses: readonly string[],
  ) {}

  static async start(): Promise<ApiTestCluster> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-api-'));
    const kv = await LevelKv.open({ dir: path.join(dir, 'kv'), sync: false });
    const manager = await VolumeManager.open({
      kv,
      backend: new MemoryVolumeBackend(),
      dir: path.join(dir, 'wb'),
      nodeId: NODE_ID,
    });
    const grpcServer = createVolumeGrpcServer(manager, { nodeId: NODE_ID });
    const port = await bindGrpcServer(grpcServer, '127.0.0.1', 0);
    const volumedriverAddress = `127.0.0.1:${port}`;
    await manager.registerStorageRouter(volumedriverAddress);
    const registry = new BackendRegistry(kv);
    const deadAsdAddresses = [`127.0.0.1:${await deadPort()}`, `127.0.0.1:${await deadPort()}`];
    await registry.createBackend({
      backendId: BACKEND_ID,
      name: 'local-backend',
      osds: deadAsdAddresses.map((address, i) => ({
        osdId: `asd-${i + 1}`,
        nodeId: NODE_ID,
        address,
      })),
    });
    return new ApiTestCluster(
      dir,
      kv,
      manager,
      grpcServer,
      volumedriverAddress,
      registry,
      deadAsdAddresses,
    );
  }

  /**
   * Another storage router in this process: its own VolumeManager (same metadata store,
   * its own write buffer and backend) behind its own VolumeService, registered.
   */
  async startNode(nodeId: string): Promise<TestNode> {
    const manager = await VolumeManager.open({
      kv: this.kv,
      backend: new MemoryVolumeBackend(),
      dir: path.join(this.dir, `wb-${nodeId}`),
      nodeId,
    });
    const server = createVolumeGrpcServer(manager, { nodeId });
    const port = await bindGrpcServer(server, '127.0.0.1', 0);
    // Reached through a relay, so that stopping it cuts the connections others hold.
    const relay = await TcpRelay.start({ host: '127.0.0.1', port });
    await manager.registerStorageRouter(relay.address);
    const node: TestNode = {
      nodeId,
      manager,
      address: relay.address,
      stop: async () => {
        await relay.cut();
        server.forceShutdown();
        await manager.close();
      },
    };
    this.nodes.push(node);
    return node;
  }

  /**
   * `count` real ASDs in this cluster's directory, each capped at `capacityBytes`, registered
   * as backend `backendId` (named `${backendId}-asds`, OSD ids `${backendId}-<i>`).
   */
  async startRealAsds(
    backendId: string,
    count: number,
    capacityBytes: number,
  ): Promise<AsdDaemon[]> {
    const started: AsdDaemon[] = [];
    for (let i = 0; i < count; i++) {
      const dir = path.join(this.dir, `${backendId}-asd${i}`);
      await fs.mkdir(dir);
      const asd = await AsdDaemon.start({ dir, port: 0, nodeId: NODE_ID, capacityBytes });
      this.asds.push(asd);
      started.push(asd);
    }
    await this.registry.createBackend({
      backendId,
      name: `${backendId}-asds`,
      osds: started.map((asd, i) => ({
        osdId: `${backendId}-${i}`,
        nodeId: NODE_ID,
        address: asd.address,
      })),
    });
    return started;
  }

  /** A fetch that records every answer (its body read from a clone). */
  readonly fetch: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    const text = await response.clone().text();
    const url = new URL(String(input));
    this.seen.push({
      method: init?.method ?? 'GET',
      path: url.pathname,
      status: response.status,
      contentType: response.headers.get('content-type') ?? '',
      text,
    });
    return response;
  };

  /** Starts an ApiDaemon on a free port; the token is read back from its token file. */
  async startApi(options: Partial<ApiDaemonOptions> = {}): Promise<TestApi> {
    const daemon = await ApiDaemon.start({
      kv: this.kv,
      volumedrivers: [this.volumedriverAddress],
      tokenFile: path.join(this.dir, 'token'),
      port: 0,
      probeDeadlineMs: 1_000,
      log: (line) => this.logs.push(line),
      ...options,
    });
    const token = (await fs.readFile(daemon.tokenFile, 'utf8')).trim();
    const api = new TestApi(
      daemon,
      token,
      new ApiClient({ url: daemon.url, token, fetch: this.fetch }),
      this.fetch,
    );
    this.apis.push(api);
    return api;
  }

  async close(): Promise<void> {
    for (const api of this.apis) await api.daemon.close(500);
    for (const node of this.nodes) await node.stop();
    for (const asd of this.asds) await asd.stop(500);
    this.grpcServer.forceShutdown();
    await this.manager.close();
    await this.kv.close();
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}
