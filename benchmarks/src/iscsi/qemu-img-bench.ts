/**
 * The iSCSI gateway benchmark (issue 16): qemu-img bench, 4 KiB and 1 MiB, QD32, write then
 * read of the same range, through qemu's iscsi:// driver on a Shale LUN (tgtd with the
 * native bs_shale backing store, NBD to the volumedriver of a `shale up`, 6 ASDs), on a
 * LUN over a plain file in the same directory (tgt's rdwr), and straight NBD to the edge
 * (qemu's nbd:// driver, the same vDisk size): what the gateway costs.
 *
 *   node benchmarks/dist/iscsi/qemu-img-bench.js [--quick] [--scratch DIR]      (as root)
 *
 * The file LUN runs first, with no Shale process running; then shale up starts and the
 * Shale LUN and NBD cases run, each once the vDisks have no data at risk (no upload under
 * a case). qemu-img bench is sequential (offset += size), one pass of COUNT requests.
 * CPU per request: the whole machine's busy time (/proc/stat), and the gateway's own
 * (tgtd) and Shale's processes. Measures, never asserts: only an error fails the run.
 * Writes benchmarks/results/iscsi-qemu-img-<date>[-quick].json and prints the table.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RemoteKv } from '@shale/arakoon-kv';
import { IscsiTargetRecords, SecretBox, validateTargetRequest } from '@shale/framework-api';
import { cpuUs, freePort } from '../support/processes.js';
import { machineBusyUs, must, REPO, startShaleUp, TOOL_PATH } from '../support/shale-up.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

const quick = process.argv.includes('--quick');
const scratchArg = process.argv.indexOf('--scratch');
const LUN_BYTES = GIB;
/** Requests per case: 4 KiB cases cover 128 MiB (32 MiB quick), 1 MiB ones 512 (128). */
const CASES = [
  { key: 'write4KiBQd32', write: true, sizeBytes: 4096, count: quick ? 8192 : 32768 },
  { key: 'read4KiBQd32', write: false, sizeBytes: 4096, count: quick ? 8192 : 32768 },
  { key: 'write1MiBQd32', write: true, sizeBytes: MIB, count: quick ? 128 : 512 },
  { key: 'read1MiBQd32', write: false, sizeBytes: MIB, count: quick ? 128 : 512 },
] as const;
type CaseKey = (typeof CASES)[number]['key'];

interface CaseResult {
  readonly seconds: number;
  readonly iops: number;
  readonly throughputMiBps: number;
  /** Whole machine, all cores (/proc/stat busy), per request, µs. */
  readonly machineCpuUsPerOp: number;
  /** tgtd's own CPU per request, µs (absent for NBD). */
  readonly tgtdCpuUsPerOp?: number;
  /** Every shale up daemon per request, µs (absent for the file LUN). */
  readonly shaleCpuUsPerOp?: number;
  readonly uploadsDrainedBeforeMs?: number;
}

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** Pids whose command line mentions `marker` (Shale's data dir), not this process. */
async function pidsWith(marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').join(' ').includes(marker)) found.push(Number(entry));
  }
  return found;
}

async function cpuOfAll(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) total += await cpuUs(pid).catch(() => 0);
  return total;
}

interface Charged {
  readonly tgtdPid?: number;
  readonly shaleMarker?: string;
  readonly quiesce?: () => Promise<number>;
}

/** Every case against `target` (an iscsi:// or nbd:// URL qemu opens). */
async function runCases(
  label: string,
  target: string,
  charged: Charged,
): Promise<Record<CaseKey, CaseResult>> {
  const out = {} as Record<CaseKey, CaseResult>;
  for (const c of CASES) {
    const waitedMs = (await charged.quiesce?.()) ?? 0;
    const shalePids = charged.shaleMarker === undefined ? [] : await pidsWith(charged.shaleMarker);
    const machine0 = await machineBusyUs();
    const tgtd0 = await cpuUs(charged.tgtdPid);
    const shale0 = await cpuOfAll(shalePids);
    const args = [
      'bench',
      '-f',
      'raw',
      '-c',
      String(c.count),
      '-d',
      '32',
      '-s',
      String(c.sizeBytes),
    ];
    if (c.write) args.push('-w');
    const started = process.hrtime.bigint();
    const printed = must('qemu-img', [...args, target]);
    const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const machine = (await machineBusyUs()) - machine0;
    const tgtd = (await cpuUs(charged.tgtdPid)) - tgtd0;
    const shale = (await cpuOfAll(shalePids)) - shale0;
    const seconds = Number(/Run completed in ([0-9.]+) seconds/.exec(printed)?.[1] ?? wallSeconds);
    const result: CaseResult = {
      seconds,
      iops: Math.round(c.count / seconds),
      throughputMiBps: Math.round(((c.count * c.sizeBytes) / MIB / seconds) * 10) / 10,
      machineCpuUsPerOp: Math.round(machine / c.count),
      ...(charged.tgtdPid === undefined ? {} : { tgtdCpuUsPerOp: Math.round(tgtd / c.count) }),
      ...(charged.shaleMarker === undefined
        ? {}
        : { shaleCpuUsPerOp: Math.round(shale / c.count), uploadsDrainedBeforeMs: waitedMs }),
    };
    out[c.key] = result;
    const value = c.sizeBytes >= MIB ? `${result.throughputMiBps} MiB/s` : `${result.iops} IOPS`;
    say(`  ${label} ${c.key}: ${value} (${seconds} s)`);
  }
  return out;
}

/** The reference: tgtd with an rdwr LUN over a file in the scratch directory. */
async function fileLun(scratch: string): Promise<Record<CaseKey, CaseResult>> {
  const file = path.join(scratch, 'reference.img');
  must('truncate', ['-s', String(LUN_BYTES), file]);
  const portal = await freePort();
  const control = 20_000 + (process.pid % 10_000);
  const iqn = 'iqn.2026-12.io.shale:bench-file';
  const tgtd: ChildProcess = spawn(
    'tgtd',
    ['-f', '-C', String(control), '--iscsi', `portal=127.0.0.1:${portal}`],
    { stdio: 'ignore', env: { ...process.env, PATH: TOOL_PATH } },
  );
  const tgtadm = (args: readonly string[]) =>
    must('tgtadm', ['-C', String(control), '--lld', 'iscsi', ...args]);
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        tgtadm(['--op', 'show', '--mode', 'sys']);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
    tgtadm(['--op', 'new', '--mode', 'target', '--tid', '1', '-T', iqn]);
    tgtadm([
      '--op',
      'new',
      '--mode',
      'logicalunit',
      '--tid',
      '1',
      '--lun',
      '1',
      '--bstype',
      'rdwr',
      '-b',
      file,
    ]);
    tgtadm(['--op', 'bind', '--mode', 'target', '--tid', '1', '-I', '127.0.0.1']);
    return await runCases('file LUN', `iscsi://127.0.0.1:${portal}/${iqn}/1`, {
      ...(tgtd.pid === undefined ? {} : { tgtdPid: tgtd.pid }),
    });
  } finally {
    try {
      tgtadm(['--op', 'delete', '--mode', 'target', '--tid', '1', '--force']);
      tgtadm(['--op', 'delete', '--mode', 'system']);
    } catch {
      tgtd.kill('SIGKILL'); // not answering: nothing else stops it
    }
    await Promise.race([new Promise((r) => tgtd.once('exit', r)), sleep(10_000)]);
    if (tgtd.exitCode === null && tgtd.signalCode === null) tgtd.kill('SIGKILL');
    await rm(file, { force: true });
  }
}

async function shale(
  scratch: string,
): Promise<{ lun: Record<CaseKey, CaseResult>; nbd: Record<CaseKey, CaseResult> }> {
  const dataDir = path.join(scratch, 'shale');
  const nbdPort = await freePort();
  const apiPort = await freePort();
  const iscsiPort = await freePort();
  const up = await startShaleUp(dataDir, [
    '--nbd-port',
    String(nbdPort),
    '--api-port',
    String(apiPort),
    '--iscsi-port',
    String(iscsiPort),
    '--iscsi-backing',
    'native',
    '--iscsi-unmap',
    'off',
  ]);
  const cli = up.cli;
  let kv: RemoteKv | undefined;
  try {
    for (const name of ['iscsibench', 'nbdbench']) {
      cli(['vdisk', 'create', name, '--size', String(LUN_BYTES)]);
    }
    const layout = JSON.parse(await readFile(path.join(dataDir, 'shale-up.json'), 'utf8')) as {
      ports: { kv: number };
    };
    kv = new RemoteKv({ endpoint: `127.0.0.1:${layout.ports.kv}` });
    const box = await SecretBox.open(path.join(dataDir, 'iscsi-secrets.key'));
    const record = await new IscsiTargetRecords(kv).create(
      validateTargetRequest({ vdisk: 'iscsibench', initiators: ['127.0.0.1'] }),
      box,
    );
    const lunUrl = `iscsi://127.0.0.1:${iscsiPort}/${record.iqn}/1`;
    const targetDeadline = Date.now() + 60_000;
    while (spawnSyncCode('iscsi-inq', [lunUrl]) !== 0 && Date.now() < targetDeadline) {
      await sleep(250);
    }
    const tgtdPid = Number(
      (await readFile(path.join(dataDir, 'iscsi', 'tgtd.pid'), 'utf8')).trim(),
    );
    const drained = () => up.drained(['iscsibench', 'nbdbench']);
    const lun = await runCases('Shale LUN', lunUrl, {
      tgtdPid,
      shaleMarker: dataDir,
      quiesce: drained,
    });
    const nbd = await runCases('NBD', `nbd://127.0.0.1:${nbdPort}/nbdbench`, {
      shaleMarker: dataDir,
      quiesce: drained,
    });
    return { lun, nbd };
  } finally {
    await kv?.close();
    await up.stop();
  }
}

function spawnSyncCode(command: string, args: readonly string[]): number {
  try {
    must(command, args);
    return 0;
  } catch {
    return 1;
  }
}

if (process.getuid?.() !== 0) {
  process.stderr.write('iscsi benchmark: run as root (tgtd)\n');
  process.exit(2);
}
const scratch =
  scratchArg >= 0
    ? path.resolve(process.argv[scratchArg + 1] as string)
    : await mkdtemp(path.join(os.tmpdir(), 'shale-iscsi-bench-'));
await mkdir(scratch, { recursive: true });
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO })
  .toString()
  .trim();
say(`iscsi benchmark at ${commit}: scratch ${scratch}${quick ? ' (quick)' : ''}`);
const file = await fileLun(scratch);
const { lun, nbd } = await shale(scratch);
const ratio = (a: CaseResult, b: CaseResult) => Math.round((a.iops / b.iops) * 100) / 100;
const ratios: Record<string, Record<CaseKey, number>> = {
  shaleLunVsFileLun: {} as never,
  shaleLunVsNbd: {} as never,
};
for (const c of CASES) {
  (ratios.shaleLunVsFileLun as Record<CaseKey, number>)[c.key] = ratio(lun[c.key], file[c.key]);
  (ratios.shaleLunVsNbd as Record<CaseKey, number>)[c.key] = ratio(lun[c.key], nbd[c.key]);
}
const out = {
  date: new Date().toISOString(),
  commit,
  host: { cpus: os.cpus().length, kernel: os.release() },
  setup: {
    client:
      'qemu-img bench -f raw -d 32 -s SIZE -c COUNT [-w]: sequential, one pass; each read case reads what the write case before it wrote',
    fileLun: `tgtd 1.0.85, rdwr backing store over a sparse ${LUN_BYTES}-byte file in ${scratch}; qemu iscsi://`,
    shaleLun: `shale up (6 ASDs, embedded metadata store, NBD inside the volumedriver), shale iscsi serve with the native bs_shale backing (16 NBD connections), a ${LUN_BYTES}-byte vDisk; qemu iscsi://`,
    nbd: `the same shale up, another ${LUN_BYTES}-byte vDisk; qemu nbd://`,
    order:
      'the file LUN first with no Shale process running; then shale up, the Shale LUN cases, the NBD cases, each once the vDisks have no data at risk',
    cpu: 'machine: /proc/stat busy time of all cores per request; tgtd and every shale up daemon: utime + stime per request',
  },
  results: { fileLun: file, shaleLun: lun, nbd },
  ratios,
};
const resultsDir = path.join(REPO, 'benchmarks', 'results');
await mkdir(resultsDir, { recursive: true });
const outFile = path.join(
  resultsDir,
  `iscsi-qemu-img-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`,
);
await writeFile(outFile, `${JSON.stringify(out, null, 2)}\n`);
const v = (c: (typeof CASES)[number], m: CaseResult) =>
  c.sizeBytes >= MIB ? `${m.throughputMiBps} MiB/s` : `${m.iops} IOPS`;
const lines = [
  '| case | Shale LUN | file LUN | NBD to the edge | Shale LUN / file LUN | Shale LUN / NBD | machine CPU µs/req LUN / file / NBD | tgtd µs/req LUN / file | Shale daemons µs/req LUN / NBD |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
];
for (const c of CASES) {
  const [s, f, n] = [lun[c.key], file[c.key], nbd[c.key]];
  lines.push(
    `| ${c.key} | ${v(c, s)} | ${v(c, f)} | ${v(c, n)} | ${ratios.shaleLunVsFileLun?.[c.key]} | ${ratios.shaleLunVsNbd?.[c.key]} | ${s.machineCpuUsPerOp} / ${f.machineCpuUsPerOp} / ${n.machineCpuUsPerOp} | ${s.tgtdCpuUsPerOp} / ${f.tgtdCpuUsPerOp} | ${s.shaleCpuUsPerOp} / ${n.shaleCpuUsPerOp} |`,
  );
}
say('');
say(lines.join('\n'));
say('');
say(`results: ${outFile}`);
if (scratchArg < 0) await rm(scratch, { recursive: true, force: true });
