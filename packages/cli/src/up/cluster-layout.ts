/**
 * The single-node cluster `shale up` runs: where each daemon keeps its data under the data
 * directory, which ports it uses (chosen once, on the first start, and kept so that
 * restarts find each other: the backend's OSD records and the edge's volumedriver address
 * name them), and the files the CLI reads to find the API.
 *
 *   DATA/shale-up.json   the layout: ports, node id, ASD count, metadata store (kept)
 *   DATA/status.json     endpoints of the running cluster (written when ready, removed at stop)
 *   DATA/api-token       the API's bearer token (0600)
 *   DATA/kv/             the embedded metadata store (with --kv embedded)
 *   DATA/asd<N>/         one ASD each (ASD_DIR/asd<N> with --asd-dir)
 *   DATA/proxy-cache/    the proxy's fragment cache
 *   DATA/volumedriver-engine-cache/  the fragment cache of the proxy engine inside the
 *                        volumedriver (which uploads SCOs and reads the backend itself)
 *   DATA/volumedriver/   the write buffer: SCOs, TLogs, LBA maps (--write-buffer-dir)
 *
 * The ASDs and the write buffer should not share a file system: when the ASDs fill it, the
 * write buffer can take no more writes and its backlog has nowhere to go.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ShaleError } from '@shale/common';

export const LAYOUT_FILE = 'shale-up.json';
export const STATUS_FILE = 'status.json';
export const TOKEN_FILE = 'api-token';
const LAYOUT_VERSION = 1;

/** The default data directory of `shale up` and of the CLI verbs that find it. */
export function defaultDataDir(): string {
  return process.env.SHALE_DATA_DIR ?? path.join(os.homedir(), '.shale');
}

export interface ClusterLayout {
  readonly version: number;
  readonly createdAtMs: number;
  readonly nodeId: string;
  readonly asdCount: number;
  /** 'embedded', or the etcd endpoints (etcd://HOST:PORT,...). */
  readonly kv: string;
  /** Where the ASD directories are (asd<N> under it); absent: the data dir. */
  readonly asdDir?: string;
  /** The write buffer; absent: DATA/volumedriver. */
  readonly writeBufferDir?: string;
  readonly ports: {
    readonly kv: number;
    readonly asds: readonly number[];
    readonly proxy: number;
    readonly volumedriver: number;
  };
}

/** What a running `shale up` publishes for the CLI. */
export interface ClusterStatus {
  readonly pid: number;
  readonly startedAtMs: number;
  readonly dataDir: string;
  readonly apiUrl: string;
  readonly tokenFile: string;
  readonly nbd: string;
  readonly volumedriver: string;
}

/** A port nothing listens on now, and none of `taken` (which joins the set). */
async function freePort(host: string, taken: Set<number>): Promise<number> {
  for (;;) {
    const port = await anyFreePort(host);
    if (taken.has(port)) continue;
    taken.add(port);
    return port;
  }
}

async function anyFreePort(host: string): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Loads the layout of an existing data dir, or makes (and saves) a new one. */
export async function loadOrCreateLayout(
  dataDir: string,
  wanted: {
    asdCount: number;
    kv: string;
    host: string;
    asdDir?: string | undefined;
    writeBufferDir?: string | undefined;
    /** Ports given on the command line (NBD, API): never chosen for a daemon. */
    avoidPorts?: readonly number[];
  },
  log: (line: string) => void,
): Promise<{ layout: ClusterLayout; created: boolean }> {
  const file = path.join(dataDir, LAYOUT_FILE);
  let text: string | undefined;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text !== undefined) {
    let layout: ClusterLayout;
    try {
      layout = JSON.parse(text) as ClusterLayout;
    } catch (err) {
      throw new ShaleError('UP_BAD_LAYOUT', `${file} is not valid JSON`, { cause: err });
    }
    if (layout.version !== LAYOUT_VERSION) {
      throw new ShaleError(
        'UP_BAD_LAYOUT',
        `${file}: layout version ${layout.version}, this shale knows ${LAYOUT_VERSION}`,
      );
    }
    if (wanted.asdCount !== layout.asdCount) {
      log(
        `shale up: this data dir has ${layout.asdCount} ASDs; --asds ${wanted.asdCount} is ignored`,
      );
    }
    if (wanted.kv !== layout.kv) {
      throw new ShaleError(
        'UP_BAD_LAYOUT',
        `this data dir keeps its metadata in ${layout.kv}; --kv ${wanted.kv} would lose it (pass --kv ${layout.kv})`,
      );
    }
    for (const [flag, key] of [
      ['--asd-dir', 'asdDir'],
      ['--write-buffer-dir', 'writeBufferDir'],
    ] as const) {
      const want = wanted[key];
      if (want !== undefined && want !== layout[key]) {
        throw new ShaleError(
          'UP_BAD_LAYOUT',
          `this data dir keeps its ${key === 'asdDir' ? 'ASDs' : 'write buffer'} in ${layout[key] ?? 'the data dir'}; ${flag} ${want} would not find them (move the directories and edit ${file})`,
        );
      }
    }
    const own = [
      layout.ports.kv,
      ...layout.ports.asds,
      layout.ports.proxy,
      layout.ports.volumedriver,
    ];
    const clash = (wanted.avoidPorts ?? []).find((port) => own.includes(port));
    if (clash !== undefined) {
      throw new ShaleError(
        'UP_PORT_CONFLICT',
        `port ${clash} is one this data dir's daemons use (${file}); give the NBD server and the API other ports`,
      );
    }
    return { layout, created: false };
  }
  await fs.mkdir(dataDir, { recursive: true });
  // The kernel may hand out a port again once it was closed: each is picked once, and not
  // one the command line gave the NBD server or the API.
  const taken = new Set<number>(wanted.avoidPorts ?? []);
  const asds: number[] = [];
  for (let i = 0; i < wanted.asdCount; i += 1) asds.push(await freePort(wanted.host, taken));
  const layout: ClusterLayout = {
    version: LAYOUT_VERSION,
    createdAtMs: Date.now(),
    nodeId: os.hostname(),
    asdCount: wanted.asdCount,
    kv: wanted.kv,
    ...(wanted.asdDir === undefined ? {} : { asdDir: wanted.asdDir }),
    ...(wanted.writeBufferDir === undefined ? {} : { writeBufferDir: wanted.writeBufferDir }),
    ports: {
      kv: await freePort(wanted.host, taken),
      asds,
      proxy: await freePort(wanted.host, taken),
      volumedriver: await freePort(wanted.host, taken),
    },
  };
  const tmp = `${file}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(layout, null, 2)}\n`);
  await fs.rename(tmp, file);
  return { layout, created: true };
}

export async function writeStatus(dataDir: string, status: ClusterStatus): Promise<void> {
  const file = path.join(dataDir, STATUS_FILE);
  await fs.writeFile(`${file}.tmp`, `${JSON.stringify(status, null, 2)}\n`);
  await fs.rename(`${file}.tmp`, file);
}

export async function removeStatus(dataDir: string): Promise<void> {
  await fs.rm(path.join(dataDir, STATUS_FILE), { force: true });
}

/** The status of the `shale up` running on this data dir (undefined: none is). */
export async function readStatus(dataDir: string): Promise<ClusterStatus | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dataDir, STATUS_FILE), 'utf8');
  } catch {
    return undefined;
  }
  const status = JSON.parse(text) as ClusterStatus;
  try {
    process.kill(status.pid, 0);
  } catch (err) {
    // EPERM: alive, but another user's (root's shale up, asked by a non-root CLI).
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return undefined; // it died
  }
  return status;
}

/** The directory of ASD `index` and the write buffer, as the layout places them. */
export function asdDirOf(dataDir: string, layout: ClusterLayout, index: number): string {
  return path.join(layout.asdDir ?? dataDir, `asd${index}`);
}

export function writeBufferDirOf(dataDir: string, layout: ClusterLayout): string {
  return layout.writeBufferDir ?? path.join(dataDir, 'volumedriver');
}

/**
 * A warning when the write buffer and any ASD directory are on one file system (by device
 * number, after creating the directories); undefined when they are apart.
 */
export async function sharedFileSystemWarning(
  dataDir: string,
  layout: ClusterLayout,
): Promise<string | undefined> {
  const writeBuffer = writeBufferDirOf(dataDir, layout);
  await fs.mkdir(writeBuffer, { recursive: true });
  const device = (await fs.stat(writeBuffer)).dev;
  const shared: string[] = [];
  for (let i = 0; i < layout.asdCount; i += 1) {
    const dir = asdDirOf(dataDir, layout, i);
    await fs.mkdir(dir, { recursive: true });
    if ((await fs.stat(dir)).dev === device) shared.push(`asd${i}`);
  }
  if (shared.length === 0) return undefined;
  return `shale up: the write buffer (${writeBuffer}) shares its file system with ${shared.length === layout.asdCount ? 'every ASD' : shared.join(', ')}: when the ASDs fill it, writes fail with ENOSPC and the upload backlog cannot drain until space is added. Put them apart with --write-buffer-dir and --asd-dir on the first start.`;
}
