import os from 'node:os';
import { errorMessage, parseSizeBytes } from '@shale/common';
import { EDGE_MAX_BUFFERED_BYTES, EdgeDaemon } from '@shale/edge';
import {
  CLUSTER_CACHE_DEFAULT_BYTES,
  DATA_AT_RISK_MAX_MS,
  DATA_AT_RISK_MIN_MS,
  SCO_MEMORY_DEFAULT_BYTES,
  VolumeClient,
  VolumedriverDaemon,
} from '@shale/volumedriver';
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  type OptionValues,
  optionalString,
  parsePort,
  requireString,
  UsageError,
} from '../command.js';
import { waitForShutdownSignal } from '../signals.js';
import { KV_OPTIONS, openKv } from './kv-option.js';

function parseBoundMs(text: string): number {
  const ms = Number(text);
  if (!Number.isSafeInteger(ms) || ms < DATA_AT_RISK_MIN_MS) {
    throw new UsageError(
      `--data-at-risk-ms must be a whole number of milliseconds >= ${DATA_AT_RISK_MIN_MS}, not "${text}"`,
    );
  }
  return ms;
}

function parseSize(values: Readonly<OptionValues>, name: string): number {
  const text = requireString(values, name);
  try {
    return parseSizeBytes(text);
  } catch (err) {
    throw new UsageError(`--${name}: ${errorMessage(err)}`);
  }
}

const serve: Command = {
  name: 'serve',
  summary:
    'run a volumedriver: vDisks on a local write buffer, their data in an ALBA backend, over gRPC',
  usage:
    'shale volumedriver serve (--kv etcd://HOST:PORT,... | --kv kv://HOST:PORT | --kv-dir DIR) (--backend NAME [--engine-cache-dir DIR] [--engine-cache-bytes 256MiB] [--key-file FILE] | --proxy HOST:PORT) --dir DIR --port PORT [--host 127.0.0.1] [--metrics-port PORT] [--node-id ID] [--advertise HOST:PORT] [--data-at-risk-ms 30000] [--write-buffer-reserve 64MiB] [--write-buffer-margin 32MiB] [--cluster-cache-bytes 512MiB] [--sco-memory-bytes 256MiB] [--data-port PORT] [--nbd-port PORT] [--nbd-max-buffered-bytes 512MiB]',
  options: {
    ...KV_OPTIONS,
    backend: {
      type: 'string',
      valueName: 'NAME',
      description:
        'the ALBA backend that holds the SCOs and TLogs, reached by the proxy engine inside this process (no socket on the upload path)',
    },
    'engine-cache-dir': {
      type: 'string',
      valueName: 'DIR',
      description:
        "with --backend: the engine's fragment cache (its own, never a proxy's); none without it",
    },
    'engine-cache-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description: 'with --engine-cache-dir: its quota',
      default: '256MiB',
    },
    'key-file': {
      type: 'string',
      valueName: 'FILE',
      description: "with --backend: the proxies' encryption keys (needed when the preset encrypts)",
    },
    proxy: {
      type: 'string',
      valueName: 'HOST:PORT',
      description:
        'instead of --backend: an ALBA proxy (shale proxy serve) of that backend, over gRPC',
    },
    dir: {
      type: 'string',
      valueName: 'DIR',
      description: 'the local write buffer (SCOs, TLogs, LBA maps)',
    },
    port: { type: 'string', valueName: 'PORT', description: 'gRPC port (0: pick a free one)' },
    host: {
      type: 'string',
      valueName: 'HOST',
      description: 'address to listen on',
      default: '127.0.0.1',
    },
    'metrics-port': {
      type: 'string',
      valueName: 'PORT',
      description: 'serve Prometheus /metrics and /health here',
    },
    'node-id': {
      type: 'string',
      valueName: 'ID',
      description: 'this storage router (default: the hostname)',
    },
    advertise: {
      type: 'string',
      valueName: 'HOST:PORT',
      description:
        'the address edges reach this volumedriver at, registered in the metadata store (default: HOST:PORT as bound)',
    },
    'data-at-risk-ms': {
      type: 'string',
      valueName: 'MS',
      description:
        'acknowledged writes reach the backend within this long (partial SCOs are sealed at half of it)',
      default: String(DATA_AT_RISK_MAX_MS),
    },
    'write-buffer-reserve': {
      type: 'string',
      valueName: 'SIZE',
      description:
        'a file of this size kept in the write buffer, released at start so metadata opens on a full disk',
      default: '64MiB',
    },
    'write-buffer-margin': {
      type: 'string',
      valueName: 'SIZE',
      description: 'writes are refused (ENOSPC) before the write buffer has less free than this',
      default: '32MiB',
    },
    'cluster-cache-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description:
        'memory for the clusters last written or read, shared by every vDisk (reads of them skip the SCO files)',
      default: `${CLUSTER_CACHE_DEFAULT_BYTES / (1024 * 1024)}MiB`,
    },
    'data-port': {
      type: 'string',
      valueName: 'PORT',
      description:
        'the data protocol (remote edges send block I/O here; registered with the advertised host); default: a free port',
    },
    'sco-memory-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description:
        'memory for SCOs kept whole until uploaded, shared by every vDisk (uploads past it read the SCO file back)',
      default: `${SCO_MEMORY_DEFAULT_BYTES / (1024 * 1024)}MiB`,
    },
    'nbd-port': {
      type: 'string',
      valueName: 'PORT',
      description:
        'also serve NBD here, inside this process (co-located edge): vDisks open here are served without crossing a process boundary, others through their owner',
    },
    'nbd-max-buffered-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description: "the co-located edge's memory budget over all NBD connections",
      default: `${EDGE_MAX_BUFFERED_BYTES / (1024 * 1024)}MiB`,
    },
  },
  details: [
    'Prints {"event":"listening",...} on stdout when ready. SIGTERM or SIGINT stops it: NBD',
    'connections get 10 s to finish, then calls in progress finish (Io streams get 10 s),',
    'every open vDisk is made durable.',
  ].join('\n'),
  async run(values) {
    const backendId = optionalString(values, 'backend');
    const proxyAddress = optionalString(values, 'proxy');
    if ((backendId === undefined) === (proxyAddress === undefined)) {
      throw new UsageError('give exactly one of --backend NAME or --proxy HOST:PORT');
    }
    if (backendId === undefined) {
      for (const name of ['engine-cache-dir', 'key-file']) {
        if (values[name] !== undefined) throw new UsageError(`--${name} goes with --backend`);
      }
    }
    const shutdown = waitForShutdownSignal();
    const kv = await openKv(values);
    try {
      const nodeId = optionalString(values, 'node-id') ?? os.hostname();
      const daemon = await VolumedriverDaemon.start({
        kv,
        proxyAddress,
        backendId,
        engineCacheDir: optionalString(values, 'engine-cache-dir'),
        engineCacheBytes: parseSize(values, 'engine-cache-bytes'),
        keyFile: optionalString(values, 'key-file'),
        dir: requireString(values, 'dir'),
        nodeId,
        host: optionalString(values, 'host') ?? '127.0.0.1',
        port: parsePort(requireString(values, 'port'), 'port'),
        dataPort:
          values['data-port'] === undefined
            ? undefined
            : parsePort(requireString(values, 'data-port'), 'data-port'),
        advertiseAddress: optionalString(values, 'advertise'),
        dataAtRiskMaxMs: parseBoundMs(requireString(values, 'data-at-risk-ms')),
        writeBufferReserveBytes: parseSize(values, 'write-buffer-reserve'),
        writeBufferMarginBytes: parseSize(values, 'write-buffer-margin'),
        clusterCacheBytes: parseSize(values, 'cluster-cache-bytes'),
        scoMemoryBytes: parseSize(values, 'sco-memory-bytes'),
        metricsPort:
          values['metrics-port'] === undefined
            ? undefined
            : parsePort(requireString(values, 'metrics-port'), 'metrics-port'),
      });
      let edge: EdgeDaemon | undefined;
      try {
        if (values['nbd-port'] !== undefined) {
          edge = await EdgeDaemon.start({
            local: daemon.manager,
            volumedrivers: [daemon.address],
            registry: daemon.registry,
            host: daemon.host,
            port: parsePort(requireString(values, 'nbd-port'), 'nbd-port'),
            maxBufferedBytes: parseSize(values, 'nbd-max-buffered-bytes'),
            log: (line) => process.stderr.write(`volumedriver: nbd: ${line}\n`),
          });
        }
      } catch (err) {
        await daemon.close();
        throw err;
      }
      process.stdout.write(
        `${JSON.stringify({ event: 'listening', service: 'volumedriver', nodeId, address: daemon.address, port: daemon.port, dataPort: daemon.dataServer.port, metricsPort: daemon.metricsPort ?? null, nbdPort: edge?.port ?? null })}\n`,
      );
      process.stderr.write(
        `volumedriver ${nodeId} serving on ${daemon.address}${edge === undefined ? '' : `, NBD on ${edge.host}:${edge.port}`}\n`,
      );
      const signal = await shutdown;
      process.stderr.write(`volumedriver: ${signal}, stopping\n`);
      // NBD connections first (their requests finish on the open vDisks), then the vDisks.
      await edge?.close();
      await daemon.close();
      return EXIT_OK;
    } finally {
      await kv.close();
    }
  },
};

const health: Command = {
  name: 'health',
  summary: 'ask a volumedriver whether it serves (exit code 0: ok, 1: not ok or unreachable)',
  options: {
    address: {
      type: 'string',
      valueName: 'HOST:PORT',
      description: 'the volumedriver to ask',
      default: '127.0.0.1:8800',
    },
    json: { type: 'boolean', description: 'print JSON' },
  },
  async run(values) {
    const client = new VolumeClient(requireString(values, 'address'), 10_000);
    try {
      const result = await client.health();
      if (values.json === true) process.stdout.write(`${JSON.stringify(result)}\n`);
      else
        process.stdout.write(
          `volumedriver ${result.nodeId}: ${result.ok ? 'ok' : 'not ok'}, ${result.vdisksOpen} vDisks open\n`,
        );
      return result.ok ? EXIT_OK : EXIT_FAILURE;
    } finally {
      client.close();
    }
  },
};

export const volumedriverCommand: Command = {
  name: 'volumedriver',
  summary: 'the volumedriver: vDisks, snapshots and clones over an ALBA backend',
  subcommands: [serve, health],
};
