#!/usr/bin/env node
import { errorMessage, ShaleError } from '@shale/common';
import { dispatch, EXIT_FAILURE, EXIT_USAGE, UsageError } from './command.js';
import { rootCommand } from './root.js';

async function main(): Promise<number> {
  try {
    return await dispatch(rootCommand, process.argv.slice(2), process.stdout);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`shale: ${err.message}\n`);
      return EXIT_USAGE;
    }
    if (err instanceof ShaleError) {
      process.stderr.write(`shale: ${err.code}: ${err.message}\n`);
      return EXIT_FAILURE;
    }
    process.stderr.write(
      `shale: internal error: ${err instanceof Error ? (err.stack ?? err.message) : errorMessage(err)}\n`,
    );
    return EXIT_FAILURE;
  }
}

process.exitCode = await main();
