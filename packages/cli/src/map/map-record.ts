/**
 * The record of each mapping, so that `shale vdisk mapped` can tell its health after a
 * restart (of Shale, of nbdfuse, of the host) and `shale vdisk map` can repair it:
 *
 *   MAP_DIR/NAME/mapping.json   the record (written atomically: temporary file + rename)
 *   MAP_DIR/NAME/fuse/          nbdfuse's FUSE mountpoint; fuse/nbd is the vDisk as a file
 *   MAP_DIR/NAME/nbdfuse.pid    written by nbdfuse once it serves
 *   MAP_DIR/NAME/nbdfuse.log    nbdfuse's stdout and stderr
 *   MAP_DIR/NAME.lock           held (pid inside) while map or unmap works on NAME
 *
 * MAP_DIR is --map-dir, else $SHALE_MAP_DIR, else /var/lib/shale/mapped: on disk, not
 * in /run, so that after a host reboot `mapped` lists what was mapped and `map` maps it again.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShaleError } from '@shale/common';
import {
  MAP_DIR_DEFAULT,
  MAP_LOCK_TIMEOUT_MS,
  NBDFUSE_FILE_NAME,
  POLL_INTERVAL_MS,
} from './constants.js';

const RECORD_VERSION = 1;
const RECORD_FILE = 'mapping.json';

export interface MapRecord {
  readonly version: number;
  readonly vdisk: string;
  /** The NBD server as HOST:PORT; the export name is the vDisk's name. */
  readonly nbd: string;
  readonly readOnly: boolean;
  readonly sizeBytes: number;
  /** How it is attached; the only one so far (README: limitations). */
  readonly method: 'nbdfuse-loop';
  /** The loop device, /dev/loopN. */
  readonly device: string;
  readonly nbdfusePid: number;
  readonly mappedAtMs: number;
  /** When a repair last brought it back; absent: never repaired. */
  readonly repairedAtMs?: number;
}

export interface MappingPaths {
  readonly dir: string;
  readonly record: string;
  readonly mountpoint: string;
  /** The file nbdfuse serves: the loop device's backing file. */
  readonly file: string;
  readonly pidFile: string;
  readonly log: string;
  readonly lock: string;
}

export function mapDir(option: string | undefined): string {
  return path.resolve(option ?? process.env.SHALE_MAP_DIR ?? MAP_DIR_DEFAULT);
}

export function mappingPaths(root: string, vdisk: string): MappingPaths {
  const dir = path.join(root, vdisk);
  const mountpoint = path.join(dir, 'fuse');
  return {
    dir,
    record: path.join(dir, RECORD_FILE),
    mountpoint,
    file: path.join(mountpoint, NBDFUSE_FILE_NAME),
    pidFile: path.join(dir, 'nbdfuse.pid'),
    log: path.join(dir, 'nbdfuse.log'),
    lock: path.join(root, `${vdisk}.lock`),
  };
}

export async function readRecord(paths: MappingPaths): Promise<MapRecord | undefined> {
  let text: string;
  try {
    text = await fs.readFile(paths.record, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let record: MapRecord;
  try {
    record = JSON.parse(text) as MapRecord;
  } catch (err) {
    throw new ShaleError('MAP_BAD_RECORD', `${paths.record} is not valid JSON`, { cause: err });
  }
  if (record.version !== RECORD_VERSION) {
    throw new ShaleError(
      'MAP_BAD_RECORD',
      `${paths.record}: record version ${record.version}, this shale knows ${RECORD_VERSION}`,
    );
  }
  return record;
}

export async function writeRecord(
  paths: MappingPaths,
  record: Omit<MapRecord, 'version'>,
): Promise<void> {
  const temporary = `${paths.record}.tmp`;
  await fs.writeFile(
    temporary,
    `${JSON.stringify({ version: RECORD_VERSION, ...record }, null, 2)}\n`,
  );
  await fs.rename(temporary, paths.record);
}

/** Every recorded mapping, by vDisk name. */
export async function listRecords(root: string): Promise<MapRecord[]> {
  let names: string[];
  try {
    names = await fs.readdir(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const records: MapRecord[] = [];
  for (const name of names.sort()) {
    if (name.endsWith('.lock')) continue;
    const record = await readRecord(mappingPaths(root, name));
    if (record !== undefined) records.push(record);
  }
  return records;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs work holding NAME's lock (a file made with O_EXCL holding our pid), so two maps of
 * one vDisk never race. A lock whose process is gone is taken over; a live one is waited
 * for, then MAP_BUSY.
 */
export async function withLock<T>(paths: MappingPaths, work: () => Promise<T>): Promise<T> {
  await fs.mkdir(path.dirname(paths.lock), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + MAP_LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      await fs.writeFile(paths.lock, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number((await fs.readFile(paths.lock, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(holder) || holder <= 0 || !pidAlive(holder)) {
      await fs.rm(paths.lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new ShaleError(
        'MAP_BUSY',
        `another shale (pid ${holder}) is mapping or unmapping this vDisk (${paths.lock})`,
      );
    }
    await sleep(POLL_INTERVAL_MS);
  }
  try {
    return await work();
  } finally {
    await fs.rm(paths.lock, { force: true });
  }
}
