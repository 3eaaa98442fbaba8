import type { ObjectRecord } from './index-record.js';

/**
 * Decoded index records of recently used keys, least recently used out first. A hit
 * spares a LevelDB lookup (a thread-pool round trip and a decode) on every read.
 *
 * Coherence: the committer updates the cache in the same tick as it learns its batch is
 * durable, and bumps `generation`; a reader fills the cache only if no commit happened
 * while it was reading LevelDB, so it can never put back a record a commit replaced.
 */
export class RecordCache {
  private readonly entries = new Map<string, ObjectRecord>();
  /** Bumped by every commit; readers compare it before and after their lookup. */
  generation = 0;

  constructor(private readonly maxEntries: number) {}

  get(id: string): ObjectRecord | undefined {
    const record = this.entries.get(id);
    if (record !== undefined) {
      this.entries.delete(id);
      this.entries.set(id, record);
    }
    return record;
  }

  /** Fill from a read that started at `generation`; ignored if a commit came in between. */
  fill(id: string, record: ObjectRecord, generationAtRead: number): void {
    if (generationAtRead !== this.generation) return;
    this.set(id, record);
  }

  /** The committer's update: the key now holds `record`, or nothing. */
  update(id: string, record: ObjectRecord | undefined): void {
    if (record === undefined) this.entries.delete(id);
    else this.set(id, record);
  }

  private set(id: string, record: ObjectRecord): void {
    this.entries.delete(id);
    this.entries.set(id, record);
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }
}
