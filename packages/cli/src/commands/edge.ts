import { errorMessage, parseSizeBytes } from '@shale/common';
import { EDGE_MAX_BUFFERED_BYTES, EdgeDaemon, NBD_DEFAULT_PORT } from '@shale/edge';
import {
  type Command,
  EXIT_OK,
  optionalString,
  parsePort,
  requireString,
  stringList,
  UsageError,
} from '../command.js';
import { waitForShutdownSignal } from '../signals.js';

const ADDRESS = /^[^\s:]+:\d{1,5}$/;

function sizeOption(text: string, name: string): number {
  let bytes: number;
  try {
    bytes = parseSizeBytes(text);
  } catch (err) {
    throw new UsageError(`--${name}: ${errorMessage(err)}`);
  }
  if (bytes <= 0) throw new UsageError(`--${name} must be more than 0`);
  return bytes;
}

/** --volumedriver may be given several times, each a comma-separated list of host:port. */
function volumedriverAddresses(values: Parameters<typeof stringList>[0]): string[] {
  const addresses = stringList(values, 'volumedriver')
    .flatMap((item) => item.split(','))
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
  if (addresses.length === 0) throw new UsageError('--volumedriver HOST:PORT is required');
  for (const address of addresses) {
    if (!ADDRESS.test(address)) {
      throw new UsageError(`--volumedriver: "${address}" is not HOST:PORT`);
    }
  }
  return addresses;
}

function positiveInteger(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value <= 0) {
    throw new UsageError(`--${name} must be a whole number above 0, not "${text}"`);
  }
  return value;
}

const serve: Command = {
  name: 'serve',
  summary: 'run an edge: the NBD server that routes every vDisk to the volumedriver owning it',
  usage:
    'shale edge serve --volumedriver HOST:PORT[,HOST:PORT...] [--port 10809] [--host 127.0.0.1] [--metrics-port PORT] [--read-only] [--default-export NAME] [--request-timeout-ms MS] [--max-buffered-bytes 512MiB]',
  options: {
    volumedriver: {
      type: 'string',
      multiple: true,
      valueName: 'HOST:PORT[,...]',
      description: 'volumedrivers to ask where vDisks live (any one of them is enough)',
    },
    port: {
      type: 'string',
      valueName: 'PORT',
      description: 'NBD port (0: pick a free one)',
      default: String(NBD_DEFAULT_PORT),
    },
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
    'read-only': { type: 'boolean', description: 'serve every export read-only' },
    'default-export': {
      type: 'string',
      valueName: 'NAME',
      description: 'the vDisk served for an empty export name (nbd://host:port with no path)',
    },
    'request-timeout-ms': {
      type: 'string',
      valueName: 'MS',
      description:
        'fail a request with EIO when no volumedriver answers it within this long (default 30000)',
    },
    'max-buffered-bytes': {
      type: 'string',
      valueName: 'SIZE',
      description:
        'payload in flight plus unsent replies over all connections; past it connections stop reading requests',
      default: `${EDGE_MAX_BUFFERED_BYTES / (1024 * 1024)}MiB`,
    },
  },
  details: [
    'Export names are vDisk names. Prints {"event":"listening",...} on stdout when ready.',
    'SIGTERM or SIGINT stops it: no new connections; open ones get 10 s to finish.',
  ].join('\n'),
  async run(values) {
    const shutdown = waitForShutdownSignal();
    const volumedrivers = volumedriverAddresses(values);
    const daemon = await EdgeDaemon.start({
      volumedrivers,
      host: requireString(values, 'host'),
      port: parsePort(requireString(values, 'port'), 'port'),
      metricsPort:
        values['metrics-port'] === undefined
          ? undefined
          : parsePort(requireString(values, 'metrics-port'), 'metrics-port'),
      readOnly: values['read-only'] === true,
      defaultExport: optionalString(values, 'default-export'),
      requestTimeoutMs: positiveInteger(
        optionalString(values, 'request-timeout-ms'),
        'request-timeout-ms',
      ),
      maxBufferedBytes: sizeOption(
        requireString(values, 'max-buffered-bytes'),
        'max-buffered-bytes',
      ),
      log: (line) => process.stderr.write(`edge: ${line}\n`),
    });
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', service: 'edge', address: `${daemon.host}:${daemon.port}`, port: daemon.port, metricsPort: daemon.metricsPort ?? null, volumedrivers })}\n`,
    );
    process.stderr.write(`edge serving NBD on ${daemon.host}:${daemon.port}\n`);
    const signal = await shutdown;
    process.stderr.write(`edge: ${signal}, stopping\n`);
    await daemon.close();
    return EXIT_OK;
  },
};

export const edgeCommand: Command = {
  name: 'edge',
  summary: 'the edge: the NBD server in front of the volumedrivers',
  subcommands: [serve],
};
