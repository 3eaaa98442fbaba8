import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage, isShaleError, parseSizeBytes, SpaceReserve } from '@shale/common';
import { VolumeClient } from '@shale/volumedriver';
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  optionalString,
  parsePort,
  UsageError,
} from '../command.js';
import {
  MOUNT_ROOT_DEFAULT,
  PLUGIN_MAP_DIR_DEFAULT,
  PLUGIN_SOCKET_DEFAULT,
} from '../docker/constants.js';
import { portFree } from '../iscsi/tgt-daemon.js';
import { findTool } from '../map/host-tools.js';
import { waitForShutdownSignal } from '../signals.js';
import {
  asdDirOf,
  type ClusterLayout,
  defaultDataDir,
  loadOrCreateLayout,
  readStatus,
  removeStatus,
  sharedFileSystemWarning,
  TOKEN_FILE,
  writeBufferDirOf,
  writeStatus,
} from '../up/cluster-layout.js';
import { type ChildSpec, Supervisor } from '../up/supervisor.js';

/** The backend, preset and vPool a first start creates. */
const BACKEND = 'local';
const DEFAULT_VPOOL = 'default';
const HOST = '127.0.0.1';
/** The data dir's reserve file, what must stay free after making it, and its retry period. */
const RESERVE_FILE = 'space-reserve';
const RESERVE_KEEP_FREE_BYTES = 32 * 1024 * 1024;
const RESERVE_RETRY_MS = 60_000;

function parseReserve(text: string): number {
  try {
    return parseSizeBytes(text);
  } catch (err) {
    throw new UsageError(`--reserve: ${errorMessage(err)}`);
  }
}

/** The key that seals iSCSI CHAP secrets in the store (the API's default, next to its token). */
const ISCSI_KEY_FILE = 'iscsi-secrets.key';
const ISCSI_PORT_DEFAULT = 3260;

/**
 * The iSCSI port, or why there is none. Given: that port (0: none), checked by serve.
 * Not given: 3260 when this is root, tgtd is installed and the port is free.
 */
async function chooseIscsiPort(given: string | undefined): Promise<number | string> {
  if (given !== undefined) {
    const port = parsePort(given, 'iscsi-port');
    return port === 0 ? '--iscsi-port 0' : port;
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return 'not root (tgtd needs root)';
  }
  if (findTool('tgtd') === undefined) return 'tgt is not installed (apt-get install -y tgt)';
  const free = await portFree({ host: HOST, port: ISCSI_PORT_DEFAULT });
  return free
    ? ISCSI_PORT_DEFAULT
    : `${HOST}:${ISCSI_PORT_DEFAULT} is in use (give --iscsi-port PORT)`;
}

const MAIN_JS = fileURLToPath(new URL('../main.js', import.meta.url));

function shaleChild(
  name: string,
  args: readonly string[],
  options: { readyEvents?: readonly string[]; readyTimeoutMs?: number; stopGraceMs?: number } = {},
): ChildSpec {
  return {
    name,
    command: process.execPath,
    args: [MAIN_JS, ...args],
    env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
    readyEvents: options.readyEvents ?? ['listening'],
    readyTimeoutMs: options.readyTimeoutMs ?? 120_000,
    stopGraceMs: options.stopGraceMs ?? 30_000,
  };
}

function kvArgs(layout: ClusterLayout): string[] {
  return layout.kv === 'embedded'
    ? ['--kv', `kv://${HOST}:${layout.ports.kv}`]
    : ['--kv', layout.kv];
}

/** Creates the default vPool on the first start (the proxy created the backend and preset). */
async function ensureDefaultVpool(
  volumedriver: string,
  log: (line: string) => void,
): Promise<void> {
  const client = new VolumeClient(volumedriver, 30_000);
  try {
    const vpools = await client.listVpools();
    if (vpools.some((v) => v.name === DEFAULT_VPOOL)) return;
    try {
      await client.createVpool({ name: DEFAULT_VPOOL, backendId: BACKEND });
      log(`shale up: created vPool ${DEFAULT_VPOOL} on backend ${BACKEND} (default preset)`);
    } catch (err) {
      if (!isShaleError(err, 'VD_EXISTS')) throw err;
    }
  } finally {
    client.close();
  }
}

export const upCommand: Command = {
  name: 'up',
  summary:
    'run a whole single-node cluster in the foreground (ASDs, proxy, maintenance, volumedriver, edge, API)',
  usage:
    'shale up [--data-dir DIR] [--asds 6] [--nbd-port 10809] [--api-port 8080] [--kv embedded|etcd://HOST:PORT,...] [--asd-dir DIR] [--write-buffer-dir DIR] [--data-at-risk-ms 30000] [--reserve 64MiB] [--separate-edge] [--docker [--docker-socket PATH] [--docker-mount-root DIR] [--docker-map-dir DIR]] [--iscsi-port PORT] [--iscsi-backing auto|native|file] [--iscsi-unmap on|off]',
  options: {
    'data-dir': {
      type: 'string',
      valueName: 'DIR',
      description: 'where everything lives (default: $SHALE_DATA_DIR or ~/.shale)',
    },
    asds: {
      type: 'string',
      valueName: 'N',
      description: 'ASDs (one per directory under the data dir) on the first start',
      default: '6',
    },
    'nbd-port': {
      type: 'string',
      valueName: 'PORT',
      description: 'NBD port of the edge',
      default: '10809',
    },
    'api-port': {
      type: 'string',
      valueName: 'PORT',
      description: 'port of the REST API',
      default: '8080',
    },
    kv: {
      type: 'string',
      valueName: 'embedded|etcd://HOST:PORT,...',
      description:
        'the metadata store: embedded (LevelDB under the data dir, served to the daemons) or an etcd cluster',
      default: 'embedded',
    },
    'asd-dir': {
      type: 'string',
      valueName: 'DIR',
      description:
        'on the first start: put the ASD directories (asd<N>) here, ideally on another file system than the write buffer (default: the data dir)',
    },
    'write-buffer-dir': {
      type: 'string',
      valueName: 'DIR',
      description: 'on the first start: the volumedriver write buffer (default: DATA/volumedriver)',
    },
    'data-at-risk-ms': {
      type: 'string',
      valueName: 'MS',
      description:
        'passed to the volumedriver: acknowledged writes reach the backend within this long',
    },
    'write-buffer-reserve': {
      type: 'string',
      valueName: 'SIZE',
      description: "passed to the volumedriver: its write buffer's reserve file",
    },
    reserve: {
      type: 'string',
      valueName: 'SIZE',
      description:
        'a file of this size kept in the data dir, released before the daemons start so that they open on a full disk',
      default: '64MiB',
    },
    'write-buffer-margin': {
      type: 'string',
      valueName: 'SIZE',
      description: 'passed to the volumedriver: free space below which writes are refused',
    },
    'separate-edge': {
      type: 'boolean',
      description:
        'run the NBD server as its own process (shale edge serve, as on a compute host) instead of inside the volumedriver',
    },
    docker: {
      type: 'boolean',
      description:
        'also serve the Docker volume plugin `shale` (shale docker serve; needs root, nbdfuse, losetup, mkfs)',
    },
    'docker-socket': {
      type: 'string',
      valueName: 'PATH',
      description: `with --docker: the plugin socket (its file name is the plugin name) (default: ${PLUGIN_SOCKET_DEFAULT})`,
    },
    'docker-mount-root': {
      type: 'string',
      valueName: 'DIR',
      description: `with --docker: volumes are mounted at DIR/NAME (default: ${MOUNT_ROOT_DEFAULT})`,
    },
    'docker-map-dir': {
      type: 'string',
      valueName: 'DIR',
      description: `with --docker: where the plugin's vDisk mappings are recorded (default: ${PLUGIN_MAP_DIR_DEFAULT})`,
    },
    'iscsi-backing': {
      type: 'string',
      valueName: 'KIND',
      description:
        'how LUNs reach vDisks: native (tgt bs_shale), file (nbdfuse), auto: native when tgtd has it, else file (default auto)',
    },
    'iscsi-unmap': {
      type: 'string',
      valueName: 'on|off',
      description: 'on: iSCSI LUNs are thin provisioned (UNMAP frees vDisk space) (default on)',
    },
    'iscsi-port': {
      type: 'string',
      valueName: 'PORT',
      description:
        'serve iSCSI targets (shale iscsi serve, tgtd) on 127.0.0.1:PORT; 0: none (default: 3260 when run as root with tgt installed and the port free)',
    },
  },
  details: [
    'Every daemon is a child process, restarted (and reported) if it dies. The NBD server runs',
    'inside the volumedriver (co-located: no process boundary on the data path) unless',
    '--separate-edge. The first start',
    'creates the backend "local" over the ASDs, its default preset, and the vPool "default".',
    'Ctrl-C or SIGTERM stops everything in reverse order (every vDisk is made durable);',
    'running it again on the same data dir brings every vDisk back.',
    'With --docker the Docker volume plugin starts last and stops first; volumes stay mounted',
    'while it is down, but their I/O fails while the volumedriver is stopped.',
    'iSCSI (shale iscsi serve) starts after the API; the API seals the CHAP secrets of targets',
    '(shale iscsi create) with DATA/iscsi-secrets.key and shale iscsi serve opens them with it.',
  ].join('\n'),
  async run(values) {
    const shutdown = waitForShutdownSignal();
    let stopRequested: NodeJS.Signals | undefined;
    void shutdown.then((signal) => {
      stopRequested = signal;
    });
    const dataDir = path.resolve(optionalString(values, 'data-dir') ?? defaultDataDir());
    const asdCount = Number(optionalString(values, 'asds') ?? '6');
    if (!Number.isInteger(asdCount) || asdCount < 1 || asdCount > 64) {
      throw new UsageError('--asds must be a whole number 1..64');
    }
    const nbdPort = parsePort(optionalString(values, 'nbd-port') ?? '10809', 'nbd-port');
    const apiPort = parsePort(optionalString(values, 'api-port') ?? '8080', 'api-port');
    const kv = optionalString(values, 'kv') ?? 'embedded';
    const separateEdge = values['separate-edge'] === true;
    const docker = values.docker === true;
    const dockerSocket = docker
      ? path.resolve(optionalString(values, 'docker-socket') ?? PLUGIN_SOCKET_DEFAULT)
      : undefined;
    for (const name of ['docker-socket', 'docker-mount-root', 'docker-map-dir']) {
      if (!docker && optionalString(values, name) !== undefined) {
        throw new UsageError(`--${name} goes with --docker`);
      }
    }
    const iscsiPort = await chooseIscsiPort(optionalString(values, 'iscsi-port'));
    if (kv !== 'embedded' && !kv.startsWith('etcd://')) {
      throw new UsageError(`--kv must be embedded or etcd://HOST:PORT[,...], not "${kv}"`);
    }
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const running = await readStatus(dataDir);
    if (running !== undefined) {
      throw new UsageError(`a shale up (pid ${running.pid}) already runs on ${dataDir}`);
    }
    const absolute = (name: string) => {
      const dir = optionalString(values, name);
      return dir === undefined ? undefined : path.resolve(dir);
    };
    const { layout, created } = await loadOrCreateLayout(
      dataDir,
      {
        asdCount,
        kv,
        host: HOST,
        asdDir: absolute('asd-dir'),
        writeBufferDir: absolute('write-buffer-dir'),
        avoidPorts: [nbdPort, apiPort, ...(typeof iscsiPort === 'number' ? [iscsiPort] : [])],
      },
      log,
    );
    log(`shale up: ${created ? 'new cluster' : 'cluster'} in ${dataDir} (node ${layout.nodeId})`);
    const sharing = await sharedFileSystemWarning(dataDir, layout);
    if (sharing !== undefined) log(sharing);
    // Whatever filled the disk while the cluster was down, the daemons get this much to open.
    const reserve = new SpaceReserve({
      file: path.join(dataDir, RESERVE_FILE),
      bytes: parseReserve(optionalString(values, 'reserve') ?? '64MiB'),
      log: (line) => log(`shale up: ${line}`),
    });
    await reserve.release();
    const passed = (name: string) => {
      const value = optionalString(values, name);
      return value === undefined ? [] : [`--${name}`, value];
    };

    const supervisor = new Supervisor({ log });
    const tokenFile = path.join(dataDir, TOKEN_FILE);
    const volumedriver = `${HOST}:${layout.ports.volumedriver}`;
    const steps: (() => Promise<unknown>)[] = [];
    if (layout.kv === 'embedded') {
      steps.push(() =>
        supervisor.start(
          shaleChild(
            'kv',
            [
              'kv',
              'serve',
              '--dir',
              path.join(dataDir, 'kv'),
              '--host',
              HOST,
              '--port',
              String(layout.ports.kv),
            ],
            { stopGraceMs: 30_000 },
          ),
        ),
      );
    }
    steps.push(() =>
      Promise.all(
        layout.ports.asds.map((port, i) =>
          supervisor.start(
            shaleChild(`asd${i}`, [
              'asd',
              'serve',
              '--dir',
              asdDirOf(dataDir, layout, i),
              '--host',
              HOST,
              '--port',
              String(port),
              '--node-id',
              layout.nodeId,
            ]),
          ),
        ),
      ),
    );
    steps.push(() =>
      supervisor.start(
        shaleChild('proxy', [
          'proxy',
          'serve',
          ...kvArgs(layout),
          '--backend',
          BACKEND,
          '--host',
          HOST,
          '--port',
          String(layout.ports.proxy),
          '--cache-dir',
          path.join(dataDir, 'proxy-cache'),
          '--cache-bytes',
          '256MiB',
          ...layout.ports.asds.flatMap((port) => ['--asd', `${HOST}:${port}`]),
        ]),
      ),
    );
    steps.push(() =>
      supervisor.start(
        shaleChild(
          'maintenance',
          ['maintenance', 'serve', ...kvArgs(layout), '--backend', BACKEND],
          {
            readyEvents: ['started'],
          },
        ),
      ),
    );
    steps.push(() =>
      supervisor.start(
        shaleChild(
          'volumedriver',
          [
            'volumedriver',
            'serve',
            ...kvArgs(layout),
            // The proxy's engine runs inside the volumedriver: sealed SCOs go to the ASDs
            // without a gRPC hop (the proxy process created the backend and serves others).
            '--backend',
            BACKEND,
            '--engine-cache-dir',
            path.join(dataDir, 'volumedriver-engine-cache'),
            '--dir',
            writeBufferDirOf(dataDir, layout),
            '--host',
            HOST,
            '--port',
            String(layout.ports.volumedriver),
            '--node-id',
            layout.nodeId,
            ...passed('data-at-risk-ms'),
            ...passed('write-buffer-reserve'),
            ...passed('write-buffer-margin'),
            // The NBD server runs inside the volumedriver: no process boundary on the data path.
            ...(separateEdge ? [] : ['--nbd-port', String(nbdPort)]),
          ],
          { stopGraceMs: 120_000 },
        ),
      ),
    );
    steps.push(() => ensureDefaultVpool(volumedriver, log));
    if (separateEdge) {
      steps.push(() =>
        supervisor.start(
          shaleChild('edge', [
            'edge',
            'serve',
            '--volumedriver',
            volumedriver,
            '--host',
            HOST,
            '--port',
            String(nbdPort),
          ]),
        ),
      );
    }
    steps.push(() =>
      supervisor.start(
        shaleChild('api', [
          'api',
          'serve',
          ...kvArgs(layout),
          '--volumedriver',
          volumedriver,
          '--host',
          HOST,
          '--port',
          String(apiPort),
          '--token-file',
          tokenFile,
          // The same key as shale iscsi serve's below: the API seals, serve opens.
          '--iscsi-key-file',
          path.join(dataDir, ISCSI_KEY_FILE),
        ]),
      ),
    );
    if (typeof iscsiPort === 'number') {
      steps.push(() =>
        supervisor.start(
          shaleChild('iscsi', [
            'iscsi',
            'serve',
            ...kvArgs(layout),
            '--key-file',
            path.join(dataDir, ISCSI_KEY_FILE),
            '--nbd',
            `${HOST}:${nbdPort}`,
            '--portal',
            `${HOST}:${iscsiPort}`,
            '--state-dir',
            path.join(dataDir, 'iscsi'),
            '--backing',
            optionalString(values, 'iscsi-backing') ?? 'auto',
            '--unmap',
            optionalString(values, 'iscsi-unmap') ?? 'on',
          ]),
        ),
      );
    } else {
      log(`shale up: no iSCSI: ${iscsiPort}`);
    }
    if (dockerSocket !== undefined) {
      steps.push(() =>
        supervisor.start(
          shaleChild('docker', [
            'docker',
            'serve',
            ...kvArgs(layout),
            '--api',
            `http://${HOST}:${apiPort}`,
            '--token-file',
            tokenFile,
            '--nbd',
            `${HOST}:${nbdPort}`,
            '--node-id',
            layout.nodeId,
            '--socket',
            dockerSocket,
            '--mount-root',
            path.resolve(optionalString(values, 'docker-mount-root') ?? MOUNT_ROOT_DEFAULT),
            '--map-dir',
            path.resolve(optionalString(values, 'docker-map-dir') ?? PLUGIN_MAP_DIR_DEFAULT),
          ]),
        ),
      );
    }

    try {
      for (const step of steps) {
        if (stopRequested !== undefined) break;
        await step();
      }
    } catch (err) {
      log(`shale up: start failed: ${errorMessage(err)}`);
      await supervisor.stop();
      return EXIT_FAILURE;
    }
    // Made again once everything runs; while the disk has no room, retried now and then.
    const reserveRetry = setInterval(
      () => void reserve.make(RESERVE_KEEP_FREE_BYTES),
      RESERVE_RETRY_MS,
    );
    reserveRetry.unref();
    await reserve.make(RESERVE_KEEP_FREE_BYTES);
    if (stopRequested === undefined) {
      const apiUrl = `http://${HOST}:${apiPort}`;
      await writeStatus(dataDir, {
        pid: process.pid,
        startedAtMs: Date.now(),
        dataDir,
        apiUrl,
        tokenFile,
        nbd: `${HOST}:${nbdPort}`,
        volumedriver,
      });
      process.stdout.write(
        [
          `shale up: ready (data in ${dataDir})`,
          `  NBD       nbd://${HOST}:${nbdPort}/<vdisk>`,
          `  REST API  ${apiUrl}  (bearer token in ${tokenFile}; OpenAPI at ${apiUrl}/openapi.json)`,
          `  metadata  ${layout.kv === 'embedded' ? `embedded store in ${path.join(dataDir, 'kv')}` : layout.kv}`,
          `  backend   ${BACKEND}: ${layout.asdCount} ASDs under ${dataDir}; vPool ${DEFAULT_VPOOL}`,
          ...(typeof iscsiPort === 'number'
            ? [
                `  iSCSI     ${HOST}:${iscsiPort} (shale iscsi create VDISK --initiator ${HOST}; iscsi://${HOST}:${iscsiPort}/IQN/1)`,
              ]
            : []),
          ...(dockerSocket === undefined
            ? []
            : [
                `  Docker    volume plugin "${path.basename(dockerSocket, '.sock')}" on ${dockerSocket} (docker volume create -d ${path.basename(dockerSocket, '.sock')} -o size=1GiB NAME)`,
              ]),
          'Next:',
          '  shale vdisk create disk1 --size 10GiB',
          `  qemu-img info nbd://${HOST}:${nbdPort}/disk1`,
          'Ctrl-C stops the cluster (every vDisk is made durable).',
          '',
        ].join('\n'),
      );
    }
    const signal = await shutdown;
    clearInterval(reserveRetry);
    log(`shale up: ${signal}: stopping every daemon`);
    await supervisor.stop();
    await removeStatus(dataDir);
    log('shale up: stopped');
    return EXIT_OK;
  },
};
