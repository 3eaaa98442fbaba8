/**
 * One fio job through fio's nbd engine (libnbd) against an NBD URI, its JSON output
 * checked for errors and reduced to the numbers the benchmark reports. A job that errors,
 * moves no bytes, or does not finish in time fails loudly (an Error naming the job and
 * what fio said); a fio still running at its deadline gets SIGTERM, then SIGKILL.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { STOP_GRACE_MS, trackClient } from '../support/processes.js';

const MIB = 1024 * 1024;

export interface FioJob {
  /** The result key, units in the name ("randWrite4KiBQd32"). */
  readonly key: string;
  readonly rw: 'read' | 'write' | 'randread' | 'randwrite';
  readonly blockBytes: number;
  readonly queueDepth: number;
  /** Seconds of a time-based job; undefined: one pass over the region. */
  readonly runtimeSeconds?: number;
  /** Extra fio arguments (the verify job's). */
  readonly extra?: readonly string[];
  /** Region size for this job, when not the benchmark's whole region. */
  readonly sizeBytes?: number;
}

export interface FioMeasured {
  readonly ops: number;
  readonly runtimeMs: number;
  readonly iops: number;
  readonly throughputMiBps: number;
  readonly clatUsP50: number;
  readonly clatUsP99: number;
  readonly clatUsMean: number;
  /** fio's own CPU (user + system) per I/O: the client's share. */
  readonly fioCpuUsPerOp: number;
}

interface FioDirection {
  readonly io_bytes: number;
  readonly bw_bytes: number;
  readonly iops: number;
  readonly total_ios: number;
  readonly runtime: number;
  readonly clat_ns?: { mean?: number; percentile?: Record<string, number> };
}

interface FioJobJson {
  readonly jobname: string;
  readonly error: number;
  readonly job_runtime: number;
  readonly usr_cpu: number;
  readonly sys_cpu: number;
  readonly read: FioDirection;
  readonly write: FioDirection;
  readonly verify_errors?: number;
}

export function uriOf(port: number, exportName: string): string {
  return `nbd://127.0.0.1:${port}/${exportName}`;
}

/** Runs fio, kills it at `deadlineMs` (SIGTERM, then SIGKILL), rejects on a non-zero exit. */
async function runFio(argv: readonly string[], deadlineMs: number, label: string): Promise<string> {
  const child = spawn('fio', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  trackClient(child);
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  const termTimer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  }, deadlineMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(
    (resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c, s) => resolve([c, s]));
    },
  );
  clearTimeout(termTimer);
  if (killTimer !== undefined) clearTimeout(killTimer);
  if (timedOut) {
    throw new Error(
      `fio ${label} did not finish within ${deadlineMs / 1000} s (the server stopped answering?); stopped with SIGTERM${signal === 'SIGKILL' ? ' and SIGKILL' : ''}. fio stderr: ${stderr.trim()}`,
    );
  }
  if (code !== 0) {
    throw new Error(
      `fio ${label} exited ${code ?? signal}: ${stderr.trim()} ${stdout.trim()}`.trim(),
    );
  }
  return stderr;
}

/**
 * Runs one job against `uri` over the first regionBytes of the export and returns what it
 * measured; throws when fio reports an error, a verify error, or moved no bytes.
 */
export function fioNbd(
  uri: string,
  job: FioJob,
  regionBytes: number,
  outFile: string,
): Promise<FioMeasured> {
  return fioMeasure(['--ioengine=nbd', `--uri=${uri}`], uri, job, regionBytes, outFile);
}

/**
 * The same job on a file through the kernel: libaio with O_DIRECT (fio's usual way to
 * test a block device or a file system), on `filename`, the file laid out by fio.
 */
export function fioFile(
  filename: string,
  job: FioJob,
  regionBytes: number,
  outFile: string,
): Promise<FioMeasured> {
  return fioMeasure(
    ['--ioengine=libaio', '--direct=1', `--filename=${filename}`],
    filename,
    job,
    regionBytes,
    outFile,
  );
}

async function fioMeasure(
  target: readonly string[],
  where: string,
  job: FioJob,
  regionBytes: number,
  outFile: string,
): Promise<FioMeasured> {
  const sizeBytes = job.sizeBytes ?? regionBytes;
  const argv = [
    `--name=${job.key}`,
    ...target,
    `--rw=${job.rw}`,
    `--bs=${job.blockBytes}`,
    `--iodepth=${job.queueDepth}`,
    `--size=${sizeBytes}`,
    '--numjobs=1',
    '--randrepeat=0',
    ...(job.extra ?? ['--norandommap']),
    ...(job.runtimeSeconds === undefined
      ? []
      : ['--time_based', `--runtime=${job.runtimeSeconds}`]),
    '--output-format=json',
    `--output=${outFile}`,
  ];
  // A time-based job gets its runtime plus a minute; a pass over the region 5 minutes.
  const deadlineMs = job.runtimeSeconds === undefined ? 300_000 : (job.runtimeSeconds + 60) * 1000;
  const stderr = await runFio(argv, deadlineMs, job.key);
  const text = await readFile(outFile, 'utf8');
  const start = text.indexOf('{');
  if (start < 0) throw new Error(`fio ${job.key} wrote no JSON: ${text} ${stderr}`);
  const parsed = JSON.parse(text.slice(start)) as { jobs?: FioJobJson[] };
  const j = parsed.jobs?.[0];
  if (j === undefined) throw new Error(`fio ${job.key}: no job in its JSON output`);
  const reads = job.rw === 'read' || job.rw === 'randread';
  const d = reads ? j.read : j.write;
  const verifyErrors = j.verify_errors ?? 0;
  if (j.error !== 0 || verifyErrors > 0 || d.io_bytes === 0) {
    throw new Error(
      `fio ${job.key} against ${where}: error=${j.error} verify_errors=${verifyErrors} io_bytes=${d.io_bytes}; fio stderr: ${stderr.trim()}`,
    );
  }
  const p = d.clat_ns?.percentile ?? {};
  const ops = d.total_ios;
  // fio's CPU percentages are of the job's runtime.
  const fioCpuUs = ((j.usr_cpu + j.sys_cpu) / 100) * j.job_runtime * 1000;
  return {
    ops,
    runtimeMs: d.runtime,
    iops: Math.round(d.iops),
    throughputMiBps: Math.round((d.bw_bytes / MIB) * 10) / 10,
    clatUsP50: Math.round((p['50.000000'] ?? 0) / 1000),
    clatUsP99: Math.round((p['99.000000'] ?? 0) / 1000),
    clatUsMean: Math.round((d.clat_ns?.mean ?? 0) / 1000),
    fioCpuUsPerOp: ops > 0 ? Math.round(fioCpuUs / ops) : 0,
  };
}
