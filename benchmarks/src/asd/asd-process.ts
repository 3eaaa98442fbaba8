import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { ASD_START_TIMEOUT_MS, ASD_STOP_TIMEOUT_MS } from './constants.js';

/** A real `shale asd serve` child process, the way a node runs it. */
export interface AsdProcess {
  readonly address: string;
  readonly pid: number;
  /** SIGTERM, then waits for a clean exit (the ASD finishes calls and closes its index). */
  stop(): Promise<number | null>;
}

export interface StartAsdOptions {
  readonly repoRoot: string;
  readonly dir: string;
  /** The ASD's stderr goes here. */
  readonly logPath: string;
  /** When set, the ASD runs with `node --cpu-prof` and writes its profile into this directory. */
  readonly cpuProfileDir?: string | undefined;
}

export async function startAsd(options: StartAsdOptions): Promise<AsdProcess> {
  const serveArgs = ['asd', 'serve', '--dir', options.dir, '--port', '0', '--node-id', 'bench'];
  // bin/shale is the normal way in. Node refuses --cpu-prof in NODE_OPTIONS, so a profiled
  // ASD runs the same entry point directly, with the thread pool bin/shale would give it.
  const child =
    options.cpuProfileDir === undefined
      ? spawn(path.join(options.repoRoot, 'bin', 'shale'), serveArgs, {
          stdio: ['ignore', 'pipe', 'pipe'],
        })
      : spawn(
          process.execPath,
          [
            '--cpu-prof',
            `--cpu-prof-dir=${options.cpuProfileDir}`,
            path.join(options.repoRoot, 'packages', 'cli', 'dist', 'main.js'),
            ...serveArgs,
          ],
          {
            env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
  const log = createWriteStream(options.logPath);
  child.stderr?.pipe(log);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
  });
  const port = await waitForListening(child, exited, options.logPath);
  const pid = child.pid;
  if (pid === undefined) throw new Error('the ASD child has no pid');
  return {
    address: `127.0.0.1:${port}`,
    pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), ASD_STOP_TIMEOUT_MS);
      const code = await exited;
      clearTimeout(timer);
      log.end();
      return code;
    },
  };
}

/** Resolves with the port from the ASD's one JSON line `{"event":"listening",...}` on stdout. */
function waitForListening(
  child: ChildProcess,
  exited: Promise<number | null>,
  logPath: string,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the ASD did not start within ${ASD_START_TIMEOUT_MS} ms; see ${logPath}`));
    }, ASD_START_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('utf8');
      for (;;) {
        const newline = buffered.indexOf('\n');
        if (newline < 0) return;
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const port = listeningPort(line);
        if (port !== undefined) {
          clearTimeout(timer);
          child.stdout?.off('data', onData);
          child.stdout?.resume();
          resolve(port);
          return;
        }
      }
    };
    child.stdout?.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the ASD exited with code ${code} before listening; see ${logPath}`));
    });
  });
}

function listeningPort(line: string): number | undefined {
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { event, port } = parsed as { event?: unknown; port?: unknown };
    return event === 'listening' && typeof port === 'number' ? port : undefined;
  } catch {
    return undefined;
  }
}
