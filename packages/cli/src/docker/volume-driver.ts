/**
 * The Docker volume driver: each volume is a vDisk of the same name with a file system on
 * it, mapped and mounted on the host that runs a container using it. A volume's life:
 *
 *   Create --> ready --Mount(id1)--> mounted {id1} --Mount(id2)--> mounted {id1,id2}
 *                ^                          |                            |
 *                +------Unmount(last id)----+<--------Unmount(id2)-------+
 *   ready --Remove--> (vDisk deleted, unless keep=true)    mounted --Remove--> refused
 *
 * Everything it needs to answer after a restart is in the metadata store (volume-records.ts)
 * and in the host's own state (mountinfo, the map records), never only in memory: a plugin
 * killed while containers run answers Path and Unmount correctly when it is back.
 */

import path from 'node:path';
import { errorMessage, ShaleError } from '@shale/common';
import type { ApiClient, Vdisk } from '@shale/framework-api';
import { findMapping, inspect, mapVdisk, unmapVdisk } from '../map/mapper.js';
import {
  fileSystemOf,
  isMountpoint,
  makeFileSystem,
  mountFileSystem,
  unmountFileSystem,
} from './host-mount.js';
import { checkVolumeName, parseVolumeOptions, type VolumeSpec } from './volume-options.js';
import type { MountRecord, VolumeRecord, VolumeRecords } from './volume-records.js';

export interface VolumeDriverOptions {
  readonly api: ApiClient;
  readonly records: VolumeRecords;
  /** HOST:PORT of the NBD server that exports vDisks under their names. */
  readonly nbd: string;
  /** Where the plugin's mappings are recorded (as `shale vdisk map --map-dir`). */
  readonly mapRoot: string;
  /** Volumes are mounted at MOUNT_ROOT/NAME. */
  readonly mountRoot: string;
  /** This host, in mount records. */
  readonly node: string;
  /** Long operations (a clone, a vDisk delete) wait at most this long. */
  readonly operationWaitMs: number;
  readonly log: (line: string) => void;
}

/** One volume as Get and List describe it. */
export interface VolumeView {
  readonly Name: string;
  readonly Mountpoint: string;
  readonly CreatedAt?: string;
  readonly Status?: Record<string, unknown>;
}

const hasCode = (err: unknown, ...codes: string[]) =>
  err instanceof ShaleError && codes.includes(err.code);

export class VolumeDriver {
  /** Calls on one volume run one at a time (dockerd sends them concurrently). */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly options: VolumeDriverOptions) {}

  private serial<T>(name: string, work: () => Promise<T>): Promise<T> {
    const before = this.locks.get(name) ?? Promise.resolve();
    const run = before.then(work, work);
    const settled = run.catch(() => undefined);
    this.locks.set(name, settled);
    void settled.then(() => {
      if (this.locks.get(name) === settled) this.locks.delete(name);
    });
    return run;
  }

  private mountpointOf(name: string): string {
    return path.join(this.options.mountRoot, name);
  }

  private async readyVolume(name: string): Promise<VolumeRecord> {
    const record = await this.options.records.volume(checkVolumeName(name));
    if (record === undefined || record.state !== 'ready') {
      throw new ShaleError('DOCKER_NO_SUCH_VOLUME', `no shale volume named ${name}`);
    }
    return record;
  }

  create(name: unknown, opts: unknown): Promise<void> {
    const checked = checkVolumeName(name);
    const spec = parseVolumeOptions(opts);
    return this.serial(checked, () => this.createLocked(checked, spec));
  }

  private async createLocked(name: string, spec: VolumeSpec): Promise<void> {
    const { api, records } = this.options;
    const existing = await records.volume(name);
    if (existing?.state === 'ready') return; // dockerd may ask twice: the volume is there.
    const vdisk = await this.findVdisk(name);
    if (vdisk !== undefined && existing === undefined) {
      throw new ShaleError(
        'DOCKER_NAME_TAKEN',
        `a vDisk named ${name} exists and is not a Docker volume; choose another volume name`,
      );
    }
    const base = { name, keepVdisk: spec.keepVdisk, createdAtMs: Date.now() };
    let record: Omit<VolumeRecord, 'version'>;
    if (spec.kind === 'new') {
      const vpool = await api.getVpool(spec.vpool).catch((err: unknown) => {
        if (hasCode(err, 'VD_NOT_FOUND', 'VPOOL_NOT_FOUND')) {
          throw new ShaleError(
            'DOCKER_UNKNOWN_VPOOL',
            `no vPool named ${spec.vpool} (see shale status, or the API's /api/v1/vpools)`,
          );
        }
        throw err;
      });
      const cluster = vpool.clusterSizeBytes;
      const sizeBytes = Math.ceil(spec.sizeBytes / cluster) * cluster;
      record = { ...base, state: 'creating', vpool: vpool.name, sizeBytes, fs: spec.fs };
    } else {
      const source = await records.volume(spec.fromVolume);
      if (source === undefined || source.state !== 'ready') {
        throw new ShaleError(
          'DOCKER_NO_SUCH_VOLUME',
          `from=${spec.fromVolume}: no shale volume of that name to clone`,
        );
      }
      const snapshots = (await api.getVdisk(spec.fromVolume)).snapshots.map((s) => s.name);
      if (!snapshots.includes(spec.snapshot)) {
        throw new ShaleError(
          'DOCKER_NO_SUCH_SNAPSHOT',
          `volume ${spec.fromVolume} has no snapshot ${spec.snapshot} (${snapshots.length === 0 ? 'it has none; make one with shale snapshot create' : `it has ${snapshots.join(', ')}`})`,
        );
      }
      record = {
        ...base,
        state: 'creating',
        vpool: source.vpool,
        sizeBytes: source.sizeBytes,
        fs: source.fs,
        from: { volume: spec.fromVolume, snapshot: spec.snapshot },
      };
    }
    // The record first: a Create cut short (a crash) leaves a record that the next Create
    // finishes, never a vDisk nobody knows is a volume.
    await records.putVolume(record);
    try {
      if (vdisk === undefined) await this.makeVdisk(record);
    } catch (err) {
      if (!hasCode(err, 'API_CLIENT_TIMEOUT')) await records.deleteVolume(name);
      throw err;
    }
    await records.putVolume({ ...record, state: 'ready' });
    this.options.log(
      `created volume ${name}: vDisk ${name}, ${record.sizeBytes} bytes, ${record.fs}${record.from === undefined ? '' : `, from ${record.from.volume}@${record.from.snapshot}`}`,
    );
  }

  private async makeVdisk(record: Omit<VolumeRecord, 'version'>): Promise<void> {
    const { api } = this.options;
    if (record.from === undefined) {
      const change = await api.createVdisk({
        name: record.name,
        sizeBytes: record.sizeBytes,
        vpool: record.vpool,
      });
      for (const warning of (change as { warnings?: { message: string }[] }).warnings ?? []) {
        this.options.log(`warning: ${warning.message}`);
      }
      return;
    }
    const operation = await api.cloneVdisk(record.from.volume, {
      name: record.name,
      snapshot: record.from.snapshot,
    });
    await api.waitForOperation(operation.id, { timeoutMs: this.options.operationWaitMs });
  }

  private async findVdisk(name: string): Promise<Vdisk | undefined> {
    try {
      return await this.options.api.getVdisk(name);
    } catch (err) {
      if (hasCode(err, 'VD_NOT_FOUND')) return undefined;
      throw err;
    }
  }

  remove(name: unknown): Promise<void> {
    const checked = checkVolumeName(name);
    return this.serial(checked, async () => {
      const { api, records } = this.options;
      const record = await records.volume(checked);
      if (record === undefined) {
        throw new ShaleError('DOCKER_NO_SUCH_VOLUME', `no shale volume named ${checked}`);
      }
      const mount = await records.mount(checked);
      if (mount !== undefined && mount.ids.length > 0) {
        throw new ShaleError(
          'DOCKER_VOLUME_IN_USE',
          `volume ${checked} is in use: mounted on ${mount.node} at ${mount.mountpoint} for ${mount.ids.length} container(s); stop them first`,
        );
      }
      if (mount !== undefined) await this.release(checked, mount);
      if (!record.keepVdisk && (await this.findVdisk(checked)) !== undefined) {
        try {
          const operation = await api.deleteVdisk(checked);
          await api.waitForOperation(operation.id, { timeoutMs: this.options.operationWaitMs });
        } catch (err) {
          if (!hasCode(err, 'VD_NOT_FOUND')) {
            throw new ShaleError(
              'DOCKER_REMOVE_FAILED',
              `cannot delete vDisk ${checked}: ${errorMessage(err)}; the volume stays`,
              { cause: err },
            );
          }
        }
      }
      await records.deleteVolume(checked);
      this.options.log(
        `removed volume ${checked}${record.keepVdisk ? ` (vDisk ${checked} kept)` : ' and its vDisk'}`,
      );
    });
  }

  mount(name: unknown, id: unknown): Promise<string> {
    const checked = checkVolumeName(name);
    const mountId = typeof id === 'string' && id.length > 0 ? id : 'unnamed';
    return this.serial(checked, async () => {
      const { records, node } = this.options;
      const record = await this.readyVolume(checked);
      const mount = await records.mount(checked);
      if (mount !== undefined && mount.node !== node) {
        throw new ShaleError(
          'DOCKER_MOUNTED_ELSEWHERE',
          `volume ${checked} is mounted on host ${mount.node} (${mount.ids.length} container(s)); a file system is never mounted on two hosts at once`,
        );
      }
      if (mount !== undefined && isMountpoint(mount.mountpoint)) {
        const problems = await this.mappingProblems(checked);
        if (problems.length > 0) {
          throw new ShaleError(
            'DOCKER_VOLUME_BROKEN',
            `volume ${checked} is mounted at ${mount.mountpoint} on a device that fails (${problems.join('; ')}): stop the containers using it; the next Mount repairs it`,
          );
        }
        const ids = mount.ids.includes(mountId) ? mount.ids : [...mount.ids, mountId];
        await records.putMount({ ...mount, ids });
        return mount.mountpoint;
      }
      // Not mounted here (first use, or the host rebooted): the IDs recorded before belong to
      // containers that no longer hold it, so only this one counts from now on.
      const mountpoint = this.mountpointOf(checked);
      const device = await this.attach(record, mountpoint);
      await records.putMount({
        name: checked,
        node,
        mountpoint,
        device,
        ids: [mountId],
        mountedAtMs: Date.now(),
      });
      this.options.log(`mounted volume ${checked} (${device}) at ${mountpoint}`);
      return mountpoint;
    });
  }

  /** The problems of the volume's mapping on this host (empty: healthy). */
  private async mappingProblems(name: string): Promise<readonly string[]> {
    try {
      const record = await findMapping(this.options.mapRoot, name);
      return inspect(this.options.mapRoot, record).problems;
    } catch (err) {
      if (hasCode(err, 'MAP_NOT_MAPPED')) return ['it is not mapped'];
      throw err;
    }
  }

  /** Maps the vDisk (repairing a broken mapping), makes its file system once, mounts it. */
  private async attach(record: VolumeRecord, mountpoint: string): Promise<string> {
    const { mapRoot, nbd } = this.options;
    let device: string;
    try {
      device = (
        await mapVdisk({
          root: mapRoot,
          vdisk: record.name,
          nbd,
          readOnly: false,
          sizeBytes: record.sizeBytes,
        })
      ).device;
    } catch (err) {
      if (!hasCode(err, 'MAP_ALREADY_MAPPED')) throw err;
      device = (await findMapping(mapRoot, record.name)).device;
    }
    const type = await fileSystemOf(device);
    if (type === undefined) {
      this.options.log(`making ${record.fs} on volume ${record.name} (${device})`);
      await makeFileSystem(device, record.fs, record.name);
    }
    await mountFileSystem(device, mountpoint);
    return device;
  }

  unmount(name: unknown, id: unknown): Promise<void> {
    const checked = checkVolumeName(name);
    return this.serial(checked, async () => {
      const { records, node } = this.options;
      const mount = await records.mount(checked);
      if (mount === undefined || mount.node !== node) return; // Not mounted here: nothing to do.
      const ids = mount.ids.filter((held) => held !== id);
      if (ids.length > 0) {
        await records.putMount({ ...mount, ids });
        return;
      }
      await records.putMount({ ...mount, ids: [] });
      await this.release(checked, mount);
      this.options.log(`unmounted volume ${checked} (last user gone)`);
    });
  }

  /** Unmounts and unmaps a volume nobody uses any more, then forgets its mount record. */
  private async release(name: string, mount: MountRecord): Promise<void> {
    if (mount.node !== this.options.node) {
      throw new ShaleError(
        'DOCKER_MOUNTED_ELSEWHERE',
        `volume ${name} is still mounted on host ${mount.node}; release it there`,
      );
    }
    await unmountFileSystem(mount.mountpoint);
    try {
      await unmapVdisk(this.options.mapRoot, name, false);
    } catch (err) {
      if (!hasCode(err, 'MAP_NOT_MAPPED')) throw err;
    }
    await this.options.records.deleteMount(name);
  }

  /** The mountpoint while the volume is mounted on this host, else "" (the protocol's). */
  async path(name: unknown): Promise<string> {
    const checked = checkVolumeName(name);
    await this.readyVolume(checked);
    const mount = await this.options.records.mount(checked);
    if (mount === undefined || mount.node !== this.options.node || mount.ids.length === 0)
      return '';
    return isMountpoint(mount.mountpoint) ? mount.mountpoint : '';
  }

  async get(name: unknown): Promise<VolumeView> {
    const checked = checkVolumeName(name);
    const record = await this.readyVolume(checked);
    return this.view(record, await this.options.records.mount(checked));
  }

  async list(): Promise<VolumeView[]> {
    const records = this.options.records;
    const views: VolumeView[] = [];
    for (const record of await records.volumes()) {
      if (record.state !== 'ready') continue;
      views.push(await this.view(record, await records.mount(record.name)));
    }
    return views;
  }

  private async view(record: VolumeRecord, mount: MountRecord | undefined): Promise<VolumeView> {
    const mountedHere =
      mount !== undefined &&
      mount.node === this.options.node &&
      mount.ids.length > 0 &&
      isMountpoint(mount.mountpoint);
    return {
      Name: record.name,
      Mountpoint: mountedHere ? mount.mountpoint : '',
      CreatedAt: new Date(record.createdAtMs).toISOString(),
      Status: {
        vdisk: record.name,
        sizeBytes: record.sizeBytes,
        vpool: record.vpool,
        fs: record.fs,
        keepVdisk: record.keepVdisk,
        ...(record.from === undefined
          ? {}
          : { from: `${record.from.volume}@${record.from.snapshot}` }),
        ...(mount === undefined
          ? {}
          : { mountedOn: mount.node, device: mount.device, containers: mount.ids.length }),
      },
    };
  }
}
