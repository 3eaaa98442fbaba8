import { crc32c, errorMessage, type ShaleError, systemErrorCode } from '@shale/common';
import { BLOCK_SIZE_BYTES, MAX_CALL_BYTES, SCRATCH_BUFFERS_MAX } from './constants.js';
import { readExactly } from './disk.js';
import { AsdErrorCode, asdError, describeKey } from './errors.js';
import { clientKeyOf, objectKey, objectRange } from './index-keys.js';
import { decodeRecord, type ObjectRecord } from './index-record.js';
import type { StoreState } from './object-store-state.js';
import {
  checkKeys,
  checkListBound,
  checkListLimit,
  checkSlices,
  type Slice,
} from './request-validation.js';

/**
 * The ASD's read path: get (whole values), getRanges (slices) and list. A read looks its
 * records up (record cache, else LevelDB), then reads and verifies only the 64 KiB
 * checksum blocks that cover what was asked; bytes whose block fails its CRC32C are never
 * returned (ASD_CORRUPT). A value file that vanished under a read (an overwrite committed
 * meanwhile) sends the read back to the index for the new record.
 */

export type ItemResult<T> = { ok: true; value: T } | { ok: false; error: ShaleError };

export interface GetValue {
  readonly value: Buffer;
  readonly crc32c: number;
}

export interface ListEntry {
  readonly key: Buffer;
  readonly sizeBytes: number;
  readonly crc32c: number;
}

/** What a record lookup finds: the record, nothing, or a record failing its own checksum. */
const ABSENT = 'absent';
const DAMAGED = 'damaged';
type RecordLookup = ObjectRecord | typeof ABSENT | typeof DAMAGED;

/** A stack that drops what is pushed past its bound. */
class BoundedStack<T> {
  private readonly items: T[] = [];
  constructor(private readonly max: number) {}
  push(item: T): void {
    if (this.items.length < this.max) this.items.push(item);
  }
  pop(): T | undefined {
    return this.items.pop();
  }
}

export class StoreReader {
  /** Reused read buffers for small slices; at most SCRATCH_BUFFERS_MAX are kept. */
  private readonly scratch = new BoundedStack<Buffer>(SCRATCH_BUFFERS_MAX);

  constructor(private readonly state: StoreState) {}

  async get(keys: readonly Uint8Array[]): Promise<ItemResult<GetValue>[]> {
    checkKeys(keys, 'get');
    const records = await this.lookupRecords(keys, true);
    let budgetBytes = MAX_CALL_BYTES;
    return Promise.all(
      keys.map(async (key, index): Promise<ItemResult<GetValue>> => {
        const record = records[index];
        if (record === ABSENT || record === undefined) return notFound(key);
        if (record === DAMAGED) return corruptIndex(key);
        if (record.sizeBytes > budgetBytes) {
          return {
            ok: false,
            error: asdError(
              AsdErrorCode.ResponseTooLarge,
              `get: ${describeKey(key)} does not fit in this response (${MAX_CALL_BYTES} bytes at most); ask for it in another call`,
            ),
          };
        }
        budgetBytes -= record.sizeBytes;
        return this.readVerified(key, record, 0, record.sizeBytes);
      }),
    );
  }

  async getRanges(slices: readonly Slice[]): Promise<ItemResult<Buffer>[]> {
    checkSlices(slices);
    const records = await this.lookupRecords(
      slices.map((slice) => slice.key),
      true,
    );
    return Promise.all(
      slices.map(async (slice, index): Promise<ItemResult<Buffer>> => {
        const record = records[index];
        if (record === ABSENT || record === undefined) return notFound(slice.key);
        if (record === DAMAGED) return corruptIndex(slice.key);
        if (slice.offset + slice.length > record.sizeBytes) {
          return {
            ok: false,
            error: asdError(
              AsdErrorCode.BadRange,
              `slice [${slice.offset}, ${slice.offset + slice.length}) of ${describeKey(slice.key)} ends past its size ${record.sizeBytes}`,
            ),
          };
        }
        const result = await this.readVerified(slice.key, record, slice.offset, slice.length);
        return result.ok ? { ok: true, value: result.value.value } : result;
      }),
    );
  }

  /** Each key's record: from the record cache when allowed and present, else from LevelDB. */
  private async lookupRecords(
    keys: readonly Uint8Array[],
    useCache: boolean,
  ): Promise<RecordLookup[]> {
    const out: RecordLookup[] = new Array(keys.length);
    const missIndexes: number[] = [];
    const ids = keys.map((key) =>
      Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1'),
    );
    ids.forEach((id, index) => {
      const cached = useCache ? this.state.records.get(id) : undefined;
      if (cached !== undefined) out[index] = cached;
      else missIndexes.push(index);
    });
    if (missIndexes.length === 0) return out;
    const generation = this.state.records.generation;
    let raws: (Buffer | undefined)[];
    try {
      raws = await this.state.db.getMany(
        missIndexes.map((index) => objectKey(keys[index] as Uint8Array)),
      );
    } catch (err) {
      throw asdError(AsdErrorCode.IoError, `reading the index failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    missIndexes.forEach((index, i) => {
      const raw = raws[i];
      if (raw === undefined) {
        out[index] = ABSENT;
        return;
      }
      const record = decodeRecord(raw);
      if (record === undefined) {
        out[index] = DAMAGED;
        return;
      }
      out[index] = record;
      this.state.records.fill(ids[index] as string, record, generation);
    });
    return out;
  }

  /**
   * Reads [offset, offset + length) of a value, reading and verifying only the checksum
   * blocks that cover it. Never returns bytes whose block failed its CRC32C.
   */
  private async readVerified(
    key: Uint8Array,
    record: ObjectRecord,
    offset: number,
    length: number,
    attempt = 0,
  ): Promise<ItemResult<GetValue>> {
    if (length === 0) return { ok: true, value: { value: Buffer.alloc(0), crc32c: record.crc32c } };
    const blockSize = record.blockSizeBytes;
    const firstBlock = Math.floor(offset / blockSize);
    const lastBlock = Math.floor((offset + length - 1) / blockSize);
    const start = firstBlock * blockSize;
    const end = Math.min((lastBlock + 1) * blockSize, record.sizeBytes);
    const coveredBytes = end - start;
    // A small slice of a larger covered range is read into a reused scratch buffer and
    // copied out: the 64 KiB blocks around a 4 KiB read then cost no allocation.
    const scratch =
      record.inline === undefined && length < coveredBytes && coveredBytes <= 2 * blockSize
        ? this.takeScratch(coveredBytes)
        : undefined;
    try {
      let covered: Buffer;
      if (record.inline !== undefined) {
        covered = record.inline.subarray(start, end);
      } else {
        const path = this.state.filePath(record.fileId);
        const into = scratch ?? Buffer.allocUnsafe(coveredBytes);
        try {
          await this.state.fileHandles.with(record.fileId, path, (handle) =>
            readExactly(handle, into, coveredBytes, start, path),
          );
        } catch (err) {
          return this.readFailed(key, record, offset, length, attempt, err);
        }
        covered = into.subarray(0, coveredBytes);
      }
      for (let block = firstBlock; block <= lastBlock; block += 1) {
        const from = (block - firstBlock) * blockSize;
        const bytes = covered.subarray(from, Math.min(from + blockSize, covered.length));
        if (crc32c(bytes) !== record.blockCrcs[block]) {
          return corrupt(
            key,
            `checksum block ${block} (bytes ${block * blockSize}..${block * blockSize + bytes.length}) fails its CRC32C`,
          );
        }
      }
      const view = covered.subarray(offset - start, offset - start + length);
      const value = scratch === undefined ? view : Buffer.from(view);
      return { ok: true, value: { value, crc32c: record.crc32c } };
    } finally {
      if (scratch !== undefined) this.scratch.push(scratch);
    }
  }

  private readFailed(
    key: Uint8Array,
    record: ObjectRecord,
    offset: number,
    length: number,
    attempt: number,
    err: unknown,
  ): Promise<ItemResult<GetValue>> | ItemResult<GetValue> {
    const code = systemErrorCode(err);
    if (code === 'ENOENT' && attempt < 2) {
      // An overwrite or delete may have committed and removed the file since we read the
      // record: look again, past the cache.
      return this.lookupRecords([key], false).then(([fresh]) => {
        if (fresh === ABSENT || fresh === undefined) return notFound(key);
        if (fresh === DAMAGED) return corruptIndex(key);
        if (fresh.fileId === record.fileId) {
          return corrupt(key, `its value file ${this.state.filePath(record.fileId)} is missing`);
        }
        if (offset + length > fresh.sizeBytes) {
          return {
            ok: false,
            error: asdError(
              AsdErrorCode.BadRange,
              `${describeKey(key)} was overwritten by a shorter value during the read`,
            ),
          };
        }
        return this.readVerified(key, fresh, offset, length, attempt + 1);
      });
    }
    if (code === 'ENOENT' || code === 'ESHORTREAD') {
      return corrupt(
        key,
        `its value file ${this.state.filePath(record.fileId)} is missing or short`,
      );
    }
    return {
      ok: false,
      error: asdError(
        AsdErrorCode.IoError,
        `reading ${describeKey(key)} failed: ${errorMessage(err)}`,
        {
          cause: err,
        },
      ),
    };
  }

  private takeScratch(bytes: number): Buffer {
    const buffer = this.scratch.pop();
    if (buffer !== undefined && buffer.length >= bytes) return buffer;
    return Buffer.allocUnsafe(Math.max(bytes, 2 * BLOCK_SIZE_BYTES));
  }

  async list(options: {
    prefix?: Uint8Array | undefined;
    startAfter?: Uint8Array | undefined;
    limit?: number | undefined;
  }): Promise<{ entries: ListEntry[]; more: boolean }> {
    const prefix = options.prefix ?? Buffer.alloc(0);
    checkListBound(prefix, 'prefix');
    if (options.startAfter !== undefined) checkListBound(options.startAfter, 'start key');
    const limit = checkListLimit(options.limit);
    const entries: ListEntry[] = [];
    let more = false;
    for await (const [indexKey, raw] of this.state.db.iterator({
      ...objectRange(prefix, options.startAfter),
      limit: limit + 1,
    })) {
      if (entries.length === limit) {
        more = true;
        break;
      }
      const record = decodeRecord(raw);
      entries.push({
        key: Buffer.from(clientKeyOf(indexKey)),
        sizeBytes: record?.sizeBytes ?? 0,
        crc32c: record?.crc32c ?? 0,
      });
    }
    return { entries, more };
  }

  /** The file holding a key's value, or undefined when the value is inline or absent. */
  async valueFileOf(key: Uint8Array): Promise<string | undefined> {
    const [record] = await this.lookupRecords([key], false);
    if (
      record === undefined ||
      record === ABSENT ||
      record === DAMAGED ||
      record.inline !== undefined
    ) {
      return undefined;
    }
    return this.state.filePath(record.fileId);
  }
}

function notFound(key: Uint8Array): { ok: false; error: ShaleError } {
  return { ok: false, error: asdError(AsdErrorCode.NotFound, `no object ${describeKey(key)}`) };
}

function corrupt(key: Uint8Array, why: string): { ok: false; error: ShaleError } {
  return {
    ok: false,
    error: asdError(AsdErrorCode.Corrupt, `object ${describeKey(key)} is corrupt: ${why}`, {
      details: { key: Buffer.from(key).toString('hex') },
    }),
  };
}

function corruptIndex(key: Uint8Array): { ok: false; error: ShaleError } {
  return corrupt(key, 'its index record fails its checksum');
}
