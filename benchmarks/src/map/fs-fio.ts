/**
 * The mapped-vDisk benchmark (issue 17): fio (libaio, O_DIRECT) on a file inside ext4 on a
 * vDisk that `shale vdisk map` attached (nbdfuse + a loop device with direct I/O, NBD to
 * the volumedriver of a `shale up`, 6 ASDs), against the same jobs on ext4 on a loop device
 * (direct I/O) over a plain file in the same directory: what a Docker volume or a mapped
 * vDisk costs next to a local file system on this disk.
 *
 *   node benchmarks/dist/map/fs-fio.js [--quick] [--scratch DIR]      (as root)
 *
 * The reference runs first, with no Shale process running; then shale up starts, the
 * vDisk is made, mapped and formatted the same way, and the same jobs run. Jobs, in order,
 * on one file of FILE_BYTES: a 1 MiB sequential write (lays the file out), 4 KiB random
 * writes at QD32, 4 KiB random reads at QD32 (time-based), a 1 MiB sequential read.
 * CPU per I/O: the whole machine's busy time (/proc/stat: the kernel's loop, FUSE and
 * file-system work has no process to charge), and for Shale its own processes (every
 * shale up daemon and nbdfuse). Measures, never asserts: only an error fails the run.
 * Writes benchmarks/results/map-fs-<date>[-quick].json and prints the table.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type FioJob, type FioMeasured, fioFile } from '../nbd/fio-job.js';
import { cpuUs, freePort } from '../support/processes.js';
import { machineBusyUs, must, REPO, startShaleUp } from '../support/shale-up.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

const quick = process.argv.includes('--quick');
const scratchArg = process.argv.indexOf('--scratch');
/** The fio file inside each file system, and the device under it (thin on both sides). */
const FILE_BYTES = quick ? 256 * MIB : 2 * GIB;
const DEVICE_BYTES = quick ? 1 * GIB : 4 * GIB;
const RUNTIME_SECONDS = quick ? 5 : 30;
const VDISK = 'fsbench';
/** mkfs the same way on both: every inode table and the journal written up front. */
const MKFS = ['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0'];

const JOBS: readonly FioJob[] = [
  { key: 'seqWrite1MiBQd8', rw: 'write', blockBytes: MIB, queueDepth: 8, extra: ['--end_fsync=1'] },
  {
    key: 'randWrite4KiBQd32',
    rw: 'randwrite',
    blockBytes: 4096,
    queueDepth: 32,
    runtimeSeconds: RUNTIME_SECONDS,
  },
  {
    key: 'randRead4KiBQd32',
    rw: 'randread',
    blockBytes: 4096,
    queueDepth: 32,
    runtimeSeconds: RUNTIME_SECONDS,
  },
  { key: 'seqRead1MiBQd8', rw: 'read', blockBytes: MIB, queueDepth: 8 },
];

interface CaseResult extends FioMeasured {
  /** The whole machine's busy CPU (all cores, /proc/stat) per I/O, µs. */
  readonly machineCpuUsPerOp: number;
  /** Shale's own processes (daemons and nbdfuse) per I/O, µs; absent for the reference. */
  readonly shaleCpuUsPerOp?: number;
  /** The same, split: nbdfuse, the volumedriver (with the NBD server), every other daemon. */
  readonly shaleCpuUsPerOpByProcess?: Record<ShaleRole, number>;
  /** How long the job waited for the vDisk's earlier writes to reach the backend. */
  readonly uploadsDrainedBeforeMs?: number;
}

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** What a Shale process is, for the CPU split: nbdfuse, the volumedriver, or another daemon. */
type ShaleRole = 'nbdfuse' | 'volumedriver' | 'others';

/** Shale's processes of this run: those whose command line mentions one of `markers`. */
async function shaleProcesses(markers: readonly string[]): Promise<Map<number, ShaleRole>> {
  const found = new Map<number, ShaleRole>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => ''))
      .split('\0')
      .join(' ');
    if (!markers.some((marker) => cmdline.includes(marker))) continue;
    const role: ShaleRole = cmdline.includes('nbdfuse')
      ? 'nbdfuse'
      : cmdline.includes(' volumedriver serve ')
        ? 'volumedriver'
        : 'others';
    found.set(Number(entry), role);
  }
  return found;
}

async function cpuOf(
  processes: ReadonlyMap<number, ShaleRole>,
): Promise<Record<ShaleRole, number>> {
  const total: Record<ShaleRole, number> = { nbdfuse: 0, volumedriver: 0, others: 0 };
  for (const [pid, role] of processes) total[role] += await cpuUs(pid).catch(() => 0);
  return total;
}

/** Runs every job on MOUNT/fio.dat; `shaleMarkers` name the processes charged as Shale's. */
async function runJobs(
  label: string,
  mountpoint: string,
  scratch: string,
  shaleMarkers: readonly string[],
  quiesce: () => Promise<number> = async () => 0,
): Promise<Record<string, CaseResult>> {
  const out: Record<string, CaseResult> = {};
  for (const job of JOBS) {
    const waitedMs = await quiesce();
    const pids = await shaleProcesses(shaleMarkers);
    const machine0 = await machineBusyUs();
    const shale0 = await cpuOf(pids);
    const m = await fioFile(
      path.join(mountpoint, 'fio.dat'),
      job,
      FILE_BYTES,
      path.join(scratch, `fio-${label}-${job.key}.json`),
    );
    const machine = (await machineBusyUs()) - machine0;
    const shale1 = await cpuOf(pids);
    const perOp = (role: ShaleRole) => Math.round((shale1[role] - shale0[role]) / m.ops);
    const shale = perOp('nbdfuse') + perOp('volumedriver') + perOp('others');
    out[job.key] = {
      ...m,
      machineCpuUsPerOp: Math.round(machine / m.ops),
      ...(shaleMarkers.length === 0
        ? {}
        : {
            shaleCpuUsPerOp: shale,
            shaleCpuUsPerOpByProcess: {
              nbdfuse: perOp('nbdfuse'),
              volumedriver: perOp('volumedriver'),
              others: perOp('others'),
            },
            uploadsDrainedBeforeMs: waitedMs,
          }),
    };
    const value = job.blockBytes >= MIB ? `${m.throughputMiBps} MiB/s` : `${m.iops} IOPS`;
    say(`  ${label} ${job.key}: ${value}, p50/p99 ${m.clatUsP50}/${m.clatUsP99} µs`);
  }
  return out;
}

async function reference(scratch: string): Promise<Record<string, CaseResult>> {
  const file = path.join(scratch, 'reference.img');
  const mountpoint = path.join(scratch, 'mnt-reference');
  await mkdir(mountpoint, { recursive: true });
  must('truncate', ['-s', String(DEVICE_BYTES), file]);
  const device = must('losetup', ['--find', '--show', '--direct-io=on', file]).trim();
  try {
    must(MKFS[0] as string, [...MKFS.slice(1), device]);
    must('mount', [device, mountpoint]);
    try {
      return await runJobs('reference', mountpoint, scratch, []);
    } finally {
      must('umount', [mountpoint]);
    }
  } finally {
    must('losetup', ['-d', device]);
    await rm(file, { force: true });
  }
}

async function shale(scratch: string): Promise<Record<string, CaseResult>> {
  const dataDir = path.join(scratch, 'shale');
  const mapDir = path.join(scratch, 'mapped');
  const mountpoint = path.join(scratch, 'mnt-shale');
  await mkdir(mountpoint, { recursive: true });
  const nbdPort = await freePort();
  const apiPort = await freePort();
  const up = await startShaleUp(
    dataDir,
    ['--nbd-port', String(nbdPort), '--api-port', String(apiPort), '--iscsi-port', '0'],
    { SHALE_MAP_DIR: mapDir },
  );
  const cli = up.cli;
  let device: string | undefined;
  let mounted = false;
  try {
    cli(['vdisk', 'create', VDISK, '--size', String(DEVICE_BYTES)]);
    device = cli(['vdisk', 'map', VDISK]).trim().split('\n').at(-1)?.trim();
    if (device === undefined || !device.startsWith('/dev/')) {
      throw new Error(`shale vdisk map printed no device: ${device}`);
    }
    must(MKFS[0] as string, [...MKFS.slice(1), device]);
    must('mount', [device, mountpoint]);
    mounted = true;
    // Each job starts once the earlier ones' writes are in the backend: no upload runs
    // under it (they would be charged to the job and slow it down).
    const drained = () => up.drained([VDISK]);
    return await runJobs('shale', mountpoint, scratch, [dataDir, mapDir], drained);
  } finally {
    if (mounted) must('umount', [mountpoint]);
    if (device !== undefined) cli(['vdisk', 'unmap', VDISK]);
    await up.stop();
  }
}

if (process.getuid?.() !== 0) {
  process.stderr.write('map benchmark: run as root (losetup, mount, nbdfuse)\n');
  process.exit(2);
}
const scratch =
  scratchArg >= 0
    ? path.resolve(process.argv[scratchArg + 1] as string)
    : await mkdtemp(path.join(os.tmpdir(), 'shale-map-bench-'));
await mkdir(scratch, { recursive: true });
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO })
  .toString()
  .trim();
say(
  `map benchmark at ${commit}: scratch ${scratch}, file ${FILE_BYTES / MIB} MiB, ${RUNTIME_SECONDS} s jobs`,
);
const results: Record<string, Record<string, CaseResult>> = {};
results.reference = await reference(scratch);
results.shale = await shale(scratch);
const ratios: Record<string, number> = {};
for (const job of JOBS) {
  const s = results.shale[job.key] as CaseResult;
  const r = results.reference[job.key] as CaseResult;
  ratios[job.key] = Math.round((s.throughputMiBps / r.throughputMiBps) * 100) / 100;
}
const out = {
  date: new Date().toISOString(),
  commit,
  host: { cpus: os.cpus().length, kernel: os.release() },
  setup: {
    client: `fio --ioengine=libaio --direct=1 on MOUNT/fio.dat (${FILE_BYTES} bytes); time-based jobs ${RUNTIME_SECONDS} s; 1 MiB jobs one pass`,
    fileSystem: MKFS.join(' '),
    reference: `ext4 on losetup --direct-io=on over a sparse ${DEVICE_BYTES}-byte file in ${scratch}`,
    shale: `ext4 on shale vdisk map (nbdfuse -> loop --direct-io=on) of a ${DEVICE_BYTES}-byte vDisk; shale up (6 ASDs, embedded metadata store, NBD inside the volumedriver) with its data dir in ${scratch}`,
    order:
      'the reference first, with no Shale process running; then shale up and the same jobs, each once the vDisk has no data at risk (no upload runs under a job)',
    cpu: 'machine: /proc/stat busy time of all cores per I/O; shale: utime + stime of every shale up daemon and nbdfuse per I/O',
  },
  results,
  ratios,
};
const resultsDir = path.join(REPO, 'benchmarks', 'results');
await mkdir(resultsDir, { recursive: true });
const outFile = path.join(
  resultsDir,
  `map-fs-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`,
);
await writeFile(outFile, `${JSON.stringify(out, null, 2)}\n`);
const lines = [
  '| case | Shale (mapped vDisk) | p50 / p99 µs | loop over a file | p50 / p99 µs | Shale / loop | machine CPU µs/op Shale / loop | Shale processes µs/op: nbdfuse + volumedriver + others |',
  '|---|---:|---:|---:|---:|---:|---:|---:|',
];
for (const job of JOBS) {
  const s = results.shale[job.key] as CaseResult;
  const r = results.reference[job.key] as CaseResult;
  const v = (m: CaseResult) =>
    job.blockBytes >= MIB ? `${m.throughputMiBps} MiB/s` : `${m.iops} IOPS`;
  lines.push(
    `| ${job.key} | ${v(s)} | ${s.clatUsP50} / ${s.clatUsP99} | ${v(r)} | ${r.clatUsP50} / ${r.clatUsP99} | ${ratios[job.key]} | ${s.machineCpuUsPerOp} / ${r.machineCpuUsPerOp} | ${s.shaleCpuUsPerOp}: ${s.shaleCpuUsPerOpByProcess?.nbdfuse} + ${s.shaleCpuUsPerOpByProcess?.volumedriver} + ${s.shaleCpuUsPerOpByProcess?.others} |`,
  );
}
say('');
say(lines.join('\n'));
say('');
say(`results: ${outFile}`);
if (scratchArg < 0) await rm(scratch, { recursive: true, force: true });
