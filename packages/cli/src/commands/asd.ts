import { AsdClient, AsdDaemon } from '@shale/asd';
import { formatBytes, parseSizeBytes } from '@shale/common';
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  optionalString,
  parsePort,
  requireString,
} from '../command.js';
import { waitForShutdownSignal } from '../signals.js';

const serve: Command = {
  name: 'serve',
  summary: 'run an ASD: one daemon owning one disk directory, serving fragment objects over gRPC',
  usage:
    'shale asd serve --dir DIR --port PORT [--host 127.0.0.1] [--data-port PORT] [--metrics-port PORT] [--node-id NODE] [--claim]',
  options: {
    dir: {
      type: 'string',
      valueName: 'DIR',
      description: 'the directory this ASD owns (created if missing)',
    },
    port: { type: 'string', valueName: 'PORT', description: 'gRPC port (0: pick a free one)' },
    host: {
      type: 'string',
      valueName: 'HOST',
      description: 'address to listen on',
      default: '127.0.0.1',
    },
    'data-port': {
      type: 'string',
      valueName: 'PORT',
      description:
        'data protocol port: fragment puts and gets over Shale frames, on the same host (default 0: pick a free one; stats report it)',
    },
    'metrics-port': {
      type: 'string',
      valueName: 'PORT',
      description: 'serve Prometheus /metrics and /health here',
    },
    'node-id': {
      type: 'string',
      valueName: 'NODE',
      description: 'the node this disk is in (default: the host name)',
    },
    'asd-id': {
      type: 'string',
      valueName: 'ID',
      description:
        'the ASD id expected in DIR (default: whatever DIR holds; a new uuid on first start)',
    },
    claim: {
      type: 'boolean',
      description:
        'take over a directory owned by another ASD id or node, or a non-empty foreign one',
    },
    'capacity-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description: 'store at most this many value bytes (e.g. 100GiB; default: the file system)',
    },
    'reserve-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description:
        'file-system space kept free for the index and deletes (default: 1%, 32MiB..4GiB)',
    },
  },
  details: [
    'The first start writes DIR/asd-identity.json (ASD id, node id, creation time). A directory',
    "owned by another ASD id or node, or holding files that are not an ASD's, is refused unless",
    '--claim is given. SIGTERM or SIGINT stops it cleanly: calls in progress finish first.',
  ].join('\n'),
  async run(values) {
    // Listen for signals before announcing readiness: a supervisor may stop us the moment
    // it reads the "listening" line, and an unhandled SIGTERM would skip the clean close.
    const shutdown = waitForShutdownSignal();
    const daemon = await AsdDaemon.start({
      dir: requireString(values, 'dir'),
      port: parsePort(requireString(values, 'port'), 'port'),
      host: optionalString(values, 'host'),
      dataPort:
        values['data-port'] === undefined
          ? 0
          : parsePort(requireString(values, 'data-port'), 'data-port'),
      metricsPort:
        values['metrics-port'] === undefined
          ? undefined
          : parsePort(requireString(values, 'metrics-port'), 'metrics-port'),
      nodeId: optionalString(values, 'node-id'),
      asdId: optionalString(values, 'asd-id'),
      claim: values.claim === true,
      capacityBytes:
        values['capacity-bytes'] === undefined
          ? undefined
          : parseSizeBytes(requireString(values, 'capacity-bytes')),
      reserveBytes:
        values['reserve-bytes'] === undefined
          ? undefined
          : parseSizeBytes(requireString(values, 'reserve-bytes')),
    });
    const metrics =
      daemon.metricsPort === undefined
        ? ''
        : `, metrics on http://${daemon.host}:${daemon.metricsPort}/metrics`;
    // One machine-readable line on stdout: tests and `shale up` wait for it.
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', service: 'asd', asdId: daemon.store.identity.asdId, nodeId: daemon.store.identity.nodeId, address: daemon.address, port: daemon.port, dataPort: daemon.dataPort, metricsPort: daemon.metricsPort ?? null })}\n`,
    );
    process.stderr.write(
      `asd ${daemon.store.identity.asdId} serving ${daemon.store.dir} on ${daemon.address} (data protocol on port ${daemon.dataPort})${metrics}\n`,
    );
    const signal = await shutdown;
    process.stderr.write(`asd ${daemon.store.identity.asdId}: ${signal}, stopping\n`);
    await daemon.stop();
    return EXIT_OK;
  },
};

const addressOption = {
  address: {
    type: 'string' as const,
    valueName: 'HOST:PORT',
    description: 'the ASD to ask',
    default: '127.0.0.1:8600',
  },
  json: { type: 'boolean' as const, description: 'print JSON instead of a table' },
};

const stats: Command = {
  name: 'stats',
  summary: "show an ASD's identity, capacity, use and object count",
  options: addressOption,
  async run(values) {
    const client = new AsdClient(requireString(values, 'address'), { deadlineMs: 5000 });
    try {
      const result = await client.stats();
      if (values.json === true) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      } else {
        const rows: [string, string][] = [
          ['ASD id', result.asdId],
          ['node id', result.nodeId],
          ['capacity', formatBytes(result.capacityBytes)],
          ['used', formatBytes(result.usedBytes)],
          ['free', formatBytes(result.freeBytes)],
          ['reserve', formatBytes(result.reserveBytes)],
          ['objects', String(result.objectCount)],
          ['created', new Date(result.createdAtMs).toISOString()],
          ['version', result.version],
        ];
        for (const [label, value] of rows) process.stdout.write(`${label.padEnd(10)} ${value}\n`);
      }
      return EXIT_OK;
    } finally {
      client.close();
    }
  },
};

const health: Command = {
  name: 'health',
  summary: 'ask an ASD whether it is healthy (exit code 0: ok, 1: degraded or unreachable)',
  options: addressOption,
  async run(values) {
    const client = new AsdClient(requireString(values, 'address'), { deadlineMs: 5000 });
    try {
      const result = await client.health();
      if (values.json === true) process.stdout.write(`${JSON.stringify(result)}\n`);
      else
        process.stdout.write(
          `${result.asdId}: ${result.status}${result.reason ? ` (${result.reason})` : ''}\n`,
        );
      return result.status === 'ok' ? EXIT_OK : EXIT_FAILURE;
    } finally {
      client.close();
    }
  },
};

export const asdCommand: Command = {
  name: 'asd',
  summary: 'the ALBA storage daemon: one per disk',
  subcommands: [serve, stats, health],
};
