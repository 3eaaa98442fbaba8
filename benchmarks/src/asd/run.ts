/**
 * The ASD benchmark: put and get throughput of 1 MiB and 64 KiB objects, and 4 KiB
 * ranged-get IOPS and latency at queue depth 1 and 32, each case beside fio on the same
 * file system in the same run. Prints what it expects, then each result, then a markdown
 * table; writes the results as JSON. Never asserts: a slow number is a finding, not a failure.
 *
 *   node benchmarks/dist/asd/run.js [--quick] [--scratch DIR] [--out FILE] [--keep]
 *                                   [--profile-asd DIR]
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AsdClient } from '@shale/asd';
import { type AsdProcess, startAsd } from './asd-process.js';
import {
  type Bound,
  measureGets,
  measurePuts,
  measureRangedGets,
  objectKey,
  ValuePool,
  writeObjects,
} from './asd-workloads.js';
import {
  CASE_DURATION_MS,
  DEFAULT_SCRATCH_PARENT,
  KIB,
  LARGE_OBJECT_BYTES,
  MAX_PUT_BYTES_PER_CASE,
  MIB,
  QUICK_CASE_DURATION_MS,
  QUICK_WARMUP_MS,
  RANGED_QUEUE_DEPTHS,
  RANGED_SLICE_BYTES,
  READ_SET_OBJECT_COUNT,
  SMALL_OBJECT_BYTES,
  THROUGHPUT_QUEUE_DEPTH,
  VALUE_POOL_BYTES,
  WARMUP_MS,
} from './constants.js';
import { CpuMeter, type CpuUsage } from './cpu-meter.js';
import { EXPECTED, expectationOf } from './expected.js';
import {
  describeFioCommand,
  type FioJob,
  fioVersion,
  joinFileNames,
  readSetFileNames,
  runFio,
} from './fio.js';
import type { CaseMeasurement } from './latency-recorder.js';
import { type CaseResult, makeCaseResult, markdownTable, writeResults } from './report.js';

const TMPFS_MAGIC = 0x01021994;
const FS_TYPES: Record<number, string> = {
  61267: 'ext4',
  1481003842: 'xfs',
  2435016766: 'btrfs',
  [TMPFS_MAGIC]: 'tmpfs',
  2035054128: 'overlayfs',
};

interface Options {
  readonly quick: boolean;
  readonly scratchParent: string;
  readonly outPath: string;
  readonly keep: boolean;
  readonly profileDir: string | undefined;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      scratch: { type: 'string', default: DEFAULT_SCRATCH_PARENT },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'profile-asd': { type: 'string' },
    },
  });
  const date = new Date().toISOString().slice(0, 10);
  const quick = values.quick === true;
  return {
    quick,
    scratchParent: path.resolve(values.scratch ?? DEFAULT_SCRATCH_PARENT),
    outPath: path.resolve(
      values.out ??
        path.join(repoRoot, 'benchmarks', 'results', `asd-${date}${quick ? '-quick' : ''}.json`),
    ),
    keep: values.keep === true,
    profileDir:
      values['profile-asd'] === undefined ? undefined : path.resolve(values['profile-asd']),
  };
}

function git(args: string[]): string {
  return execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8' }).trim();
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

interface Measured {
  readonly measurement: CaseMeasurement;
  readonly cpu: CpuUsage;
}

function describeMeasurement(who: string, measurement: CaseMeasurement, cpu: CpuUsage): string {
  const latency =
    measurement.latencyUsP50 === null
      ? ''
      : `, latency p50 ${measurement.latencyUsP50} us p99 ${measurement.latencyUsP99} us`;
  const perOp =
    cpu.cpuUsPerOp === null
      ? ''
      : cpu.clientCpuUsPerOp === null
        ? `, CPU/op ${cpu.cpuUsPerOp} us`
        : `, CPU/op ${cpu.cpuUsPerOp} us (client ${cpu.clientCpuUsPerOp} + ASD ${cpu.asdCpuUsPerOp})`;
  const load = `, other load ${cpu.otherCpuPercent ?? '?'}% of the host`;
  return `  ${who.padEnd(5)} ${measurement.throughputMiBps} MiB/s, ${measurement.opsPerSec} ops/s (${measurement.ops} ops in ${Math.round(measurement.durationMs)} ms)${latency}${perOp}${load}`;
}

async function main(): Promise<void> {
  const options = parseOptions();
  const startedAtIso = new Date().toISOString();
  const loadAvg1mAtStart = os.loadavg()[0] ?? 0;
  if (!existsSync(path.join(repoRoot, 'packages', 'cli', 'dist', 'main.js'))) {
    throw new Error('shale is not built: run `bash scripts/setup.sh` (or `pnpm run build`) first');
  }
  const fio = await fioVersion();
  const gitCommit = git(['rev-parse', 'HEAD']);
  const gitDirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';

  await mkdir(options.scratchParent, { recursive: true });
  const scratch = await mkdtemp(path.join(options.scratchParent, 'shale-bench-asd-'));
  const fsInfo = await statfs(scratch);
  const fsType = FS_TYPES[fsInfo.type] ?? `0x${fsInfo.type.toString(16)}`;
  if (fsInfo.type === TMPFS_MAGIC) {
    await rm(scratch, { recursive: true, force: true });
    throw new Error(
      `${options.scratchParent} is tmpfs: fsync is free there; pass --scratch on a disk`,
    );
  }
  const asdDir = path.join(scratch, 'asd');
  const fioDir = path.join(scratch, 'fio');
  const readSetDir = path.join(fioDir, 'read-set');
  await mkdir(readSetDir, { recursive: true });
  if (options.profileDir !== undefined) await mkdir(options.profileDir, { recursive: true });

  const durationMs = options.quick ? QUICK_CASE_DURATION_MS : CASE_DURATION_MS;
  const warmupMs = options.quick ? QUICK_WARMUP_MS : WARMUP_MS;
  const bound: Bound = { durationMs };
  const runtimeS = Math.ceil(durationMs / 1000);

  say(
    `ASD benchmark: commit ${gitCommit.slice(0, 12)}${gitDirty ? ' (dirty)' : ''}, node ${process.version}, ${fio}`,
  );
  say(
    `host: ${os.cpus().length} CPUs, ${Math.round(os.totalmem() / MIB)} MiB RAM, load ${loadAvg1mAtStart.toFixed(2)}`,
  );
  say(
    `scratch: ${scratch} (${fsType}); ${durationMs} ms per case; throughput QD ${THROUGHPUT_QUEUE_DEPTH}`,
  );
  say('expected (written before measuring):');
  for (const [name, expectation] of Object.entries(EXPECTED)) {
    say(
      `  ${name}: Shale ${expectation.shale}, fio ${expectation.fio} ${expectation.metric} -- ${expectation.why}`,
    );
  }

  const asd: AsdProcess = await startAsd({
    repoRoot,
    dir: asdDir,
    logPath: path.join(scratch, 'asd.log'),
    cpuProfileDir: options.profileDir,
  });
  const client = new AsdClient(asd.address, { deadlineMs: 60_000 });
  say(`ASD pid ${asd.pid} on ${asd.address}`);
  const pool = new ValuePool(VALUE_POOL_BYTES);
  const cases: CaseResult[] = [];

  const record = (init: {
    name: string;
    description: string;
    objectSizeBytes: number;
    queueDepth: number;
    shale: Measured;
    fio: Measured;
    fioJob: FioJob;
    fioDirectory: string;
  }): void => {
    const result = makeCaseResult({
      ...init,
      shale: init.shale.measurement,
      shaleCpu: init.shale.cpu,
      fio: init.fio.measurement,
      fioCpu: init.fio.cpu,
      expectation: expectationOf(init.name),
      fioCommand: describeFioCommand(init.fioJob, init.fioDirectory, scratch),
    });
    cases.push(result);
    say(
      `  ratio Shale/fio ${result.shaleToFioRatio} (${result.metric}; expected ${result.expected.shaleToFioRatio})`,
    );
  };
  const fioOut = (name: string): string => path.join(scratch, `fio-${name}.json`);
  const shaleCase = async (work: () => Promise<CaseMeasurement>): Promise<Measured> => {
    const meter = new CpuMeter(asd.pid);
    meter.begin();
    const measurement = await work();
    const measured = { measurement, cpu: meter.end(measurement.ops) };
    say(describeMeasurement('Shale', measurement, measured.cpu));
    return measured;
  };
  const fioCase = async (job: FioJob, directory: string): Promise<Measured> => {
    const meter = new CpuMeter(undefined);
    meter.begin();
    const run = await runFio(job, directory, fioOut(job.name));
    const measured = {
      measurement: run.measurement,
      cpu: meter.end(run.measurement.ops, run.cpuUs),
    };
    say(describeMeasurement('fio', measured.measurement, measured.cpu));
    return measured;
  };

  try {
    // ---- Puts: one object per call, QD 16, against fio writers with the same durability.
    const putCases = [
      {
        name: 'put-1MiB',
        description: 'put 1 MiB',
        objectBytes: LARGE_OBJECT_BYTES,
        // A new file per object, fsynced before the next one starts: what the ASD does.
        fioJob: {
          name: 'put-1MiB',
          direction: 'write',
          args: [
            '--rw=write',
            '--bs=1m',
            '--filesize=1m',
            `--nrfiles=${MAX_PUT_BYTES_PER_CASE / LARGE_OBJECT_BYTES / THROUGHPUT_QUEUE_DEPTH}`,
            '--create_on_open=1',
            '--openfiles=1',
            '--file_service_type=sequential',
            '--fsync_on_close=1',
            '--fallocate=none',
            `--numjobs=${THROUGHPUT_QUEUE_DEPTH}`,
            `--runtime=${runtimeS}`,
          ],
        },
      },
      {
        name: 'put-64KiB',
        description: 'put 64 KiB',
        objectBytes: SMALL_OBJECT_BYTES,
        // Appends to a log, each fdatasynced before the next: what LevelDB's WAL does.
        fioJob: {
          name: 'put-64KiB',
          direction: 'write',
          args: [
            '--rw=write',
            '--bs=64k',
            `--size=${MAX_PUT_BYTES_PER_CASE / THROUGHPUT_QUEUE_DEPTH / MIB}m`,
            '--fdatasync=1',
            '--fallocate=none',
            `--numjobs=${THROUGHPUT_QUEUE_DEPTH}`,
            `--runtime=${runtimeS}`,
          ],
        },
      },
    ] as const;
    const smallKeys: Buffer[] = [];
    for (const putCase of putCases) {
      say(`\n${putCase.name}: ${EXPECTED[putCase.name]?.why ?? ''}`);
      let objectCount = 0;
      const shale = await shaleCase(async () => {
        const put = await measurePuts(client, {
          prefix: putCase.name,
          objectBytes: putCase.objectBytes,
          depth: THROUGHPUT_QUEUE_DEPTH,
          bound: { durationMs, maxBytes: MAX_PUT_BYTES_PER_CASE },
          pool,
        });
        objectCount = put.objectCount;
        return put.measurement;
      });
      if (putCase.objectBytes === SMALL_OBJECT_BYTES) {
        // The 64 KiB get case reads the last 256 MiB of these (the newest, like fio's set).
        const first = Math.max(0, objectCount - (256 * MIB) / SMALL_OBJECT_BYTES);
        for (let seq = first; seq < objectCount; seq += 1)
          smallKeys.push(objectKey(putCase.name, seq));
      }
      const fio = await fioCase(putCase.fioJob, fioDir);
      record({
        name: putCase.name,
        description: putCase.description,
        objectSizeBytes: putCase.objectBytes,
        queueDepth: THROUGHPUT_QUEUE_DEPTH,
        shale,
        fio,
        fioJob: putCase.fioJob,
        fioDirectory: fioDir,
      });
    }
    // The put cases' files are not read again; free the space before the read cases.
    await rm(path.join(fioDir), { recursive: true, force: true });
    await mkdir(readSetDir, { recursive: true });

    // ---- The read set: 256 x 1 MiB in the ASD and as 256 files for fio, written untimed.
    say(`\nwriting the read set: ${READ_SET_OBJECT_COUNT} x 1 MiB in the ASD and for fio`);
    await writeObjects(client, {
      prefix: 'read-set',
      objectBytes: LARGE_OBJECT_BYTES,
      count: READ_SET_OBJECT_COUNT,
      depth: THROUGHPUT_QUEUE_DEPTH,
      pool,
    });
    const readSetKeys = Array.from({ length: READ_SET_OBJECT_COUNT }, (_, seq) =>
      objectKey('read-set', seq),
    );
    const readSetFiles = joinFileNames(readSetFileNames(READ_SET_OBJECT_COUNT));
    const fileArgs = [`--filename=${readSetFiles}`, '--filesize=1m'];
    await runFio(
      {
        name: 'read-set-layout',
        direction: 'write',
        args: [...fileArgs, '--rw=write', '--bs=1m', '--end_fsync=1'],
      },
      readSetDir,
      fioOut('layout'),
    );
    // Both sides read what was just written, from the page cache: invalidate=0 keeps
    // fio from dropping the files' cached pages before it starts.
    const readArgs = (bs: string, numjobs: number): string[] => [
      ...fileArgs,
      '--rw=randread',
      `--bs=${bs}`,
      '--file_service_type=random',
      '--invalidate=0',
      '--norandommap',
      '--randrepeat=0',
      '--time_based',
      `--runtime=${runtimeS}`,
      `--numjobs=${numjobs}`,
    ];

    // ---- Whole-object gets at QD 16.
    const getCases = [
      {
        name: 'get-1MiB',
        description: 'get 1 MiB',
        objectBytes: LARGE_OBJECT_BYTES,
        keys: readSetKeys,
        fioBs: '1m',
      },
      {
        name: 'get-64KiB',
        description: 'get 64 KiB',
        objectBytes: SMALL_OBJECT_BYTES,
        keys: smallKeys,
        fioBs: '64k',
      },
    ] as const;
    for (const getCase of getCases) {
      say(`\n${getCase.name}: ${EXPECTED[getCase.name]?.why ?? ''}`);
      await measureGets(client, {
        keys: getCase.keys,
        depth: THROUGHPUT_QUEUE_DEPTH,
        bound: { durationMs: warmupMs },
      });
      const shale = await shaleCase(() =>
        measureGets(client, { keys: getCase.keys, depth: THROUGHPUT_QUEUE_DEPTH, bound }),
      );
      const fioJob: FioJob = {
        name: getCase.name,
        direction: 'read',
        args: readArgs(getCase.fioBs, THROUGHPUT_QUEUE_DEPTH),
      };
      record({
        name: getCase.name,
        description: getCase.description,
        objectSizeBytes: getCase.objectBytes,
        queueDepth: THROUGHPUT_QUEUE_DEPTH,
        shale,
        fio: await fioCase(fioJob, readSetDir),
        fioJob,
        fioDirectory: readSetDir,
      });
    }

    // ---- 4 KiB ranged gets at QD 1 and 32 over the read set.
    for (const depth of RANGED_QUEUE_DEPTHS) {
      const name = `ranged-4KiB-qd${depth}`;
      say(`\n${name}: ${EXPECTED[name]?.why ?? ''}`);
      const rangedOptions = {
        keys: readSetKeys,
        objectBytes: LARGE_OBJECT_BYTES,
        sliceBytes: RANGED_SLICE_BYTES,
        depth,
      };
      await measureRangedGets(client, { ...rangedOptions, bound: { durationMs: warmupMs } });
      const shale = await shaleCase(() => measureRangedGets(client, { ...rangedOptions, bound }));
      const fioJob: FioJob = {
        name,
        direction: 'read',
        args: readArgs(`${RANGED_SLICE_BYTES / KIB}k`, depth),
      };
      record({
        name,
        description: `4 KiB ranged get`,
        objectSizeBytes: LARGE_OBJECT_BYTES,
        queueDepth: depth,
        shale,
        fio: await fioCase(fioJob, readSetDir),
        fioJob,
        fioDirectory: readSetDir,
      });
    }
  } finally {
    client.close();
    const code = await asd.stop();
    if (code !== 0)
      say(`the ASD exited with code ${code}; its log: ${path.join(scratch, 'asd.log')}`);
    if (!options.keep) await rm(scratch, { recursive: true, force: true });
  }

  const results = {
    benchmark: 'asd' as const,
    startedAtIso,
    finishedAtIso: new Date().toISOString(),
    gitCommit,
    gitDirty,
    nodeVersion: process.version,
    fioVersion: fio,
    quick: options.quick,
    caseDurationMs: durationMs,
    host: {
      cpuCount: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryBytes: os.totalmem(),
      kernel: os.release(),
      loadAvg1mAtStart,
      loadAvg1mAtEnd: os.loadavg()[0] ?? 0,
    },
    scratch: { path: scratch, fsType },
    cases,
  };
  await writeResults(options.outPath, results);
  say(`\nresults: ${options.outPath}\n`);
  say(markdownTable(results));
}

main().catch((err: unknown) => {
  process.stderr.write(
    `asd benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exitCode = 1;
});
