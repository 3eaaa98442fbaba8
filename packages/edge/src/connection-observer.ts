/** What an NBD connection reports: edge-metrics.ts turns it into Prometheus metrics. */

/** The request kinds metrics are kept for. */
export type RequestKind = 'read' | 'write' | 'flush' | 'trim' | 'write_zeroes' | 'block_status';

export interface ExportObserver {
  requestStarted(): void;
  requestDone(kind: RequestKind, seconds: number, bytes: number, failed: boolean): void;
}

/**
 * Why a connection was closed on the client's account ('violation'), or why a request was
 * refused before it reached the export ('refused'): the metric's label, a fixed set.
 */
export type ProtocolErrorKind = 'violation' | 'handshake-timeout' | 'refused' | 'option-error';

/** What a connection reports (edge-metrics.ts turns it into Prometheus metrics). */
export interface ConnectionObserver {
  forExport(name: string): ExportObserver;
  protocolError(kind: ProtocolErrorKind): void;
}
