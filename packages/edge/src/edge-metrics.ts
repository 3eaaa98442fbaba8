import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BudgetWaitReason, BufferBudgetStats } from './buffer-budget.js';
import type {
  ConnectionObserver,
  ExportObserver,
  ProtocolErrorKind,
  RequestKind,
} from './connection-observer.js';

const KINDS: readonly RequestKind[] = [
  'read',
  'write',
  'flush',
  'trim',
  'write_zeroes',
  'block_status',
];

/**
 * The edge's Prometheus metrics, per export (vDisk): requests and errors by kind, payload
 * bytes, latency histograms, requests in flight; and per server: connections and protocol
 * errors. Children are bound once per export so the hot path does no label lookups.
 */
export class EdgeMetrics implements ConnectionObserver {
  private readonly requests: Counter<'export' | 'op'>;
  private readonly errors: Counter<'export' | 'op'>;
  private readonly bytes: Counter<'export' | 'op'>;
  private readonly latency: Histogram<'export' | 'op'>;
  private readonly inFlight: Gauge<'export'>;
  private readonly protocolErrors: Counter<'kind'>;
  readonly connectionsOpen: Gauge;
  readonly connectionsAccepted: Counter;
  readonly connectionsRefused: Counter;
  private readonly byExport = new Map<string, ExportObserver>();
  private readonly budgetPauses: Counter<'reason'>;
  private budgetStats: (() => BufferBudgetStats) | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'shale_edge_requests_total',
      help: 'NBD requests answered, by export and kind',
      labelNames: ['export', 'op'],
      registers,
    });
    this.errors = new Counter({
      name: 'shale_edge_request_errors_total',
      help: 'NBD requests answered with an error by the export (refusals are protocol errors)',
      labelNames: ['export', 'op'],
      registers,
    });
    this.bytes = new Counter({
      name: 'shale_edge_bytes_total',
      help: 'payload bytes read and written, by export and kind',
      labelNames: ['export', 'op'],
      registers,
    });
    this.latency = new Histogram({
      name: 'shale_edge_request_seconds',
      help: 'time from a request parsed to its reply queued, by export and kind',
      labelNames: ['export', 'op'],
      buckets: [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
        10, 30,
      ],
      registers,
    });
    this.inFlight = new Gauge({
      name: 'shale_edge_requests_in_flight',
      help: 'NBD requests running, by export',
      labelNames: ['export'],
      registers,
    });
    this.protocolErrors = new Counter({
      name: 'shale_edge_protocol_errors_total',
      help: 'connections closed for breaking the protocol, refused requests, option errors',
      labelNames: ['kind'],
      registers,
    });
    this.connectionsOpen = new Gauge({
      name: 'shale_edge_connections',
      help: 'NBD connections open',
      registers,
    });
    this.connectionsAccepted = new Counter({
      name: 'shale_edge_connections_accepted_total',
      help: 'NBD connections accepted',
      registers,
    });
    const budget = (): BufferBudgetStats | undefined => this.budgetStats?.();
    new Gauge({
      name: 'shale_edge_buffered_bytes',
      help: 'bytes all NBD connections hold: payload in flight plus replies not yet sent',
      registers,
      collect() {
        this.set(budget()?.bufferedBytes ?? 0);
      },
    });
    new Gauge({
      name: 'shale_edge_buffered_bytes_peak',
      help: 'the most bytes all NBD connections held at once since the edge started',
      registers,
      collect() {
        this.set(budget()?.peakBytes ?? 0);
      },
    });
    new Gauge({
      name: 'shale_edge_buffered_bytes_limit',
      help: 'the memory budget of all NBD connections together',
      registers,
      collect() {
        this.set(budget()?.limitBytes ?? 0);
      },
    });
    new Gauge({
      name: 'shale_edge_budget_waiting_connections',
      help: 'NBD connections not read now because of the memory budget',
      registers,
      collect() {
        this.set(budget()?.waiting ?? 0);
      },
    });
    this.budgetPauses = new Counter({
      name: 'shale_edge_budget_pauses_total',
      help: 'times a connection stopped reading for the memory budget (full, or its share held)',
      labelNames: ['reason'],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'shale_edge_connections_refused_total',
      help: 'NBD connections closed at once because the server was at its connection limit',
      registers,
    });
  }

  forExport(name: string): ExportObserver {
    const known = this.byExport.get(name);
    if (known !== undefined) return known;
    const inFlight = this.inFlight.labels(name);
    const perKind = new Map(
      KINDS.map((kind) => [
        kind,
        {
          requests: this.requests.labels(name, kind),
          errors: this.errors.labels(name, kind),
          bytes: this.bytes.labels(name, kind),
          latency: this.latency.labels(name, kind),
        },
      ]),
    );
    const observer: ExportObserver = {
      requestStarted: () => inFlight.inc(),
      requestDone: (kind, seconds, bytes, failed) => {
        inFlight.dec();
        const m = perKind.get(kind);
        if (m === undefined) return;
        m.requests.inc();
        if (failed) m.errors.inc();
        if (bytes > 0) m.bytes.inc(bytes);
        m.latency.observe(seconds);
      },
    };
    this.byExport.set(name, observer);
    return observer;
  }

  protocolError(kind: ProtocolErrorKind): void {
    this.protocolErrors.labels(kind).inc();
  }

  /** Where the buffered-bytes gauges read from (the server's budget). */
  watchBudget(stats: () => BufferBudgetStats): void {
    this.budgetStats = stats;
  }

  budgetPaused(reason: BudgetWaitReason): void {
    this.budgetPauses.labels(reason).inc();
  }
}
