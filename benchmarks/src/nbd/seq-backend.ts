/**
 * Sequential write to the backend (issue 13's "1M seq write of 4 GiB"): fio writes 4 GiB
 * of 1 MiB blocks at QD8 through NBD into a fresh vDisk of a `shale up`-like stack (the
 * NBD server and the proxy engine inside the volumedriver, 6 ASDs, etcd, the default
 * (4,2) preset, 64 MiB SCOs uploading while the writes run), then syncToBackend; the
 * figure is the time from fio's start until all of it is in the backend. The reference, in
 * the same run and before the cluster starts: fio's 1 MiB sequential write of 4 GiB to a
 * file on the same file system with end_fsync. With (4,2) the disk takes 1.5x the bytes.
 * CPU time of every process is read from /proc around the whole run. Measures, never
 * asserts.
 *
 *   node benchmarks/dist/nbd/seq-backend.js [--gib 4] [--scratch DIR]
 */
import { spawn } from 'node:child_process';
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
  startEtcd,
  startListening,
  stopAll,
  trackClient,
} from '../support/processes.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const MIB = 1024 * 1024;
const { values: args } = parseArgs({
  options: { gib: { type: 'string' }, scratch: { type: 'string' } },
});
const GIB = Number(args.gib ?? 4);
const BYTES = GIB * 1024 * MIB;
const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

async function fio(argv: string[]): Promise<number> {
  const t0 = performance.now();
  const child = spawn('fio', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  trackClient(child);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`fio exited ${code}: ${stderr}`);
  return performance.now() - t0;
}

const shale = (label: string, argv: string[], scratch: string): Promise<Daemon> =>
  startListening(label, path.join(REPO, 'bin', 'shale'), argv, path.join(scratch, `${label}.log`));

async function main(): Promise<void> {
  const scratch = args.scratch ?? (await mkdtemp(path.join(os.tmpdir(), 'shale-seq-')));
  await mkdir(scratch, { recursive: true });
  try {
    // The reference first, alone.
    const refMs = await fio([
      '--name=ref',
      '--rw=write',
      '--bs=1M',
      `--size=${BYTES}`,
      '--end_fsync=1',
      `--filename=${path.join(scratch, 'ref.bin')}`,
    ]);
    await rm(path.join(scratch, 'ref.bin'), { force: true });
    const refMBps = BYTES / 1e6 / (refMs / 1000);
    say(`reference: fio 1 MiB seq write of ${GIB} GiB, end_fsync: ${refMBps.toFixed(1)} MB/s`);

    const etcd = await startEtcd(path.join(scratch, 'etcd'), path.join(scratch, 'etcd.log'));
    const kv = `etcd://127.0.0.1:${etcd.port}`;
    const asds = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((i) =>
        shale(
          `asd${i}`,
          ['asd', 'serve', '--dir', path.join(scratch, `asd${i}`), '--port', '0', '--node-id', 'b'],
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
        '--backend',
        'bench',
        '--dir',
        path.join(scratch, 'vd'),
        '--port',
        '0',
        '--node-id',
        'b',
      ],
      scratch,
    );
    const client = new VolumeClient(`127.0.0.1:${vd.port}`, 600_000);
    try {
      await client.createVpool({ name: 'bench', backendId: 'bench' });
      await client.createVdisk({ name: 'seq', vpoolName: 'bench', sizeBytes: BYTES + 64 * MIB });
      const processes = { volumedriver: [vd], asds, proxy: [proxy], etcd: [etcd] };
      const cpu0: Record<string, number> = {};
      for (const [k, ds] of Object.entries(processes)) {
        cpu0[k] = (await Promise.all(ds.map((d) => cpuUs(d.child.pid)))).reduce((a, b) => a + b, 0);
      }
      const t0 = performance.now();
      const fioMs = await fio([
        '--name=seq',
        '--ioengine=nbd',
        `--uri=nbd://127.0.0.1:${nbdPort}/seq`,
        '--rw=write',
        '--bs=1M',
        '--iodepth=8',
        `--size=${BYTES}`,
      ]);
      await client.syncToBackend('seq');
      const totalMs = performance.now() - t0;
      const cpuMsPerMiB: Record<string, number> = {};
      for (const [k, ds] of Object.entries(processes)) {
        const now = (await Promise.all(ds.map((d) => cpuUs(d.child.pid)))).reduce(
          (a, b) => a + b,
          0,
        );
        cpuMsPerMiB[k] = Math.round(((now - (cpu0[k] ?? 0)) / 1000 / (BYTES / MIB)) * 100) / 100;
      }
      const stats = (await client.vdiskInfo('seq')).stats;
      const shaleMBps = BYTES / 1e6 / (totalMs / 1000);
      const result = {
        benchmark: 'nbd-seq-backend',
        finishedAtIso: new Date().toISOString(),
        loadAverage1m: os.loadavg()[0],
        bytes: BYTES,
        referenceMBps: Math.round(refMBps * 10) / 10,
        fioAckedMBps: Math.round((BYTES / 1e6 / (fioMs / 1000)) * 10) / 10,
        shaleToBackendMBps: Math.round(shaleMBps * 10) / 10,
        ratio: Math.round((shaleMBps / refMBps) * 1000) / 1000,
        syncAfterFioMs: Math.round(totalMs - fioMs),
        cpuMsPerMiB,
        bytesUploaded: stats?.bytesUploaded,
      };
      say(JSON.stringify(result, null, 2));
      const day = result.finishedAtIso.slice(0, 10);
      await writeFile(
        path.join(REPO, 'benchmarks', 'results', `nbd-seq-backend-${day}.json`),
        `${JSON.stringify(result, null, 2)}\n`,
      );
    } finally {
      client.close();
    }
  } finally {
    await stopAll();
    if (args.scratch === undefined) await rm(scratch, { recursive: true, force: true });
  }
}

await main();
