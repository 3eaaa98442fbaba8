import fs from 'node:fs/promises';
import os from 'node:os';
import { ShaleError } from '@shale/common';
import { ApiClient } from '@shale/framework-api';
import { API_OPTIONS, apiClient, nbdTarget } from '../admin/api-target.js';
import {
  type Command,
  EXIT_OK,
  type OptionValues,
  optionalString,
  UsageError,
} from '../command.js';
import {
  MOUNT_ROOT_DEFAULT,
  PLUGIN_MAP_DIR_DEFAULT,
  PLUGIN_SOCKET_DEFAULT,
} from '../docker/constants.js';
import { startPluginServer } from '../docker/plugin-server.js';
import { VolumeDriver } from '../docker/volume-driver.js';
import { VolumeRecords } from '../docker/volume-records.js';
import { checkHost, MAP_TOOLS } from '../map/mapper.js';
import { waitForShutdownSignal } from '../signals.js';
import { KV_OPTIONS, openKv } from './kv-option.js';

/** The plugin waits this long for a clone or a vDisk delete (below dockerd's 2 minutes). */
const OPERATION_WAIT_MS = 90_000;

async function api(values: Readonly<OptionValues>): Promise<ApiClient> {
  const tokenFile = optionalString(values, 'token-file');
  if (tokenFile === undefined) return apiClient(values);
  const url = optionalString(values, 'api');
  if (url === undefined) throw new UsageError('--token-file goes with --api URL');
  let token: string;
  try {
    token = (await fs.readFile(tokenFile, 'utf8')).trim();
  } catch (err) {
    throw new ShaleError('CLI_NO_CLUSTER', `cannot read the API token ${tokenFile}`, {
      cause: err,
    });
  }
  return new ApiClient({ url, token, requestTimeoutMs: 30_000 });
}

const serve: Command = {
  name: 'serve',
  summary: 'serve the Docker volume plugin `shale` (volumes are vDisks with a file system)',
  usage:
    'shale docker serve (--kv etcd://HOST:PORT,... | --kv kv://HOST:PORT) [--api URL (--token T | --token-file FILE) --nbd HOST:PORT | --data-dir DIR] [--socket /run/docker/plugins/shale.sock] [--mount-root DIR] [--map-dir DIR] [--node-id ID]',
  options: {
    ...KV_OPTIONS,
    ...API_OPTIONS,
    'token-file': {
      type: 'string',
      valueName: 'FILE',
      description: 'read the API token from FILE',
    },
    nbd: {
      type: 'string',
      valueName: 'HOST:PORT',
      description: "the NBD server (default: $SHALE_NBD, else the local shale up's)",
    },
    socket: {
      type: 'string',
      valueName: 'PATH',
      description: 'the plugin socket dockerd finds (its file name is the plugin name)',
      default: PLUGIN_SOCKET_DEFAULT,
    },
    'mount-root': {
      type: 'string',
      valueName: 'DIR',
      description: 'volumes are mounted at DIR/NAME',
      default: MOUNT_ROOT_DEFAULT,
    },
    'map-dir': {
      type: 'string',
      valueName: 'DIR',
      description: "where the plugin's vDisk mappings are recorded",
      default: PLUGIN_MAP_DIR_DEFAULT,
    },
    'node-id': {
      type: 'string',
      valueName: 'ID',
      description: 'this host in mount records (default: the host name)',
    },
  },
  details:
    'Run as root. Create options: size (default 10GiB), vpool (default "default"), fs (ext4 or xfs), from=VOLUME@SNAP (a clone of a snapshot), keep=true (Remove keeps the vDisk). Prints {"event":"listening",...} on stdout when ready.',
  async run(values) {
    const shutdown = waitForShutdownSignal();
    checkHost('docker serve', MAP_TOOLS);
    const client = await api(values);
    const nbd = await nbdTarget(values);
    const kv = await openKv(values);
    const socketPath = optionalString(values, 'socket') ?? PLUGIN_SOCKET_DEFAULT;
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const driver = new VolumeDriver({
      api: client,
      records: new VolumeRecords(kv),
      nbd,
      mapRoot: optionalString(values, 'map-dir') ?? PLUGIN_MAP_DIR_DEFAULT,
      mountRoot: optionalString(values, 'mount-root') ?? MOUNT_ROOT_DEFAULT,
      node: optionalString(values, 'node-id') ?? os.hostname(),
      operationWaitMs: OPERATION_WAIT_MS,
      log: (line) => log(`shale docker: ${line}`),
    });
    const server = await startPluginServer({ socketPath, driver, log });
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', service: 'docker-plugin', socket: socketPath, nbd })}\n`,
    );
    const signal = await shutdown;
    log(`shale docker: ${signal}, stopping (mounted volumes stay mounted)`);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await kv.close();
    return EXIT_OK;
  },
};

export const dockerCommand: Command = {
  name: 'docker',
  summary: 'the Docker volume plugin',
  subcommands: [serve],
};
