import http from 'node:http';
import { Counter, type Registry } from 'prom-client';
import { listenOn } from './listen.js';

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves a prom-client registry at GET /metrics (and a liveness probe at GET /health)
 * on its own port, so scraping never competes with the data path's listener.
 */
export async function startMetricsServer(
  registry: Registry,
  options: { host: string; port: number; health?: () => Promise<boolean> },
): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics failed: ${String(err)}\n`);
        },
      );
      return;
    }
    if (req.method === 'GET' && path === '/health') {
      const probe = options.health ?? (async () => true);
      probe().then(
        (ok) => {
          res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
          res.end(ok ? 'ok\n' : 'unhealthy\n');
        },
        () => {
          res.writeHead(503, { 'content-type': 'text/plain' });
          res.end('unhealthy\n');
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try /metrics or /health\n');
  });
  const port = await listenOn(server, options.port, options.host);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Registers one Prometheus counter per `[name, help, field]` row, each reading its value
 * from `read()` at scrape time. For components that keep plain, only-growing counters.
 */
export function registerStatsCounters<S>(
  registry: Registry,
  rows: readonly (readonly [name: string, help: string, field: keyof S])[],
  read: () => S,
): void {
  for (const [name, help, field] of rows) {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(Number(read()[field]));
      },
    });
  }
}
