import { assert } from '@shale/common';

/**
 * Memory that the cluster caches of all vDisks of one volumedriver draw from, in chunks:
 * a cache grows only while the budget has room and otherwise recycles its own slots.
 */
export class ClusterCacheBudget {
  private usedBytes = 0;

  constructor(readonly capacityBytes: number) {
    assert(Number.isSafeInteger(capacityBytes) && capacityBytes >= 0, 'cache budget in bytes');
  }

  get allocatedBytes(): number {
    return this.usedBytes;
  }

  /** Takes `bytes` if they fit. */
  take(bytes: number): boolean {
    if (this.usedBytes + bytes > this.capacityBytes) return false;
    this.usedBytes += bytes;
    return true;
  }

  give(bytes: number): void {
    this.usedBytes -= bytes;
    assert(this.usedBytes >= 0, 'cluster cache budget given back more than it lent');
  }
}

/** Slots per memory chunk; a chunk is allocated when the cache needs more slots. */
const CHUNK_SLOTS = 256;
/** No entry in a SCO's slot index. */
const EMPTY = -1;

/**
 * The clusters of one vDisk most recently written or read, in memory, by where they live:
 * (layer, SCO number, cluster offset). A SCO never changes once a cluster is written into it
 * and SCO numbers are never reused, so an entry never goes stale: it is only evicted
 * (CLOCK: a slot read since the hand last passed gets another round).
 *
 * No per-cluster objects: a slot's bytes live in a chunk Buffer, its key in typed arrays,
 * and each SCO has one Int32Array from cluster offset to slot. Copies in and copies out (a
 * slot is recycled while a caller may still hold its bytes otherwise). Not checksummed
 * again on a hit: the bytes were checked against their CRC32C when they came from disk or
 * were computed from the write itself.
 */
export class ClusterCache {
  private readonly chunks: Buffer[] = [];
  private slotCount = 0;
  private slotScoKey: Float64Array;
  private slotOffset: Int32Array;
  private slotReferenced: Uint8Array;
  /** Per (layer, SCO): cluster offset -> slot, and how many of its clusters are cached. */
  private readonly index = new Map<number, { slots: Int32Array; live: number }>();
  private hand = 0;
  private hits = 0;
  private misses = 0;
  private closed = false;

  constructor(
    private readonly clusterSizeBytes: number,
    private readonly clustersPerSco: number,
    private readonly budget: ClusterCacheBudget,
  ) {
    this.slotScoKey = new Float64Array(0);
    this.slotOffset = new Int32Array(0);
    this.slotReferenced = new Uint8Array(0);
  }

  /** Copies cluster (layer, sco, offset) into `target` at `targetOffset`, bytes [from, to). */
  copyOut(
    layer: number,
    sco: number,
    clusterOffset: number,
    target: Buffer,
    targetOffset: number,
    fromByte = 0,
    toByte = this.clusterSizeBytes,
  ): boolean {
    const entry = this.index.get(scoKey(layer, sco));
    const slot = entry === undefined ? EMPTY : (entry.slots[clusterOffset] ?? EMPTY);
    if (slot === EMPTY) {
      this.misses += 1;
      return false;
    }
    this.hits += 1;
    this.slotReferenced[slot] = 1;
    const [chunk, at] = this.locate(slot);
    chunk.copy(target, targetOffset, at + fromByte, at + toByte);
    return true;
  }

  /** Keeps a copy of a whole cluster. */
  put(layer: number, sco: number, clusterOffset: number, data: Buffer): void {
    if (this.closed) return;
    assert(data.length === this.clusterSizeBytes, 'a cluster cache entry is one whole cluster');
    assert(clusterOffset >= 0 && clusterOffset < this.clustersPerSco, 'cluster offset in a SCO');
    const key = scoKey(layer, sco);
    let slot = this.index.get(key)?.slots[clusterOffset] ?? EMPTY;
    if (slot === EMPTY) {
      slot = this.freeSlot();
      if (slot === EMPTY) return; // no memory at all: nothing cached
      // Looked up after freeSlot(): the eviction may have dropped this SCO's entry.
      let entry = this.index.get(key);
      if (entry === undefined) {
        entry = { slots: new Int32Array(this.clustersPerSco).fill(EMPTY), live: 0 };
        this.index.set(key, entry);
      }
      this.slotScoKey[slot] = key;
      this.slotOffset[slot] = clusterOffset;
      entry.slots[clusterOffset] = slot;
      entry.live += 1;
    }
    this.slotReferenced[slot] = 0;
    const [chunk, at] = this.locate(slot);
    data.copy(chunk, at);
  }

  stats(): { hits: number; misses: number; bytes: number } {
    return {
      hits: this.hits,
      misses: this.misses,
      bytes: this.chunks.length * CHUNK_SLOTS * this.clusterSizeBytes,
    };
  }

  /** Gives the memory back to the budget. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.budget.give(this.chunks.length * CHUNK_SLOTS * this.clusterSizeBytes);
    this.chunks.length = 0;
    this.index.clear();
    this.slotCount = 0;
  }

  private locate(slot: number): [Buffer, number] {
    const chunk = this.chunks[Math.floor(slot / CHUNK_SLOTS)] as Buffer;
    return [chunk, (slot % CHUNK_SLOTS) * this.clusterSizeBytes];
  }

  /** A new slot from a new chunk while the budget allows, else the CLOCK victim. */
  private freeSlot(): number {
    const chunkBytes = CHUNK_SLOTS * this.clusterSizeBytes;
    if (this.slotCount % CHUNK_SLOTS === 0 && this.budget.take(chunkBytes)) {
      this.chunks.push(Buffer.allocUnsafe(chunkBytes));
      if (this.slotScoKey.length < this.chunks.length * CHUNK_SLOTS) {
        this.grow(Math.max(this.chunks.length * CHUNK_SLOTS, 2 * this.slotScoKey.length));
      }
    }
    if (this.slotCount < this.chunks.length * CHUNK_SLOTS) {
      const slot = this.slotCount;
      this.slotCount += 1;
      return slot;
    }
    if (this.slotCount === 0) return EMPTY;
    for (;;) {
      const slot = this.hand;
      this.hand = (this.hand + 1) % this.slotCount;
      if (this.slotReferenced[slot] === 1) {
        this.slotReferenced[slot] = 0;
        continue;
      }
      const key = this.slotScoKey[slot] as number;
      const entry = this.index.get(key);
      assert(entry !== undefined, 'a cache slot whose SCO is not indexed');
      entry.slots[this.slotOffset[slot] as number] = EMPTY;
      entry.live -= 1;
      if (entry.live === 0) this.index.delete(key);
      return slot;
    }
  }

  private grow(slots: number): void {
    const scoKeys = new Float64Array(slots);
    scoKeys.set(this.slotScoKey);
    this.slotScoKey = scoKeys;
    const offsets = new Int32Array(slots);
    offsets.set(this.slotOffset);
    this.slotOffset = offsets;
    const referenced = new Uint8Array(slots);
    referenced.set(this.slotReferenced);
    this.slotReferenced = referenced;
  }
}

/** One number per (layer, SCO): layers are < 256 and SCO numbers < 2^32. */
function scoKey(layer: number, sco: number): number {
  return layer * 2 ** 32 + sco;
}
