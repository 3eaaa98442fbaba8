import os from 'node:os';
import { VolumeClient, VolumedriverDaemon } from '@shale/volumedriver';
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  optionalString,
  parsePort,
  requireString,
} from '../command.js';
import { waitForShutdownSignal } from '../signals.js';
import { KV_OPTIONS, openKv } from './kv-option.js';

const serve: Command = {
  name: 'serve',
  summary:
    'run a volumedriver: vDisks on a local write buffer, their data in an ALBA backend, over gRPC',
  usage:
    'shale volumedriver serve (--kv etcd://HOST:PORT,... | --kv kv://HOST:PORT | --kv-dir DIR) --proxy HOST:PORT --dir DIR --port PORT [--host 127.0.0.1] [--metrics-port PORT] [--node-id ID] [--advertise HOST:PORT]',
  options: {
    ...KV_OPTIONS,
    proxy: {
      type: 'string',
      valueName: 'HOST:PORT',
      description: 'the ALBA proxy of the backend that holds the SCOs and TLogs',
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
  },
  details: [
    'Prints {"event":"listening",...} on stdout when ready. SIGTERM or SIGINT stops it: calls in',
    'progress finish (Io streams get 10 s), every open vDisk is made durable.',
  ].join('\n'),
  async run(values) {
    const shutdown = waitForShutdownSignal();
    const kv = await openKv(values);
    try {
      const nodeId = optionalString(values, 'node-id') ?? os.hostname();
      const daemon = await VolumedriverDaemon.start({
        kv,
        proxyAddress: requireString(values, 'proxy'),
        dir: requireString(values, 'dir'),
        nodeId,
        host: optionalString(values, 'host') ?? '127.0.0.1',
        port: parsePort(requireString(values, 'port'), 'port'),
        advertiseAddress: optionalString(values, 'advertise'),
        metricsPort:
          values['metrics-port'] === undefined
            ? undefined
            : parsePort(requireString(values, 'metrics-port'), 'metrics-port'),
      });
      process.stdout.write(
        `${JSON.stringify({ event: 'listening', service: 'volumedriver', nodeId, address: daemon.address, port: daemon.port, metricsPort: daemon.metricsPort ?? null })}\n`,
      );
      process.stderr.write(`volumedriver ${nodeId} serving on ${daemon.address}\n`);
      const signal = await shutdown;
      process.stderr.write(`volumedriver: ${signal}, stopping\n`);
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
