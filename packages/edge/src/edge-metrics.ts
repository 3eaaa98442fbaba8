import { FastHistogram, type FastHistogramChild } from '@shale/common';
import { Counter, Gauge, type Registry } from 'prom-client';
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
 * errors. The per-request figures are plain numbers per export and kind, read into the
 * prom-client metrics when scraped, and the latency histogram is a FastHistogram with its
 * series bound once per export: the hot path does no label lookups (prom-client's own
 * inc/observe validate and hash labels on every call).
 */

interface KindCounts {
  requests: number;
  errors: number;
  bytes: number;
  readonly latency: FastHistogramChild;
}

interface ExportCounts {
  inFlight: number;
  readonly kinds: Map<RequestKind, KindCounts>;
}
export class EdgeMetrics implements ConnectionObserver {
  private readonly latency: FastHistogram;
  private readonly counts = new Map<string, ExportCounts>();
  private readonly protocolErrors: Counter<'kind'>;
  readonly connectionsOpen: Gauge;
  readonly connectionsAccepted: Counter;
  readonly connectionsRefused: Counter;
  private readonly byExport = new Map<string, ExportObserver>();
  private readonly budgetPauses: Counter<'reason'>;
  private budgetStats: (() => BufferBudgetStats) | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    const counts = this.counts;
    /** collect() of a per-export, per-kind counter: the totals as of now. */
    const collectKinds = (field: 'requests' | 'errors' | 'bytes') =>
      function (this: Counter<'export' | 'op'>): void {
        this.reset();
        for (const [name, perExport] of counts) {
          for (const [kind, c] of perExport.kinds) this.inc({ export: name, op: kind }, c[field]);
        }
      };
    new Counter({
      name: 'shale_edge_requests_total',
      help: 'NBD requests answered, by export and kind',
      labelNames: ['export', 'op'],
      registers,
      collect: collectKinds('requests'),
    });
    new Counter({
      name: 'shale_edge_request_errors_total',
      help: 'NBD requests answered with an error by the export (refusals are protocol errors)',
      labelNames: ['export', 'op'],
      registers,
      collect: collectKinds('errors'),
    });
    new Counter({
      name: 'shale_edge_bytes_total',
      help: 'payload bytes read and written, by export and kind',
      labelNames: ['export', 'op'],
      registers,
      collect: collectKinds('bytes'),
    });
    this.latency = new FastHistogram({
      name: 'shale_edge_request_seconds',
      help: 'time from a request parsed to its reply queued, by export and kind',
      labelNames: ['export', 'op'],
      buckets: [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
        10, 30,
      ],
      registers,
    });
    new Gauge({
      name: 'shale_edge_requests_in_flight',
      help: 'NBD requests running, by export',
      labelNames: ['export'],
      registers,
      collect() {
        this.reset();
        for (const [name, perExport] of counts) this.set({ export: name }, perExport.inFlight);
      },
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
    const perExport: ExportCounts = {
      inFlight: 0,
      kinds: new Map(
        KINDS.map((kind) => [
          kind,
          { requests: 0, errors: 0, bytes: 0, latency: this.latency.child(name, kind) },
        ]),
      ),
    };
    this.counts.set(name, perExport);
    const observer: ExportObserver = {
      requestStarted: () => {
        perExport.inFlight += 1;
      },
      requestDone: (kind, seconds, bytes, failed) => {
        perExport.inFlight -= 1;
        const m = perExport.kinds.get(kind);
        if (m === undefined) return;
        m.requests += 1;
        if (failed) m.errors += 1;
        if (bytes > 0) m.bytes += bytes;
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
