import { type MetricsServer, startMetricsServer } from '@shale/common';
import { Registry } from 'prom-client';
import type { ExportProvider } from './block-export.js';
import { CoLocatedExports, type LocalVolumes } from './co-located-exports.js';
import { EDGE_SHUTDOWN_GRACE_MS, NBD_DEFAULT_PORT } from './constants.js';
import { EdgeMetrics } from './edge-metrics.js';
import { NbdServer } from './nbd-server.js';
import { type ExportRoute, VolumedriverExports } from './volumedriver-exports.js';

export interface EdgeDaemonOptions {
  /** VolumeService addresses (host:port) to route through; at least one. */
  readonly volumedrivers: readonly string[];
  readonly host?: string;
  /** NBD port (default 10809; 0 picks a free one). */
  readonly port?: number;
  /** Serve Prometheus /metrics and /health here. */
  readonly metricsPort?: number | undefined;
  readonly readOnly?: boolean;
  /** The vDisk served for an empty export name. */
  readonly defaultExport?: string | undefined;
  readonly requestTimeoutMs?: number | undefined;
  /** Memory budget of all NBD connections together (default EDGE_MAX_BUFFERED_BYTES). */
  readonly maxBufferedBytes?: number | undefined;
  readonly log?: (line: string) => void;
  /**
   * Co-located: the volumedriver of this process. Its open vDisks are served straight from
   * their VolumeIo; the others through `volumedrivers` as a stand-alone edge would.
   */
  readonly local?: LocalVolumes | undefined;
  /** Where the edge's metrics go (default: a registry of its own). */
  readonly registry?: Registry | undefined;
}

/** `shale edge serve`: the NBD server in front of the volumedrivers. */
export class EdgeDaemon {
  private constructor(
    private readonly server: NbdServer,
    private readonly provider: ExportProvider,
    private readonly exports: VolumedriverExports,
    private readonly metricsServer: MetricsServer | undefined,
    readonly registry: Registry,
  ) {}

  get host(): string {
    return this.server.host;
  }
  get port(): number {
    return this.server.port;
  }
  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }
  get connectionCount(): number {
    return this.server.connectionCount;
  }
  routes(): ExportRoute[] {
    return this.exports.routes();
  }

  static async start(options: EdgeDaemonOptions): Promise<EdgeDaemon> {
    const registry = options.registry ?? new Registry();
    const metrics = new EdgeMetrics(registry);
    const exports = new VolumedriverExports({
      volumedrivers: options.volumedrivers,
      readOnly: options.readOnly ?? false,
      ...(options.requestTimeoutMs === undefined
        ? {}
        : { requestTimeoutMs: options.requestTimeoutMs }),
      ...(options.log === undefined ? {} : { log: options.log }),
    });
    const host = options.host ?? '127.0.0.1';
    const provider: ExportProvider =
      options.local === undefined
        ? exports
        : new CoLocatedExports({
            local: options.local,
            remote: exports,
            readOnly: options.readOnly ?? false,
          });
    const server = await NbdServer.start({
      provider,
      metrics,
      host,
      port: options.port ?? NBD_DEFAULT_PORT,
      defaultExport: options.defaultExport,
      ...(options.maxBufferedBytes === undefined
        ? {}
        : { maxBufferedBytes: options.maxBufferedBytes }),
      ...(options.log === undefined ? {} : { log: options.log }),
    });
    let metricsServer: MetricsServer | undefined;
    try {
      if (options.metricsPort !== undefined) {
        metricsServer = await startMetricsServer(registry, { host, port: options.metricsPort });
      }
    } catch (err) {
      await server.close(0);
      await provider.close();
      throw err;
    }
    return new EdgeDaemon(server, provider, exports, metricsServer, registry);
  }

  /** Stops accepting, lets connections finish for up to graceMs, then closes the streams. */
  async close(graceMs = EDGE_SHUTDOWN_GRACE_MS): Promise<void> {
    await this.metricsServer?.close();
    await this.server.close(graceMs);
    await this.provider.close();
  }
}
