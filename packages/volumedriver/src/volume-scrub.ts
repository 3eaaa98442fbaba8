import fs from 'node:fs/promises';
import path from 'node:path';
import { assert } from '@shale/common';
import type { ScrubReport } from './api-types.js';
import { SCO_APPEND_MAX_CLUSTERS, SCO_READ_MAX_CLUSTERS } from './constants.js';
import type { LbaUpdate } from './lba-map.js';
import { ScoWriter } from './sco-writer.js';
import { planScrub, versionKey } from './scrub-plan.js';
import { tlogFileName, writeTLogFile } from './tlog-file.js';
import type { TLogEntry } from './tlog-format.js';
import { type ClusterLocation, clusterIndex, scoNumber } from './types.js';
import { checkOpen, persistState, type VolumeContext } from './volume-context.js';
import type { ReadPath } from './volume-read-path.js';
import type { UploadPipeline } from './volume-uploads.js';
import type { WriteLane } from './volume-write-lane.js';

/**
 * Scrubbing of one vDisk: SCOs that hold little live data are rewritten (their live
 * clusters copied into new SCOs, the TLogs naming them rewritten) and the old ones become
 * garbage. It runs beside the write lane and holds it only twice, briefly: to cut the
 * prefix of the history to scrub, and to commit. Which clusters are live or pinned is
 * scrub-plan.ts's job; this file carries the plan out.
 */
export class Scrubber {
  constructor(
    private readonly v: VolumeContext,
    private readonly lane: WriteLane,
    private readonly reads: ReadPath,
    private readonly uploads: UploadPipeline,
  ) {}

  /**
   * Rewrites SCOs whose live fraction is under the threshold and deletes the old ones.
   *
   *   1. hold writes briefly: seal the open SCO and roll the TLog; the closed chain is the
   *      prefix to scrub; wait until it is all in the backend
   *   2. writes flow again: plan (scrub-plan.ts), copy live clusters into new SCOs (sealed,
   *      fsynced), write rewritten copies of the TLogs that named the old SCOs
   *   3. hold writes briefly: if a rollback rewrote the history meanwhile, give up;
   *      else commit (state.json names the new chain), repoint the map entries that still
   *      point at moved clusters, and queue: new SCOs, new TLogs, then the garbage (old
   *      SCOs and TLogs), deleted only after the root names the new chain
   *
   * Versions that snapshots with clones see are pinned: their SCOs are left alone.
   */
  async scrub(options: {
    liveFractionThreshold: number;
    pinnedSnapshotIds: ReadonlySet<number>;
  }): Promise<ScrubReport> {
    const cs = this.v.config.clusterSizeBytes;
    let release = await this.lane.hold();
    let prefix: number[];
    let generation: number;
    try {
      checkOpen(this.v);
      this.v.tlogWrites = [];
      if (this.v.sco !== undefined && this.v.sco.clusterCount > 0)
        await this.lane.sealCurrentSco(true);
      else if (this.v.tlog.entryCount > 0) await this.lane.rollTlog();
      await Promise.all(this.v.tlogWrites);
      prefix = [...this.v.state.chain];
      generation = this.v.state.generation;
    } finally {
      release();
    }
    await this.uploads.waitUploadsDrained();
    // Measured once everything written before the scrub is in the backend.
    const backendBytesBefore = await this.uploads.backendBytes();
    const histories: TLogEntry[][] = [];
    for (const n of prefix) histories.push(await this.uploads.readTlog(n));
    const plan = planScrub(histories, {
      snapshotIds: new Set(this.v.state.snapshots.map((s) => s.id)),
      pinnedSnapshotIds: options.pinnedSnapshotIds,
      liveFractionThreshold: options.liveFractionThreshold,
    });
    const report = {
      scosExamined: plan.scos.size,
      scosRewritten: plan.candidates.size,
      clustersMoved: plan.moves.length,
      scosCreated: 0,
      backendBytesBefore,
      backendBytesAfter: backendBytesBefore,
      aborted: false,
    };
    if (plan.candidates.size === 0) return report;
    // Copy the live clusters into new SCOs.
    const relocated = new Map<number, ClusterLocation>();
    const newScos: number[] = [];
    const sealedCrcs = new Map<number, number>();
    let writer: ScoWriter | undefined;
    const sealWriter = async () => {
      if (writer === undefined) return;
      const sealed = await writer.seal();
      sealedCrcs.set(sealed.scoNumber, sealed.crc32c);
      this.v.localScos.set(sealed.scoNumber, sealed.sizeBytes);
      writer = undefined;
    };
    for (let i = 0; i < plan.moves.length; i += SCO_READ_MAX_CLUSTERS) {
      const moves = plan.moves.slice(i, i + SCO_READ_MAX_CLUSTERS);
      const data = await this.reads.readLocations(
        moves.map((m) => ({
          scoNumber: scoNumber(m.scoNumber),
          clusterOffset: m.clusterOffset,
          crc32c: m.crc32c,
        })),
      );
      let k = 0;
      while (k < moves.length) {
        if (writer === undefined) {
          const number = this.v.state.nextScoNumber;
          this.v.state.nextScoNumber += 1;
          await persistState(this.v);
          writer = await ScoWriter.create({
            dir: this.v.scoDir,
            scoNumber: scoNumber(number),
            clusterSizeBytes: cs,
            scoSizeBytes: this.v.config.scoSizeBytes,
          });
          newScos.push(number);
        }
        const part = moves.slice(
          k,
          k + Math.min(writer.remainingClusters, SCO_APPEND_MAX_CLUSTERS),
        );
        const appended = await writer.append(part.map((_, j) => data[k + j] as Buffer));
        for (let j = 0; j < part.length; j += 1) {
          const m = part[j] as (typeof moves)[number];
          relocated.set(versionKey(m.scoNumber, m.clusterOffset), {
            scoNumber: writer.scoNumber,
            clusterOffset: appended.firstClusterOffset + j,
            crc32c: appended.crc32cs[j] as number,
          });
        }
        k += part.length;
        if (writer.isFull) await sealWriter();
      }
    }
    await sealWriter();
    report.scosCreated = newScos.length;
    // Rewrite the TLogs that name candidate SCOs.
    const replaced = new Map<number, number>();
    let lastRewritten = -1;
    for (let t = 0; t < prefix.length; t += 1) {
      if (
        (histories[t] as TLogEntry[]).some(
          (e) => (e.type === 'write' || e.type === 'scoSealed') && plan.candidates.has(e.scoNumber),
        )
      ) {
        lastRewritten = t;
      }
    }
    for (let t = 0; t <= lastRewritten; t += 1) {
      const entries = histories[t] as TLogEntry[];
      const touched = entries.some(
        (e) => (e.type === 'write' || e.type === 'scoSealed') && plan.candidates.has(e.scoNumber),
      );
      if (!touched && t !== lastRewritten) continue;
      const rewritten: TLogEntry[] = [];
      for (const e of entries) {
        if (e.type === 'write' && plan.candidates.has(e.scoNumber)) {
          const to = relocated.get(versionKey(e.scoNumber, e.clusterOffset));
          if (to !== undefined) rewritten.push({ ...e, ...to, type: 'write' });
        } else if (!(e.type === 'scoSealed' && plan.candidates.has(e.scoNumber))) {
          rewritten.push(e);
        }
      }
      if (t === lastRewritten) {
        for (const n of newScos) {
          rewritten.push({
            type: 'scoSealed',
            scoNumber: scoNumber(n),
            sizeBytes: this.v.localScos.get(n) ?? 0,
            crc32c: sealedCrcs.get(n) ?? 0,
          });
        }
      }
      const number = this.v.state.nextTlogNumber;
      this.v.state.nextTlogNumber += 1;
      await persistState(this.v);
      await writeTLogFile(this.v.tlogDir, number, rewritten);
      replaced.set(prefix[t] as number, number);
    }
    release = await this.lane.hold();
    try {
      checkOpen(this.v);
      if (this.v.state.generation !== generation) {
        report.aborted = true;
        for (const n of newScos) await this.uploads.dropLocalSco(n);
        for (const n of replaced.values())
          await fs.rm(path.join(this.v.tlogDir, tlogFileName(n)), { force: true });
        return report;
      }
      const newChain = this.v.state.chain.map((n) => replaced.get(n) ?? n);
      this.v.state = {
        ...this.v.state,
        generation: generation + 1,
        chain: newChain,
        snapshots: this.v.state.snapshots.map((s) => ({
          ...s,
          tlogNumber: replaced.get(s.tlogNumber) ?? s.tlogNumber,
        })),
        garbage: {
          scos: [...this.v.state.garbage.scos, ...plan.candidates],
          tlogs: [...this.v.state.garbage.tlogs, ...replaced.keys()],
        },
      };
      this.v.rootNeeds = new Set(replaced.values());
      // Commit point: state.json names the new history.
      await persistState(this.v);
      // Repoint map entries that still point at moved clusters (later writes moved on).
      const updates: LbaUpdate[] = [];
      for await (const [index, location] of this.v.lba.range(
        clusterIndex(0),
        Math.ceil(this.v.state.sizeBytes / cs),
      )) {
        if ((location.layer ?? 0) !== 0 || !plan.candidates.has(location.scoNumber)) continue;
        const to = relocated.get(versionKey(location.scoNumber, location.clusterOffset));
        assert(
          to !== undefined,
          `scrub: live cluster ${index} of SCO ${location.scoNumber} was not moved`,
        );
        updates.push({ clusterIndex: index, location: to });
      }
      await this.lane.applyUpdates(updates, {
        generation: this.v.state.generation,
        tlogNumber: this.v.tlog.tlogNumber,
        entryCount: this.v.tlog.entryCount,
      });
      for (const n of newScos) {
        this.v.dirtyScoBytes += this.v.localScos.get(n) ?? 0;
        void this.uploads.enqueueUpload({ kind: 'sco', scoNumber: n });
      }
      for (const n of newChain) {
        if ([...replaced.values()].includes(n))
          void this.uploads.enqueueUpload({ kind: 'tlog', tlogNumber: n });
      }
      this.uploads.enqueueGarbage();
    } finally {
      release();
    }
    await this.uploads.waitUploadsDrained();
    report.backendBytesAfter = await this.uploads.backendBytes();
    return report;
  }
}
