/**
 * What the plugin keeps in the metadata store, so that a restarted plugin (or another
 * host's) knows every volume and where each is mounted:
 *
 *   /shale/docker/volumes/NAME   the volume: its vDisk, file system, how it was made
 *   /shale/docker/mounts/NAME    where it is mounted: one host, its mountpoint and device,
 *                                and the mount IDs dockerd holds (the last Unmount releases it)
 *
 * One mount record per volume, not one per host: a file system is mounted on one host at
 * a time, and Mount on a second host is refused while the first holds it.
 */

import type { KvStore } from '@shale/arakoon-kv';
import { ShaleError } from '@shale/common';
import type { FileSystem } from './volume-options.js';

const RECORD_VERSION = 1;
const VOLUMES = '/shale/docker/volumes/';
const MOUNTS = '/shale/docker/mounts/';
const LIST_PAGE_KEYS = 1000;

export interface VolumeRecord {
  readonly version: number;
  readonly name: string;
  /** `creating` until the vDisk exists (a Create cut short is finished by the next). */
  readonly state: 'creating' | 'ready';
  readonly vpool: string;
  readonly sizeBytes: number;
  readonly fs: FileSystem;
  /** Keep the vDisk when the volume is removed (`-o keep=true`). */
  readonly keepVdisk: boolean;
  /** A clone: the volume and snapshot it was made from. */
  readonly from?: { readonly volume: string; readonly snapshot: string };
  readonly createdAtMs: number;
}

export interface MountRecord {
  readonly version: number;
  readonly name: string;
  /** The host that has it mounted (`--node-id`, default the host name). */
  readonly node: string;
  readonly mountpoint: string;
  readonly device: string;
  /** dockerd's mount IDs, one per container using it; empty: being released. */
  readonly ids: readonly string[];
  readonly mountedAtMs: number;
}

const key = (prefix: string, name: string) => Buffer.from(`${prefix}${name}`);

function decode<T extends { version: number }>(what: string, value: Buffer): T {
  let parsed: T;
  try {
    parsed = JSON.parse(value.toString('utf8')) as T;
  } catch (err) {
    throw new ShaleError('DOCKER_BAD_RECORD', `the ${what} record is not JSON`, { cause: err });
  }
  if (parsed.version !== RECORD_VERSION) {
    throw new ShaleError(
      'DOCKER_BAD_RECORD',
      `the ${what} record has version ${parsed.version}; this plugin reads version ${RECORD_VERSION}`,
    );
  }
  return parsed;
}

const encode = (record: object) => Buffer.from(JSON.stringify(record));

export class VolumeRecords {
  constructor(private readonly kv: KvStore) {}

  async volume(name: string): Promise<VolumeRecord | undefined> {
    const item = await this.kv.get(key(VOLUMES, name));
    return item === undefined ? undefined : decode<VolumeRecord>(`volume ${name}`, item.value);
  }

  async putVolume(record: Omit<VolumeRecord, 'version'>): Promise<VolumeRecord> {
    const full = { version: RECORD_VERSION, ...record };
    await this.kv.put(key(VOLUMES, record.name), encode(full));
    return full;
  }

  /** Every volume, by name. */
  async volumes(): Promise<VolumeRecord[]> {
    const out: VolumeRecord[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix: Buffer.from(VOLUMES) },
        { limit: LIST_PAGE_KEYS, ...(continuation === undefined ? {} : { continuation }) },
      );
      for (const item of page.items) {
        out.push(decode<VolumeRecord>(item.key.toString('utf8'), item.value));
      }
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out;
  }

  async mount(name: string): Promise<MountRecord | undefined> {
    const item = await this.kv.get(key(MOUNTS, name));
    return item === undefined ? undefined : decode<MountRecord>(`mount of ${name}`, item.value);
  }

  async putMount(record: Omit<MountRecord, 'version'>): Promise<MountRecord> {
    const full = { version: RECORD_VERSION, ...record };
    await this.kv.put(key(MOUNTS, record.name), encode(full));
    return full;
  }

  async deleteMount(name: string): Promise<void> {
    await this.kv.delete(key(MOUNTS, name));
  }

  /** Removes the volume and its mount record in one transaction. */
  async deleteVolume(name: string): Promise<void> {
    await this.kv.txn({
      compares: [],
      success: [
        { type: 'delete', key: key(VOLUMES, name) },
        { type: 'delete', key: key(MOUNTS, name) },
      ],
    });
  }
}
