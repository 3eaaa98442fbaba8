import {
  API_CONNECTIONS_MAX,
  API_CONNECTIONS_PER_CLIENT_MAX,
  API_DEFAULT_PORT,
  ApiDaemon,
} from '@shale/framework-api';
import {
  type Command,
  EXIT_OK,
  type OptionValues,
  optionalString,
  parsePort,
  requireString,
  stringList,
  UsageError,
} from '../command.js';
import { waitForShutdownSignal } from '../signals.js';
import { KV_OPTIONS, openKv } from './kv-option.js';

const ADDRESS = /^[^\s:]+:\d{1,5}$/;

/** --volumedriver may be given several times, each a comma-separated list of host:port. */
function volumedriverAddresses(values: Readonly<OptionValues>): string[] {
  const addresses = stringList(values, 'volumedriver')
    .flatMap((item) => item.split(','))
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
  if (addresses.length === 0) throw new UsageError('--volumedriver HOST:PORT is required');
  for (const address of addresses) {
    if (!ADDRESS.test(address))
      throw new UsageError(`--volumedriver: "${address}" is not HOST:PORT`);
  }
  return addresses;
}

const serve: Command = {
  name: 'serve',
  summary: 'run the framework API: REST (JSON, bearer token, OpenAPI) over the cluster',
  usage:
    'shale api serve (--kv etcd://HOST:PORT,...|kv://HOST:PORT | --kv-dir DIR) --volumedriver HOST:PORT[,HOST:PORT...] --token-file FILE [--iscsi-key-file FILE] [--port 8080] [--host 127.0.0.1] [--connections-per-client N]',
  options: {
    ...KV_OPTIONS,
    volumedriver: {
      type: 'string',
      multiple: true,
      valueName: 'HOST:PORT[,...]',
      description: 'volumedrivers to ask (any one of them is enough; vDisk calls go to owners)',
    },
    'token-file': {
      type: 'string',
      valueName: 'FILE',
      description:
        'the bearer token; created (32 random bytes, hex, mode 0600) if missing, refused if others can read it',
    },
    'iscsi-key-file': {
      type: 'string',
      valueName: 'FILE',
      description:
        'the key that seals the CHAP secrets of iSCSI targets (created 0600 if missing; give shale iscsi serve the same file) (default: iscsi-secrets.key next to --token-file)',
    },
    port: {
      type: 'string',
      valueName: 'PORT',
      description: 'HTTP port (0: pick a free one)',
      default: String(API_DEFAULT_PORT),
    },
    host: {
      type: 'string',
      valueName: 'HOST',
      description: 'address to listen on',
      default: '127.0.0.1',
    },
    'connections-per-client': {
      type: 'string',
      valueName: 'N',
      description: `TCP connections one remote address may hold, 1..${API_CONNECTIONS_MAX} (behind a reverse proxy every client is the proxy: raise it)`,
      default: String(API_CONNECTIONS_PER_CLIENT_MAX),
    },
  },
  details: [
    'Prints {"event":"listening","service":"api",...} on stdout when ready. Every route but',
    'GET /health needs "Authorization: Bearer $(cat FILE)"; GET /openapi.json describes them.',
    'SIGTERM or SIGINT stops it: requests in progress get 5 s.',
  ].join('\n'),
  async run(values) {
    const shutdown = waitForShutdownSignal();
    const volumedrivers = volumedriverAddresses(values);
    const tokenFile = requireString(values, 'token-file');
    const port = parsePort(optionalString(values, 'port') ?? String(API_DEFAULT_PORT), 'port');
    const perClient = optionalString(values, 'connections-per-client') ?? '';
    const connectionsPerClientMax = Number(perClient);
    if (
      !/^\d+$/.test(perClient) ||
      connectionsPerClientMax < 1 ||
      connectionsPerClientMax > API_CONNECTIONS_MAX
    ) {
      throw new UsageError(
        `--connections-per-client must be a whole number 1..${API_CONNECTIONS_MAX}, not "${perClient}"`,
      );
    }
    const kv = await openKv(values);
    try {
      const daemon = await ApiDaemon.start({
        kv,
        volumedrivers,
        tokenFile,
        ...(optionalString(values, 'iscsi-key-file') === undefined
          ? {}
          : { iscsiKeyFile: optionalString(values, 'iscsi-key-file') as string }),
        host: optionalString(values, 'host') ?? '127.0.0.1',
        port,
        connectionsPerClientMax,
      });
      process.stdout.write(
        `${JSON.stringify({ event: 'listening', service: 'api', address: daemon.host, port: daemon.port, tokenFile: daemon.tokenFile })}\n`,
      );
      process.stderr.write(
        `api serving on ${daemon.url} (${daemon.tokenCreated ? 'new token written to' : 'token from'} ${tokenFile})\n`,
      );
      const signal = await shutdown;
      process.stderr.write(`api: ${signal}, stopping\n`);
      await daemon.close();
      return EXIT_OK;
    } finally {
      await kv.close();
    }
  },
};

export const apiCommand: Command = {
  name: 'api',
  summary: 'the framework API: REST over HTTP for vPools, vDisks, snapshots, backends, ...',
  subcommands: [serve],
};
