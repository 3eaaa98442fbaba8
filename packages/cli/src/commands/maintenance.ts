import {
  BackendRegistry,
  createMaintenanceMetrics,
  MAINTENANCE_INTERVAL_MS,
  MAINTENANCE_ORPHAN_GRACE_MS,
  MAINTENANCE_OSD_DOWN_GRACE_MS,
  MAINTENANCE_VERIFY_INTERVAL_MS,
  Maintenance,
  runMaintenanceLoop,
} from '@shale/alba-proxy';
import { type MetricsServer, parseSizeBytes, startMetricsServer } from '@shale/common';
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

function durationMs(values: Readonly<OptionValues>, name: string, fallback: number): number {
  const text = optionalString(values, name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value))
    throw new UsageError(`--${name} must be a whole number of milliseconds, not "${text}"`);
  return value;
}

const serve: Command = {
  name: 'serve',
  summary:
    'repair, complete and garbage-collect the fragments of one backend (resumable, rate-limited)',
  usage:
    'shale maintenance serve (--kv etcd://HOST:PORT,... | --kv kv://HOST:PORT | --kv-dir DIR) --backend NAME [--interval-ms MS] [--bytes-per-sec SIZE] [--orphan-grace-ms MS] [--osd-down-grace-ms MS] [--verify-interval-ms MS] [--verify] [--once]',
  options: {
    ...KV_OPTIONS,
    backend: { type: 'string', valueName: 'NAME', description: 'the backend to maintain' },
    'interval-ms': {
      type: 'string',
      valueName: 'MS',
      description: `pause between passes (default ${MAINTENANCE_INTERVAL_MS})`,
    },
    'bytes-per-sec': {
      type: 'string',
      valueName: 'SIZE',
      description: 'fragment bytes read plus written per second',
      default: '50MiB',
    },
    'orphan-grace-ms': {
      type: 'string',
      valueName: 'MS',
      description: `a fragment in no manifest is deleted after this long (default ${MAINTENANCE_ORPHAN_GRACE_MS})`,
    },
    'osd-down-grace-ms': {
      type: 'string',
      valueName: 'MS',
      description: `an active OSD silent this long counts as lost (default ${MAINTENANCE_OSD_DOWN_GRACE_MS})`,
    },
    'verify-interval-ms': {
      type: 'string',
      valueName: 'MS',
      description: `read and check every fragment at most this often (default ${MAINTENANCE_VERIFY_INTERVAL_MS})`,
    },
    verify: { type: 'boolean', description: 'with --once: read and check every fragment' },
    'metrics-port': {
      type: 'string',
      valueName: 'PORT',
      description: 'serve Prometheus /metrics (repairs, orphans, bytes moved) on 127.0.0.1:PORT',
    },
    once: { type: 'boolean', description: 'run one pass, print its JSON summary, exit' },
  },
  details: [
    'Prints {"event":"started","service":"maintenance",...} on stdout, then one JSON summary',
    'line per pass. SIGTERM or SIGINT stops it after the current pass (progress is stored in',
    'the KV, so the next start resumes). The embedded store (--kv-dir) can be opened by one',
    'process only: with it, stop the proxy and run `--once` on its directory.',
    'Exit code of --once: 0 when every object is recoverable, 1 otherwise.',
  ].join('\n'),
  async run(values) {
    const shutdown = waitForShutdownSignal();
    const kv = await openKv(values);
    try {
      const backendName = requireString(values, 'backend');
      const backendId = await new BackendRegistry(kv).backendIdByName(backendName);
      if (backendId === undefined) throw new UsageError(`no backend named "${backendName}"`);
      const maintenance = new Maintenance({
        kv,
        backendId,
        limits: {
          repairBytesPerSec: parseSizeBytes(requireString(values, 'bytes-per-sec')),
          orphanGraceMs: durationMs(values, 'orphan-grace-ms', MAINTENANCE_ORPHAN_GRACE_MS),
          osdDownGraceMs: durationMs(values, 'osd-down-grace-ms', MAINTENANCE_OSD_DOWN_GRACE_MS),
        },
      });
      let metricsServer: MetricsServer | undefined;
      try {
        const metricsPort = optionalString(values, 'metrics-port');
        if (metricsPort !== undefined) {
          metricsServer = await startMetricsServer(createMaintenanceMetrics(maintenance), {
            host: '127.0.0.1',
            port: parsePort(metricsPort, 'metrics-port'),
          });
        }
        process.stdout.write(
          `${JSON.stringify({ event: 'started', service: 'maintenance', backend: backendName, backendId, once: values.once === true, metricsPort: metricsServer?.port ?? null })}\n`,
        );
        if (values.once === true) {
          const summary = await maintenance.runPass({ verify: values.verify === true });
          process.stdout.write(`${JSON.stringify(summary)}\n`);
          return summary.unrecoverableCount === 0 ? EXIT_OK : EXIT_FAILURE;
        }
        const stop = new AbortController();
        const loop = runMaintenanceLoop(maintenance, {
          intervalMs: durationMs(values, 'interval-ms', MAINTENANCE_INTERVAL_MS),
          verifyIntervalMs: durationMs(
            values,
            'verify-interval-ms',
            MAINTENANCE_VERIFY_INTERVAL_MS,
          ),
          signal: stop.signal,
          onPass: (summary) => process.stdout.write(`${JSON.stringify(summary)}\n`),
        });
        const signal = await Promise.race([shutdown, loop.then(() => undefined)]);
        process.stderr.write(`maintenance: ${signal ?? 'loop ended'}, stopping\n`);
        stop.abort();
        await loop;
        return EXIT_OK;
      } finally {
        await metricsServer?.close();
        maintenance.close();
      }
    } finally {
      await kv.close();
    }
  },
};

export const maintenanceCommand: Command = {
  name: 'maintenance',
  summary: 'repair and garbage collection of a backend of the ALBA proxy',
  subcommands: [serve],
};
