import { type Command, EXIT_OK } from './command.js';
import { asdCommand } from './commands/asd.js';
import { edgeCommand } from './commands/edge.js';
import { maintenanceCommand } from './commands/maintenance.js';
import { proxyCommand } from './commands/proxy.js';
import { volumedriverCommand } from './commands/volumedriver.js';

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
    asdCommand,
    proxyCommand,
    maintenanceCommand,
    volumedriverCommand,
    edgeCommand,
    version,
  ],
};
