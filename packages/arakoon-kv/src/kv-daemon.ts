import { type MetricsServer, registerStatsCounters, startMetricsServer } from '@shale/common';
import { Gauge, Registry } from 'prom-client';
import { KV_SERVER_SHUTDOWN_GRACE_MS } from './constants.js';
import { createKvServiceCounters, KvServer, type KvServiceCounters } from './kv-server.js';
import { LevelKv } from './level-kv.js';

export interface KvDaemonOptions {
  /** The LevelKv directory (created if missing); one daemon at a time (KV_DIR_LOCKED). */
  readonly dir: string;
  readonly host?: string | undefined;
  /** 0 picks a free port. */
  readonly port: number;
  /** Serve Prometheus /metrics and /health here. */
  readonly metricsPort?: number | undefined;
}

const COUNTER_ROWS: readonly (readonly [string, string, keyof KvServiceCounters])[] = [
  ['shale_kv_calls_total', 'unary KvService calls answered', 'callsTotal'],
  ['shale_kv_call_errors_total', 'unary KvService calls answered with an error', 'callErrorsTotal'],
  ['shale_kv_watches_opened_total', 'Watch streams opened', 'watchesOpened'],
  ['shale_kv_watches_refused_total', 'Watch streams refused (limit, stopping)', 'watchesRefused'],
  ['shale_kv_watch_messages_sent_total', 'WatchBatch messages sent', 'watchMessagesSent'],
  ['shale_kv_watch_events_sent_total', 'watch events sent', 'watchEventsSent'],
  [
    'shale_kv_watch_drain_waits_total',
    'times a watch waited for its client to read (backpressure)',
    'watchDrainWaits',
  ],
];

/**
 * `shale kv serve`: a LevelKv in one directory behind a KvServer, so that the daemons of one
 * machine (proxy, maintenance, volumedriver, API) share one metadata store.
 */
export class KvDaemon {
  private constructor(
    readonly store: LevelKv,
    private readonly server: KvServer,
    private readonly metricsServer: MetricsServer | undefined,
  ) {}

  get host(): string {
    return this.server.host;
  }

  get port(): number {
    return this.server.port;
  }

  get address(): string {
    return this.server.address;
  }

  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  static async start(options: KvDaemonOptions): Promise<KvDaemon> {
    const host = options.host ?? '127.0.0.1';
    const store = await LevelKv.open({ dir: options.dir });
    const counters = createKvServiceCounters();
    let server: KvServer | undefined;
    let metricsServer: MetricsServer | undefined;
    try {
      server = await KvServer.start({ store, host, port: options.port, counters });
      if (options.metricsPort !== undefined) {
        const registry = new Registry();
        registerStatsCounters(registry, COUNTER_ROWS, () => counters);
        const open = server;
        new Gauge({
          name: 'shale_kv_watches_open',
          help: 'Watch streams open now',
          registers: [registry],
          collect() {
            this.set(open.openWatches);
          },
        });
        new Gauge({
          name: 'shale_kv_revision',
          help: 'the store revision (the last one committed)',
          registers: [registry],
          collect() {
            this.set(store.currentRevision);
          },
        });
        metricsServer = await startMetricsServer(registry, { host, port: options.metricsPort });
      }
      return new KvDaemon(store, server, metricsServer);
    } catch (err) {
      await metricsServer?.close();
      await server?.close(0);
      await store.close();
      throw err;
    }
  }

  /**
   * Stops in the reverse order of start: the metrics endpoint, the server (watches end
   * with KV_UNAVAILABLE, calls in progress get up to graceMs), then the store.
   */
  async close(graceMs = KV_SERVER_SHUTDOWN_GRACE_MS): Promise<void> {
    await this.metricsServer?.close();
    await this.server.close(graceMs);
    // Durability: every write acknowledged to a client was fsynced before its answer.
    await this.store.close();
  }
}
