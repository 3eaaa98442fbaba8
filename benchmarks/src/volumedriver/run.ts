/**
 * The volumedriver benchmark: a whole cluster of real processes on 127.0.0.1 (one etcd,
 * six `shale asd serve`, one `shale proxy serve`, one `shale volumedriver serve`, all on
 * the etcd metadata store) driven through VolumeService by VolumeClient Io streams:
 *
 *   - 1 MiB sequential write, then 4 KiB random writes at QD1 and QD32, in a 128 MiB
 *     region of a vDisk with 8 MiB SCOs (SCOs seal and upload to the ASDs meanwhile);
 *   - 4 KiB random reads at QD1 and QD32 and 1 MiB sequential reads of that data from the
 *     write buffer (the SCOs are local: written here, kept as a cache after upload);
 *   - syncToBackend timing and upload MiB/s (vdiskInfo stats: bytesUploaded);
 *   - metadata on disk: TLog bytes and LBA map bytes per cluster;
 *   - the same reads from the backend: the volumedriver is stopped, the vDisk's local
 *     directory removed, and the volumedriver restarted, which restores the vDisk from
 *     the backend (root, checkpoint, TLogs) without its SCOs: every read goes to the proxy.
 *     (There is no SCO cache size knob on the daemon or the vPool: this is the way in.)
 *
 * References in the same run: fio on the same file system (psync, buffered, one thread
 * per request in flight, like the ASD benchmark) and fio's nbd engine against nbdkit's
 * memory plugin (a block device over a loopback socket), when nbdkit is installed.
 * Measures, never asserts.
 *
 *   node benchmarks/dist/volumedriver/run.js [--quick] [--scratch DIR]
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { VolumeClient, type VolumeIoStream } from '@shale/volumedriver';
import {
  type Daemon,
  freePort,
  sigkilled,
  startEtcd,
  startListening,
  startOnPort,
} from '../support/processes.js';

const execFileAsync = promisify(execFile);

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const KIB = 1024;
const MIB = 1024 * KIB;
const CLUSTER_BYTES = 4 * KIB;
const SCO_BYTES = 8 * MIB;
const REGION_BYTES = 128 * MIB;
const VDISK_BYTES = 256 * MIB;
const UPLOAD_BYTES = 64 * MIB;

const { values: args } = parseArgs({
  options: { quick: { type: 'boolean' }, scratch: { type: 'string' } },
});
const quick = args.quick === true;
const CASE_MS = quick ? 2000 : 5000;
const FIO_SECONDS = quick ? 2 : 4;

// Back of the envelope, written before measuring. Every gRPC message costs ~1 ms of CPU on
// this VM (client and server, ASD benchmark), and the two vCPUs are shared by nine
// processes. A 4 KiB write at QD1 is one IoBatch round trip on an open stream plus one lane
// batch (SCO append to the page cache, a 32 B TLog entry, a LevelDB put): ~1 ms, ~1,000
// IOPS. At QD32 the client puts the requests of one tick in one message and the lane takes
// them as one batch: ~5,000 IOPS, CPU-bound in JavaScript. Write-buffer reads: the same
// shapes, a LevelDB get and a pread per cluster: ~1,000 / ~5,000 IOPS. Backend reads add
// the proxy hop and an ASD hop (proxy benchmark: 170 IOPS direct at QD1, 992 slices/s
// batched 32 per call): ~150 IOPS at QD1, ~800 at QD32. 1 MiB sequential: ~15 ms per MiB
// through gRPC: ~60 MiB/s each way. Uploads of 8 MiB SCOs, two at a time, through the
// proxy (36 MiB/s for 64 MiB SCOs): ~30 MiB/s. Metadata: 32 B of TLog per cluster written;
// the LBA map's log (lba/map.log): a page record of 3-7 B per mapped cluster for random
// writes (0.04 B for sequential ones), plus 4 B per cluster slot of every SCO still pointed
// into (CRC32C tables; random overwrites leave SCOs partly live, so more slots than mapped
// clusters), plus incremental checkpoints until the log passes 2x its live size: ~12 B.
// fio on the page cache: ~200,000 IOPS at 4 KiB and ~2 GiB/s at 1 MiB; nbdkit memory over
// loopback: ~15,000 IOPS at QD1, ~50,000 at QD32, ~1 GiB/s. So Shale/fio ~0.005-0.03 and
// Shale/nbdkit ~0.05-0.1.
const EXPECTED = {
  randWrite4KiBQd1Iops: 1000,
  randWrite4KiBQd32Iops: 5000,
  bufferRandRead4KiBQd1Iops: 1000,
  bufferRandRead4KiBQd32Iops: 5000,
  backendRandRead4KiBQd1Iops: 150,
  backendRandRead4KiBQd32Iops: 800,
  seqWrite1MiBMiBps: 60,
  seqRead1MiBMiBps: 60,
  uploadMiBps: 30,
  tlogBytesPerClusterWritten: 32,
  lbaMapBytesPerMappedCluster: 12,
  fioRandWrite4KiBQd1Iops: 200_000,
  nbdkitRandWrite4KiBQd1Iops: 15_000,
};

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

const startShale = (argv: string[], logFile: string): Promise<Daemon> =>
  startListening(argv.slice(0, 1).join(' '), path.join(REPO, 'bin', 'shale'), argv, logFile);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

interface Measured {
  readonly ops: number;
  readonly iops: number;
  readonly throughputMiBps: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
}

/** `depth` loops issuing `op` back to back for durationMs (or until `limit` ops). */
async function loops(
  depth: number,
  durationMs: number,
  bytesPerOp: number,
  op: (i: number) => Promise<void>,
  limit = Number.POSITIVE_INFINITY,
): Promise<Measured> {
  const latenciesUs: number[] = [];
  const deadline = performance.now() + durationMs;
  const t0 = performance.now();
  let issued = 0;
  await Promise.all(
    Array.from({ length: depth }, async () => {
      while (performance.now() < deadline && issued < limit) {
        const i = issued;
        issued += 1;
        const s = performance.now();
        await op(i);
        latenciesUs.push((performance.now() - s) * 1000);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  latenciesUs.sort((a, b) => a - b);
  return {
    ops: latenciesUs.length,
    iops: Math.round(latenciesUs.length / seconds),
    throughputMiBps: Math.round((latenciesUs.length * bytesPerOp) / MIB / seconds),
    latencyUsP50: Math.round(percentile(latenciesUs, 50)),
    latencyUsP99: Math.round(percentile(latenciesUs, 99)),
  };
}

const randomCluster = (): number =>
  Math.floor(Math.random() * (REGION_BYTES / CLUSTER_BYTES)) * CLUSTER_BYTES;

/** Sum of file sizes (apparent) and of allocated bytes under a directory. */
async function dirBytes(dir: string): Promise<{ bytes: number; allocatedBytes: number }> {
  let bytes = 0;
  let allocatedBytes = 0;
  if (!existsSync(dir)) return { bytes, allocatedBytes };
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const s = await stat(path.join(entry.parentPath, entry.name));
    bytes += s.size;
    allocatedBytes += s.blocks * 512;
  }
  return { bytes, allocatedBytes };
}

// ------------------------------------------------------------------ fio references

interface FioDirection {
  readonly io_bytes: number;
  readonly bw_bytes: number;
  readonly iops: number;
  readonly clat_ns?: { percentile?: Record<string, number> };
}

async function fio(label: string, argv: string[], direction: 'read' | 'write', out: string) {
  await execFileAsync(
    'fio',
    [
      `--name=${label}`,
      '--group_reporting',
      '--randrepeat=0',
      '--norandommap',
      '--time_based',
      `--runtime=${FIO_SECONDS}`,
      ...argv,
      '--output-format=json',
      `--output=${out}`,
    ],
    { maxBuffer: 16 * MIB },
  );
  const text = await readFile(out, 'utf8');
  const parsed = JSON.parse(text.slice(text.indexOf('{'))) as {
    jobs: Record<string, FioDirection>[];
  };
  const d = (parsed.jobs[0] as Record<string, FioDirection>)[direction] as FioDirection;
  const p = d.clat_ns?.percentile ?? {};
  return {
    iops: Math.round(d.iops),
    throughputMiBps: Math.round(d.bw_bytes / MIB),
    // psync jobs: per syscall; nbd: per request.
    latencyUsP50: Math.round((p['50.000000'] ?? 0) / 1000),
    latencyUsP99: Math.round((p['99.000000'] ?? 0) / 1000),
  };
}

interface Shape {
  readonly key: string;
  readonly rw: string;
  readonly bs: string;
  readonly qd: number;
  readonly direction: 'read' | 'write';
}

const SHAPES: readonly Shape[] = [
  { key: 'seqWrite1MiBQd1', rw: 'write', bs: '1M', qd: 1, direction: 'write' },
  { key: 'randWrite4KiBQd1', rw: 'randwrite', bs: '4k', qd: 1, direction: 'write' },
  { key: 'randWrite4KiBQd32', rw: 'randwrite', bs: '4k', qd: 32, direction: 'write' },
  { key: 'randRead4KiBQd1', rw: 'randread', bs: '4k', qd: 1, direction: 'read' },
  { key: 'randRead4KiBQd32', rw: 'randread', bs: '4k', qd: 32, direction: 'read' },
  { key: 'seqRead1MiBQd1', rw: 'read', bs: '1M', qd: 1, direction: 'read' },
];

/** fio on a 128 MiB file in `dir`: psync, buffered, one thread per request in flight. */
async function fioFile(dir: string, outDir: string): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  for (const s of SHAPES) {
    results[s.key] = await fio(
      `file-${s.key}`,
      [
        `--filename=${path.join(dir, 'fio-data')}`,
        `--size=${REGION_BYTES / MIB}M`,
        '--ioengine=psync',
        '--thread',
        `--numjobs=${s.qd}`,
        `--rw=${s.rw}`,
        `--bs=${s.bs}`,
      ],
      s.direction,
      path.join(outDir, `fio-file-${s.key}.json`),
    );
  }
  return results;
}

/** fio's nbd engine against `nbdkit memory` on loopback; undefined without nbdkit. */
async function fioNbdkit(outDir: string): Promise<Record<string, unknown> | undefined> {
  const binary = ['/usr/sbin/nbdkit', '/usr/bin/nbdkit'].find((p) => existsSync(p));
  if (binary === undefined) return undefined;
  const port = await freePort();
  const nbdkit = await startOnPort(
    'nbdkit',
    binary,
    ['-f', '-i', '127.0.0.1', '-p', String(port), 'memory', '256M'],
    port,
    path.join(outDir, 'nbdkit.log'),
  );
  try {
    const results: Record<string, unknown> = {};
    for (const s of SHAPES) {
      results[s.key] = await fio(
        `nbd-${s.key}`,
        [
          '--ioengine=nbd',
          `--uri=nbd://127.0.0.1:${port}/`,
          `--size=${REGION_BYTES / MIB}M`,
          `--iodepth=${s.qd}`,
          '--numjobs=1',
          `--rw=${s.rw}`,
          `--bs=${s.bs}`,
        ],
        s.direction,
        path.join(outDir, `fio-nbd-${s.key}.json`),
      );
    }
    return results;
  } finally {
    await nbdkit.stop();
  }
}

// ------------------------------------------------------------------ Shale

async function readPhase(io: VolumeIoStream, prefix: string, results: Record<string, unknown>) {
  for (const depth of [1, 32]) {
    say(`  ${prefix} 4 KiB random reads, QD${depth}`);
    results[`${prefix}RandRead4KiBQd${depth}`] = await loops(depth, CASE_MS, CLUSTER_BYTES, () =>
      io.read(randomCluster(), CLUSTER_BYTES).then(() => undefined),
    );
  }
  results[`${prefix}SeqRead1MiBQd1`] = await loops(1, CASE_MS, MIB, (i) =>
    io.read((i * MIB) % REGION_BYTES, MIB).then(() => undefined),
  );
}

say(`expected (before measuring): ${JSON.stringify(EXPECTED)}`);
const scratch = await mkdtemp(path.join(args.scratch ?? '/var/tmp', 'volumedriver-bench-'));
const started: Daemon[] = [];
const results: Record<string, unknown> = {};
const reference: Record<string, unknown> = {};
let fioVersion = 'unknown';
let nbdkitVersion: string | null = null;
try {
  fioVersion = execFileSync('fio', ['--version']).toString().trim();
  const etcd = await startEtcd(path.join(scratch, 'etcd'), path.join(scratch, 'etcd.log'));
  started.push(etcd);
  const kv = `etcd://127.0.0.1:${etcd.port}`;
  const asds: Daemon[] = [];
  for (let i = 0; i < 6; i += 1) {
    const asd = await startShale(
      ['asd', 'serve', '--dir', path.join(scratch, `asd${i}`), '--port', '0', '--node-id', 'bench'],
      path.join(scratch, `asd${i}.log`),
    );
    asds.push(asd);
    started.push(asd);
  }
  const proxy = await startShale(
    [
      'proxy',
      'serve',
      '--kv',
      kv,
      '--backend',
      'bench',
      '--port',
      '0',
      ...asds.flatMap((a) => ['--asd', `127.0.0.1:${a.port}`]),
    ],
    path.join(scratch, 'proxy.log'),
  );
  started.push(proxy);
  const vdDir = path.join(scratch, 'vd');
  const vdArgs = [
    'volumedriver',
    'serve',
    '--kv',
    kv,
    '--proxy',
    `127.0.0.1:${proxy.port}`,
    '--dir',
    vdDir,
    '--port',
    '0',
    '--node-id',
    'bench',
  ];
  let vd = await startShale(vdArgs, path.join(scratch, 'volumedriver.log'));
  started.push(vd);
  let client = new VolumeClient(`127.0.0.1:${vd.port}`, 120_000);
  await client.createVpool({
    name: 'bench',
    backendId: 'bench',
    scoSizeBytes: SCO_BYTES,
    clusterSizeBytes: CLUSTER_BYTES,
  });
  const vdisk = await client.createVdisk({ name: 'a', vpoolName: 'bench', sizeBytes: VDISK_BYTES });
  let io = client.openIo('a');
  const block = randomBytes(MIB);
  const cluster = () =>
    block.subarray(Math.floor(Math.random() * 255) * CLUSTER_BYTES).subarray(0, CLUSTER_BYTES);

  say('cluster up; writing');
  // ---- Writes: fill the region sequentially, then random 4 KiB over it.
  results.seqWrite1MiBQd1 = await loops(
    1,
    60_000,
    MIB,
    (i) => io.write(i * MIB, block),
    REGION_BYTES / MIB,
  );
  for (const depth of [1, 32]) {
    results[`randWrite4KiBQd${depth}`] = await loops(depth, CASE_MS, CLUSTER_BYTES, () =>
      io.write(randomCluster(), cluster()),
    );
  }
  const afterWrites = (await client.vdiskInfo('a')).stats;
  results.statsAfterWrites = afterWrites;

  say('reads from the write buffer');
  // ---- Reads from the write buffer (every SCO of the vDisk is local).
  await readPhase(io, 'buffer', results);

  say('syncToBackend a');
  // ---- Sync to the backend, then metadata on disk.
  const beforeSync = (await client.vdiskInfo('a')).stats;
  const t0 = performance.now();
  await client.syncToBackend('a');
  const syncMs = performance.now() - t0;
  const afterSync = (await client.vdiskInfo('a')).stats;
  results.syncA = {
    syncMs: Math.round(syncMs),
    backlogBytesAtSync: (afterSync?.bytesUploaded ?? 0) - (beforeSync?.bytesUploaded ?? 0),
    stats: afterSync,
  };
  const vdiskDir = path.join(vdDir, 'vdisks', vdisk.id);
  const tlog = await dirBytes(path.join(vdiskDir, 'tlogs'));
  const lba = await dirBytes(path.join(vdiskDir, 'lba'));
  const clustersWritten = (afterSync?.writeBytes ?? 0) / CLUSTER_BYTES;
  const clustersMapped = REGION_BYTES / CLUSTER_BYTES;
  results.metadata = {
    clustersWritten,
    clustersMapped,
    tlogFileBytes: tlog.bytes,
    lbaMapFileBytes: lba.bytes,
    lbaMapAllocatedBytes: lba.allocatedBytes,
    tlogBytesPerClusterWritten: Math.round((tlog.bytes / clustersWritten) * 10) / 10,
    lbaMapBytesPerMappedCluster: Math.round((lba.bytes / clustersMapped) * 10) / 10,
    lbaMapBytesPerClusterWritten: Math.round((lba.bytes / clustersWritten) * 10) / 10,
    openVStorageBytesPerCluster: 8,
  };

  say('upload (vDisk b)');
  // ---- Upload: a second vDisk, 64 MiB written at QD8, then syncToBackend.
  await client.createVdisk({ name: 'b', vpoolName: 'bench', sizeBytes: VDISK_BYTES });
  const ioB = client.openIo('b');
  const startB = (await client.vdiskInfo('b')).stats;
  const w0 = performance.now();
  const writeB = await loops(8, 60_000, MIB, (i) => ioB.write(i * MIB, block), UPLOAD_BYTES / MIB);
  const midB = (await client.vdiskInfo('b')).stats;
  const s0 = performance.now();
  await client.syncToBackend('b');
  const s1 = performance.now();
  const endB = (await client.vdiskInfo('b')).stats;
  await ioB.close();
  const uploaded = (endB?.bytesUploaded ?? 0) - (startB?.bytesUploaded ?? 0);
  const duringSync = (endB?.bytesUploaded ?? 0) - (midB?.bytesUploaded ?? 0);
  results.upload = {
    bytesWritten: UPLOAD_BYTES,
    writeMiBps: writeB.throughputMiBps,
    bytesUploaded: uploaded,
    scosUploaded: (endB?.scosUploaded ?? 0) - (startB?.scosUploaded ?? 0),
    bytesUploadedDuringSync: duringSync,
    syncMs: Math.round(s1 - s0),
    // Write start to sync end: what a backend can take from a writer, end to end.
    endToEndMiBps: Math.round((uploaded / MIB / ((s1 - w0) / 1000)) * 10) / 10,
    // Only the backlog the sync waited for, over the sync's duration.
    syncBacklogMiBps: Math.round((duringSync / MIB / ((s1 - s0) / 1000)) * 10) / 10,
  };

  say('restart without local state of a');
  // ---- Reads from the backend: restart the volumedriver without the vDisk's local state.
  const beforeRestart = await io.read(0, 8 * MIB);
  await io.close();
  client.close();
  await vd.stop();
  started.splice(started.indexOf(vd), 1);
  await rm(vdiskDir, { recursive: true, force: true });
  const r0 = performance.now();
  vd = await startShale(vdArgs, path.join(scratch, 'volumedriver-restarted.log'));
  started.push(vd);
  results.restoreFromBackendMs = Math.round(performance.now() - r0);
  client = new VolumeClient(`127.0.0.1:${vd.port}`, 120_000);
  io = client.openIo('a');
  say('restored; probe read');
  const probe = await io.read(0, 8 * MIB);
  if (!probe.equals(beforeRestart)) throw new Error('restored vDisk a reads back differently');
  say('reads from the backend');
  await readPhase(io, 'backend', results);
  results.statsAfterBackendReads = (await client.vdiskInfo('a')).stats;
  await io.close();
  client.close();

  say('references: fio');
  // ---- References, with the cluster stopped (they would share the CPUs otherwise).
  for (const s of started.reverse()) await s.stop();
  started.length = 0;
  const fioDir = path.join(scratch, 'fio');
  await mkdir(fioDir, { recursive: true });
  reference.fioFile = await fioFile(fioDir, scratch);
  await rm(path.join(fioDir, 'fio-data'), { force: true });
  try {
    nbdkitVersion = execFileSync('nbdkit', ['--version']).toString().trim();
  } catch {
    nbdkitVersion = null;
  }
  reference.fioNbdkitMemory = (await fioNbdkit(scratch)) ?? 'nbdkit not installed';
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => undefined);
  if (process.env.KEEP_SCRATCH === undefined) await rm(scratch, { recursive: true, force: true });
  else say(`scratch kept: ${scratch}`);
}

// ---- Ratios: Shale / reference, per shape.
const ratio = (a: number, b: number): number => (b > 0 ? Math.round((a / b) * 10_000) / 10_000 : 0);
const ratios: Record<string, unknown> = {};
const file = reference.fioFile as Record<string, { iops: number; throughputMiBps: number }>;
const nbd = reference.fioNbdkitMemory as
  | Record<string, { iops: number; throughputMiBps: number }>
  | string;
const pick = (m: { iops: number; throughputMiBps: number }, seq: boolean) =>
  seq ? m.throughputMiBps : m.iops;
const shaleCases: [string, string][] = [
  ['seqWrite1MiBQd1', 'seqWrite1MiBQd1'],
  ['randWrite4KiBQd1', 'randWrite4KiBQd1'],
  ['randWrite4KiBQd32', 'randWrite4KiBQd32'],
  ['bufferRandRead4KiBQd1', 'randRead4KiBQd1'],
  ['bufferRandRead4KiBQd32', 'randRead4KiBQd32'],
  ['bufferSeqRead1MiBQd1', 'seqRead1MiBQd1'],
  ['backendRandRead4KiBQd1', 'randRead4KiBQd1'],
  ['backendRandRead4KiBQd32', 'randRead4KiBQd32'],
  ['backendSeqRead1MiBQd1', 'seqRead1MiBQd1'],
];
for (const [shale, ref] of shaleCases) {
  const seq = ref.startsWith('seq');
  const mine = results[shale] as { iops: number; throughputMiBps: number } | undefined;
  if (mine === undefined) continue;
  const f = file?.[ref];
  const n = typeof nbd === 'string' ? undefined : nbd?.[ref];
  ratios[shale] = {
    unit: seq ? 'MiBps' : 'iops',
    shaleVsFioFile: f === undefined ? null : ratio(pick(mine, seq), pick(f, seq)),
    shaleVsNbdkitMemory: n === undefined ? null : ratio(pick(mine, seq), pick(n, seq)),
  };
}

let commit = 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO }).toString().trim();
} catch {
  // Not a git checkout: the results say so.
}
const out = {
  benchmark: 'volumedriver',
  finishedAtIso: new Date().toISOString(),
  gitCommit: commit,
  nodeVersion: process.version,
  fioVersion,
  nbdkitVersion,
  cpus: os.cpus().length,
  quick,
  sigkilledAfterSigterm: sigkilled,
  setup: {
    cluster: 'etcd 1 member, 6 ASDs, 1 proxy (backend default preset), 1 volumedriver, 127.0.0.1',
    scoSizeBytes: SCO_BYTES,
    clusterSizeBytes: CLUSTER_BYTES,
    vdiskSizeBytes: VDISK_BYTES,
    regionBytes: REGION_BYTES,
    caseDurationMs: CASE_MS,
    fioRuntimeSeconds: FIO_SECONDS,
    fioFile: 'psync, buffered, --thread, numjobs = QD, 128 MiB file on the scratch file system',
    fioNbd: 'ioengine=nbd, iodepth = QD, nbdkit memory 256M',
  },
  expected: EXPECTED,
  results,
  reference,
  ratios,
};
const resultsDir = path.join(REPO, 'benchmarks', 'results');
await mkdir(resultsDir, { recursive: true });
const outFile = path.join(
  resultsDir,
  `volumedriver-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`,
);
await writeFile(outFile, `${JSON.stringify(out, null, 2)}\n`);
say(JSON.stringify({ results, reference, ratios }, null, 2));
say(`results: ${outFile}`);
