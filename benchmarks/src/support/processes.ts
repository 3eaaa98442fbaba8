/**
 * The benchmarks' child processes: start one (a `shale` daemon, the edge-memory script,
 * etcd, nbdkit), wait until it serves, read its CPU time, and stop it (SIGTERM, then
 * SIGKILL 30 s later). Every process started here is tracked so that the benchmark
 * stops all of them on any exit path, including its own SIGINT/SIGTERM.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long a process gets between SIGTERM and SIGKILL. */
export const STOP_GRACE_MS = 30_000;
/** How long a daemon gets to start serving. */
const START_TIMEOUT_MS = 60_000;

export interface Daemon {
  /** A short name for logs and results ("asd3", "edge", "nbdkit"). */
  readonly label: string;
  readonly child: ChildProcess;
  readonly port: number;
  /** The last stderr bytes, for a failure message. */
  stderrTail(): string;
  stop(): Promise<void>;
}

/** Labels of processes that were still up STOP_GRACE_MS after SIGTERM (a finding). */
export const sigkilled: string[] = [];
const running = new Set<Daemon>();

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
async function waitForPort(port: number, what: string, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`${what} exited before it listened on port ${port}`);
    if (Date.now() > deadline) throw new Error(`${what} did not listen on port ${port}`);
    await sleep(50);
  }
}

/** SIGTERM, then SIGKILL after STOP_GRACE_MS; resolves when the process has exited. */
function stopper(label: string, child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      say(`${label} (pid ${child.pid}) still up ${STOP_GRACE_MS / 1000} s after SIGTERM: SIGKILL`);
      sigkilled.push(label);
      child.kill('SIGKILL');
    }, STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };
}

/** Keeps the last 64 KiB of a child's stderr in memory and all of it in a log file. */
function captureStderr(child: ChildProcess, logFile: string): () => string {
  let tail = Buffer.alloc(0);
  const file = createWriteStream(logFile);
  child.stderr?.on('data', (chunk: Buffer) => {
    tail = Buffer.concat([tail, chunk]);
    if (tail.length > 64 * 1024) tail = tail.subarray(tail.length - 64 * 1024);
    file.write(chunk);
  });
  child.once('exit', () => file.end());
  return () => tail.toString('utf8');
}

function track(label: string, child: ChildProcess, port: number, tail: () => string): Daemon {
  const stop = stopper(label, child);
  const daemon: Daemon = {
    label,
    child,
    port,
    stderrTail: tail,
    stop: async () => {
      await stop();
      running.delete(daemon);
    },
  };
  running.add(daemon);
  return daemon;
}

/**
 * Starts a process that prints {"event":"listening","port":N} on stdout when it serves
 * (every `shale ... serve` and the edge-memory script).
 */
export async function startListening(
  label: string,
  command: string,
  argv: readonly string[],
  logFile: string,
): Promise<Daemon> {
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const tail = captureStderr(child, logFile);
  // Tracked before it listens, so a failed start is still stopped.
  const pending = track(label, child, 0, tail);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
      lines.on('line', (line) => {
        if (!line.startsWith('{')) return;
        const parsed = JSON.parse(line) as { event?: string; port?: number };
        if (parsed.event === 'listening') resolve(Number(parsed.port));
      });
      child.once('error', reject);
      child.once('exit', (code, signal) =>
        reject(new Error(`${label} exited (${code ?? signal}) before listening: ${tail()}`)),
      );
      setTimeout(
        () => reject(new Error(`${label} did not listen within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      ).unref();
    });
    running.delete(pending);
    return track(label, child, port, tail);
  } catch (err) {
    await pending.stop();
    throw err;
  }
}

/** Starts a process that listens on a port we chose (etcd, nbdkit). */
export async function startOnPort(
  label: string,
  command: string,
  argv: readonly string[],
  port: number,
  logFile: string,
): Promise<Daemon> {
  const child = spawn(command, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  const tail = captureStderr(child, logFile);
  const daemon = track(label, child, port, tail);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  try {
    await waitForPort(
      port,
      label,
      () => spawnError === undefined && child.exitCode === null && child.signalCode === null,
    );
  } catch (err) {
    await daemon.stop();
    throw new Error(`${(err as Error).message}: ${spawnError?.message ?? tail()}`);
  }
  return daemon;
}

/** The daemons running now, oldest first (for a failure report). */
export function runningDaemons(): Daemon[] {
  return [...running];
}

/** Clients (fio) running now: stopped by stopAll too. */
const clients = new Set<ChildProcess>();

/** Tracks a client process until it exits, so that stopAll stops it too. */
export function trackClient(child: ChildProcess): void {
  clients.add(child);
  child.once('exit', () => clients.delete(child));
}

/** Stops every client and every daemon still running, newest first. */
export async function stopAll(): Promise<void> {
  await Promise.all([...clients].map((child, i) => stopper(`client ${i}`, child)()));
  for (const daemon of [...running].reverse()) await daemon.stop();
}

let ticksPerSecond: number | undefined;

/** User + system CPU time of a running process so far, in µs (from /proc/PID/stat). */
export async function cpuUs(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of proc(5); 12 and 13 after the name and state.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks / ticksPerSecond) * 1e6;
}

/** A one-member etcd on 127.0.0.1 (data in dataDir), tracked like every daemon. */
export async function startEtcd(dataDir: string, logFile: string): Promise<Daemon> {
  const port = await freePort();
  const peerPort = await freePort();
  return startOnPort(
    'etcd',
    '/usr/bin/etcd',
    [
      '--name',
      'bench',
      '--data-dir',
      dataDir,
      '--listen-client-urls',
      `http://127.0.0.1:${port}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${port}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peerPort}`,
      '--initial-cluster',
      `bench=http://127.0.0.1:${peerPort}`,
      '--logger',
      'zap',
      '--log-level',
      'warn',
    ],
    port,
    logFile,
  );
}
