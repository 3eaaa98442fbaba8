/**
 * The CLI's one output path is process.stdout and process.stderr (every verb, the help,
 * the daemons' listening lines and logs write there, directly or through console); this
 * guards both once, in main, before anything is written.
 *
 * A reader that goes away early (`shale status | head -1`, a closed terminal pipe) makes the
 * next write fail with EPIPE, which Node reports as an 'error' event: unhandled, that is a
 * stack trace and exit code 1 for a command that did its job. Here it is quiet: the rest of
 * that stream's output is dropped and the command ends as it would have, with its own exit
 * status (0 when it did its job; `shale status` still exits 1 when the cluster is degraded).
 * Not 141 (what a shell reports for a process killed by SIGPIPE): it would hide that status,
 * and under `set -o pipefail` make `shale status | head -1` fail on a healthy cluster. A
 * daemon whose reader went away keeps serving; its later lines are dropped.
 *
 * Any other write error (EIO from a terminal that is gone, ...) is reported once on the
 * other stream if it still works, and makes the exit status 1.
 */
import { EXIT_FAILURE } from './command.js';

type StdStream = NodeJS.WriteStream;

const broken = new Set<StdStream>();
let failed = false;
let guarded = false;

function isBrokenPipe(err: NodeJS.ErrnoException): boolean {
  return err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED';
}

function onWriteError(stream: StdStream, other: StdStream, name: string, err: Error): void {
  const alreadyBroken = broken.has(stream);
  broken.add(stream);
  if (alreadyBroken || isBrokenPipe(err as NodeJS.ErrnoException)) return;
  failed = true;
  process.exitCode = EXIT_FAILURE;
  if (!broken.has(other) && other.writable)
    other.write(`shale: writing to ${name} failed: ${err.message}\n`);
}

/** Installs the handlers on stdout and stderr (once). */
export function guardStdio(): void {
  if (guarded) return;
  guarded = true;
  process.stdout.on('error', (err: Error) =>
    onWriteError(process.stdout, process.stderr, 'stdout', err),
  );
  process.stderr.on('error', (err: Error) =>
    onWriteError(process.stderr, process.stdout, 'stderr', err),
  );
}

/** The exit status, given the command's: a write error other than a broken pipe makes it 1. */
export function exitStatus(commandStatus: number): number {
  return failed && commandStatus === 0 ? EXIT_FAILURE : commandStatus;
}
