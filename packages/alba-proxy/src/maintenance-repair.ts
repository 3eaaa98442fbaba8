import { ifUnchanged, type KeyValue } from '@shale/arakoon-kv';
import { AsdErrorCode } from '@shale/asd';
import { crc32c, errorMessage } from '@shale/common';
import { rebuildFragments } from './chunk-format.js';
import { mapWithConcurrency } from './concurrency.js';
import {
  MAINTENANCE_CAS_ATTEMPTS,
  MAINTENANCE_MANIFEST_PAGE,
  MAINTENANCE_MAX_REPORTED_UNRECOVERABLE,
  OSD_ADMIN_DEADLINE_MS,
} from './constants.js';
import {
  decodeOrLog,
  type FragmentHealth,
  type MaintenanceState,
  type OsdStatus,
} from './maintenance-state.js';
import type { Progress, UnrecoverableObject } from './maintenance-types.js';
import { encodeManifest, type Manifest } from './manifest.js';
import { type ChunkInfo, chunkLayout } from './object-codec.js';
import { fragmentKey, nsKeys } from './object-keys.js';
import type { Osd } from './osd.js';

/**
 * Maintenance's scan and repair: namespace by namespace, manifest by manifest in key order
 * (from the stored progress), classify every chunk's fragments (healthy / missing / lost /
 * bad / unavailable; a verify pass reads each one and checks its CRC32C), then per batch
 * repair the most endangered objects first: read k good fragments -> rebuildFragments -> write on live OSDs -> one manifest
 * txn conditional on the manifest being unchanged -> delete the replaced copies -> save
 * progress. State shared with the other phases lives in MaintenanceState.
 */

interface DamagedObject {
  readonly nsId: string;
  readonly name: string;
  readonly version: number;
  /** Lowest (healthy - k) over the chunks: repaired lowest first. */
  readonly danger: number;
  /** `${chunk}/${fragment}/${osd}` found bad by verify. */
  readonly bad: ReadonlySet<string>;
}

/** A rebuilt fragment written to an OSD, not yet in the manifest. */
interface RepairWrite {
  readonly chunkIndex: number;
  readonly fragmentIndex: number;
  readonly osdId: string;
  /** The manifest had it missing (completion) rather than placed (repair). */
  readonly completed: boolean;
}

export class RepairScan {
  constructor(private readonly state: MaintenanceState) {}

  /** Returns whether the scan reached the end (false: stopped at maxObjects). */
  async scanPhase(
    stored: Progress | undefined,
    verify: boolean,
    maxObjects: number,
  ): Promise<boolean> {
    const namespaces = (await this.state.allNamespaces()).filter(
      (ns) =>
        ns.backendId === this.state.backendId &&
        ns.state === 'active' &&
        (stored === undefined || ns.nsId >= stored.nsId),
    );
    let batch: DamagedObject[] = [];
    let batchScanned = 0;
    let last: { nsId: string; name: string } | undefined;
    const flush = async (): Promise<void> => {
      batch.sort((a, b) => a.danger - b.danger);
      const work = batch;
      batch = [];
      batchScanned = 0;
      await mapWithConcurrency(work, this.state.limits.repairConcurrency, (damaged) =>
        this.repairObject(damaged),
      );
      // Durability: every repair of the batch is committed (or given up); resume after `last`.
      if (last !== undefined) await this.state.saveProgress({ phase: 'scan', ...last, verify });
    };
    for (const ns of namespaces) {
      const after = stored !== undefined && ns.nsId === stored.nsId ? stored.name : undefined;
      const prefix = nsKeys.manifestsPrefix(ns.nsId);
      const end = Buffer.from(prefix);
      end[end.length - 1] = (end[end.length - 1] as number) + 1;
      let start =
        after === undefined
          ? prefix
          : Buffer.concat([nsKeys.manifest(ns.nsId, after), Buffer.from([0])]);
      for (;;) {
        const page = await this.state.kv.range(
          { start, end },
          { limit: MAINTENANCE_MANIFEST_PAGE },
        );
        for (const item of page.items) {
          if (this.state.summary.objectsScanned >= maxObjects) {
            await flush();
            return false;
          }
          const name = item.key.subarray(prefix.length).toString('latin1');
          const manifest = decodeOrLog(item, this.state.log);
          this.state.summary.objectsScanned += 1;
          this.state.counters.objectsScanned += 1;
          batchScanned += 1;
          last = { nsId: ns.nsId, name };
          if (manifest !== undefined) {
            const damaged = await this.classify(ns.nsId, manifest, verify);
            if (damaged !== undefined) batch.push(damaged);
          }
          if (batchScanned >= this.state.limits.scanBatchObjects) await flush();
        }
        const lastItem = page.items[page.items.length - 1];
        if (page.continuation === undefined || lastItem === undefined) break;
        start = Buffer.concat([lastItem.key, Buffer.from([0])]);
      }
    }
    await flush();
    return true;
  }

  /** Damage of one object, or undefined when every fragment is healthy (or only unavailable). */
  private async classify(
    nsId: string,
    manifest: Manifest,
    verify: boolean,
  ): Promise<DamagedObject | undefined> {
    const bad = new Set<string>();
    if (verify) await this.verifyObject(nsId, manifest, bad);
    const { k, m } = manifest.info;
    let danger = m;
    let damaged = false;
    for (let c = 0; c < manifest.info.chunks.length; c++) {
      let healthy = 0;
      let unavailable = 0;
      for (let f = 0; f < k + m; f++) {
        const h = this.state.health(manifest, c, f, bad);
        if (h === 'healthy') healthy += 1;
        else if (h === 'unavailable') unavailable += 1;
        else damaged = true;
      }
      danger = Math.min(danger, healthy - k);
      if (healthy < k && healthy + unavailable >= k)
        this.state.log(`maintenance: ${nsId}/${manifest.name} chunk ${c} waits for OSDs to return`);
    }
    if (!damaged) return undefined;
    this.state.summary.objectsDamaged += 1;
    return { nsId, name: manifest.name, version: manifest.version, danger, bad };
  }

  /** Reads every placed fragment of a live OSD whole and checks it; bad ones go to `bad`. */
  private async verifyObject(nsId: string, manifest: Manifest, bad: Set<string>): Promise<void> {
    for (let c = 0; c < manifest.info.chunks.length; c++) {
      const chunk = manifest.info.chunks[c] as ChunkInfo;
      const byOsd = new Map<string, number[]>();
      (manifest.placement[c] ?? []).forEach((osdId, f) => {
        if (osdId === undefined || this.state.health(manifest, c, f, bad) !== 'healthy') return;
        byOsd.set(osdId, [...(byOsd.get(osdId) ?? []), f]);
      });
      for (const [osdId, indices] of byOsd) {
        const got = await this.readFragments(nsId, manifest, c, osdId, indices);
        indices.forEach((f, j) => {
          const value = got[j];
          if (value === 'unavailable') return;
          if (value === undefined || !isGood(value, chunk, f)) {
            bad.add(`${c}/${f}/${osdId}`);
            this.state.summary.fragmentsBad += 1;
            this.state.counters.fragmentsBad += 1;
            this.state.log(
              `maintenance: ${nsId}/${manifest.name} v${manifest.version} chunk ${c} fragment ${f} on ${osdId} is bad`,
            );
          }
        });
      }
    }
  }

  /**
   * Whole fragments of one chunk from one OSD. Per index: the bytes, undefined when the OSD
   * says not found or corrupt (damage), 'unavailable' when the OSD did not answer.
   */
  private async readFragments(
    nsId: string,
    manifest: Manifest,
    chunkIndex: number,
    osdId: string,
    indices: readonly number[],
  ): Promise<(Buffer | undefined | 'unavailable')[]> {
    const osd = this.state.osd(osdId);
    if (osd === undefined) return indices.map(() => 'unavailable');
    const chunk = manifest.info.chunks[chunkIndex] as ChunkInfo;
    await this.state.bucket.take(chunk.fragmentSizeBytes * indices.length);
    this.state.addBytes(chunk.fragmentSizeBytes * indices.length);
    try {
      const results = await osd.getFragments(
        indices.map((f) => fragmentKey(nsId, manifest.version, chunkIndex, f)),
        { deadlineMs: this.state.limits.fragmentReadDeadlineMs },
      );
      return results.map((result) => {
        if (result.ok) return result.value;
        if (
          result.error.code === AsdErrorCode.NotFound ||
          result.error.code === AsdErrorCode.Corrupt
        )
          return undefined;
        return 'unavailable';
      });
    } catch (err) {
      this.state.noteOsdError(osdId, err);
      return indices.map(() => 'unavailable');
    }
  }

  /**
   * Repairs one object: per damaged chunk, k good fragments -> rebuild the others -> write
   * them on live OSDs -> one manifest update for the whole object, conditional on the
   * manifest being unchanged (merged and retried when only the placement changed).
   */
  private async repairObject(damaged: DamagedObject): Promise<void> {
    const { nsId, name } = damaged;
    const key = nsKeys.manifest(nsId, name);
    const item = await this.state.kv.get(key);
    const manifest = item === undefined ? undefined : decodeOrLog(item, this.state.log);
    if (item === undefined || manifest === undefined || manifest.version !== damaged.version)
      return; // overwritten or deleted since the scan: the new version is fresh
    const { k, m } = manifest.info;
    const bad = new Set(damaged.bad);
    const writes: RepairWrite[] = [];
    for (let c = 0; c < manifest.info.chunks.length; c++) {
      const chunk = manifest.info.chunks[c] as ChunkInfo;
      const healthOf = (f: number): FragmentHealth => this.state.health(manifest, c, f, bad);
      const needed = range(k + m).filter((f) => {
        const h = healthOf(f);
        return h === 'missing' || h === 'lost' || h === 'bad';
      });
      if (needed.length === 0) continue;
      // Read healthy fragments, data first, until k are good.
      const fragments: (Buffer | undefined)[] = new Array(k + m).fill(undefined);
      const candidates = range(k + m).filter((f) => healthOf(f) === 'healthy');
      let good = 0;
      let next = 0;
      while (good < k && next < candidates.length) {
        const wave = candidates.slice(next, next + (k - good));
        next += wave.length;
        const byOsd = new Map<string, number[]>();
        for (const f of wave) {
          const osdId = manifest.placement[c]?.[f] as string;
          byOsd.set(osdId, [...(byOsd.get(osdId) ?? []), f]);
        }
        for (const [osdId, indices] of byOsd) {
          const got = await this.readFragments(nsId, manifest, c, osdId, indices);
          indices.forEach((f, j) => {
            const value = got[j];
            if (value instanceof Buffer && isGood(value, chunk, f)) {
              fragments[f] = value;
              good += 1;
            } else if (value !== 'unavailable') {
              bad.add(`${c}/${f}/${osdId}`);
              needed.push(f);
              this.state.summary.fragmentsBad += 1;
              this.state.counters.fragmentsBad += 1;
            }
          });
        }
      }
      if (good < k) {
        this.reportUnrecoverable({
          nsId,
          name,
          version: manifest.version,
          chunkIndex: c,
          healthyFragments: good,
          k,
        });
        continue;
      }
      // Place what can be placed now; the rest waits for the next pass.
      const targets = this.placeTargets(manifest, c, needed, bad);
      if (targets.length === 0) continue;
      const { rebuilt } = await rebuildFragments(
        chunkLayout(manifest.info, c),
        fragments,
        chunk.fragmentCrcs,
        targets.map((t) => t.fragmentIndex),
      );
      const byOsd = new Map<string, { f: number; value: Buffer }[]>();
      targets.forEach((t, i) => {
        byOsd.set(t.osdId, [
          ...(byOsd.get(t.osdId) ?? []),
          { f: t.fragmentIndex, value: rebuilt[i] as Buffer },
        ]);
      });
      for (const [osdId, items] of byOsd) {
        const osd = this.state.osd(osdId) as Osd;
        const bytes = items.reduce((n, i) => n + i.value.length, 0);
        await this.state.bucket.take(bytes);
        this.state.addBytes(bytes);
        try {
          await osd.putFragments(
            items.map((i) => ({
              key: fragmentKey(nsId, manifest.version, c, i.f),
              value: i.value,
              crc32c: chunk.fragmentCrcs[i.f] as number,
            })),
            { deadlineMs: this.state.limits.fragmentWriteDeadlineMs },
          );
          for (const i of items)
            writes.push({
              chunkIndex: c,
              fragmentIndex: i.f,
              osdId,
              completed: manifest.placement[c]?.[i.f] === undefined,
            });
        } catch (err) {
          this.state.noteOsdError(osdId, err);
          this.state.log(
            `maintenance: writing ${items.length} fragment(s) to ${osdId} failed: ${errorMessage(err)}`,
          );
        }
      }
    }
    if (writes.length === 0) return;
    await this.commitRepair(nsId, manifest, item, writes);
  }

  /**
   * A live OSD per fragment to rebuild: distinct from every OSD of the chunk's other
   * fragments, at most x per node, most free space first (random among equals); the OSD of a
   * bad copy only as a last resort (then the good bytes overwrite it in place, same key).
   */
  private placeTargets(
    manifest: Manifest,
    chunkIndex: number,
    needed: readonly number[],
    bad: ReadonlySet<string>,
  ): { fragmentIndex: number; osdId: string }[] {
    const { k, m } = manifest.info;
    const row = manifest.placement[chunkIndex] ?? [];
    const used = new Set<string>();
    const perNode = new Map<string, number>();
    const neededSet = new Set(needed);
    for (let f = 0; f < k + m; f++) {
      const osdId = row[f];
      if (osdId === undefined || neededSet.has(f)) continue;
      used.add(osdId);
      const nodeId = this.state.osds.get(osdId)?.record.nodeId ?? '';
      perNode.set(nodeId, (perNode.get(nodeId) ?? 0) + 1);
    }
    const size = (manifest.info.chunks[chunkIndex] as ChunkInfo).fragmentSizeBytes;
    const out: { fragmentIndex: number; osdId: string }[] = [];
    for (const f of [...neededSet].sort((a, b) => a - b)) {
      const badOsd =
        row[f] !== undefined && bad.has(`${chunkIndex}/${f}/${row[f]}`) ? row[f] : undefined;
      let best: OsdStatus | undefined;
      let bestScore = -Infinity;
      for (const status of this.state.osds.values()) {
        const osdId = status.record.osdId;
        if (!status.alive || status.record.state !== 'active' || status.freeBytes < size) continue;
        if (used.has(osdId)) continue;
        if ((perNode.get(status.record.nodeId) ?? 0) >= manifest.policy.x) continue;
        // Prefer OSDs the chunk does not use at all; a bad copy's OSD last.
        const score = (osdId === badOsd ? 0 : 2 ** 52) + status.freeBytes + this.state.random();
        if (score > bestScore) {
          best = status;
          bestScore = score;
        }
      }
      if (best === undefined) {
        this.state.log(
          `maintenance: ${manifest.name} chunk ${chunkIndex} fragment ${f}: no live OSD fits (x = ${manifest.policy.x}); waiting`,
        );
        continue;
      }
      used.add(best.record.osdId);
      perNode.set(best.record.nodeId, (perNode.get(best.record.nodeId) ?? 0) + 1);
      best.freeBytes -= size;
      out.push({ fragmentIndex: f, osdId: best.record.osdId });
    }
    return out;
  }

  private async commitRepair(
    nsId: string,
    scanned: Manifest,
    scannedItem: KeyValue,
    writes: readonly RepairWrite[],
  ): Promise<void> {
    const key = nsKeys.manifest(nsId, scanned.name);
    let item: KeyValue | undefined = scannedItem;
    let current: Manifest | undefined = scanned;
    for (let attempt = 0; attempt < MAINTENANCE_CAS_ATTEMPTS; attempt++) {
      if (item === undefined || current === undefined || current.version !== scanned.version) break;
      const placement = current.placement.map((row) => [...row]);
      const recorded: RepairWrite[] = [];
      for (const w of writes) {
        const row = placement[w.chunkIndex] as (string | undefined)[];
        // Only where the fragment is still as scanned: a writer's late record wins.
        if (row[w.fragmentIndex] !== scanned.placement[w.chunkIndex]?.[w.fragmentIndex]) continue;
        row[w.fragmentIndex] = w.osdId;
        recorded.push(w);
      }
      const updated: Manifest = { ...current, placement };
      // The compare is on the manifest key only (modRevision): maintenance is not the writer,
      // and an overwrite or delete since the read makes it fail, so nothing is resurrected.
      const result = await this.state.kv.txn({
        compares: [ifUnchanged(key, item)],
        success: [{ type: 'put', key, value: encodeManifest(updated) }],
        failure: [{ type: 'get', key }],
      });
      if (result.succeeded) {
        // Durability: the manifest names the rebuilt fragments, each fsynced on its OSD.
        this.state.counters.manifestUpdates += 1;
        for (const w of recorded) {
          if (w.completed) {
            this.state.summary.fragmentsCompleted += 1;
            this.state.counters.fragmentsCompleted += 1;
          } else {
            this.state.summary.fragmentsRepaired += 1;
            this.state.counters.fragmentsRepaired += 1;
          }
        }
        const stale = writes.filter((w) => !recorded.includes(w));
        await this.deleteBestEffort(nsId, scanned.version, stale, updated);
        // The replaced copies (lost, bad) on OSDs that still answer: best effort; the rest
        // become orphans for the orphan phase.
        const replaced = recorded.flatMap((w) => {
          const old = scanned.placement[w.chunkIndex]?.[w.fragmentIndex];
          return old === undefined || old === w.osdId
            ? []
            : [{ chunkIndex: w.chunkIndex, fragmentIndex: w.fragmentIndex, osdId: old }];
        });
        await this.deleteBestEffort(nsId, scanned.version, replaced, updated);
        return;
      }
      this.state.counters.manifestConflicts += 1;
      const first = result.results[0];
      item = first?.type === 'get' ? first.item : undefined;
      current = item === undefined ? undefined : decodeOrLog(item, this.state.log);
    }
    // Overwritten, deleted, or contention: what we wrote is nobody's, unless the current
    // manifest (same version) names that very copy.
    await this.deleteBestEffort(
      nsId,
      scanned.version,
      writes,
      current?.version === scanned.version ? current : undefined,
    );
  }

  /** Deletes fragment copies unless `keep` (a manifest of the same version) names them. */
  private async deleteBestEffort(
    nsId: string,
    version: number,
    copies: readonly { chunkIndex: number; fragmentIndex: number; osdId: string }[],
    keep: Manifest | undefined,
  ): Promise<void> {
    const byOsd = new Map<string, Buffer[]>();
    for (const c of copies) {
      if (keep?.placement[c.chunkIndex]?.[c.fragmentIndex] === c.osdId) continue;
      if (this.state.osds.get(c.osdId)?.alive !== true) continue;
      byOsd.set(c.osdId, [
        ...(byOsd.get(c.osdId) ?? []),
        fragmentKey(nsId, version, c.chunkIndex, c.fragmentIndex),
      ]);
    }
    for (const [osdId, keys] of byOsd) {
      try {
        await (this.state.osd(osdId) as Osd).deleteFragments(keys, {
          deadlineMs: OSD_ADMIN_DEADLINE_MS,
        });
      } catch (err) {
        this.state.noteOsdError(osdId, err);
        this.state.log(
          `maintenance: deleting ${keys.length} old copies on ${osdId} failed (orphans now): ${errorMessage(err)}`,
        );
      }
    }
  }

  private reportUnrecoverable(object: UnrecoverableObject): void {
    this.state.summary.unrecoverableCount += 1;
    this.state.counters.unrecoverable += 1;
    if (this.state.summary.unrecoverable.length < MAINTENANCE_MAX_REPORTED_UNRECOVERABLE)
      this.state.summary.unrecoverable.push(object);
    this.state.log(
      `maintenance: UNRECOVERABLE now: ${object.nsId}/${object.name} v${object.version} chunk ${object.chunkIndex} has ${object.healthyFragments} good fragments, needs k = ${object.k}; nothing written`,
    );
  }
}

function isGood(value: Buffer, chunk: ChunkInfo, fragmentIndex: number): boolean {
  return (
    value.length === chunk.fragmentSizeBytes && crc32c(value) === chunk.fragmentCrcs[fragmentIndex]
  );
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
