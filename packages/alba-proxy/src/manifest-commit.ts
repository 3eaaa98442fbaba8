import {
  type KeyValue,
  KvErrorCode,
  type KvStore,
  type TxnOpResult,
  type TxnResult,
} from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import {
  CAS_MAX_ATTEMPTS,
  PUT_VERSION_RANGE_COUNT,
  VERSION_RANGES_MAX_NAMESPACES,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import { LruMap } from './lru-map.js';
import { decodeManifest, encodeManifest, type Manifest } from './manifest.js';
import type { NamespaceInfo } from './namespace-manager.js';
import { decodeEpoch, encodeEpoch, nsKeys } from './object-keys.js';

/**
 * The KV side of a put: object versions and the manifest commit, in as few round trips as
 * the common case allows (issue 13: one KV transaction per SCO).
 *
 *   version:  taken from a range of PUT_VERSION_RANGE_COUNT numbers held in memory per
 *             namespace; one get + txn on the namespace's counter per range (not per put).
 *             A range lost with the process leaves a gap, never a reuse: the counter in the
 *             KV is past it before any of its numbers is handed out.
 *   commit:   ONE txn, compares: epoch == writerEpoch, the manifest key's modRevision ==
 *             the one this proxy last saw (its own commit; 0 = absent, a new name), the
 *             counter's createRevision == the one the range came from (the namespace was not
 *             deleted and re-created since). The failure branch reads all three keys, so a
 *             failed compare needs no extra get: fenced, gone, or a concurrent writer (then
 *             the same txn again against what the failure branch returned).
 *   late:     fragments that became durable after the commit are recorded by one txn
 *             against the commit's own revision (same fallbacks).
 *
 * KV_OUTCOME_UNKNOWN on a commit: the same txn is sent again; if the lost one landed, the
 * compare fails and the failure branch shows our version (committed). A lost counter
 * update can only skip numbers.
 */

/** A version to put under, and where it came from (checked again at commit). */
export interface VersionLease {
  readonly version: number;
  /** createRevision of the namespace's version counter when the range was taken. */
  readonly counterCreateRevision: number;
}

/** What the commit replaced and the revision it wrote (the manifest's modRevision). */
export interface CommitOutcome {
  readonly previous: Manifest | undefined;
  readonly modRevision: number;
}

export type LateOutcome = 'recorded' | 'superseded' | 'fenced' | 'contention';

interface VersionRange {
  next: number;
  readonly end: number;
  readonly counterCreateRevision: number;
}

interface KnownManifest {
  /** undefined: the key holds something undecodable (replaced, its fragments not named). */
  readonly manifest: Manifest | undefined;
  readonly modRevision: number;
}

export interface ManifestCommitterOptions {
  readonly versionRangeCount?: number;
  /** Called when the namespace's epoch key is gone: throws NOT_FOUND or DELETING. */
  readonly namespaceGone: (nsId: string) => Promise<never>;
  readonly log: (line: string) => void;
  readonly knownMaxEntries: number;
}

export class ManifestCommitter {
  private readonly kv: KvStore;
  private readonly rangeCount: number;
  private readonly ranges = new LruMap<string, VersionRange>(VERSION_RANGES_MAX_NAMESPACES);
  /** Ranges being taken, one per namespace: concurrent puts wait for the same one. */
  private readonly taking = new Map<string, Promise<void>>();
  /** The manifest and its modRevision as this proxy last committed or read it, by name. */
  private readonly known: LruMap<string, KnownManifest>;
  private readonly options: ManifestCommitterOptions;

  constructor(kv: KvStore, options: ManifestCommitterOptions) {
    this.kv = kv;
    this.options = options;
    this.rangeCount = options.versionRangeCount ?? PUT_VERSION_RANGE_COUNT;
    this.known = new LruMap(options.knownMaxEntries);
  }

  /** The next version of the namespace (a KV round trip only when a range runs out). */
  async nextVersion(ns: NamespaceInfo): Promise<VersionLease> {
    const key = rangeKey(ns);
    for (;;) {
      const range = this.ranges.get(key);
      if (range !== undefined && range.next < range.end) {
        const version = range.next;
        range.next += 1;
        return { version, counterCreateRevision: range.counterCreateRevision };
      }
      let taking = this.taking.get(key);
      if (taking === undefined) {
        // Only the taker installs the range: a waiter that wakes late never puts an
        // exhausted range back over a fresh one.
        taking = this.takeRange(ns)
          .then((taken) => {
            this.ranges.set(key, taken);
          })
          .finally(() => this.taking.delete(key));
        this.taking.set(key, taking);
      }
      await taking;
    }
  }

  /** Drops what is known about a namespace (deleted, re-created, fenced by a new incarnation). */
  forgetNamespace(ns: NamespaceInfo): void {
    this.ranges.delete(rangeKey(ns));
  }

  /** Forgets the revision of one object (deleted by this proxy). */
  forgetObject(nsId: string, name: string): void {
    this.known.delete(knownKey(nsId, name));
  }

  private async takeRange(ns: NamespaceInfo): Promise<VersionRange> {
    const key = nsKeys.versionSeq(ns.nsId);
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      const current = await this.kv.get(key);
      const last = current === undefined ? 0 : decodeCounter(current);
      const end = last + this.rangeCount;
      let result: TxnResult;
      try {
        result = await this.kv.txn({
          compares: [
            { key, target: 'modRevision', op: 'equal', number: current?.modRevision ?? 0 },
          ],
          success: [{ type: 'put', key, value: Buffer.from(String(end), 'latin1') }],
        });
      } catch (err) {
        // The lost write, if it lands, only moves the counter on: numbers are skipped.
        if (isShaleError(err, KvErrorCode.OutcomeUnknown)) continue;
        throw err;
      }
      if (!result.succeeded) continue;
      return {
        next: last + 1,
        end: end + 1,
        // Created by this txn when absent: its revision is the key's createRevision.
        counterCreateRevision: current?.createRevision ?? result.revision,
      };
    }
    throw proxyError(
      ProxyErrorCode.CommitUnknown,
      `namespace ${ns.nsId}: no version range after ${CAS_MAX_ATTEMPTS} attempts`,
    );
  }

  /**
   * Commits `manifest` (conditional on the epoch, see above). Returns the manifest it
   * replaced (its fragments are the caller's to delete) and the revision written.
   * PROXY_FENCED when the epoch moved or the namespace was re-created.
   */
  async commit(
    ns: NamespaceInfo,
    manifest: Manifest,
    bytes: Buffer,
    lease: VersionLease,
  ): Promise<CommitOutcome> {
    const nsId = ns.nsId;
    const key = nsKeys.manifest(nsId, manifest.name);
    const cacheKey = knownKey(nsId, manifest.name);
    // What we believe is there: our last commit of the name, or nothing (a new SCO).
    let expected: KnownManifest | undefined = this.known.get(cacheKey);
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      let result: TxnResult;
      try {
        result = await this.kv.txn(
          this.commitTxn(ns, key, bytes, manifest.writerEpoch, expected, lease),
        );
      } catch (err) {
        if (!isShaleError(err, KvErrorCode.OutcomeUnknown)) throw err;
        this.options.log(
          `commit ${nsId}/${manifest.name} v${manifest.version}: outcome unknown, sending again`,
        );
        continue;
      }
      if (result.succeeded) {
        this.known.set(cacheKey, { manifest, modRevision: result.revision });
        return { previous: expected?.manifest, modRevision: result.revision };
      }
      const current = await this.checkFailure(ns, manifest.writerEpoch, lease, result.results);
      const currentManifest = tryDecode(current);
      if (current !== undefined && currentManifest?.version === manifest.version) {
        // An earlier attempt with an unknown outcome landed: it replaced `expected`.
        this.known.set(cacheKey, { manifest, modRevision: current.modRevision });
        return { previous: expected?.manifest, modRevision: current.modRevision };
      }
      // Same epoch, the manifest is not what we thought (a concurrent put of the same name,
      // maintenance, or a name this proxy never wrote): the same txn against what is there.
      expected =
        current === undefined
          ? undefined
          : { manifest: currentManifest, modRevision: current.modRevision };
    }
    throw proxyError(
      ProxyErrorCode.CommitUnknown,
      `commit ${nsId}/${manifest.name} v${manifest.version}: no definite outcome after ${CAS_MAX_ATTEMPTS} attempts`,
    );
  }

  /**
   * Records fragments that became durable after the commit: `update` adds them to the
   * manifest as committed (or as found, when someone else touched it since but it is still
   * our version). 'superseded': the name holds another version or nothing (the fragments
   * are nobody's); 'fenced': the epoch moved (the manifest keeps its gaps).
   */
  async recordLate(
    ns: NamespaceInfo,
    acked: Manifest,
    writerEpoch: number,
    update: (current: Manifest) => Manifest,
  ): Promise<{ outcome: LateOutcome; manifest?: Manifest; bytes?: number }> {
    const nsId = ns.nsId;
    const key = nsKeys.manifest(nsId, acked.name);
    const cacheKey = knownKey(nsId, acked.name);
    let expected = this.known.get(cacheKey);
    let base: Manifest = acked;
    if (expected?.manifest?.version === acked.version) base = expected.manifest;
    else expected = undefined;
    for (let attempt = 0; attempt < CAS_MAX_ATTEMPTS; attempt++) {
      if (expected === undefined) {
        const item = await this.kv.get(key);
        const current = tryDecode(item);
        if (item === undefined || current?.version !== acked.version)
          return { outcome: 'superseded' };
        expected = { manifest: current, modRevision: item.modRevision };
        base = current;
      }
      const updated = update(base);
      const bytes = encodeManifest(updated);
      const epochKey = nsKeys.epoch(nsId);
      const result = await this.kv.txn({
        compares: [
          { key: epochKey, target: 'value', op: 'equal', value: encodeEpoch(writerEpoch) },
          { key, target: 'modRevision', op: 'equal', number: expected.modRevision },
        ],
        success: [{ type: 'put', key, value: bytes }],
        failure: [
          { type: 'get', key: epochKey },
          { type: 'get', key },
        ],
      });
      if (result.succeeded) {
        this.known.set(cacheKey, { manifest: updated, modRevision: result.revision });
        return { outcome: 'recorded', manifest: updated, bytes: bytes.length };
      }
      const epochItem = itemOf(result.results[0]);
      if (epochItem === undefined || decodeEpoch(epochItem.value) !== writerEpoch) {
        return { outcome: 'fenced' };
      }
      const item = itemOf(result.results[1]);
      const current = tryDecode(item);
      if (item === undefined || current?.version !== acked.version)
        return { outcome: 'superseded' };
      expected = { manifest: current, modRevision: item.modRevision };
      base = current;
    }
    return { outcome: 'contention' };
  }

  private commitTxn(
    ns: NamespaceInfo,
    key: Buffer,
    bytes: Buffer,
    writerEpoch: number,
    expected: KnownManifest | undefined,
    lease: VersionLease,
  ) {
    const epochKey = nsKeys.epoch(ns.nsId);
    const counterKey = nsKeys.versionSeq(ns.nsId);
    return {
      compares: [
        {
          key: epochKey,
          target: 'value' as const,
          op: 'equal' as const,
          value: encodeEpoch(writerEpoch),
        },
        {
          key,
          target: 'modRevision' as const,
          op: 'equal' as const,
          number: expected?.modRevision ?? 0,
        },
        {
          key: counterKey,
          target: 'createRevision' as const,
          op: 'equal' as const,
          number: lease.counterCreateRevision,
        },
      ],
      success: [{ type: 'put' as const, key, value: bytes }],
      failure: [
        { type: 'get' as const, key: epochKey },
        { type: 'get' as const, key },
        { type: 'get' as const, key: counterKey },
      ],
    };
  }

  /** Throws for a fenced writer or a gone/re-created namespace; returns the manifest item. */
  private async checkFailure(
    ns: NamespaceInfo,
    writerEpoch: number,
    lease: VersionLease,
    results: readonly TxnOpResult[],
  ): Promise<KeyValue | undefined> {
    const epochItem = itemOf(results[0]);
    if (epochItem === undefined) {
      this.forgetNamespace(ns);
      await this.options.namespaceGone(ns.nsId);
    }
    const epoch = epochItem === undefined ? undefined : decodeEpoch(epochItem.value);
    if (epoch !== writerEpoch) {
      throw proxyError(
        ProxyErrorCode.Fenced,
        `namespace ${ns.nsId} is at epoch ${epoch}, the writer holds ${writerEpoch}`,
        { details: { nsId: ns.nsId, epoch: String(epoch), writerEpoch: String(writerEpoch) } },
      );
    }
    const counter = itemOf(results[2]);
    if (counter?.createRevision !== lease.counterCreateRevision) {
      // The namespace was deleted and re-created since the version was taken: this put
      // belongs to the old one.
      this.forgetNamespace(ns);
      throw proxyError(
        ProxyErrorCode.Fenced,
        `namespace ${ns.nsId} was re-created since this put took its version`,
        { details: { nsId: ns.nsId, epoch: String(epoch), writerEpoch: String(writerEpoch) } },
      );
    }
    return itemOf(results[1]);
  }
}

function rangeKey(ns: NamespaceInfo): string {
  return `${ns.nsId}@${ns.createRevision}`;
}

function knownKey(nsId: string, name: string): string {
  return `${nsId}/${name}`;
}

function itemOf(result: TxnOpResult | undefined): KeyValue | undefined {
  return result?.type === 'get' ? result.item : undefined;
}

function tryDecode(item: KeyValue | undefined): Manifest | undefined {
  if (item === undefined) return undefined;
  try {
    return decodeManifest(item.value);
  } catch (err) {
    if (isShaleError(err, ProxyErrorCode.CorruptManifest)) return undefined;
    throw err;
  }
}

/** The version counter's value: the last number handed out, as decimal ASCII. */
function decodeCounter(item: KeyValue): number {
  const text = item.value.toString('latin1');
  const last = Number(text);
  if (!/^[0-9]{1,16}$/.test(text) || !Number.isSafeInteger(last)) {
    throw proxyError(ProxyErrorCode.Corrupt, `version counter holds ${JSON.stringify(text)}`);
  }
  return last;
}
