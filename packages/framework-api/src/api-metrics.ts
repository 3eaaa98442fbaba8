import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ConnectionCounters } from './connection-guard.js';
import { API_LATENCY_BUCKETS_SECONDS } from './constants.js';
import type { Operation } from './schemas.js';

/** The route label of requests that matched no route (one label, not one per path). */
export const UNMATCHED_ROUTE = 'unmatched';

/**
 * The API's Prometheus metrics: requests by method, route template and status; latency by
 * method and route; requests in flight; operations finished by kind and state; answers
 * that failed their own schema (server bugs).
 */
export class ApiMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly latency: Histogram<'method' | 'route'>;
  readonly inFlight: Gauge;
  private readonly operations: Counter<'kind' | 'state'>;
  readonly schemaViolations: Counter;
  private readonly connectionsEvicted: Counter<'reason'>;
  private readonly connectionsRefused: Counter<'reason'>;

  constructor(runningOperations: () => number, openConnections: () => number = () => 0) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'shale_api_http_requests_total',
      help: 'HTTP requests answered, by method, route template and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.latency = new Histogram({
      name: 'shale_api_http_request_duration_seconds',
      help: 'time from a request arriving to its answer written, by method and route template',
      labelNames: ['method', 'route'],
      buckets: [...API_LATENCY_BUCKETS_SECONDS],
      registers,
    });
    this.inFlight = new Gauge({
      name: 'shale_api_http_requests_in_flight',
      help: 'HTTP requests being handled',
      registers,
    });
    this.operations = new Counter({
      name: 'shale_api_operations_finished_total',
      help: 'background operations finished, by kind and state',
      labelNames: ['kind', 'state'],
      registers,
    });
    new Gauge({
      name: 'shale_api_operations_running',
      help: 'background operations running',
      registers,
      collect() {
        this.set(runningOperations());
      },
    });
    new Gauge({
      name: 'shale_api_connections_open',
      help: 'TCP connections held (closing ones included)',
      registers,
      collect() {
        this.set(openConnections());
      },
    });
    this.connectionsEvicted = new Counter({
      name: 'shale_api_connections_evicted_total',
      help: 'connections not serving a request closed to admit a new one, by the cap that was reached',
      labelNames: ['reason'],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'shale_api_connections_refused_total',
      help: 'new connections refused because every held one was serving a request, by cap',
      labelNames: ['reason'],
      registers,
    });
    this.schemaViolations = new Counter({
      name: 'shale_api_response_schema_violations_total',
      help: 'answers that failed their own schema and were replaced by 500 API_INTERNAL (bugs)',
      registers,
    });
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.requests.inc({ method, route, status: String(status) });
    this.latency.observe({ method, route }, seconds);
  }

  /**
   * Thin provisioning, computed at every scrape from `source` (one vDisk list call, one probe
   * of each ASD, so a scrape takes up to the probe deadline): provisioned bytes, free bytes
   * (once per file system), and their ratio (+Inf when nothing is free). NaN when unknown:
   * the figures could not be had, or no ASD answered.
   */
  observeCapacity(
    source: () => Promise<{
      provisionedBytes: number;
      backend: { asdsReachable: number; freeBytes: number };
    }>,
  ): void {
    const registers = [this.registry];
    let pending: Promise<void> | undefined;
    const figures = { provisionedBytes: Number.NaN, freeBytes: Number.NaN, ratio: Number.NaN };
    // One computation serves the three gauges of a scrape (the registry collects them at once).
    const refresh = (): Promise<void> => {
      pending ??= source()
        .then(
          ({ provisionedBytes, backend }) => {
            const free = backend.asdsReachable === 0 ? Number.NaN : backend.freeBytes;
            figures.provisionedBytes = provisionedBytes;
            figures.freeBytes = free;
            figures.ratio =
              provisionedBytes === 0
                ? 0
                : free === 0
                  ? Number.POSITIVE_INFINITY
                  : provisionedBytes / free;
          },
          () => {
            figures.provisionedBytes = Number.NaN;
            figures.freeBytes = Number.NaN;
            figures.ratio = Number.NaN;
          },
        )
        .finally(() => {
          pending = undefined;
        });
      return pending;
    };
    new Gauge({
      name: 'shale_api_provisioned_bytes',
      help: 'sum of the sizes of every vDisk (thin: what they could hold, not what they hold)',
      registers,
      async collect() {
        await refresh();
        this.set(figures.provisionedBytes);
      },
    });
    new Gauge({
      name: 'shale_api_backend_free_bytes',
      help: 'free bytes of the reachable active ASDs, once per file system',
      registers,
      async collect() {
        await refresh();
        this.set(figures.freeBytes);
      },
    });
    new Gauge({
      name: 'shale_api_overcommit_ratio',
      help: 'provisioned bytes per free byte in the backend (above 1: over-committed)',
      registers,
      async collect() {
        await refresh();
        this.set(figures.ratio);
      },
    });
  }

  /** The ConnectionGuard's counters. */
  readonly connections: ConnectionCounters = {
    evicted: (reason) => this.connectionsEvicted.inc({ reason }),
    refused: (reason) => this.connectionsRefused.inc({ reason }),
  };

  observeOperation(operation: Operation): void {
    this.operations.inc({ kind: operation.kind, state: operation.state });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
