import os from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import {
  bindGrpcServer,
  type FrameServerCounters,
  type MetricsServer,
  shutdownGrpcServer,
  startMetricsServer,
} from '@shale/common';
import { AsdDataServer } from './data-server.js';
import { createAsdGrpcServer } from './grpc-server.js';
import { AsdMetrics } from './metrics.js';
import { AsdStore } from './object-store.js';

export interface AsdDaemonOptions {
  readonly dir: string;
  readonly host?: string | undefined;
  /** 0 picks a free port. */
  readonly port: number;
  readonly metricsPort?: number | undefined;
  /** The data protocol server's port (fragment puts and gets); 0 or undefined picks a free one. */
  readonly dataPort?: number | undefined;
  /** false: no data server, gRPC only (stats report dataPort 0, as an older ASD). */
  readonly dataServer?: boolean | undefined;
  readonly nodeId?: string | undefined;
  readonly asdId?: string | undefined;
  readonly claim?: boolean | undefined;
  readonly capacityBytes?: number | undefined;
  readonly reserveBytes?: number | undefined;
  readonly log?: ((line: string) => void) | undefined;
}

/** `shale asd serve`: the store, its gRPC service, its data server and its metrics endpoint. */
export class AsdDaemon {
  private constructor(
    readonly store: AsdStore,
    readonly metrics: AsdMetrics,
    private readonly server: grpc.Server,
    private readonly dataServer: AsdDataServer | undefined,
    private readonly metricsServer: MetricsServer | undefined,
    readonly host: string,
    readonly port: number,
  ) {}

  /** 0 when this daemon runs without a data server. */
  get dataPort(): number {
    return this.dataServer?.port ?? 0;
  }

  /** The data server's counters (connections, requests, protocol errors). */
  get dataCounters(): FrameServerCounters | undefined {
    return this.dataServer?.counters;
  }

  /** The data server's receive-buffer pool figures (taken, reused, bytes waiting). */
  get dataPoolStats(): { taken: number; reused: number; freeBytes: number } | undefined {
    return this.dataServer?.payloadPool.stats();
  }

  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  get address(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  static async start(options: AsdDaemonOptions): Promise<AsdDaemon> {
    const host = options.host ?? '127.0.0.1';
    const store = await AsdStore.open({
      dir: options.dir,
      nodeId: options.nodeId ?? os.hostname(),
      asdId: options.asdId,
      claim: options.claim,
      capacityBytes: options.capacityBytes,
      reserveBytes: options.reserveBytes,
      log: options.log,
    });
    const metrics = new AsdMetrics({
      usedBytes: () => store.snapshot().usedBytes,
      objectCount: () => store.snapshot().objectCount,
      capacityBytes: () => store.snapshot().capacityBytes,
      inflightPutBytes: () => store.snapshot().inflightPutBytes,
    });
    store.metrics = metrics;
    let dataServer: AsdDataServer | undefined;
    const server = createAsdGrpcServer(store, metrics, () => dataServer?.port ?? 0);
    let metricsServer: MetricsServer | undefined;
    try {
      if (options.dataServer !== false) {
        dataServer = await AsdDataServer.start(store, metrics, {
          host,
          port: options.dataPort ?? 0,
          log: options.log,
        });
      }
      const port = await bindGrpcServer(server, host, options.port);
      if (options.metricsPort !== undefined) {
        metricsServer = await startMetricsServer(metrics.registry, {
          host,
          port: options.metricsPort,
          health: async () => store.health().status === 'ok',
        });
      }
      return new AsdDaemon(store, metrics, server, dataServer, metricsServer, host, port);
    } catch (err) {
      server.forceShutdown();
      await dataServer?.stop(0);
      await metricsServer?.close();
      await store.close();
      throw err;
    }
  }

  /** Stops taking calls, lets the ones in progress finish (up to graceMs), closes the store. */
  async stop(graceMs = 5000): Promise<void> {
    await Promise.all([shutdownGrpcServer(this.server, graceMs), this.dataServer?.stop(graceMs)]);
    await this.metricsServer?.close();
    await this.store.close();
  }
}
