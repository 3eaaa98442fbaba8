/**
 * What the whole-cluster benchmarks (map/fs-fio, iscsi/qemu-img-bench) share: a `shale up`
 * in its own process group, the CLI against it, the wait until a vDisk has no data at risk
 * (no upload under a measured job), and the machine's busy CPU time.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = path.join(REPO, 'packages', 'cli', 'dist', 'main.js');
export const TOOL_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}`;
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 120_000;
const DRAIN_TIMEOUT_MS = 300_000;

/** Runs a command to completion; its stdout, or throws with its stderr. */
export function must(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): string {
  return execFileSync(command, args, {
    env: { ...process.env, PATH: TOOL_PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  }).toString();
}

/** Busy time of every core so far (user..steal, without idle and iowait), µs. */
export async function machineBusyUs(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const busy = ticks.reduce((a, b) => a + b, 0) - (ticks[3] ?? 0) - (ticks[4] ?? 0);
  const perSecond = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  return (busy / perSecond) * 1e6;
}

export interface ShaleUp {
  /** The shale CLI against this cluster; its stdout. */
  cli(args: readonly string[]): string;
  /** Milliseconds until none of `vdisks` has data at risk (their writes are in the backend). */
  drained(vdisks: readonly string[]): Promise<number>;
  /** SIGTERM, then SIGKILL to the whole group if it is not gone in 2 minutes. */
  stop(): Promise<void>;
}

/** Starts `shale up --data-dir DATA ...args` and waits until it is ready. */
export async function startShaleUp(
  dataDir: string,
  args: readonly string[],
  env: Readonly<Record<string, string>> = {},
): Promise<ShaleUp> {
  const up = spawn(process.execPath, [CLI, 'up', '--data-dir', dataDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, PATH: TOOL_PATH },
  });
  let output = '';
  up.stdout.setEncoding('utf8').on('data', (c: string) => {
    output += c;
  });
  up.stderr.setEncoding('utf8').on('data', (c: string) => {
    output += c;
  });
  const cliEnv = { SHALE_DATA_DIR: dataDir, ...env };
  const cli = (cliArgs: readonly string[]) => must(process.execPath, [CLI, ...cliArgs], cliEnv);
  const stop = async (): Promise<void> => {
    const exited = new Promise((resolve) => up.once('exit', resolve));
    if (up.exitCode === null) up.kill('SIGTERM');
    await Promise.race([exited, sleep(STOP_TIMEOUT_MS)]);
    try {
      process.kill(-(up.pid as number), 'SIGKILL');
    } catch {
      // Every daemon has exited: the usual case.
    }
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!output.includes('shale up: ready')) {
    if (up.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`shale up did not become ready:\n${output}`);
    }
    await sleep(100);
  }
  const drained = async (vdisks: readonly string[]): Promise<number> => {
    const start = Date.now();
    for (;;) {
      let atRisk = 0;
      for (const name of vdisks) {
        const shown = JSON.parse(cli(['vdisk', 'show', name, '--json'])) as {
          stats?: { dataAtRiskBytes?: number };
        };
        atRisk += shown.stats?.dataAtRiskBytes ?? 0;
      }
      if (atRisk === 0) return Date.now() - start;
      if (Date.now() - start > DRAIN_TIMEOUT_MS)
        throw new Error('uploads did not drain in 5 minutes');
      await sleep(500);
    }
  };
  return { cli, drained, stop };
}
