import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The repository root, from tests/dist/support/. */
export const REPO_ROOT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
);
export const SHALE_BIN = path.join(REPO_ROOT, 'bin', 'shale');

export interface ShaleProcess {
  readonly child: ChildProcess;
  /** The daemon's "listening" line, parsed. */
  readonly ready: Record<string, unknown>;
  readonly port: number;
  stderr(): string;
  /** SIGTERM and wait for the exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for the exit. */
  kill9(): Promise<void>;
}

/**
 * Starts `shale <args>` as a child and waits for its {"event":"listening"} line on stdout.
 * Rejects with the child's stderr if it exits first or takes longer than timeoutMs.
 */
export async function startShale(
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<ShaleProcess> {
  const child = spawn(SHALE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `shale ${args.join(' ')} did not become ready in ${timeoutMs} ms; stderr:\n${stderr}`,
        ),
      );
    }, timeoutMs);
    const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => {
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        if (parsed.event === 'listening') {
          clearTimeout(timer);
          resolve(parsed);
        }
      } catch {
        // Not JSON: a human line; only the listening event matters here.
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(
        new Error(
          `shale ${args.join(' ')} exited with ${code} before it was ready; stderr:\n${stderr}`,
        ),
      );
    });
  });
  return {
    child,
    ready,
    port: Number(ready.port),
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Runs `shale <args>` to completion. */
export async function runShale(
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(SHALE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) =>
    child.once('exit', (exitCode) => resolve(exitCode)),
  );
  clearTimeout(timer);
  return { code, stdout, stderr };
}
