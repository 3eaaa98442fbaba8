import { iscsiApiVerbs } from './admin/iscsi-verbs.js';
import {
  cloneCommand,
  rollbackCommand,
  snapshotCommand,
  statusCommand,
  vdiskCommand,
} from './admin/vdisk-verbs.js';
import { type Command, EXIT_OK } from './command.js';
import { apiCommand } from './commands/api.js';
import { asdCommand } from './commands/asd.js';
import { dockerCommand } from './commands/docker.js';
import { edgeCommand } from './commands/edge.js';
import { kvCommand } from './commands/kv.js';
import { maintenanceCommand } from './commands/maintenance.js';
import { proxyCommand } from './commands/proxy.js';
import { upCommand } from './commands/up.js';
import { volumedriverCommand } from './commands/volumedriver.js';
import { iscsiServeCommand } from './iscsi/serve-command.js';

export const SHALE_VERSION = '0.1.0';

const version: Command = {
  name: 'version',
  summary: 'print the version of shale and of Node.js',
  options: {},
  async run() {
    process.stdout.write(`shale ${SHALE_VERSION} (node ${process.version})\n`);
    return EXIT_OK;
  },
};

export const rootCommand: Command = {
  name: 'shale',
  summary: 'a log-structured, distributed block storage cluster',
  subcommands: [
    upCommand,
    vdiskCommand,
    snapshotCommand,
    cloneCommand,
    rollbackCommand,
    statusCommand,
    kvCommand,
    asdCommand,
    proxyCommand,
    maintenanceCommand,
    volumedriverCommand,
    edgeCommand,
    apiCommand,
    dockerCommand,
    {
      name: 'iscsi',
      summary:
        'vDisks as iSCSI targets: create, list, show, delete (through the framework API); serve (tgtd on this host)',
      subcommands: [...iscsiApiVerbs, iscsiServeCommand],
    },
    version,
  ],
};
