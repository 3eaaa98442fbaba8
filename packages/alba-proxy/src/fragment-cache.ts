import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { crc32c, errorMessage, systemErrorCode } from '@shale/common';

/**
 * A local cache of whole fragments, in one directory, least recently used out first,
 * under a quota in bytes. Reads that hit it skip the network and the ASD.
 *
 * Fragment keys name immutable content (every object version writes fresh fragment
 * keys), so an entry never goes stale; it can only be damaged. Each file carries a
 * CRC32C of its bytes: a damaged entry is a miss (and is removed), never a wrong byte.
 *
 *   <dir>/<2 hex>/<sha256(key) hex>    8-byte header (magic u32, crc32c u32) + fragment
 *
 * The index lives in memory; at start the directory is scanned and entries are ordered
 * by modification time, so a restart keeps the cache warm.
 */

export interface FragmentCacheOptions {
  readonly dir: string;
  readonly quotaBytes: number;
  readonly log?: (line: string) => void;
}

export interface FragmentCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly entries: number;
  readonly bytes: number;
  readonly quotaBytes: number;
  readonly evictions: number;
  readonly damaged: number;
}

const MAGIC = 0x53484643; // "SHFC"
const HEADER_BYTES = 8;
/** Fragments larger than this share of the quota are not cached: one would evict too much. */
const MAX_ENTRY_SHARE = 0.25;

interface Entry {
  readonly file: string;
  readonly sizeBytes: number;
}

export class FragmentCache {
  private readonly dir: string;
  private readonly quotaBytes: number;
  private readonly log: (line: string) => void;
  /** Map order is recency order: the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private totalBytes = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private damaged = 0;

  private constructor(options: FragmentCacheOptions) {
    this.dir = path.resolve(options.dir);
    this.quotaBytes = options.quotaBytes;
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
  }

  static async open(options: FragmentCacheOptions): Promise<FragmentCache> {
    const cache = new FragmentCache(options);
    await fs.mkdir(cache.dir, { recursive: true });
    await cache.load();
    return cache;
  }

  /** The whole fragment, or undefined on a miss (absent or damaged). */
  async get(key: string): Promise<Buffer | undefined> {
    const id = hashKey(key);
    const entry = this.entries.get(id);
    if (entry === undefined) {
      this.misses += 1;
      return undefined;
    }
    let raw: Buffer;
    try {
      raw = await fs.readFile(entry.file);
    } catch (err) {
      this.forget(id, entry);
      if (systemErrorCode(err) !== 'ENOENT')
        this.log(`fragment cache: cannot read ${entry.file}: ${errorMessage(err)}`);
      this.misses += 1;
      return undefined;
    }
    const data = raw.subarray(HEADER_BYTES);
    if (
      raw.length < HEADER_BYTES ||
      raw.readUInt32BE(0) !== MAGIC ||
      raw.readUInt32BE(4) !== crc32c(data)
    ) {
      this.damaged += 1;
      this.misses += 1;
      this.forget(id, entry);
      await unlinkQuietly(entry.file, this.log);
      return undefined;
    }
    // Touch: move to the most recently used end.
    this.entries.delete(id);
    this.entries.set(id, entry);
    this.hits += 1;
    return data;
  }

  /** Caches a whole fragment. Best effort: a full or failing cache directory is logged, not thrown. */
  async put(key: string, data: Uint8Array): Promise<void> {
    if (data.length > this.quotaBytes * MAX_ENTRY_SHARE) return;
    const id = hashKey(key);
    if (this.entries.has(id)) return;
    const file = path.join(this.dir, id.slice(0, 2), id);
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(MAGIC, 0);
    header.writeUInt32BE(crc32c(data), 4);
    const tmp = `${file}.tmp${process.pid}`;
    try {
      await fs.mkdir(path.dirname(file), { recursive: true });
      // No fsync: a cache entry lost in a crash is a miss; a torn one fails its CRC.
      await fs.writeFile(tmp, Buffer.concat([header, data]));
      await fs.rename(tmp, file);
    } catch (err) {
      this.log(`fragment cache: cannot store ${key}: ${errorMessage(err)}`);
      await unlinkQuietly(tmp, this.log);
      return;
    }
    this.entries.set(id, { file, sizeBytes: data.length });
    this.totalBytes += data.length;
    await this.evictOverQuota();
  }

  /** Drops an entry (its fragment was deleted or repaired elsewhere). */
  async drop(key: string): Promise<void> {
    const id = hashKey(key);
    const entry = this.entries.get(id);
    if (entry === undefined) return;
    this.forget(id, entry);
    await unlinkQuietly(entry.file, this.log);
  }

  stats(): FragmentCacheStats {
    return {
      hits: this.hits,
      misses: this.misses,
      entries: this.entries.size,
      bytes: this.totalBytes,
      quotaBytes: this.quotaBytes,
      evictions: this.evictions,
      damaged: this.damaged,
    };
  }

  private async evictOverQuota(): Promise<void> {
    while (this.totalBytes > this.quotaBytes) {
      const oldest = this.entries.entries().next();
      if (oldest.done === true) return;
      const [id, entry] = oldest.value;
      this.forget(id, entry);
      this.evictions += 1;
      await unlinkQuietly(entry.file, this.log);
    }
  }

  private forget(id: string, entry: Entry): void {
    if (this.entries.delete(id)) this.totalBytes -= entry.sizeBytes;
  }

  private async load(): Promise<void> {
    const found: { id: string; file: string; sizeBytes: number; mtimeMs: number }[] = [];
    for (const fan of await fs.readdir(this.dir)) {
      if (!/^[0-9a-f]{2}$/.test(fan)) continue;
      for (const name of await fs.readdir(path.join(this.dir, fan))) {
        const file = path.join(this.dir, fan, name);
        if (!/^[0-9a-f]{64}$/.test(name)) {
          await unlinkQuietly(file, this.log); // a temporary file of an interrupted put
          continue;
        }
        const stat = await fs.stat(file);
        found.push({
          id: name,
          file,
          sizeBytes: Math.max(0, stat.size - HEADER_BYTES),
          mtimeMs: stat.mtimeMs,
        });
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const item of found) {
      this.entries.set(item.id, { file: item.file, sizeBytes: item.sizeBytes });
      this.totalBytes += item.sizeBytes;
    }
    await this.evictOverQuota();
  }
}

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

async function unlinkQuietly(file: string, log: (line: string) => void): Promise<void> {
  try {
    await fs.unlink(file);
  } catch (err) {
    if (systemErrorCode(err) !== 'ENOENT')
      log(`fragment cache: cannot remove ${file}: ${errorMessage(err)}`);
  }
}
