import { assert, errorMessage } from '@shale/common';
import { OrphanCollector } from './maintenance-orphans.js';
import { RepairScan } from './maintenance-repair.js';
import { MaintenanceState } from './maintenance-state.js';
import {
  emptySummary,
  type MaintenanceOptions,
  type MaintenanceStats,
  maintenanceKeys,
  type PassOptions,
  type PassSummary,
  type Progress,
} from './maintenance-types.js';

export {
  DEFAULT_MAINTENANCE_LIMITS,
  type MaintenanceLimits,
  type MaintenanceOptions,
  type MaintenanceStats,
  maintenanceKeys,
  type PassOptions,
  type PassSummary,
  type UnrecoverableObject,
} from './maintenance-types.js';

/**
 * Maintenance of one backend: repair, completion and orphan collection. One pass:
 *
 *   probe OSDs -> scan (namespace by namespace, manifest by manifest, in key order, from the
 *   stored progress): classify every chunk's fragments (healthy / missing / lost / bad) ->
 *   per batch: repair the most endangered objects first (read k good fragments ->
 *   rebuildFragments -> write on live OSDs -> manifest txn conditional on the manifest being
 *   unchanged -> delete the old copies) -> save progress -> ... -> orphans (list each OSD's
 *   fragment keys; those in no current manifest for grace ms are deleted) -> done.
 *
 * Maintenance is not a writer: it never compares on the namespace epoch, only on the manifest
 * key (modRevision), so it can neither resurrect an overwritten or deleted object nor undo a
 * writer's commit. It needs no encryption key: it moves and rebuilds stored bytes only.
 * Run one maintenance process per backend.
 *
 * This class runs the pass; the phases live in their own files, sharing one MaintenanceState:
 *
 *   maintenance-state.ts    MaintenanceState: KV, OSD pool, OSD states (probe, health),
 *                           the pass summary and counters, shared helpers
 *   maintenance-repair.ts   RepairScan: scan, classify, verify, repair, manifest commit
 *   maintenance-orphans.ts  OrphanCollector: orphan listing, first-seen times, deletion
 *   maintenance-types.ts    the options, limits, summaries, stats and KV keys
 */

export class Maintenance {
  private readonly state: MaintenanceState;
  private readonly repair: RepairScan;
  private readonly orphans: OrphanCollector;
  private running = false;

  constructor(options: MaintenanceOptions) {
    this.state = new MaintenanceState(options);
    this.repair = new RepairScan(this.state);
    this.orphans = new OrphanCollector(this.state);
  }

  stats(): MaintenanceStats {
    return { ...this.state.counters };
  }

  close(): void {
    this.state.pool.close();
    this.state.namespaces.close();
  }

  /** The stored progress of an unfinished pass, if any. */
  async progress(): Promise<Progress | undefined> {
    const item = await this.state.kv.get(maintenanceKeys.progress(this.state.backendId));
    return item === undefined ? undefined : decodeProgress(item.value);
  }

  /**
   * One pass: scan and repair (resuming a stored progress), then orphan collection. A pass
   * that stops early (maxObjects) saves its progress and reports complete: false.
   */
  async runPass(options: PassOptions = {}): Promise<PassSummary> {
    assert(!this.running, 'one maintenance pass at a time');
    this.running = true;
    const startMs = Date.now();
    this.state.summary = emptySummary();
    try {
      await this.state.probeOsds();
      const stored = await this.progress();
      const verify = stored?.verify ?? options.verify === true;
      if (stored !== undefined && stored.phase === 'scan')
        this.state.summary.resumedFrom = { nsId: stored.nsId, name: stored.name };
      let complete = true;
      if (stored === undefined || stored.phase === 'scan') {
        complete = await this.repair.scanPhase(stored, verify, options.maxObjects ?? Infinity);
      }
      if (complete && options.collectOrphans !== false) {
        await this.state.saveProgress({ phase: 'orphans', nsId: '', name: '', verify });
        await this.orphans.orphanPhase();
      }
      if (complete) await this.state.kv.delete(maintenanceKeys.progress(this.state.backendId));
      this.state.summary.complete = complete;
      this.state.counters.passes += 1;
      return this.state.summary;
    } finally {
      this.state.summary.durationMs = Date.now() - startMs;
      this.running = false;
    }
  }
}

export interface MaintenanceLoopOptions {
  /** Pause between passes. */
  readonly intervalMs: number;
  /** A verify pass runs when the last one started at least this long ago. */
  readonly verifyIntervalMs: number;
  readonly signal: AbortSignal;
  readonly onPass?: (summary: PassSummary) => void;
  readonly log?: (line: string) => void;
}

/**
 * Runs passes until `signal` aborts: a failed pass is logged and retried after the interval
 * (its progress is stored, so it resumes). Resolves once the current pass has ended.
 */
export async function runMaintenanceLoop(
  maintenance: Maintenance,
  options: MaintenanceLoopOptions,
): Promise<void> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let lastVerifyMs = -Infinity;
  while (!options.signal.aborted) {
    const verify = Date.now() - lastVerifyMs >= options.verifyIntervalMs;
    if (verify) lastVerifyMs = Date.now();
    try {
      options.onPass?.(await maintenance.runPass({ verify }));
    } catch (err) {
      log(`maintenance pass failed (resumes next time): ${errorMessage(err)}`);
    }
    if (options.signal.aborted) break;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, options.intervalMs);
      function done(): void {
        clearTimeout(timer);
        options.signal.removeEventListener('abort', done);
        resolve();
      }
      options.signal.addEventListener('abort', done);
    });
  }
}

function decodeProgress(bytes: Uint8Array): Progress | undefined {
  try {
    const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
    if (
      (value.phase === 'scan' || value.phase === 'orphans') &&
      typeof value.nsId === 'string' &&
      typeof value.name === 'string' &&
      typeof value.verify === 'boolean'
    )
      return { phase: value.phase, nsId: value.nsId, name: value.name, verify: value.verify };
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
  }
  return undefined; // unreadable progress: start over (a full pass is always safe)
}
