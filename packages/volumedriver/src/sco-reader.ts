import { assert, crc32c } from '@shale/common';
import { CLUSTER_SIZE_BYTES, SCO_READ_MAX_CLUSTERS } from './constants.js';
import { VdErrorCode, vdError } from './errors.js';
import { nodeScoDisk, type ScoDisk, type ScoReadHandle } from './sco-disk.js';
import { checkClusterSize, scoFilePath, scoIoError } from './sco-file.js';
import type { ScoNumber } from './types.js';

export interface ScoReaderOptions {
  readonly dir: string;
  readonly scoNumber: ScoNumber;
  readonly clusterSizeBytes?: number;
  readonly disk?: ScoDisk;
}

/**
 * Reads clusters of one SCO file in the write buffer (open or sealed) by cluster offset,
 * and verifies each against the CRC32C the caller took from the TLog / LBA map. A
 * mismatch, or a file shorter than the TLog says, is VD_CORRUPT: the bytes are never
 * returned.
 */
export class ScoReader {
  readonly scoNumber: ScoNumber;
  readonly clusterSizeBytes: number;
  private readonly path: string;
  private readonly handle: ScoReadHandle;
  private closed = false;

  private constructor(
    scoNumber: ScoNumber,
    clusterSizeBytes: number,
    filePath: string,
    handle: ScoReadHandle,
  ) {
    this.scoNumber = scoNumber;
    this.clusterSizeBytes = clusterSizeBytes;
    this.path = filePath;
    this.handle = handle;
  }

  /** Opens SCO `scoNumber` in `dir`; VD_SCO_NOT_FOUND when it is not there. */
  static async open(options: ScoReaderOptions): Promise<ScoReader> {
    const clusterSizeBytes = options.clusterSizeBytes ?? CLUSTER_SIZE_BYTES;
    checkClusterSize(clusterSizeBytes);
    const filePath = scoFilePath(options.dir, options.scoNumber);
    let handle: ScoReadHandle;
    try {
      handle = await (options.disk ?? nodeScoDisk).openForRead(filePath);
    } catch (err) {
      throw scoIoError(err, 'cannot open SCO', filePath);
    }
    return new ScoReader(options.scoNumber, clusterSizeBytes, filePath, handle);
  }

  /** One cluster at `clusterOffset`, verified against `expectedCrc32c`. */
  readCluster(clusterOffset: number, expectedCrc32c: number, into?: Buffer): Promise<Buffer> {
    return this.readClusters(clusterOffset, [expectedCrc32c], into);
  }

  /**
   * `expectedCrc32cs.length` consecutive clusters from `firstClusterOffset`, with one
   * positioned read, each verified against its CRC32C. Fills `into` (a view the caller
   * owns, e.g. its response buffer) when given, else a new buffer; returns the filled view.
   */
  async readClusters(
    firstClusterOffset: number,
    expectedCrc32cs: ArrayLike<number>,
    into?: Buffer,
  ): Promise<Buffer> {
    if (this.closed) throw vdError(VdErrorCode.Closed, `SCO ${this.scoNumber} reader is closed`);
    const count = expectedCrc32cs.length;
    assert(count > 0 && count <= SCO_READ_MAX_CLUSTERS, `read of ${count} clusters`);
    assert(
      Number.isInteger(firstClusterOffset) && firstClusterOffset >= 0,
      `cluster offset ${firstClusterOffset}`,
    );
    const lengthBytes = count * this.clusterSizeBytes;
    assert(into === undefined || into.length >= lengthBytes, 'read target is too small');
    const out = (into ?? Buffer.allocUnsafe(lengthBytes)).subarray(0, lengthBytes);
    const position = firstClusterOffset * this.clusterSizeBytes;
    let got = 0;
    while (got < lengthBytes) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.handle.read(out, got, lengthBytes - got, position + got));
      } catch (err) {
        throw scoIoError(err, 'cannot read SCO', this.path);
      }
      if (bytesRead === 0) {
        out.fill(0);
        throw this.corrupt(
          `SCO ${this.scoNumber} ends at byte ${position + got}, before cluster ${firstClusterOffset + Math.floor(got / this.clusterSizeBytes)} that the TLog names`,
          firstClusterOffset + Math.floor(got / this.clusterSizeBytes),
        );
      }
      got += bytesRead;
    }
    for (let i = 0; i < count; i += 1) {
      const start = i * this.clusterSizeBytes;
      const actual = crc32c(out.subarray(start, start + this.clusterSizeBytes));
      const expected = (expectedCrc32cs[i] as number) >>> 0;
      if (actual !== expected) {
        // Never hand out the bytes: wipe what we read into the caller's buffer.
        out.fill(0);
        throw this.corrupt(
          `cluster ${firstClusterOffset + i} of SCO ${this.scoNumber} fails its CRC32C (expected ${hex(expected)}, got ${hex(actual)})`,
          firstClusterOffset + i,
        );
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.handle.close();
    } catch (err) {
      throw scoIoError(err, 'cannot close SCO', this.path);
    }
  }

  private corrupt(message: string, clusterOffset: number): Error {
    return vdError(VdErrorCode.Corrupt, message, {
      details: {
        path: this.path,
        scoNumber: String(this.scoNumber),
        clusterOffset: String(clusterOffset),
      },
    });
  }
}

function hex(crc: number): string {
  return `0x${crc.toString(16).padStart(8, '0')}`;
}
