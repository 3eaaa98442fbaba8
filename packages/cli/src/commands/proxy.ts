import { ProxyClient, ProxyDaemon } from '@shale/alba-proxy';
import { parseSizeBytes } from '@shale/common';
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  optionalString,
  parsePort,
  requireString,
  stringList,
} from '../command.js';
import { waitForShutdownSignal } from '../signals.js';
import { KV_OPTIONS, openKv } from './kv-option.js';

const serve: Command = {
  name: 'serve',
  summary: 'run an ALBA proxy: objects erasure-coded over the ASDs of one backend, over gRPC',
  usage:
    'shale proxy serve (--kv etcd://HOST:PORT,... | --kv kv://HOST:PORT | --kv-dir DIR) --backend NAME [--asd HOST:PORT ...] --port PORT [--host 127.0.0.1] [--cache-dir DIR --cache-bytes SIZE] [--key-file FILE]',
  options: {
    ...KV_OPTIONS,
    backend: {
      type: 'string',
      valueName: 'NAME',
      description: 'the backend to serve (created on first start from --asd)',
    },
    asd: {
      type: 'string',
      multiple: true,
      valueName: 'HOST:PORT',
      description: 'an ASD that must be an OSD of the backend (asked for its id and node)',
    },
    port: { type: 'string', valueName: 'PORT', description: 'gRPC port (0: pick a free one)' },
    host: {
      type: 'string',
      valueName: 'HOST',
      description: 'address to listen on',
      default: '127.0.0.1',
    },
    'cache-dir': {
      type: 'string',
      valueName: 'DIR',
      description: 'fragment cache directory (default: no cache)',
    },
    'cache-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description: 'fragment cache quota',
      default: '1GiB',
    },
    'metrics-port': {
      type: 'string',
      valueName: 'PORT',
      description: 'serve Prometheus /metrics and /health here',
    },
    'key-file': {
      type: 'string',
      valueName: 'FILE',
      description: 'encryption keys (0600, created if missing); needed by encrypting presets',
    },
  },
  details: [
    'Prints {"event":"listening",...} on stdout when ready. SIGTERM or SIGINT stops it: calls in',
    'progress finish, background fragment writes are drained.',
  ].join('\n'),
  async run(values) {
    const shutdown = waitForShutdownSignal();
    const kv = await openKv(values);
    try {
      const cacheDir = optionalString(values, 'cache-dir');
      const daemon = await ProxyDaemon.start({
        kv,
        backend: requireString(values, 'backend'),
        asdAddresses: stringList(values, 'asd'),
        host: optionalString(values, 'host') ?? '127.0.0.1',
        port: parsePort(requireString(values, 'port'), 'port'),
        cacheDir,
        cacheBytes:
          cacheDir === undefined ? undefined : parseSizeBytes(requireString(values, 'cache-bytes')),
        keyFile: optionalString(values, 'key-file'),
        metricsPort:
          values['metrics-port'] === undefined
            ? undefined
            : parsePort(requireString(values, 'metrics-port'), 'metrics-port'),
      });
      process.stdout.write(
        `${JSON.stringify({ event: 'listening', service: 'proxy', backend: requireString(values, 'backend'), address: daemon.address, port: daemon.port, metricsPort: daemon.metricsPort ?? null })}\n`,
      );
      process.stderr.write(
        `proxy for backend ${requireString(values, 'backend')} serving on ${daemon.address}\n`,
      );
      const signal = await shutdown;
      process.stderr.write(`proxy: ${signal}, stopping\n`);
      await daemon.stop();
      return EXIT_OK;
    } finally {
      await kv.close();
    }
  },
};

const health: Command = {
  name: 'health',
  summary:
    'ask a proxy how many OSDs of its backend answer (exit code 0: ok, 1: degraded or unreachable)',
  options: {
    address: {
      type: 'string',
      valueName: 'HOST:PORT',
      description: 'the proxy to ask',
      default: '127.0.0.1:8700',
    },
    json: { type: 'boolean', description: 'print JSON' },
  },
  async run(values) {
    const client = new ProxyClient(requireString(values, 'address'), 10_000);
    try {
      const result = await client.health();
      if (values.json === true) process.stdout.write(`${JSON.stringify(result)}\n`);
      else
        process.stdout.write(
          `backend ${result.backendId}: ${result.status}, ${result.osdsAlive}/${result.osdsTotal} OSDs answer\n`,
        );
      return result.status === 'ok' ? EXIT_OK : EXIT_FAILURE;
    } finally {
      client.close();
    }
  },
};

export const proxyCommand: Command = {
  name: 'proxy',
  summary: 'the ALBA proxy: erasure-coded objects over a backend of ASDs',
  subcommands: [serve, health],
};
