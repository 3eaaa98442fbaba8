import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CaseMeasurement } from './latency-recorder.js';
import { round } from './latency-recorder.js';

const execFileAsync = promisify(execFile);

/**
 * The reference system: fio on the same directory's file system, in the same run.
 * Every job runs with psync (one blocking syscall per I/O, like libuv's thread pool under
 * the ASD), buffered (the ASD reads through the page cache), as threads, with one
 * `numjobs` per Shale call in flight, and reports with group_reporting.
 */

export interface FioJob {
  /** Case name: also the fio job name, so the files it writes are recognizable. */
  readonly name: string;
  readonly direction: 'read' | 'write';
  readonly args: readonly string[];
}

export async function fioVersion(): Promise<string> {
  try {
    const { stdout } = await execFileAsync('fio', ['--version']);
    return stdout.trim();
  } catch (err) {
    throw new Error(
      'fio is missing: the ASD benchmark runs fio as its reference (Debian: apt-get install -y fio)',
      { cause: err },
    );
  }
}

/** The command line of a job, as run (for the README and the results file). */
export function fioCommandLine(job: FioJob, directory: string): string[] {
  return [
    'fio',
    `--name=${job.name}`,
    `--directory=${directory}`,
    '--ioengine=psync',
    '--thread',
    '--group_reporting',
    '--lat_percentiles=1',
    ...job.args,
  ];
}

/** A fio run's numbers, and the CPU fio spent (user + kernel, all its threads). */
export interface FioRun {
  readonly measurement: CaseMeasurement;
  readonly cpuUs: number | undefined;
}

export async function runFio(job: FioJob, directory: string, outputPath: string): Promise<FioRun> {
  const [, ...args] = fioCommandLine(job, directory);
  // A shell runs fio and then prints its own /proc stat: cutime + cstime there are the
  // CPU of the child it reaped, fio, which Node cannot ask for directly.
  const { stdout } = await execFileAsync(
    'sh',
    [
      '-c',
      'fio "$@" && cat /proc/$$/stat',
      'sh',
      ...args,
      '--output-format=json',
      `--output=${outputPath}`,
    ],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  return {
    measurement: parseFioOutput(await readFile(outputPath, 'utf8'), job),
    cpuUs: reapedChildCpuUs(stdout),
  };
}

/** cutime + cstime (fields 16 and 17 of /proc/PID/stat), in microseconds. */
function reapedChildCpuUs(stat: string): number | undefined {
  const line = stat.trim().split('\n').at(-1) ?? '';
  const fields = line.slice(line.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[13]) + Number(fields[14]);
  // USER_HZ is 100: a tick is 10 ms.
  return Number.isFinite(ticks) ? ticks * 10_000 : undefined;
}

interface FioLatency {
  readonly mean?: number;
  readonly N?: number;
  readonly percentile?: Record<string, number>;
}

interface FioDirection {
  readonly io_bytes: number;
  readonly bw_bytes: number;
  readonly iops: number;
  readonly runtime: number;
  readonly total_ios: number;
  readonly lat_ns?: FioLatency;
}

/** fio's JSON; only the fields we read. With group_reporting, jobs[0] sums every thread. */
export function parseFioOutput(text: string, job: FioJob): CaseMeasurement {
  // fio may print warnings before the JSON document even with --output.
  const start = text.indexOf('{');
  const parsed: unknown = JSON.parse(text.slice(start));
  const jobs = (parsed as { jobs?: unknown }).jobs;
  if (!Array.isArray(jobs) || jobs.length === 0)
    throw new Error(`fio ${job.name}: no jobs in output`);
  const result = (jobs[0] as Record<string, unknown>)[job.direction] as FioDirection | undefined;
  if (result === undefined || typeof result.iops !== 'number') {
    throw new Error(`fio ${job.name}: no ${job.direction} results`);
  }
  // A write's lat_ns covers the write syscall only, not the fsync that makes it durable,
  // so it is not comparable with a Shale put latency: left out.
  const lat = job.direction === 'read' ? result.lat_ns : undefined;
  const usAt = (key: string): number | null => {
    const ns = lat?.percentile?.[key];
    return ns === undefined ? null : round(ns / 1000, 1);
  };
  return {
    ops: result.total_ios,
    bytes: result.io_bytes,
    durationMs: result.runtime,
    opsPerSec: round(result.iops, 1),
    throughputMiBps: round(result.bw_bytes / (1024 * 1024), 1),
    latencyUsMean: lat?.mean === undefined ? null : round(lat.mean / 1000, 1),
    latencyUsP50: usAt('50.000000'),
    latencyUsP99: usAt('99.000000'),
  };
}

/**
 * The command line as stored in the results: the scratch path as $SCRATCH and a long
 * file list as its first and last name, so the file stays small and comparable across runs.
 */
export function describeFioCommand(job: FioJob, directory: string, scratch: string): string {
  return fioCommandLine(job, directory)
    .map((arg) => {
      const shortened = arg.replaceAll(scratch, '$SCRATCH');
      if (!shortened.startsWith('--filename=')) return shortened;
      const names = shortened.slice('--filename='.length).split(':');
      return names.length <= 2 ? shortened : `--filename=${names[0]}:...:${names.at(-1)}`;
    })
    .join(' ');
}

/** Names of the read-set files, relative to their directory: o000 .. o255. */
export function readSetFileNames(count: number): string[] {
  return Array.from({ length: count }, (_, index) => `o${index.toString().padStart(3, '0')}`);
}

export function joinFileNames(names: readonly string[]): string {
  // fio separates file names with ':'; ours never contain one.
  return names.map((name) => path.basename(name)).join(':');
}
