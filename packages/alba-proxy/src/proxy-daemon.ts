import type * as grpc from '@grpc/grpc-js';
import type { KvStore } from '@shale/arakoon-kv';
import { AsdClient } from '@shale/asd';
import {
  bindGrpcServer,
  isShaleError,
  type MetricsServer,
  shutdownGrpcServer,
  startMetricsServer,
} from '@shale/common';
import { BackendRegistry } from './backend-registry.js';
import { ProxyErrorCode } from './errors.js';
import { FragmentCache } from './fragment-cache.js';
import { FileKeyProvider, type KeyProvider } from './key-provider.js';
import type { OsdAddress } from './osd.js';
import { ProxyEngine } from './proxy-engine.js';
import { createProxyMetrics } from './proxy-metrics.js';
import { createProxyGrpcServer } from './proxy-service.js';

export interface ProxyDaemonOptions {
  /** The metadata store, opened by the caller (and closed by it after stop()). */
  readonly kv: KvStore;
  /** The backend this proxy serves; its id is its name. */
  readonly backend: string;
  /** ASDs (host:port) to make sure are OSDs of the backend: each is asked for its id and node. */
  readonly asdAddresses?: readonly string[];
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly cacheDir?: string | undefined;
  readonly cacheBytes?: number | undefined;
  /** Encryption keys (0600); created on first use. Without it, encrypting presets are refused. */
  readonly keyFile?: string | undefined;
  /** Serve Prometheus /metrics and /health here. */
  readonly metricsPort?: number | undefined;
  readonly log?: (line: string) => void;
}

/** `shale proxy serve`: a ProxyEngine behind the ProxyService. */
export class ProxyDaemon {
  private constructor(
    readonly engine: ProxyEngine,
    private readonly server: grpc.Server,
    private readonly metricsServer: MetricsServer | undefined,
    readonly host: string,
    readonly port: number,
  ) {}

  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  static async start(options: ProxyDaemonOptions): Promise<ProxyDaemon> {
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    const host = options.host ?? '127.0.0.1';
    await ensureBackend(options.kv, options.backend, options.asdAddresses ?? [], log);
    const fragmentCache =
      options.cacheDir === undefined
        ? undefined
        : await FragmentCache.open({
            dir: options.cacheDir,
            quotaBytes: options.cacheBytes ?? 1024 ** 3,
            log,
          });
    let keyProvider: KeyProvider | undefined;
    if (options.keyFile !== undefined)
      keyProvider = await FileKeyProvider.open(options.keyFile, { create: true });
    const engine = new ProxyEngine({
      kv: options.kv,
      backendId: options.backend,
      ...(fragmentCache === undefined ? {} : { fragmentCache }),
      ...(keyProvider === undefined ? {} : { keyProvider }),
      log,
    });
    const server = createProxyGrpcServer(engine, options.backend);
    let metricsServer: MetricsServer | undefined;
    try {
      const port = await bindGrpcServer(server, host, options.port);
      if (options.metricsPort !== undefined) {
        metricsServer = await startMetricsServer(createProxyMetrics(engine, fragmentCache), {
          host,
          port: options.metricsPort,
        });
      }
      return new ProxyDaemon(engine, server, metricsServer, host, port);
    } catch (err) {
      server.forceShutdown();
      await metricsServer?.close();
      await engine.close();
      throw err;
    }
  }

  /** Stops taking calls, lets the ones in progress finish (up to graceMs), drains background writes. */
  async stop(graceMs = 10_000): Promise<void> {
    await shutdownGrpcServer(this.server, graceMs);
    await this.metricsServer?.close();
    await this.engine.close();
  }
}

/** Creates the backend if it is missing and adds every listed ASD that is not an OSD of it yet. */
async function ensureBackend(
  kv: KvStore,
  backend: string,
  asdAddresses: readonly string[],
  log: (line: string) => void,
): Promise<void> {
  const osds: OsdAddress[] = [];
  for (const address of asdAddresses) {
    const client = new AsdClient(address, { deadlineMs: 10_000 });
    try {
      const stats = await client.stats();
      osds.push({ osdId: stats.asdId, nodeId: stats.nodeId, address });
    } finally {
      client.close();
    }
  }
  const registry = new BackendRegistry(kv);
  const existing = await registry.getBackend(backend);
  if (existing === undefined) {
    if (osds.length === 0) {
      throw new Error(
        `backend ${backend} does not exist; name its ASDs with --asd HOST:PORT to create it`,
      );
    }
    await registry.createBackend({ backendId: backend, name: backend, osds });
    log(`proxy: created backend ${backend} with ${osds.length} OSDs`);
    return;
  }
  for (const osd of osds) {
    if (existing.osdIds.includes(osd.osdId)) continue;
    try {
      await registry.addOsd(backend, osd);
      log(`proxy: added OSD ${osd.osdId} (${osd.address}) to backend ${backend}`);
    } catch (err) {
      if (!isShaleError(err, ProxyErrorCode.OsdExists)) throw err;
    }
  }
}
