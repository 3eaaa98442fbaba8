import { AsdErrorCode } from '@shale/asd';
import { assert, crc32c, errorMessage, isShaleError, type ShaleError } from '@shale/common';
import { mapWithConcurrency } from './concurrency.js';
import {
  CACHE_FILL_MAX_IN_FLIGHT,
  CODEC_CHUNK_CONCURRENCY,
  LIST_OBJECTS_MAX_LIMIT,
  READ_MAX_SLICES,
  READ_MAX_TOTAL_BYTES,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import { decodeManifest, type Manifest } from './manifest.js';
import type { NamespaceInfo } from './namespace-manager.js';
import { type ChunkInfo, decodeChunk, type FragmentRead, readRange } from './object-codec.js';
import { checkNamespaceId, checkObjectName, fragmentKey, nsKeys } from './object-keys.js';
import type { Osd } from './osd.js';
import { cacheKey, type OsdView, objectAad, type ProxyEngineState } from './proxy-engine-state.js';
import type { DamagedFragment, ObjectListing, ObjectSlice } from './proxy-types.js';

/**
 * The proxy engine's read path: objectInfo, listObjects, getObject (whole objects: data
 * fragments first, cache first, parity when one fails or is slow, decode) and readRanges
 * (slices through the codec's readRange, one getFragmentRanges per OSD per round, hedged),
 * and the damage a read found, reported once the read is known to have used the current
 * manifest. State shared with the write path lives in ProxyEngineState.
 */

/** Per-read bookkeeping: damage found and whether a fragment was missing (overwritten object?). */
interface ReadContext {
  readonly ns: NamespaceInfo;
  readonly manifest: Manifest;
  sawNotFound: boolean;
  usedParity: boolean;
  readonly damaged: DamagedFragment[];
  /** `${chunk}/${fragment}` given up on during this read (failed or hedged). */
  readonly unavailable: Set<string>;
  /** Whether slow OSDs may be given up on (hedged), and how many calls were. */
  readonly hedging: boolean;
  hedged: number;
}

export class ProxyReader {
  private cacheFills = 0;

  constructor(private readonly state: ProxyEngineState) {}

  /** The decoded manifest, read from the KV (PROXY_OBJECT_NOT_FOUND). */
  async objectInfo(nsId: string, name: string): Promise<Manifest> {
    this.state.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    return this.state.loadManifest(nsId, name);
  }

  async listObjects(
    nsId: string,
    options: { prefix?: string; limit?: number; continuation?: Buffer } = {},
  ): Promise<ObjectListing> {
    this.state.checkOpen();
    checkNamespaceId(nsId);
    const base = nsKeys.manifestsPrefix(nsId);
    const prefix = Buffer.concat([base, Buffer.from(options.prefix ?? '', 'latin1')]);
    const limit = Math.min(options.limit ?? LIST_OBJECTS_MAX_LIMIT, LIST_OBJECTS_MAX_LIMIT);
    const page = await this.state.kv.range(
      { prefix },
      options.continuation === undefined
        ? { limit }
        : { limit, continuation: options.continuation },
    );
    const objects = page.items.map((item) => {
      const manifest = decodeManifest(item.value);
      return {
        name: item.key.subarray(base.length).toString('latin1'),
        sizeBytes: manifest.info.sizeBytes,
        version: manifest.version,
      };
    });
    return page.continuation === undefined
      ? { objects }
      : { objects, continuation: page.continuation };
  }

  /**
   * Reads a whole object. Per chunk the k data fragments are fetched (fragment cache first);
   * a data fragment that fails, is missing, fails its CRC32C or has not arrived after the
   * hedge delay makes the parity fragments be fetched too, and any k good ones decode.
   * The object's CRC32C is checked last: no byte that fails a checksum is ever returned.
   */
  async getObject(nsId: string, name: string): Promise<Buffer> {
    this.state.checkOpen();
    checkNamespaceId(nsId);
    checkObjectName(name);
    const { info: ns } = await this.state.namespace(nsId, false);
    let manifest = await this.state.loadManifest(nsId, name);
    for (let attempt = 0; ; attempt++) {
      const ctx = newReadContext(ns, manifest);
      try {
        const data = await this.readWhole(ctx);
        this.reportDamage(ctx);
        this.state.counters.gets += 1;
        this.state.counters.bytesOut += data.length;
        return data;
      } catch (err) {
        if (attempt > 0 || !ctx.sawNotFound) throw err;
        const fresh = await this.state.loadManifest(nsId, name);
        if (fresh.version === manifest.version) {
          this.reportDamage(ctx);
          throw err;
        }
        manifest = fresh; // overwritten while we read: read the new version
      }
    }
  }

  /**
   * Reads byte ranges of objects; answers in the order asked. Each slice is a codec
   * readRange whose fetch sends one getFragmentRanges per OSD per round, hedged. Manifests
   * come from an in-memory LRU; a fragment 'not found' re-reads the manifest once (the object
   * may have been overwritten) and reads again if it changed. PROXY_BAD_RANGE for a slice
   * past the object's end.
   */
  async readRanges(nsId: string, slices: readonly ObjectSlice[]): Promise<Buffer[]> {
    this.state.checkOpen();
    checkNamespaceId(nsId);
    if (slices.length > READ_MAX_SLICES) {
      throw proxyError(ProxyErrorCode.BadRange, `at most ${READ_MAX_SLICES} slices per call`);
    }
    let totalBytes = 0;
    for (const slice of slices) {
      checkObjectName(slice.name);
      if (
        !Number.isSafeInteger(slice.offsetBytes) ||
        !Number.isSafeInteger(slice.lengthBytes) ||
        slice.offsetBytes < 0 ||
        slice.lengthBytes < 0
      ) {
        throw proxyError(
          ProxyErrorCode.BadRange,
          `slice ${slice.offsetBytes}+${slice.lengthBytes} of ${slice.name} is not a range`,
        );
      }
      totalBytes += slice.lengthBytes;
    }
    if (totalBytes > READ_MAX_TOTAL_BYTES) {
      throw proxyError(
        ProxyErrorCode.BadRange,
        `${totalBytes} bytes asked; at most ${READ_MAX_TOTAL_BYTES} per call`,
      );
    }
    const { info: ns } = await this.state.namespace(nsId, false);
    return mapWithConcurrency(slices, this.state.limits.readSliceConcurrency, (slice) =>
      this.readSlice(ns, slice),
    );
  }

  private async readSlice(ns: NamespaceInfo, slice: ObjectSlice): Promise<Buffer> {
    const cached = this.state.manifestCache.get(cacheKey(ns.nsId, slice.name));
    let manifest = cached ?? (await this.state.loadManifest(ns.nsId, slice.name));
    let fresh = cached === undefined;
    let reloaded = false;
    let hedging = true;
    for (;;) {
      if (slice.offsetBytes + slice.lengthBytes > manifest.info.sizeBytes) {
        if (!fresh) {
          manifest = await this.state.loadManifest(ns.nsId, slice.name);
          fresh = true;
          continue;
        }
        throw proxyError(
          ProxyErrorCode.BadRange,
          `slice ${slice.offsetBytes}+${slice.lengthBytes} is past the end of ${slice.name} (${manifest.info.sizeBytes} bytes)`,
          { details: { name: slice.name } },
        );
      }
      const ctx = newReadContext(ns, manifest, hedging);
      const read = ctx.manifest;
      let bytes: Buffer | undefined;
      let failure: unknown;
      try {
        bytes = await readRange(read.info, slice.offsetBytes, slice.lengthBytes, {
          fetch: (reads) => this.fetchRanges(ctx, reads),
          isAvailable: (chunkIndex, fragmentIndex) =>
            this.state.fragmentReadable(read, chunkIndex, fragmentIndex),
          ...(this.state.keyProvider === undefined ? {} : { keyProvider: this.state.keyProvider }),
          aad: objectAad(ns.nsId, slice.name),
        });
      } catch (err) {
        failure = err;
      }
      if (ctx.sawNotFound && !reloaded) {
        // The object may have been overwritten (its old fragments deleted): look again.
        reloaded = true;
        const latest = await this.state.loadManifest(ns.nsId, slice.name);
        if (latest.version !== manifest.version) {
          manifest = latest;
          fresh = true;
          continue;
        }
      }
      if (
        bytes === undefined &&
        ctx.hedged > 0 &&
        isShaleError(failure, ProxyErrorCode.NotEnoughFragments)
      ) {
        // Hedging gave up on slow fragments that were needed after all (on top of failed
        // ones): read again and wait for every answer. Hedging only ever costs time.
        hedging = false;
        continue;
      }
      this.reportDamage(ctx);
      if (bytes === undefined) throw failure;
      if (ctx.usedParity) this.state.counters.parityDecodes += 1;
      this.state.counters.rangeReads += 1;
      this.state.counters.bytesOut += bytes.length;
      return bytes;
    }
  }

  /** The fetch of readRange: one getFragmentRanges per OSD, hedged. */
  private async fetchRanges(
    ctx: ReadContext,
    reads: readonly FragmentRead[],
  ): Promise<(Buffer | undefined)[]> {
    const { manifest } = ctx;
    const view = await this.state.osdStates();
    const answers: (Buffer | undefined)[] = new Array(reads.length).fill(undefined);
    const groups = new Map<string, number[]>();
    reads.forEach((read, i) => {
      const osdId = manifest.placement[read.chunkIndex]?.[read.fragmentIndex];
      if (osdId === undefined) return;
      const list = groups.get(osdId) ?? [];
      list.push(i);
      groups.set(osdId, list);
    });
    // Spare fragments per chunk: how many more may be given up on and still leave k.
    const spare = new Map<number, number>();
    for (const read of reads) {
      if (spare.has(read.chunkIndex)) continue;
      let available = 0;
      for (let f = 0; f < manifest.info.k + manifest.info.m; f++) {
        if (
          this.state.fragmentReadable(manifest, read.chunkIndex, f) &&
          !ctx.unavailable.has(`${read.chunkIndex}/${f}`)
        )
          available += 1;
      }
      spare.set(read.chunkIndex, available - manifest.info.k);
    }
    await Promise.all(
      [...groups.entries()].map(async ([osdId, indices]) => {
        const mine = indices.map((i) => reads[i] as FragmentRead);
        // Hedge only when every chunk touched keeps k fragments without these.
        const perChunk = new Map<number, number>();
        for (const r of mine) perChunk.set(r.chunkIndex, (perChunk.get(r.chunkIndex) ?? 0) + 1);
        const canHedge = ctx.hedging && [...perChunk].every(([c, n]) => (spare.get(c) ?? 0) >= n);
        if (canHedge) for (const [c, n] of perChunk) spare.set(c, (spare.get(c) ?? 0) - n);
        const bytes = mine.reduce((n, r) => n + r.lengthBytes, 0);
        const hedgeMs =
          this.state.limits.readHedgeBaseMs + bytes / this.state.limits.readHedgeBytesPerMs;
        const results = await this.callWithHedge(
          osdId,
          (osd) =>
            osd.getFragmentRanges(
              mine.map((r) => ({
                key: fragmentKey(ctx.ns.nsId, manifest.version, r.chunkIndex, r.fragmentIndex),
                offset: r.offsetBytes,
                length: r.lengthBytes,
              })),
              { deadlineMs: this.state.limits.fragmentReadDeadlineMs },
            ),
          view,
          canHedge ? hedgeMs : undefined,
        );
        if (results === 'hedged') ctx.hedged += 1;
        mine.forEach((read, j) => {
          const result = results === 'hedged' ? undefined : results?.[j];
          let value: Buffer | undefined;
          if (result === undefined) value = undefined;
          else if (result.ok) {
            value = result.value.length === read.lengthBytes ? result.value : undefined;
            if (value === undefined) this.noteDamage(ctx, read, osdId, 'checksum');
          } else this.noteItemError(ctx, read, osdId, result.error);
          if (value === undefined) {
            ctx.unavailable.add(`${read.chunkIndex}/${read.fragmentIndex}`);
            this.state.counters.fragmentReadFailures += 1;
          } else {
            this.state.counters.fragmentsRead += 1;
            if (read.fragmentIndex >= manifest.info.k) ctx.usedParity = true;
          }
          answers[indices[j] as number] = value;
        });
      }),
    );
    return answers;
  }

  /**
   * Calls an OSD; undefined when it fails at the call level, 'hedged' when (with a hedge
   * delay) it has not answered in time. A hedged call is not cancelled: it ends by its own
   * deadline and its answer is dropped.
   */
  private async callWithHedge<T>(
    osdId: string,
    call: (osd: Osd) => Promise<T>,
    view: OsdView,
    hedgeMs: number | undefined,
  ): Promise<T | 'hedged' | undefined> {
    const settled = call(this.state.osdById(view, osdId)).then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    let timer: NodeJS.Timeout | undefined;
    const hedge =
      hedgeMs === undefined
        ? undefined
        : new Promise<'hedge'>((resolve) => {
            timer = setTimeout(() => resolve('hedge'), hedgeMs);
            timer.unref();
          });
    const outcome = hedge === undefined ? await settled : await Promise.race([settled, hedge]);
    if (timer !== undefined) clearTimeout(timer);
    if (outcome === 'hedge') {
      this.state.counters.hedgedReads += 1;
      return 'hedged';
    }
    if (!outcome.ok) {
      this.state.noteOsdError(osdId, outcome.error);
      return undefined;
    }
    return outcome.value;
  }

  private async readWhole(ctx: ReadContext): Promise<Buffer> {
    const { info } = ctx.manifest;
    const view = await this.state.osdStates();
    const parts = await mapWithConcurrency(info.chunks, CODEC_CHUNK_CONCURRENCY, (_, i) =>
      this.readChunk(ctx, view, i),
    );
    const data = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, info.sizeBytes);
    if (data.length !== info.sizeBytes || crc32c(data) !== info.objectCrc32c) {
      throw proxyError(
        ProxyErrorCode.Corrupt,
        `${ctx.ns.nsId}/${ctx.manifest.name}: decoded object fails its size or CRC32C`,
      );
    }
    return data;
  }

  /** One chunk: data fragments first; parity when one fails or is slow; decode. */
  private async readChunk(ctx: ReadContext, view: OsdView, chunkIndex: number): Promise<Buffer> {
    const { manifest } = ctx;
    const { k, m } = manifest.info;
    const chunk = manifest.info.chunks[chunkIndex] as ChunkInfo;
    const fragments: (Buffer | undefined)[] = new Array(k + m).fill(undefined);
    const settled: boolean[] = new Array(k + m).fill(false);
    const launched: boolean[] = new Array(k + m).fill(false);
    let signal: (() => void) | undefined;
    const wake = (): void => {
      const s = signal;
      signal = undefined;
      s?.();
    };
    const launch = (indices: number[]): void => {
      const byOsd = new Map<string, number[]>();
      for (const f of indices) {
        if (launched[f]) continue;
        launched[f] = true;
        const osdId = manifest.placement[chunkIndex]?.[f];
        if (osdId === undefined || !this.state.fragmentReadable(manifest, chunkIndex, f)) {
          settled[f] = true;
          continue;
        }
        const list = byOsd.get(osdId) ?? [];
        list.push(f);
        byOsd.set(osdId, list);
      }
      for (const [osdId, list] of byOsd) {
        // Settles exactly once, never rejects: a failure is "these fragments are unavailable".
        this.fetchWholeFragments(ctx, view, chunkIndex, osdId, list)
          .catch((err: unknown): undefined[] => {
            this.state.log(`read of ${osdId} failed: ${errorMessage(err)}`);
            return list.map(() => undefined);
          })
          .then((got) => {
            list.forEach((f, j) => {
              fragments[f] = got[j];
              settled[f] = true;
            });
            wake();
          }, wake);
      }
      wake();
    };
    const dataIndices = Array.from({ length: k }, (_, i) => i);
    const parityIndices = Array.from({ length: m }, (_, i) => k + i);
    launch(dataIndices);
    const hedgeMs =
      this.state.limits.readHedgeBaseMs +
      chunk.fragmentSizeBytes / this.state.limits.readHedgeBytesPerMs;
    const timer = setTimeout(() => launch(parityIndices), hedgeMs);
    timer.unref();
    try {
      for (;;) {
        const good = fragments.filter((f) => f !== undefined).length;
        const dataGood = dataIndices.every((f) => fragments[f] !== undefined);
        if (dataGood) break;
        const parityLaunched = parityIndices.every((f) => launched[f]);
        if (parityLaunched && good >= k) break;
        if (dataIndices.some((f) => settled[f] && fragments[f] === undefined)) {
          if (!parityLaunched) {
            launch(parityIndices);
            continue;
          }
        }
        if (settled.every(Boolean)) {
          if (!parityLaunched) {
            launch(parityIndices);
            continue;
          }
          throw proxyError(
            ProxyErrorCode.NotEnoughFragments,
            `${ctx.ns.nsId}/${manifest.name} chunk ${chunkIndex}: ${good} good fragments of ${k} needed`,
            { details: { nsId: ctx.ns.nsId, name: manifest.name } },
          );
        }
        await new Promise<void>((resolve) => {
          signal = resolve;
        });
      }
    } finally {
      clearTimeout(timer);
    }
    const usedParity = dataIndices.some((f) => fragments[f] === undefined);
    // Use exactly k fragments (data first); late answers are ignored.
    const chosen: (Buffer | undefined)[] = new Array(k + m).fill(undefined);
    let taken = 0;
    for (let f = 0; f < k + m && taken < k; f++) {
      if (fragments[f] !== undefined) {
        chosen[f] = fragments[f];
        taken += 1;
      }
    }
    const decoded = await decodeChunk(manifest.info, chunkIndex, chosen, {
      ...(this.state.keyProvider === undefined ? {} : { keyProvider: this.state.keyProvider }),
      aad: objectAad(ctx.ns.nsId, manifest.name),
    });
    // Our own CRC check ran first, so the codec finds nothing bad; assert that.
    assert(decoded.badFragments.length === 0, 'fragments were verified before decoding');
    if (usedParity) this.state.counters.parityDecodes += 1;
    return decoded.plaintext;
  }

  /**
   * Whole fragments of one chunk from one OSD (cache first), each checked against its
   * CRC32C and size. Undefined where unavailable or bad (bad ones are noted as damage).
   */
  private async fetchWholeFragments(
    ctx: ReadContext,
    view: OsdView,
    chunkIndex: number,
    osdId: string,
    indices: readonly number[],
  ): Promise<(Buffer | undefined)[]> {
    const { manifest } = ctx;
    const chunk = manifest.info.chunks[chunkIndex] as ChunkInfo;
    const out: (Buffer | undefined)[] = new Array(indices.length).fill(undefined);
    const keys = indices.map((f) => fragmentKey(ctx.ns.nsId, manifest.version, chunkIndex, f));
    const cacheKeys = keys.map((key) => `${ctx.ns.createRevision}:${key.toString('latin1')}`);
    const wanted: number[] = [];
    for (let j = 0; j < indices.length; j++) {
      const f = indices[j] as number;
      const cached = await this.state.cache?.get(cacheKeys[j] as string);
      if (cached !== undefined && isGoodFragment(cached, chunk, f)) {
        out[j] = cached;
        this.state.counters.cacheHits += 1;
        if (f >= manifest.info.k) ctx.usedParity = true;
        continue;
      }
      if (cached !== undefined) await this.state.cache?.drop(cacheKeys[j] as string);
      if (this.state.cache !== undefined) this.state.counters.cacheMisses += 1;
      wanted.push(j);
    }
    if (wanted.length === 0) return out;
    const results = await this.callWithHedge(
      osdId,
      (osd) =>
        osd.getFragments(
          wanted.map((j) => keys[j] as Buffer),
          { deadlineMs: this.state.limits.fragmentReadDeadlineMs },
        ),
      view,
      undefined,
    );
    wanted.forEach((j, w) => {
      const f = indices[j] as number;
      const read = { chunkIndex, fragmentIndex: f, offsetBytes: 0, lengthBytes: 0 };
      const result = results === 'hedged' ? undefined : results?.[w];
      if (result === undefined) {
        this.state.counters.fragmentReadFailures += 1;
        return;
      }
      if (!result.ok) {
        this.noteItemError(ctx, read, osdId, result.error);
        this.state.counters.fragmentReadFailures += 1;
        return;
      }
      if (!isGoodFragment(result.value, chunk, f)) {
        this.noteDamage(ctx, read, osdId, 'checksum');
        this.state.counters.fragmentReadFailures += 1;
        return;
      }
      this.state.counters.fragmentsRead += 1;
      out[j] = result.value;
      this.fillCache(cacheKeys[j] as string, result.value);
    });
    return out;
  }

  private noteItemError(
    ctx: ReadContext,
    read: { chunkIndex: number; fragmentIndex: number },
    osdId: string,
    error: ShaleError,
  ): void {
    if (error.code === AsdErrorCode.NotFound) {
      ctx.sawNotFound = true;
      this.noteDamage(ctx, read, osdId, 'not-found');
    } else if (error.code === AsdErrorCode.Corrupt) {
      this.noteDamage(ctx, read, osdId, 'corrupt');
    }
  }

  private noteDamage(
    ctx: ReadContext,
    read: { chunkIndex: number; fragmentIndex: number },
    osdId: string,
    reason: DamagedFragment['reason'],
  ): void {
    if (ctx.damaged.length >= 1024) return;
    ctx.damaged.push({
      nsId: ctx.ns.nsId,
      name: ctx.manifest.name,
      version: ctx.manifest.version,
      chunkIndex: read.chunkIndex,
      fragmentIndex: read.fragmentIndex,
      osdId,
      reason,
    });
  }

  private reportDamage(ctx: ReadContext): void {
    const seen = new Set<string>();
    for (const damage of ctx.damaged) {
      const id = `${damage.chunkIndex}/${damage.fragmentIndex}`;
      if (seen.has(id)) continue;
      seen.add(id);
      this.state.counters.damagedFragments += 1;
      this.state.onDamaged?.(damage);
    }
  }

  private fillCache(key: string, value: Buffer): void {
    const cache = this.state.cache;
    if (cache === undefined || this.cacheFills >= CACHE_FILL_MAX_IN_FLIGHT) return;
    this.cacheFills += 1;
    this.state.track(
      cache.put(key, value).finally(() => {
        this.cacheFills -= 1;
      }),
    );
  }
}

function newReadContext(ns: NamespaceInfo, manifest: Manifest, hedging = true): ReadContext {
  return {
    hedging,
    hedged: 0,
    ns,
    manifest,
    sawNotFound: false,
    usedParity: false,
    damaged: [],
    unavailable: new Set(),
  };
}

function isGoodFragment(value: Buffer, chunk: ChunkInfo, fragmentIndex: number): boolean {
  return (
    value.length === chunk.fragmentSizeBytes && crc32c(value) === chunk.fragmentCrcs[fragmentIndex]
  );
}
