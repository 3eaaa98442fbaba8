import type * as grpc from '@grpc/grpc-js';
import type { KvStore } from '@shale/arakoon-kv';
import {
  bindGrpcServer,
  type FrameServerCounters,
  type MetricsServer,
  registerStatsCounters,
  shutdownGrpcServer,
  startMetricsServer,
} from '@shale/common';
import { Registry } from 'prom-client';
import { VolumeDataServer } from './data-server.js';
import { EngineVolumeBackend } from './engine-backend.js';
import { VOLUME_SHUTDOWN_GRACE_MS } from './service-constants.js';
import { ProxyVolumeBackend, type VolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';
import {
  createVolumeGrpcServer,
  createVolumeServiceCounters,
  type VolumeServiceCounters,
} from './volume-service.js';

export interface VolumedriverDaemonOptions {
  /** The metadata store, opened by the caller (and closed by it after close()). */
  readonly kv: KvStore;
  /**
   * Where the vDisks' SCOs and TLogs go, one of: `proxyAddress`, an ALBA proxy (host:port)
   * over gRPC; or `backendId`, the proxy's engine inside this process (no socket on the
   * upload path: engine-backend.ts), with its own fragment cache and the key file.
   */
  readonly proxyAddress?: string | undefined;
  readonly backendId?: string | undefined;
  readonly engineCacheDir?: string | undefined;
  readonly engineCacheBytes?: number | undefined;
  readonly keyFile?: string | undefined;
  /** The local write buffer: SCOs, TLogs and LBA maps of the vDisks open here. */
  readonly dir: string;
  /** This storage router's id (owner of the vDisks it opens). */
  readonly nodeId: string;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  /**
   * The host:port others reach this VolumeService at (registered in the metadata store for
   * edges and other routers). Default: host:port as bound.
   */
  readonly advertiseAddress?: string | undefined;
  /**
   * The data server's port (the data protocol, for remote edges); 0 or absent picks a free
   * one. It is registered with the advertised host, so edges learn it from LocateVdisk.
   */
  readonly dataPort?: number | undefined;
  /** Serve Prometheus /metrics and /health here. */
  readonly metricsPort?: number | undefined;
  /** Where the volumedriver's log lines go (default: stderr, one line each). */
  readonly log?: ((line: string) => void) | undefined;
  /** The bound on data at risk (default DATA_AT_RISK_MAX_MS). */
  readonly dataAtRiskMaxMs?: number | undefined;
  /** The write buffer's reserve file and free-space margin (write-buffer-space.ts). */
  readonly writeBufferReserveBytes?: number | undefined;
  readonly writeBufferMarginBytes?: number | undefined;
  /** Memory for the cluster caches of all vDisks (default CLUSTER_CACHE_DEFAULT_BYTES). */
  readonly clusterCacheBytes?: number | undefined;
  /** Memory for SCOs kept whole until uploaded (default SCO_MEMORY_DEFAULT_BYTES). */
  readonly scoMemoryBytes?: number | undefined;
}

/** The VolumeService's own counters, as Prometheus counters. */
const SERVICE_COUNTER_ROWS: readonly (readonly [string, string, keyof VolumeServiceCounters])[] = [
  ['shale_volumedriver_io_streams_opened_total', 'Io streams opened', 'ioStreamsOpened'],
  ['shale_volumedriver_io_streams_failed_total', 'Io streams failed', 'ioStreamsFailed'],
  [
    'shale_volumedriver_io_batches_received_total',
    'IoBatch messages received',
    'ioBatchesReceived',
  ],
  ['shale_volumedriver_io_requests_received_total', 'Io requests received', 'ioRequestsReceived'],
  [
    'shale_volumedriver_io_reply_batches_sent_total',
    'IoReplyBatch messages sent',
    'ioReplyBatchesSent',
  ],
  ['shale_volumedriver_io_replies_sent_total', 'Io replies sent', 'ioRepliesSent'],
  ['shale_volumedriver_io_error_replies_total', 'Io replies with an error', 'ioErrorReplies'],
  [
    'shale_volumedriver_io_stream_pauses_total',
    'times an Io stream stopped being read (in-flight limit reached)',
    'ioStreamPauses',
  ],
];

/** The data server's counters (every connection of the data protocol), as Prometheus counters. */
const DATA_COUNTER_ROWS: readonly (readonly [string, string, keyof FrameServerCounters])[] = [
  [
    'shale_volumedriver_data_connections_total',
    'data protocol connections accepted',
    'connections',
  ],
  ['shale_volumedriver_data_requests_total', 'data protocol requests started', 'requests'],
  ['shale_volumedriver_data_error_replies_total', 'data protocol error replies', 'errorReplies'],
  [
    'shale_volumedriver_data_protocol_errors_total',
    'data connections closed for breaking the protocol (GOAWAY)',
    'protocolErrors',
  ],
  [
    'shale_volumedriver_data_pauses_total',
    'times a data connection stopped being read (its memory budget was full)',
    'pauses',
  ],
];

/** `shale volumedriver serve`: a VolumeManager behind the VolumeService. */
export class VolumedriverDaemon {
  private constructor(
    readonly manager: VolumeManager,
    private readonly closeBackend: () => Promise<void>,
    private readonly server: grpc.Server,
    private readonly metricsServer: MetricsServer | undefined,
    /** The data protocol's server (data-server.ts). */
    readonly dataServer: VolumeDataServer,
    readonly host: string,
    readonly port: number,
    /** The daemon's Prometheus registry (a co-located edge adds its metrics to it). */
    readonly registry: Registry,
  ) {}

  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  static async start(options: VolumedriverDaemonOptions): Promise<VolumedriverDaemon> {
    const host = options.host ?? '127.0.0.1';
    const metricsRegistry = new Registry();
    const counters = createVolumeServiceCounters();
    registerStatsCounters(metricsRegistry, SERVICE_COUNTER_ROWS, () => counters);
    const log = options.log ?? ((line) => process.stderr.write(`volumedriver: ${line}\n`));
    const { backend, closeBackend } = await openBackend(options, log);
    let manager: VolumeManager;
    try {
      manager = await VolumeManager.open({
        kv: options.kv,
        backend,
        dir: options.dir,
        nodeId: options.nodeId,
        metricsRegistry,
        log,
        ...(options.dataAtRiskMaxMs === undefined
          ? {}
          : { dataAtRiskMaxMs: options.dataAtRiskMaxMs }),
        ...(options.writeBufferReserveBytes === undefined
          ? {}
          : { writeBufferReserveBytes: options.writeBufferReserveBytes }),
        ...(options.writeBufferMarginBytes === undefined
          ? {}
          : { writeBufferMarginBytes: options.writeBufferMarginBytes }),
        ...(options.clusterCacheBytes === undefined
          ? {}
          : { clusterCacheBytes: options.clusterCacheBytes }),
        ...(options.scoMemoryBytes === undefined ? {} : { scoMemoryBytes: options.scoMemoryBytes }),
      });
    } catch (err) {
      await closeBackend();
      throw err;
    }
    const server = createVolumeGrpcServer(manager, {
      nodeId: options.nodeId,
      counters,
      vdisksOpen: async () => manager.openVolumes().length,
      vdisksFailed: async () => manager.failedVdiskCount,
      writeBufferSpace: () => manager.spaceStatus(),
    });
    let metricsServer: MetricsServer | undefined;
    let dataServer: VolumeDataServer | undefined;
    try {
      const port = await bindGrpcServer(server, host, options.port);
      dataServer = await VolumeDataServer.start({
        manager,
        host,
        port: options.dataPort ?? 0,
        log,
      });
      const started = dataServer;
      registerStatsCounters(metricsRegistry, DATA_COUNTER_ROWS, () => started.counters);
      const advertised = options.advertiseAddress ?? `${host}:${port}`;
      const advertisedHost = advertised.slice(0, advertised.lastIndexOf(':'));
      await manager.registerStorageRouter(advertised, `${advertisedHost}:${dataServer.port}`);
      if (options.metricsPort !== undefined) {
        metricsServer = await startMetricsServer(metricsRegistry, {
          host,
          port: options.metricsPort,
        });
      }
      return new VolumedriverDaemon(
        manager,
        closeBackend,
        server,
        metricsServer,
        dataServer,
        host,
        port,
        metricsRegistry,
      );
    } catch (err) {
      server.forceShutdown();
      await metricsServer?.close();
      await dataServer?.close(0);
      await manager.close();
      await closeBackend();
      throw err;
    }
  }

  /**
   * Stops in the reverse order of start: the metrics endpoint, then the gRPC server (calls
   * in progress get up to graceMs; Io streams that stay open longer are cut), then the
   * manager (which makes every vDisk durable), then the backend client.
   */
  async close(graceMs = VOLUME_SHUTDOWN_GRACE_MS): Promise<void> {
    await this.metricsServer?.close();
    await Promise.all([shutdownGrpcServer(this.server, graceMs), this.dataServer.close(graceMs)]);
    await this.manager.close();
    await this.closeBackend();
  }
}

async function openBackend(
  options: VolumedriverDaemonOptions,
  log: (line: string) => void,
): Promise<{ backend: VolumeBackend; closeBackend: () => Promise<void> }> {
  if ((options.proxyAddress === undefined) === (options.backendId === undefined)) {
    throw new Error('the volumedriver needs exactly one of a proxy address or a backend id');
  }
  if (options.proxyAddress !== undefined) {
    const backend = new ProxyVolumeBackend(options.proxyAddress);
    return { backend, closeBackend: async () => backend.close() };
  }
  const backend = await EngineVolumeBackend.open({
    kv: options.kv,
    backendId: options.backendId as string,
    cacheDir: options.engineCacheDir,
    cacheBytes: options.engineCacheBytes,
    keyFile: options.keyFile,
    log: (line) => log(`proxy engine: ${line}`),
  });
  return { backend, closeBackend: () => backend.drainAndClose() };
}
