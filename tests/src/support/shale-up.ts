// Starting, finding and stopping `shale up` and its daemons, for the tests that run it.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '@shale/framework-api';
import { SHALE_BIN } from './shale-process.js';

export interface Up {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then wait for the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `shale up` and waits for its "ready" line. */
export async function startUp(
  dataDir: string,
  nbdPort: number,
  apiPort: number,
  extra: readonly string[] = [],
): Promise<Up> {
  const child = spawn(
    SHALE_BIN,
    [
      'up',
      '--data-dir',
      dataDir,
      '--nbd-port',
      String(nbdPort),
      '--api-port',
      String(apiPort),
      // No iSCSI unless a test asks: parallel clusters would race for 3260.
      ...(extra.includes('--iscsi-port') ? [] : ['--iscsi-port', '0']),
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const deadline = Date.now() + 180_000;
  while (!stdout.includes('shale up: ready')) {
    if (child.exitCode !== null) {
      throw new Error(`shale up exited ${child.exitCode}:\n${stdout}\n${stderr}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`shale up not ready in 180 s:\n${stdout}\n${stderr}`);
    }
    await sleep(100);
  }
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** The pids of a data dir's daemons of one kind, from /proc (the CLI children of shale up). */
export async function daemonPids(dataDir: string, verb: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = (await fs.readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ');
    } catch {
      continue; // Gone meanwhile.
    }
    if (cmdline.includes(` ${verb} serve `) && cmdline.includes(dataDir)) pids.push(Number(entry));
  }
  return pids;
}

/** The pids whose parent is `ppid` (from /proc/PID/stat). */
export async function childPids(ppid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command (in parentheses): state, ppid, ...
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) pids.push(Number(entry));
    } catch {
      // The process went away between readdir and readFile: not a child any more.
    }
  }
  return pids;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const DAEMON_VERBS = ['edge', 'api', 'volumedriver', 'maintenance', 'proxy', 'asd', 'kv'];

/**
 * What a lost node leaves: shale up and every daemon of the data dir SIGKILLed at once (no
 * daemon gets to stop cleanly, so nothing is flushed or uploaded on the way out).
 */
export async function killUp(up: Up, dataDir: string): Promise<void> {
  const pids = [up.child.pid as number];
  for (const verb of DAEMON_VERBS) pids.push(...(await daemonPids(dataDir, verb)));
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  const deadline = Date.now() + 30_000;
  while (pids.some(alive)) {
    if (Date.now() > deadline) throw new Error(`still alive after SIGKILL: ${pids.filter(alive)}`);
    await sleep(50);
  }
}

/** A client of the API of the shale up on `dataDir` (its token file). */
export async function upApi(dataDir: string, apiPort: number): Promise<ApiClient> {
  const token = (await fs.readFile(path.join(dataDir, 'api-token'), 'utf8')).trim();
  return new ApiClient({ url: `http://127.0.0.1:${apiPort}`, token, requestTimeoutMs: 120_000 });
}
