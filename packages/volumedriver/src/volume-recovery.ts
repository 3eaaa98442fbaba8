import fs from 'node:fs/promises';
import path from 'node:path';
import { assert, crc32c, errorMessage, isShaleError } from '@shale/common';
import { LBA_MAP_APPLY_MAX_UPDATES, SCO_SEALS_IN_BACKGROUND_MAX } from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import {
  decodeCheckpointPart,
  decodeMapPosition,
  encodeMapPosition,
  type FoldedMap,
  foldEntry,
  foldTLogs,
  type MapPosition,
} from './history.js';
import type { LbaUpdate } from './lba-map.js';
import { parseScoFileName, scoFilePath } from './sco-file.js';
import { parseClosedTLog, TLogWriter, tlogFileName } from './tlog-file.js';
import type { TLogEntry } from './tlog-format.js';
import { type ClusterIndex, type ClusterLocation, scoNumber } from './types.js';
import type { VolumeBackend } from './volume-backend.js';
import type { VolumeContext } from './volume-context.js';
import {
  type BackendRoot,
  type CheckpointRef,
  checkpointObjectName,
  objectNumber,
  ROOT_OBJECT,
  STATE_FORMAT,
  tlogObjectName,
} from './volume-state.js';
import type { UploadPipeline } from './volume-uploads.js';
import type { WriteLane } from './volume-write-lane.js';

/**
 * Recovery of one vDisk: what an open after a crash repairs, and how the LBA map is
 * rebuilt from the history.
 *
 *   open ─> recoverLocal: cut the unsealed SCOs (the open one, those sealing behind the lane)
 *        │                to what the TLog names (CRC32C-checked), seal them
 *        │                map: catch up from its position marker, or rebuild
 *        └─> resumeUploads: take the namespace (epoch bump), requeue what the backend lacks
 *
 *   rebuildMap: the backend checkpoint of this generation + the TLogs after it, else the
 *               whole chain (a clone: on top of its parent's map as of the snapshot)
 *
 * A restore from the backend and a rollback rebuild the map here too. The TLogs are the
 * durable truth; the map is a cache of them.
 */
export class Recovery {
  constructor(
    private readonly v: VolumeContext,
    private readonly lane: WriteLane,
    private readonly uploads: UploadPipeline,
  ) {}

  /** The base map of a clone (its parent as of the snapshot), folded from the backend. */
  private async baseMap(): Promise<FoldedMap> {
    const map: FoldedMap = new Map();
    const parent = this.v.config.parent;
    const ancestor = this.v.config.ancestors[0];
    if (parent === undefined || ancestor === undefined) return map;
    await foldVdiskFromBackend(this.v.backend, ancestor.namespace, parent.snapshotId, 1, map);
    return map;
  }

  /**
   * Rebuilds the LBA map from the history: from the backend checkpoint when it is of
   * this generation, else from the beginning (a clone: from its parent's map).
   */
  async rebuildMap(): Promise<void> {
    const chain = [...this.v.state.chain, this.v.state.currentTlog];
    const checkpoint = this.v.rootCheckpoint;
    let map: FoldedMap;
    let replay: { tlogs: number[]; skipInFirst: number };
    if (
      checkpoint !== undefined &&
      checkpoint.generation === this.v.state.generation &&
      chain.includes(checkpoint.tlogNumber)
    ) {
      map = new Map();
      for (let part = 0; part < checkpoint.parts; part += 1) {
        const name = checkpointObjectName(checkpoint.id, part);
        const data = await this.v.backend.getObject(this.v.config.namespace, name);
        for (const [index, location] of decodeCheckpointPart(data, name)) map.set(index, location);
      }
      replay = {
        tlogs: chain.slice(chain.indexOf(checkpoint.tlogNumber)),
        skipInFirst: checkpoint.entryCount,
      };
    } else {
      map = await this.baseMap();
      replay = { tlogs: chain, skipInFirst: 0 };
    }
    let first = true;
    for (const n of replay.tlogs) {
      const entries = await this.uploads.readTlog(n);
      for (const entry of first ? entries.slice(replay.skipInFirst) : entries)
        foldEntry(map, entry);
      first = false;
    }
    await this.writeMapBase(map, {
      generation: this.v.state.generation,
      tlogNumber: this.v.tlog.tlogNumber,
      entryCount: this.v.tlog.entryCount,
    });
  }

  /** Replaces the whole LBA map with `map`. */
  async writeMapBase(map: FoldedMap, position: MapPosition): Promise<void> {
    await this.v.lba.clear();
    const updates: LbaUpdate[] = [];
    for (const [index, location] of map) {
      updates.push({ clusterIndex: index as ClusterIndex, location });
      if (updates.length === LBA_MAP_APPLY_MAX_UPDATES) await this.v.lba.apply(updates.splice(0));
    }
    await this.v.lba.apply(updates, { meta: encodeMapPosition(position) });
  }

  /**
   * After a crash: the open SCO is cut to what the TLog names (its clusters checked
   * against their CRC32Cs; the TLog is cut at the first one that fails) and sealed; the
   * map catches up from its marker, or is rebuilt when the marker is not usable.
   */
  async recoverLocal(currentEntries: TLogEntry[]): Promise<void> {
    const cs = this.v.config.clusterSizeBytes;
    let mapMayBeAhead = false;
    // Sealed SCOs in the write buffer.
    const sealedHere = new Set<number>();
    const writtenHere = new Map<number, number>(); // SCO -> clusters named
    for (const e of currentEntries) {
      if (e.type === 'scoSealed') sealedHere.add(e.scoNumber);
      if (e.type === 'write') {
        writtenHere.set(
          e.scoNumber,
          Math.max(writtenHere.get(e.scoNumber) ?? 0, e.clusterOffset + 1),
        );
      }
      if (e.type === 'scoSealed') this.v.scosInTlog += 1;
    }
    // The open SCO, and those whose seal ran behind the write lane when it stopped (at most
    // SCO_SEALS_IN_BACKGROUND_MAX): named by writes, with no SCO_SEALED.
    const open = [...writtenHere.keys()].filter((n) => !sealedHere.has(n)).sort((a, b) => a - b);
    assert(
      open.length <= SCO_SEALS_IN_BACKGROUND_MAX + 1,
      `${this.v.name}: ${open.length} unsealed SCOs in the current TLog (at most ${SCO_SEALS_IN_BACKGROUND_MAX + 1})`,
    );
    const openSet = new Set(open);
    for (const name of await fs.readdir(this.v.scoDir)) {
      const n = parseScoFileName(name);
      if (n === undefined) continue;
      if (openSet.has(n)) continue;
      const stat = await fs.stat(path.join(this.v.scoDir, name));
      // A SCO created but never named by the TLog (a crash before its first entry): the
      // current one, or the next one, which the write lane creates ahead.
      if (!sealedHere.has(n) && !writtenHere.has(n) && n >= this.v.state.nextScoNumber - 2) {
        const named = await this.scoNamedByChain(n);
        if (!named) {
          await fs.rm(path.join(this.v.scoDir, name), { force: true });
          continue;
        }
      }
      this.v.localScos.set(n, stat.size);
    }
    if (open.length > 0) {
      const data = new Map<number, Buffer>();
      for (const n of open) {
        const filePath = scoFilePath(this.v.scoDir, scoNumber(n));
        data.set(n, await fs.readFile(filePath).catch(() => Buffer.alloc(0)));
      }
      // Check every cluster the TLog names in them; cut the TLog at the first bad one
      // (what follows it, in any SCO, goes too: the TLog is a sequence).
      let cutAt = currentEntries.length;
      for (let i = 0; i < currentEntries.length; i += 1) {
        const e = currentEntries[i] as TLogEntry;
        if (e.type !== 'write' || !openSet.has(e.scoNumber)) continue;
        const bytes = (data.get(e.scoNumber) as Buffer).subarray(
          e.clusterOffset * cs,
          (e.clusterOffset + 1) * cs,
        );
        if (bytes.length !== cs || crc32c(bytes) !== e.crc32c) {
          cutAt = i;
          break;
        }
      }
      let entries = currentEntries;
      if (cutAt < currentEntries.length) {
        mapMayBeAhead = true;
        const bad = currentEntries[cutAt] as TLogEntry & { scoNumber: number };
        this.v.log(
          `${this.v.name}: TLog names SCO ${bad.scoNumber} data that is not on disk; cutting it at entry ${cutAt}`,
        );
        entries = currentEntries.slice(0, cutAt);
        await this.v.tlog.abort();
        const tlogPath = path.join(this.v.tlogDir, tlogFileName(this.v.tlog.tlogNumber));
        await fs.truncate(tlogPath, cutAt * 32);
        this.v.tlog = (await TLogWriter.reopen(this.v.tlogDir, this.v.tlog.tlogNumber)).writer;
      }
      for (const n of open) {
        let clusters = 0;
        for (const e of entries) {
          if (e.type === 'write' && e.scoNumber === n)
            clusters = Math.max(clusters, e.clusterOffset + 1);
        }
        const filePath = scoFilePath(this.v.scoDir, scoNumber(n));
        const sealedBytes = (data.get(n) as Buffer).subarray(0, clusters * cs);
        await fs.truncate(filePath, sealedBytes.length).catch(() => undefined);
        const handle = await fs.open(filePath, 'r+');
        await handle.sync();
        await handle.close();
        await this.v.tlog.append([
          {
            type: 'scoSealed',
            scoNumber: scoNumber(n),
            sizeBytes: sealedBytes.length,
            crc32c: crc32c(sealedBytes),
          },
        ]);
        this.v.scosInTlog += 1;
        this.v.localScos.set(n, sealedBytes.length);
      }
      await this.v.tlog.sync();
      currentEntries = entries;
    }
    // The map: catch up from its marker, or rebuild.
    const position = decodeMapPosition(await this.v.lba.getMeta());
    const chain = [...this.v.state.chain, this.v.state.currentTlog];
    const at = position === undefined ? -1 : chain.indexOf(position.tlogNumber);
    const usable =
      !mapMayBeAhead &&
      position !== undefined &&
      position.generation === this.v.state.generation &&
      at >= 0 &&
      (position.tlogNumber !== this.v.state.currentTlog ||
        position.entryCount <= this.v.tlog.entryCount);
    if (!usable) {
      this.v.log(`${this.v.name}: LBA map marker not usable; rebuilding the map from the TLogs`);
      this.v.rootCheckpoint = await this.readRootCheckpoint();
      await this.rebuildMap();
      return;
    }
    const map = new Map<number, ClusterLocation | null>();
    for (let k = at; k < chain.length; k += 1) {
      const n = chain[k] as number;
      const entries = await this.uploads.readTlog(n);
      for (const e of k === at ? entries.slice(position.entryCount) : entries) {
        if (e.type === 'write') {
          map.set(e.clusterIndex, {
            scoNumber: e.scoNumber,
            clusterOffset: e.clusterOffset,
            crc32c: e.crc32c,
          });
        } else if (e.type === 'trim') {
          const end = e.firstClusterIndex + e.clusterCount;
          for (const index of map.keys())
            if (index >= e.firstClusterIndex && index < end) map.set(index, null);
          for await (const [index] of this.v.lba.range(e.firstClusterIndex, end))
            map.set(index, null);
        }
      }
    }
    const updates: LbaUpdate[] = [];
    for (const [index, location] of map) {
      updates.push({ clusterIndex: index as ClusterIndex, location: location ?? undefined });
    }
    await this.lane.applyUpdates(updates, {
      generation: this.v.state.generation,
      tlogNumber: this.v.tlog.tlogNumber,
      entryCount: this.v.tlog.entryCount,
    });
  }

  private async scoNamedByChain(n: number): Promise<boolean> {
    for (const t of this.v.state.chain) {
      for (const e of await this.uploads.readTlog(t)) {
        if ((e.type === 'write' || e.type === 'scoSealed') && e.scoNumber === n) return true;
      }
    }
    return false;
  }

  private async readRootCheckpoint(): Promise<CheckpointRef | undefined> {
    try {
      const root = parseRoot(await this.v.backend.getObject(this.v.config.namespace, ROOT_OBJECT));
      return root.checkpoint;
    } catch (err) {
      if (isShaleError(err, VdErrorCode.NotFound)) return undefined;
      throw err;
    }
  }

  /** After a restart: takes the namespace (fencing any other writer), requeues uploads. */
  async resumeUploads(): Promise<void> {
    const ns = this.v.config.namespace;
    this.v.epoch = await this.v.backend.bumpEpoch(ns);
    const listed = await this.v.backend.listObjects(ns, '');
    let maxCheckpoint = 0;
    for (const o of listed) {
      const s = objectNumber(o.name, 'sco');
      if (s !== undefined) this.v.uploadedScos.add(s);
      const t = objectNumber(o.name, 'tlog');
      if (t !== undefined) this.v.uploadedTlogs.add(t);
      maxCheckpoint = Math.max(maxCheckpoint, objectNumber(o.name, 'checkpoint') ?? 0);
    }
    this.v.nextCheckpointId = maxCheckpoint + 1;
    this.v.rootCheckpoint ??= await this.readRootCheckpoint();
    for (const [n, size] of this.v.localScos) {
      if (this.v.uploadedScos.has(n)) continue;
      this.v.dirtyScoBytes += size;
      void this.uploads.enqueueUpload({ kind: 'sco', scoNumber: n });
    }
    for (const n of this.v.state.chain) {
      if (!this.v.uploadedTlogs.has(n))
        void this.uploads.enqueueUpload({ kind: 'tlog', tlogNumber: n });
    }
    await this.noteRiskAfterRestart();
    void this.uploads.enqueueUpload({ kind: 'root' });
    this.uploads.enqueueGarbage();
  }

  /**
   * After a restart, the TLogs not in the backend (closed ones and the current one) hold
   * writes at risk. Their age is not kept; the TLog file's creation time is an upper bound
   * (it is created before its first entry), so the current one is sealed at the first tick.
   */
  private async noteRiskAfterRestart(): Promise<void> {
    const current = this.v.state.currentTlog;
    const pending = [...this.v.state.chain.filter((n) => !this.v.uploadedTlogs.has(n)), current];
    for (const n of pending) {
      const entries = await this.uploads.readTlog(n);
      const mutations = entries.filter((e) => e.type === 'write' || e.type === 'trim');
      if (mutations.length === 0) continue;
      const stat = await fs.stat(path.join(this.v.tlogDir, tlogFileName(n)));
      const bornMs = stat.birthtimeMs > 0 ? stat.birthtimeMs : stat.mtimeMs;
      const writes = mutations.filter((e) => e.type === 'write').length;
      this.v.risk.note(n, writes * this.v.config.clusterSizeBytes, Math.floor(bornMs));
    }
    await this.v.risk.settle();
  }
}

export function parseRoot(data: Buffer): BackendRoot {
  let root: BackendRoot;
  try {
    root = JSON.parse(data.toString('utf8')) as BackendRoot;
  } catch (err) {
    throw vdError(VdErrorCode.Corrupt, `backend root is not JSON: ${errorMessage(err)}`);
  }
  if (root.format !== STATE_FORMAT) {
    throw vdError(VdErrorCode.BadState, `backend root has unknown format ${String(root.format)}`);
  }
  return root;
}

/**
 * Folds a vDisk's history as its backend holds it, up to snapshot `snapshotId`, into
 * `map` with layers shifted by `layerShift` (recursing into its own parent first).
 */
export async function foldVdiskFromBackend(
  backend: VolumeBackend,
  namespace: string,
  snapshotId: number,
  layerShift: number,
  map: FoldedMap,
): Promise<void> {
  const root = parseRoot(await backend.getObject(namespace, ROOT_OBJECT));
  const parent = root.config.parent;
  const ancestor = root.config.ancestors[0];
  if (parent !== undefined && ancestor !== undefined) {
    await foldVdiskFromBackend(backend, ancestor.namespace, parent.snapshotId, layerShift + 1, map);
  }
  const found = await foldTLogs(
    map,
    root.chain,
    async (n) =>
      parseClosedTLog(await backend.getObject(namespace, tlogObjectName(n)), `TLog ${n}`),
    { stopAtSnapshotId: snapshotId, layerShift },
  );
  if (!found) {
    throw vdError(
      VdErrorCode.NotFound,
      `snapshot ${snapshotId} of namespace ${namespace} is not in the backend yet`,
    );
  }
}
