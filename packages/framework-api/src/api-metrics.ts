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
