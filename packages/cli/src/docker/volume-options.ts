/**
 * The options of `docker volume create -d shale -o KEY=VALUE ... NAME`, checked before
 * anything is created: an unknown option, a size that is not a size or a bad file system
 * is refused with a message that names the option and what it takes.
 */
import { parseSizeBytes, ShaleError } from '@shale/common';
import { MAPPABLE_NAME } from '../map/constants.js';
import {
  DEFAULT_VOLUME_SIZE_BYTES,
  DEFAULT_VPOOL,
  FILE_SYSTEMS,
  MIN_VOLUME_SIZE_BYTES,
} from './constants.js';

export type FileSystem = (typeof FILE_SYSTEMS)[number];

/** What a Create asks for: a new empty volume, or a clone of a volume's snapshot. */
export type VolumeSpec =
  | {
      readonly kind: 'new';
      readonly sizeBytes: number;
      readonly vpool: string;
      readonly fs: FileSystem;
      readonly keepVdisk: boolean;
    }
  | {
      readonly kind: 'clone';
      readonly fromVolume: string;
      readonly snapshot: string;
      readonly keepVdisk: boolean;
    };

const KNOWN_OPTIONS = ['size', 'vpool', 'fs', 'from', 'snapshot', 'keep'] as const;

function badOption(message: string): ShaleError {
  return new ShaleError('DOCKER_BAD_OPTION', message);
}

/** DOCKER_BAD_NAME unless `name` can name a vDisk, a directory and a Docker volume. */
export function checkVolumeName(name: unknown): string {
  if (typeof name !== 'string' || !MAPPABLE_NAME.test(name)) {
    throw new ShaleError(
      'DOCKER_BAD_NAME',
      `"${String(name)}" cannot name a shale volume: use letters, digits, ".", "_", "-" (at most 128, starting with a letter or digit)`,
    );
  }
  return name;
}

function parseKeep(text: string): boolean {
  if (text === 'true' || text === 'yes' || text === '1') return true;
  if (text === 'false' || text === 'no' || text === '0') return false;
  throw badOption(`keep must be true or false, not "${text}"`);
}

/** Parses and checks Create's Opts (dockerd sends them as strings; absent means {}). */
export function parseVolumeOptions(opts: unknown): VolumeSpec {
  if (opts === undefined || opts === null) opts = {};
  if (typeof opts !== 'object' || Array.isArray(opts)) {
    throw badOption('Opts must be an object of KEY: VALUE strings');
  }
  const given = opts as Record<string, unknown>;
  for (const [key, value] of Object.entries(given)) {
    if (!(KNOWN_OPTIONS as readonly string[]).includes(key)) {
      throw badOption(
        `unknown option "${key}": shale volumes take ${KNOWN_OPTIONS.map((k) => `-o ${k}=`).join(', ')}`,
      );
    }
    if (typeof value !== 'string') throw badOption(`option ${key} must be a string`);
  }
  const text = given as Record<string, string | undefined>;
  const keepVdisk = text.keep === undefined ? false : parseKeep(text.keep);
  if (text.from !== undefined || text.snapshot !== undefined) {
    return cloneSpec(text, keepVdisk);
  }
  let sizeBytes = DEFAULT_VOLUME_SIZE_BYTES;
  if (text.size !== undefined) {
    try {
      sizeBytes = parseSizeBytes(text.size);
    } catch {
      throw badOption(`size "${text.size}" is not a size (try 256MiB, 10GiB, 1TiB)`);
    }
    if (sizeBytes < MIN_VOLUME_SIZE_BYTES) {
      throw badOption(
        `size ${text.size} is too small for a file system: at least ${MIN_VOLUME_SIZE_BYTES / 1024 ** 2}MiB`,
      );
    }
  }
  const fs = text.fs ?? FILE_SYSTEMS[0];
  if (!(FILE_SYSTEMS as readonly string[]).includes(fs)) {
    throw badOption(`fs "${fs}" is not one shale makes: ${FILE_SYSTEMS.join(' or ')}`);
  }
  if (fs === 'xfs' && sizeBytes < 300 * 1024 ** 2) {
    throw badOption(`size ${text.size}: an xfs file system needs at least 300MiB`);
  }
  const vpool = text.vpool ?? DEFAULT_VPOOL;
  if (!MAPPABLE_NAME.test(vpool)) throw badOption(`vpool "${vpool}" is not a vPool name`);
  return { kind: 'new', sizeBytes, vpool, fs: fs as FileSystem, keepVdisk };
}

function cloneSpec(text: Record<string, string | undefined>, keepVdisk: boolean): VolumeSpec {
  for (const key of ['size', 'vpool', 'fs'] as const) {
    if (text[key] !== undefined) {
      throw badOption(
        `${key} does not go with from: a clone has its snapshot's size, vPool and file system`,
      );
    }
  }
  if (text.from === undefined) {
    throw badOption('snapshot=SNAP needs from=VOLUME (the volume the snapshot belongs to)');
  }
  let fromVolume = text.from;
  let snapshot = text.snapshot;
  const at = fromVolume.indexOf('@');
  if (at >= 0) {
    if (snapshot !== undefined) {
      throw badOption(`give the snapshot once: from=${fromVolume} already names one`);
    }
    snapshot = fromVolume.slice(at + 1);
    fromVolume = fromVolume.slice(0, at);
  }
  if (snapshot === undefined || snapshot.length === 0) {
    throw badOption(
      `from=${text.from} needs a snapshot: from=VOLUME@SNAP, or from=VOLUME with snapshot=SNAP (make one with shale snapshot create VOLUME SNAP)`,
    );
  }
  if (!MAPPABLE_NAME.test(fromVolume)) throw badOption(`from "${fromVolume}" is not a volume name`);
  if (!MAPPABLE_NAME.test(snapshot))
    throw badOption(`snapshot "${snapshot}" is not a snapshot name`);
  return { kind: 'clone', fromVolume, snapshot, keepVdisk };
}
