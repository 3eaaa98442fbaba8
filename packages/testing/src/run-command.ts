import { spawn } from 'node:child_process';

export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CommandOptions {
  /** SIGKILL after this long (then code is null); default 120 s. */
  readonly timeoutMs?: number;
  readonly input?: string | Buffer;
  /** The Debian package that has the command, named when it is missing. */
  readonly package?: string;
  /** Added to the environment (PATH is TOOL_PATH unless given here). */
  readonly env?: Readonly<Record<string, string>>;
  /** Run as this uid (and gid): a test of what a non-root user gets. */
  readonly uid?: number;
}

/** Debian's tools first: a pyenv python3 on PATH lacks the nbd module nbdsh needs. */
export const TOOL_PATH = `/usr/bin:/usr/sbin:/sbin:/bin:${process.env.PATH ?? ''}`;

/**
 * Runs a third-party command to completion (SIGKILL after timeoutMs). A missing command
 * fails with a message naming the Debian package that has it.
 */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  const child = spawn(command, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, PATH: TOOL_PATH, ...options.env },
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.uid }),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const done = new Promise<CommandResult>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === 'ENOENT'
          ? new Error(
              `${command} is not installed (Debian: apt-get install -y ${options.package ?? command}; scripts/test.sh installs it)`,
            )
          : err,
      );
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  child.stdin.end(options.input);
  return done;
}

/** runCommand, then fails (with its output) unless it exited 0. */
export async function mustRun(
  command: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  const result = await runCommand(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} exited ${result.code ?? result.signal}:\n${result.stdout}\n${result.stderr}`,
    );
  }
  return result;
}
