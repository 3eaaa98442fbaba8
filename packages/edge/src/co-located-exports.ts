/**
 * Exports of an NBD server that runs inside a volumedriver's process: a request on a vDisk
 * this volumedriver has open goes straight to its VolumeIo (no process boundary, no copy,
 * no serialisation); a vDisk served elsewhere (another storage router owns it) goes through
 * the remote path, VolumedriverExports, as a stand-alone edge would send it.
 *
 * The vDisk is looked up on every request, not once per connection: when the volumedriver
 * closes and reopens a vDisk (a retried open, a restore) the connection follows the new
 * Volume, and when the vDisk leaves this process (deleted, moved) the request goes remote,
 * where the edge's relocate-and-retry logic takes over.
 */
import fs from 'node:fs';
import { formatBytes, isShaleError } from '@shale/common';
import type { VdiskInfo, VolumeIo } from '@shale/volumedriver/client';
import type { BlockExport, ExportInfo, ExportProvider, Extent } from './block-export.js';
import { EDGE_ZERO_WRITE_CHUNK_BYTES } from './constants.js';
import { EdgeErrorCode, edgeError } from './errors.js';

/** The few calls of the volumedriver's VolumeManager the co-located edge makes. */
export interface LocalVolumes {
  listVdisks(): Promise<VdiskInfo[]>;
  vdiskInfo(name: string): Promise<VdiskInfo>;
  /** The data path of a vDisk open here; throws VD_NOT_FOUND when it is not open here. */
  io(vdiskName: string): VolumeIo;
}

export interface CoLocatedExportsOptions {
  readonly local: LocalVolumes;
  /** Serves the vDisks that are not open in this process (other storage routers). */
  readonly remote: ExportProvider;
  readonly readOnly?: boolean;
}

const ZEROS = Buffer.alloc(EDGE_ZERO_WRITE_CHUNK_BYTES);

/** This boot of the host: page-cache writes outlive a process, not a reboot. */
const BOOT_ID = (() => {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined; // no epoch: clients count unflushed writes lost on a reconnect
  }
})();

/**
 * The durable epoch of a vDisk open in this process (ExportInfo.durableEpoch). A write is
 * acknowledged once it is in the SCO and TLog files of the write buffer (write(2), no
 * fsync), so it outlives the volumedriver process, and the next process replays it, but not
 * the host: the epoch names the boot, the vDisk, and the last restore that lost writes.
 */
export function durableEpoch(vdisk: VdiskInfo): string | undefined {
  if (BOOT_ID === undefined) return undefined;
  return `${BOOT_ID}.${vdisk.id}.${vdisk.dataLoss?.detectedAtMs ?? 0}`;
}

export class CoLocatedExports implements ExportProvider {
  private readonly local: LocalVolumes;
  private readonly remote: ExportProvider;
  readonly readOnly: boolean;
  private closed = false;
  /** Requests answered in this process, and those sent to another storage router. */
  readonly counts = { localRequests: 0, remoteRequests: 0 };

  constructor(options: CoLocatedExportsOptions) {
    this.local = options.local;
    this.remote = options.remote;
    this.readOnly = options.readOnly ?? false;
  }

  private exportInfo(vdisk: VdiskInfo): ExportInfo {
    // Only a vDisk open here has its write buffer in this process: one served elsewhere
    // goes remote, where no epoch is told.
    const epoch = this.localIo(vdisk.name) === undefined ? undefined : durableEpoch(vdisk);
    return {
      ...(epoch === undefined ? {} : { durableEpoch: epoch }),
      name: vdisk.name,
      sizeBytes: vdisk.sizeBytes,
      readOnly: this.readOnly,
      description: `vDisk ${vdisk.name}: ${formatBytes(vdisk.sizeBytes)}, vPool ${vdisk.vpoolName}, owner ${vdisk.ownerNodeId}${vdisk.parent === undefined ? '' : `, clone of ${vdisk.parent.vdiskName}@${vdisk.parent.snapshotName}`}`,
    };
  }

  async list(): Promise<ExportInfo[]> {
    return (await this.local.listVdisks()).map((v) => this.exportInfo(v));
  }

  async info(name: string): Promise<ExportInfo> {
    try {
      return this.exportInfo(await this.local.vdiskInfo(name));
    } catch (err) {
      if (isShaleError(err, 'VD_NOT_FOUND')) {
        throw edgeError(EdgeErrorCode.NotFound, `no vDisk named ${name}`, { cause: err });
      }
      throw err;
    }
  }

  /** The vDisk's VolumeIo when it is open in this process. */
  private localIo(name: string): VolumeIo | undefined {
    try {
      return this.local.io(name);
    } catch (err) {
      if (isShaleError(err, 'VD_NOT_FOUND')) return undefined;
      throw err;
    }
  }

  async open(name: string): Promise<BlockExport> {
    if (this.closed) throw edgeError(EdgeErrorCode.Closed, 'the NBD server is stopping');
    const first = this.localIo(name);
    if (first === undefined) {
      // Not open here (another storage router owns it, or it does not exist: the remote
      // path answers EDGE_NOT_FOUND for that).
      return this.remote.open(name);
    }
    return new CoLocatedExport(this, name, first.sizeBytes, await this.epochOf(name));
  }

  /**
   * The VolumeIo for one request, or the remote export when the vDisk left this process.
   * Not an async function: the local case costs one Map lookup and no promise.
   */
  route(name: string): VolumeIo | undefined {
    if (this.closed) throw edgeError(EdgeErrorCode.Closed, 'the NBD server is stopping');
    const io = this.localIo(name);
    if (io !== undefined) this.counts.localRequests += 1;
    else this.counts.remoteRequests += 1;
    return io;
  }

  private async epochOf(name: string): Promise<string | undefined> {
    try {
      return durableEpoch(await this.local.vdiskInfo(name));
    } catch {
      return undefined; // gone meanwhile: the first request finds out
    }
  }

  openRemote(name: string): Promise<BlockExport> {
    return this.remote.open(name);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.remote.close();
  }
}

/** One connection's view of a co-located vDisk. */
class CoLocatedExport implements BlockExport {
  readonly info: ExportInfo;
  /** Opened on the first request that finds the vDisk gone from this process. */
  private remote: Promise<BlockExport> | undefined;
  private released = false;

  constructor(
    private readonly provider: CoLocatedExports,
    private readonly name: string,
    sizeBytes: number,
    epoch: string | undefined,
  ) {
    this.info = {
      name,
      sizeBytes,
      readOnly: provider.readOnly,
      description: `vDisk ${name} (co-located)`,
      ...(epoch === undefined ? {} : { durableEpoch: epoch }),
    };
  }

  /** The local VolumeIo, or the remote export (a rejected promise when neither serves). */
  private pick(): VolumeIo | Promise<BlockExport> {
    try {
      const io = this.provider.route(this.name);
      if (io !== undefined) return io;
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.released) {
      return Promise.reject(edgeError(EdgeErrorCode.Closed, `vDisk ${this.name}: released`));
    }
    this.remote ??= this.provider.openRemote(this.name);
    return this.remote;
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const to = this.pick();
    if (to instanceof Promise) return to.then((e) => e.read(offsetBytes, lengthBytes));
    return to.read(offsetBytes, lengthBytes);
  }

  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    const to = this.pick();
    if (to instanceof Promise) return to.then((e) => e.write(offsetBytes, data, fua));
    // Durability: as VolumeIo.write (the write buffer; with fua, stable storage).
    return to.write(offsetBytes, data, { fua });
  }

  flush(): Promise<void> {
    const to = this.pick();
    if (to instanceof Promise) return to.then((e) => e.flush());
    return to.flush();
  }

  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const to = this.pick();
    if (to instanceof Promise) return to.then((e) => e.trim(offsetBytes, lengthBytes, fua));
    return to.trim(offsetBytes, lengthBytes, { fua });
  }

  writeZeroes(
    offsetBytes: number,
    lengthBytes: number,
    options: { fua: boolean; noHole: boolean },
  ): Promise<void> {
    const io = this.pick();
    if (io instanceof Promise) {
      return io.then((e) => e.writeZeroes(offsetBytes, lengthBytes, options));
    }
    if (!options.noHole) return io.writeZeroes(offsetBytes, lengthBytes, { fua: options.fua });
    // NO_HOLE: allocate, by writing real zeros in chunks (all in flight at once).
    const writes: Promise<void>[] = [];
    for (let at = offsetBytes; at < offsetBytes + lengthBytes; at += EDGE_ZERO_WRITE_CHUNK_BYTES) {
      const count = Math.min(EDGE_ZERO_WRITE_CHUNK_BYTES, offsetBytes + lengthBytes - at);
      writes.push(io.write(at, ZEROS.subarray(0, count), { fua: options.fua }));
    }
    return Promise.all(writes).then(() => undefined);
  }

  blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    const to = this.pick();
    if (to instanceof Promise) return to.then((e) => e.blockStatus(offsetBytes, lengthBytes));
    return to.blockStatus(offsetBytes, lengthBytes);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    const remote = this.remote;
    if (remote !== undefined) void remote.then((e) => e.release()).catch(() => undefined);
  }
}
