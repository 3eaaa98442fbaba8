import { errorMessage } from '@shale/common';

/**
 * Data at risk: acknowledged writes (and trims) whose TLog is not in the backend yet, so a
 * restore from the backend would not have them. One volume's account of them, by TLog:
 *
 *   first mutation in the current TLog ──> entry {bytes, sinceMs}
 *        │     a tick (every DATA_AT_RISK_TICK of the bound) finds it older than bound/2
 *        │     while its TLog is still current: the volume seals the SCO and rolls the TLog
 *        ▼
 *   the TLog closes ──> upload queue ──> the root names it ──> entry dropped
 *
 * The metadata store hears of it twice per episode, not per write: a marker when the first
 * entry appears (awaited before that write is acknowledged, so a restore that finds the
 * marker knows writes were lost), and its removal when the last entry goes.
 */

export interface DataAtRiskMarker {
  readonly sinceMs: number;
  readonly generation: number;
  readonly tlogNumber: number;
}

export interface DataAtRiskOptions {
  /** The bound: a write is in the backend within this long (when the backend keeps up). */
  readonly maxMs: number;
  /** The volume's name, for log lines. */
  readonly name: string;
  /** The current TLog's number and the history's generation. */
  readonly current: () => { tlogNumber: number; generation: number };
  /** Seal the open SCO and roll the TLog `tlogNumber` if it is still current. */
  readonly seal: (tlogNumber: number) => Promise<void>;
  /** Keeps the metadata store's marker in step; must not reject. */
  readonly report?: ((marker: DataAtRiskMarker | undefined) => Promise<void>) | undefined;
  readonly log: (message: string) => void;
  readonly now?: () => number;
}

interface TlogRisk {
  bytes: number;
  readonly sinceMs: number;
}

/** Ticks per bound: the seal comes between bound/2 and bound/2 + bound/8. */
const TICKS_PER_BOUND = 8;
const TICK_MAX_MS = 1000;

export class DataAtRisk {
  private readonly byTlog = new Map<number, TlogRisk>();
  private readonly ticker: NodeJS.Timeout;
  private sealing = false;
  private reports: Promise<void> = Promise.resolve();
  private markerUp = false;
  private markerPending = false;
  private overdueLogged = false;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly options: DataAtRiskOptions) {
    this.now = options.now ?? Date.now;
    this.ticker = setInterval(
      () => this.tick(),
      Math.min(TICK_MAX_MS, options.maxMs / TICKS_PER_BOUND),
    );
    this.ticker.unref();
  }

  /**
   * `bytes` of mutations went into TLog `tlogNumber` (on the data path: a Map lookup). Call
   * `settle()` before acknowledging them.
   */
  note(tlogNumber: number, bytes: number, sinceMs = this.now()): void {
    let risk = this.byTlog.get(tlogNumber);
    if (risk === undefined) {
      risk = { bytes: 0, sinceMs };
      this.byTlog.set(tlogNumber, risk);
      if (!this.markerUp) {
        this.markerUp = true;
        this.markerPending = true;
      }
    }
    risk.bytes += bytes;
  }

  /** Resolves once the marker for what was noted is in the metadata store. */
  async settle(): Promise<void> {
    if (this.markerPending) {
      this.markerPending = false;
      const oldest = this.oldest();
      if (oldest !== undefined) {
        const { generation } = this.options.current();
        this.queueReport({ sinceMs: oldest.sinceMs, tlogNumber: oldest.tlogNumber, generation });
      }
    }
    await this.reports;
  }

  /** Every TLog in `chain` is in the backend and named by its root. */
  inBackend(chain: readonly number[]): void {
    for (const n of chain) this.byTlog.delete(n);
    this.afterDrop();
  }

  /** TLogs cut by a rollback: their writes are gone on purpose; `into` holds what was kept. */
  rewritten(cut: readonly number[], keptFrom: number, into: number): void {
    const kept = this.byTlog.get(keptFrom);
    for (const n of cut) this.byTlog.delete(n);
    if (kept !== undefined) this.byTlog.set(into, kept);
    this.afterDrop();
  }

  get boundMs(): number {
    return this.options.maxMs;
  }

  get bytes(): number {
    let total = 0;
    for (const risk of this.byTlog.values()) total += risk.bytes;
    return total;
  }

  /** Age of the oldest write at risk; 0 when there is none. */
  ageMs(): number {
    const oldest = this.oldest();
    return oldest === undefined ? 0 : Math.max(0, this.now() - oldest.sinceMs);
  }

  /**
   * Logs once when data stays at risk past the bound (the backend is down or slow), and once
   * when it is back within it.
   */
  checkOverdue(): void {
    const age = this.ageMs();
    if (age > this.options.maxMs && !this.overdueLogged) {
      this.overdueLogged = true;
      this.options.log(
        `${this.options.name}: ${this.bytes} B of acknowledged writes have not reached the backend for ${age} ms (bound ${this.options.maxMs} ms); they would be lost with this write buffer`,
      );
    } else if (age <= this.options.maxMs && this.overdueLogged) {
      this.overdueLogged = false;
      this.options.log(`${this.options.name}: data at risk back within its bound`);
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.ticker);
  }

  /** Seals the current TLog when its oldest write is half the bound old (one seal at a time). */
  private tick(): void {
    this.checkOverdue();
    if (this.stopped || this.sealing) return;
    const { tlogNumber } = this.options.current();
    const risk = this.byTlog.get(tlogNumber);
    if (risk === undefined || this.now() - risk.sinceMs < this.options.maxMs / 2) return;
    this.sealing = true;
    this.options
      .seal(tlogNumber)
      .catch((err: unknown) => {
        this.options.log(
          `${this.options.name}: sealing for the data-at-risk bound failed (tried again): ${errorMessage(err)}`,
        );
      })
      .finally(() => {
        this.sealing = false;
      });
  }

  private oldest(): { tlogNumber: number; sinceMs: number } | undefined {
    let found: { tlogNumber: number; sinceMs: number } | undefined;
    for (const [tlogNumber, risk] of this.byTlog) {
      if (found === undefined || risk.sinceMs < found.sinceMs)
        found = { tlogNumber, sinceMs: risk.sinceMs };
    }
    return found;
  }

  private afterDrop(): void {
    if (this.byTlog.size > 0 || !this.markerUp) return;
    this.markerUp = false;
    this.markerPending = false;
    this.queueReport(undefined);
    this.checkOverdue();
  }

  private queueReport(marker: DataAtRiskMarker | undefined): void {
    const report = this.options.report;
    if (report === undefined) return;
    this.reports = this.reports.then(() => report(marker));
  }
}
