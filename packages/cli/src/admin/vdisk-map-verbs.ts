import { ShaleError } from '@shale/common';
import {
  type Command,
  EXIT_OK,
  type OptionSpec,
  type OptionValues,
  onePositional,
  optionalString,
  UsageError,
} from '../command.js';
import { MAPPABLE_NAME } from '../map/constants.js';
import { kernelNbdAvailable } from '../map/host-tools.js';
import { mapDir } from '../map/map-record.js';
import {
  checkHost,
  listMappings,
  MAP_TOOLS,
  type MappingStatus,
  mapVdisk,
  repairMapping,
  unmapVdisk,
} from '../map/mapper.js';
import { API_OPTIONS, apiClient, nbdTarget } from './api-target.js';
import { printJson, printTable, runVerb, size, time } from './output.js';

const MAP_DIR_OPTION: Readonly<Record<string, OptionSpec>> = {
  'map-dir': {
    type: 'string',
    valueName: 'DIR',
    description:
      'where mappings are recorded (default: $SHALE_MAP_DIR, else /var/lib/shale/mapped)',
  },
};

function mappableName(name: string): string {
  if (!MAPPABLE_NAME.test(name)) {
    throw new UsageError(
      `"${name}" is not a vDisk name that can be mapped (letters, digits, ".", "_", "-"; at most 128)`,
    );
  }
  return name;
}

const mapVerb: Command = {
  name: 'map',
  summary: 'attach a vDisk as a block device on this host (nbdfuse + a loop device); prints it',
  usage: 'shale vdisk map NAME [--read-only] [--nbd HOST:PORT] [--map-dir DIR] [--json]',
  details:
    'Run as root. A recorded mapping that is broken (nbdfuse died, the NBD server restarted, the host rebooted) is repaired by mapping it again: on the same loop device when it is free. A broken device that is still mounted must be unmounted first.',
  options: {
    'read-only': { type: 'boolean', description: 'a read-only device (nbdfuse -r, losetup -r)' },
    nbd: {
      type: 'string',
      valueName: 'HOST:PORT',
      description: "the NBD server (default: $SHALE_NBD, else the local shale up's)",
    },
    ...MAP_DIR_OPTION,
    ...API_OPTIONS,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = mapVerb.usage as string;
      const name = mappableName(onePositional(positionals, 'NAME', usage));
      const readOnly = values['read-only'] === true;
      checkHost('map', MAP_TOOLS);
      const nbd = await nbdTarget(values);
      const vdisk = await (await apiClient(values)).getVdisk(name);
      if (await kernelNbdAvailable()) {
        process.stderr.write(
          'shale: note: this kernel has the nbd module, but map attaches through nbdfuse and a loop device all the same (the nbd-client path is not built yet)\n',
        );
      }
      const root = mapDir(optionalString(values, 'map-dir'));
      const { device, repaired } = await mapVdisk({
        root,
        vdisk: name,
        nbd,
        readOnly,
        sizeBytes: vdisk.sizeBytes,
      });
      if (repaired) process.stderr.write(`shale: repaired the mapping of vDisk ${name}\n`);
      if (values.json === true) printJson({ vdisk: name, device, readOnly, repaired });
      else process.stdout.write(`${device}\n`);
      return EXIT_OK;
    }),
};

const unmapVerb: Command = {
  name: 'unmap',
  summary: 'detach a mapped vDisk (refused while mounted, unless --force)',
  usage: 'shale vdisk unmap NAME|DEVICE [--force] [--map-dir DIR] [--json]',
  options: {
    force: {
      type: 'boolean',
      description:
        'unmount its file systems first (lazily when busy: the device goes when released)',
    },
    ...MAP_DIR_OPTION,
    json: API_OPTIONS.json as OptionSpec,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const target = onePositional(positionals, 'NAME or DEVICE', unmapVerb.usage as string);
      const root = mapDir(optionalString(values, 'map-dir'));
      const record = await unmapVdisk(root, target, values.force === true);
      if (values.json === true)
        printJson({ vdisk: record.vdisk, device: record.device, unmapped: true });
      else process.stdout.write(`unmapped vDisk ${record.vdisk} (${record.device})\n`);
      return EXIT_OK;
    }),
};

function statusJson(status: MappingStatus): Record<string, unknown> {
  return {
    ...status.record,
    export: status.record.vdisk,
    health: status.health,
    problems: status.problems,
    mountpoints: status.mountpoints,
    directIo: status.directIo,
  };
}

const mappedVerb: Command = {
  name: 'mapped',
  summary: 'list the vDisks mapped on this host and their health (exit 1 when one is broken)',
  usage: 'shale vdisk mapped [--repair [--nbd HOST:PORT]] [--map-dir DIR] [--json]',
  options: {
    repair: {
      type: 'boolean',
      description:
        'first repair every broken mapping that is not mounted (as shale vdisk map NAME does)',
    },
    nbd: {
      type: 'string',
      valueName: 'HOST:PORT',
      description: 'with --repair: the NBD server now (default: the one each was mapped from)',
    },
    ...MAP_DIR_OPTION,
    json: API_OPTIONS.json as OptionSpec,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      if (positionals.length > 0) {
        throw new UsageError(`unexpected argument "${positionals[0]}": ${mappedVerb.usage}`);
      }
      if (typeof process.getuid === 'function' && process.getuid() !== 0) {
        throw new ShaleError(
          'MAP_NOT_ROOT',
          "shale vdisk mapped must run as root (it reads nbdfuse's /proc entries); try sudo",
        );
      }
      const root = mapDir(optionalString(values, 'map-dir'));
      if (values.repair === true) await repairAll(root, values);
      else if (values.nbd !== undefined) throw new UsageError('--nbd goes with --repair');
      const statuses = await listMappings(root);
      if (values.json === true) printJson(statuses.map(statusJson));
      else if (statuses.length === 0) process.stdout.write('no vDisk is mapped on this host\n');
      else {
        printTable(
          ['NAME', 'DEVICE', 'MODE', 'SIZE', 'NBD', 'MOUNTED', 'SINCE', 'HEALTH'],
          statuses.map((s) => [
            s.record.vdisk,
            s.record.device,
            s.record.readOnly ? 'ro' : 'rw',
            size(s.record.sizeBytes),
            s.record.nbd,
            s.mountpoints.join(',') || '-',
            time(s.record.repairedAtMs ?? s.record.mappedAtMs),
            s.health === 'ok' ? 'ok' : `BROKEN: ${s.problems.join('; ')}`,
          ]),
        );
        if (statuses.some((s) => s.health !== 'ok')) {
          process.stdout.write(
            '\nrepair: shale vdisk map NAME, or shale vdisk mapped --repair (after unmounting a broken device)\n',
          );
        }
      }
      return statuses.every((s) => s.health === 'ok') ? EXIT_OK : 1;
    }),
};

/**
 * `mapped --repair`: each broken mapping repaired in turn; one that cannot be (mounted, its
 * server gone) is reported on stderr and stays broken, which the listing then shows.
 */
async function repairAll(root: string, values: Readonly<OptionValues>): Promise<void> {
  const nbd = optionalString(values, 'nbd') === undefined ? undefined : await nbdTarget(values);
  for (const status of await listMappings(root)) {
    if (status.health === 'ok') continue;
    try {
      const { device, repaired } = await repairMapping(root, status.record.vdisk, nbd);
      if (repaired)
        process.stderr.write(`shale: repaired vDisk ${status.record.vdisk} at ${device}\n`);
    } catch (err) {
      if (!(err instanceof ShaleError)) throw err;
      process.stderr.write(`shale: ${err.code}: ${err.message}\n`);
    }
  }
}

/** The host-side verbs of `shale vdisk`. */
export const vdiskMapVerbs: readonly Command[] = [mapVerb, unmapVerb, mappedVerb];
