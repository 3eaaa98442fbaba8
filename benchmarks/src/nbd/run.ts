/**
 * The NBD benchmark: fio's nbd engine (libnbd, `--ioengine=nbd --uri=nbd://...`) against
 * three NBD servers, one after the other, in one run:
 *
 *   - shale:       the NBD server inside the volumedriver (`--nbd-port`, as `shale up`
 *                  runs it) of a whole cluster of real processes on 127.0.0.1: volumedriver
 *                  (with the proxy engine) -> 6 ASDs, metadata in one etcd; a vDisk with
 *                  8 MiB SCOs and 4 KiB clusters (SCOs seal and upload while writes run);
 *   - shaleRemoteEdge: `shale edge serve` (its own process) in front of that volumedriver;
 *   - edgeMemory:  the edge's protocol core alone (`NbdServer` serving `MemoryExports`, a
 *                  child process: benchmarks/dist/nbd/edge-memory.js);
 *   - nbdkit:      `nbdkit memory`, the reference.
 *
 * edgeMemory vs nbdkit is the cost of the protocol core in Node; shale vs edgeMemory is
 * the cost of the volumedriver path behind it. Per server: a sequential 1 MiB write fills
 * the 128 MiB region (so reads hit data; the shale vDisk is then synced to the backend so
 * its upload does not run under the reads), then time-based jobs: 1 MiB sequential read
 * at QD8, 4 KiB random reads at QD1 and QD32, 1 MiB sequential write at QD8, 4 KiB random
 * writes at QD1 and QD32; last a 16 MiB 4 KiB random write at QD32 that fio reads back and
 * checks (crc32c). CPU time of every server process is read from /proc around each job.
 * Measures, never asserts: only a fio error, a verify error or a hang fails the run.
 *
 * The volumedriver reaches the backend with the proxy engine in its own process (as `shale
 * up` runs it); `--via-proxy` sends its uploads and backend reads through the proxy process
 * over gRPC instead (the layout before 2026-12-03).
 *
 *   node benchmarks/dist/nbd/run.js [--quick] [--via-proxy] [--scratch DIR] [--profile DIR]
 *        [--jobs KEY,...] (only these timed jobs, e.g. randWrite4KiBQd32; the fill always runs)
 *
 * --profile DIR runs the volumedriver, asd0 and the stand-alone edge under `node
 * --cpu-prof` (profiles in DIR; summarize with `node benchmarks/dist/proxy/profile-summary.js
 * FILE`), skips nbdkit and edgeMemory and writes results to nbd-<date>-profile.json: a
 * profiled run is for finding where the time goes, its figures are not comparable.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { VolumeClient } from '@shale/volumedriver';
import {
  cpuUs,
  type Daemon,
  freePort,
  runningDaemons,
  sigkilled,
  startEtcd,
  startListening,
  startOnPort,
  stopAll,
} from '../support/processes.js';
import { type FioJob, type FioMeasured, fioNbd, uriOf } from './fio-job.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const KIB = 1024;
const MIB = 1024 * KIB;
const CLUSTER_BYTES = 4 * KIB;
const SCO_BYTES = 8 * MIB;
const REGION_BYTES = 128 * MIB;
const EXPORT_BYTES = 256 * MIB;
const VERIFY_BYTES = 16 * MIB;
const EXPORT_NAME = 'bench';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    scratch: { type: 'string' },
    'via-proxy': { type: 'boolean' },
    profile: { type: 'string' },
    jobs: { type: 'string' },
  },
});
const profileDir = args.profile === undefined ? undefined : path.resolve(args.profile);
const PROFILED = new Set(['volumedriver', 'asd0', 'edge']);
const CLI = path.join(REPO, 'packages', 'cli', 'dist', 'main.js');
const quick = args.quick === true;
/** The volumedriver uploads through the proxy process (gRPC) instead of its own engine. */
const viaProxy = args['via-proxy'] === true;
const RUNTIME_SECONDS = quick ? 3 : 20;

const FILL: FioJob = { key: 'fill1MiBQd8', rw: 'write', blockBytes: MIB, queueDepth: 8 };
const TIMED: readonly FioJob[] = [
  { key: 'seqRead1MiBQd8', rw: 'read', blockBytes: MIB, queueDepth: 8 },
  { key: 'randRead4KiBQd1', rw: 'randread', blockBytes: 4 * KIB, queueDepth: 1 },
  { key: 'randRead4KiBQd32', rw: 'randread', blockBytes: 4 * KIB, queueDepth: 32 },
  { key: 'seqWrite1MiBQd8', rw: 'write', blockBytes: MIB, queueDepth: 8 },
  { key: 'randWrite4KiBQd1', rw: 'randwrite', blockBytes: 4 * KIB, queueDepth: 1 },
  { key: 'randWrite4KiBQd32', rw: 'randwrite', blockBytes: 4 * KIB, queueDepth: 32 },
]
  .filter((job) => args.jobs === undefined || args.jobs.split(',').includes(job.key))
  .map((job) => ({ ...job, runtimeSeconds: RUNTIME_SECONDS }) as FioJob);
const VERIFY: FioJob = {
  key: 'verify4KiBQd32',
  rw: 'randwrite',
  blockBytes: 4 * KIB,
  queueDepth: 32,
  sizeBytes: VERIFY_BYTES,
  // A random map (every block written once), then every block read back and checked.
  extra: ['--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0'],
};

// Back of the envelope, written before measuring. nbdkit memory over loopback on this VM
// (volumedriver benchmark, same fio and nbdkit): ~16,000 IOPS 4 KiB writes and ~19,000
// reads at QD1, ~45,000 at QD32, 1-1.5 GiB/s at 1 MiB: C threads, ~10 µs of CPU per
// request. The edge's protocol core is one Node event loop: per 4 KiB request a 28-byte
// header parsed and checked, a promise, a 4 KiB copy into a page Map, a histogram observe
// and a reply write, ~25 µs of CPU; at QD1 the round trip is mostly two loopback wake-ups
// of Node (~50 µs each) so ~8,000 IOPS (0.5 of nbdkit), at QD32 CPU-bound at ~25,000
// (0.55). 1 MiB goes through 256 page copies and a Buffer.alloc per read: ~600 MiB/s.
// The whole stack adds one Io-stream gRPC message per batch of requests from the edge
// to the volumedriver, and every gRPC message costs ~1 ms of CPU here (client and server,
// ASD benchmark). The volumedriver benchmark measured through VolumeClient: 879 / 3,778
// IOPS 4 KiB writes at QD1 / QD32, 2,038 / 8,540 write-buffer reads, 20 / 52 MiB/s at
// 1 MiB QD1. Through the edge (one more process and hop on two shared vCPUs, with fio on
// them too): ~800 / ~3,000 writes, ~1,500 / ~5,000 reads (the reads hit the local SCOs),
// 1 MiB at QD8 ~30 MiB/s written (8 MiB SCOs upload through the proxy meanwhile) and
// ~70 MiB/s read. So shale/nbdkit ~0.05 at QD1, ~0.07-0.1 at QD32, ~0.02-0.05 at 1 MiB,
// and ~1,000 µs of CPU (all processes) per 4 KiB request at QD1, ~300 µs at QD32.
const EXPECTED = {
  basis:
    'nbdkit from the volumedriver benchmark; edge core ~25 µs CPU/request + Node wake-ups; ' +
    'whole stack = VolumeClient numbers of the volumedriver benchmark (~1 ms CPU per gRPC ' +
    'message, requests of one tick batched) plus one NBD hop',
  nbdkit: {
    seqRead1MiBQd8MiBps: 1500,
    randRead4KiBQd1Iops: 19_000,
    randRead4KiBQd32Iops: 45_000,
    seqWrite1MiBQd8MiBps: 1200,
    randWrite4KiBQd1Iops: 16_000,
    randWrite4KiBQd32Iops: 45_000,
    cpuUsPerOp4KiB: 10,
  },
  edgeMemory: {
    seqRead1MiBQd8MiBps: 600,
    randRead4KiBQd1Iops: 8000,
    randRead4KiBQd32Iops: 25_000,
    seqWrite1MiBQd8MiBps: 600,
    randWrite4KiBQd1Iops: 8000,
    randWrite4KiBQd32Iops: 25_000,
    cpuUsPerOp4KiB: 25,
  },
  // Co-located (written 2026-12-02, before measuring it): the edge core (~20-70 µs per
  // request) calls the Volume in the same process; a write batch is an SCO pwrite, a TLog
  // pwrite and a LevelDB batch through the thread pool (~100-200 µs per batch, shared by the
  // requests of one tick), a read one LBA cache hit and one pread per cluster.
  shale: {
    seqRead1MiBQd8MiBps: 300,
    randRead4KiBQd1Iops: 5000,
    randRead4KiBQd32Iops: 15_000,
    seqWrite1MiBQd8MiBps: 60,
    randWrite4KiBQd1Iops: 4000,
    randWrite4KiBQd32Iops: 12_000,
    cpuUsPerOp4KiBQd1: 150,
    cpuUsPerOp4KiBQd32: 80,
  },
  // The stand-alone edge: the gRPC Io stream as before (the figures of 2026-12-01).
  shaleRemoteEdge: {
    seqRead1MiBQd8MiBps: 70,
    randRead4KiBQd1Iops: 1500,
    randRead4KiBQd32Iops: 5000,
    seqWrite1MiBQd8MiBps: 30,
    randWrite4KiBQd1Iops: 800,
    randWrite4KiBQd32Iops: 3000,
    cpuUsPerOp4KiBQd1: 1000,
    cpuUsPerOp4KiBQd32: 300,
  },
  ratioShaleVsNbdkit: { qd1: 0.25, qd32: 0.3, seq1MiB: 0.05 },
  ratioEdgeMemoryVsNbdkit: { qd1: 0.5, qd32: 0.55, seq1MiB: 0.4 },
};

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

function version(command: string, argv: string[]): string | null {
  try {
    return execFileSync(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
      .toString()
      .trim()
      .split('\n')[0] as string;
  } catch (err) {
    say(`${command} ${argv.join(' ')}: ${(err as Error).message}`);
    return null;
  }
}

interface CaseResult extends FioMeasured {
  /** CPU (user + system) per I/O of each server process (group), and their sum. */
  readonly serverCpuUsPerOp: Record<string, number>;
}

/** Process groups whose CPU time is summed per job ("asds": all six). */
type Groups = Record<string, readonly Daemon[]>;

async function groupCpuUs(groups: Groups): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, daemons] of Object.entries(groups)) {
    let sum = 0;
    for (const d of daemons) sum += await cpuUs(d.child.pid);
    out[name] = sum;
  }
  return out;
}

async function measured(
  server: string,
  uri: string,
  job: FioJob,
  groups: Groups,
  scratch: string,
): Promise<CaseResult> {
  const before = await groupCpuUs(groups);
  const m = await fioNbd(
    uri,
    job,
    REGION_BYTES,
    path.join(scratch, `fio-${server}-${job.key}.json`),
  );
  const after = await groupCpuUs(groups);
  const serverCpuUsPerOp: Record<string, number> = {};
  let total = 0;
  for (const name of Object.keys(groups)) {
    const us = (after[name] ?? 0) - (before[name] ?? 0);
    total += us;
    serverCpuUsPerOp[name] = m.ops > 0 ? Math.round(us / m.ops) : 0;
  }
  serverCpuUsPerOp.total = m.ops > 0 ? Math.round(total / m.ops) : 0;
  const unit = job.blockBytes >= MIB ? `${m.throughputMiBps} MiB/s` : `${m.iops} IOPS`;
  say(
    `  ${server} ${job.key}: ${unit}, clat p50/p99 ${m.clatUsP50}/${m.clatUsP99} µs, server CPU ${serverCpuUsPerOp.total} µs/op`,
  );
  return { ...m, serverCpuUsPerOp };
}

/** fill, the timed jobs, the verify job; `afterFill` runs between the fill and the rest. */
async function runServer(
  server: string,
  uri: string,
  groups: Groups,
  scratch: string,
  afterFill?: () => Promise<Record<string, unknown>>,
): Promise<Record<string, unknown>> {
  say(`${server}: ${uri}`);
  const out: Record<string, unknown> = {};
  out[FILL.key] = await measured(server, uri, FILL, groups, scratch);
  if (afterFill !== undefined) out.afterFill = await afterFill();
  for (const job of TIMED) out[job.key] = await measured(server, uri, job, groups, scratch);
  const verify = await measured(server, uri, VERIFY, groups, scratch);
  out[VERIFY.key] = { ...verify, verified: true, verifiedBytes: VERIFY_BYTES };
  return out;
}

async function runNbdkit(scratch: string): Promise<Record<string, unknown>> {
  const binary = ['/usr/sbin/nbdkit', '/usr/bin/nbdkit'].find((p) => existsSync(p));
  if (binary === undefined) throw new Error('nbdkit is missing (Debian: apt-get install nbdkit)');
  const port = await freePort();
  const nbdkit = await startOnPort(
    'nbdkit',
    binary,
    [
      '-f',
      '--exit-with-parent',
      '-i',
      '127.0.0.1',
      '-p',
      String(port),
      'memory',
      String(EXPORT_BYTES),
    ],
    port,
    path.join(scratch, 'nbdkit.log'),
  );
  try {
    return await runServer('nbdkit', uriOf(port, ''), { nbdkit: [nbdkit] }, scratch);
  } finally {
    await nbdkit.stop();
  }
}

async function runEdgeMemory(scratch: string): Promise<Record<string, unknown>> {
  const edge = await startListening(
    'edge-memory',
    process.execPath,
    [
      path.join(REPO, 'benchmarks', 'dist', 'nbd', 'edge-memory.js'),
      '--name',
      EXPORT_NAME,
      '--size-bytes',
      String(EXPORT_BYTES),
      '--port',
      '0',
    ],
    path.join(scratch, 'edge-memory.log'),
  );
  try {
    return await runServer(
      'edgeMemory',
      uriOf(edge.port, EXPORT_NAME),
      { edgeMemory: [edge] },
      scratch,
    );
  } finally {
    await edge.stop();
  }
}

const shale = (label: string, argv: string[], scratch: string): Promise<Daemon> => {
  const log = path.join(scratch, `${label}.log`);
  if (profileDir === undefined || !PROFILED.has(label)) {
    return startListening(label, path.join(REPO, 'bin', 'shale'), argv, log);
  }
  const prof = [
    '--cpu-prof',
    '--cpu-prof-dir',
    profileDir,
    '--cpu-prof-name',
    `${label}.cpuprofile`,
  ];
  return startListening(label, process.execPath, [...prof, CLI, ...argv], log);
};

/**
 * The whole stack: etcd, 6 ASDs, a proxy, a volumedriver with its co-located NBD server
 * (`--nbd-port`, as `shale up` runs it), and a stand-alone edge (`shale edge serve`, as on
 * a compute host). Each NBD server gets its own vDisk, one after the other. Stopped by
 * stopAll.
 */
async function runShale(scratch: string): Promise<Record<string, Record<string, unknown>>> {
  const t0 = performance.now();
  const etcd = await startEtcd(path.join(scratch, 'etcd'), path.join(scratch, 'etcd.log'));
  const kv = `etcd://127.0.0.1:${etcd.port}`;
  const asds = await Promise.all(
    [0, 1, 2, 3, 4, 5].map((i) =>
      shale(
        `asd${i}`,
        [
          'asd',
          'serve',
          '--dir',
          path.join(scratch, `asd${i}`),
          '--port',
          '0',
          '--node-id',
          'bench',
        ],
        scratch,
      ),
    ),
  );
  const proxy = await shale(
    'proxy',
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
    scratch,
  );
  const nbdPort = await freePort();
  const vd = await shale(
    'volumedriver',
    [
      'volumedriver',
      'serve',
      '--nbd-port',
      String(nbdPort),
      '--kv',
      kv,
      ...(viaProxy ? ['--proxy', `127.0.0.1:${proxy.port}`] : ['--backend', 'bench']),
      '--dir',
      path.join(scratch, 'vd'),
      '--port',
      '0',
      '--node-id',
      'bench',
    ],
    scratch,
  );
  const client = new VolumeClient(`127.0.0.1:${vd.port}`, 120_000);
  try {
    await client.createVpool({
      name: 'bench',
      backendId: 'bench',
      scoSizeBytes: SCO_BYTES,
      clusterSizeBytes: CLUSTER_BYTES,
    });
    const clusterStartMs = Math.round(performance.now() - t0);
    say(`shale: cluster up in ${clusterStartMs} ms`);
    const backend = { proxy: [proxy], asds, etcd: [etcd] };
    const oneVdisk = async (
      server: string,
      name: string,
      port: number,
      groups: Groups,
    ): Promise<Record<string, unknown>> => {
      await client.createVdisk({ name, vpoolName: 'bench', sizeBytes: EXPORT_BYTES });
      const out = await runServer(server, uriOf(port, name), groups, scratch, async () => {
        // The fill's SCOs go to the backend before the reads, so its upload is not under them.
        const s0 = performance.now();
        await client.syncToBackend(name);
        const syncMs = Math.round(performance.now() - s0);
        say(`  ${server} syncToBackend after the fill: ${syncMs} ms`);
        return { syncToBackendMs: syncMs, stats: (await client.vdiskInfo(name)).stats };
      });
      out.statsAtEnd = (await client.vdiskInfo(name)).stats;
      out.clusterStartMs = clusterStartMs;
      return out;
    };
    const coLocated = await oneVdisk('shale', EXPORT_NAME, nbdPort, {
      volumedriver: [vd],
      ...backend,
    });
    // The co-located vDisk's last writes finish uploading first: its backlog must not run
    // under the remote edge's jobs.
    await client.syncToBackend(EXPORT_NAME);
    const edge = await shale(
      'edge',
      ['edge', 'serve', '--volumedriver', `127.0.0.1:${vd.port}`, '--port', '0'],
      scratch,
    );
    const remote = await oneVdisk('shaleRemoteEdge', `${EXPORT_NAME}-remote`, edge.port, {
      edge: [edge],
      volumedriver: [vd],
      ...backend,
    });
    return { shale: coLocated, shaleRemoteEdge: remote };
  } finally {
    client.close();
  }
}

// ------------------------------------------------------------------------------ main

say(`expected (before measuring): ${JSON.stringify(EXPECTED)}`);
const fioVersion = version('fio', ['--version']);
const nbdkitVersion = version('nbdkit', ['--version']);
const etcdVersion = version('/usr/bin/etcd', ['--version']);
if (fioVersion === null || nbdkitVersion === null || etcdVersion === null) {
  throw new Error('fio, nbdkit and etcd (/usr/bin/etcd) are needed: benchmarks/nbd/run.sh checks');
}
const scratch = await mkdtemp(path.join(args.scratch ?? '/var/tmp', 'nbd-bench-'));
const removeScratch = async (): Promise<void> => {
  if (process.env.KEEP_SCRATCH === undefined) await rm(scratch, { recursive: true, force: true });
  else say(`scratch kept: ${scratch}`);
};
// A signal stops every process started (the run in progress then fails and cleans up).
let interrupted: string | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = signal;
    say(`${signal}: stopping every process started`);
    void stopAll();
  });
}

const results: Record<string, Record<string, unknown>> = {};
const t0 = performance.now();
let failed = false;
try {
  if (profileDir === undefined) {
    results.nbdkit = await runNbdkit(scratch);
    results.edgeMemory = await runEdgeMemory(scratch);
  } else {
    await mkdir(profileDir, { recursive: true });
  }
  Object.assign(results, await runShale(scratch));
} catch (err) {
  failed = true;
  if (interrupted !== undefined) {
    process.stderr.write(`nbd benchmark interrupted by ${interrupted}; no results written\n`);
  } else {
    process.stderr.write(`nbd benchmark FAILED: ${(err as Error).stack ?? String(err)}\n`);
    for (const daemon of runningDaemons()) {
      const tail = daemon.stderrTail().slice(-2000).trim();
      process.stderr.write(`--- ${daemon.label} stderr (last 2,000 characters):\n${tail}\n`);
    }
  }
} finally {
  await stopAll();
  await removeScratch();
}
if (failed || interrupted !== undefined) process.exit(interrupted === undefined ? 1 : 130);
const elapsedSeconds = Math.round((performance.now() - t0) / 1000);

// ---- Ratios per case: IOPS for 4 KiB, MiB/s for 1 MiB.
const ratio = (a: number, b: number): number | null =>
  b > 0 ? Math.round((a / b) * 10_000) / 10_000 : null;
const rate = (server: string, key: string, seq: boolean): number => {
  const m = results[server]?.[key] as CaseResult | undefined;
  if (m === undefined) return 0;
  return seq ? m.throughputMiBps : m.iops;
};
const ratios: Record<string, unknown> = {};
for (const job of TIMED) {
  const seq = job.blockBytes >= MIB;
  const s = rate('shale', job.key, seq);
  const r = rate('shaleRemoteEdge', job.key, seq);
  const e = rate('edgeMemory', job.key, seq);
  const n = rate('nbdkit', job.key, seq);
  ratios[job.key] = {
    unit: seq ? 'MiBps' : 'iops',
    shaleVsNbdkit: ratio(s, n),
    shaleRemoteEdgeVsNbdkit: ratio(r, n),
    edgeMemoryVsNbdkit: ratio(e, n),
    shaleVsEdgeMemory: ratio(s, e),
  };
}

let commit = 'unknown';
let dirty = false;
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO }).toString().trim();
  dirty = execFileSync('git', ['status', '--porcelain'], { cwd: REPO }).toString().trim() !== '';
} catch (err) {
  say(`git: ${(err as Error).message}`);
}
const out = {
  benchmark: 'nbd',
  finishedAtIso: new Date().toISOString(),
  gitCommit: commit,
  gitDirty: dirty,
  nodeVersion: process.version,
  fioVersion,
  nbdkitVersion,
  etcdVersion,
  cpus: os.cpus().length,
  loadAverage1m: os.loadavg()[0],
  quick,
  elapsedSeconds,
  sigkilledAfterSigterm: sigkilled,
  setup: {
    client: `fio --ioengine=nbd --numjobs=1 --norandommap --randrepeat=0; time-based jobs ${RUNTIME_SECONDS} s each, no ramp (the fill warms up)`,
    shale: viaProxy
      ? 'shale volumedriver serve --nbd-port --proxy (the NBD server inside the volumedriver) -> shale proxy serve over gRPC (backend default preset) -> 6 shale asd serve; etcd 1 member; all on 127.0.0.1'
      : 'shale volumedriver serve --nbd-port --backend (the NBD server and the proxy engine inside the volumedriver, as shale up runs it) -> 6 shale asd serve; etcd 1 member; all on 127.0.0.1',
    shaleRemoteEdge:
      'shale edge serve (its own process, as on a compute host) -> the same volumedriver, another vDisk',
    edgeMemory: 'benchmarks/dist/nbd/edge-memory.js: NbdServer + MemoryExports + EdgeMetrics',
    nbdkit: `nbdkit -f -i 127.0.0.1 memory ${EXPORT_BYTES}`,
    exportBytes: EXPORT_BYTES,
    regionBytes: REGION_BYTES,
    scoSizeBytes: SCO_BYTES,
    clusterSizeBytes: CLUSTER_BYTES,
    runtimeSecondsPerJob: RUNTIME_SECONDS,
    jobOrder: [FILL, ...TIMED, VERIFY].map((j) => j.key),
    seq1MiBQueueDepth: 8,
    latency: 'fio clat (submission to completion), µs',
    serverCpu: 'utime + stime from /proc/PID/stat around each fio job, per I/O',
    shaleReadsHit: 'the local SCOs of the write buffer (written in this run, kept after upload)',
  },
  expected: EXPECTED,
  results,
  ratios,
};
const resultsDir = path.join(REPO, 'benchmarks', 'results');
await mkdir(resultsDir, { recursive: true });
const outFile = path.join(
  resultsDir,
  `nbd-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}${profileDir === undefined ? '' : '-profile'}.json`,
);
await writeFile(outFile, `${JSON.stringify(out, null, 2)}\n`);

// ---- The table (markdown), as benchmarks/README.md writes them.
const fmt = (n: number): string => n.toLocaleString('en-US');
const cell = (server: string, job: FioJob): string => {
  const m = results[server]?.[job.key] as CaseResult | undefined;
  if (m === undefined) return '- | -';
  const value = job.blockBytes >= MIB ? `${fmt(m.throughputMiBps)} MiB/s` : fmt(m.iops);
  return `${value} | ${fmt(m.clatUsP50)} / ${fmt(m.clatUsP99)}`;
};
const cpu = (server: string, job: FioJob): string => {
  const m = results[server]?.[job.key] as CaseResult | undefined;
  return m === undefined ? '-' : fmt(m.serverCpuUsPerOp.total ?? 0);
};
const lines = [
  '| case | QD | Shale co-located | p50 / p99 µs | Shale remote edge | p50 / p99 µs | edge memory | p50 / p99 µs | nbdkit memory | p50 / p99 µs | co-located/nbdkit | remote/nbdkit | edge-mem/nbdkit | server CPU µs/op co-located / remote / edge-mem / nbdkit |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];
for (const job of TIMED) {
  const r = ratios[job.key] as Record<string, number | null>;
  const seq = job.blockBytes >= MIB;
  const what = `${seq ? '1 MiB' : '4 KiB'} ${
    { read: 'seq read', write: 'seq write', randread: 'rand read', randwrite: 'rand write' }[job.rw]
  }`;
  lines.push(
    `| ${what} | ${job.queueDepth} | ${cell('shale', job)} | ${cell('shaleRemoteEdge', job)} | ${cell('edgeMemory', job)} | ${cell('nbdkit', job)} | ${r.shaleVsNbdkit} | ${r.shaleRemoteEdgeVsNbdkit} | ${r.edgeMemoryVsNbdkit} | ${cpu('shale', job)} / ${cpu('shaleRemoteEdge', job)} / ${cpu('edgeMemory', job)} / ${cpu('nbdkit', job)} |`,
  );
}
const once = (server: string, key: string): CaseResult | undefined =>
  results[server]?.[key] as CaseResult | undefined;
const afterFill = results.shale?.afterFill as { syncToBackendMs?: number } | undefined;
const afterRemoteFill = results.shaleRemoteEdge?.afterFill as
  | { syncToBackendMs?: number }
  | undefined;
lines.push(
  '',
  '| other | Shale co-located | Shale remote edge | edge memory | nbdkit memory |',
  '|---|---:|---:|---:|---:|',
  `| fill: one pass of 1 MiB writes, QD8, over ${REGION_BYTES / MIB} MiB (first job: warms up) | ${once('shale', FILL.key)?.throughputMiBps} MiB/s | ${once('shaleRemoteEdge', FILL.key)?.throughputMiBps} MiB/s | ${once('edgeMemory', FILL.key)?.throughputMiBps} MiB/s | ${once('nbdkit', FILL.key)?.throughputMiBps} MiB/s |`,
  `| verify: ${VERIFY_BYTES / MIB} MiB of 4 KiB random writes at QD32, read back, crc32c | ok, ${fmt(once('shale', VERIFY.key)?.iops ?? 0)} IOPS | ok, ${fmt(once('shaleRemoteEdge', VERIFY.key)?.iops ?? 0)} IOPS | ok, ${fmt(once('edgeMemory', VERIFY.key)?.iops ?? 0)} IOPS | ok, ${fmt(once('nbdkit', VERIFY.key)?.iops ?? 0)} IOPS |`,
  `| syncToBackend after the fill | ${fmt(afterFill?.syncToBackendMs ?? 0)} ms | ${fmt(afterRemoteFill?.syncToBackendMs ?? 0)} ms | | |`,
);
say('');
say(lines.join('\n'));
say('');
say(`results: ${outFile}`);
