import fs from 'node:fs/promises';
import { isShaleError } from '@shale/common';
import {
  LANE_BATCH_MAX_BYTES,
  LANE_BATCH_MAX_OPS,
  LBA_MAP_APPLY_MAX_UPDATES,
  SCO_APPEND_MAX_CLUSTERS,
  SCO_SEALS_IN_BACKGROUND_MAX,
  TRIM_CLUSTER_COUNT_MAX,
} from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { encodeMapPosition, type MapPosition } from './history.js';
import type { LbaUpdate } from './lba-map.js';
import { ScoWriter, type SealedSco } from './sco-writer.js';
import { TLogWriter } from './tlog-file.js';
import type { TLogEntry } from './tlog-format.js';
import { type ClusterIndex, type ClusterLocation, clusterIndex, scoNumber } from './types.js';
import { checkOpen, persistState, type VolumeContext } from './volume-context.js';
import type { ReadPath } from './volume-read-path.js';
import type { UploadPipeline } from './volume-uploads.js';
import type { SpaceGuard } from './write-buffer-space.js';

export type LaneOp =
  | { kind: 'write'; offsetBytes: number; data: Buffer; fua: boolean }
  | { kind: 'trim'; offsetBytes: number; lengthBytes: number; fua: boolean; zeroEdges: boolean }
  | { kind: 'flush' }
  | { kind: 'checkpoint' }
  /** Seal the open SCO and roll TLog `tlogNumber` if it is still current (data-at-risk bound). */
  | { kind: 'seal'; tlogNumber: number }
  /** Journal finished background seals and roll the TLog if due (an idle lane's nudge). */
  | { kind: 'sealed' };

/** A SCO whose seal (fsync, close) runs behind the lane, until its SCO_SEALED is journaled. */
interface PendingSeal {
  readonly scoNumber: number;
  readonly sealing: Promise<SealedSco>;
  /** Set when the seal succeeded (the SCO is durable): journaling it needs no wait. */
  sealed: SealedSco | undefined;
}

interface LaneItem {
  op: LaneOp;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The write lane of one vDisk: writes, trims, flushes and markers (seal, checkpoint),
 * batched. Requests queue up; one batch at a time is turned into cluster payloads
 * (read-modify-write for partial clusters, seeing earlier writes of the same batch),
 * appended to the current SCO (one writev per 256 clusters), journaled in the current
 * TLog (one write), applied to the LBA map (in memory; with the position marker, which a
 * background checkpoint writes to the map's log)
 * and, if any request of the batch asked for it (FLUSH, FUA), made durable with one
 * fdatasync of the SCO and one of the TLog: group commit.
 *
 *   request ─> lane queue ─> batch: RMW ─> SCO append ─> TLog append ─> LBA map ─> [sync] ─> ack
 *                                   └─> SCO full: seal in the background (fsync, close)
 *       a later batch (or a 'sealed' op) ─> SCO_SEALED journaled ─> upload queue
 *                                           └─> (every tlogScos SCOs) TLog roll
 *
 * A full SCO's seal runs behind the lane (at most SCO_SEALS_IN_BACKGROUND_MAX at once):
 * writes go on into the next SCO meanwhile. So after a crash up to that many SCOs plus the
 * open one may lack their SCO_SEALED; recovery seals each. A FLUSH or FUA waits for the
 * seals in progress (their data must be durable too); a TLog roll journals them first, so
 * a closed TLog names the seal of every SCO it has writes for.
 *
 * A hold (snapshots, rollback, scrubbing) waits for the running batch and keeps new ones
 * back. A disk failure in a batch stops the lane (laneFailure) until the vDisk is
 * reopened: the SCO or TLog tail is unknown until recovery cuts it.
 */
export class WriteLane {
  private readonly lane: LaneItem[] = [];
  private laneRunning: Promise<void> | undefined;
  private holds = 0;
  /** The SCO after the current one, created ahead (startSco). */
  private nextSco: Promise<ScoWriter> | undefined;
  /** Seals running behind the lane, oldest first. */
  private readonly pendingSeals: PendingSeal[] = [];
  /** A journaled seal made the TLog due to roll (at the end of the batch). */
  private rollDue = false;
  /** A TLog roll is in progress (seals finishing meanwhile are journaled by it). */
  private rolling = false;
  /** The disk failure (IO or space) that stopped the lane; reads still work. */
  laneFailure: Error | undefined;

  constructor(
    private readonly v: VolumeContext,
    private readonly reads: ReadPath,
    private readonly uploads: UploadPipeline,
    /** The write buffer's space guard (write-buffer-space.ts): throws VD_NO_SPACE to refuse. */
    private readonly space: SpaceGuard | undefined,
  ) {}

  /** A hold is in place and no batch runs (what a snapshot marker needs). */
  get heldAndIdle(): boolean {
    return this.holds > 0 && this.laneRunning === undefined;
  }

  enqueue(op: LaneOp): Promise<void> {
    // A closed (or deleted) vDisk takes nothing more: its directory may be gone.
    if (this.v.closed) {
      return Promise.reject(vdError(VdErrorCode.Closed, `vDisk ${this.v.name} is closed`));
    }
    return new Promise<void>((resolve, reject) => {
      this.lane.push({ op, resolve, reject });
      this.kickLane();
    });
  }

  private kickLane(): void {
    if (this.laneRunning !== undefined || this.holds > 0 || this.lane.length === 0) return;
    // The lane starts a microtask later, not now: the NBD server hands over every request
    // of one socket read synchronously, and they should make one batch, not a batch of the
    // first request and another of the rest.
    this.laneRunning = Promise.resolve()
      .then(() => this.runLane())
      .finally(() => {
        this.laneRunning = undefined;
        this.kickLane();
      });
  }

  private async runLane(): Promise<void> {
    while (this.lane.length > 0 && this.holds === 0) {
      const batch: LaneItem[] = [];
      let bytes = 0;
      while (batch.length < LANE_BATCH_MAX_OPS && this.lane.length > 0) {
        const next = this.lane[0] as LaneItem;
        const size = next.op.kind === 'write' ? next.op.data.length : 0;
        if (batch.length > 0 && bytes + size > LANE_BATCH_MAX_BYTES) break;
        batch.push(this.lane.shift() as LaneItem);
        bytes += size;
      }
      let started = false;
      try {
        if (this.laneFailure !== undefined) throw this.laneFailure;
        if (this.v.fencedBy !== undefined) checkOpen(this.v);
        await this.waitForWriteBuffer();
        // A full write buffer refuses the batch before anything of it is written (after a
        // bounded wait while this vDisk's uploads run and succeed: they give space back;
        // failing ones, on a disk that is full for good, do not).
        if (this.space !== undefined && !this.space.tryAdmit(bytes)) {
          await this.space.admitWaiting(
            bytes,
            () => this.uploads.backlogObjects > 0 && this.uploads.lastUploadError === undefined,
          );
        }
        started = true;
        await this.processBatch(batch.map((item) => item.op));
        for (const item of batch) item.resolve();
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        // A disk failure mid-batch leaves the SCO or TLog tail unknown: nothing more is
        // acknowledged on this volume until it is reopened (which recovers the tail).
        if (
          started &&
          (isShaleError(error, VdErrorCode.IoError) || isShaleError(error, VdErrorCode.NoSpace))
        ) {
          this.laneFailure = error;
          this.v.log(`${this.v.name}: the write lane stopped: ${error.message}; reopen to recover`);
        }
        for (const item of batch) item.reject(error);
      }
    }
  }

  /** Waits until no batch runs and holds new ones back; returns the release. */
  async hold(): Promise<() => void> {
    this.holds += 1;
    await this.laneIdle();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds -= 1;
      this.kickLane();
    };
  }

  async laneIdle(): Promise<void> {
    while (this.laneRunning !== undefined) await this.laneRunning;
  }

  /** Backpressure: a full write buffer waits for uploads instead of failing writes. */
  private async waitForWriteBuffer(): Promise<void> {
    const limit = Math.max(this.v.config.writeBufferBytes - this.v.config.scoSizeBytes, 0);
    while (this.v.dirtyScoBytes > limit && this.v.fencedBy === undefined && !this.v.closed) {
      await new Promise<void>((resolve) => this.uploads.uploadWaiters.push(resolve));
    }
  }

  private async processBatch(ops: readonly LaneOp[]): Promise<void> {
    const cs = this.v.config.clusterSizeBytes;
    const updates: LbaUpdate[] = [];
    /** Cluster contents written (or unmapped: null) earlier in this batch. */
    const overlay = new Map<number, Buffer | null>();
    const run: { index: number; payload: Buffer }[] = [];
    let needSync = false;
    let checkpoint = false;
    let seal = false;
    this.v.tlogWrites = [];
    this.journalFinishedSeals();

    const flushRun = async (): Promise<void> => {
      while (run.length > 0) {
        if (this.v.sco === undefined) await this.startSco();
        const sco = this.v.sco as ScoWriter;
        const part = run.splice(
          0,
          Math.min(run.length, sco.remainingClusters, SCO_APPEND_MAX_CLUSTERS),
        );
        // The data and the TLog entries naming it are written at the same time; the batch
        // is acknowledged only after both (recovery cuts a TLog at data that is missing).
        const appended = sco.appendQueued(part.map((p) => p.payload));
        this.laneWrite(appended.written);
        // A SCO in memory serves reads of its clusters until it is uploaded; without memory
        // the cluster cache takes a copy.
        if (sco.memory === undefined) {
          for (let i = 0; i < part.length; i += 1) {
            const payload = (part[i] as { payload: Buffer }).payload;
            this.v.clusterCache.put(0, sco.scoNumber, appended.firstClusterOffset + i, payload);
          }
        }
        const entries: TLogEntry[] = new Array(part.length);
        for (let i = 0; i < part.length; i += 1) {
          const p = part[i] as { index: number; payload: Buffer };
          const location: ClusterLocation = {
            scoNumber: sco.scoNumber,
            clusterOffset: appended.firstClusterOffset + i,
            crc32c: appended.crc32cs[i] as number,
          };
          entries[i] = {
            type: 'write',
            clusterIndex: p.index as ClusterIndex,
            scoNumber: location.scoNumber,
            clusterOffset: location.clusterOffset,
            crc32c: location.crc32c,
          };
          updates.push({ clusterIndex: p.index as ClusterIndex, location });
        }
        this.laneWrite(this.v.tlog.append(entries));
        this.v.risk.note(this.v.tlog.tlogNumber, part.length * cs);
        this.v.dirtyScoBytes += part.length * cs;
        if (sco.isFull) await this.sealCurrentSco();
      }
    };

    const addToRun = (index: number, payload: Buffer): Promise<void> | undefined => {
      overlay.set(index, payload);
      run.push({ index, payload });
      return run.length >= SCO_APPEND_MAX_CLUSTERS ? flushRun() : undefined;
    };

    /** Undefined when done synchronously (a whole cluster: no read, no promise per cluster). */
    const writeCluster = (
      index: number,
      from: number,
      source: Buffer,
    ): Promise<void> | undefined => {
      // `source` covers cluster bytes [from, from + source.length).
      if (from === 0 && source.length === cs) return addToRun(index, source);
      return (async () => {
        const payload = Buffer.alloc(cs);
        const seen = overlay.get(index);
        if (seen !== undefined) seen?.copy(payload);
        else (await this.reads.readClusterUnlocked(index)).copy(payload);
        source.copy(payload, from);
        await addToRun(index, payload);
      })();
    };

    for (const op of ops) {
      if (op.kind === 'write') {
        const end = op.offsetBytes + op.data.length;
        for (let at = op.offsetBytes; at < end; ) {
          const index = Math.floor(at / cs);
          const next = Math.min((index + 1) * cs, end);
          const pending = writeCluster(
            index,
            at - index * cs,
            op.data.subarray(at - op.offsetBytes, next - op.offsetBytes),
          );
          if (pending !== undefined) await pending;
          at = next;
        }
        needSync ||= op.fua;
      } else if (op.kind === 'trim') {
        const end = op.offsetBytes + op.lengthBytes;
        const firstWhole = Math.ceil(op.offsetBytes / cs);
        const endWhole = Math.floor(end / cs);
        if (op.zeroEdges) {
          // Partial clusters at the edges are written with zeros (read-modify-write).
          for (const index of new Set([
            Math.floor(op.offsetBytes / cs),
            Math.floor((end - 1) / cs),
          ])) {
            if (op.lengthBytes === 0 || (index >= firstWhole && index < endWhole)) continue;
            const from = Math.max(op.offsetBytes, index * cs);
            const to = Math.min(end, (index + 1) * cs);
            await writeCluster(index, from - index * cs, Buffer.alloc(to - from));
          }
        }
        // A trim is a hint: partial clusters at its edges keep their data.
        if (endWhole > firstWhole) {
          await flushRun();
          for (let from = firstWhole; from < endWhole; from += TRIM_CLUSTER_COUNT_MAX) {
            const count = Math.min(endWhole - from, TRIM_CLUSTER_COUNT_MAX);
            this.laneWrite(
              this.v.tlog.append([
                { type: 'trim', firstClusterIndex: from as ClusterIndex, clusterCount: count },
              ]),
            );
            this.v.risk.note(this.v.tlog.tlogNumber, 0);
          }
          for (const index of overlay.keys()) {
            if (index >= firstWhole && index < endWhole) overlay.set(index, null);
          }
          for await (const [index] of this.v.lba.range(clusterIndex(firstWhole), endWhole)) {
            overlay.set(index, null);
            updates.push({ clusterIndex: index, location: undefined });
          }
          // Unmap also what this batch wrote into the range (later updates win).
          for (const [index, content] of overlay) {
            if (content === null && index >= firstWhole && index < endWhole) {
              updates.push({ clusterIndex: index as ClusterIndex, location: undefined });
            }
          }
        }
        needSync ||= op.fua;
      } else if (op.kind === 'flush') {
        needSync = true;
      } else if (op.kind === 'seal') {
        seal ||= op.tlogNumber === this.v.tlog.tlogNumber;
      } else if (op.kind === 'sealed') {
        this.journalFinishedSeals();
      } else {
        checkpoint = true;
      }
    }
    await flushRun();
    if (checkpoint || seal) {
      // A checkpoint needs a position in a closed TLog: seal what is open and roll.
      if (this.v.sco !== undefined && this.v.sco.clusterCount > 0) await this.sealCurrentSco(true);
      else if (this.v.tlog.entryCount > 0) await this.rollTlog();
    }
    if (this.rollDue) await this.rollTlog();
    await Promise.all(this.v.tlogWrites);
    await this.applyUpdates(updates, {
      generation: this.v.state.generation,
      tlogNumber: this.v.tlog.tlogNumber,
      entryCount: this.v.tlog.entryCount,
    });
    if (needSync) {
      // SCOs sealing behind the lane hold acknowledged writes too.
      for (const pending of this.pendingSeals) await pending.sealing;
      await this.v.sco?.sync();
      await this.v.tlog.sync();
      // Durability: every write of this batch and of every batch before it is on stable
      // storage (SCO data before the TLog entries that point to it).
    }
    // The metadata store knows writes are at risk before the first of them is acknowledged.
    await this.v.risk.settle();
    if (checkpoint) this.uploads.enqueueCheckpoint();
  }

  /**
   * Applies map updates (visible to reads at once; the map's checkpoints persist them
   * behind the lane), in
   * chunks; the marker goes with the last one.
   */
  async applyUpdates(updates: readonly LbaUpdate[], position: MapPosition): Promise<void> {
    const meta = encodeMapPosition(position);
    for (let i = 0; i < updates.length || i === 0; i += LBA_MAP_APPLY_MAX_UPDATES) {
      const chunk = updates.slice(i, i + LBA_MAP_APPLY_MAX_UPDATES);
      const last = i + LBA_MAP_APPLY_MAX_UPDATES >= updates.length;
      // Replaying from an older marker is idempotent, so a crash between chunks is safe.
      await this.v.lba.applyBehind(chunk, last ? { meta } : {});
      if (updates.length === 0) break;
    }
  }

  /**
   * A write of the running batch, awaited (with every other) before the batch is answered.
   * Marked handled now: when the batch fails earlier, its rejection must not crash the
   * process as unhandled (the batch's own error is what its requests get).
   */
  private laneWrite(write: Promise<unknown>): void {
    write.catch(() => undefined);
    this.v.tlogWrites.push(write);
  }

  /**
   * Makes the prepared SCO current and prepares the one after it in the background, so a
   * full SCO costs the lane no state.json fsync and no file creation.
   */
  private async startSco(): Promise<void> {
    const prepared = this.nextSco ?? this.createSco();
    this.nextSco = undefined;
    this.v.sco = await prepared;
    if (!this.v.closed) {
      this.nextSco = this.createSco();
      // A failure surfaces when the lane takes it (and a fresh attempt is made then).
      this.nextSco.catch(() => {
        this.nextSco = undefined;
      });
    }
  }

  private async createSco(): Promise<ScoWriter> {
    const number = this.v.state.nextScoNumber;
    this.v.state.nextScoNumber += 1;
    // The number is durable before the file exists: a crash leaves a gap, never a reuse.
    await persistState(this.v);
    const memory = this.v.scoMemory.take(this.v.config.scoSizeBytes);
    try {
      return await ScoWriter.create({
        dir: this.v.scoDir,
        scoNumber: scoNumber(number),
        clusterSizeBytes: this.v.config.clusterSizeBytes,
        scoSizeBytes: this.v.config.scoSizeBytes,
        memory,
        ...(this.v.scoDisk === undefined ? {} : { disk: this.v.scoDisk }),
      });
    } catch (err) {
      if (memory !== undefined) this.v.scoMemory.give(memory);
      throw err;
    }
  }

  /**
   * Closes and removes the prepared SCO (no TLog entry names it), giving its memory back;
   * when the vDisk closes. A crash leaves its empty file, which recovery removes.
   */
  async discardPreparedSco(): Promise<void> {
    const prepared = this.nextSco;
    this.nextSco = undefined;
    const sco = await prepared?.catch(() => undefined);
    if (sco === undefined) return;
    await sco.abort().catch(() => undefined);
    await fs.rm(sco.path, { force: true }).catch(() => undefined);
    if (sco.memory !== undefined) this.v.scoMemory.give(sco.memory);
  }

  /**
   * Seals the current SCO: in the background (the next batch journals it) or, with
   * forceRoll, at once, followed by a TLog roll (snapshots, checkpoints, close).
   */
  async sealCurrentSco(forceRoll = false): Promise<void> {
    const sco = this.v.sco as ScoWriter;
    // Listed as local before it stops being current, so no read misses it in between.
    this.v.localScos.set(sco.scoNumber, sco.clusterCount * this.v.config.clusterSizeBytes);
    // Its memory keeps serving reads while it seals (the same turn as `this.v.sco` changes).
    if (sco.memory !== undefined) this.v.sealedMemory.set(sco.scoNumber, sco.memory);
    this.v.sco = undefined;
    const pending: PendingSeal = {
      scoNumber: sco.scoNumber,
      sealing: this.sealFile(sco),
      sealed: undefined,
    };
    this.pendingSeals.push(pending);
    pending.sealing.then(
      (sealed) => {
        pending.sealed = sealed;
        if (this.v.closed || this.laneFailure !== undefined) return;
        // Journaled now, between a batch's appends (where in the TLog does not matter for
        // a seal), so that its upload starts and frees write-buffer space a waiting batch
        // may need. Not during a roll: the roll journals pending seals itself.
        if (!this.rolling) {
          this.journalSeal(pending, sealed, (write) =>
            write.catch((err: unknown) => {
              this.laneFailure ??= err instanceof Error ? err : new Error(String(err));
            }),
          );
        }
      },
      (err: unknown) => {
        // The SCO's contents are unknown: nothing more is acknowledged until a reopen.
        this.laneFailure ??= err instanceof Error ? err : new Error(String(err));
        if (!this.v.closed) {
          this.v.log(
            `${this.v.name}: the write lane stopped: sealing SCO ${sco.scoNumber} failed: ${this.laneFailure.message}; reopen to recover`,
          );
        }
      },
    );
    if (forceRoll) {
      await this.rollTlog();
      return;
    }
    // Bounded: past the limit the lane waits for the oldest seal (its SCO memory, and what
    // recovery may have to seal after a crash, stay bounded).
    while (this.pendingSeals.length > SCO_SEALS_IN_BACKGROUND_MAX) {
      const oldest = this.pendingSeals[0] as PendingSeal;
      this.journalSeal(oldest, await oldest.sealing);
    }
  }

  /** Settles once every seal running behind the lane has (closing the files, tests). */
  async sealsSettled(): Promise<void> {
    await Promise.allSettled(this.pendingSeals.map((pending) => pending.sealing));
  }

  /** fsync and close; on failure the SCO's memory leaves the read path. */
  private async sealFile(sco: ScoWriter): Promise<SealedSco> {
    try {
      return await sco.seal();
    } catch (err) {
      if (sco.memory !== undefined && this.v.sealedMemory.get(sco.scoNumber) === sco.memory) {
        this.v.sealedMemory.delete(sco.scoNumber);
        this.v.scoMemory.forget(sco.memory);
      }
      throw err;
    }
  }

  /** Journals every background seal that finished, oldest first (in the lane). */
  private journalFinishedSeals(): void {
    for (const pending of [...this.pendingSeals]) {
      if (pending.sealed !== undefined) this.journalSeal(pending, pending.sealed);
    }
  }

  /**
   * SCO_SEALED into the TLog, then its upload; the TLog rolls when due (at the end of the
   * next batch; an idle lane gets a 'sealed' op for it). `track` takes the append (the
   * batch's writes, by default).
   */
  private journalSeal(
    pending: PendingSeal,
    sealed: SealedSco,
    track: (write: Promise<unknown>) => void = (write) => this.laneWrite(write),
  ): void {
    const at = this.pendingSeals.indexOf(pending);
    if (at < 0) return;
    this.pendingSeals.splice(at, 1);
    track(
      this.v.tlog.append([
        {
          type: 'scoSealed',
          scoNumber: sealed.scoNumber,
          sizeBytes: sealed.sizeBytes,
          crc32c: sealed.crc32c,
        },
      ]),
    );
    this.v.localScos.set(sealed.scoNumber, sealed.sizeBytes);
    void this.uploads.enqueueUpload({ kind: 'sco', scoNumber: sealed.scoNumber });
    this.v.scosInTlog += 1;
    if (this.v.scosInTlog >= this.v.config.tlogScos && !this.rollDue) {
      this.rollDue = true;
      this.enqueue({ kind: 'sealed' }).catch(() => undefined);
    }
  }

  /**
   * Closes the current TLog (synced) into the chain and starts the next one. Seals running
   * behind the lane are waited for and journaled first: their SCOs' writes are in this TLog.
   */
  async rollTlog(): Promise<void> {
    this.rolling = true;
    try {
      while (this.pendingSeals.length > 0) {
        const oldest = this.pendingSeals[0] as PendingSeal;
        this.journalSeal(oldest, await oldest.sealing);
      }
      this.rollDue = false;
      await this.closeAndStartTlog();
    } finally {
      this.rolling = false;
    }
  }

  private async closeAndStartTlog(): Promise<void> {
    await Promise.all(this.v.tlogWrites);
    this.v.tlogWrites = [];
    await this.v.tlog.close();
    const closed = this.v.tlog.tlogNumber;
    const next = this.v.state.nextTlogNumber;
    this.v.tlog = await TLogWriter.create(this.v.tlogDir, next);
    this.v.state.chain.push(closed);
    this.v.state.currentTlog = next;
    this.v.state.nextTlogNumber = next + 1;
    await persistState(this.v);
    this.v.scosInTlog = 0;
    void this.uploads.enqueueUpload({ kind: 'tlog', tlogNumber: closed });
  }
}
