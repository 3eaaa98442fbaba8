import { KvDaemon } from '@shale/arakoon-kv';
import { type Command, EXIT_OK, optionalString, parsePort, requireString } from '../command.js';
import { waitForShutdownSignal } from '../signals.js';

const serve: Command = {
  name: 'serve',
  summary:
    'serve an embedded metadata store (LevelDB in one directory) over gRPC, for the daemons of one machine',
  usage: 'shale kv serve --dir DIR --port PORT [--host 127.0.0.1] [--metrics-port PORT]',
  options: {
    dir: {
      type: 'string',
      valueName: 'DIR',
      description: 'the store (created if missing; one process at a time)',
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
  },
  details: [
    'Daemons reach it with --kv kv://HOST:PORT. Prints {"event":"listening",...} on stdout when',
    'ready. Every acknowledged write is fsynced first. SIGTERM or SIGINT stops it: watches end',
    '(clients resume when it is back), calls in progress get 5 s, then the store is closed.',
    'The server has no authentication: keep --host on a loopback or private address.',
  ].join('\n'),
  async run(values) {
    // Listen for signals before announcing readiness: a supervisor may stop us the moment
    // it reads the "listening" line, and an unhandled SIGTERM would skip the clean close.
    const shutdown = waitForShutdownSignal();
    const dir = requireString(values, 'dir');
    const daemon = await KvDaemon.start({
      dir,
      host: optionalString(values, 'host'),
      port: parsePort(requireString(values, 'port'), 'port'),
      metricsPort:
        values['metrics-port'] === undefined
          ? undefined
          : parsePort(requireString(values, 'metrics-port'), 'metrics-port'),
    });
    // One machine-readable line on stdout: tests and `shale up` wait for it.
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', service: 'kv', address: daemon.address, port: daemon.port, metricsPort: daemon.metricsPort ?? null, dir })}\n`,
    );
    process.stderr.write(`kv serving ${dir} on ${daemon.address}\n`);
    const signal = await shutdown;
    process.stderr.write(`kv: ${signal}, stopping\n`);
    await daemon.close();
    return EXIT_OK;
  },
};

export const kvCommand: Command = {
  name: 'kv',
  summary: 'the metadata store: serve an embedded one to the daemons of one machine',
  subcommands: [serve],
};
