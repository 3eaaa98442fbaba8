import net from 'node:net';
import type { ExportProvider } from './block-export.js';
import { BufferBudget, type BufferBudgetStats } from './buffer-budget.js';
import {
  EDGE_MAX_BUFFERED_BYTES,
  EDGE_SHUTDOWN_GRACE_MS,
  NBD_MAX_CONNECTIONS,
} from './constants.js';
import type { EdgeMetrics } from './edge-metrics.js';
import { NbdConnection } from './nbd-connection.js';

export interface NbdServerOptions {
  readonly provider: ExportProvider;
  readonly metrics: EdgeMetrics;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly defaultExport?: string | undefined;
  readonly maxConnections?: number;
  readonly log?: (line: string) => void;
  /** Handshake deadlines (default NBD_HANDSHAKE_IDLE_TIMEOUT_MS, NBD_HANDSHAKE_MAX_MS). */
  readonly handshakeIdleTimeoutMs?: number;
  readonly handshakeMaxMs?: number;
  /** The memory budget of all connections together (default EDGE_MAX_BUFFERED_BYTES). */
  readonly maxBufferedBytes?: number;
}

/** The NBD listener: one NbdConnection per client, up to a connection limit. */
export class NbdServer {
  private readonly connections = new Set<NbdConnection>();

  private constructor(
    private readonly server: net.Server,
    private readonly budget: BufferBudget,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(options: NbdServerOptions): Promise<NbdServer> {
    const host = options.host ?? '127.0.0.1';
    const maxConnections = options.maxConnections ?? NBD_MAX_CONNECTIONS;
    let instance: NbdServer | undefined;
    const budget = new BufferBudget(options.maxBufferedBytes ?? EDGE_MAX_BUFFERED_BYTES, (reason) =>
      options.metrics.budgetPaused(reason),
    );
    options.metrics.watchBudget(() => budget.stats());
    // Half-open: a client that shuts down its side (without NBD_CMD_DISC) still gets the
    // replies to requests in flight; NbdConnection ends our side once they are sent.
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      const self = instance;
      if (self === undefined || self.connections.size >= maxConnections) {
        options.metrics.connectionsRefused.inc();
        socket.destroy();
        return;
      }
      const connection = new NbdConnection(socket, {
        provider: options.provider,
        observer: options.metrics,
        defaultExport: options.defaultExport,
        budget,
        ...(options.log === undefined ? {} : { log: options.log }),
        ...(options.handshakeIdleTimeoutMs === undefined
          ? {}
          : { handshakeIdleTimeoutMs: options.handshakeIdleTimeoutMs }),
        ...(options.handshakeMaxMs === undefined ? {} : { handshakeMaxMs: options.handshakeMaxMs }),
      });
      self.connections.add(connection);
      options.metrics.connectionsAccepted.inc();
      options.metrics.connectionsOpen.inc();
      void connection.closed.then(() => {
        self.connections.delete(connection);
        options.metrics.connectionsOpen.dec();
      });
      connection.start();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as net.AddressInfo;
    instance = new NbdServer(server, budget, host, address.port);
    return instance;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** The memory budget: bytes buffered by all connections now, at most, and pauses. */
  get bufferBudget(): BufferBudgetStats {
    return this.budget.stats();
  }

  /**
   * Stops listening, gives open connections up to graceMs to finish (a client that
   * disconnects is done), then cuts the rest.
   */
  async close(graceMs = EDGE_SHUTDOWN_GRACE_MS): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.connections.size > 0) {
      const all = Promise.all([...this.connections].map((c) => c.closed));
      const timer = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([all, timer]);
      for (const connection of this.connections) connection.destroy();
      await Promise.all([...this.connections].map((c) => c.closed));
    }
    await stopped;
  }
}
