import { ifAbsent, type TxnOp } from '@shale/arakoon-kv';
import { MAINTENANCE_MANIFEST_PAGE, OSD_ADMIN_DEADLINE_MS } from './constants.js';
import { decodeOrLog, type MaintenanceState, type OsdStatus } from './maintenance-state.js';
import { maintenanceKeys } from './maintenance-types.js';
import type { NamespaceInfo } from './namespace-manager.js';
import { fragmentKey, nsKeys } from './object-keys.js';
import type { Osd } from './osd.js';

/**
 * Maintenance's orphan collection, the last phase of a pass once the scan is complete: list
 * each live OSD's fragment keys, window by window; a key no current manifest names (with
 * that OSD) gets a first-seen time in the KV and is deleted once it stays an orphan for
 * orphanGraceMs. State shared with the other phases lives in MaintenanceState.
 */

const ORPHAN_KEY = /^([0-9a-f]{32})\/([0-9a-f]{16})\/(\d+)\/(\d+)$/;
const NS_PREFIX = /^([0-9a-f]{32})\//;

export class OrphanCollector {
  constructor(private readonly state: MaintenanceState) {}

  /**
   * Orphans: a fragment key on an OSD that no current manifest names (with that OSD), in an
   * active namespace of the backend, or any fragment of a namespace that has no record. The
   * first time one is seen is stored in the KV; it is deleted once now - firstSeen >= grace.
   * Namespaces being deleted are left to namespace deletion.
   */
  async orphanPhase(): Promise<void> {
    const all = await this.state.allNamespaces();
    const known = new Map(all.map((ns) => [ns.nsId, ns]));
    const confirmed = new Set<string>();
    for (const ns of all) {
      if (ns.backendId !== this.state.backendId || ns.state !== 'active') continue;
      await this.orphansOfNamespace(ns.nsId, confirmed);
    }
    await this.orphansOfUnknownNamespaces(known, confirmed);
    // First-seen records not confirmed this pass: the fragment became live or is gone.
    const prefix = maintenanceKeys.orphansPrefix(this.state.backendId);
    let continuation: Buffer | undefined;
    do {
      const page = await this.state.kv.range(
        { prefix },
        continuation === undefined ? {} : { continuation },
      );
      const stale = page.items.filter((i) => !confirmed.has(i.key.toString('latin1')));
      await this.state.kvDeleteMany(stale.map((i) => i.key));
      continuation = page.continuation;
    } while (continuation !== undefined);
  }

  private listableOsds(): OsdStatus[] {
    return [...this.state.osds.values()].filter((s) => s.alive);
  }

  private async orphansOfNamespace(nsId: string, confirmed: Set<string>): Promise<void> {
    const cursors = new Map<string, Buffer | undefined>(
      this.listableOsds().map((s) => [s.record.osdId, undefined]),
    );
    const prefix = Buffer.from(`${nsId}/`, 'latin1');
    while (cursors.size > 0) {
      // One window: a page of keys per OSD, then every manifest of the namespace.
      const candidates = new Map<string, { osdId: string; key: string }>();
      for (const [osdId, startAfter] of [...cursors]) {
        let page: { keys: Buffer[]; more: boolean };
        try {
          page = await (this.state.osd(osdId) as Osd).listFragments(
            prefix,
            startAfter,
            this.state.limits.orphanListKeys,
            {
              deadlineMs: OSD_ADMIN_DEADLINE_MS,
            },
          );
        } catch (err) {
          this.state.noteOsdError(osdId, err);
          cursors.delete(osdId);
          continue;
        }
        for (const k of page.keys) {
          const key = k.toString('latin1');
          if (ORPHAN_KEY.test(key)) candidates.set(`${key}/${osdId}`, { osdId, key });
        }
        const lastKey = page.keys[page.keys.length - 1];
        if (!page.more || lastKey === undefined) cursors.delete(osdId);
        else cursors.set(osdId, lastKey);
      }
      if (candidates.size === 0) continue;
      // Manifests are read after the listing: a fragment committed before its key was listed
      // is seen live here; one committed later is covered by the grace period.
      let continuation: Buffer | undefined;
      do {
        const page = await this.state.kv.range(
          { prefix: nsKeys.manifestsPrefix(nsId) },
          continuation === undefined
            ? { limit: MAINTENANCE_MANIFEST_PAGE }
            : { limit: MAINTENANCE_MANIFEST_PAGE, continuation },
        );
        for (const item of page.items) {
          const manifest = decodeOrLog(item, this.state.log);
          if (manifest === undefined) continue;
          manifest.placement.forEach((row, c) => {
            row.forEach((osdId, f) => {
              if (osdId === undefined) return;
              const key = fragmentKey(nsId, manifest.version, c, f).toString('latin1');
              candidates.delete(`${key}/${osdId}`);
            });
          });
        }
        continuation = page.continuation;
      } while (continuation !== undefined);
      await this.judgeOrphans(nsId, [...candidates.values()], confirmed, async () => true);
    }
  }

  /** Fragments of namespaces with no record at all (deleted, or never created). */
  private async orphansOfUnknownNamespaces(
    known: ReadonlyMap<string, NamespaceInfo>,
    confirmed: Set<string>,
  ): Promise<void> {
    for (const status of this.listableOsds()) {
      const osdId = status.record.osdId;
      let startAfter: Buffer | undefined;
      for (;;) {
        let page: { keys: Buffer[]; more: boolean };
        try {
          page = await (this.state.osd(osdId) as Osd).listFragments(
            Buffer.alloc(0),
            startAfter,
            this.state.limits.orphanListKeys,
            {
              deadlineMs: OSD_ADMIN_DEADLINE_MS,
            },
          );
        } catch (err) {
          this.state.noteOsdError(osdId, err);
          break;
        }
        const byNs = new Map<string, { osdId: string; key: string }[]>();
        let skipTo: Buffer | undefined;
        for (const k of page.keys) {
          const key = k.toString('latin1');
          const nsId = NS_PREFIX.exec(key)?.[1];
          if (nsId !== undefined && known.has(nsId)) {
            // A known namespace: jump past all of its keys ('\xff' sorts after them).
            skipTo = Buffer.from(`${nsId}/\xff`, 'latin1');
            break;
          }
          startAfter = k;
          if (nsId === undefined || !ORPHAN_KEY.test(key)) continue;
          byNs.set(nsId, [...(byNs.get(nsId) ?? []), { osdId, key }]);
        }
        for (const [nsId, candidates] of byNs) {
          // Re-checked before deleting: a namespace created since the phase began is not ours.
          await this.judgeOrphans(
            nsId,
            candidates,
            confirmed,
            async () => (await this.state.kv.get(nsKeys.record(nsId))) === undefined,
          );
        }
        if (skipTo !== undefined) {
          startAfter = skipTo;
          continue;
        }
        if (!page.more) break;
      }
    }
  }

  /** Records first-seen times, deletes candidates past the grace period. */
  private async judgeOrphans(
    nsId: string,
    candidates: readonly { osdId: string; key: string }[],
    confirmed: Set<string>,
    stillOrphan: () => Promise<boolean>,
  ): Promise<void> {
    if (candidates.length === 0) return;
    const nowMs = this.state.now();
    const records = new Map<string, number>();
    let continuation: Buffer | undefined;
    do {
      const page = await this.state.kv.range(
        { prefix: maintenanceKeys.orphansPrefix(this.state.backendId, nsId) },
        continuation === undefined ? {} : { continuation },
      );
      for (const item of page.items)
        records.set(item.key.toString('latin1'), Number(item.value.toString('latin1')));
      continuation = page.continuation;
    } while (continuation !== undefined);
    const due: { osdId: string; key: string; recordKey: Buffer }[] = [];
    const fresh: Buffer[] = [];
    for (const c of candidates) {
      const recordKey = maintenanceKeys.orphan(this.state.backendId, c.key, c.osdId);
      const id = recordKey.toString('latin1');
      const firstSeen = records.get(id);
      if (firstSeen === undefined && this.state.limits.orphanGraceMs > 0) {
        fresh.push(recordKey);
        confirmed.add(id);
        this.state.summary.orphansPending += 1;
      } else if (firstSeen !== undefined && nowMs - firstSeen < this.state.limits.orphanGraceMs) {
        confirmed.add(id);
        this.state.summary.orphansPending += 1;
      } else {
        due.push({ ...c, recordKey });
      }
    }
    for (let at = 0; at < fresh.length; at += 100) {
      const keys = fresh.slice(at, at + 100);
      const value = Buffer.from(String(nowMs));
      // ifAbsent: a record written meanwhile keeps its (earlier) first-seen time.
      await this.state.kv.txn({
        compares: keys.map((key) => ifAbsent(key)),
        success: keys.map((key): TxnOp => ({ type: 'put', key, value })),
        failure: [],
      });
    }
    if (due.length === 0) return;
    if (!(await stillOrphan())) {
      for (const d of due) confirmed.add(d.recordKey.toString('latin1'));
      return;
    }
    const byOsd = new Map<string, typeof due>();
    for (const d of due) byOsd.set(d.osdId, [...(byOsd.get(d.osdId) ?? []), d]);
    for (const [osdId, list] of byOsd) {
      try {
        await (this.state.osd(osdId) as Osd).deleteFragments(
          list.map((d) => Buffer.from(d.key, 'latin1')),
          { deadlineMs: OSD_ADMIN_DEADLINE_MS },
        );
        this.state.summary.orphansDeleted += list.length;
        this.state.counters.orphansDeleted += list.length;
        this.state.log(
          `maintenance: deleted ${list.length} orphan fragment(s) of ${nsId} on ${osdId}`,
        );
      } catch (err) {
        this.state.noteOsdError(osdId, err);
        for (const d of list) confirmed.add(d.recordKey.toString('latin1'));
      }
    }
  }
}
