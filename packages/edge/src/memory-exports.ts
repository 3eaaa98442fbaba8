import type { BlockExport, ExportInfo, ExportProvider, Extent } from './block-export.js';
import { EdgeErrorCode, edgeError } from './errors.js';

/** Granularity of the memory export's allocation map (block status). */
const PAGE_BYTES = 4096;

/**
 * Exports held in memory: for the protocol tests, the fuzzer and the protocol benchmark
 * (the edge with no volumedriver behind it). Sparse by 4 KiB pages: a page never written,
 * or trimmed whole, is a hole.
 */
export class MemoryExports implements ExportProvider {
  private readonly disks = new Map<string, MemoryDisk>();
  private closed = false;

  /** Adds an export (sizes need not be page multiples). */
  add(name: string, sizeBytes: number, options: { readOnly?: boolean } = {}): void {
    this.disks.set(name, new MemoryDisk(name, sizeBytes, options.readOnly ?? false));
  }

  /** The bytes of an export, for tests to compare with. */
  bytes(name: string): Buffer {
    return this.disk(name).read(0, this.disk(name).info.sizeBytes);
  }

  async list(): Promise<ExportInfo[]> {
    return [...this.disks.values()].map((d) => d.info);
  }

  async info(name: string): Promise<ExportInfo> {
    return this.disk(name).info;
  }

  async open(name: string): Promise<BlockExport> {
    if (this.closed) throw edgeError(EdgeErrorCode.Closed, 'the memory exports are closed');
    const disk = this.disk(name);
    return {
      info: disk.info,
      read: async (offsetBytes, lengthBytes) => disk.read(offsetBytes, lengthBytes),
      write: async (offsetBytes, data) => disk.write(offsetBytes, data),
      flush: async () => {
        // Durability: memory is all there is; a flush has nothing to do.
      },
      trim: async (offsetBytes, lengthBytes) => disk.unmap(offsetBytes, lengthBytes),
      writeZeroes: async (offsetBytes, lengthBytes, options) => {
        if (options.noHole) disk.write(offsetBytes, Buffer.alloc(lengthBytes));
        else disk.unmap(offsetBytes, lengthBytes, true);
      },
      blockStatus: async (offsetBytes, lengthBytes) => disk.status(offsetBytes, lengthBytes),
      release: () => undefined,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private disk(name: string): MemoryDisk {
    const disk = this.disks.get(name);
    if (disk === undefined) throw edgeError(EdgeErrorCode.NotFound, `no export named ${name}`);
    return disk;
  }
}

class MemoryDisk {
  readonly info: ExportInfo;
  private readonly pages = new Map<number, Buffer>();

  constructor(name: string, sizeBytes: number, readOnly: boolean) {
    this.info = { name, sizeBytes, readOnly, description: `memory export of ${sizeBytes} B` };
  }

  read(offsetBytes: number, lengthBytes: number): Buffer {
    const out = Buffer.alloc(lengthBytes);
    this.eachPage(offsetBytes, lengthBytes, (page, from, to, at) => {
      this.pages.get(page)?.copy(out, at, from, to);
    });
    return out;
  }

  write(offsetBytes: number, data: Buffer): void {
    this.eachPage(offsetBytes, data.length, (page, from, to, at) => {
      let bytes = this.pages.get(page);
      if (bytes === undefined) {
        bytes = Buffer.alloc(PAGE_BYTES);
        this.pages.set(page, bytes);
      }
      data.copy(bytes, from, at, at + (to - from));
    });
  }

  /** Whole pages become holes; partial edges are zeroed when `zeroEdges`, else kept. */
  unmap(offsetBytes: number, lengthBytes: number, zeroEdges = false): void {
    this.eachPage(offsetBytes, lengthBytes, (page, from, to) => {
      if (from === 0 && to === PAGE_BYTES) this.pages.delete(page);
      else if (zeroEdges) this.pages.get(page)?.fill(0, from, to);
    });
  }

  status(offsetBytes: number, lengthBytes: number): Extent[] {
    const extents: { lengthBytes: number; hole: boolean }[] = [];
    this.eachPage(offsetBytes, lengthBytes, (page, from, to) => {
      const hole = !this.pages.has(page);
      const last = extents[extents.length - 1];
      if (last !== undefined && last.hole === hole) last.lengthBytes += to - from;
      else extents.push({ lengthBytes: to - from, hole });
    });
    return extents;
  }

  /** Calls fn(page, fromInPage, toInPage, offsetInRange) for each page the range touches. */
  private eachPage(
    offsetBytes: number,
    lengthBytes: number,
    fn: (page: number, from: number, to: number, at: number) => void,
  ): void {
    const end = offsetBytes + lengthBytes;
    for (let at = offsetBytes; at < end; ) {
      const page = Math.floor(at / PAGE_BYTES);
      const from = at - page * PAGE_BYTES;
      const to = Math.min(PAGE_BYTES, end - page * PAGE_BYTES);
      fn(page, from, to, at - offsetBytes);
      at += to - from;
    }
  }
}
