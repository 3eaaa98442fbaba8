import { assert } from '@shale/common';
import { VdErrorCode, vdError } from './errors.js';
import { writeTLogFile } from './tlog-file.js';
import { checkOpen, persistState, type VolumeContext } from './volume-context.js';
import type { Recovery } from './volume-recovery.js';
import type { SnapshotRecord } from './volume-state.js';
import type { UploadPipeline } from './volume-uploads.js';
import type { WriteLane } from './volume-write-lane.js';

/**
 * Snapshots of one vDisk: a snapshot is a SNAPSHOT marker in the TLog, durable with every
 * write before it, and a record in state.json (and, once its TLogs are up, in the root).
 * Deleting one drops the record; rolling back to one cuts the history at its marker:
 *
 *   hold the lane ─> seal + roll ─> new TLog = entries up to the marker ─> state.json
 *   (commit: generation + 1, the cut TLogs and SCOs only they named become garbage)
 *   ─> rebuild the map ─> queue the new TLog, a checkpoint, the garbage ─> release
 *
 * Group snapshots hold several vDisks' lanes at once (VolumeManager) and call
 * snapshotHeld on each.
 */
export class VolumeSnapshots {
  constructor(
    private readonly v: VolumeContext,
    private readonly lane: WriteLane,
    private readonly uploads: UploadPipeline,
    private readonly recovery: Recovery,
  ) {}

  snapshots(): readonly SnapshotRecord[] {
    return this.v.state.snapshots;
  }

  /** Every TLog up to the snapshot's marker is in the backend. */
  snapshotInBackend(id: number): boolean {
    const record = this.v.state.snapshots.find((s) => s.id === id);
    if (record === undefined) return false;
    const position = this.v.state.chain.indexOf(record.tlogNumber);
    if (position < 0) return false;
    return this.v.state.chain.slice(0, position + 1).every((n) => this.v.uploadedTlogs.has(n));
  }

  /**
   * Appends a snapshot marker while the lane is held (the caller holds it, possibly with
   * other volumes for a consistency group) and makes it durable with everything before it.
   */
  async snapshotHeld(name: string, createdAtMs: number): Promise<SnapshotRecord> {
    assert(this.lane.heldAndIdle, 'snapshotHeld without a hold');
    checkOpen(this.v);
    const id = this.v.state.nextSnapshotId;
    await this.v.tlog.append([{ type: 'snapshot', snapshotId: id }]);
    await this.v.sco?.sync();
    await this.v.tlog.sync();
    const record: SnapshotRecord = { id, name, createdAtMs, tlogNumber: this.v.tlog.tlogNumber };
    this.v.state.nextSnapshotId = id + 1;
    this.v.state.snapshots.push(record);
    await persistState(this.v);
    // Durability: the marker and every write acknowledged before the hold are on stable
    // storage; the snapshot list naming it is in state.json.
    return record;
  }

  async deleteSnapshot(id: number): Promise<void> {
    const before = this.v.state.snapshots.length;
    this.v.state.snapshots = this.v.state.snapshots.filter((s) => s.id !== id);
    if (this.v.state.snapshots.length === before) return;
    await persistState(this.v);
    void this.uploads.enqueueUpload({ kind: 'root' });
  }

  /**
   * Rolls the vDisk back to snapshot `id`: later writes and snapshots are gone. The
   * history is cut at the marker (a new TLog holds the entries of its TLog up to it), the
   * generation moves on, the map is rebuilt, and SCOs and TLogs only the cut part named
   * become garbage, deleted once the backend root no longer names them.
   */
  async rollback(id: number): Promise<void> {
    const record = this.v.state.snapshots.find((s) => s.id === id);
    if (record === undefined) {
      throw vdError(VdErrorCode.NotFound, `vDisk ${this.v.name} has no snapshot ${id}`);
    }
    const release = await this.lane.hold();
    try {
      checkOpen(this.v);
      this.v.tlogWrites = [];
      if (this.v.sco !== undefined && this.v.sco.clusterCount > 0)
        await this.lane.sealCurrentSco(true);
      else if (this.v.tlog.entryCount > 0) await this.lane.rollTlog();
      const chain = this.v.state.chain;
      const at = chain.indexOf(record.tlogNumber);
      assert(at >= 0, `snapshot ${id} TLog ${record.tlogNumber} not in the chain`);
      const entries = await this.uploads.readTlog(record.tlogNumber);
      const marker = entries.findIndex((e) => e.type === 'snapshot' && e.snapshotId === id);
      assert(marker >= 0, `snapshot ${id} marker missing from TLog ${record.tlogNumber}`);
      const kept = entries.slice(0, marker + 1);
      const cut = chain.slice(at);
      const cutScos = new Set<number>();
      for (const e of entries.slice(marker + 1)) if (e.type === 'write') cutScos.add(e.scoNumber);
      for (const n of cut.slice(1)) {
        for (const e of await this.uploads.readTlog(n))
          if (e.type === 'write') cutScos.add(e.scoNumber);
      }
      for (const e of entries.slice(marker + 1))
        if (e.type === 'scoSealed') cutScos.add(e.scoNumber);
      const keptScos = new Set<number>();
      for (const n of chain.slice(0, at)) {
        for (const e of await this.uploads.readTlog(n))
          if (e.type === 'write') keptScos.add(e.scoNumber);
      }
      for (const e of kept) if (e.type === 'write') keptScos.add(e.scoNumber);
      const replacement = this.v.state.nextTlogNumber;
      await writeTLogFile(this.v.tlogDir, replacement, kept);
      const current = this.v.tlog.tlogNumber;
      this.v.state = {
        ...this.v.state,
        generation: this.v.state.generation + 1,
        chain: [...chain.slice(0, at), replacement],
        nextTlogNumber: replacement + 1,
        snapshots: this.v.state.snapshots
          .filter((s) => s.id <= id)
          .map((s) => (cut.includes(s.tlogNumber) ? { ...s, tlogNumber: replacement } : s)),
        garbage: {
          scos: [...this.v.state.garbage.scos, ...[...cutScos].filter((n) => !keptScos.has(n))],
          tlogs: [...this.v.state.garbage.tlogs, ...cut],
        },
      };
      this.v.rootNeeds = new Set([replacement]);
      // Commit point: state.json names the new history.
      await persistState(this.v);
      this.v.risk.rewritten(cut, record.tlogNumber, replacement);
      await this.recovery.rebuildMap();
      this.v.rootCheckpoint = undefined;
      void this.uploads.enqueueUpload({ kind: 'tlog', tlogNumber: replacement });
      this.uploads.enqueueCheckpoint();
      this.uploads.enqueueGarbage();
      this.v.log(`${this.v.name}: rolled back to snapshot ${id} (current TLog ${current})`);
    } finally {
      release();
    }
  }
}
