#!/usr/bin/env node
import { errorMessage, ShaleError } from '@shale/common';
import { dispatch, EXIT_FAILURE, EXIT_USAGE, UsageError } from './command.js';
import { rootCommand } from './root.js';
import { exitStatus, guardStdio } from './stdio.js';

/**
 * A daemon started by `shale up` (or any supervisor that sets SHALE_STOP_WITH_PARENT=1 and
 * gives it a stdin pipe it never writes to) stops cleanly when that pipe closes: the
 * supervisor died, even by SIGKILL, and no orphan keeps a port or a data dir.
 */
function stopWithParent(): void {
  if (process.env.SHALE_STOP_WITH_PARENT !== '1') return;
  const stop = () => process.kill(process.pid, 'SIGTERM');
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  // Watching the pipe must not keep a daemon alive once it has stopped.
  (process.stdin as unknown as { unref?: () => void }).unref?.();
}

async function main(): Promise<number> {
  guardStdio();
  stopWithParent();
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

process.exitCode = exitStatus(await main());
