import http from 'node:http';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { BackendRegistry } from '@shale/alba-proxy';
import type { KvStore } from '@shale/arakoon-kv';
import { ApiMetrics } from './api-metrics.js';
import { ApiRequestHandler, clientErrorAnswer } from './api-server.js';
import { type AsdClientFactory, AsdProbe } from './asd-probe.js';
import { ConnectionGuard, DEFAULT_CONNECTION_LIMITS } from './connection-guard.js';
import {
  API_CONNECTIONS_CHECK_INTERVAL_MS,
  API_DEFAULT_PORT,
  API_HEADERS_TIMEOUT_MS,
  API_ISCSI_KEY_FILE_NAME,
  API_KEEP_ALIVE_TIMEOUT_MS,
  API_PROBE_DEADLINE_MS,
  API_REQUEST_RECEIVE_TIMEOUT_MS,
  API_SHUTDOWN_GRACE_MS,
} from './constants.js';
import { IscsiTargetRecords } from './iscsi/iscsi-records.js';
import { SecretBox } from './iscsi/iscsi-secrets.js';
import { openApiDocument } from './openapi.js';
import { OperationStore } from './operations.js';
import { ApiResources } from './resources.js';
import { ROUTES } from './routes.js';
import type { OpenApiDocument } from './schemas.js';
import { loadOrCreateToken } from './token-file.js';
import { type VolumeClientFactory, VolumedriverPool } from './volumedriver-pool.js';

export interface ApiDaemonOptions {
  /** The metadata store: the backend registry (backends, presets, OSDs) and health reads. */
  readonly kv: KvStore;
  /** VolumeService addresses (host:port) to ask; any reachable one is enough. */
  readonly volumedrivers: readonly string[];
  /** Where the bearer token is (created with mode 0600 if missing). */
  readonly tokenFile: string;
  /**
   * The key that seals the CHAP secrets of iSCSI targets (created with mode 0600 if
   * missing). `shale iscsi serve` must be given the same file to open them. Default:
   * API_ISCSI_KEY_FILE_NAME next to the token file.
   */
  readonly iscsiKeyFile?: string;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default API_DEFAULT_PORT (8080); 0 picks a free one. */
  readonly port?: number;
  readonly log?: (line: string) => void;
  /** Seams for tests: how volumedrivers and ASDs are reached. */
  readonly volumeClientFactory?: VolumeClientFactory;
  readonly asdClientFactory?: AsdClientFactory;
  readonly probeDeadlineMs?: number;
  /** Connection limits (defaults: the constants of the same names, see constants.ts). */
  readonly connectionsMax?: number;
  readonly connectionsPerClientMax?: number;
  readonly headersTimeoutMs?: number;
  readonly connectionsCheckIntervalMs?: number;
  readonly closeLingerMs?: number;
}

/** `shale api serve`: the REST API on node:http, in front of the volumedrivers and the registry. */
export class ApiDaemon {
  private constructor(
    private readonly server: http.Server,
    private readonly guard: ConnectionGuard,
    private readonly pool: VolumedriverPool,
    private readonly asds: AsdProbe,
    private readonly operations: OperationStore,
    readonly host: string,
    readonly port: number,
    readonly tokenFile: string,
    readonly iscsiKeyFile: string,
    /** True when this start generated the token (the file did not exist). */
    readonly tokenCreated: boolean,
  ) {}

  /** TCP connections held now (closing ones included). */
  get connectionCount(): number {
    return this.guard.openCount;
  }

  /** `http://host:port`, for an ApiClient. */
  get url(): string {
    return `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  static async start(options: ApiDaemonOptions): Promise<ApiDaemon> {
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    const host = options.host ?? '127.0.0.1';
    const { token, created } = await loadOrCreateToken(options.tokenFile);
    const iscsiKeyFile =
      options.iscsiKeyFile ?? path.join(path.dirname(options.tokenFile), API_ISCSI_KEY_FILE_NAME);
    const secrets = await SecretBox.open(iscsiKeyFile);
    const pool = new VolumedriverPool(options.volumedrivers, options.volumeClientFactory);
    const registry = new BackendRegistry(options.kv);
    const asds = new AsdProbe(
      registry,
      options.asdClientFactory,
      options.probeDeadlineMs ?? API_PROBE_DEADLINE_MS,
    );
    const operations = new OperationStore({
      log,
      onFinished: (operation) => metrics.observeOperation(operation),
    });
    const metrics: ApiMetrics = new ApiMetrics(
      () => operations.runningCount,
      (): number => guard.openCount,
    );
    const guard: ConnectionGuard = new ConnectionGuard(
      {
        ...DEFAULT_CONNECTION_LIMITS,
        ...(options.connectionsMax === undefined ? {} : { connectionsMax: options.connectionsMax }),
        ...(options.connectionsPerClientMax === undefined
          ? {}
          : { connectionsPerClientMax: options.connectionsPerClientMax }),
        ...(options.closeLingerMs === undefined ? {} : { closeLingerMs: options.closeLingerMs }),
      },
      metrics.connections,
    );
    const resources = new ApiResources({
      volumedrivers: pool,
      registry,
      asds,
      operations,
      kv: options.kv,
      iscsiTargets: new IscsiTargetRecords(options.kv),
      secrets,
      ...(options.probeDeadlineMs === undefined
        ? {}
        : { probeDeadlineMs: options.probeDeadlineMs }),
    });
    metrics.observeCapacity(() => resources.capacity());
    let document: OpenApiDocument | undefined;
    const handler = new ApiRequestHandler({
      routes: ROUTES,
      token,
      metrics,
      log,
      services: {
        resources,
        openapi: () => {
          document ??= openApiDocument(ROUTES);
          return document;
        },
        metrics: () => metrics.text(),
      },
    });
    const deadlines = {
      headersTimeoutMs: options.headersTimeoutMs ?? API_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: API_REQUEST_RECEIVE_TIMEOUT_MS,
    };
    const server = http.createServer(
      {
        requestTimeout: deadlines.requestTimeoutMs,
        headersTimeout: deadlines.headersTimeoutMs,
        connectionsCheckingInterval:
          options.connectionsCheckIntervalMs ?? API_CONNECTIONS_CHECK_INTERVAL_MS,
      },
      handler.listener,
    );
    server.on('checkContinue', handler.continueListener);
    server.keepAliveTimeout = API_KEEP_ALIVE_TIMEOUT_MS;
    // No server.maxConnections: Node would refuse the newest connection; the guard evicts a
    // stalled or idle one instead (connection-guard.ts).
    guard.attach(server);
    server.on('clientError', (err, socket) => {
      // Malformed HTTP or a missed deadline: answer once with {code, message} and close
      // (lingering, never half-open forever), without a stack trace.
      guard.clientError(socket as net.Socket, clientErrorAnswer(err, deadlines));
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port ?? API_DEFAULT_PORT, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      pool.close();
      asds.close();
      throw err;
    }
    const port = (server.address() as AddressInfo).port;
    return new ApiDaemon(
      server,
      guard,
      pool,
      asds,
      operations,
      host,
      port,
      options.tokenFile,
      iscsiKeyFile,
      created,
    );
  }

  /**
   * Stops accepting, gives requests in progress and running operations up to `graceMs`,
   * then cuts what is left and closes the volumedriver and ASD clients. Operations still
   * running go on in their volumedrivers; their records are lost with this process.
   */
  async close(graceMs = API_SHUTDOWN_GRACE_MS): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      closed,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
    this.server.closeAllConnections();
    await closed;
    await this.operations.drain(graceMs);
    this.pool.close();
    this.asds.close();
  }
}
